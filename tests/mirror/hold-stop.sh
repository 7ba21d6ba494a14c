#!/bin/bash
# hold-stop: `mirrorctl hold` (new writes wait; released by `release` or when
# its timeout_ms runs out) left in place, e.g. by a consistency-group script
# that died before its release, then the primary is stopped (systemctl stop:
# SIGTERM) while client writes wait on the hold. The stop used to wait for
# those writes, which waited for the hold: mirrord did not exit until the
# hold's timeout (here 10 min; systemd kills it after 90 s, an unclean
# stop). A stop must not wait on a hold: it ends in bounded time with exit 0,
# and every write acknowledged before it is on both copies after a restart.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=128M
VOL_ACK=2s
VOL_EXTRA='initial-sync = "skip"'
WIN=$((32 * MiB))

start_synced_pair 30
have_ctl || skip "hold needs mirrorctl"
start_writer w "$(nbd_uri alpha)" 0 $WIN --qd 4 --seed 4
wait_acks w 500 30 || die "the writer did not get 500 writes acknowledged"
out=$(ctl alpha hold --timeout_ms 600000) && pass "hold for 10 min: $out" || die "hold refused: $out"
check_eq "alpha's status says it holds writes" true "$(status_get alpha .holding_writes)"
n=$(acks w)
sleep 1   # not readiness: the held writer gets nothing acknowledged meanwhile
check_eq "no write completes while held" "$n" "$(acks w)"

t0=$SECONDS
kill -TERM "${NODE_PID[alpha]}"
if reap_node alpha 20; then
    check_eq "alpha exits 0 on SIGTERM with writes held ($((SECONDS - t0)) s)" 0 "$NODE_RC"
else
    fail "alpha still running 20 s after SIGTERM: its stop waits for the writes held by 'hold'"
fi
wait_writer w 30
log "writer: $(cat "$T/w.out")"
restart_converged "after a stop with writes held" w 0 $WIN
finish
