#!/bin/sh
# shellcheck shell=sh
# mirror-ext4.sh - guest test vm.mirror_ext4: ext4 on /dev/nbd0 served by a mirrored pair
# running in this guest; every write is on both copies once the kernel has its reply.
#
# mkfs.ext4 on the primary's export, mount, write text + RANDOM_MIB MiB of random data, sync,
# blockdev --flushbufs: a.img and b.img identical (while mounted); umount, remount, verify the
# checksums (an online verify runs while ext4 writes 8 MiB: 0 out of sync); then umount,
# disconnect, SIGTERM both daemons, identical again, e2fsck clean.
# Environment (GUEST_ENV): VOL_SIZE (default 64M), RANDOM_MIB (default 8).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh
RANDOM_MIB=${RANDOM_MIB:-8}

pair_start
attach_primary
mkfs_mount

write_files "hello from the guest kernel through a mirrored pair" "$RANDOM_MIB" 8 3
run sync
run blockdev --flushbufs /dev/nbd0
images_equal "mounted, after sync + flushbufs"
wait_state alpha synchronized 5

# Online verify (mirrorctl verify) while the kernel writes through ext4: writes to the chunk
# being compared wait for it, so a write in flight is never a difference; 0 out of sync.
dd if=/dev/urandom of=/mnt/during-verify bs=1M count=8 conv=fsync 2>/tmp/dd.err &
DD=$!
VOUT=$(ctl alpha verify --wait) || die "verify --wait failed: $VOUT"
wait "$DD" || die "the write through ext4 during verify failed: $(cat /tmp/dd.err)"
printf '%s\n' "$VOUT" | grep -Eq '"out_of_sync_bytes": 0([^0-9]|$)' ||
  die "verify found differences: $VOUT"
printf '%s\n' "$VOUT" | grep -Eq '"result": "completed"' || die "verify did not complete: $VOUT"
step "verify with ext4 mounted and writing: $(printf '%s\n' "$VOUT" | grep -o '"done_bytes": [0-9]*'), 0 out of sync"
run sync
run blockdev --flushbufs /dev/nbd0
images_equal "after the verify and the write during it"

remount_verify ro
no_io_errors
pair_finish
step "mirror_ext4: OK"
