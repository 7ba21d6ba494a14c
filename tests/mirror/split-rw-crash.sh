#!/bin/bash
# split-rw-crash: the rejoin of a read-write split secondary is interrupted
# by a crash of the primary mid-resync. The secondary keeps its own change
# records until the resync completes and sends them again at the next
# handshake, so after the primary restarts the copies still end identical.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"
resync-rate = "1M"'

start_synced_pair 30
have_ctl || die "open-rw needs mirrorctl"
ctl() { local n=$1; shift; "$MIRRORCTL" --socket "${NODE_CTL[$n]}" "$@" 2>&1; }

out=$(ctl alpha split) || die "split failed: $out"
out=$(ctl beta open-rw) || die "open-rw failed: $out"
nbd_fill "$(nbd_unix_uri beta)" $((8 * MiB)) $((2 * MiB)) 2 || die "write on the rw secondary"
nbd_fill "$(nbd_uri alpha)" $((30 * MiB)) $((1 * MiB)) 5 || die "write on the primary"

out=$(ctl alpha rejoin) || die "rejoin failed: $out"
wait_state alpha resyncing 30 >/dev/null || die "the rejoin's resync did not start"
kill_node alpha
st=$(status_get beta .state)
if [ "$st" = synchronized ]; then
    fail "the resync finished before alpha could be killed (resync-rate too high?)"
else
    pass "alpha crashed mid-resync (beta: $st)"
fi
check_eq "beta still holds its own change records" $((2 * MiB)) "$(status_get beta .out_of_sync_bytes)"
check_eq "beta's image is not called consistent mid-resync" false "$(status_get beta .consistent)"

must_start alpha
wait_state alpha synchronized 60 >/dev/null || fail "alpha not synchronized after its restart"
wait_state beta synchronized 30 >/dev/null || fail "beta not synchronized after alpha's restart"
check_eq "beta's change records are gone once the resync completed" 0 "$(status_get beta .out_of_sync_bytes)"
stop_pair
check_identical "after a crash of the primary during the rejoin of a read-write split"
finish
