#!/bin/bash
# disk-failure: the primary's disk dies under load (MIRRORD_FAULTS=dead-after=N:
# after N writes every request to it fails with EIO, reads and flushes too).
# With on-io-error = "detach" (the default, DRBD's), what a user checks:
#   - the application sees no error: every write is acknowledged, and the
#     export returns every acknowledged write, served from beta's copy;
#   - alpha says it is diskless (status, mirrorctl status, log), beta that it
#     holds the only current copy;
#   - commands that need alpha's disk (split, verify, demote) are refused
#     with the way out;
#   - with beta gone, nothing can serve: reads and writes fail with EIO,
#     never stale data from the dead disk; beta back, they work again;
#   - stopped while beta may lack an acknowledged write (the link went
#     before beta confirmed a flush), alpha exits 1 and says why;
#   - restarted, alpha refuses to serve its outdated copy, and says what to
#     do; the way out it names works: promote beta (no --force), alpha on a
#     new disk with --discard-my-data takes a full copy; both copies then
#     hold every acknowledged write;
#   - with on-io-error = "pass-on" the client gets the disk's errors.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
WIN=$((16 * MiB))
have_ctl || skip "disk-failure needs mirrorctl"

setup_pair
must_start beta
start_with_faults alpha "dead-after=400"
wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize"
log_mark alpha; log_mark beta
for n in alpha beta; do
    "$MIRRORCTL" --socket "${NODE_CTL[$n]}" events >"$T/events.$n" 2>&1 &
    BG_PIDS+=($!)
done

# 1. The disk dies in the middle of a QD16 writer: no client error.
write_acked w1 "$(nbd_unix_uri alpha)" 0 $WIN 3000
wait_log alpha "detaching this disk \(on-io-error = detach\)" 5 >/dev/null \
    && pass "alpha logs the failure and that it detaches its disk" \
    || fail "alpha does not log the detach"
wait_log beta "this copy is now the only current one" 5 >/dev/null \
    && pass "beta logs that its copy is the only current one" \
    || fail "beta does not log it"
check_eq "alpha's status: disk diskless, state diskless, nothing out of sync" \
    "diskless diskless 0" "$(status_get alpha '"\(.disk) \(.state) \(.out_of_sync_bytes)"')"
check_eq "beta's status: peer_disk_failed" true "$(status_get beta .peer_disk_failed)"
out=$(ctl alpha status)
grep -q "disk .*FAILED and detached (diskless): every read and write is served by beta's copy" \
    <<<"$out" && pass "mirrorctl status on alpha says it is diskless" \
    || fail "mirrorctl status on alpha does not say it: $out"
out=$(ctl beta status)
grep -q "peer disk .*this copy is the only current one" <<<"$out" \
    && pass "mirrorctl status on beta says its copy is the only current one" \
    || fail "mirrorctl status on beta does not say it: $out"
wait_for 5 grep -q '"disk":"diskless"' "$T/events.alpha" \
    && pass "mirrorctl events on alpha reported the detach" \
    || fail "no diskless event on alpha: $(tail -n 1 "$T/events.alpha")"
wait_for 5 grep -q '"peer_disk_failed":true' "$T/events.beta" \
    && pass "mirrorctl events on beta reported that its copy is the only current one" \
    || fail "no peer_disk_failed event on beta: $(tail -n 1 "$T/events.beta")"
check "client FLUSH through alpha (beta's copy only)" nbd_flush alpha
verify_writes "alpha's export (served by beta's copy) holds every acknowledged write" w1 \
    --uri "$(nbd_unix_uri alpha)" 0 $WIN
# More writes while diskless, with FUA: still no error.
write_acked w2 "$(nbd_unix_uri alpha)" $WIN $WIN 500 --fua
verify_writes "alpha's export holds the diskless writes" w2 --uri "$(nbd_unix_uri alpha)" $WIN $WIN

# 2. What needs alpha's disk is refused, with the way out.
refused_ctl "split while diskless" alpha "diskless.*promote the peer" split
refused_ctl "verify while diskless" alpha "diskless.*promote the peer" verify
refused_ctl "demote while diskless" alpha "diskless.*--discard-my-data" demote

# 3. Beta gone: there is no copy to serve from. EIO, never the dead disk's data.
#    It dies (SIGKILL) with acknowledged writes it had not flushed: had it lost
#    power, they would be gone, so the first FLUSH after it is back fails.
# unflushed_write URI OFFSET BYTE: 64 KiB of BYTE written, acknowledged, no FLUSH.
unflushed_write() {
    "$PY" -c 'import nbd,sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(bytes([int(sys.argv[3])]) * 65536, int(sys.argv[2])); h.shutdown()' "$@"
}
# read_bytes URI OFFSET: the distinct bytes of 64 KiB read at OFFSET.
read_bytes() {
    "$PY" -c 'import nbd,sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
print(sorted(set(h.pread(65536, int(sys.argv[2]))))); h.shutdown()' "$@"
}
check "a write acknowledged through alpha, not flushed" \
    unflushed_write "$(nbd_unix_uri alpha)" $((3 * WIN)) 171
kill_node beta
wait_state alpha disconnected 10 >/dev/null || true
if out=$("${NBDTOOL[@]}" sha "$(nbd_unix_uri alpha)" 2>&1); then
    fail "a read through alpha succeeded with no copy reachable: $out"
else
    grep -q "Input/output error\|EIO" <<<"$out" && pass "with beta gone, a read fails with EIO" \
        || fail "with beta gone, a read fails, but not with EIO: $out"
fi
if out=$("${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" 0 65536 7 2>&1); then
    fail "a write through alpha succeeded with no copy reachable"
else
    grep -q "EIO" <<<"$out" && pass "with beta gone, a write fails with EIO" \
        || fail "with beta gone, a write fails, but not with EIO: $out"
fi
must_start beta
wait_state alpha diskless 30 >/dev/null && pass "beta back: alpha serves from it again (diskless)" \
    || fail "alpha did not reconnect to beta: $(status_get alpha '"\(.state) \(.last_error)"')"
if out=$(nbd_flush alpha 2>&1); then
    fail "the first FLUSH after losing beta with unflushed writes succeeded"
else
    pass "the first FLUSH after losing beta with unflushed writes fails: $out"
fi
check "the next FLUSH succeeds" nbd_flush alpha
check_eq "the unflushed write is there (beta was killed, not powered off)" "[171]" \
    "$(read_bytes "$(nbd_unix_uri alpha)" $((3 * WIN)))"
verify_writes "alpha's export holds every acknowledged write after the reconnect" w1 \
    --uri "$(nbd_unix_uri alpha)" 0 $WIN

# 3b. Stopped while beta, the only copy, may lack an acknowledged write (the
#     link went before beta confirmed a flush): alpha exits 1 and says why,
#     for systemd and the operator.
check "another write acknowledged through alpha, not flushed" \
    unflushed_write "$(nbd_unix_uri alpha)" $((3 * WIN + 65536)) 172
kill_node beta
wait_state alpha disconnected 10 >/dev/null || true
kill -TERM "${NODE_PID[alpha]}"
if reap_node alpha 20; then
    check_eq "alpha, stopped diskless with an unflushed write beta may lack, exits 1" 1 "$NODE_RC"
else
    fail "alpha did not exit within 20 s of SIGTERM (beta gone)"
fi
check "alpha's log says acknowledged writes may be lost on beta's copy" \
    grep -q "stopping diskless: the peer's copy, the only one, has not confirmed a flush" "$(node_log alpha)"
must_start beta
check_eq "the write is on beta all the same (killed, not powered off)" "[172]" \
    "$(read_bytes "$(nbd_unix_uri beta)" $((3 * WIN + 65536)))"

# 4. Alpha restarted (its disk still dead): it refuses to serve its copy.
start_refused "alpha refuses to start on its failed disk and says what to do" alpha \
    "this node's disk failed and was detached.*--discard-my-data"

# 5. The way out: promote beta (no --force: its copy is known to be the only
#    current one), replace alpha's disk, start alpha with --discard-my-data.
out=$(ctl beta promote); rc=$?
check_eq "beta promoted without --force ($out)" 0 "$rc"
check_eq "beta no longer claims a failed peer disk" false "$(status_get beta .peer_disk_failed)"
write_acked w3 "$(nbd_unix_uri beta)" $((2 * WIN)) $WIN 300
rm -f "${NODE_IMG[alpha]}"
truncate -s "$VOL_SIZE" "${NODE_IMG[alpha]}"
must_start alpha --discard-my-data
wait_state beta synchronized 60 >/dev/null || fail "beta did not resync alpha's new disk"
check_eq "beta's status: synchronized, alpha secondary" "synchronized primary" \
    "$(status_get beta '"\(.state) \(.role)"')"
stop_node beta; stop_node alpha
check_identical "after alpha's full copy"
for w in w1 w2 w3; do
    off=0; [ $w = w2 ] && off=$WIN; [ $w = w3 ] && off=$((2 * WIN))
    verify_writes "alpha's new disk holds every write $w had acknowledged" $w \
        --image "${NODE_IMG[alpha]}" $off $WIN
done

# 6. on-io-error = pass-on: the disk's errors go to the client.
VOL_EXTRA=$'initial-sync = "skip"\non-io-error = "pass-on"'
for n in alpha beta; do rm -f "${NODE_IMG[$n]}" "${NODE_META[$n]}"*; done
setup_pair
must_start beta
start_with_faults alpha "dead-after=100"
wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize"
start_writer w4 "$(nbd_unix_uri alpha)" 0 $WIN
failed_writes() { local n; n=$(grep -c '^E ' "$T/$1.acks" 2>/dev/null); echo "${n:-0}"; }
deadline=$((SECONDS + 60))
while [ "$(failed_writes w4)" -lt 10 ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
stop_writer w4
nerr=$(failed_writes w4)
[ "$nerr" -ge 10 ] && pass "pass-on: the client gets the dead disk's errors ($nerr failed writes)" \
    || fail "pass-on: only $nerr writes failed"
grep -q 'Input/output error' "$T/w4.err" && pass "pass-on: the error is EIO" \
    || fail "pass-on: no EIO in the writer's errors: $(tail -n 2 "$T/w4.err")"
check_eq "pass-on: alpha keeps its disk" ok "$(status_get alpha .disk)"

pair_finish
