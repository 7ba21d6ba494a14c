#!/bin/bash
# meta-lost-resync-target (review8): mid-resync into beta (alpha wrote alone
# while beta was down), beta, the resync TARGET, is killed and its metadata
# lost; it restarts as secondary with kFlagCopyUnknown and refuses alpha's
# full sync until --discard-my-data. Its copy is a mix of old and new blocks.
# d976802 reports a secondary of unknown history `consistent: true` (for
# copy-unknown-status: an untouched copy whose metadata was lost after a
# failover), but nothing distinguishes that copy from this torn one: status
# claims a consistency nobody knows, and promote's reason speaks only of the
# copy's age. An operator who loses alpha next reads "consistent" and
# forces the torn copy. What a user checks: status does not call beta's
# half-resynced copy consistent (false, or unknown: not true).
# copy-unknown-status asserts `consistent == true` for the same flags; the
# two can hold together only if status says "unknown" for such a copy.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "needs mirrorctl"
VOL_SIZE=64M
WIN=$((32 * MiB))

start_synced_pair 30
stop_node beta
write_acked w "$(nbd_unix_uri alpha)" 0 $WIN 3000
stop_node alpha
# A slow resync (the source's volume file sets the rate).
VOL_EXTRA='resync-rate = "2M"'
write_configs
must_start alpha
must_start beta
wait_state alpha resyncing 20 >/dev/null || die "no resync into beta"
sleep 3
log "mid-resync: alpha $(status_get alpha '.state + " " + (.resync.done_bytes|tostring)')"
kill_node beta
rm -f "${NODE_META[beta]}" "${NODE_META[beta]}.backup"
must_start beta
wait_log beta "no record of its copy's history" 20 >/dev/null ||
    fail "beta did not refuse the full sync into its copy of unknown history"
check_eq "beta's status: its history is unknown" true "$(status_get beta .copy_history_unknown)"
c=$(status_get beta .consistent)
check "beta's status does not call its half-resynced copy consistent (consistent: $c)" \
    test "$c" != true
stop_pair
# (The copy is torn indeed: the writes the resync had not reached yet.)
if "${NBDTOOL[@]}" verify --image "${NODE_IMG[beta]}" --log "$T/w.acks" --offset 0 \
    --window $WIN >/dev/null 2>&1; then
    log "beta's copy happened to hold every write (the resync was further along than expected)"
else
    pass "beta's copy lacks acknowledged writes (half-resynced)"
fi
pair_finish
