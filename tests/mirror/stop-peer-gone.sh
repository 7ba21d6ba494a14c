#!/bin/bash
# stop-peer-gone: both nodes stopped at once (systemctl stop on both hosts, a
# power-off of the pair), so the secondary's link ends while the primary's
# stop still waits for its final flush on both copies. The primary used to
# take that for the end of its own, finished stop and wait forever for a
# flush reply that could not come. It must treat it as a lost peer: finish
# the stop with exit 0, mark what the secondary may lack, and converge after
# the restart. Made deterministic: beta is frozen (SIGSTOP) so that alpha's
# final flush is outstanding, then killed while alpha stops.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=128M
VOL_ACK=5s
VOL_EXTRA='initial-sync = "skip"'
WIN=$((32 * MiB))

start_synced_pair 30
write_acked w "$(nbd_uri alpha)" 0 $WIN 1000 --qd 8 --seed 11

log_mark alpha
kill -STOP "${NODE_PID[beta]}"
kill -TERM "${NODE_PID[alpha]}"
# Well inside the 5 s ack-timeout: the link ends by beta's death, not a
# missed keepalive, while alpha's stop waits for beta's flush reply.
wait_log alpha "signal 15" 10 >/dev/null || fail "alpha did not log its SIGTERM"
sleep 0.5
kill_node beta
pass "beta frozen, alpha told to stop, beta killed"
reap_node alpha 20 || fail "alpha still running 20 s after its SIGTERM: its stop waits for a peer that is gone"
check_eq "alpha exits 0 on SIGTERM although its peer vanished mid-stop" 0 "$NODE_RC"
log_since alpha | grep -q "replication link to 'beta' lost" \
    && pass "alpha logs the lost link during its stop" \
    || fail "alpha does not say it lost beta during its stop"

restart_converged "after a stop that lost the peer midway" w 0 $WIN
finish
