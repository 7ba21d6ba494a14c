#!/bin/bash
# proxy-delay-loss: the link through delayproxy.py (no netem here), under a
# logged QD8 writer, ack-timeout 1 s:
#   delay      1.5 s each way (a round trip 3x the ack-timeout) for 20 s: no
#              session can keep its pings answered; the client keeps writing
#              (degraded), the status never says synchronized
#   jitter     the delay jumps between 0 and 0.9 s every 0.3-1.5 s for 30 s
#   loss       30% (stalls of 200-600 ms, 1 in 20 of them a reset) for 30 s
# After each, the proxy is healed: synchronized within 120 s. At the end:
# identical images with every acknowledged write, no failed write.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "no mirrorctl"
VOL_SIZE=128M
VOL_ACK=1s
ACK_MS=1000
VOL_EXTRA='initial-sync = "skip"'
WIN_OFF=$((16 * MiB))
WIN=$((32 * MiB))
pick_ports
echo "" >"$T/proxy.ctl"
"$PY" "$MIRROR_DIR/delayproxy.py" 127.0.0.1:0 "${NODE_ADDR[beta]}" "$T/proxy.ctl" "$T/proxy.ready" 2>"$T/proxy.err" &
BG_PIDS+=($!)
wait_for 10 test -s "$T/proxy.ready" || die "delayproxy did not start"
write_configs() { write_proxied_configs; }
NODE_CFG[alpha]=$T/alpha.toml
NODE_CFG[beta]=$T/beta.toml
proxy() { echo "$*" >"$T/proxy.ctl.tmp"; mv "$T/proxy.ctl.tmp" "$T/proxy.ctl"; }
start_synced_pair 30
start_status_monitor "$T/mon.jsonl" alpha
start_writer w "$(nbd_unix_uri alpha)" $WIN_OFF $WIN --qd 8 --seed 71
wait_acks w 500 60 || die "the writer did not start"

healed() { # LABEL
    proxy ""
    if wait_state alpha synchronized 120 >/dev/null; then
        pass "[$1] healed: synchronized"
    else
        fail "[$1] not synchronized 120 s after the heal: $(node_status alpha | jq -c '{state,link,out_of_sync_bytes,resync,last_error}')"
    fi
    n=$(acks w); wait_acks w $((n + 200)) 30 || fail "[$1] writes stalled after the heal"
}

proxy 1500
sleep 20
st=$(status_get alpha .state)
check_eq "[delay 3 s round trip] alpha is not synchronized" yes "$([ "$st" != synchronized ] && echo yes || echo "no ($st)")"
n=$(acks w); wait_acks w $((n + 200)) 30 && pass "[delay] writes complete" || fail "[delay] writes stalled"
log "[delay] link drops: $(grep -c "replication link to 'beta' lost" "${NODE_LOG[alpha]}")"
healed delay

RANDOM=99; end=$((SECONDS + 30))
while [ $SECONDS -lt $end ]; do
    proxy $((RANDOM % 10 * 100))
    sleep "$((RANDOM % 2)).$((3 + RANDOM % 7))"
done
healed jitter

proxy "0 loss=30 seed=5"
sleep 30
n=$(acks w); wait_acks w $((n + 200)) 30 && pass "[loss 30%] writes complete" || fail "[loss 30%] writes stalled"
healed "loss 30%"

stop_writer w
check_eq "no write failed" 0 "$WRITER_RC"
log "writer: $(cat "$T/w.out")"
check_status_truth "[status]" "$T/mon.jsonl"
stop_pair
check_identical "after delay, jitter and loss"
verify_writes "beta's image holds every acknowledged write" w --image "${NODE_IMG[beta]}" $WIN_OFF $WIN
check_no_divergence_logged
pair_finish
