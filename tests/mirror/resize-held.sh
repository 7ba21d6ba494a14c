#!/bin/bash
# resize-held: `mirrorctl resize` pauses new writes and waits until every
# write is done or held. A write that waits for its activity-log commit when
# the pause starts is held only when that commit ends; the pause must notice
# (it once waited for some other write to finish, and with none coming the
# resize and every write hung until a FLUSH). The primary's metadata commits
# are slowed (MIRRORD_FAULTS=meta-delay-ms) so the write is surely waiting
# for its commit when the resize begins.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
DELAY_MS=3000
have_ctl || skip "resize-held needs mirrorctl"

start_synced_pair 30
stop_pair
start_with_faults alpha "meta-delay-ms=$DELAY_MS"
must_start beta
wait_state alpha synchronized 60 >/dev/null || die "alpha not synchronized"
# Nothing else runs: no writer, no flush to finish later.
VOL_SIZE=96M
write_configs
log_mark alpha
# A write to an extent never written: its activity-log commit takes DELAY_MS.
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((40 * MiB)) 4096 7 &
WPID=$!
BG_PIDS+=("$WPID")
sleep 0.5
t0=$SECONDS
out=$(ctl alpha resize); rc=$?
took=$((SECONDS - t0))
if [ $rc -eq 0 ] && grep -q "resized from" <<<"$out"; then
    pass "resize with a write waiting for its commit: $out (${took} s)"
else
    fail "resize with a write waiting for its commit: exit $rc after ${took} s: $out"
fi
[ $took -le $((DELAY_MS / 1000 + 8)) ] && pass "the resize ended within the commit delay + 8 s" \
    || fail "the resize took ${took} s (commit delay $((DELAY_MS / 1000)) s)"
wait "$WPID"; rc=$?
check_eq "the held write completed without an error" 0 "$rc"
check_eq "alpha serves the new size" $((96 * MiB)) "$(status_get alpha .size)"
check_eq "beta serves the new size" $((96 * MiB)) "$(status_get beta .size)"
stop_pair
check_identical "after the resize"
pair_finish
