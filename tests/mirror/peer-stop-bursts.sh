#!/bin/bash
# peer-stop-bursts: a slow-but-alive secondary. beta is stopped (SIGSTOP) in
# bursts of 0.3-4.5 s, resumed (SIGCONT) for 0.2-3 s, for 40 s under a logged
# QD16 writer, with ack-timeout 2 s: some bursts end before a ping times
# out, some just after, some well after. Once with on-peer-loss = "continue"
# (writes go on alone, resynced later) and once with "fail-stop" (writes are
# held while the peer is lost, never failed, and resume). Both must end
# synchronized, with identical images holding every acknowledged write and
# no write that failed; alpha's status is polled meanwhile and never says
# "synchronized" with the link down or regions out of sync.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "no mirrorctl"
VOL_SIZE=128M
VOL_ACK=2s
ACK_MS=2000
WIN_OFF=$((16 * MiB))
WIN=$((32 * MiB))

run_case() {
    local mode=$1 end p burst
    VOL_EXTRA="initial-sync = \"skip\"
on-peer-loss = \"$mode\""
    new_synced_pair 30
    start_status_monitor "$T/mon-$mode.jsonl" alpha
    start_writer "w-$mode" "$(nbd_unix_uri alpha)" $WIN_OFF $WIN --qd 16 --seed 41
    wait_acks "w-$mode" 500 60 || die "[$mode] the writer did not start"
    p=${NODE_PID[beta]}
    RANDOM=77; end=$((SECONDS + 40))
    local bursts=0
    while [ $SECONDS -lt $end ]; do
        burst=$((300 + RANDOM % 4200))
        kill -STOP "$p"
        sleep "$((burst / 1000)).$(printf %03d $((burst % 1000)))"
        kill -CONT "$p"
        sleep "$((RANDOM % 3)).$((2 + RANDOM % 8))"
        bursts=$((bursts + 1))
    done
    log "[$mode] $bursts stop bursts; alpha's link drops: $(grep -c "replication link to 'beta' lost" "${NODE_LOG[alpha]}")"
    n=$(acks "w-$mode")
    wait_acks "w-$mode" $((n + 200)) 60 && pass "[$mode] writes complete after the bursts" ||
        fail "[$mode] writes stalled after the bursts ($n -> $(acks "w-$mode")): $(node_status alpha | jq -c '{state,link,holding_writes,last_error}')"
    if wait_state alpha synchronized 120 >/dev/null; then
        pass "[$mode] synchronized after the bursts"
    else
        fail "[$mode] not synchronized: $(node_status alpha | jq -c '{state,link,out_of_sync_bytes,resync,last_error}')"
    fi
    stop_writer "w-$mode"
    check_eq "[$mode] no write failed (writer exit 0)" 0 "$WRITER_RC"
    log "[$mode] writer: $(cat "$T/w-$mode.out")"
    check_status_truth "[$mode]" "$T/mon-$mode.jsonl"
    check "[$mode] client FLUSH" nbd_flush alpha
    stop_pair
    check_identical "[$mode]"
    verify_writes "[$mode] alpha's image holds every acknowledged write" "w-$mode" --image "${NODE_IMG[alpha]}" $WIN_OFF $WIN
    verify_writes "[$mode] beta's image holds every acknowledged write" "w-$mode" --image "${NODE_IMG[beta]}" $WIN_OFF $WIN
}
run_case continue
run_case fail-stop
pair_finish
