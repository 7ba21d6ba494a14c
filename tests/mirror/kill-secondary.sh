#!/bin/bash
# kill-secondary: the secondary crashes (SIGKILL) under write load. The client
# sees no error and keeps writing (the primary goes degraded within the
# ack-timeout and tracks the writes in its bitmap); the restarted secondary is
# brought up to date by a bitmap resync that copies about the region written
# (a 64 MiB window of a 1 GiB volume), not the volume; afterwards both copies
# are identical and hold every acknowledged write. Twice, on the same primary
# process: the second crash and resync must go like the first.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=1G
VOL_ACK=2s
VOL_EXTRA='initial-sync = "skip"'   # both images start as the same zeroes
SIZE=$(size_bytes "$VOL_SIZE")
AL=$((4 * MiB))                     # activity-extent (default)
WIN_OFF=$((256 * MiB))
WIN=$((64 * MiB))
ACK_MS=2000

setup_pair
start_pair
wait_log alpha "peer 'beta' connected:" 30 >/dev/null || die "alpha never connected to beta"
check_eq "new pair with initial-sync = skip copies nothing" "no sync (initial-sync = skip) 0" "$(plan_of alpha)"
wait_state alpha synchronized 30 >/dev/null || die "alpha not synchronized"

start_writer w "$(nbd_uri alpha)" $WIN_OFF $WIN --qd 16 --seed 7
wait_acks w 2000 60 || die "the writer did not get 2000 writes acknowledged (log: $(tail -n 3 "$T/w.err"))"

# crash_round R: kill -9 beta under load, writes go on, restart, bitmap
# resync of about the written window, synchronized again.
crash_round() {
    local r="[crash $1]" st line plan N KIND rb
    log_mark alpha
    local BEFORE T_KILL N_LOSS
    BEFORE=$(acks w)
    kill_node beta
    T_KILL=$SECONDS
    pass "$r beta killed with SIGKILL after $BEFORE acknowledged writes"
    if st=$(wait_state alpha 'degraded|disconnected' 20); then
        pass "$r alpha notices the lost peer and reports '$st' ($((SECONDS - T_KILL))s after the kill; ack-timeout ${ACK_MS}ms)"
    else
        fail "$r alpha does not report degraded within 20s of the secondary's death"
    fi
    line=$(wait_log alpha "replication link to 'beta' lost" 5) && log "alpha: $line"
    N_LOSS=$(acks w)
    if wait_acks w $((N_LOSS + 2000)) 60; then
        pass "$r the client keeps writing while beta is down ($(($(acks w) - N_LOSS)) more writes acknowledged)"
    else
        fail "$r writes stopped completing while beta is down (acks $N_LOSS -> $(acks w); writer: $(tail -n 2 "$T/w.err"))"
    fi
    check_eq "$r no write failed while beta was down" 0 "$(grep -c '^E ' "$T/w.acks")"

    # --- restart it: bitmap resync of the written region only
    log_mark alpha
    log_mark beta
    must_start beta
    line=$(wait_log alpha "peer 'beta' connected:" 30) || fail "$r alpha did not reconnect to the restarted beta"
    log "alpha: $line"
    read -r -a plan <<<"$(plan_of alpha)"
    N=${plan[-1]:-0}
    KIND=${plan[*]:0:${#plan[@]}-1}
    check_eq "$r reconnect after the crash is a bitmap resync" "bitmap resync" "$KIND"
    if [ "$N" -gt 0 ] && [ "$N" -le $((WIN + 2 * AL)) ]; then
        pass "$r resync copies $N bytes: within the written window ($WIN bytes) + activity-log slack ($((2 * AL))), of a $SIZE-byte volume"
    else
        fail "$r resync copies $N bytes; expected 0 < N <= $((WIN + 2 * AL)) (window $WIN + 2 activity extents)"
    fi
    if st=$(wait_state alpha synchronized 60); then
        pass "$r alpha synchronized again after the resync"
    else
        fail "$r alpha not synchronized 60s after beta came back"
        log_since alpha | grep -v debug | tail -n 5 | sed 's/^/    | /'
    fi
    wait_state beta synchronized 30 >/dev/null && pass "$r beta reports synchronized" || fail "$r beta does not report synchronized"
    if have_ctl; then
        rb=$(status_get beta .resynced_bytes_total)
        if [ -n "$rb" ] && [ "$rb" -le $((WIN + 2 * AL)) ] && [ "$rb" -gt 0 ]; then
            pass "$r beta's status: resynced_bytes_total=$rb (<= window + slack)"
        else
            fail "$r beta's status: resynced_bytes_total='$rb', expected 0 < N <= $((WIN + 2 * AL)) ($(log_since alpha | grep -c 'resync started') resyncs started this round; link drops: $(log_since alpha | grep -c "replication link to 'beta' lost"))"
        fi
        check_eq "$r alpha's status: nothing out of sync" 0 "$(status_get alpha .out_of_sync_bytes)"
        check_eq "$r beta's status: its copy is consistent again" true "$(status_get beta .consistent)"
    fi

}

crash_round 1
# The same again, on the same primary process: a second resync must complete too.
crash_round 2

N_SYNC=$(acks w)
wait_acks w $((N_SYNC + 1000)) 60 && pass "writes go on after the resync" || fail "writes stalled after the resync"
finish_writer w "$(nbd_uri alpha)" $WIN_OFF $WIN $ACK_MS

stop_node alpha
stop_node beta
check_identical "after the resync and a clean stop"
verify_writes "beta's image holds every acknowledged write" w --image "${NODE_IMG[beta]}" $WIN_OFF $WIN

pair_finish
