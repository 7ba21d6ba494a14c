#!/bin/bash
# demote-link-lost: the peer crashes while a planned demote records the
# role; the failover must still go through without --force.
#
# demote waits until the pair is synchronized, flushes both copies, then
# commits "secondary" to alpha's metadata. beta killed during that commit
# (MIRRORD_FAULTS=meta-delay-ms widens the window of one commit) makes
# alpha's replicator diverge() from a peer it lost: it marks nothing (both
# copies were just flushed, no write since) but moves the generation on
# anyway. alpha becomes secondary with a generation beta never saw: with
# beta restarted, both nodes are secondary in standby and each promote is
# refused ("the peer's generation differs: it has data this copy lacks"),
# which is untrue; the volume has no primary until an operator forces one,
# and a forced one then meets the other's moved generation.
. "$(dirname "$0")/pairlib.sh"

have_ctl || skip "demote-link-lost needs mirrorctl"
VOL_EXTRA='initial-sync = "skip"'
start_synced_pair_faults "meta-delay-ms=3000"

OFF=$((8 * MiB)) LEN=65536
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $OFF $LEN 1 >/dev/null || die "write A failed"
pass "write A acknowledged"

log_mark alpha
ctl alpha demote --timeout 30 >"$T/demote.out" &
demoter=$!
wait_log alpha "demoting: new writes are refused" 10 >/dev/null || die "the demote did not start"
sleep 1   # not readiness: inside the 3 s of the role's commit (the flush takes ms)
kill_node beta
wait $demoter
check_eq "the demote answered 'secondary' ($(cat "$T/demote.out"))" secondary \
    "$(grep -oE '^secondary' "$T/demote.out")"
link_drops alpha beta | grep -q . && pass "alpha lost the link during the demote" \
    || fail "alpha did not lose the link during the demote (the window was missed)"

must_start beta
wait_state alpha standby 30 >/dev/null || die "alpha is not in standby with beta"
wait_state beta standby 30 >/dev/null || die "beta is not in standby with alpha"
out=$(ctl beta promote)
check_eq "promote on beta (no --force) after the demote: $out" 0 $?
wait_state beta synchronized 60 >/dev/null || fail "beta (primary) did not synchronize with alpha"
check_eq "beta holds write A" "$(pattern_sha 1 $LEN)" "$(backing_sha beta $OFF $LEN)"
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri beta)" $OFF $LEN 2 >/dev/null && pass "write B on beta acknowledged" \
    || fail "write B on beta failed"
check_no_divergence_logged
stop_pair
check_identical "after the failover"
finish
