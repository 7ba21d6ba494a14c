#!/bin/sh
# shellcheck shell=sh
# attach-failover.sh - guest test vm.mirror_attach_failover: planned failover and back with
# both nodes' devices attached by mirrord (alpha /dev/nbd0, beta /dev/nbd1), as a DRBD user
# does it: the device follows the role.
#
# ext4 on alpha's /dev/nbd0 with files. `mirrorctl demote` while it is mounted is refused,
# naming the device, and changes nothing (still primary, the mounted file system still
# writes without an error). Unmounted: demote, then /dev/nbd0 is read-only in the kernel and
# in status; promote beta: /dev/nbd1 is writable at once, mounts read-write, has every file,
# takes new writes which reach alpha. Then back, with alpha's device mounted read-only
# across the promote: it stays read-only, the reply says so; unmounted, a second promote
# makes it writable, and it has beta's files. At the end e2fsck is clean, both images are identical, dmesg has no I/O error.
# Environment (GUEST_ENV): VOL_SIZE (default 64M).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh
ALPHA_KEYS='device = "/dev/nbd0"'
BETA_KEYS='device = "/dev/nbd1"'

# expect_ro DEV NODE 0|1: the kernel's read-only state of DEV and what NODE's status says.
expect_ro() {
  _want=false; [ "$3" = 1 ] && _want=true
  [ "$(blockdev --getro "$1")" = "$3" ] || die "$1: blockdev --getro $(blockdev --getro "$1"), expected $3"
  [ "$(device_field "$2" read_only)" = "$_want" ] ||
    die "$2 status: device read_only $(device_field "$2" read_only), the kernel says $3"
}

# switch_to OLD OLD_DEV NEW NEW_DEV: demote OLD (its device unmounted), promote NEW.
switch_to() {
  ctl "$1" demote >/tmp/demote.out 2>&1 || { cat /tmp/demote.out; die "demote $1 failed"; }
  [ "$(status_field "$1" role)" = secondary ] || die "$1 is $(status_field "$1" role) after demote"
  expect_ro "$2" "$1" 1
  step "demote $1: $(cat /tmp/demote.out); $2 is read-only (kernel and status)"
  ctl "$3" promote >/tmp/promote.out 2>&1 || { cat /tmp/promote.out; die "promote $3 failed"; }
  expect_ro "$4" "$3" 0
  expect_attached "$4" "$3"
  step "promote $3: $(cat /tmp/promote.out); $4 is writable (kernel and status)"
  wait_state "$3" synchronized 60
}

# mount_check DEV: DEV mounted read-write at /mnt, every checksum of /tmp/sums matches.
mount_check() {
  echo 3 >/proc/sys/vm/drop_caches
  run mount -t ext4 -o noinit_itable "$1" /mnt
  grep -q "^$1 /mnt ext4 rw" /proc/mounts || { grep nbd /proc/mounts; die "$1 is not mounted read-write"; }
  (cd /mnt && md5sum -c /tmp/sums) >/tmp/sums.out 2>&1 ||
    { cat /tmp/sums.out; die "checksums differ on $1"; }
  step "$1 mounted read-write: all $(wc -l </tmp/sums) checksums match"
}

# add_file NAME: a new 1 MiB file on /mnt, fsync'ed, its checksum added to /tmp/sums.
add_file() {
  run dd if=/dev/urandom of="/mnt/$1" bs=256k count=4 conv=fsync 2>/dev/null
  (cd /mnt && md5sum "$1") >>/tmp/sums || die "md5sum failed"
}

pair_start
expect_attached /dev/nbd0 alpha
expect_attached /dev/nbd1 beta
expect_ro /dev/nbd0 alpha 0
expect_ro /dev/nbd1 beta 1
mkfs_mount
write_files "before the failover" 4 4 2
run sync

# Demote with the file system mounted: refused, nothing changes.
if ctl alpha demote >/tmp/demote.out 2>&1; then
  die "demote succeeded while /dev/nbd0 is mounted: $(cat /tmp/demote.out)"
fi
grep -q "unmount /dev/nbd0 first" /tmp/demote.out || { cat /tmp/demote.out; die "the refusal does not name the device"; }
[ "$(status_field alpha role)" = primary ] || die "alpha is $(status_field alpha role) after a refused demote"
expect_ro /dev/nbd0 alpha 0
add_file after-refused-demote.bin
step "demote refused while mounted: $(cat /tmp/demote.out); still primary, the mount still writes"

run umount /mnt
switch_to alpha /dev/nbd0 beta /dev/nbd1
# The old primary's device refuses writes in the kernel now (the only I/O error the test
# makes on purpose: the kernel's log is checked before and cleared after it).
no_io_errors
if dd if=/dev/zero of=/dev/nbd0 bs=4k count=1 oflag=direct conv=notrunc 2>/tmp/ro.err; then
  die "a write to the demoted /dev/nbd0 succeeded"
fi
step "write to the demoted /dev/nbd0 refused: $(head -n1 /tmp/ro.err)"
dmesg -c >/dev/null

mount_check /dev/nbd1
add_file on-beta.bin
run umount /mnt
fsck_clean /dev/nbd1
wait_state beta synchronized 60

# And back, with alpha's (secondary, read-only) device mounted read-only across the promote:
# it cannot be re-attached, so it stays read-only and the reply says how to get it writable.
mkdir -p /mnt2
run mount -t ext4 -o ro /dev/nbd0 /mnt2
ctl beta demote >/tmp/demote.out 2>&1 || { cat /tmp/demote.out; die "demote beta failed"; }
expect_ro /dev/nbd1 beta 1
ctl alpha promote >/tmp/promote.out 2>&1 || { cat /tmp/promote.out; die "promote alpha failed"; }
grep -q "/dev/nbd0 is in use .*stays read-only; unmount it and run .mirrorctl promote. again" /tmp/promote.out ||
  { cat /tmp/promote.out; die "the promote reply does not say that the mounted /dev/nbd0 stays read-only"; }
[ "$(status_field alpha role)" = primary ] || die "alpha is $(status_field alpha role) after promote"
expect_ro /dev/nbd0 alpha 1
step "promote alpha with /dev/nbd0 mounted read-only: $(cat /tmp/promote.out)"
if ctl alpha promote >/tmp/promote.out 2>&1; then
  die "promote again while /dev/nbd0 is still mounted succeeded: $(cat /tmp/promote.out)"
fi
expect_ro /dev/nbd0 alpha 1
step "promote again while still mounted: $(cat /tmp/promote.out)"
run umount /mnt2
ctl alpha promote >/tmp/promote.out 2>&1 || { cat /tmp/promote.out; die "the second promote failed"; }
grep -q "already primary; /dev/nbd0 is writable now" /tmp/promote.out ||
  { cat /tmp/promote.out; die "the second promote does not say that /dev/nbd0 is writable now"; }
expect_ro /dev/nbd0 alpha 0
expect_attached /dev/nbd0 alpha
step "unmounted, promote again: $(cat /tmp/promote.out); /dev/nbd0 is writable (kernel and status)"
wait_state alpha synchronized 60
mount_check /dev/nbd0
add_file back-on-alpha.bin
run umount /mnt
wait_state alpha synchronized 60
fsck_clean /dev/nbd0
no_io_errors

stop_node alpha
expect_detached /dev/nbd0
stop_node beta
expect_detached /dev/nbd1
images_equal "after failover and back"
step "attach_failover: OK"
