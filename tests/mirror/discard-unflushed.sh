#!/bin/bash
# discard-unflushed: a primary that loses a split brain (`mirrorctl
# discard-my-data`, running) becomes a secondary whose copy must equal the
# survivor's outside the regions it resyncs. Its plain writes from before the
# two diverged, that the periodic flush made durable on the peer only (the
# primary's own copy is covered by its activity log while it is primary), must
# be durable on it too before it stops being primary: as a secondary, no
# crash recovery marks them.
#  1. alpha (primary, power-loss injector) writes 64 KiB without FLUSH, then
#     7 s of quiet (the periodic flush: the peer's copy);
#  2. beta is killed; alpha goes on alone and marks nothing (everything it
#     wrote was flushed on beta); alpha is stopped (SIGSTOP) while beta
#     restarts and is promoted with --force; alpha resumes: split brain;
#  3. `mirrorctl discard-my-data` on alpha: it becomes secondary, the union of
#     both sides' changes (none) is resynced, the pair is synchronized;
#  4. alpha loses power, restarts, reconnects; both stopped: the two images
#     must be identical (on main before the fix, alpha has lost the write and
#     beta holds it, with nothing marked: the copies differ).
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "needs mirrorctl"
OFF=$((8 * MiB))

setup_pair
start_with_faults alpha power-loss
must_start beta
wait_state alpha synchronized 60 >/dev/null || die "the pair did not synchronize"

# 1.
nbd_put "$(nbd_unix_uri alpha)" $OFF $((64 * KiB)) 7 || die "plain write"
sleep 7

# 2.
log_mark alpha
kill_node beta
wait_for 10 sh -c "grep -q 'tracking changes for the peer' '${NODE_LOG[alpha]}'" || die "alpha did not notice"
log "alpha: $(log_since alpha | grep -o 'tracking changes for the peer ([0-9]* bytes' | tail -n 1)"
kill -STOP "${NODE_PID[alpha]}"
must_start beta
out=$(ctl beta promote --force) && pass "beta promoted with --force: $out" || fail "promote --force: $out"
kill -CONT "${NODE_PID[alpha]}"
wait_state alpha split-brain 30 >/dev/null || die "alpha does not report split brain: $(status_get alpha .state)"

# 3.
out=$(ctl alpha discard-my-data) && pass "discard-my-data on alpha: $out" || fail "discard-my-data: $out"
wait_state beta synchronized 60 >/dev/null || die "beta did not resync alpha"
wait_state alpha synchronized 60 >/dev/null || die "alpha is not a synchronized secondary"
check_eq "beta's image holds alpha's write (flushed there)" 7 "$(byte_at "${NODE_IMG[beta]}" $OFF)"

# 4.
power_loss alpha
must_start alpha
wait_state beta synchronized 60 >/dev/null || fail "not synchronized after alpha's power loss"
stop_pair beta alpha
log "at $OFF: alpha holds $(byte_at "${NODE_IMG[alpha]}" $OFF), beta $(byte_at "${NODE_IMG[beta]}" $OFF)"
check_identical "after a discard-my-data and a power loss of the victim"
pair_finish
