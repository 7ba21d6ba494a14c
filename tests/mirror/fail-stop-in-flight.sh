#!/bin/bash
# fail-stop-in-flight: on-peer-loss = "fail-stop" promises that the copies
# never diverge: while the peer is away, writes wait. That holds for the
# writes in flight when the peer goes too (beta hung: SIGSTOP, under 16
# writes in flight), not only for those issued after:
#   1. beta resumes: the writes alpha held complete, the pair synchronizes,
#      and every acknowledged write is on both copies;
#   2. alpha is lost while beta hangs; beta resumes and is promoted with
#      --force: every write alpha acknowledged is on beta's copy.
#
# Before, the writes in flight when the link was lost were acknowledged as
# soon as alpha had marked them dirty: 16 writes acknowledged with beta
# lacking them, lost after the failover.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "fail-stop-in-flight needs mirrorctl"

VOL_SIZE=64M
VOL_ACK=1s
VOL_EXTRA='initial-sync = "skip"
on-peer-loss = "fail-stop"'
WIN=$((16 * MiB))

# hang_beta NAME: a writer on alpha (16 in flight), then beta stopped until
# alpha gives up on it and its writes wait.
hang_beta() {
    start_writer "$1" "$(nbd_unix_uri alpha)" 0 $WIN --qd 16 --bs 65536 --seed "${#1}"
    wait_acks "$1" 1000 60 || die "$1: the writer did not start"
    kill -STOP "${NODE_PID[beta]}"
    wait_state alpha degraded 20 >/dev/null || fail "$1: alpha did not give up on the hung beta"
    local a=$(acks "$1")
    sleep 2
    check_eq "$1: alpha's writes wait while beta is away" "$a" "$(acks "$1")"
}

start_synced_pair 30
hang_beta back
kill -CONT "${NODE_PID[beta]}"
wait_state alpha synchronized 60 >/dev/null && pass "back: beta resumed, synchronized again" \
    || fail "back: not synchronized 60 s after beta resumed: $(status_get alpha '.state+" "+.last_error')"
stop_writer back 60
check_eq "back: the writer saw no error" 0 "$WRITER_RC"
stop_pair
check_identical "back: after beta's return"
verify_writes "back: beta's copy holds every acknowledged write" back --image "${NODE_IMG[beta]}" 0 $WIN

start_pair
wait_state alpha synchronized 60 >/dev/null || die "the pair did not synchronize again"
hang_beta lost
kill_node alpha
kill -CONT "${NODE_PID[beta]}"
wait_writer lost 30
out=$(ctl beta promote --force); log "promote --force on beta: $out"
check_eq "lost: beta is primary" primary "$(status_get beta .role)"
stop_node beta
verify_writes "lost: beta's copy holds every write alpha acknowledged" lost --image "${NODE_IMG[beta]}" 0 $WIN
pair_finish
