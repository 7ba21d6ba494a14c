#!/bin/bash
# dial-cross: both nodes' connections cross for certain, not by luck as in
# dial-race. alpha (secondary, the node that dials) reaches beta through
# delayproxy.py, held "down": alpha's connection is accepted by the proxy and
# its handshake waits there, while beta sees nothing. The operator's rejoin on
# beta (primary) then finds no session and dials alpha itself (through a
# second, slow proxy); the first is let through after 0 to 1 s, so alpha's
# own session reaches beta while beta's is in every phase (before its plan,
# planned, active): both refusals, "already active" and "another handshake
# is being planned", are reached. What a user checks, each
# round: exactly one session survives and the split's changes are resynced
# (both nodes synchronized), alpha holds every acknowledged write, neither
# status shows an error, and no log shows unrelated data or a split brain.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_PRIMARY=beta
have_ctl || skip "needs mirrorctl"

: >"$T/proxy.ctl"
pick_ports
"$PY" "$MIRROR_DIR/delayproxy.py" 127.0.0.1:0 "${NODE_ADDR[beta]}" "$T/proxy.ctl" \
    "$T/proxy.ready" 2>"$T/proxy.err" &
BG_PIDS+=($!)
wait_for 10 test -s "$T/proxy.ready" || die "delayproxy did not start: $(cat "$T/proxy.err")"
# beta's dial reaches alpha through a second proxy, 150 ms each way: its
# handshake takes ~800 ms, so alpha's session, let through at 0 to 1 s,
# arrives while beta's is in every phase (before its plan, planned, active).
: >"$T/proxy2.ctl"
"$PY" "$MIRROR_DIR/delayproxy.py" 127.0.0.1:0 "${NODE_ADDR[alpha]}" "$T/proxy2.ctl" \
    "$T/proxy2.ready" 2>"$T/proxy2.err" &
BG_PIDS+=($!)
wait_for 10 test -s "$T/proxy2.ready" || die "delayproxy did not start: $(cat "$T/proxy2.err")"
write_configs() {
    write_proxied_configs
    local real=${NODE_ADDR[alpha]}
    NODE_ADDR[alpha]=$(cat "$T/proxy2.ready")
    write_config "$T/beta.toml"
    NODE_ADDR[alpha]=$real
}
NODE_CFG[alpha]=$T/alpha.toml
NODE_CFG[beta]=$T/beta.toml

setup_pair
start_pair
wait_for 30 synchronized_both || die "the pair did not synchronize"
check_eq "alpha is secondary (and the node that dials)" secondary "$(status_get alpha .role)"

WIN=$((4 * MiB))
i=0
echo 150 >"$T/proxy2.ctl"
for hold in 0 0.3 0.5 0.6 0.7 1.0; do
    i=$((i + 1))
    out=$(ctl beta split) || die "split $i: $out"
    stop_node alpha
    write_acked w$i "$(nbd_unix_uri beta)" $(((i - 1) * WIN)) "$WIN" 200
    echo down >"$T/proxy.ctl"
    sleep 0.3              # the proxy has read "down"
    must_start alpha
    wait_log alpha "outgoing connection" 10 >/dev/null || fail "round $i: alpha did not dial"
    out=$(ctl beta rejoin) && pass "round $i: rejoin answered: $out" \
        || fail "round $i: rejoin failed: $out"
    sleep "$hold"
    : >"$T/proxy.ctl"      # alpha's own connection reaches beta now
    wait_for 30 synchronized_both && pass "round $i (${hold} s): synchronized on both nodes" \
        || fail "round $i (${hold} s): not synchronized: alpha $(status_get alpha '"\(.state) \(.last_error)"'), beta $(status_get beta '"\(.state) \(.last_error)"')"
    verify_writes "round $i: alpha holds every acknowledged write" w$i --image "${NODE_IMG[alpha]}" \
        $(((i - 1) * WIN)) "$WIN"
    sleep 1                # a late refusal of the second session would show now
    check_eq "round $i: no error in beta's status" "" "$(status_get beta '.last_error // ""')"
    check_eq "round $i: no error in alpha's status" "" "$(status_get alpha '.last_error // ""')"
    check_eq "round $i: still synchronized on both nodes" yes "$(synchronized_both && echo yes)"
done

crossed=$( { log_all alpha; log_all beta; } | grep -cE "already active|being planned|a second session refused")
log "second sessions refused: $crossed"
[ "$crossed" -ge $i ] && pass "the dials crossed in every round ($crossed second sessions refused)" \
    || fail "the dials crossed in fewer rounds than $i: $crossed second sessions refused"
log "warnings of a refused second session: $( { log_all alpha; log_all beta; } | grep -E "warn: replication: the peer refused the connection: (a replication session is already active|another handshake)" | head -n 3)"
check_no_divergence_logged
stop_pair
check_identical "after the crossed dials"
pair_finish
