#!/bin/sh
# shellcheck shell=sh
# attach-force-promote.sh - guest test vm.mirror_attach_force_promote: the primary is lost
# (kill -9 of its mirrord while ext4 on its /dev/nbd0 is mounted) and the secondary is forced
# to take over, with both devices attached by mirrord (alpha /dev/nbd0, beta /dev/nbd1).
#
# A plain promote is refused (the peer is not connected); `promote --force` makes beta primary
# and its /dev/nbd1 writable at once (kernel and status). ext4 on it replays its journal on a
# read-write mount, every file written and synced before the loss is intact, new writes work,
# e2fsck is clean, and the kernel logged no I/O error on /dev/nbd1.
# Environment (GUEST_ENV): VOL_SIZE (default 64M).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh

pair_start_lost_primary
[ "$(blockdev --getro /dev/nbd1)" = 1 ] || die "the secondary's /dev/nbd1 is not read-only"
mkfs_mount
write_files "before the primary was lost" 4 4 2
run sync
kill9_node alpha

if ctl beta promote >/tmp/promote.out 2>&1; then
  die "a plain promote succeeded with the primary lost: $(cat /tmp/promote.out)"
fi
[ "$(blockdev --getro /dev/nbd1)" = 1 ] || die "a refused promote made /dev/nbd1 writable"
step "plain promote refused: $(cut -c1-100 /tmp/promote.out)"
ctl beta promote --force >/tmp/promote.out 2>&1 || { cat /tmp/promote.out; die "promote --force failed"; }
[ "$(status_field beta role)" = primary ] || die "beta is $(status_field beta role) after promote --force"
[ "$(blockdev --getro /dev/nbd1)" = 0 ] || die "/dev/nbd1 is still read-only after promote --force"
[ "$(device_field beta read_only)" = false ] || die "beta status: device read_only $(device_field beta read_only)"
expect_attached /dev/nbd1 beta
step "promote --force: $(cat /tmp/promote.out); /dev/nbd1 is writable (kernel and status)"

mkdir -p /mnt2
echo 3 >/proc/sys/vm/drop_caches
run mount -t ext4 -o noinit_itable /dev/nbd1 /mnt2
grep -q "^/dev/nbd1 /mnt2 ext4 rw" /proc/mounts || { grep nbd /proc/mounts; die "/dev/nbd1 is not mounted read-write"; }
(cd /mnt2 && md5sum -c /tmp/sums) >/tmp/sums.out 2>&1 || { cat /tmp/sums.out; die "checksums differ on /dev/nbd1"; }
step "/dev/nbd1 mounted read-write on the new primary: all $(wc -l </tmp/sums) checksums match"
run dd if=/dev/urandom of=/mnt2/after.bin bs=256k count=4 conv=fsync 2>/dev/null
sum=$(md5sum </mnt2/after.bin)
run umount /mnt2
fsck_clean /dev/nbd1
echo 3 >/proc/sys/vm/drop_caches
run mount -t ext4 -o ro /dev/nbd1 /mnt2
[ "$(md5sum </mnt2/after.bin)" = "$sum" ] || die "the file written after the takeover differs"
run umount /mnt2
if dmesg | grep -iE 'I/O error|EXT4-fs error|Buffer I/O|Aborting journal' | grep nbd1; then
  die "the kernel logged I/O errors on /dev/nbd1 (above)"
fi
step "dmesg: no I/O errors on /dev/nbd1 ($(dmesg | grep -ciE 'I/O error.*nbd0') on the lost primary's /dev/nbd0)"
stop_node beta
expect_detached /dev/nbd1
step "attach_force_promote: OK"
