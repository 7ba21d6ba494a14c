#!/bin/bash
# restart-degraded: a primary that starts cleanly while its secondary is down
# and then takes writes must resync them when the secondary comes back (its
# generation has to move on with the first write the peer lacks; otherwise the
# handshake finds equal generations, plans "in sync", and the secondary
# silently misses those writes: a later failover would lose them).
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'

start_synced_pair 30
stop_pair
check_identical "a clean stop in sync"

must_start alpha
check "alpha, started alone, writes 4M" \
    "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((8 * MiB)) $((4 * MiB)) 5
dirty=$(status_get alpha .out_of_sync_bytes)
[ "$dirty" -ge $((4 * MiB)) ] && pass "alpha tracks $dirty bytes for beta" \
    || fail "alpha tracks $dirty bytes for beta (expected >= 4M)"
must_start beta
wait_state alpha synchronized 30 >/dev/null || fail "alpha not synchronized after beta returned"
check_eq "nothing left out of sync" 0 "$(status_get alpha .out_of_sync_bytes)"
stop_pair
check_identical "after beta returned"
finish
