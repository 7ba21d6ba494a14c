#!/bin/bash
# primary-silent-loss: the primary vanishes without a word reaching the
# secondary (its host powers off, its network is cut: no FIN, no RST). The
# secondary must notice within a few ack-timeouts (the primary pings every
# ack-timeout / 3, so silence means it is gone), say so in its status, and
# accept `promote --force`, the documented way on when the primary is lost.
# It used to keep "link connected, synchronized, peer primary" for ever and
# refuse the forced promote ("'alpha' is primary: demote it first"): the
# failover was impossible without restarting its daemon. When the link comes
# back with both nodes having written, both report a split brain and
# neither image is overwritten.
# The pair runs in two network namespaces (10.125.0.1 alpha, 10.125.0.2
# beta); the cut is alpha's veth going down. Needs root (skips otherwise).
. "$(dirname "$0")/pairlib.sh"
require ip

netns_nodes msl 10.125.0

VOL_SIZE=256M
VOL_ACK=2s
ACK_S=2
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "needs mirrorctl"

start_synced_pair 30
check_eq "beta sees its primary before the cut" primary "$(status_get beta .peer_role)"

# --- the cut: alpha goes on alone and writes
ip -n "$NSA" link set "$VA" down
wait_state alpha 'degraded|disconnected' $((ACK_S + 5)) >/dev/null \
    || fail "alpha did not notice the cut within the ack-timeout + 5 s"
WRITER_PREFIX="${IN_A[*]}" write_acked wa "nbd://${NODE_TCP[alpha]}/$VOL_NAME" $((32 * MiB)) $((16 * MiB)) 2000 --qd 8 --seed 3

# --- beta: the primary is gone; it must say so and take over
if st=$(wait_state beta 'disconnected|degraded' $((3 * ACK_S + 5))); then
    pass "beta notices its silent primary is gone: state '$st'"
else
    fail "beta still reports link '$(status_get beta .link)', state '$(status_get beta .state)', peer role '$(status_get beta .peer_role)' $((3 * ACK_S + 5)) s after its primary went silent"
fi
out=$(ctl beta promote --force); rc=$?
if [ $rc -eq 0 ]; then
    pass "promote --force on beta with its primary lost: $out"
else
    fail "promote --force on beta with its primary lost: exit $rc: $out"
fi
if [ "$(status_get beta .role)" = primary ]; then
    WRITER_PREFIX="${IN_B[*]}" write_acked wb "nbd://${NODE_TCP[beta]}/$VOL_NAME" $((96 * MiB)) $((16 * MiB)) 2000 --qd 8 --seed 4
fi

# --- the link comes back: both wrote: a split brain, nothing overwritten
sa=$(sha_of "${NODE_IMG[alpha]}"); sb=$(sha_of "${NODE_IMG[beta]}")
log_mark alpha; log_mark beta
ip -n "$NSA" link set "$VA" up
if [ "$(status_get beta .role)" = primary ]; then
    wait_state alpha split-brain 30 >/dev/null || fail "alpha does not report the split brain after the link came back"
    check_eq "beta reports the split brain" split-brain "$(status_get beta .state)"
else
    wait_state alpha synchronized 60 >/dev/null || fail "alpha not synchronized after the link came back"
fi
check_eq "alpha's image unchanged by the reconnect" "$sa" "$(sha_of "${NODE_IMG[alpha]}")"
if [ "$(status_get beta .role)" = primary ]; then
    check_eq "beta's image unchanged by the reconnect" "$sb" "$(sha_of "${NODE_IMG[beta]}")"
fi
verify_writes "alpha holds every write it acknowledged" wa --image "${NODE_IMG[alpha]}" $((32 * MiB)) $((16 * MiB))
pair_finish
