#!/bin/bash
# diskless-peer-error: alpha's disk died and was detached, so beta's copy is
# the only one; then beta's disk fails one region (EIO) and is full in
# another (ENOSPC). What a user checks, as with a lone disk:
#   - a write to the bad region fails with EIO, one to the full region with
#     ENOSPC, and only those: the volume stays online (alpha still diskless
#     on beta's copy), other writes and reads go on, nothing acknowledged is
#     lost;
#   - beta says what failed and that its copy is the only one, and does not
#     call that copy inconsistent (no acknowledged write is missing from it);
#   - the way out of a detached disk still works: promote beta without
#     --force, and it serves every acknowledged write.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
WIN=$((16 * MiB))
BAD=$((3 * WIN))             # beta's disk fails writes here (EIO) ...
FULL=$((3 * WIN + 4 * MiB))  # ... and has no room for them here (ENOSPC)
have_ctl || skip "diskless-peer-error needs mirrorctl"

# attempt URI OFFSET: write 64 KiB at OFFSET; prints the error, exit 3 on one.
attempt() { "${NBDTOOL[@]}" pattern "$1" "$2" 65536 9 2>&1; }

start_diskless_pair "write-eio=$BAD:65536,write-enospc=$FULL:65536" $WIN

out=$(attempt "$(nbd_unix_uri alpha)" $BAD); rc=$?
[ $rc -ne 0 ] && grep -q "EIO" <<<"$out" \
    && pass "a write to the region beta's disk fails gets EIO" \
    || fail "a write to beta's failing region: exit $rc: $out"
out=$(attempt "$(nbd_unix_uri alpha)" $FULL); rc=$?
[ $rc -ne 0 ] && grep -q "ENOSPC" <<<"$out" \
    && pass "a write to the region beta has no room for gets ENOSPC" \
    || fail "a write to beta's full region: exit $rc: $out"
check_eq "alpha still serves from beta's copy (diskless, link up)" "diskless diskless" \
    "$(status_get alpha '"\(.disk) \(.state)"')"
check "alpha logs the failed request as the only copy's" \
    grep -q "diskless: the peer's disk, the only copy, failed a write at $BAD+65536" "$(node_log alpha)"
check "beta logs what failed and that its copy is the only one" \
    grep -q "writing $BAD+65536 failed: .*this is the only current copy" "$(node_log beta)"
check_eq "beta's copy is not called inconsistent" true "$(status_get beta .consistent)"
check_eq "beta still records that its copy is the only current one" true \
    "$(status_get beta .peer_disk_failed)"

# The rest of the volume is served: more writes, then every acknowledged one.
write_acked w2 "$(nbd_unix_uri alpha)" $WIN $WIN 500 --fua
check "client FLUSH through alpha" nbd_flush alpha
verify_writes "alpha's export holds every write acknowledged before the errors" w1 \
    --uri "$(nbd_unix_uri alpha)" 0 $WIN
verify_writes "... and after them" w2 --uri "$(nbd_unix_uri alpha)" $WIN $WIN

# The way out of a detached disk: beta promoted, no --force needed.
kill_node alpha
out=$(ctl beta promote); rc=$?
check_eq "beta promoted without --force ($out)" 0 "$rc"
verify_writes "beta, promoted, holds every write acknowledged through alpha" w1 \
    --uri "$(nbd_unix_uri beta)" 0 $WIN
verify_writes "... the later ones too" w2 --uri "$(nbd_unix_uri beta)" $WIN $WIN
pair_finish
