#!/bin/bash
# meta-lost-primary (found by chaos5): a node whose metadata is lost and
# whose volume file names it primary starts as primary on a copy whose
# history is unknown. It serves reads only until the pair agrees a plan or
# the operator confirms the copy (`promote --force`):
#  stale: after a planned failover beta wrote alone and stopped; alpha,
#    its metadata deleted, starts alone: it refuses writes (the application
#    must not build on the old data), status says why; when beta returns
#    (primary) the pair refuses as a split brain and alpha stays read-only;
#    alpha once with --discard-my-data then takes beta's copy, every write
#    beta acknowledged on both.
#  current: alpha (the real primary) lost its metadata with beta down: the
#    operator confirms with `promote --force`, alpha takes writes, and when
#    beta returns alpha's full sync carries them.
# Before: alpha served its stale copy read-write in the first case.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "needs mirrorctl"

log "---- stale"
planned_failover_alone "[stale]"
write_acked ws "$(nbd_unix_uri beta)" $((16 * MiB)) $((4 * MiB)) 200 --seed 3
stop_node beta
rm -f "${NODE_META[alpha]}"
must_start alpha
check_eq "[stale] alpha is primary (the volume file names it)" primary "$(status_get alpha .role)"
check_eq "[stale] alpha is not writable" false "$(status_get alpha .writable)"
check_eq "[stale] alpha's status: copy history unknown" true "$(status_get alpha .copy_history_unknown)"
if nbd_fill "$(nbd_unix_uri alpha)" $((2 * MiB)) $((64 * KiB)) 85 2>/dev/null; then
    fail "[stale] alpha accepted a write on a copy of unknown history"
else
    pass "[stale] alpha refuses writes on a copy of unknown history"
fi
out=$(ctl alpha promote 2>&1) && fail "[stale] promote without --force: $out" \
    || { grep -q "promote --force" <<<"$out" && pass "[stale] promote without --force: $out" \
         || fail "[stale] promote without --force says: $out"; }
must_start beta
wait_log alpha "split brain" 20 >/dev/null && pass "[stale] beta back as primary: split brain, refused" \
    || fail "[stale] no split brain when beta came back"
check_eq "[stale] alpha still not writable" false "$(status_get alpha .writable)"
check_eq "[stale] beta still holds its post-failover write" 34 "$(byte_at "${NODE_IMG[beta]}" 0)"
stop_node alpha
must_start alpha --discard-my-data
wait_state beta synchronized 60 >/dev/null || fail "[stale] the pair did not synchronize from beta"
verify_writes "[stale] every write beta acknowledged, read through beta" ws \
    --uri "$(nbd_unix_uri beta)" $((16 * MiB)) $((4 * MiB))
stop_pair
check_identical "[stale] after alpha took beta's copy"

log "---- current"
new_synced_pair 30
check "[current] 1M of 0x33 at 0 through alpha" nbd_fill "$(nbd_unix_uri alpha)" 0 $MiB 51
stop_node beta
stop_node alpha
rm -f "${NODE_META[alpha]}"
must_start alpha
check_eq "[current] alpha is not writable" false "$(status_get alpha .writable)"
out=$(ctl alpha promote --force 2>&1) && pass "[current] promote --force confirms alpha's copy: $out" \
    || fail "[current] promote --force: $out"
check_eq "[current] alpha is writable" true "$(status_get alpha .writable)"
check_eq "[current] alpha's copy history is known again" false "$(status_get alpha .copy_history_unknown)"
write_acked wc "$(nbd_unix_uri alpha)" $((16 * MiB)) $((4 * MiB)) 200 --seed 4
must_start beta
wait_state alpha synchronized 60 >/dev/null || fail "[current] the pair did not synchronize from alpha"
verify_writes "[current] every write alpha acknowledged, read through alpha" wc \
    --uri "$(nbd_unix_uri alpha)" $((16 * MiB)) $((4 * MiB))
stop_pair
check_eq "[current] beta holds alpha's 0x33 at 0" 51 "$(byte_at "${NODE_IMG[beta]}" 0)"
check_identical "[current] after the full sync"
pair_finish
