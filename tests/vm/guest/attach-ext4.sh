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

echo "written through a device mirrord attached itself" >/mnt/hello.txt || die "write failed"
run dd if=/dev/urandom of=/mnt/random.bin bs=1M count="$RANDOM_MIB" 2>/dev/null
run mkdir /mnt/dir
for i in 1 2 3 4 5 6; do
  run dd if=/dev/urandom of="/mnt/dir/small$i.bin" bs=4k count=$((i * 5)) 2>/dev/null
done
(cd /mnt && md5sum hello.txt random.bin dir/*) >/tmp/sums || die "md5sum failed"
step "wrote hello.txt, random.bin ($RANDOM_MIB MiB) and 6 small files"
run sync
run blockdev --flushbufs /dev/nbd0
images_equal "mounted, after sync + flushbufs"

run umount /mnt
echo 3 >/proc/sys/vm/drop_caches
run mount -t ext4 -o ro /dev/nbd0 /mnt
(cd /mnt && md5sum -c /tmp/sums) >/tmp/sums.out 2>&1 || { cat /tmp/sums.out; die "checksums differ after remount"; }
step "remounted read-only: every checksum matches"
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
