#!/bin/bash
# split-covered-crash: after a split, a write to an extent the activity log
# holds is acknowledged without waiting for its dirty bit to reach the disk
# (that wait was the split's write stall); the active extent covers it, since
# crash recovery marks active extents dirty whole. This test proves both
# halves: with every metadata commit slowed to DELAY_MS, such a write returns
# well within it (a write to a cold extent still waits), and a kill -9 of the
# primary while the bit is not yet on disk loses nothing: the rejoin after
# the restart copies it and the copies end identical.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
DELAY_MS=4000
have_ctl || die "split needs mirrorctl"
ctl() { local n=$1; shift; "$MIRRORCTL" --socket "${NODE_CTL[$n]}" "$@" 2>&1; }

setup_pair
start_with_faults alpha "meta-delay-ms=$DELAY_MS"
must_start beta
wait_state alpha synchronized 60 >/dev/null || die "alpha not synchronized with slow commits"
# Extent 2 (8-12 MiB at the default 4 MiB extents) becomes active, mirrored.
nbd_fill "$(nbd_unix_uri alpha)" $((8 * MiB)) $((1 * MiB)) 1 || die "mirrored write"
out=$(ctl alpha split) || die "split failed: $out"
check_eq "alpha reports split" split "$(status_get alpha .state)"

ms() { echo $(($(date +%s%N) / 1000000)); }
# A cold extent (40 MiB): its activity bit must be durable first.
t0=$(ms)
nbd_fill "$(nbd_unix_uri alpha)" $((40 * MiB)) 4096 2 || die "write to a cold extent"
cold=$(($(ms) - t0))
[ "$cold" -ge $((DELAY_MS * 3 / 4)) ] && pass "a write to a cold extent waits for its activity commit (${cold} ms)" \
    || fail "a write to a cold extent returned in ${cold} ms: the commit delay is not in effect"
# Its dirty bit's commit is now running (DELAY_MS long): the next bit set is
# not on disk until after it. A write to the active extent must not wait.
t0=$(ms)
nbd_fill "$(nbd_unix_uri alpha)" $((8 * MiB + 64 * KiB)) $((64 * KiB)) 3 || die "write to the active extent"
warm=$(($(ms) - t0))
[ "$warm" -lt $((DELAY_MS / 2)) ] && pass "a write to an active extent after the split needs no metadata sync (${warm} ms)" \
    || fail "a write to an active extent after the split took ${warm} ms (commits take ${DELAY_MS} ms)"
want=$(( (64 + 64) * KiB ))
check_eq "alpha counts both changed regions" "$want" "$(status_get alpha .out_of_sync_bytes)"
kill_node alpha

must_start alpha
n=$(status_get alpha .out_of_sync_bytes)
[ "$n" -ge $((4 * MiB)) ] && pass "the restart marked the active extents dirty ($n bytes)" \
    || fail "after the crash only $n bytes are marked: the active extent did not cover the write"
out=$(ctl alpha rejoin --wait) || fail "rejoin failed: $out"
wait_state alpha synchronized 60 >/dev/null || fail "alpha not synchronized after the rejoin"
stop_pair
check_identical "after a crash with an acknowledged write whose dirty bit was not yet on disk"
finish
