#!/bin/bash
# meta-lost-resync-source (found by chaos8): after a planned failover (beta
# primary) beta writes w2 alone, alpha returns and a slow resync from beta
# into alpha runs; mid-resync the resync SOURCE (beta) crashes and its
# metadata is lost (MLRS_HOW: delete, or corrupt both superblock slots).
# The volume file still names alpha primary, so beta restarts as secondary
# (kFlagCopyUnknown) and the pair sits in standby, both secondary. `promote`
# on EITHER node answers the same "this copy is not consistent (a resync has
# not finished)": on beta, whose copy is the only complete one, that is wrong
# (behind_reason() reads its new metadata's kFlagFullSyncNeeded as an
# unfinished resync).
#  MLRS_FORCE=alpha (default): the operator forces the half-synced alpha
#    (`promote --force`, accepted while beta is connected). Its forced promote
#    sets kFlagFullSyncNeeded, which disarms beta's kFlagCopyUnknown refusal
#    (it only refuses a FULL from a primary that did NOT ask for one): alpha
#    full-syncs its half copy over beta, both say synchronized, and the w2
#    writes beta acknowledged are gone from both copies. FAILS on 938217c.
#  MLRS_FORCE=beta: promote --force on beta: beta's copy wins (passes).
# Expected: no acknowledged write lost: a forced promote of a copy whose
# metadata says it is mid-resync from the connected peer refused (or the
# peer's copy of unknown history not overwritten without --discard-my-data).
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "needs mirrorctl"
VOL_SIZE=64M
VOL_ACK=1s
WIN=$((32 * MiB))
HOW=${MLRS_HOW:-delete}
start_synced_pair 30
write_acked w1 "$(nbd_unix_uri alpha)" 0 $((16 * MiB)) 200
out=$(ctl alpha demote); log "demote alpha: $out"
out=$(ctl beta promote); log "promote beta: $out"
stop_node alpha
write_acked w2 "$(nbd_unix_uri beta)" $((16 * MiB)) $WIN 3000
# A slow resync (the source's volume file sets the rate).
stop_node beta
VOL_EXTRA='resync-rate = "2M"'
write_configs
must_start beta
must_start alpha
wait_state beta resyncing 20 >/dev/null || fail "no resync into alpha"
sleep 3
log "mid-resync: beta $(status_get beta '.state + " " + (.resync.done_bytes|tostring)')  alpha $(status_get alpha .state)"
kill_node beta
case $HOW in
    delete) rm -f "${NODE_META[beta]}" "${NODE_META[beta]}.backup" ;;
    corrupt) dd if=/dev/urandom of="${NODE_META[beta]}" bs=4096 count=2 conv=notrunc status=none
             rm -f "${NODE_META[beta]}.backup" ;;
esac
shb=$(sha_of "${NODE_IMG[beta]}")
log_mark alpha; log_mark beta
must_start beta
sleep 8
log "after beta's restart: alpha $(status_get alpha '.state + " role=" + .role + " writable=" + (.writable|tostring)')  beta $(status_get beta '.state + " role=" + .role + " writable=" + (.writable|tostring)')"
{ log_since alpha; log_since beta; } | grep -E ' (warn|error):' | grep -v 'Connection refused' | cut -c1-600 | head -6 >&2
check_eq "beta's copy untouched" "$shb" "$(sha_of "${NODE_IMG[beta]}")"
if "${NBDTOOL[@]}" sha "$(nbd_unix_uri alpha)" >/dev/null 2>&1; then
    log "alpha's export serves reads (status $(status_get alpha .state))"
fi
for n in alpha beta; do
    out=$(ctl $n promote); log "promote $n (rc $?): $out"
done
log "status alpha: $(status_get alpha -c .)"
log "status beta: $(status_get beta -c .)"
if [ "${MLRS_FORCE:-alpha}" = alpha ]; then
    if out=$(ctl alpha promote --force); then
        fail "promote --force on alpha, the half-synced copy, with beta connected: $out"
        wait_state alpha synchronized 60 >/dev/null
        log "alpha $(status_get alpha .state) beta $(status_get beta .state), plan $(plan_of alpha)"
    else
        pass "promote --force on alpha, the half-synced copy, refused while beta is connected: $out"
    fi
    out=$(ctl beta promote 2>&1)
    check "promote on beta says its copy's history is unknown, not that it is inconsistent ($out)" \
        grep -q "nothing records this copy's history" <<<"$out"
else
    out=$(ctl beta promote --force); log "promote --force beta (rc $?): $out"
    wait_state beta synchronized 60 >/dev/null || fail "no sync from beta after promote --force"
    log "plan: $(plan_of beta)"
fi
stop_pair
[ "${MLRS_FORCE:-alpha}" = beta ] && check_identical "after promote --force beta"
[ "${MLRS_FORCE:-alpha}" = alpha ] && check_eq "beta's copy untouched at the end" "$shb" "$(sha_of "${NODE_IMG[beta]}")"
verify_writes "beta's image holds w1" w1 --image "${NODE_IMG[beta]}" 0 $((16 * MiB))
verify_writes "beta's image holds w2" w2 --image "${NODE_IMG[beta]}" $((16 * MiB)) $WIN
pair_finish
