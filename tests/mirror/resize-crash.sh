#!/bin/bash
# resize-crash: the primary dies in the middle of `mirrorctl resize`, after
# the secondary grew and before the primary did: the one window where the
# two nodes' sizes differ on disk. Made exact: beta stops itself when RESIZE
# arrives (MIRRORD_FAULTS=stop-on-resize: after the flush that comes before
# the pause), alpha is stopped then, as it holds the writes and waits for
# the answer, beta is resumed and grows, then alpha is killed.
# Then, as after any crash of the primary: alpha restarts with the raised
# size (its backing file was extended before RESIZE went out, so it is long
# enough; its metadata grows at open with the new area dirty), the pair
# reconnects at one size, resyncs, every acknowledged write is on both
# copies, and the copies end identical.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_ACK=5s
VOL_EXTRA='initial-sync = "skip"'
WIN_OFF=$((8 * MiB))
WIN=$((16 * MiB))
have_ctl || skip "resize-crash needs mirrorctl"

start_synchronized_pair
start_writer w "$(nbd_uri alpha)" $WIN_OFF $WIN --qd 8 --seed 5
wait_acks w 800 60 || die "the writer did not get 800 writes acknowledged"
stop_writer w
check_eq "the writer saw no error" 0 "$WRITER_RC"

stop_node beta
start_with_faults beta stop-on-resize
wait_state alpha synchronized 30 >/dev/null || die "alpha and the faulty beta not synchronized"
VOL_SIZE=96M
write_configs
log_mark alpha
log_mark beta
ctl alpha resize >"$T/resize.out" 2>&1 &
RESIZE_PID=$!
BG_PIDS+=("$RESIZE_PID")
wait_stopped beta 20 || die "beta did not stop at the RESIZE: $(log_since alpha | grep resize)"
wait_log alpha "RESIZE sent to 'beta'" 5 >/dev/null || die "alpha did not log RESIZE sent"
kill -STOP "${NODE_PID[alpha]}"
check_eq "alpha's backing file is extended before RESIZE went out" $((96 * MiB)) \
    "$(stat -c %s "${NODE_IMG[alpha]}")"
kill -CONT "${NODE_PID[beta]}"
wait_log beta "resized from $((64 * MiB)) to $((96 * MiB)) bytes" 10 >/dev/null \
    && pass "beta grew from the RESIZE" || die "beta did not grow"
if log_since alpha | grep -q "resized from"; then
    fail "alpha grew before it was stopped: the window was missed"
fi
kill_node alpha
wait "$RESIZE_PID" 2>/dev/null
pass "alpha killed between beta's grow and its own: $(tr '\n' ' ' <"$T/resize.out")"

must_start alpha
line=$(wait_log alpha "volume grew from $((64 * MiB)) to $((96 * MiB)) bytes" 5) \
    && pass "alpha restarted with the raised size; its log: ${line#*: }" \
    || fail "alpha's metadata did not grow at open"
if wait_log alpha "peer 'beta' connected:" 20 >/dev/null; then
    pass "the pair reconnected at one size: $(plan_of alpha)"
else
    fail "alpha and beta did not reconnect: $(log_since alpha | grep -iE 'size|refus' | tail -n 2)"
fi
wait_state alpha synchronized 60 >/dev/null && pass "synchronized after the crash" \
    || fail "not synchronized 60 s after the restart"
check_eq "alpha serves the new size" $((96 * MiB)) "$(status_get alpha .size)"
check_eq "beta serves the new size" $((96 * MiB)) "$(status_get beta .size)"
verify_writes "alpha holds every acknowledged write" w --uri "$(nbd_uri alpha)" $WIN_OFF $WIN
verify_writes "beta holds every acknowledged write" w --uri "$(nbd_unix_uri beta)" $WIN_OFF $WIN
nbd_fill "$(nbd_unix_uri alpha)" $((90 * MiB)) $MiB 61 && pass "a write into the new area succeeds" \
    || fail "writing into the new area failed"
stop_pair
check_identical "after the crash in the middle of the resize"
pair_finish
