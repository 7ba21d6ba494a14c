#!/bin/bash
# split-group-partial: `mirrorctl split` of a consistency group (two volumes:
# --socket twice) whose second volume's split fails after the first volume's
# was made: e.g. the second pair's SPLIT answer was lost (split-reply-lost:
# "no split was made"). A group is cut at one instant or not at all, and the
# operator must learn what was split. What a user checks:
#   - the command fails (exit 1), naming the volume it split and what
#     became of it;
#   - the first volume is not left split: it mirrors again by itself (its
#     status says synchronized, with no rejoin by the operator).
# The second volume is a stand-in daemon on a control socket of its own
# (the real pair is alpha/beta): it holds and releases, and fails the split
# as a pair whose SPLIT answer was lost does.
#
# Before, the first volume stayed split (unmirrored until an operator's
# rejoin) and `split` printed only the second volume's "no split was made".
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "no mirrorctl"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
start_synced_pair 30

FAKE=$T/second.ctl
"$PY" - "$FAKE" <<'EOF' >"$T/second.log" 2>&1 &
import json, os, socket, sys
path = sys.argv[1]
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen(8)
open(path + ".ready", "w").close()
while True:
    c, _ = srv.accept()
    req = json.loads(c.makefile().readline())
    cmd = req.get("command")
    print("request:", cmd, flush=True)
    if cmd == "split":
        r = {"ok": False, "code": "ECONNRESET",
             "error": "'delta' did not confirm the split (the link was lost; it may have "
                      "applied it, and says split until the next session): no split was made; "
                      "the pair resyncs what the secondary missed once the link is back"}
    else:
        r = {"ok": True, "result": "released" if cmd == "release" else "holding new writes"}
    c.sendall((json.dumps(r) + "\n").encode())
    c.close()
EOF
BG_PIDS+=("$!")
wait_for 10 test -e "$FAKE.ready" || die "the stand-in daemon did not start"

out=$(timeout 60 "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" --socket "$FAKE" split 2>&1); rc=$?
log "group split: exit $rc: $out"
log "the stand-in got: $(tr '\n' ' ' <"$T/second.log")"
check_eq "the group's split fails (exit 1)" 1 "$rc"
grep -q "^request: split" "$T/second.log" || die "the group split never reached the second volume's split"
grep -qF "${NODE_CTL[alpha]}" <<<"$out" \
    && pass "it names the volume it had split: $out" \
    || fail "it does not name the volume it had split (alpha's): $out"
if wait_state alpha synchronized 30 >/dev/null; then
    pass "alpha's volume mirrors again by itself (no rejoin by the operator)"
else
    fail "alpha's volume stays $(status_get alpha .state) after the group's split failed: $out"
fi
check_eq "beta says synchronized" synchronized "$(status_get beta .state)"
nbd_fill "$(nbd_unix_uri alpha)" $MiB $MiB 7 || fail "a write through alpha failed"
check_eq "a write after it is mirrored (nothing out of sync)" 0 "$(status_get alpha .out_of_sync_bytes)"
stop_pair
check_identical "after the group's failed split"
pair_finish
