#!/bin/bash
# backup-interrupted: `mirrorctl backup` (split, copy the secondary's image
# over NBD, rejoin) must neither hang nor leave the mirror split when the
# copy cannot finish:
#   hung secondary  the secondary's daemon stops answering mid-copy (SIGSTOP:
#                   a hung daemon, its sockets open). The backup used to wait
#                   for ever in a read with no timeout; it must fail within
#                   a bounded time (here 60 s) and rejoin, so the pair
#                   synchronizes once the secondary resumes.
#   interrupted     a cron or systemd timeout (or kill) sends SIGTERM to
#                   mirrorctl mid-copy. It used to die on the
#                   spot, leaving the mirror split for good: every later write
#                   on the primary alone, with nothing but "split" in the
#                   status to say so. "Any failure after the split still
#                   rejoins" (docs/control-protocol.md) must hold here too.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=512M
VOL_ACK=2s
VOL_EXTRA='initial-sync = "skip"'
DATA=$((448 * MiB))

start_synced_pair 30
have_ctl || skip "backup needs mirrorctl"
# Data the copy must read (zeroes and holes are skipped): a copy of some seconds.
"${NBDTOOL[@]}" pattern "$(nbd_uri alpha)" 0 $DATA 5 || die "writing the data through alpha"

# start_backup NAME: mirrorctl backup to $T/NAME.img in the background (pid
# in BP), returns once the copy has begun (its .partial file exists).
start_backup() {
    "$MIRRORCTL" --config "$T/vol.toml" --node alpha backup --to "$T/$1.img" >"$T/$1.out" 2>&1 &
    BP=$!
    BG_PIDS+=("$BP")
    local i
    for i in $(seq 500); do
        [ -e "$T/$1.img.partial" ] && return 0
        kill -0 $BP 2>/dev/null || break
        sleep 0.01
    done
    fail "$1: the backup did not start copying: $(tail -n 2 "$T/$1.out")"
    return 1
}

# wait_backup NAME SECS: the backup ends within SECS (else it is killed);
# its exit status in BRC (124: it hung).
wait_backup() {
    local deadline=$((SECONDS + $2))
    while kill -0 $BP 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if kill -0 $BP 2>/dev/null; then
        kill -KILL $BP; wait $BP 2>/dev/null; BRC=124
    else
        wait $BP; BRC=$?
    fi
}

# rejoined LABEL SECS WHEN: alpha synchronizes within SECS (the backup
# rejoined); else a failure, and the test rejoins to go on.
rejoined() {
    if wait_state alpha synchronized "$2" >/dev/null; then
        pass "[$1] the pair synchronizes $3: the backup rejoined"
    else
        fail "[$1] alpha is '$(status_get alpha .state)' $2 s $3: the backup left the mirror split"
        ctl alpha rejoin >/dev/null
        wait_state alpha synchronized 60 >/dev/null || die "the pair does not synchronize after a rejoin"
    fi
}

# --- the secondary hangs mid-copy
if start_backup hung; then
    kill -STOP "${NODE_PID[beta]}"
    t0=$SECONDS
    wait_backup hung 60
    if [ $BRC -eq 124 ]; then
        fail "[hung secondary] mirrorctl backup still waiting 60 s after the secondary hung: $(tail -n 1 "$T/hung.out")"
    else
        check "[hung secondary] the backup fails after $((SECONDS - t0)) s (exit $BRC) with a reason: $(tail -n 1 "$T/hung.out")" \
            test $BRC -ne 0
    fi
    check "[hung secondary] no image left as if complete" test ! -e "$T/hung.img"
    kill -CONT "${NODE_PID[beta]}"
    rejoined "hung secondary" 60 "after the secondary resumed"
fi

# --- mirrorctl killed mid-copy (SIGTERM; SIGINT cannot be tested from
# here: a background job of a non-interactive shell ignores it)
if start_backup term; then
    kill -TERM $BP
    wait_backup term 30
    log "SIGTERM: mirrorctl backup exit $BRC: $(tail -n 1 "$T/term.out")"
    check "[SIGTERM] no image left as if complete" test ! -e "$T/term.img"
    rejoined SIGTERM 30 "after mirrorctl backup got SIGTERM mid-copy"
fi

stop_pair
check_identical "after the interrupted backups"
pair_finish
