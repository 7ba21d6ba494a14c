#!/bin/bash
# al-turnover: what the primary marks dirty after a failure is bounded by its
# flushes (docs/replication-protocol.md, "Losing the peer"; configuration.md,
# activity-log-extents). With activity-log-extents = 4 (4 MiB extents) the
# client writes into 12 extents, then nothing for 7 s: the periodic flush
# (every 5 s) runs, flushing both copies since the extents overflow the
# log, which lets 8 of them leave it.
#  1. kill -9 of the secondary: the primary marks nothing (every write was
#     flushed on the peer), and the resync after its restart copies nothing;
#  2. kill -9 of the primary: at its restart only the extents still in the
#     activity log (at most 4, 16 MiB) are marked dirty, not all 12 (48 MiB).
# Then, with the log no longer overflowing, writes to two extents and 7 s of
# quiet: the periodic flush still runs (both copies), so a secondary killed
# after it marks nothing.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=128M
VOL_EXTRA='initial-sync = "skip"
activity-log-extents = 4'
have_ctl || skip "needs mirrorctl"
start_synced_pair 30

fill_extents() {  # fill_extents FIRST COUNT SEED: 64 KiB at the start of each 4 MiB extent
    local e
    for e in $(seq "$1" $(($1 + $2 - 1))); do
        nbd_fill "$(nbd_unix_uri alpha)" $((e * 4 * MiB)) $((64 * KiB)) "$3" || die "write extent $e"
    done
}
marked_after_loss() {  # the bytes the primary marked when it lost the peer (its last such line)
    log_since alpha | grep -o 'tracking changes for the peer ([0-9]* bytes' | tail -n 1 | grep -o '[0-9]*'
}

# quiet_then_kill_secondary LABEL: 7 s without writes (a periodic flush runs),
# kill -9 of beta: alpha marks nothing; beta restarted, synchronized again.
quiet_then_kill_secondary() {
    sleep 7
    log_mark alpha
    kill_node beta
    wait_for 10 sh -c "grep -q 'tracking changes for the peer' '${NODE_LOG[alpha]}'" || die "alpha did not notice"
    check_eq "$1" 0 "$(marked_after_loss)"
    must_start beta
    wait_state alpha synchronized 30 >/dev/null || die "not synchronized after beta's restart"
}

fill_extents 0 12 5
quiet_then_kill_secondary "1. secondary killed after a quiet 7 s: the primary marks nothing"
check_eq "1. the resync after its restart copied nothing" 0 "$(status_get alpha .resynced_bytes_total)"

kill_node alpha
must_start alpha
n=$(grep -o 'unclean shutdown: [0-9]* bytes' "${NODE_LOG[alpha]}" | grep -o '[0-9]*' | head -n 1)
n=${n:-0}
if [ "$n" -gt 0 ] && [ "$n" -le $((4 * 4 * MiB)) ]; then
    pass "2. primary crash: $n bytes of active extents marked (at most 4 extents, not 12)"
else
    fail "2. primary crash: $n bytes marked (expected 1 to 4 extents of 4 MiB: the log keeps at most 4)"
fi
wait_state alpha synchronized 30 >/dev/null || die "not synchronized after alpha's restart"

# The log holds at most 4 extents: writes to two of them, then quiet.
fill_extents 0 2 6
quiet_then_kill_secondary "3. after a periodic flush with the log not full: a killed secondary costs nothing"
stop_pair
check_identical "after the crashes"
pair_finish
