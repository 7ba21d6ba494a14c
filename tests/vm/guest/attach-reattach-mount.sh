#!/bin/sh
# shellcheck shell=sh
# attach-reattach-mount.sh - guest test vm.mirror_attach_reattach_mount: a mount lands after
# `mirrorctl demote` found /dev/nbd0 unused, before its re-attach DISCONNECTs the device (the
# window held open by MIRRORD_FAULTS device-call-delay-ms=5000, docs/reliability.md).
#
# The re-attach claims the device (O_EXCL) before its DISCONNECT: the mount holds it, so the
# claim fails and the device is left as it was, mounted. The demote is answered (the node is
# secondary) saying that /dev/nbd0 is in use and keeps its state. The mounted file system is
# never pulled: every file reads back, the kernel logs no I/O error. Unmounted, SIGTERM
# detaches it; e2fsck is clean and both images are identical.
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
run mount -t ext4 -o ro /dev/nbd0 /mnt
step "/dev/nbd0 mounted read-only inside the demote's re-attach, before its DISCONNECT"
wait "$DEMOTE" || { cat /tmp/demote.out; die "the demote failed"; }
grep -q "/dev/nbd0 is in use (mounted since the check?)" /tmp/demote.out ||
  { cat /tmp/demote.out; die "the demote's reply does not say that /dev/nbd0 stayed in use"; }
[ "$(status_field alpha role)" = secondary ] || die "alpha is $(status_field alpha role) after the demote"
step "demote: $(cat /tmp/demote.out)"
grep -q "^/dev/nbd0 /mnt ext4 ro" /proc/mounts || die "/dev/nbd0 is no longer mounted"
[ "$(cat /sys/block/nbd0/size)" != 0 ] || die "/dev/nbd0 was detached under its mount"
echo 3 >/proc/sys/vm/drop_caches
(cd /mnt && md5sum -c /tmp/sums) >/tmp/sums.out 2>&1 ||
  { cat /tmp/sums.out; dmesg | tail -n 20; die "the mounted file system lost its device"; }
step "the mount kept its device: all $(wc -l </tmp/sums) checksums match"
run umount /mnt
no_block_errors

stop_node alpha
expect_detached /dev/nbd0
stop_node beta
images_equal "after the mount inside the re-attach"
e2fsck -fn "$A_IMG" >/tmp/e2fsck.log 2>&1 || { cat /tmp/e2fsck.log; die "e2fsck -fn a.img found errors"; }
step "e2fsck -fn a.img clean: $(tail -n1 /tmp/e2fsck.log)"
step "attach_reattach_mount: OK"
