#!/bin/bash
# stop-peer-hung: the primary is stopped (systemctl stop) while its peer hangs:
# the secondary's process is stopped (SIGSTOP: a frozen VM or host, a hung
# disk under it), its TCP connection still open. The primary's stop waits for
# its final flush on both copies; the peer never answers. What an operator
# expects: the stop ends within the ack-timeout like any other wait for the
# peer (it used to wait until the peer came back: the timeouts were no longer
# checked once a stop began), exit 0, the peer marked lost; after both are
# back, the pair resyncs and converges with every acknowledged write.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_ACK=2s
VOL_EXTRA='initial-sync = "skip"'
WIN=$((16 * MiB))

start_synced_pair 30
write_acked w "$(nbd_uri alpha)" 0 $WIN 1000 --qd 8 --seed 13

log_mark alpha
kill -STOP "${NODE_PID[beta]}"
t0=$SECONDS
kill -TERM "${NODE_PID[alpha]}"
if reap_node alpha 15; then
    pass "alpha stopped $((SECONDS - t0)) s after its SIGTERM, beta still frozen"
else
    fail "alpha still running 15 s after its SIGTERM (ack-timeout 2 s): its stop waits for a hung peer"
fi
check_eq "alpha exits 0" 0 "$NODE_RC"
log_since alpha | grep -q "did not answer a ping within 2000 ms" \
    && pass "alpha logs that the peer stopped answering" \
    || fail "alpha does not say why it gave up on the peer: $(log_since alpha | tail -n 5)"
kill -CONT "${NODE_PID[beta]}"

restart_converged "after a stop with a hung peer" w 0 $WIN
finish
