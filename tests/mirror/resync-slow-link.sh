#!/bin/bash
# resync-slow-link: a resync over a link slower than the disks, with the
# volume file's defaults (ack-timeout 5s, resync-rate unlimited, 8 copies in
# flight). The link alpha -> beta is limited to 8 Mbit/s (tbf on alpha's veth,
# two network namespaces); 16 MiB are out of sync (about 17 s at that rate);
# a client keeps writing. The resync must complete and the copies converge.
#
# On main (8e2e0d6) it never does: the resync's copies in flight (8 x 1 MiB)
# queue ahead of the keepalive in the one TCP stream, the ping is answered
# after ack-timeout, the primary drops the link ("the peer did not answer a
# ping within 5000 ms") about 7 s into every resync, and since bits are
# cleared only per 64 MiB batch (kResyncBatch, after the peer's flush) no
# session keeps any progress: out-of-sync stays at 16 MiB, 15 drops in 120 s.
# Workaround there: resync-rate below the link's rate (512K: done in 40 s).
. "$(dirname "$0")/pairlib.sh"
require ip tc
VOL_SIZE=128M
VOL_ACK=5s                           # the volume file's default
VOL_EXTRA='initial-sync = "skip"'
netns_nodes rsl 10.127.0
start_synchronized_pair
kill_node beta
wait_state alpha 'degraded|disconnected' 30 >/dev/null || fail "alpha does not notice beta's death"
nbd_fill "$(nbd_unix_uri alpha)" $((32 * MiB)) $((16 * MiB)) 7 || die "the fill through alpha failed"
ip netns exec "$NSA" tc qdisc add dev "$VA" root tbf rate 8mbit burst 64kb latency 2000ms \
    || skip "no tbf qdisc here"
log "link alpha -> beta limited to 8 Mbit/s"
log_mark alpha
must_start beta
start_writer w "$(nbd_unix_uri alpha)" $((96 * MiB)) $((8 * MiB)) --qd 1 --seed 3
if wait_state alpha synchronized 150 >/dev/null; then
    pass "the resync over the slow link completes"
else
    st=$(status_get alpha '.state + ", out of sync " + (.out_of_sync_bytes|tostring)')
    drops=$(log_since alpha | grep -c "replication link to 'beta' lost")
    last=$(log_since alpha | grep "replication link to 'beta' lost" | tail -n 1)
    fail "no resync completed in 150 s over an 8 Mbit/s link: alpha $st; $drops link drops, the last: ${last#*: }"
fi
stop_writer w
check_eq "the client saw no failed write" 0 "$WRITER_RC"
ip netns exec "$NSA" tc qdisc del dev "$VA" root
wait_state alpha synchronized 120 >/dev/null || fail "alpha not synchronized even on the fast link"
stop_pair
check_identical "after the resync"
for n in alpha beta; do
    verify_writes "$n's image holds every acknowledged write" w --image "${NODE_IMG[$n]}" $((96 * MiB)) $((8 * MiB))
done
pair_finish
