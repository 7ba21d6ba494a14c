#!/bin/bash
# demote-standby-wait: demote answers once the pair is back in standby (at
# most ack-timeout). A slow link (delayproxy, 500 ms each way) keeps the new
# standby handshake from completing for a while, and during that wait:
#  1. `mirrorctl promote --force` on the demoting node itself: refused (EBUSY,
#     the demote is finishing), or if it ran, the demote's
#     answer must not then say "secondary" (the node is primary);
#  2. mirrord is stopped (SIGTERM): the demote, which took effect (the role
#     is recorded), must still be answered, not cut off ("mirrord closed the
#     connection"), or a failover script takes it for a failed demote.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_ACK=4s
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "needs mirrorctl"
PY=$(command -v python3) || skip "needs python3"

# proxied_pair: alpha (the dialer) reaches beta through delayproxy.py.
proxied_pair() {
    rm -f "$T/proxy.ready" "$T"/*.meta; : >"$T/delay_ms"
    pick_ports
    "$PY" "$MIRROR_DIR/delayproxy.py" 127.0.0.1:0 "${NODE_ADDR[beta]}" "$T/delay_ms" \
        "$T/proxy.ready" 2>"$T/proxy.err" &
    CLEANUP_HOOKS+=("kill $!")
    wait_for 10 test -s "$T/proxy.ready" || die "delayproxy did not start: $(cat "$T/proxy.err")"
    start_synced_pair 30
    echo 500 >"$T/delay_ms"
    sleep 1.5
}
write_configs() { write_proxied_configs; }
NODE_CFG[alpha]=$T/alpha.toml
NODE_CFG[beta]=$T/beta.toml
# demote_bg: alpha's demote in the background, its answer in demote.out;
# returns once alpha recorded the role (the standby wait began).
demote_bg() {
    ( out=$(timeout 60 "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" demote 2>&1)
      echo "rc=$? $out" >"$T/demote.out" ) &
    DEMOTE_PID=$!
    wait_for 30 grep -q "this node is now secondary" "${NODE_LOG[alpha]}" \
        || die "alpha did not become secondary"
}

# --- 1. promote on the demoting node during the wait
proxied_pair
demote_bg
# Refused while the demote finishes (EBUSY, saying so), or done: then the
# demote must not answer "secondary" for a node that is primary.
if out=$(ctl alpha promote --force); then
    pass "[promote] promote --force during the wait: $out"
else
    [[ "$out" == *"demote is finishing"*"(EBUSY)" ]] \
        && pass "[promote] promote --force during the wait refused: $out" \
        || fail "[promote] promote --force during the wait: $out"
fi
wait $DEMOTE_PID
ans=$(cat "$T/demote.out")
role=$(status_get alpha .role)
if [ "$role" = primary ] && [[ "$ans" == "rc=0 secondary"* ]]; then
    fail "[promote] demote answered '$ans' while alpha is $role"
else
    pass "[promote] demote answered '$ans'; alpha is $role"
fi
stop_pair

# --- 2. mirrord stopped during the wait
proxied_pair
demote_bg
kill -TERM "${NODE_PID[alpha]}"
wait $DEMOTE_PID
ans=$(cat "$T/demote.out")
[[ "$ans" == "rc=0 "* ]] && pass "[stop] the demote was answered: $ans" \
    || fail "[stop] the demote, which took effect, was not answered: $ans"
reap_node alpha 30 || fail "alpha did not stop"
must_start alpha
check_eq "[stop] alpha restarts as secondary (the demote took effect)" secondary "$(status_get alpha .role)"
stop_pair
pair_finish
