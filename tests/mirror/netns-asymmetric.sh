#!/bin/bash
# netns-asymmetric: the pair on two network namespaces (netns_nodes) under a
# logged writer, the link cut in ONE direction only (a tbf qdisc that passes
# nothing on one veth end: there is no netem nor iptables here), then
# flapping both ways and one way every 0.5-3 s. Meanwhile both nodes'
# `status --json` is polled and must tell the truth at every moment:
#   - "synchronized" only with the link connected and nothing out of sync;
#   - out-of-sync and resync byte counts never negative, done <= total;
# after each heal the pair synchronizes, and at the end both images are
# identical and hold every acknowledged write.
. "$(dirname "$0")/pairlib.sh"
require ip tc
netns_nodes mas 10.124.0

VOL_SIZE=256M
VOL_ACK=1s
ACK_MS=1000
VOL_EXTRA='initial-sync = "skip"
resync-rate = "32M"'
WIN_OFF=$((16 * MiB))
WIN=$((64 * MiB))

start_synchronized_pair
start_status_monitor "$T/status.jsonl" alpha beta
# An events stream on each node: its last event must be the final status.
for n in alpha beta; do
    "$MIRRORCTL" --socket "${NODE_CTL[$n]}" events >"$T/events-$n.jsonl" 2>"$T/events-$n.err" &
    BG_PIDS+=($!)
done

start_writer w "$(nbd_unix_uri alpha)" $WIN_OFF $WIN --qd 16 --seed 11
wait_acks w 2000 60 || die "the writer did not get 2000 writes acknowledged"
res_a=$(node_resources alpha); res_b=$(node_resources beta)

for dir in a b; do
    label="one-way cut, nothing leaves $dir"
    log_mark alpha; log_mark beta
    netns_cut $dir
    if st=$(wait_state alpha 'degraded|disconnected' 15); then
        pass "[$label] alpha goes $st"
    else
        fail "[$label] alpha still '$(status_get alpha .state)' 15 s after the cut"
    fi
    n=$(acks w)
    wait_acks w $((n + 1000)) 30 && pass "[$label] the client keeps writing" ||
        fail "[$label] writes stalled ($n -> $(acks w))"
    sleep 5   # not readiness: the cut lasts several ack-timeouts (redials, half-open sessions)
    check_eq "[$label] beta's link is not connected" yes \
        "$(status_get beta '.link != "connected" or .state != "synchronized"' | sed 's/true/yes/')"
    netns_heal
    if wait_state alpha synchronized 90 >/dev/null; then
        pass "[$label] healed: synchronized again"
    else
        fail "[$label] not synchronized 90 s after the heal: $(node_status alpha | jq -c '{state,link,out_of_sync_bytes,resync,last_error}')"
    fi
done

# Flapping: FLAP_SECONDS (60) of cuts of 0.5-3 s, one way or both, at random.
RANDOM=4242
end=$((SECONDS + ${FLAP_SECONDS:-60})); flaps=0
while [ $SECONDS -lt $end ]; do
    case $((RANDOM % 3)) in
        0) netns_cut a ;; 1) netns_cut b ;; 2) netns_cut both ;;
    esac
    sleep "$((RANDOM % 25 / 10 + 0)).$((RANDOM % 10 + 5))"
    netns_heal
    sleep "$((RANDOM % 3)).$((RANDOM % 10))"
    flaps=$((flaps + 1))
done
log "$flaps flaps"
if wait_state alpha synchronized 120 >/dev/null; then
    pass "[flapping] synchronized after $flaps flaps"
else
    fail "[flapping] not synchronized 120 s after $flaps flaps: $(node_status alpha | jq -c '{state,link,out_of_sync_bytes,resync,last_error}')"
fi
check_no_leak "[flapping]" alpha "$res_a"
check_no_leak "[flapping]" beta "$res_b"
wait_state beta synchronized 30 >/dev/null || fail "[flapping] beta not synchronized: $(node_status beta | jq -c '{state,link,out_of_sync_bytes,resync,last_error}')"

# A write may wait 7 x ack-timeout for a peer that still answers other
# requests (ko-count, docs/replication-protocol.md): after a one-way cut is
# healed, TCP's retransmission backoff delays the peer's replies.
finish_writer w "$(nbd_unix_uri alpha)" $WIN_OFF $WIN $((7 * ACK_MS))
check_status_truth "[status]" "$T/status.jsonl"
sleep 1   # not readiness: lets a last event arrive
for n in alpha beta; do
    check_eq "[events] $n's last event is its status" "$(status_get $n '[.state, .link, .out_of_sync_bytes] | @csv')" \
        "$(tail -n 1 "$T/events-$n.jsonl" | jq -r '[.state, .link, .out_of_sync_bytes] | @csv')"
    log "[events] $n: $(grep -c . "$T/events-$n.jsonl") events; $(cat "$T/events-$n.err")"
done

stop_node alpha
stop_node beta
check_identical "after the one-way cuts and the flapping"
verify_writes "beta's image holds every acknowledged write" w --image "${NODE_IMG[beta]}" $WIN_OFF $WIN
check_no_divergence_logged
pair_finish
