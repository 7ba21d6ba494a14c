#!/bin/bash
# resize-retry: the primary's metadata cannot grow (its filesystem is full):
# beta grew, alpha could not. The command says so, alpha keeps serving the
# old size, and once there is room a second `mirrorctl resize` finishes the
# job (the map that did grow the first time is not grown twice, which used
# to fail every retry with "the new size must be larger"). The refusal names
# the full filesystem, the file and ENOSPC. alpha's metadata lives on a
# small tmpfs (needs root and mount).
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "resize-retry needs mirrorctl"
[ "$(id -u)" = 0 ] || skip "resize-retry mounts a tmpfs: needs root"
META_DIR=$T/alpha-meta
mkdir -p "$META_DIR"
# Room for the maps of 64 MiB (4 blocks each) and the backup map grown to 4 GiB (6 blocks),
# not for both grown.
mount -t tmpfs -o size=40k tmpfs "$META_DIR" || skip "cannot mount a tmpfs"
trap 'umount "$META_DIR" 2>/dev/null' EXIT
NODE_META[alpha]=$META_DIR/alpha.meta

start_synchronized_pair
nbd_fill "$(nbd_unix_uri alpha)" $((8 * MiB)) $MiB 21 || die "writing to alpha failed"
VOL_SIZE=4G
write_configs
# What the user reads: which file, that its filesystem is full, what to do,
# and ENOSPC (it said only "write metadata PATH" and EIO before).
refused_ctl "alpha's metadata cannot grow (beta did)" alpha \
    "'beta' grew, but this node could not: metadata ${META_DIR}/alpha.meta(.backup)?: no space left on its filesystem: the grown maps need [0-9]+ bytes; free space there.*run resize again.*\\(ENOSPC\\)$" resize
check_eq "alpha still serves 64M" $((64 * MiB)) "$(status_get alpha .size)"
nbd_fill "$(nbd_unix_uri alpha)" $((9 * MiB)) $MiB 22 && pass "writes go on at the old size" \
    || fail "a write failed after the failed resize"
mount -o remount,size=2m "$META_DIR" || die "cannot enlarge the tmpfs"
out=$(ctl alpha resize); rc=$?
if [ $rc -eq 0 ] && grep -q "resized from $((64 * MiB)) bytes to $((4 << 30)) bytes" <<<"$out"; then
    pass "with room, resize again finishes: $out"
else
    fail "the retry failed: exit $rc: $out"
fi
check_eq "alpha serves 4G" $((4 << 30)) "$(status_get alpha .size)"
check_eq "beta serves 4G" $((4 << 30)) "$(status_get beta .size)"
wait_state alpha synchronized 60 >/dev/null || fail "not synchronized after the retry"
nbd_fill "$(nbd_unix_uri alpha)" $((3 << 30)) $MiB 23 && pass "a write far in the new area succeeds" \
    || fail "writing into the new area failed"
stop_pair
check_identical "after the retried resize"
pair_finish
