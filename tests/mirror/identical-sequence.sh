#!/bin/bash
# identical-sequence (chaos8): `promote --force --identical` given right,
# then the pair's life goes on: a restart of alpha before beta connects,
# beta adopts, writes, beta's metadata lost again (beta's copy must not be
# adopted a second time: it lacks the writes since), promote --force on the
# synchronized primary, promote --force --identical on the secondary.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "needs mirrorctl"
VOL_SIZE=64M
VOL_ACK=1s
WIN=$((16 * MiB))
VOL_EXTRA='initial-sync = "skip"'
setup_pair
head -c $((4 * MiB)) /dev/urandom | dd of="${NODE_IMG[alpha]}" bs=1M seek=40 conv=notrunc status=none
cp "${NODE_IMG[alpha]}" "${NODE_IMG[beta]}"
must_start alpha
sleep 1
log "alpha alone: $(status_get alpha '.state + " writable=" + (.writable|tostring)')"
out=$(ctl alpha promote --force --identical); log "--identical, beta absent (rc $?): $out"
log "alpha: $(status_get alpha '.state + " writable=" + (.writable|tostring)')"
check_eq "alpha is not writable before beta adopted" false "$(status_get alpha .writable)"
out=$(ctl alpha promote --force --identical); log "--identical again (rc $?): $out"
stop_node alpha; must_start alpha; sleep 1
log "alpha restarted: $(status_get alpha '.state + " writable=" + (.writable|tostring)') flags $(status_get alpha '.flags // .metadata_flags // empty')"
out=$(ctl alpha promote --force --identical); log "--identical after restart (rc $?): $out"
must_start beta
wait_state alpha synchronized 30 >/dev/null || fail "not synchronized after --identical"
log "plan: $(plan_of alpha)"
stop_pair
check_identical "adopted copies"
start_pair
wait_state alpha synchronized 30 >/dev/null || fail "not synchronized after restart"
write_acked w "$(nbd_unix_uri alpha)" 0 $WIN 300
log "---- beta's metadata lost again"
kill_node beta
rm -f "${NODE_META[beta]}" "${NODE_META[beta]}.backup"
write_acked w2 "$(nbd_unix_uri alpha)" $WIN $WIN 100
out=$(ctl alpha promote --force --identical); log "--identical on a primary with history, beta gone (rc $?): $out"
log_mark beta; log_mark alpha
must_start beta
sleep 6
log "alpha: $(status_get alpha .state)  beta: $(status_get beta .state)"
log_since beta | grep -E 'warn|error|refus' | head -5 >&2
log_since alpha | grep -E 'warn|error|refus|connected' | head -5 >&2
if [ "$(status_get alpha .state)" = synchronized ]; then
    log "plan: $(plan_of alpha)"
fi
out=$(ctl alpha promote --force); log "promote --force on primary (rc $?): $out"
out=$(ctl alpha promote --force --identical); log "promote --force --identical on primary (rc $?): $out"
out=$(ctl beta promote --force --identical); log "promote --force --identical on secondary beta (rc $?): $out"
sleep 5
log "alpha: $(status_get alpha .state)  beta: $(status_get beta .state)"
stop_node beta
must_start beta --discard-my-data
wait_state alpha synchronized 60 >/dev/null || fail "no sync after --discard-my-data"
log "plan: $(plan_of alpha)"
out=$(ctl alpha promote --force); log "promote --force on a synchronized primary (rc $?): $out"
out=$(ctl alpha promote --force --identical); log "promote --force --identical on synchronized primary (rc $?): $out"
out=$(ctl beta promote --force --identical); log "promote --force --identical on synchronized secondary (rc $?): $out"
out=$(ctl beta promote --force); log "promote --force on synchronized secondary (rc $?): $out"
sleep 3
log "alpha: $(status_get alpha .state)  beta: $(status_get beta .state)"
stop_pair
check_identical "after discard-my-data"
verify_writes "beta holds w" w --image "${NODE_IMG[beta]}" 0 $WIN
verify_writes "beta holds w2" w2 --image "${NODE_IMG[beta]}" $WIN $WIN
pair_finish
