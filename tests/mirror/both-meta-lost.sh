#!/bin/bash
# both-meta-lost (found by chaos6): when neither node records its copy's
# history and both disks hold data, nothing is synced until the operator says
# which copy is current (`mirrorctl promote --force` there), as DRBD's first
# `primary --force`:
#  failover-full / failover-skip: after a forced failover (alpha killed,
#    promote --force on beta, beta writes alone and stops) BOTH metadata files
#    are lost and both nodes start; the volume file still names alpha, the
#    stale copy, primary. Nothing is copied either way (with initial-sync =
#    "skip" the two copies are not adopted as identical either), alpha serves
#    no writes; the operator stops alpha, promotes beta, starts alpha once
#    with --discard-my-data, and both copies end with every write beta
#    acknowledged.
#  newpair: a new pair on two disks that hold different data: no sync until
#    `promote --force` on alpha, then beta takes a full copy of alpha's.
#  identical: a new pair on two disks restored from one image: `promote
#    --force --identical` on alpha adopts them without a copy.
#  blank-primary: a new pair whose primary disk is blank and whose secondary
#    holds data: no sync of zeros over beta's data until `promote --force`.
# Before: with "full" alpha's stale copy was synced over beta (every write
# beta acknowledged lost from both copies); with "skip" both said
# synchronized over different copies; a new pair overwrote used disks.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "needs mirrorctl"
VOL_SIZE=64M
VOL_ACK=1s
WIN=$((16 * MiB))
REFUSAL="neither node records its copy's history"

# first_sync_refused LABEL: beta refused the first sync, and the pair is not
# synchronized.
first_sync_refused() {
    local label=$1 line
    if line=$(wait_log beta "$REFUSAL" 20); then
        pass "[$label] beta refuses the first sync: ${line#*: }"
    else
        fail "[$label] beta did not refuse the first sync"
    fi
    sleep 1
    check "[$label] the pair is not synchronized" test "$(status_get alpha .state)" != synchronized
}

# no_sync LABEL: first_sync_refused, and alpha takes no writes.
no_sync() {
    local label=$1
    first_sync_refused "$label"
    check_eq "[$label] alpha is not writable" false "$(status_get alpha .writable)"
    if nbd_fill "$(nbd_unix_uri alpha)" $((48 * MiB)) $((64 * KiB)) 85 2>/dev/null; then
        fail "[$label] alpha accepted a write on a copy of unknown history"
    else
        pass "[$label] alpha refuses writes"
    fi
}

failover_case() {
    local init=$1 shb
    log "---- failover-$init"
    VOL_EXTRA="initial-sync = \"$init\""
    failover_both_meta_lost $WIN
    shb=$(sha_of "${NODE_IMG[beta]}")
    start_pair
    no_sync "failover-$init"
    check_eq "[failover-$init] beta's copy (the only one with w2) is untouched" "$shb" \
        "$(sha_of "${NODE_IMG[beta]}")"
    # The operator's choice: beta's copy.
    stop_node alpha
    out=$(ctl beta promote --force) && pass "[failover-$init] promote --force beta: $out" \
        || fail "[failover-$init] promote --force beta: $out"
    must_start alpha --discard-my-data
    wait_state beta synchronized 60 >/dev/null || fail "[failover-$init] no sync from beta"
    verify_writes "[failover-$init] every write beta acknowledged, through beta" w2 \
        --uri "$(nbd_unix_uri beta)" $WIN $WIN
    stop_pair
    check_identical "[failover-$init] after alpha took beta's copy"
    verify_writes "[failover-$init] alpha's image holds every write beta acknowledged" w2 \
        --image "${NODE_IMG[alpha]}" $WIN $WIN
}

failover_case full
failover_case skip

log "---- newpair"
VOL_EXTRA=""
fresh_pair
head -c $((4 * MiB)) /dev/urandom | dd of="${NODE_IMG[alpha]}" conv=notrunc status=none
head -c $((4 * MiB)) /dev/urandom | dd of="${NODE_IMG[beta]}" conv=notrunc status=none
sha=$(sha_of "${NODE_IMG[alpha]}"); shb=$(sha_of "${NODE_IMG[beta]}")
start_pair
no_sync newpair
check_eq "[newpair] beta's data untouched" "$shb" "$(sha_of "${NODE_IMG[beta]}")"
out=$(ctl alpha promote --force) && pass "[newpair] promote --force alpha: $out" \
    || fail "[newpair] promote --force alpha: $out"
wait_state alpha synchronized 30 >/dev/null || fail "[newpair] no full sync after promote --force"
check_eq "[newpair] alpha is writable" true "$(status_get alpha .writable)"
stop_pair
check_eq "[newpair] alpha's data kept" "$sha" "$(sha_of "${NODE_IMG[alpha]}")"
check_identical "[newpair] beta took alpha's copy"

log "---- identical"
# A new pair on two disks restored from one image: the operator's word that
# they are identical makes the pair adopt them without a copy.
VOL_EXTRA='initial-sync = "skip"'
fresh_pair
head -c $((4 * MiB)) /dev/urandom | dd of="${NODE_IMG[alpha]}" conv=notrunc status=none
cp "${NODE_IMG[alpha]}" "${NODE_IMG[beta]}"
start_pair
no_sync identical
out=$(ctl alpha promote --identical 2>&1) && fail "[identical] --identical without --force: $out" \
    || pass "[identical] --identical without --force refused: $out"
out=$(ctl alpha promote --force --identical) && pass "[identical] promote --force --identical: $out" \
    || fail "[identical] promote --force --identical: $out"
wait_state alpha synchronized 30 >/dev/null || fail "[identical] not synchronized after --identical"
check_eq "[identical] alpha adopted beta's copy: nothing copied" "no sync (initial-sync = skip) 0" \
    "$(plan_of alpha)"
check_eq "[identical] alpha is writable" true "$(status_get alpha .writable)"
out=$(ctl alpha promote --force --identical 2>&1) && fail "[identical] a second --identical: $out" \
    || pass "[identical] --identical on a pair with a history refused: $out"
stop_pair
check_identical "[identical] the adopted copies"
VOL_EXTRA=""

log "---- blank-primary"
fresh_pair
head -c $((4 * MiB)) /dev/urandom | dd of="${NODE_IMG[beta]}" conv=notrunc status=none
shb=$(sha_of "${NODE_IMG[beta]}")
start_pair
first_sync_refused blank-primary
check_eq "[blank-primary] beta's data untouched" "$shb" "$(sha_of "${NODE_IMG[beta]}")"
out=$(ctl alpha promote 2>&1) && fail "[blank-primary] promote without --force: $out" \
    || pass "[blank-primary] promote without --force refused: $out"
out=$(ctl alpha promote --force) && pass "[blank-primary] promote --force alpha: $out" \
    || fail "[blank-primary] promote --force alpha: $out"
wait_state alpha synchronized 30 >/dev/null || fail "[blank-primary] no full sync after promote --force"
stop_pair
check_identical "[blank-primary] beta took alpha's (blank) copy"
pair_finish
