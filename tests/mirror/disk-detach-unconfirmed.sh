#!/bin/bash
# disk-detach-unconfirmed: the primary's disk dies (dead-after=N) and the link
# is lost before the secondary answered the primary's DETACH (the secondary
# stops itself when DETACH arrives: MIRRORD_FAULTS=stop-on-detach). The
# secondary may or may not have recorded that its copy is the only current
# one, so what a user checks:
#   - alpha never serves its dead disk again: with beta unreachable every
#     request fails with EIO (not stale data), and it says it is diskless;
#   - no write was acknowledged that beta lacks;
#   - beta back (A: it resumes and records the DETACH late; B: it was killed
#     before it could, and restarts), alpha sends DETACH again, serves from
#     beta's copy, and every acknowledged write reads back through alpha;
#   - C: only one region of alpha's disk fails (write-eio): the rest of it
#     still works, and is given up all the same; beta is killed before it
#     handled the DETACH. Every acknowledged write is on beta's copy.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_ACK=1s
VOL_EXTRA='initial-sync = "skip"'
WIN=$((16 * MiB))
have_ctl || skip "disk-detach-unconfirmed needs mirrorctl"

# run_case LABEL HOW FAULT: HOW is "resume" (SIGCONT) or "restart" (kill -9,
# start); FAULT is alpha's MIRRORD_FAULTS.
run_case() {
    local label=$1 how=$2 fault=$3 n out
    for n in alpha beta; do rm -f "${NODE_IMG[$n]}" "${NODE_META[$n]}"*; done
    setup_pair
    start_with_faults beta "stop-on-detach"
    start_with_faults alpha "$fault"
    wait_state alpha synchronized 30 >/dev/null || die "$label: the pair did not synchronize"
    log_mark alpha
    start_writer "w$how" "$(nbd_unix_uri alpha)" 0 $WIN
    wait_log alpha "before the peer confirmed the detach" 30 >/dev/null \
        && pass "$label: alpha lost beta (stopped on DETACH) before it answered, and says so" \
        || fail "$label: alpha does not log the unconfirmed detach"
    stop_writer "w$how"
    check_eq "$label: alpha is diskless and disconnected" "diskless disconnected" \
        "$(status_get alpha '"\(.disk) \(.state)"')"
    if out=$("${NBDTOOL[@]}" sha "$(nbd_unix_uri alpha)" 2>&1); then
        fail "$label: a read through alpha succeeded with beta unreachable: $out"
    else
        grep -q "EIO" <<<"$out" && pass "$label: a read through alpha fails with EIO" \
            || fail "$label: a read through alpha fails, but not with EIO: $out"
    fi
    # (That none of its acknowledged writes is missing from beta is checked
    # at the end, on beta's image.)
    check_eq "$label: the writer got errors once beta was gone" 1 \
        "$([ "$(grep -c '^E ' "$T/w$how.acks")" -gt 0 ] && echo 1 || echo 0)"
    if [ "$how" = resume ]; then
        kill -CONT "${NODE_PID[beta]}"
        wait_log beta "this copy is now the only current one" 20 >/dev/null \
            && pass "$label: beta resumed and recorded the DETACH late" \
            || fail "$label: beta did not record the DETACH"
    else
        kill_node beta
        pass "$label: beta killed before it handled the DETACH"
        must_start beta
    fi
    wait_state alpha diskless 30 >/dev/null \
        && pass "$label: alpha reconnected and serves from beta's copy" \
        || fail "$label: alpha did not reconnect: $(status_get alpha '"\(.state) \(.last_error)"')"
    wait_log alpha "sending the detach of this node's failed disk to the peer again" 10 >/dev/null \
        && pass "$label: alpha sent DETACH again" || fail "$label: alpha did not send DETACH again"
    check_eq "$label: beta records that its copy is the only current one" true \
        "$(status_get beta .peer_disk_failed)"
    verify_writes "$label: every acknowledged write reads back through alpha" "w$how" \
        --uri "$(nbd_unix_uri alpha)" 0 $WIN
    write_acked "x$how" "$(nbd_unix_uri alpha)" $WIN $WIN 200
    stop_pair beta alpha
    verify_writes "$label: beta's image holds every acknowledged write" "w$how" \
        --image "${NODE_IMG[beta]}" 0 $WIN
    verify_writes "$label: beta's image holds the writes after the reconnect" "x$how" \
        --image "${NODE_IMG[beta]}" $WIN $WIN
}

run_case "A (beta resumes)" resume "dead-after=300"
run_case "B (beta restarts)" restart "dead-after=300"
run_case "C (one bad region, beta restarts)" restart "write-eio=$((8 * MiB)):$MiB"
pair_finish
