#!/bin/bash
# ctl-client-limits: the control socket is open to every local user (mode 0666:
# anyone may ask for status), so what one unprivileged client does there must not
# take the control plane away from root nor the daemon's memory.
#  1. an unprivileged user holds 70 idle connections (a leaking monitoring agent
#     does the same): root's `mirrorctl status` and `split` must still work.
#     On main (8e2e0d6) both fail at once, exit 3, "write to mirrord at ...
#     (Broken pipe)": the daemon closes every connection past 64 and never
#     closes idle ones, and logs nothing.
#  2. an unprivileged user pipelines 200000 `status` requests and never reads
#     the replies: the daemon's memory must stay bounded (the replies wait in
#     an unbounded queue on main: RSS 12 MB -> 210 MB, growing with the count;
#     enough of them and the OOM killer ends the primary).
#  3. a client that pipelines requests and reads the replies gets every one
#     (backpressure slows it down, drops nothing), and 20000 refused `split`s
#     take a few rate-limited log lines, not 20000.
#  4. meanwhile, an idle connection is closed after 60 s (ETIMEDOUT line), and
#     root's `mirrorctl events` stream is not.
. "$(dirname "$0")/pairlib.sh"
VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
require setpriv
[ "$(id -u)" -eq 0 ] || skip "needs root (runs a client as uid 65534)"
FL=("$PY" "$MIRROR_DIR/ctl-flood.py")
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
# The test's temp dir is private (0700): the control socket goes where
# another user can reach it, as /run/mirrord is.
CD=$(mktemp -d /tmp/mirrord-ctl.XXXXXX); chmod 755 "$CD"; CLEANUP_HOOKS+=("rm -rf $CD")
NODE_CTL[alpha]=$CD/alpha.ctl
start_synchronized_pair
A=${NODE_CTL[alpha]}
rss_kb() { ps -o rss= -p "${NODE_PID[alpha]}" | tr -d ' '; }

# --- 1. idle connections from another user
HOLD=120 "${NOBODY[@]}" "${FL[@]}" "$A" idle 70 >"$T/idle.out" 2>&1 &
IDLE=$!; BG_PIDS+=("$IDLE")
wait_for 10 grep -q holding "$T/idle.out" || die "the idle client did not connect: $(cat "$T/idle.out")"
log "uid 65534 $(cat "$T/idle.out") connections to alpha's control socket"
out=$("${NOBODY[@]}" "${FL[@]}" "$A" raw '{"version":1,"command":"status","args":{}}')
case $out in
*'"code":"EAGAIN","error":"too many control connections from uid 65534 (limit 8 per user)"'*)
    pass "the same user's next connection is told why it is refused" ;;
*) fail "the same user's next connection got: $out" ;;
esac
out=$(timeout 20 "${NOBODY[@]}" "$MIRRORCTL" --socket "$A" status 2>&1); rc=$?
case "$rc $out" in
"1 "*"limit 8 per user"*) pass "the same user's mirrorctl says why it is refused (exit 1)" ;;
*) fail "the same user's mirrorctl: exit $rc: $out" ;;
esac
ok=""
for i in $(seq 60); do
    if out=$(timeout 20 "$MIRRORCTL" --socket "$A" status 2>&1); then ok=1; break; fi
    sleep 1
done
if [ -n "$ok" ]; then
    pass "root's status works while another user holds 70 idle connections"
else
    fail "root's status fails while another user holds 70 idle connections: $out"
fi
out=$(timeout 60 "$MIRRORCTL" --socket "$A" split 2>&1); rc=$?
check_eq "root's split works meanwhile ($out)" 0 $rc
[ $rc -eq 0 ] && { out=$(ctl alpha rejoin --wait); log "rejoin: $out"; }
kill "$IDLE" 2>/dev/null; wait "$IDLE" 2>/dev/null
wait_state alpha synchronized 30 >/dev/null || fail "alpha not synchronized after the rejoin"

# --- 4. (runs in the background during 2 and 3) an idle connection is
# closed after 60 s, saying why; an events stream is not
HOLD=100 "${NOBODY[@]}" "${FL[@]}" "$A" wait-close >"$T/wait-close.out" 2>&1 &
WC=$!; BG_PIDS+=("$WC")
timeout 100 "$MIRRORCTL" --socket "$A" events >"$T/events.out" 2>&1 &
EV=$!; BG_PIDS+=("$EV")

# --- 2. requests pipelined by a client that never reads
before=$(rss_kb)
HOLD=5 timeout 120 "${NOBODY[@]}" "${FL[@]}" "$A" lines 200 >"$T/lines.out" 2>&1 &
LP=$!; BG_PIDS+=("$LP")
peak=$before
while kill -0 "$LP" 2>/dev/null; do
    r=$(rss_kb); [ -n "$r" ] && [ "$r" -gt "$peak" ] && peak=$r
    sleep 0.5
done
wait "$LP"
log "pipelining client: $(cat "$T/lines.out"); alpha RSS ${before} kB before, ${peak} kB at its peak"
if [ $((peak - before)) -lt $((64 * 1024)) ]; then
    pass "alpha's memory stays bounded (+$(((peak - before) / 1024)) MiB) under 200000 unread replies"
else
    fail "alpha's memory grew by $(((peak - before) / 1024)) MiB for 200000 status replies its client never read"
fi
node_alive alpha && pass "alpha still runs" || fail "alpha died"

# --- 3. pipelined requests are slowed down, never dropped; refusals are
# logged, not once per refusal
out=$(timeout 120 "${NOBODY[@]}" "${FL[@]}" "$A" pipeline 20000 status)
check_eq "a client that pipelines 20000 status requests and reads gets every reply" \
    "replies 20000 ok=20000" "$out"
out=$(timeout 120 "${NOBODY[@]}" "${FL[@]}" "$A" pipeline 20000 split)
check_eq "20000 refused splits are all answered" "replies 20000 EPERM=20000" "$out"
# The refusals left out are counted in the next line logged (one more
# refusal, once the rate limit lets it through).
perm_counted() {
    "${NOBODY[@]}" "${FL[@]}" "$A" raw '{"version":1,"command":"split","args":{}}' >/dev/null
    grep -q "uid 65534 may not run 'split' ([0-9]* more since the last line)" "$(node_log alpha)"
}
wait_for 10 perm_counted || log "no refusal logged with a count of the ones left out"
n=$(grep -c "uid 65534 may not run 'split'" "$(node_log alpha)")
log "the refusals took $n lines in alpha's log: $(grep "may not run" "$(node_log alpha)" | tail -n 1)"
if [ "$n" -ge 1 ] && [ "$n" -le 130 ] && perm_counted; then
    pass "EPERM refusals are logged rate-limited, with the count left out"
else
    fail "EPERM refusals took $n lines in the log: $(grep -m3 "may not run" "$(node_log alpha)")"
fi
n=$(grep -c "refused a connection from uid 65534" "$(node_log alpha)")
[ "$n" -ge 1 ] && [ "$n" -le 130 ] && pass "refused connections are logged, rate-limited ($n lines)" \
    || fail "refused connections took $n lines in the log"
check "root's status answers afterwards" timeout 20 "$MIRRORCTL" --socket "$A" status

wait "$WC"
out=$(cat "$T/wait-close.out")
case $out in
"closed after "*'"code":"ETIMEDOUT","error":"no request for 60 s: closing the connection"'*)
    pass "an idle connection is closed, saying why ($out)" ;;
*) fail "an idle connection: $out" ;;
esac
if kill -0 "$EV" 2>/dev/null; then
    pass "root's events stream outlives the idle timeout"
else
    fail "root's events stream ended: $(tail -n 2 "$T/events.out")"
fi
kill "$EV" 2>/dev/null; wait "$EV" 2>/dev/null
pair_finish
