#!/bin/bash
# resize-race: `mirrorctl resize` sent at the same instant as another
# command from a second shell (split on either node, rejoin, verify, hold),
# six times, each growing the volume by 16M, under a logged writer. Every
# command returns with exit 0 or 1 and a message; a refused resize leaves
# both nodes at the old size and succeeds once repeated; the pair always
# ends synchronized at the new size on both nodes, identical, with every
# acknowledged write.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "no mirrorctl"
VOL_SIZE=64M
VOL_ACK=2s
ACK_MS=2000
VOL_EXTRA='initial-sync = "skip"'
start_synced_pair 30
start_writer w "$(nbd_unix_uri alpha)" 0 $((32 * MiB)) --qd 8 --seed 91
wait_acks w 300 60 || die "the writer did not start"
others=("alpha split" "beta split" "alpha verify" "beta hold --timeout_ms 500" "alpha rejoin" "beta rejoin")
mb=64
for i in 0 1 2 3 4 5; do
    mb=$((mb + 16)); VOL_SIZE=${mb}M; write_configs
    read -r node cmd <<<"${others[$i]}"
    [ "$cmd" = rejoin ] && { ctl alpha split >/dev/null; sleep 0.5; }
    timeout 90 "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" resize >"$T/r$i.out" 2>&1 &
    rp=$!
    sleep "0.0$((RANDOM % 5))"
    out=$(timeout 90 "$MIRRORCTL" --socket "${NODE_CTL[$node]}" $cmd 2>&1); rc=$?
    wait $rp; rrc=$?
    log "[$i: resize || $node $cmd] resize: exit $rrc: $(tr '\n' ' ' <"$T/r$i.out"); $cmd: exit $rc: $out"
    [ $rrc -le 1 ] && [ $rc -le 1 ] && pass "[$i] both commands returned 0 or 1" || fail "[$i] resize exit $rrc, $cmd exit $rc"
    sz="$(status_get alpha .size) $(status_get beta .size)"
    [ "${sz% *}" = "${sz#* }" ] && pass "[$i] both nodes serve the same size ($sz)" || fail "[$i] sizes differ: $sz"
    ctl alpha release >/dev/null; ctl alpha verify --cancel >/dev/null
    [ "$(status_get alpha .state)" = split ] && ctl alpha rejoin >/dev/null
    wait_state alpha synchronized 60 >/dev/null || fail "[$i] not synchronized: $(node_status alpha | jq -c '{state,link,last_error}')"
    if [ $rrc -ne 0 ]; then
        out=$(ctl alpha resize) && pass "[$i] resize again: $out" || fail "[$i] resize again: $out"
    fi
    check_eq "[$i] alpha serves ${mb}M" $((mb * MiB)) "$(status_get alpha .size)"
    check_eq "[$i] beta serves ${mb}M" $((mb * MiB)) "$(status_get beta .size)"
    wait_state alpha synchronized 60 >/dev/null || fail "[$i] not synchronized after the resize"
done
finish_writer w "$(nbd_unix_uri alpha)" 0 $((32 * MiB)) $ACK_MS
out=$(ctl alpha verify --wait) || fail "verify: $out"
check_eq "verify finds no difference" 0 "$(status_get alpha .verify.out_of_sync_bytes)"
stop_pair
check_identical "after the resize races"
verify_writes "beta's image holds every acknowledged write" w --image "${NODE_IMG[beta]}" 0 $((32 * MiB))
pair_finish
