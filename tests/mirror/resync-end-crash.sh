#!/bin/bash
# resync-end-crash: the primary dies right after a resync ended (the peer
# adopted its generation; its own record of the end not yet durable). The
# next handshake must resync what the activity log covers, not the whole
# volume.
#
# At SYNC_DONE the secondary adopts the primary's `current` C (history[0]:
# the base B the resync started from), durably, then answers; the primary
# records {C, bitmap 0} in a background commit. Killed before that commit
# lands (MIRRORD_FAULTS=meta-delay-ms widens the window of one commit; a
# link lost before the answer arrives leaves the same state), alpha comes
# back with {current C, bitmap B} against beta's {current C, history[0] B}:
# plan_as_primary took that for "a full sync planned before that the peer
# never adopted" and copied every byte of the volume (beta inconsistent
# meanwhile), although beta holds C and alpha's dirty map (relative to B)
# covers everything since.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "resync-end-crash needs mirrorctl"

start_synced_pair_faults "meta-delay-ms=3000"
stop_node beta
for i in 1 2 3 4; do
    "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((i * 8 * MiB)) 65536 $i >/dev/null \
        || die "write $i failed"
done
pass "four writes acknowledged with beta stopped"
log_mark alpha
must_start beta
wait_log alpha "resync complete: the peer is up to date" 60 >/dev/null || die "the resync did not end"
# Within the 3 s of alpha's commit of the resync's end.
kill_node alpha
pass "alpha killed right after the resync ended"

log_mark alpha
must_start alpha
wait_state alpha synchronized 60 >/dev/null || die "the pair did not synchronize after alpha's restart"
plan=$(plan_of alpha)
kind=${plan% *} bytes=${plan##* }
if [ "$kind" = "bitmap resync" ] && [ "${bytes:-0}" -le $((16 * MiB)) ]; then
    pass "the handshake after the restart resynced the activity log only ($kind, $bytes bytes)"
else
    fail "the handshake after the restart planned '$kind' of $bytes bytes (the whole volume is $((64 * MiB)))"
fi
for i in 1 2 3 4; do
    check_eq "beta holds write $i" "$(pattern_sha $i 65536)" "$(backing_sha beta $((i * 8 * MiB)) 65536)"
done
stop_pair
check_identical "after the restart's resync"
finish
