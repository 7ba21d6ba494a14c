#!/bin/sh
# shellcheck shell=sh
# attach-ext4.sh - guest test vm.attach_ext4: mirrord attaches /dev/nbd0 itself (node key
# device = "/dev/nbd0", netlink), no nbd-client anywhere.
#
# The kernel shows our backend identifier; ext4 on /dev/nbd0, files written, sync: both
# backing images identical while mounted; remount, checksums match; SIGTERM the primary:
# /dev/nbd0 is detached (no pid, size 0) and mirrord exits 0; both images identical and
# e2fsck clean.
# Environment (GUEST_ENV): VOL_SIZE (default 64M), RANDOM_MIB (default 8).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh
RANDOM_MIB=${RANDOM_MIB:-8}
ALPHA_KEYS='device = "/dev/nbd0"'

pair_start
expect_attached /dev/nbd0 alpha
mkfs_mount

write_files "written through a device mirrord attached itself" "$RANDOM_MIB" 6 5
run sync
run blockdev --flushbufs /dev/nbd0
images_equal "mounted, after sync + flushbufs"

remount_verify ro
run umount /mnt
no_io_errors

# A clean stop detaches: the kernel's DISC drains the connections, mirrord exits 0.
stop_node alpha
expect_detached /dev/nbd0
grep -q "detached /dev/nbd0" "$PAIR/alpha.log" || die "alpha did not log the detach"
stop_node beta
images_equal "after shutdown"
for img in "$A_IMG" "$B_IMG"; do
  e2fsck -fn "$img" >/tmp/e2fsck.log 2>&1 || { cat /tmp/e2fsck.log; die "e2fsck -fn $img found errors"; }
done
step "e2fsck -fn clean on both images: $(tail -n1 /tmp/e2fsck.log)"
step "attach_ext4: OK"
