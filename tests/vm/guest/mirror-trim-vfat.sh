#!/bin/sh
# shellcheck shell=sh
# mirror-trim-vfat.sh - guest test vm.mirror_trim_vfat: the secondary's backing file is on
# vfat, which cannot punch holes (FALLOC_FL_PUNCH_HOLE: EOPNOTSUPP), the primary's on the
# initramfs (tmpfs, which can). ext4 on /dev/nbd0 discards at mkfs and at fstrim; a discard
# punched on the primary's copy only would leave the copies different. Checks: after mkfs,
# writes, a delete and fstrim, a.img and b.img are identical (the primary resynced the first
# discard and then stopped applying them); both logs say why; e2fsck clean on both.
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh

run mkdir -p /vfat
run truncate -s 100M /tmp/vfat.img
run mkdosfs -n BETA /tmp/vfat.img >/dev/null
run mount -t vfat -o loop /tmp/vfat.img /vfat
B_IMG=/vfat/b.img
step "beta's backing file on vfat: $B_IMG"

# vfat has no SEEK_DATA (every file reads as data) and no holes: beta's new file may hold
# anything as far as mirrord can tell, so the new pair's first sync waits for the
# operator's word on the primary (DRBD's first `primary --force`).
pair_config
start_node beta
start_node alpha
wait_log beta "neither node records its copy's history"
step "beta refuses the first sync until the operator's word: $(ctl alpha promote --force)"
wait_state alpha synchronized 120
attach_primary
mkfs_mount
grep -q "cannot punch holes" "$PAIR/alpha.log" ||
  die "alpha does not say that beta's store cannot punch holes (after mkfs.ext4's discard)"
step "alpha: $(grep -m1 -o "the peer's backing store cannot punch holes[^(]*" "$PAIR/alpha.log")"

write_files "trim on a mirror whose secondary cannot punch holes" 8 8 3
run sync
run rm /mnt/random.bin
sed -i "/random.bin/d" /tmp/sums   # remount_verify checks the rest
run sync
TRIMMED=$(fstrim -v /mnt 2>&1) || die "fstrim failed: $TRIMMED"
step "fstrim: $TRIMMED"
run sync
run blockdev --flushbufs /dev/nbd0
wait_state alpha synchronized 60
images_equal "after mkfs's discard, writes, a delete and fstrim"

grep -q "TRIM leaves its data in place" "$PAIR/beta.log" ||
  die "beta does not log that its store cannot punch holes"
# shellcheck disable=SC2016
grep "peer failed\|link to 'beta' lost" "$PAIR/alpha.log" && die "the link dropped on a TRIM"
remount_verify ro
no_io_errors
pair_finish
step "mirror_trim_vfat: OK"
