#!/bin/bash
# discard-my-data: a split brain resolved on running daemons, the DRBD way
# (`drbdadm connect --discard-my-data` on the victim), with no restart.
#   1. refused outside a split brain (nothing changes) and for a user
#      without the control permission (SO_PEERCRED).
#   2. a split brain: alpha (primary) writes while beta is down; beta,
#      forced primary while alpha is down, writes elsewhere; both up: both
#      report split-brain, nothing is copied.
#   3. `mirrorctl discard-my-data` on alpha (the victim, a primary with a
#      writer running): its export turns read-only (the writer's next write
#      gets EPERM), alpha becomes secondary and beta copies back only the
#      regions either side changed since they diverged (DRBD's way);
#      both synchronized; beta's image is exactly what it was (nothing of
#      the survivor overwritten); the copies are identical; alpha's own
#      writes are gone.
#   4. the pair stays healthy: a write on beta mirrors to alpha; the roles
#      survive a restart.
. "$(dirname "$0")/pairlib.sh"
require su

VOL_SIZE=128M
VOL_EXTRA='initial-sync = "skip"'
A_OFF=$((32 * MiB)) B_OFF=$((64 * MiB)) W_OFF=$((96 * MiB)) WIN=$((8 * MiB))

setup_pair
start_pair
have_ctl || die "discard-my-data needs mirrorctl"
wait_state alpha synchronized 30 >/dev/null || die "alpha not synchronized"

roles() { echo "$(status_get alpha .role)/$(status_get beta .role)"; }

# --- 1. refusals
refused_ctl "discard-my-data on a synchronized secondary" beta "not in a split brain" \
    discard-my-data
refused_ctl "discard-my-data on a synchronized primary" alpha "not in a split brain" \
    discard-my-data
chmod 755 "$T"
out=$(su nobody -s /bin/sh -c "'$MIRRORCTL' --socket '${NODE_CTL[beta]}' discard-my-data" 2>&1)
rc=$?
[ $rc -eq 1 ] && grep -q "only root or the control group" <<<"$out" \
    && pass "discard-my-data by nobody: refused: $out" || fail "discard-my-data by nobody: exit $rc: $out"
check_eq "nothing changed by the refusals" primary/secondary:synchronized/synchronized \
    "$(roles):$(status_get alpha .state)/$(status_get beta .state)"

# --- 2. a split brain
stop_node beta
check "alpha writes 4M while beta is down" \
    "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $A_OFF $((4 * MiB)) 41
stop_node alpha
must_start beta
out=$(ctl beta promote --force) && pass "promote --force beta: $out" || fail "promote --force: $out"
check "beta writes 4M while alpha is down" \
    "${NBDTOOL[@]}" pattern "$(nbd_unix_uri beta)" $B_OFF $((4 * MiB)) 42
nbd_flush beta
must_start alpha
wait_state alpha split-brain 30 >/dev/null && pass "alpha reports split brain" \
    || fail "alpha does not report split brain: $(status_get alpha .state)"
wait_state beta split-brain 30 >/dev/null && pass "beta reports split brain" \
    || fail "beta does not report split brain: $(status_get beta .state)"
sb=$(sha_of "${NODE_IMG[beta]}")

# --- 3. the victim (alpha) discards its data, running, under a writer
start_writer w "$(nbd_unix_uri alpha)" $W_OFF $WIN --qd 4 --seed 43
wait_acks w 200 30 || fail "the writer on alpha did not start"
out=$(ctl alpha discard-my-data) && pass "discard-my-data on alpha: $out" \
    || fail "discard-my-data on alpha: $out"
stop_writer w
[ "$WRITER_RC" -ne 0 ] && grep -qE "EPERM|EROFS|not permitted|ead-only" "$T/w.err" "$T/w.acks" \
    && pass "alpha's writer was refused with EPERM once the discard began (exit $WRITER_RC)" \
    || fail "alpha's writer across the discard: exit $WRITER_RC, no EPERM: $(tail -n 2 "$T/w.err")"
check_eq "alpha is secondary at once" secondary "$(status_get alpha .role)"
wait_state beta synchronized 60 >/dev/null || fail "beta did not resync alpha"
wait_state alpha synchronized 60 >/dev/null || fail "alpha did not become a synchronized secondary"
check_eq "roles after the recovery" secondary/primary "$(roles)"
check_eq "alpha consistent, no discard running" "true false" \
    "$(status_get alpha .consistent) $(status_get alpha .discarding)"
grep -q "resync of both sides' changes" <<<"$(log_all beta)" \
    && pass "beta planned a resync of the regions either side changed, not a full copy" \
    || fail "beta's log shows no resync of both sides' changes: $(grep -E 'connected: ' "$(node_log beta)" | tail -n 1)"
copied=$(status_get beta .resynced_bytes_total)
# alpha's 4M and its writer's window, beta's 4M (64K regions): between 8M and 16M of 128M.
[ "$copied" -ge $((8 * MiB)) ] && [ "$copied" -le $((4 * MiB + WIN + 4 * MiB)) ] \
    && pass "beta copied $copied bytes: the regions either side changed since the split brain" \
    || fail "beta copied $copied bytes (expected 8M..$(( (8 * MiB + WIN) / MiB ))M of the ${VOL_SIZE} volume)"
out=$(ctl alpha rejoin --wait); rc=$?
[ $rc -eq 1 ] && grep -q "not split" <<<"$out" \
    && pass "rejoin --wait afterwards: nothing left to rejoin: $out" \
    || fail "rejoin --wait afterwards: exit $rc: $out"
check_eq "beta's image untouched by the recovery (the survivor)" "$sb" "$(sha_of "${NODE_IMG[beta]}")"

# --- 4. healthy afterwards
check "beta writes 4M, mirrored" \
    "${NBDTOOL[@]}" pattern "$(nbd_unix_uri beta)" $((16 * MiB)) $((4 * MiB)) 44
wait_state beta synchronized 30 >/dev/null || fail "beta not synchronized after the write"
stop_pair beta alpha
check_identical "after discarding alpha's data"
cmp -s -n $((4 * MiB)) -i $A_OFF "${NODE_IMG[alpha]}" /dev/zero \
    && pass "alpha's own writes were discarded (zero again, as on beta)" \
    || fail "alpha's own writes are still there"
cmp -s -n $WIN -i $W_OFF "${NODE_IMG[alpha]}" /dev/zero \
    && pass "the writer's writes on alpha were discarded too" \
    || fail "the writer's writes on alpha are still there"
must_start beta
must_start alpha
wait_state alpha synchronized 30 >/dev/null || fail "the restarted pair did not synchronize"
check_eq "the roles survive a restart" secondary/primary "$(roles)"

finish
