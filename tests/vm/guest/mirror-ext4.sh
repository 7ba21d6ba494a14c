#!/bin/sh
# shellcheck shell=sh
# mirror-ext4.sh - guest test vm.mirror_ext4: ext4 on /dev/nbd0 served by a mirrored pair
# running in this guest; every write is on both copies once the kernel has its reply.
#
# mkfs.ext4 on the primary's export, mount, write text + RANDOM_MIB MiB of random data, sync,
# blockdev --flushbufs: a.img and b.img identical (while mounted); umount, remount, verify the
# checksums; then umount, disconnect, SIGTERM both daemons, identical again, e2fsck clean.
# Environment (GUEST_ENV): VOL_SIZE (default 64M), RANDOM_MIB (default 8).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh
RANDOM_MIB=${RANDOM_MIB:-8}

pair_start
attach_primary
mkfs_mount

echo "hello from the guest kernel through a mirrored pair" >/mnt/hello.txt || die "write failed"
run dd if=/dev/urandom of=/mnt/random.bin bs=1M count="$RANDOM_MIB" 2>/dev/null
run mkdir /mnt/dir
for i in 1 2 3 4 5 6 7 8; do
  run dd if=/dev/urandom of="/mnt/dir/small$i.bin" bs=4k count=$((i * 3)) 2>/dev/null
done
(cd /mnt && md5sum hello.txt random.bin dir/*) >/tmp/sums || die "md5sum failed"
step "wrote hello.txt, random.bin ($RANDOM_MIB MiB) and 8 small files"
run sync
run blockdev --flushbufs /dev/nbd0
images_equal "mounted, after sync + flushbufs"
wait_state alpha synchronized 5

run umount /mnt
run blockdev --flushbufs /dev/nbd0
echo 3 >/proc/sys/vm/drop_caches
run mount -t ext4 -o ro /dev/nbd0 /mnt
(cd /mnt && md5sum -c /tmp/sums) >/tmp/sums.out 2>&1 || { cat /tmp/sums.out; die "checksums differ after remount"; }
step "remounted read-only: every checksum matches"
no_io_errors
pair_finish
step "mirror_ext4: OK"
