#!/bin/bash
# diskless-flush-fail: alpha's disk died and was detached, so beta's copy is
# the only one; then beta's disk loses a write at writeback and fails the
# client's FLUSH (MIRRORD_FAULTS=writeback-eio). As with a lone disk, and as
# for a write beta's disk fails (diskless-peer-error):
#   - that FLUSH fails with EIO, and only it: the volume stays online (alpha
#     still diskless on beta's copy, the link kept), later writes and
#     flushes go on, nothing acknowledged and flushed before is lost;
#   - beta does not call its copy inconsistent.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
WIN=$((16 * MiB))
X=$((3 * WIN))
have_ctl || skip "diskless-flush-fail needs mirrorctl"

start_diskless_pair "writeback-eio=$X:4096" $WIN
check "client FLUSH through alpha" nbd_flush alpha

log_mark alpha
out=$("${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $X 4096 9 2>&1) \
    && die "the flush beta's disk fails succeeded: $out"
grep -q "EIO\|Input/output error" <<<"$out" && pass "the client's FLUSH fails with EIO" \
    || fail "the client's FLUSH failed without EIO: $out"
check "beta's disk lost the write" grep -q "writeback-eio: the write at $X+4096 was lost" \
    "$(node_log beta)"
out=$("${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((X + MiB)) 4096 8 2>&1) \
    && pass "a later write and FLUSH succeed" || fail "a later write and FLUSH: $out"
check_eq "alpha still serves from beta's copy (diskless, link up)" "diskless diskless" \
    "$(status_get alpha '"\(.disk) \(.state)"')"
drops=$(link_drops alpha beta)
[ -z "$drops" ] && pass "the link to beta was kept" || fail "the link to beta was lost: $drops"
check_eq "beta's copy is not called inconsistent" true "$(status_get beta .consistent)"
verify_writes "alpha's export holds every write acknowledged and flushed before" w1 \
    --uri "$(nbd_unix_uri alpha)" 0 $WIN
pair_finish
