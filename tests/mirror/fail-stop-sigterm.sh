#!/bin/bash
# fail-stop-sigterm: with on-peer-loss = "fail-stop", writes wait while the
# peer is gone. A stop (SIGTERM, `systemctl stop`) must not wait for a peer
# it will never see: the held writes, never acknowledged, are left
# unanswered and the daemon exits promptly (the client sees its connection
# end with them outstanding, as after a crash; the kernel resends them to
# the next mirrord). Then, with both nodes back, the pair synchronizes and
# every write alpha acknowledged is on both copies.
#
# Before, alpha never exited: the stop waited for the held writes, which
# waited for the peer (still running after 100 s).
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "fail-stop-sigterm needs mirrorctl"

VOL_SIZE=64M
VOL_ACK=1s
VOL_EXTRA='initial-sync = "skip"
on-peer-loss = "fail-stop"'
WIN=$((16 * MiB))

start_synced_pair 30
start_writer w "$(nbd_unix_uri alpha)" 0 $WIN --qd 16 --bs 65536
wait_acks w 1000 60 || die "the writer did not start"
kill_node beta
wait_state alpha degraded 20 >/dev/null || fail "alpha did not notice beta's loss"
a=$(acks w)
sleep 2
check_eq "alpha's writes wait while beta is gone" "$a" "$(acks w)"

t0=$SECONDS
STOP_TIMEOUT=20 stop_node alpha
log "alpha stopped in $((SECONDS - t0)) s"
log_all alpha | grep -q "held writes are left unanswered" \
    && pass "alpha's log says the held writes were left unanswered" \
    || fail "alpha's log does not say what became of the held writes"
wait_writer w 30
[ "$WRITER_RC" -ne 0 ] && pass "the writer saw its connection end (exit $WRITER_RC)" \
    || fail "the writer exited 0 although its held writes were never answered"

must_start beta
must_start alpha
wait_state alpha synchronized 60 >/dev/null && pass "both back: synchronized" \
    || fail "not synchronized 60 s after both restarted: $(status_get alpha '.state+" "+.last_error')"
stop_pair
check_identical "after the restart"
verify_writes "beta's copy holds every write alpha acknowledged" w --image "${NODE_IMG[beta]}" 0 $WIN
pair_finish
