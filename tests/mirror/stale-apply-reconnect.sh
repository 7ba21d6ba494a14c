#!/bin/bash
# stale-apply-reconnect: a mirrored write still in flight on the secondary's
# disk when the link drops must not land over the next session's resync of
# the same range.
#
# The secondary applies the primary's requests concurrently, relying on the
# primary never sending two overlapping ones at once (secondary.h). That holds
# within one session only: a write of the old session can still be in the
# secondary's disk queue when the next session's resync writes the same
# blocks. Here (MIRRORD_FAULTS=write-stall: beta's disk holds the first write
# to 1 MiB for 11 s, as a disk stuck on a request does):
#   1. alpha writes A at 1 MiB; beta's disk holds it;
#   2. after 7 x ack-timeout alpha drops the link, marks the region dirty and
#      acknowledges A; the client then writes B over it (degraded) and flushes;
#   3. the link comes back, the resync copies B to beta at once;
#   4. A, the old session's write, reaches beta's disk after B; the resync's
#      batch flush waits for it, the bits are cleared, the pair says
#      "synchronized".
# Both copies must hold B, the last acknowledged (and flushed) write: beta is
# the copy a failover promotes.
#
# Part 2, the same stuck write across a forced failover: alpha dies while
# beta's disk holds its write A; `promote --force` on beta, whose client then
# writes B over the same blocks. A must not land over B.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_ACK=1s
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "stale-apply-reconnect needs mirrorctl"

OFF=$((1 * MiB))
LEN=4096
STALL_MS=11000

setup_pair
must_start alpha
start_with_faults beta "write-stall=$OFF:$LEN:$STALL_MS"
wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize"

expect_sha() { pattern_sha "$1" $LEN; }
image_sha() { backing_sha "$1" $OFF $LEN; }
A_SHA=$(expect_sha 71)
B_SHA=$(expect_sha 72)

# 1-2. A: held on beta's disk; acknowledged once alpha gave up on beta.
log_mark alpha
t0=$SECONDS
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $OFF $LEN 71 || die "write A failed"
log "write A acknowledged after $((SECONDS - t0)) s"
grep -q "TEST FAULT write-stall: the write at $OFF+$LEN reaches the disk" "$(node_log beta)" \
    && pass "beta's disk holds write A" || die "beta's disk did not stall write A"
link_drops alpha beta | grep -q . && pass "alpha dropped the link while beta's disk held A" \
    || die "alpha acknowledged A without dropping the link"
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $OFF $LEN 72 || die "write B failed"
pass "write B (over A) acknowledged and flushed while degraded"

# 3-4. The resync after the reconnect, then A lands on beta's disk.
wait_log beta "TEST FAULT write-stall: the write at $OFF[+]$LEN goes to the disk now" 30 >/dev/null \
    || die "write A never reached beta's disk"
# The interleaving under test: alpha came back (a new session's handshake)
# while beta's disk still held A.
sessions=$(awk '/goes to the disk now/ { exit } /replication: incoming connection/ { n++ } END { print n + 0 }' \
    "$(node_log beta)")
[ "$sessions" -ge 2 ] && pass "alpha reconnected while beta's disk still held A" \
    || fail "alpha did not reconnect before A reached beta's disk: the interleaving was not reached"
wait_state alpha synchronized 60 >/dev/null || die "the pair did not synchronize after the reconnect"
check "beta answered the new session's plan only once A had landed (and said so)" \
    grep -q "1 request of an earlier session with 'alpha' is still on its way to this node's disk.*answered once they have landed" "$(node_log beta)"

check_eq "alpha's image holds B at 1 MiB" "$B_SHA" "$(image_sha alpha)"
got=$(image_sha beta)
if [ "$got" = "$B_SHA" ]; then
    pass "beta's image holds B at 1 MiB (the last acknowledged write)"
elif [ "$got" = "$A_SHA" ]; then
    fail "beta's image holds A at 1 MiB: the old session's write landed over the resync of B," \
         "and the pair says synchronized (a failover to beta loses B)"
else
    fail "beta's image holds neither A nor B at 1 MiB ($got)"
fi
stop_pair
check_identical "after the reconnect's resync"

# Part 2: a forced failover while beta's disk still holds the dead primary's write.
OFF=$((2 * MiB))
fresh_pair
must_start alpha
start_with_faults beta "write-stall=$OFF:$LEN:$STALL_MS"
wait_state alpha synchronized 30 >/dev/null || die "the second pair did not synchronize"
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $OFF $LEN 81 >/dev/null 2>&1 &
writer=$!
wait_log beta "TEST FAULT write-stall: the write at $OFF[+]$LEN reaches the disk" 10 >/dev/null \
    || die "beta's disk did not stall alpha's write"
kill_node alpha
wait $writer 2>/dev/null
refused_ctl "promote --force while alpha's write is still on beta's disk" beta \
    "still on its way to this node's disk.*promote again in a moment" promote --force
dl=$((SECONDS + 30))
until out=$(ctl beta promote --force); do
    [ $SECONDS -lt $dl ] || die "promote --force on beta never succeeded: $out"
    sleep 0.5
done
log "promote --force on beta: $out"
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri beta)" $OFF $LEN 82 || die "write B on the promoted beta failed"
pass "write B acknowledged and flushed on the promoted beta"
wait_log beta "TEST FAULT write-stall: the write at $OFF[+]$LEN goes to the disk now" 30 >/dev/null \
    || die "alpha's stalled write never reached beta's disk"
got=$("${NBDTOOL[@]}" probe "$(nbd_unix_uri beta)" $OFF $LEN | sed -n 's/^read OK //p')
if [ "$got" = "$(expect_sha 82)" ]; then
    pass "the promoted beta holds its own acknowledged write B at 2 MiB"
elif [ "$got" = "$(expect_sha 81)" ]; then
    fail "the promoted beta holds the dead primary's unacknowledged write at 2 MiB: it landed over" \
         "beta's acknowledged (and flushed) write B"
else
    fail "the promoted beta holds neither write at 2 MiB ($got)"
fi
stop_node beta
finish
