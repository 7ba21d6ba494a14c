#!/bin/bash
# ctl-hung-daemon: `mirrorctl status` against a daemon that accepts on its
# control socket but never answers (a hung event loop; SIGSTOP here) must
# give up with a reason an operator can act on (exit 3, "could not be
# reached", or 4, timed out) instead of waiting for ever: it is what
# monitoring scripts and an operator looking at a troubled node run first.
# It used to block in read() with no timeout (seen: still waiting after
# 120 s).
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
start_synced_pair 30
have_ctl || skip "needs mirrorctl"

kill -STOP "${NODE_PID[beta]}"
for args in "status" "status --json"; do
    t0=$SECONDS
    out=$(timeout 60 "$MIRRORCTL" --socket "${NODE_CTL[beta]}" $args 2>&1); rc=$?
    dt=$((SECONDS - t0))
    if [ $rc -eq 124 ]; then
        fail "mirrorctl $args on a hung daemon: still waiting after 60 s"
    elif [ $rc -eq 3 ] || [ $rc -eq 4 ]; then
        pass "mirrorctl $args on a hung daemon gives up after ${dt} s (exit $rc): $out"
    else
        fail "mirrorctl $args on a hung daemon: exit $rc after ${dt} s (expected 3 or 4): $out"
    fi
done
kill -CONT "${NODE_PID[beta]}"
check_eq "beta answers again once resumed" secondary "$(status_get beta .role)"
pair_finish
