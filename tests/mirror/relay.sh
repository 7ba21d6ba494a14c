#!/bin/bash
# relay: mirrorctl split | rejoin | status work from either host. Sent to the
# secondary's daemon, split and rejoin are relayed over the replication link
# (RELAY / RELAY_REPLY) to the primary, whose answer comes back; the split is
# the primary's (its write log cut is checked as in split-rejoin); refusals
# come back with the primary's reason; `status --peer` shows the other
# node's own view. A primary that stops answering (SIGSTOP: the TCP
# connection stays up) is let go by the secondary after 2 x ack-timeout of
# silence: relayed commands fail with a clear error (the link was lost), not
# hang; SIGCONT and all is well.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=128M
VOL_EXTRA='initial-sync = "skip"'
WIN_OFF=$((16 * MiB)) WIN=$((8 * MiB))

setup_pair
start_pair
have_ctl || die "relay needs mirrorctl"
wait_state alpha synchronized 30 >/dev/null || die "alpha not synchronized"
ctl() { local n=$1; shift; timeout 60 "$MIRRORCTL" --socket "${NODE_CTL[$n]}" "$@" 2>&1; }

check_eq "status --peer on beta shows alpha's view (node)" alpha "$(ctl beta status --peer --json | jq -r .node)"
check_eq "status --peer on beta shows alpha's role" primary "$(ctl beta status --peer --json | jq -r .role)"
check_eq "status --peer on alpha shows beta's role" secondary "$(ctl alpha status --peer --json | jq -r .role)"

start_writer w "$(nbd_unix_uri alpha)" $WIN_OFF $WIN --qd 8 --seed 31
wait_acks w 1000 60 || die "the writer did not get 1000 writes acknowledged"
before=$(wc -l <"$T/w.acks")
out=$(ctl beta split) && pass "split sent to beta (secondary): $out" || die "split via beta failed: $out"
sleep 0.3   # the writer logs acknowledgements a moment after it gets them
after=$(wc -l <"$T/w.acks")
check_eq "alpha (primary) reports split" split "$(status_get alpha .state)"
check_eq "beta reports split" split "$(status_get beta .state)"
last=$(status_get alpha .last_split.unix_ms)
[ "$last" != null ] && pass "the primary recorded the split it ran for beta (drain $(status_get alpha .last_split.drain_us) us)" \
    || fail "alpha has no last_split"
cut_acks w "$before" "$after"
wait_acks w $(( $(acks w) + 500 )) 60 || fail "writes did not go on after the split"
check "beta's split image holds exactly the writes acknowledged before the split" \
    "${NBDTOOL[@]}" verify --uri "$(nbd_unix_uri beta)" --log "$T/w.cut.acks" --offset $WIN_OFF --window $WIN

out=$(ctl beta split); rc=$?
[ $rc -eq 1 ] && grep -q "on 'alpha': already split" <<<"$out" \
    && pass "a second split via beta: the primary's refusal comes back: $out" \
    || fail "a second split via beta: exit $rc: $out"

out=$(ctl beta rejoin --wait) && pass "rejoin --wait sent to beta: $out" || fail "rejoin via beta: $out"
check_eq "beta synchronized when rejoin --wait returned" synchronized "$(status_get beta .state)"
wait_state alpha synchronized 30 >/dev/null || fail "alpha not synchronized after the relayed rejoin"
stop_writer w
check_eq "the writer saw no error" 0 "$WRITER_RC"
nbd_flush alpha
stop_pair
verify_writes "alpha holds every acknowledged write" w --image "${NODE_IMG[alpha]}" $WIN_OFF $WIN
check_identical "after the relayed split and rejoin"

# A stopped primary (SIGSTOP: its kernel keeps the TCP connection up, it
# sends nothing): beta takes it for gone after 2 x ack-timeout of silence
# (no ping), ends the session, and the relayed commands fail with the link
# lost (exit 1), before the relay timeout (ack-timeout + 10 s); nothing hangs.
start_pair
wait_state beta synchronized 30 >/dev/null || fail "the restarted pair did not synchronize"
ack=${VOL_ACK%s}
limit=$((ack + 10))   # the relay timeout in s (VOL_ACK is "2s")
kill -STOP "${NODE_PID[alpha]}"
t0=$SECONDS
ctl beta status --peer >"$T/peer.out" 2>&1 & p1=$!
ctl beta rejoin >"$T/rejoin.out" 2>&1 & p2=$!
ctl beta split >"$T/split.out" 2>&1 & p3=$!
wait $p1; rc1=$?
wait $p2; rc2=$?
wait $p3; rc3=$?
took=$((SECONDS - t0))
check_eq "status --peer, rejoin and split on beta with alpha stopped: exit 1 (link lost)" "1 1 1" \
    "$rc1 $rc2 $rc3"
for f in peer rejoin split; do
    grep -q "relaying to 'alpha': the link to 'alpha' was lost before it answered" "$T/$f.out" \
        && pass "$f: the error says the link to alpha was lost: $(cat "$T/$f.out")" \
        || fail "$f with alpha stopped: $(cat "$T/$f.out")"
done
# A command that changes state may have run on alpha before the link went,
# its answer lost with it (as alpha's split, confirmed, and then its reply):
# the operator is told, never left to take the failure for "not done".
for f in rejoin split; do
    grep -q "'alpha' may have run it.*check .mirrorctl status. there" "$T/$f.out" \
        && pass "$f: it says alpha may have run it, and where to check" \
        || fail "$f: it does not say alpha may have run it: $(cat "$T/$f.out")"
done
grep -q "may have run it" "$T/peer.out" && fail "status --peer (read-only) says alpha may have run it" \
    || pass "status --peer (read-only) does not say alpha may have run it"
[ $took -le $((2 * ack + 3)) ] \
    && pass "both gave up after $took s (2 x ack-timeout of silence; relay timeout $limit s)" \
    || fail "the relayed commands took $took s, expected about $((2 * ack)) s"
[[ "$(status_get beta .last_error)" == *"the primary 'alpha' sent nothing for"* ]] \
    && pass "beta says why it let alpha go: $(status_get beta .last_error)" \
    || fail "beta's last_error: $(status_get beta .last_error)"
node_alive beta && pass "beta's daemon is fine" || fail "beta died"
kill -CONT "${NODE_PID[alpha]}"
wait_state alpha synchronized 60 >/dev/null && wait_state beta synchronized 60 >/dev/null \
    && pass "after SIGCONT the pair is synchronized again" \
    || fail "after SIGCONT: $(status_get alpha .state)/$(status_get beta .state)"
check_eq "the late relayed rejoin and split changed nothing (alpha primary, not split)" \
    primary/synchronized "$(status_get alpha .role)/$(status_get alpha .state)"
check_eq "status --peer answers again" alpha "$(ctl beta status --peer --json | jq -r .node)"
stop_pair

# The peer down: nothing to relay to; a clear error, no state change.
must_start beta
out=$(ctl beta split); rc=$?
[ $rc -eq 1 ] && pass "split on beta with alpha down is refused: $out" || fail "split with alpha down: exit $rc: $out"
out=$(ctl beta status --peer); rc=$?
[ $rc -eq 1 ] && grep -q "not connected" <<<"$out" && pass "status --peer with alpha down: $out" \
    || fail "status --peer with alpha down: exit $rc: $out"
check_eq "beta still disconnected, not split" disconnected "$(status_get beta .state)"
finish
