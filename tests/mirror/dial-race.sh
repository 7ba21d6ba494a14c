#!/bin/bash
# dial-race: the operator's rejoin on a primary that is not the node that
# dials ('beta'; 'alpha' sorts first and dials) at the moment the secondary's
# own connection is arriving. beta is frozen (SIGSTOP) while alpha starts and
# dials it and while the rejoin is queued on beta's control socket, then
# thawed, so beta handles both in the same moments. The rejoin's one-shot
# dial must be dropped when a handshake is under way (not kept for later,
# when it would dial a peer that is gone), and a second session, if both
# dials cross, refused without leaving an error in either node's status.
# Each round: the split's changes are resynced, every acknowledged write is
# on alpha, no "unrelated data" or split brain; at the end the copies are
# identical.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_PRIMARY=beta
have_ctl || skip "needs mirrorctl"

setup_pair
start_pair
wait_for 30 synchronized_both || die "the pair did not synchronize"
check_eq "alpha is secondary (and the node that dials)" secondary "$(status_get alpha .role)"

WIN=$((4 * MiB))
for i in 1 2 3 4; do
    out=$(ctl beta split) || die "split $i: $out"
    stop_node alpha
    write_acked w$i "$(nbd_unix_uri beta)" $(((i - 1) * WIN)) "$WIN" 200
    kill -STOP "${NODE_PID[beta]}"
    must_start alpha       # dials beta: the connection waits in beta's backlog
    "$MIRRORCTL" --socket "${NODE_CTL[beta]}" rejoin >"$T/rejoin.$i" 2>&1 &
    rj=$!
    sleep 0.3              # the rejoin's request waits in beta's control backlog
    kill -CONT "${NODE_PID[beta]}"
    wait "$rj" && pass "round $i: rejoin answered: $(cat "$T/rejoin.$i")" \
        || fail "round $i: rejoin failed: $(cat "$T/rejoin.$i")"
    wait_for 30 synchronized_both && pass "round $i: synchronized on both nodes" \
        || fail "round $i: not synchronized: alpha $(status_get alpha .state), beta $(status_get beta .state)"
    verify_writes "round $i: alpha holds every acknowledged write" w$i --image "${NODE_IMG[alpha]}" \
        $(((i - 1) * WIN)) "$WIN"
    check_eq "round $i: no error in beta's status" "" "$(status_get beta '.last_error // ""')"
    check_eq "round $i: no error in alpha's status" "" "$(status_get alpha '.last_error // ""')"
done

# beta dials only for a rejoin, when alpha is up: a dial that alpha refused
# is a one-shot kept past its rejoin (it fired when alpha was next stopped).
stray=$(log_all beta | grep -c "replication: connecting to .*: Connection refused")
check_eq "beta never dialed a stopped alpha" 0 "$stray"
races=$(log_all beta | grep -cE "already active|another handshake with the peer is being planned|a second session refused")
log "second sessions refused in beta's and alpha's logs: $races (beta), $(log_all alpha | grep -cE "a second session refused|already active|being planned")"
check_no_divergence_logged
stop_pair
check_identical "after four raced rejoins"
pair_finish
