#!/bin/bash
# split-brain-resync-crash: the resync after `mirrorctl discard-my-data`
# copies only the regions either side changed since the split brain, and a
# crash of either node in the middle of it loses nothing:
#   - a split brain (alpha writes A while beta is down; beta, forced primary,
#     writes B while alpha is down), resolved with discard-my-data on alpha;
#   - the resync (rate-limited) is interrupted by kill -9 of the victim,
#     then of the survivor; each restarted node resumes it without any flag;
#   - the victim refuses NBD reads throughout (its copy is not an image);
#   - at the end the copies are identical: B is on alpha, A is gone from it
#     (zero again, as on beta), and no more than the two changed areas (plus
#     what the interruptions copied twice) went over the link.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"
resync-rate = "1M"'
A_OFF=$((8 * MiB)) B_OFF=$((32 * MiB)) AREA=$((4 * MiB))

start_synced_pair 30
have_ctl || die "discard-my-data needs mirrorctl"

stop_node beta
check "alpha writes A (4M) while beta is down" \
    "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $A_OFF $AREA 51
stop_node alpha
must_start beta
out=$(ctl beta promote --force) && pass "promote --force beta: $out" || fail "promote --force: $out"
check "beta writes B (4M) while alpha is down" \
    "${NBDTOOL[@]}" pattern "$(nbd_unix_uri beta)" $B_OFF $AREA 52
must_start alpha
wait_state alpha split-brain 30 >/dev/null || die "no split brain: $(status_get alpha .state)"
sb=$(sha_of "${NODE_IMG[beta]}")

out=$(ctl alpha discard-my-data) && pass "discard-my-data on alpha: $out" || die "discard-my-data: $out"
wait_state beta resyncing 20 >/dev/null || die "beta did not start resyncing alpha"
check_eq "beta resyncs A and B, not the volume" $((2 * AREA)) "$(status_get beta .out_of_sync_bytes)"
resynced() { [ "$(status_get beta .resync.done_bytes)" -ge "$1" ]; }

# 1. the victim killed mid-resync, restarted as it was (no flag)
wait_for 20 resynced $((MiB)) || die "the resync made no progress"
kill_node alpha
must_start alpha
check_eq "the restarted victim still reports an inconsistent copy" false "$(status_get alpha .consistent)"
check_eq "and its export refuses reads" "read EIO" \
    "$("${NBDTOOL[@]}" probe "$(nbd_unix_uri alpha)" $A_OFF 65536 | grep '^read')"
wait_state beta resyncing 20 >/dev/null || die "the resync did not resume after the victim's restart"

# 2. the survivor killed mid-resync, restarted
wait_for 20 resynced $((MiB)) || die "the resumed resync made no progress"
kill_node beta
must_start beta
wait_state beta synchronized 60 >/dev/null || die "the pair did not converge: $(status_get beta '"\(.state) \(.last_error)"')"
wait_state alpha synchronized 20 >/dev/null || fail "alpha is not a synchronized secondary"
check_eq "alpha consistent again" true "$(status_get alpha .consistent)"
total=$(status_get beta .resynced_bytes_total)
[ "$total" -le $((2 * AREA)) ] && pass "the last resync copied $total bytes (A and B are $((2 * AREA)))" \
    || fail "the last resync copied $total bytes, more than A and B ($((2 * AREA)))"
stop_pair beta alpha
check_eq "beta's image untouched by the recovery (the survivor)" "$sb" "$(sha_of "${NODE_IMG[beta]}")"
check_identical "after the interrupted split-brain resync"
cmp -s -n $AREA -i $A_OFF "${NODE_IMG[alpha]}" /dev/zero \
    && pass "alpha's A was discarded (zero again, as on beta)" || fail "alpha's A is still there"
finish
