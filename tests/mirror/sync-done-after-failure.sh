#!/bin/bash
# sync-done-after-failure: a mirrored write the secondary's disk fails while
# the primary's SYNC_DONE is already on its way must leave the secondary
# inconsistent, not "consistent again".
#
# beta's disk fails a client write W (MIRRORD_FAULTS=write-eio) during the
# end of a resync: beta flags its copy inconsistent and answers the error;
# alpha, which sent SYNC_DONE before that answer reached it (a 300 ms link,
# delayproxy.py), acknowledges W from its own disk and drops the link. But
# SYNC_DONE arrives at beta after W failed and clears kFlagInconsistent:
# beta records "resync complete: this copy is consistent again" and, alpha
# gone, reports a consistent copy that lacks the acknowledged W (review9's
# fix made the flag durable before the answer; this clears it after).
. "$(dirname "$0")/pairlib.sh"

have_ctl || skip "sync-done-after-failure needs mirrorctl"
VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
W_OFF=$((32 * MiB))
SPEC="write-eio=$W_OFF:4096"
proxied_beta "$T/delay_ms"
setup_pair
must_start alpha
start_with_faults beta "$SPEC"
wait_state alpha synchronized 60 >/dev/null || die "the pair did not synchronize"

stop_node beta
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((8 * MiB)) $MiB 3 >/dev/null || die "write A failed"
echo 300 >"$T/delay_ms"
log_mark alpha
log_mark beta
start_with_faults beta "$SPEC"
wait_log alpha "resync started" 30 >/dev/null || die "no resync"
# The resync of 1 MiB: its copy, then its batch flush (a round trip each,
# 600 ms), then SYNC_DONE: W goes out inside that last round trip.
sleep 0.75   # not readiness: places W in the resync's last round trip
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $W_OFF 4096 9 >/dev/null \
    && pass "W acknowledged (alpha's disk has it)" || die "W failed on alpha"
wait_log beta "writing $W_OFF[+]4096 failed" 5 >/dev/null && pass "beta's disk failed W" \
    || die "beta's disk did not fail W"
kill_node alpha
[ "$(backing_sha beta $W_OFF 4096)" != "$(pattern_sha 9 4096)" ] || die "beta holds W: nothing to check"
# Either order must leave beta inconsistent; the one under test (SYNC_DONE
# after W failed) is what the 0.75 s reaches (4 runs of 4 on a36f0d5).
if wait_log beta "ended the resync, but this disk failed" 3 >/dev/null; then
    log "SYNC_DONE reached beta after W failed: refused"
elif log_since beta | grep -q "resync complete: this copy is consistent again"; then
    log "beta recorded the resync's end (before or after W failed)"
fi
check_eq "beta's copy is not consistent (it lacks the acknowledged W)" false \
    "$(status_get beta .consistent)"
stop_node beta
finish
