#!/bin/bash
# split-link-lost: `mirrorctl split` while the secondary's replies can no
# longer reach the primary (beta's side of the link cut one way, two
# namespaces), with mirrored writes in flight. The split waits for those
# writes to drain; the link is then lost (the ping times out).
#   - the split must answer soon after the link is lost (within the ack-
#     timeout and a few seconds), not wait for a new link;
#   - the operator rejoins while the link is still down; once it is back,
#     the SPLIT that never reached the secondary must not reach it on the
#     rejoin's session either, and the pair resyncs;
#   - identical images with every acknowledged write at the end.
# On main (4772de8) the split waited until a new link came up (30 s here,
# 64 s in netns-cut-moments), then its SPLIT went out on the new session, in
# the middle of the rejoin's resync: the freeze's waiters are failed on a lost link only
# when the freeze's flush was already sent (Replicator::link_lost), not while
# the freeze still waits for writes to drain (check_freeze returns without a
# link, and runs again only on the next session).
. "$(dirname "$0")/pairlib.sh"
require ip tc
have_ctl || skip "no mirrorctl"
netns_nodes mss 10.128.0
VOL_SIZE=128M
VOL_ACK=1s
ACK_MS=1000
VOL_EXTRA='initial-sync = "skip"'
WIN=$((32 * MiB))
start_synced_pair 30
start_writer w "$(nbd_unix_uri alpha)" 0 $WIN --qd 8 --seed 95
wait_acks w 500 60 || die "the writer did not start"

log_mark beta
netns_cut b
t0=$SECONDS
out=$(timeout 30 "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" split 2>&1); rc=$?
dt=$((SECONDS - t0))
log "split with beta's replies cut: exit $rc after ${dt}s: $out"
if [ $rc -eq 124 ]; then
    fail "split did not answer within 30 s of the link's loss (ack-timeout ${ACK_MS} ms)"
else
    pass "split answered after ${dt}s (exit $rc): $out"
    grep -q "the link to the peer was lost during the split.*no split was made" <<<"$out" \
        && pass "it says the link was lost, and what to do" || fail "its message: $out"
fi
log "alpha: $(node_status alpha | jq -c '{state,link,out_of_sync_bytes,last_error}')"
# The operator rejoins while the link is still down, then it comes back: the
# next session is the rejoin's resync.
out=$(ctl alpha rejoin) && log "rejoin while cut: $out" || log "rejoin while cut refused: $out"
sleep 2   # not readiness: both sides let the old session go
netns_heal
if wait_state alpha synchronized 60 >/dev/null; then
    pass "synchronized after the rejoin and the heal"
else
    fail "not synchronized: $(node_status alpha | jq -c '{state,link,last_error}')"
fi
sleep 1
late=$(log_since beta | grep "split by the primary")
if [ -z "$late" ]; then
    pass "the split that never reached beta does not reach it later either"
else
    fail "the split of the lost session reached beta on a later session: $late"
fi
check_eq "beta is not split once synchronized" synchronized "$(status_get beta .state)"
finish_writer w "$(nbd_unix_uri alpha)" 0 $WIN $ACK_MS
# What an operator may do with a secondary that says it is split: open it
# read-write. Refused on a mirroring pair; accepted, its writes would make
# the copies differ while alpha says synchronized.
if out=$(ctl beta open-rw); then
    log "open-rw on beta (it says split): $out"
    nbd_fill "$(nbd_unix_uri beta)" $((64 * MiB)) $MiB 153 || log "a write through beta failed"
    log "alpha says $(status_get alpha .state), beta $(status_get beta .state)"
    ab=$(status_get alpha .state)
    stop_pair
    if cmp -s "${NODE_IMG[alpha]}" "${NODE_IMG[beta]}"; then
        pass "beta's open-rw changed nothing alpha does not hold"
    else
        fail "the copies differ while alpha said '$ab': beta took writes through open-rw"
    fi
else
    pass "open-rw on beta refused: $out"
fi
stop_pair
check_identical "after the split with the link lost"
verify_writes "beta's image holds every acknowledged write" w --image "${NODE_IMG[beta]}" 0 $WIN
pair_finish
