#!/bin/bash
# netns-cut-moments: the link (two namespaces, netns_nodes) cut at the
# moments that matter, under a logged writer, both ways or one way (a tbf
# qdisc that passes nothing):
#   split      cut as `split` is sent: the command answers (within the
#              relay/ack bounds) and says what happened; healed: rejoin
#              brings the pair back
#   rejoin     cut while the rejoin's resync runs
#   rejoin-cut split, cut, rejoin while cut (no peer to resync), heal
#   handshake  cut 0-300 ms after the link comes back, 8 times: the
#              handshake is interrupted at various points
# After each: synchronized within 120 s of the heal. At the end: identical
# images holding every acknowledged write, no split brain logged.
. "$(dirname "$0")/pairlib.sh"
require ip tc
have_ctl || skip "no mirrorctl"
netns_nodes mcm 10.127.0
VOL_SIZE=256M
VOL_ACK=1s
ACK_MS=1000
VOL_EXTRA='initial-sync = "skip"
resync-rate = "16M"'
WIN_OFF=$((64 * MiB))
WIN=$((64 * MiB))
back_in_sync() { # LABEL
    local st
    [ "$(status_get alpha .state)" = split ] && { out=$(ctl alpha rejoin); log "[$1] rejoin: $out"; }
    if wait_state alpha synchronized 120 >/dev/null; then
        pass "[$1] synchronized again"
    else
        fail "[$1] not synchronized 120 s after the heal: $(node_status alpha | jq -c '{state,link,out_of_sync_bytes,resync,last_error}') beta: $(node_status beta | jq -c '{state,link,consistent,last_error}')"
    fi
}
start_synced_pair 30
start_writer w "$(nbd_unix_uri alpha)" $WIN_OFF $WIN --qd 8 --seed 61
wait_acks w 500 60 || die "the writer did not start"

for dir in both a b; do
    # ---- split
    label="split, cut $dir"
    ( sleep 0.0$((RANDOM % 10)); netns_cut $dir ) &
    cutter=$!
    out=$(timeout 60 "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" split 2>&1); rc=$?
    wait $cutter
    log "[$label] split: exit $rc: $out; alpha: $(status_get alpha .state), beta: $(status_get beta .state)"
    [ $rc -ne 124 ] && pass "[$label] split answered (exit $rc)" || fail "[$label] split hung"
    sleep 3
    netns_heal
    back_in_sync "$label"

    # ---- a cut during the rejoin's resync
    label="rejoin resync, cut $dir"
    out=$(ctl alpha split) || fail "[$label] split: $out"
    sleep 3   # not readiness: writes accumulate for the resync (16M/s)
    out=$(ctl alpha rejoin) || fail "[$label] rejoin: $out"
    wait_state alpha resyncing 10 >/dev/null || log "[$label] no resyncing state seen"
    sleep 0.5
    netns_cut $dir
    sleep 3
    log "[$label] cut: alpha $(node_status alpha | jq -c '{state,link,out_of_sync_bytes}') beta $(node_status beta | jq -c '{state,link,consistent}')"
    netns_heal
    back_in_sync "$label"

    # ---- rejoin while cut
    label="rejoin while cut $dir"
    out=$(ctl alpha split) || fail "[$label] split: $out"
    netns_cut $dir
    sleep 2
    out=$(timeout 60 "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" rejoin 2>&1); rc=$?
    log "[$label] rejoin while cut: exit $rc: $out"
    [ $rc -ne 124 ] && pass "[$label] rejoin answered (exit $rc)" || fail "[$label] rejoin hung"
    sleep 2
    netns_heal
    back_in_sync "$label"
done

# ---- cuts during the handshake
for i in 1 2 3 4 5 6 7 8; do
    label="handshake $i"
    netns_cut both
    wait_state alpha 'degraded|disconnected' 15 >/dev/null || fail "[$label] alpha never saw the cut"
    log_mark alpha
    netns_heal
    wait_log alpha "replication: outgoing connection" 20 >/dev/null
    sleep "0.$((RANDOM % 3))$((RANDOM % 10))"
    netns_cut $([ $((i % 2)) = 0 ] && echo a || echo b)
    sleep 2.5
    netns_heal
    back_in_sync "$label"
done

# A write may wait 7 x ack-timeout for a peer that still answers other
# requests (ko-count, docs/replication-protocol.md): after a one-way cut is
# healed, TCP's retransmission backoff delays the peer's replies.
finish_writer w "$(nbd_unix_uri alpha)" $WIN_OFF $WIN $((7 * ACK_MS))
out=$(ctl alpha verify --wait) || fail "verify: $out"
check_eq "verify finds no difference" 0 "$(status_get alpha .verify.out_of_sync_bytes)"
stop_pair
check_identical "after the cuts"
verify_writes "beta's image holds every acknowledged write" w --image "${NODE_IMG[beta]}" $WIN_OFF $WIN
check_no_divergence_logged
pair_finish
