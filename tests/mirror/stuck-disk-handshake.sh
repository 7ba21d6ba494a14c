#!/bin/bash
# stuck-disk-handshake: while a request of an earlier session is stuck in the
# secondary's disk queue, the primary's clients write on at full speed.
#
# The secondary lets a new session's writes in only once every request of an
# earlier session has landed (mirror.stale-apply-reconnect). While it waits,
# the primary's handshake holds new client writes (its plan hold, until the
# plan is answered). Answering the plan only once the stuck request landed made
# every write wait for the whole handshake timeout (10 s), again at every
# retry, for as long as the disk was stuck: a primary frozen by its
# secondary's disk, though it had already given up on it (7 x ack-timeout).
# The secondary now refuses those handshakes at once, with a retry-after; the
# primary goes on alone, tracking its changes, and resyncs once the request
# landed.
#
#   1. beta's disk holds alpha's write A at 1 MiB for 25 s (write-stall);
#      alpha gives up on beta after 7 x ack-timeout and acknowledges A;
#   2. a writer on alpha for 12 s (longer than a handshake timeout): no write
#      may take longer than ack-timeout + 3 s; alpha's status says degraded
#      and names the stuck request; B is written over A;
#   3. A lands, the pair synchronizes: both copies hold B and every write.
#
# Part 2, the same for a split primary: beta's read-write split image
# (open-rw) has its own write stuck in the disk's queue when alpha restarts
# (a new session, a standby plan, which writes nothing into beta's copy and
# now waits for nothing): alpha's clients write on at full speed.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_ACK=1s
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "stuck-disk-handshake needs mirrorctl"

OFF=$((1 * MiB))
LEN=4096
STALL_MS=25000
WOFF=$((8 * MiB))
WIN=$((8 * MiB))

setup_pair
must_start alpha
start_with_faults beta "write-stall=$OFF:$LEN:$STALL_MS"
wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize"

# 1. A: held on beta's disk; acknowledged once alpha gave up on beta.
log_mark alpha
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $OFF $LEN 71 || die "write A failed"
link_drops alpha beta | grep -q . && pass "alpha gave up on beta while its disk held A" \
    || die "alpha acknowledged A without dropping the link"

# 2. The primary's clients while beta's disk still holds A.
start_writer w "$(nbd_unix_uri alpha)" $WOFF $WIN --qd 4
sleep 12   # the load's duration: longer than one handshake timeout (10 s)
st=$(status_get alpha '.state + " / " + .last_error')
if grep -q "write-stall: the write at $OFF+$LEN reaches the disk" "$(node_log beta)" &&
    ! grep -q "write-stall: .* goes to the disk now" "$(node_log beta)"; then
    pass "beta's disk still holds A after the writer's 12 s"
else
    fail "beta's disk no longer held A during the writer's run: the case was not reached"
fi
finish_writer w "$(nbd_unix_uri alpha)" $WOFF $WIN 1000
if [[ "$st" =~ ^degraded\ /\ .*still\ on\ its\ way\ to\ this\ node.s\ disk ]]; then
    pass "alpha's status says degraded and why: $st"
else
    fail "alpha's status while beta's disk holds A: '$st' (expected degraded, naming the stuck request)"
fi
# Refused once a second, the handshakes log their plan at info once (then at
# debug): an operator's log is not a line a second for as long as the disk is stuck.
n=$(log_since alpha | grep -c " info: volume '$VOL_NAME': peer 'beta' connected: ")
tries=$(log_since alpha | grep -c "peer 'beta' connected: ")
if [ "$tries" -ge 5 ] && [ "$n" -le 2 ]; then
    pass "$tries refused handshakes, $n of their plans logged at info"
else
    fail "$tries refused handshakes, $n of their plans logged at info (expected >= 5 and <= 2)"
fi
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $OFF $LEN 72 || die "write B failed"
pass "write B (over A) acknowledged and flushed while beta's disk holds A"

# 3. A lands; the resync gives beta B and the writer's writes.
wait_log beta "TEST FAULT write-stall: the write at $OFF[+]$LEN goes to the disk now" 40 >/dev/null \
    || die "write A never reached beta's disk"
wait_state alpha synchronized 60 >/dev/null || die "the pair did not synchronize once A landed"
pass "synchronized once A landed"
stop_pair
check_eq "beta's image holds B at 1 MiB" "$(pattern_sha 72 $LEN)" "$(backing_sha beta $OFF $LEN)"
check_identical "after the resync"
verify_writes "beta's image holds every acknowledged write" w --image "${NODE_IMG[beta]}" $WOFF $WIN

# Part 2: a split primary's new session while the split image's own write is stuck.
fresh_pair
must_start alpha
start_with_faults beta "write-stall=$OFF:$LEN:20000"
wait_state alpha synchronized 30 >/dev/null || die "the second pair did not synchronize"
out=$(ctl alpha split) || die "split: $out"
out=$(ctl beta open-rw) || die "open-rw: $out"
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri beta)" $OFF $LEN 73 >/dev/null 2>&1 &
wait_log beta "TEST FAULT write-stall: the write at $OFF[+]$LEN reaches the disk" 10 >/dev/null \
    || die "beta's disk did not stall the split image's write"
stop_node alpha
must_start alpha
start_writer w2 "$(nbd_unix_uri alpha)" $WOFF $WIN --qd 4 --seed 2
sleep 11   # longer than one handshake timeout (10 s)
check_eq "split primary: alpha's link" connected "$(status_get alpha .link)"
finish_writer w2 "$(nbd_unix_uri alpha)" $WOFF $WIN 1000
wait_log beta "TEST FAULT write-stall: the write at $OFF[+]$LEN goes to the disk now" 30 >/dev/null \
    || die "the split image's write never reached beta's disk"
out=$(ctl alpha rejoin --wait) && pass "rejoin: $out" || fail "rejoin --wait: $out"
stop_pair
check_identical "after the rejoin"
verify_writes "beta's image holds w2's acknowledged writes" w2 --image "${NODE_IMG[beta]}" $WOFF $WIN
finish
