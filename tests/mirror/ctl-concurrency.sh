#!/bin/bash
# ctl-concurrency: many mirrorctl commands at once, from several "shells",
# against both nodes of a pair under a logged writer: split/rejoin from
# either node, verify (and cancel), resize (same size), hold/release, backup,
# status --json in tight loops; control clients killed mid-command; then the
# primary stopped (SIGTERM) with commands in flight and restarted.
# Every command must return (none hangs: `timeout`), exit 0 or 1 with a
# message (4 only when the peer/daemon did not answer), the daemon never
# wedges, and at the end the pair synchronizes, the copies are identical and
# hold every acknowledged write.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "no mirrorctl"
VOL_EXTRA='initial-sync = "skip"
resync-rate = "64M"'
VOL_ACK=2s
ACK_MS=2000
WIN_OFF=$((16 * MiB))
WIN=$((32 * MiB))
start_synced_pair 30
start_writer w "$(nbd_unix_uri alpha)" $WIN_OFF $WIN --qd 8 --seed 21
wait_acks w 500 60 || die "the writer did not start"
res_a=$(node_resources alpha); res_b=$(node_resources beta)

mkdir -p "$T/cmds"
# runner NAME SECONDS CMD...: CMD (a mirrorctl subcommand line) again and again
# for SECONDS; every run's exit status, duration and output in $T/cmds/NAME.
runner() {
    local name=$1 secs=$2 end rc t0 out i=0; shift 2
    end=$((SECONDS + secs))
    while [ $SECONDS -lt $end ]; do
        t0=$(date +%s%N)
        out=$(timeout 60 "$@" 2>&1); rc=$?
        printf '%s rc=%d ms=%d %s\n' "$name" $rc $((($(date +%s%N) - t0) / 1000000)) \
            "$(tr '\n' ' ' <<<"$out" | cut -c1-300)" >>"$T/cmds/$name"
        i=$((i + 1))
        sleep "0.0$((RANDOM % 10))"
    done
}
A=("$MIRRORCTL" --socket "${NODE_CTL[alpha]}")
B=("$MIRRORCTL" --socket "${NODE_CTL[beta]}")
PIDS=()
runner st-a 60 "${A[@]}" status --json & PIDS+=($!)
runner st-b 60 "${B[@]}" status --json & PIDS+=($!)
runner stp-a 60 "${A[@]}" status --peer --json & PIDS+=($!)
runner split-a 60 "${A[@]}" split & PIDS+=($!)
runner rejoin-a 60 "${A[@]}" rejoin & PIDS+=($!)
runner split-b 60 "${B[@]}" split & PIDS+=($!)
runner rejoinw-b 60 "${B[@]}" rejoin --wait & PIDS+=($!)
runner verify-a 60 "${A[@]}" verify & PIDS+=($!)
runner vcancel-a 60 "${A[@]}" verify --cancel & PIDS+=($!)
runner resize-a 60 "${A[@]}" resize & PIDS+=($!)
runner hold-b 60 "${B[@]}" hold --timeout_ms 300 & PIDS+=($!)
runner release-a 60 "${A[@]}" release & PIDS+=($!)
runner backup-a 60 bash -c "rm -f $T/bk.img $T/bk.img.mirrord.json; exec ${A[*]} backup --to $T/bk.img --from '$(nbd_unix_uri beta)'" & PIDS+=($!)
# Clients killed mid-command: rejoin --wait and verify --wait, SIGKILLed.
(
    end=$((SECONDS + 60))
    while [ $SECONDS -lt $end ]; do
        "${A[@]}" rejoin --wait >/dev/null 2>&1 & p=$!
        "${A[@]}" verify --wait >/dev/null 2>&1 & q=$!
        sleep "0.$((RANDOM % 10))"
        kill -KILL $p $q 2>/dev/null; wait $p $q 2>/dev/null
    done
) & PIDS+=($!)
for p in "${PIDS[@]}"; do wait "$p"; done

cat "$T"/cmds/* >"$T/cmds.all"
log "commands run: $(wc -l <"$T/cmds.all"); by exit status: $(grep -oE ' rc=[0-9]+ ' "$T/cmds.all" | sort | uniq -c | tr -s ' \n' ' ')"
hung=$(grep -E ' rc=(124|137) ' "$T/cmds.all" | head -n 3)
[ -z "$hung" ] && pass "no command hung (all returned within 60 s)" || fail "commands that hung: $hung"
odd=$(grep -vE ' rc=[01] ' "$T/cmds.all" | head -n 5)
[ -z "$odd" ] && pass "every command exited 0 or 1" || fail "unexpected exit statuses: $odd"
silent=$(grep -E ' rc=1 ms=[0-9]+ *$' "$T/cmds.all" | head -n 3)
[ -z "$silent" ] && pass "every refusal says why" || fail "refusals without a message: $silent"
log "refusal messages seen:"
grep -E ' rc=[1-9]' "$T/cmds.all" | sed -E 's/ ms=[0-9]+//; s/[0-9]{6,}/N/g' | sort | uniq -c | sort -rn | head -n 25 | sed 's/^/    | /'
slowest=$(sed -E 's/^([^ ]+) rc=([0-9]+) ms=([0-9]+).*/\3 \1 rc=\2/' "$T/cmds.all" | sort -n | tail -n 3 | tr '\n' ';')
log "slowest commands (ms): $slowest"

# The daemons still answer, and the pair comes back.
check "alpha answers status" ctl alpha status
check "beta answers status" ctl beta status
[ "$(status_get alpha .state)" = split ] && ctl alpha rejoin >/dev/null
ctl alpha verify --cancel >/dev/null
ctl alpha release >/dev/null
if wait_state alpha synchronized 120 >/dev/null; then
    pass "synchronized after the storm"
else
    fail "not synchronized 120 s after the storm: $(node_status alpha | jq -c '{state,link,out_of_sync_bytes,resync,verify,holding_writes,last_error}')"
fi
n=$(acks w)
wait_acks w $((n + 200)) 30 && pass "writes still complete" || fail "writes stalled after the storm"
check_no_leak "after the storm" alpha "$res_a"
check_no_leak "after the storm" beta "$res_b"

# The primary stopped (SIGTERM) with commands in flight, and restarted.
PIDS=()
runner t-st-a 8 "${A[@]}" status --json & PIDS+=($!)
runner t-split-b 8 "${B[@]}" split & PIDS+=($!)
runner t-rejoin-a 8 "${A[@]}" rejoin --wait & PIDS+=($!)
runner t-verify-a 8 "${A[@]}" verify --wait & PIDS+=($!)
sleep 2
stop_writer w
check_eq "the writer saw no error before the stop" 0 "$WRITER_RC"
stop_node alpha
for p in "${PIDS[@]}"; do wait "$p"; done
cat "$T"/cmds/t-* >"$T/cmds.stop"
hung=$(grep -E ' rc=(124|137) ' "$T/cmds.stop" | head -n 3)
[ -z "$hung" ] && pass "[stop] no command hung while alpha stopped" || fail "[stop] hung: $hung"
log "[stop] exit statuses: $(grep -oE '^[^ ]+ rc=[0-9]+' "$T/cmds.stop" | sort | uniq -c | tr -s ' \n' ' ')"
grep -E ' rc=[1-9]' "$T/cmds.stop" | sed -E 's/ ms=[0-9]+//; s/[0-9]{6,}/N/g' | sort | uniq -c | sort -rn | head -n 12 | sed 's/^/    | /'
must_start alpha
[ "$(status_get alpha .state)" = split ] && ctl alpha rejoin >/dev/null
if wait_state alpha synchronized 120 >/dev/null; then
    pass "[stop] restarted alpha synchronizes"
else
    fail "[stop] not synchronized after the restart: $(node_status alpha | jq -c '{state,link,out_of_sync_bytes,resync,last_error}')"
fi
out=$(ctl alpha verify --wait) && pass "verify after everything: $out" || fail "verify: $out"
check_eq "verify finds no difference" 0 "$(status_get alpha .verify.out_of_sync_bytes)"
stop_pair
check_identical "after the control storm"
verify_writes "alpha's image holds every acknowledged write" w --image "${NODE_IMG[alpha]}" $WIN_OFF $WIN
verify_writes "beta's image holds every acknowledged write" w --image "${NODE_IMG[beta]}" $WIN_OFF $WIN
pair_finish
