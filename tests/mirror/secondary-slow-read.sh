#!/bin/bash
# secondary-slow-read: a backup reading the secondary over a slow disk
# (MIRRORD_FAULTS=read-delay-ms: each read of beta's disk takes 6 s) while
# the primary rejoins. The resync's plan waits for that read of the old image
# to end, but at most a second: the primary's application writes (held while
# the plan is answered) are never stalled for the read's length, and the
# slow read still returns the split image. And a forced promote of the
# secondary while its plan reply waits does not crash it.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "secondary-slow-read needs mirrorctl"

setup_pair
must_start alpha
start_with_faults beta "read-delay-ms=6000"
wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize"

"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" 0 $((MiB)) 61 || die "the first write failed"
out=$(ctl alpha split) && pass "split: $out" || die "split failed: $out"
split_sum=$("${NBDTOOL[@]}" probe "$(nbd_unix_uri alpha)" 0 65536 | grep '^read')
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" 0 $((MiB)) 62 || die "the write after the split failed"

# 1. A slow read of beta's split image is in flight when the rejoin's plan arrives.
"${NBDTOOL[@]}" probe "$(nbd_unix_uri beta)" 0 65536 >"$T/slow.out" 2>&1 &
slow=$!
sleep 1
log_mark beta
out=$(ctl alpha rejoin) && pass "rejoin: $out" || fail "rejoin: $out"
t0=$(date +%s%N)
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((8 * MiB)) 65536 63 || fail "a write on alpha failed"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ $ms -lt 4000 ] && pass "a write on alpha right after the rejoin took $ms ms, not the slow read's 6 s" \
    || fail "a write on alpha right after the rejoin took $ms ms: held for the secondary's slow read"
wait $slow
check_eq "the slow read returned the split image" "$split_sum" "$(grep '^read' "$T/slow.out")"
wait_log beta "still running 1000 ms after a resync plan: answering the plan anyway" 10 >/dev/null \
    && pass "beta says it answered the plan without waiting out the read" \
    || fail "beta's log does not say it stopped waiting for the read"
wait_state alpha synchronized 30 >/dev/null || fail "the rejoin did not finish"

# 2. A forced promote of beta while its plan reply waits for a slow read.
out=$(ctl alpha split) && pass "split again: $out" || die "split failed: $out"
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" 0 65536 64 || die "the write after the split failed"
"${NBDTOOL[@]}" probe "$(nbd_unix_uri beta)" 0 65536 >/dev/null 2>&1 &
slow=$!
sleep 1
ctl alpha rejoin >/dev/null
sleep 0.2
out=$(ctl beta promote --force 2>&1); rc=$?
log "promote --force on beta while its plan waits: exit $rc: $out"
sleep 2
node_alive beta && pass "beta is alive after a forced promote during its plan's wait" \
    || fail "beta died after a forced promote during its plan's wait: $(tail -n 3 "$(node_log beta)")"
# The promote did land inside the wait: the plan's late reply was refused.
grep -q "the node changed while the plan waited" "$(node_log beta)" \
    && pass "beta refused the plan's late reply after the promote (the promote fell in the wait)" \
    || fail "beta's log shows no refused late reply: the promote missed the plan's wait"
wait $slow 2>/dev/null
kill_node alpha
kill_node beta
finish
