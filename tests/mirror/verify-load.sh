#!/bin/bash
# verify-load: `mirrorctl verify` while a write workload runs through the
# primary, and while the link dies. Writes in flight to a chunk being
# compared never show up as a mismatch (the overlap interlock: both copies
# are read with the same writes applied), the workload sees no error and no
# long stall; the copies match afterwards. A secondary killed mid-verify ends
# the verify as failed, the primary keeps serving, and after the restart the
# pair resyncs as usual; a verify during that resync skips the regions it
# has yet to copy.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_ACK=5s
# The rate limit applies to verify too: 64M take about 4 s, long enough to
# overlap the workload and to be interrupted.
VOL_EXTRA='initial-sync = "skip"
resync-rate = "16M"'
WIN_OFF=$((8 * MiB))
WIN=$((16 * MiB))
require jq
have_ctl || skip "verify needs mirrorctl"
start_synchronized_pair

# --- 4. verify under a write workload: no false mismatch
start_writer w "$(nbd_uri alpha)" $WIN_OFF $WIN --qd 8 --seed 5
wait_acks w 500 60 || die "the writer did not get 500 writes acknowledged"
for i in 1 2; do
    a0=$(acks w)
    t0=$SECONDS
    out=$(ctl alpha verify --wait) || fail "verify $i under load: $out"
    check_eq "verify $i under load: no false mismatch" 0 "$(jq -r .out_of_sync_bytes <<<"$out")"
    check_eq "verify $i under load: compared the whole volume" $((64 * MiB)) "$(jq -r .done_bytes <<<"$out")"
    a1=$(acks w)
    [ $((a1 - a0)) -gt 100 ] && pass "verify $i ran alongside $((a1 - a0)) acknowledged writes in $((SECONDS - t0)) s" \
        || fail "verify $i: only $((a1 - a0)) writes acknowledged meanwhile (the workload stalled?)"
done
check_eq "resync-rate applies: the rate shown is at most the limit" yes \
    "$(status_get alpha '.verify.rate_bytes_per_sec <= 20971520' | sed 's/true/yes/')"
check_eq "nothing marked out of sync under load" 0 "$(status_get alpha .out_of_sync_bytes)"
stop_writer w
check_eq "the writer saw no error" 0 "$WRITER_RC"
stall=$(writer_field w max_stall_ms)
[ "${stall%.*}" -lt 2000 ] && pass "the longest write stall was ${stall} ms" \
    || fail "a write stalled ${stall} ms behind verify"
nbd_flush alpha
verify_writes "alpha holds every acknowledged write" w --uri "$(nbd_uri alpha)" $WIN_OFF $WIN
check_identical "after verify under load"

# --- one verify at a time; --cancel stops it
out=$(ctl alpha verify) && pass "verify without --wait: $out" || fail "verify: $out"
refused_ctl "a second verify while one runs" alpha "a verify is running" verify
out=$(ctl alpha verify --cancel) && pass "verify --cancel: $out" || fail "verify --cancel: $out"
check_eq "status: the verify was cancelled" "cancelled false" \
    "$(status_get alpha '"\(.verify.result) \(.verify.running)"')"
done_bytes=$(status_get alpha .verify.done_bytes)
[ "$done_bytes" -lt $((64 * MiB)) ] && pass "it stopped after $done_bytes of $((64 * MiB)) bytes" \
    || fail "the cancelled verify compared everything ($done_bytes)"
refused_ctl "--cancel with no verify running" alpha "no verify is running" verify --cancel

# --- 6. the secondary killed mid-verify
ctl alpha verify --wait >"$T/v.out" 2>&1 &
VPID=$!
deadline=$((SECONDS + 20))
until [ "$(status_get alpha '.verify.running and .verify.done_bytes > 0')" = true ]; do
    [ $SECONDS -lt $deadline ] || die "the verify did not start comparing"
    sleep 0.1
done
kill_node beta
wait "$VPID"; rc=$?
check_eq "verify --wait exits 1 when the link dies" 1 "$rc"
grep -q "the link was lost" "$T/v.out" && pass "it says why: $(cat "$T/v.out")" \
    || fail "verify --wait output: $(cat "$T/v.out")"
result=$(status_get alpha .verify.result)
[[ $result == failed:* ]] && pass "status: the verify $result" || fail "status: verify result '$result'"
check_eq "status: not running" false "$(status_get alpha .verify.running)"
nbd_fill "$(nbd_unix_uri alpha)" $((40 * MiB)) $((1 * MiB)) 77 \
    && pass "alpha keeps serving writes after the link died" || fail "alpha refused a write after the link died"
nbd_fill "$(nbd_unix_uri alpha)" $((16 * MiB)) $((32 * MiB)) 78 || fail "writing 32M to alpha alone failed"
check_eq "alpha tracks what beta lacks" degraded "$(status_get alpha .state)"
must_start beta
# Verify while resyncing: the regions still dirty need no checking, the
# others must agree.
wait_state alpha resyncing 30 >/dev/null || fail "no resync after beta came back"
out=$(ctl alpha verify --wait) || fail "verify while resyncing: $out"
check_eq "verify while resyncing finds nothing beyond what resync copies" 0 \
    "$(jq -r .out_of_sync_bytes <<<"$out")"
wait_state alpha synchronized 60 >/dev/null || fail "alpha not synchronized after beta came back"
out=$(ctl alpha verify --wait) || fail "verify after the resync: $out"
check_eq "verify after the resync finds nothing" 0 "$(jq -r .out_of_sync_bytes <<<"$out")"
stop_pair
check_identical "after the restart and resync"
pair_finish
