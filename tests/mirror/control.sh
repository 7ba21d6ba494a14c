#!/bin/bash
# control: the control socket and mirrorctl refuse what they must, with a
# clear error, and change nothing: malformed, unknown and oversized
# requests; an unauthorised user (SO_PEERCRED); a failing and a hanging
# pre-hook (the post-hook still runs, no split; also after a hangup); a split while the peer is
# disconnected; commands on the wrong node or in the wrong state.
. "$(dirname "$0")/pairlib.sh"
require socat su

VOL_SIZE=64M
VOL_ACK=2s
VOL_EXTRA='initial-sync = "skip"'
start_synced_pair 30
have_ctl || die "this test needs mirrorctl"
CTL=${NODE_CTL[alpha]}

raw() { printf '%s\n' "$1" | timeout 5 socat - "UNIX-CONNECT:$CTL"; }
still_synced() { check_eq "$1: nothing changed (alpha still synchronized)" synchronized "$(status_get alpha .state)"; }
expect_fail() {  # LABEL PATTERN CMD...: CMD exits 1 and prints PATTERN
    local label=$1 pat=$2; shift 2
    local out rc
    out=$("$@" 2>&1); rc=$?
    if [ "$rc" = 1 ] && grep -qE "$pat" <<<"$out"; then pass "$label: $out"
    else fail "$label: rc=$rc, expected 1 and /$pat/, got: $out"; fi
}

# --- malformed, unknown, oversized
r=$(raw 'not json'); grep -q '"code":"EINVAL".*malformed JSON' <<<"$r" && pass "malformed JSON: $r" || fail "malformed JSON: $r"
r=$(raw '{"version":1,"command":"nope"}'); grep -q '"code":"ENOENT"' <<<"$r" && pass "unknown command: $r" || fail "unknown command: $r"
r=$(raw '{"version":1,"command":"split","args":{"bogus":1}}'); grep -q '"code":"EINVAL".*bogus' <<<"$r" && pass "unknown argument: $r" || fail "unknown argument: $r"
r=$(raw '{"version":1,"command":"rejoin","args":{"wait":"yes"}}'); grep -q '"code":"EINVAL".*wrong type' <<<"$r" && pass "argument of the wrong type: $r" || fail "wrong type: $r"
r=$(raw '{"version":1,"command":"status","command":"demote"}'); grep -q '"code":"EINVAL".*given twice' <<<"$r" && pass "a key given twice: $r" || fail "key given twice: $r"
check_eq "still primary after the ambiguous request" primary "$(status_get alpha .role)"
r=$(raw '{"version":7,"command":"status"}'); grep -q '"code":"EINVAL".*version' <<<"$r" && pass "unsupported version: $r" || fail "version: $r"
# The daemon answers once 64 KiB arrived and closes: the client's later writes
# fail (EPIPE) and must not keep it from reading the answer (socat exits at
# the failed write, before reading, when the daemon is quick).
r=$(timeout 10 "$PY" - "$CTL" <<'PYEOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.sendall(b"x" * 70000)
except (BrokenPipeError, ConnectionResetError):
    pass
s.settimeout(5)
data = b""
while True:
    try:
        chunk = s.recv(4096)
    except OSError:
        break
    if not chunk:
        break
    data += chunk
print(data.decode(errors="replace"))
PYEOF
)
grep -q '"code":"E2BIG"' <<<"$r" && pass "a 70000-byte request without newline: E2BIG" || fail "oversized request: $r"
node_alive alpha && pass "mirrord survives every malformed request" || die "mirrord died"
still_synced "malformed requests"

# --- unauthorised user: status yes, changes no
chmod 755 "$T"
out=$(su nobody -s /bin/sh -c "'$MIRRORCTL' --socket '$CTL' status --json" 2>&1)
grep -q '"state": "synchronized"' <<<"$out" && pass "nobody may read status" || fail "nobody cannot read status: $out"
expect_fail "nobody may not split" "only root or the control group" \
    su nobody -s /bin/sh -c "'$MIRRORCTL' --socket '$CTL' split"
expect_fail "nobody may not hold writes" "only root or the control group" \
    su nobody -s /bin/sh -c "'$MIRRORCTL' --socket '$CTL' hold --timeout_ms 1000"
still_synced "unauthorised split"
grep -q "uid 65534 may not run 'split'" "$(node_log alpha)" && pass "the refusal is logged with the uid" \
    || fail "the refusal is not logged"

# --- hooks: a failing or hanging pre-hook means no split, post-hook runs
expect_fail "failing pre-hook" "pre-hook 'exit 3' exited with 3.*no split was made" \
    "$MIRRORCTL" --socket "$CTL" split --pre 'exit 3' --post "touch $T/post1"
[ -f "$T/post1" ] && pass "the post-hook ran after the failing pre-hook" || fail "post-hook did not run"
still_synced "failing pre-hook"
t0=$SECONDS
expect_fail "hanging pre-hook with --timeout 2" "did not finish before the timeout|timeout" \
    "$MIRRORCTL" --socket "$CTL" split --pre 'sleep 60' --post "touch $T/post2" --timeout 2
[ $((SECONDS - t0)) -le 10 ] && pass "the timeout ended the hanging hook in $((SECONDS - t0)) s" \
    || fail "the hanging hook took $((SECONDS - t0)) s"
[ -f "$T/post2" ] && pass "the post-hook ran after the timeout" || fail "post-hook did not run after the timeout"
still_synced "hanging pre-hook"
expect_fail "freezing a path that is not a mount point directory" "cannot (open|freeze)" \
    "$MIRRORCTL" --socket "$CTL" split --freeze "$T/no-such-dir" --post "touch $T/post3"
[ -f "$T/post3" ] && pass "the post-hook ran after the failed freeze" || fail "post-hook did not run"
still_synced "failed freeze"
# A hangup mid-quiesce (the terminal closed: SIGHUP to mirrorctl's whole
# session, its guard included; ^C is the same to a process group, but a
# background job here ignores SIGINT). The guard is there to thaw and run
# the post-hook when mirrorctl dies; it used to die with it (filesystems
# left frozen, no post-hook).
setsid "$MIRRORCTL" --socket "$CTL" split --pre "touch $T/pre4; sleep 3" --post "touch $T/post4" \
    >"$T/sighup.out" 2>&1 &
ip=$!
for i in $(seq 500); do [ -e "$T/pre4" ] && break; sleep 0.01; done
kill -HUP -- -$ip
wait $ip
for i in $(seq 1000); do [ -e "$T/post4" ] && break; sleep 0.01; done
[ -f "$T/post4" ] && pass "SIGHUP to the session during the pre-hook: the guard ran the post-hook" \
    || fail "SIGHUP to the session during the pre-hook: the post-hook did not run (the guard died with mirrorctl)"
still_synced "SIGHUP during the pre-hook"

# --- wrong node, wrong state
# Sent to the secondary, rejoin is relayed to the primary: its refusal comes back.
expect_fail "rejoin via the secondary when not split" "on 'alpha': not split" \
    "$MIRRORCTL" --socket "${NODE_CTL[beta]}" rejoin
expect_fail "rejoin when not split" "not split" "$MIRRORCTL" --socket "$CTL" rejoin
kill_node beta
wait_state alpha "degraded|disconnected" 20 >/dev/null || fail "alpha did not notice beta's death"
expect_fail "split while the peer is disconnected" "not connected" "$MIRRORCTL" --socket "$CTL" split
st=$(status_get alpha .state)
[ "$st" != split ] && pass "no split was made while disconnected (state $st)" || fail "split while disconnected"
stop_pair
finish
