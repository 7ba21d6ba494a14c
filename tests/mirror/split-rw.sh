#!/bin/bash
# split-rw: a split secondary opened read-write (mirrorctl open-rw) takes
# local writes, tracked in its own persistent bitmap (kept across a crash);
# the primary writes too; rejoin copies exactly the union of both sides'
# changed regions from the primary and the copies end identical.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'

start_synced_pair 30
have_ctl || die "open-rw needs mirrorctl"
ctl() { local n=$1; shift; "$MIRRORCTL" --socket "${NODE_CTL[$n]}" "$@" 2>&1; }

nbd_fill "$(nbd_uri alpha)" 0 $((4 * MiB)) 17 || die "cannot write through alpha"

out=$(ctl beta open-rw) && fail "open-rw before a split: accepted ($out)" \
    || check "open-rw before a split is refused with a reason" grep -q "not split" <<<"$out"
out=$(ctl alpha split) || die "split failed: $out"
if nbd_fill "$(nbd_unix_uri beta)" $((8 * MiB)) $((64 * KiB)) 1 2>/dev/null; then
    fail "the split secondary took a write before open-rw"
else
    pass "the split secondary is read-only until open-rw"
fi
out=$(ctl alpha open-rw) && fail "open-rw on the primary: accepted ($out)" \
    || pass "open-rw on the primary is refused: $out"
out=$(ctl beta open-rw) && pass "open-rw: $out" || die "open-rw failed: $out"
check_eq "beta reports writable" true "$(status_get beta .writable)"
check "mirrorctl status tells people the split image is read-write" \
    grep -q "read-write (open-rw)" <<<"$(ctl beta status)"
out=$(ctl beta open-rw) && fail "open-rw twice: accepted" || pass "open-rw twice: $out"

# Secondary: 1 MiB at 8 MiB, 64 KiB at 40 MiB. Primary: 1 MiB at 8 MiB (the
# same region), 2 MiB at 16 MiB. Union: 1 MiB + 64 KiB + 2 MiB.
nbd_fill "$(nbd_unix_uri beta)" $((8 * MiB)) $((1 * MiB)) 2 || fail "write on the rw secondary"
nbd_fill "$(nbd_unix_uri beta)" $((40 * MiB)) $((64 * KiB)) 3 || fail "write on the rw secondary"
check_eq "beta counts its own changed bytes" $((MiB + 64 * KiB)) "$(status_get beta .out_of_sync_bytes)"
nbd_fill "$(nbd_uri alpha)" $((8 * MiB)) $((1 * MiB)) 4 || fail "write on the primary"
nbd_fill "$(nbd_uri alpha)" $((16 * MiB)) $((2 * MiB)) 5 || fail "write on the primary"
union=$((MiB + 64 * KiB + 2 * MiB))

# A crash of the secondary loses none of its change records.
kill_node beta
must_start beta
wait_state beta split 30 >/dev/null || fail "beta not split after its restart"
check_eq "beta's changed bytes survive a crash" $((MiB + 64 * KiB)) "$(status_get beta .out_of_sync_bytes)"
check_eq "beta restarts read-only" false "$(status_get beta .writable)"

base=$(status_get alpha .resynced_bytes_total)
out=$(ctl alpha rejoin --wait) && pass "rejoin --wait: $out" || fail "rejoin failed: $out"
wait_state alpha synchronized 60 >/dev/null || fail "alpha not synchronized after rejoin"
wait_state beta synchronized 30 >/dev/null || fail "beta not synchronized after rejoin"
copied=$(( $(status_get alpha .resynced_bytes_total) - base ))
check_eq "rejoin copied exactly the union of both sides' changes" $union "$copied"
check_eq "beta's own change records are gone" 0 "$(status_get beta .out_of_sync_bytes)"
check_eq "beta is read-only again" false "$(status_get beta .writable)"
if nbd_fill "$(nbd_unix_uri beta)" 0 4096 9 2>/dev/null; then
    fail "the secondary took a write after rejoin"
else
    pass "the secondary refuses writes after rejoin"
fi
stop_pair
check_identical "after a read-write split and rejoin"
finish
