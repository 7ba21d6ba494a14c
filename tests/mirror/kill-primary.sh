#!/bin/bash
# kill-primary: the primary crashes (SIGKILL) under write load. Protocol C
# means every write the client saw acknowledged is on the secondary: its copy
# (read over its read-only export right after the crash) holds each one.
# The restarted primary resyncs what may have been in flight (its activity
# log) and the copies end up identical. Then the primary crashes again, this
# time in the middle of a resync (the secondary is inconsistent): restarted,
# it resumes the resync and completes it.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=256M
VOL_ACK=2s
# A resync rate limit, so that a 32M resync takes ~2s and can be interrupted.
VOL_EXTRA='initial-sync = "skip"
resync-rate = "16M"'
SIZE=$(size_bytes "$VOL_SIZE")
AL=$((4 * MiB))                     # activity-extent (default)
WIN_OFF=$((64 * MiB))               # the writer's window: the activity log
WIN=$((32 * MiB))                   # must bound the resync to about it

setup_pair
start_pair
wait_log alpha "peer 'beta' connected:" 30 >/dev/null || die "alpha never connected to beta"
wait_state alpha synchronized 30 >/dev/null || die "alpha not synchronized"

# No FUA, no flush: under protocol C an acknowledged write is on both nodes
# whatever the flags, and a process crash does not lose the page cache.
start_writer w "$(nbd_uri alpha)" $WIN_OFF $WIN --qd 16 --seed 11
wait_acks w 3000 60 || die "the writer did not get 3000 writes acknowledged ($(tail -n 3 "$T/w.err"))"

# --- crash the primary mid-run
log_mark beta
kill_node alpha
pass "alpha killed with SIGKILL with the writer running ($(acks w) writes acknowledged so far)"
deadline=$((SECONDS + 30))
while kill -0 "$WRITER_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
if kill -0 "$WRITER_PID" 2>/dev/null; then
    fail "the writer did not notice the primary's death within 30s"
    kill -KILL "$WRITER_PID"
fi
wait "$WRITER_PID"; WRITER_RC=$?
check_eq "the writer saw the connection drop (exit 2), and no write failed before" 2 "$WRITER_RC"
log "writer: $(cat "$T/w.out"); $(grep -c '^[EU] ' "$T/w.acks") writes were in flight at the crash"

node_alive beta && pass "beta survives the primary's crash" || die "beta died with the primary"
line=$(wait_log beta "replication link to 'alpha' lost" 20) && pass "beta logs the lost link: ${line#* * }" \
    || fail "beta does not log the lost link"
verify_writes "beta's copy (read over its read-only export) holds every acknowledged write" \
    w --uri "$(nbd_unix_uri beta)" $WIN_OFF $WIN

# --- restart the primary: it resyncs its activity log's extents
log_mark beta
must_start alpha
if line=$(wait_log alpha "unclean shutdown" 10); then
    pass "restarted alpha detects the unclean shutdown: ${line#*warn: }"
else
    fail "restarted alpha does not report the unclean shutdown"
fi
wait_log alpha "peer 'beta' connected:" 30 >/dev/null || fail "the restarted alpha did not reconnect to beta"
read -r -a plan <<<"$(plan_of alpha)"
N=${plan[-1]:-0}
KIND=${plan[*]:0:${#plan[@]}-1}
check_eq "reconnect after the primary's crash is a bitmap resync" "bitmap resync" "$KIND"
if [ "$N" -gt 0 ] && [ "$N" -le $((WIN + 2 * AL)) ]; then
    pass "resync of the regions possibly in flight at the crash: $N bytes (writes went to a $WIN-byte window)"
else
    fail "resync after the primary's crash copies $N bytes; expected 0 < N <= $((WIN + 2 * AL)) (the written window + 2 activity extents)"
fi
wait_state alpha synchronized 120 >/dev/null && pass "alpha synchronized again" \
    || fail "alpha not synchronized 120s after its restart"
wait_state beta synchronized 30 >/dev/null && pass "beta reports synchronized" || fail "beta does not report synchronized"
check_resync_rate "resync-rate honoured" alpha "$N" $((16 * MiB))
verify_writes "restarted alpha's export holds every acknowledged write" w --uri "$(nbd_uri alpha)" $WIN_OFF $WIN

# --- the primary crashes in the middle of a resync
# beta goes away, alpha writes W2 alone (a dirty window), beta comes back,
# and alpha dies while copying it; restarted, alpha must finish the job.
W2_OFF=$((160 * MiB))
start_writer w2 "$(nbd_uri alpha)" $W2_OFF $WIN --qd 16 --seed 12
wait_acks w2 500 60 || die "writer w2 got no acknowledgements"
kill_node beta
wait_state alpha 'degraded|disconnected' 20 >/dev/null || fail "[crash during resync] alpha not degraded after beta's death"
n=$(acks w2)
wait_acks w2 $((n + 3000)) 60 || fail "[crash during resync] writes stalled with beta down"
stop_writer w2
check_eq "[crash during resync] the writer saw no error with beta down" 0 "$WRITER_RC"
log_mark alpha
must_start beta
if wait_log alpha "resync started" 30 >/dev/null; then
    if have_ctl; then
        deadline=$((SECONDS + 20))
        while [ "$(status_get beta .resynced_bytes_total)" -lt $((2 * MiB)) ] && [ $SECONDS -lt $deadline ]; do
            sleep 0.05
        done
    fi
    if log_since alpha | grep -q "resync complete"; then
        fail "[crash during resync] the resync finished before alpha could be killed (resync-rate too high?)"
    fi
    kill_node alpha
    pass "[crash during resync] alpha killed with SIGKILL during the resync ($( (have_ctl && status_get beta .resynced_bytes_total) || echo '?') bytes copied)"
else
    fail "[crash during resync] no resync started after beta came back"
    kill_node alpha
fi
check_eq "[crash during resync] beta's status: its copy is not consistent mid-resync" false \
    "$( (have_ctl && status_get beta .consistent) || echo false)"
must_start alpha
wait_log alpha "peer 'beta' connected:" 30 >/dev/null || fail "[crash during resync] the restarted alpha did not reconnect"
check_eq "[crash during resync] the restarted primary resumes with a bitmap resync" "bitmap resync" \
    "$(plan_of alpha | sed 's/ [0-9]*$//')"
wait_state alpha synchronized 60 >/dev/null && pass "[crash during resync] synchronized after alpha's restart" \
    || fail "[crash during resync] not synchronized 60s after alpha's restart"
if have_ctl; then
    check_eq "[crash during resync] beta's copy is consistent again" true "$(status_get beta .consistent)"
fi
verify_writes "[crash during resync] beta's export holds every acknowledged write of W2" w2 \
    --uri "$(nbd_unix_uri beta)" $W2_OFF $WIN

stop_node alpha
stop_node beta
check_identical "after the primary's crashes, restarts and resyncs"
verify_writes "beta's image file holds every acknowledged write" w --image "${NODE_IMG[beta]}" $WIN_OFF $WIN
verify_writes "beta's image file holds every acknowledged write of W2" w2 --image "${NODE_IMG[beta]}" $W2_OFF $WIN

pair_finish
