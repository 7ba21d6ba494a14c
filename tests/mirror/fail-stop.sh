#!/bin/bash
# fail-stop: on-peer-loss = "fail-stop" (DRBD's I/O freeze under fencing).
#   1. the secondary killed: a write through the primary is held (it does
#      not complete) while reads are served; the secondary back, the held
#      write completes, is on both copies, and nothing had to be resynced;
#   2. a split, then the secondary dies and the operator rejoins: the
#      primary's writes were tracked through the split and are not frozen
#      now (the peer has not been back since); it is back: resync, identical.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_ACK=2s
VOL_EXTRA='initial-sync = "skip"
on-peer-loss = "fail-stop"'
have_ctl || skip "fail-stop needs mirrorctl"

start_synced_pair 30

# 1. the peer lost: writes wait for it
kill_node beta
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" 0 65536 71 >"$T/held.out" 2>&1 &
held=$!
sleep 4
kill -0 $held 2>/dev/null && pass "with beta gone, a write through alpha is held (4 s and counting)" \
    || fail "with beta gone, the write through alpha completed: $(cat "$T/held.out")"
check_eq "reads are served meanwhile" "read OK" \
    "$("${NBDTOOL[@]}" probe "$(nbd_unix_uri alpha)" $((MiB)) 4096 | grep '^read' | cut -d' ' -f1-2)"
must_start beta
wait $held; rc=$?
check_eq "beta back: the held write completes" 0 $rc
wait_state alpha synchronized 30 >/dev/null || fail "the pair did not synchronize"
check_eq "the held write is on beta" \
    "$("${NBDTOOL[@]}" probe "$(nbd_unix_uri alpha)" 0 65536 | grep '^read')" \
    "$("${NBDTOOL[@]}" probe "$(nbd_unix_uri beta)" 0 65536 | grep '^read')"

# 2. split, the secondary dies, rejoin: not frozen
out=$(ctl alpha split) && pass "split: $out" || die "split failed: $out"
check "a write during the split" "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((MiB)) 65536 72
kill_node beta
out=$(ctl alpha rejoin) && pass "rejoin with beta dead: $out" || fail "rejoin: $out"
if timeout 10 "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((2 * MiB)) 65536 73; then
    pass "after the rejoin, with beta not back since the split, alpha's writes are not frozen"
else
    fail "after the rejoin alpha's write did not complete within 10 s (fail-stop froze it)"
fi
check_eq "alpha says degraded" degraded "$(status_get alpha .state)"
must_start beta
wait_state alpha synchronized 30 >/dev/null || fail "the pair did not resync"
stop_pair
check_identical "after the rejoin"
finish
