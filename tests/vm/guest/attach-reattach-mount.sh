#!/bin/sh
# shellcheck shell=sh
# attach-reattach-mount.sh - guest test vm.mirror_attach_reattach_mount: a mount is tried
# after `mirrorctl demote` found /dev/nbd0 unused, before its re-attach DISCONNECTs the device
# (the window held open by MIRRORD_FAULTS device-call-delay-ms=5000, docs/reliability.md).
#
# The demote claims the device (O_EXCL) from its check through the re-attach's DISCONNECT:
# the mount fails with EBUSY instead of getting a device that refuses its writes and is then
# pulled or left writable. The demote completes: the node is secondary, /dev/nbd0 read-only.
# Mounted read-only then, every file reads back; the kernel logs no I/O error. Then, promoted
# again, a demote that holds the claim while it records the role (MIRRORD_FAULTS
# meta-delay-ms=3000): a mount fails, and SIGTERM meanwhile gives the claim up, detaches the
# unused device and exits 0. e2fsck is clean and both images are identical.
# Environment (GUEST_ENV): VOL_SIZE (default 64M).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh
ALPHA_KEYS='device = "/dev/nbd0"'

faulty_pair_files device-call-delay-ms=5000 "before the demote"
run umount /mnt

ctl alpha demote >/tmp/demote.out 2>&1 &
DEMOTE=$!
wait_log alpha "TEST FAULT: the re-attach of /dev/nbd0 pauses"
# The demote found the device unused; the re-attach has not DISCONNECTed it yet.
if mount -t ext4 -o ro /dev/nbd0 /mnt 2>/tmp/mount.err; then
  die "/dev/nbd0 could be mounted in the middle of its demote"
fi
step "mount inside the demote refused: $(head -n1 /tmp/mount.err)"
wait "$DEMOTE" || { cat /tmp/demote.out; die "the demote failed"; }
[ "$(status_field alpha role)" = secondary ] || die "alpha is $(status_field alpha role) after the demote"
[ "$(blockdev --getro /dev/nbd0)" = 1 ] || die "/dev/nbd0 is writable after the demote: $(cat /tmp/demote.out)"
expect_attached /dev/nbd0 alpha
step "demote: $(cat /tmp/demote.out); /dev/nbd0 re-attached read-only"
echo 3 >/proc/sys/vm/drop_caches
run mount -t ext4 -o ro /dev/nbd0 /mnt
(cd /mnt && md5sum -c /tmp/sums) >/tmp/sums.out 2>&1 || { cat /tmp/sums.out; die "checksums differ"; }
step "mounted read-only after the demote: all $(wc -l </tmp/sums) checksums match"
run umount /mnt
no_block_errors

# A demote that holds the claim while it records the role (metadata commits slowed down by
# MIRRORD_FAULTS meta-delay-ms=3000), a mount then, and SIGTERM: the mount fails; the stop
# gives the claim up, finds the device unused, detaches it and exits 0.
stop_node alpha
export MIRRORD_FAULTS=meta-delay-ms=3000
start_node alpha
unset MIRRORD_FAULTS
ctl alpha promote >/tmp/promote.out 2>&1 || { cat /tmp/promote.out; die "promote alpha failed"; }
[ "$(blockdev --getro /dev/nbd0)" = 0 ] || die "/dev/nbd0 is read-only after the promote"
wait_state alpha synchronized 60
A_MARK=$(wc -l <"$PAIR/alpha.log")
ctl alpha demote >/tmp/demote.out 2>&1 &
DEMOTE=$!
_i=0
until tail -n +$((A_MARK + 1)) "$PAIR/alpha.log" | grep -q "demoting: new writes are refused"; do
  _i=$((_i + 1)); [ $_i -le 600 ] || die "alpha did not start demoting within 30 s"
  usleep 50000
done
if mount -t ext4 -o ro /dev/nbd0 /mnt 2>/tmp/mount.err; then
  die "/dev/nbd0 could be mounted while its demote records the role"
fi
stop_node alpha
wait "$DEMOTE" || true
expect_detached /dev/nbd0
step "a mount during the demote refused, SIGTERM: exit 0, /dev/nbd0 detached; demote: $(cat /tmp/demote.out)"

stop_node beta
images_equal "after the mount inside the re-attach"
e2fsck -fn "$A_IMG" >/tmp/e2fsck.log 2>&1 || { cat /tmp/e2fsck.log; die "e2fsck -fn a.img found errors"; }
step "e2fsck -fn a.img clean: $(tail -n1 /tmp/e2fsck.log)"
step "attach_reattach_mount: OK"
