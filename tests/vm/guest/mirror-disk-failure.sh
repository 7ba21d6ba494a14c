#!/bin/sh
# shellcheck shell=sh
# mirror-disk-failure.sh - guest test vm.mirror_disk_failure: the primary's whole disk goes
# away under a mounted ext4 with writes running (on-io-error = "detach", the default; DRBD's).
# alpha's backing store is a device-mapper disk (linear, over a loop device) whose table is
# replaced by one `error` target: every read, write and flush of it fails with EIO, as with a
# disk that died or was pulled. alpha's metadata stays on another device (the guest's RAM),
# as docs/configuration.md asks for riding out a whole-disk failure. /dev/nbd0 is the primary
# (nbd-client). What a user checks:
#   1. no I/O error in the guest: the writer's fsyncs all succeed, the kernel logs no I/O or
#      ext4 error for nbd0 (only for the dm disk below alpha);
#   2. alpha says it is diskless (status "disk" and "state"), beta that its copy is the only
#      current one (peer_disk_failed);
#   3. every file, old and new, reads back with the right checksum with the page cache
#      dropped: the reads come from beta's copy (alpha's disk fails every read); unmounted,
#      e2fsck -fn /dev/nbd0 (through alpha, served by beta) is clean;
#   4. the documented way back: alpha stopped (exit 0: its dead disk lost nothing), beta
#      promoted (no --force), alpha started on a replaced disk with --discard-my-data takes a
#      full copy; both copies identical, every file on alpha's new disk.
# ON_IO_ERROR=pass-on (through MIRROR_GUEST_ENV) writes on-io-error = "pass-on" into the
# volume file: the old behaviour, under which step 1 must fail (the fsync gets EIO).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh

export DM_DISABLE_UDEV=1  # dmsetup without udev creates the /dev/mapper nodes itself
DM=alpha-disk
# Both disks start zeroed: no initial copy (it is not what this case tests).
# shellcheck disable=SC2034  # read by pair_start (mirror-lib.sh)
VOL_KEYS='initial-sync = "skip"'
[ -n "${ON_IO_ERROR:-}" ] && VOL_KEYS="$VOL_KEYS
on-io-error = \"$ON_IO_ERROR\""

# new_disk FILE: a zeroed VOL_SIZE FILE on a fresh loop device (its name in LOOP).
new_disk() {
  run truncate -s "$VOL_SIZE" "$1"
  LOOP=$(losetup -f) || die "no free loop device"
  run losetup "$LOOP" "$1"
}

# set_table TABLE: replace alpha's whole dm table (suspend, load, resume).
set_table() {
  echo "$1" >/tmp/table
  run dmsetup suspend "$DM"
  run dmsetup load "$DM" /tmp/table
  run dmsetup resume "$DM"
  step "alpha's disk: $(dmsetup table "$DM")"
}

# files_intact DIR WHAT: under DIR, the files written before the failure match /tmp/sums and
# the writer's first $written files their sources.
files_intact() {
  (cd "$1" && md5sum -c /tmp/sums) >/tmp/sums.out 2>&1 ||
    { cat /tmp/sums.out; die "$2: a file written before the failure reads back wrong"; }
  _i=1
  while [ $_i -le "$written" ]; do
    cmp "/tmp/src$_i" "$1/f$_i" || die "$2: f$_i differs from what was written"
    _i=$((_i + 1))
  done
  step "$2: all $(wc -l </tmp/sums) old files and $written new ones read back right"
}

new_disk /tmp/lower.img
SECTORS=$(blockdev --getsz "$LOOP")
run dmsetup create "$DM" --table "0 $SECTORS linear $LOOP 0"
A_IMG=/dev/mapper/$DM
[ -b "$A_IMG" ] || die "$A_IMG is not a block device after dmsetup create"
step "alpha's backing store: $LOOP -> dm $DM ($SECTORS sectors)"

pair_start
attach_primary
mkfs_mount
write_files "written before alpha's disk died" 8 4 2
run sync

# The writer (load_start): /mnt/fI = /tmp/srcI (256 KiB each), each with fsync.
NEW=40
i=1
while [ $i -le $NEW ]; do
  dd if=/dev/urandom of="/tmp/src$i" bs=64k count=4 2>/dev/null || die "cannot prepare /tmp/src$i"
  i=$((i + 1))
done
load_start $NEW
load_wait 3
# 1. alpha's disk dies under the writer.
set_table "0 $SECTORS error"
dead_at=$(cat /tmp/load.progress)
dd if="$A_IMG" of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null &&
  die "the dm table does not fail reads of alpha's disk"
step "alpha's disk fails a direct read with EIO (checked below mirrord)"
load_wait $((dead_at + 6))   # each of them written and fsynced after the disk died
touch /tmp/load.stop
wait "$LOAD" || die "the writer saw an error: $(tail -n 3 /tmp/load.err)"
written=$(cat /tmp/load.progress)
step "the writer wrote $written files with fsync, $((written - dead_at)) after the disk died: no error"
run sync
if dmesg | grep -iE 'I/O error.*nbd|nbd[0-9]+.*I/O error|EXT4-fs (error|warning)|Aborting journal|nbd[0-9]+: (Receive|Send|Connection|Dead|Other)'; then
  die "the kernel logged an I/O or ext4 error for nbd0 (above)"
fi
step "dmesg: no I/O or ext4 error for nbd0 ($(dmesg | grep -ciE 'error.*dm-0|dm-0.*error') lines for alpha's dm disk)"

# 2. status
grep -q "detaching this disk (on-io-error = detach)" "$PAIR/alpha.log" ||
  die "alpha does not log that it detaches its disk"
[ "$(status_field alpha disk)" = diskless ] || die "alpha's status: disk '$(status_field alpha disk)'"
[ "$(status_field alpha state)" = diskless ] || die "alpha's status: state '$(status_field alpha state)'"
[ "$(status_field beta peer_disk_failed)" = true ] ||
  die "beta's status: peer_disk_failed '$(status_field beta peer_disk_failed)'"
step "alpha: disk diskless, state diskless, last_error: $(status_field alpha last_error)"
ctl alpha status | grep "disk" | head -n 3
step "beta: peer_disk_failed true"

# 3. Every file back from beta's copy, with the page cache dropped.
echo 3 >/proc/sys/vm/drop_caches
files_intact /mnt "the page cache dropped, read from beta's copy"
run umount /mnt
run blockdev --flushbufs /dev/nbd0
fsck_clean /dev/nbd0
dd if="$A_IMG" of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null &&
  die "alpha's disk reads again: the reads above may not have come from beta"

# 4. The way back: promote beta, alpha on a replaced disk with --discard-my-data.
nbd_disconnect /dev/nbd0
stop_node alpha
ctl beta promote >/tmp/promote.out 2>&1 || { cat /tmp/promote.out; die "beta's promote (no --force) failed"; }
step "beta promoted: $(cat /tmp/promote.out)"
old_loop=$LOOP
new_disk /tmp/replaced.img
set_table "0 $SECTORS linear $LOOP 0"
run losetup -d "$old_loop"
rm -f /tmp/lower.img  # the dead disk: guest RAM for the new one
start_mirrord "$PAIR" alpha --config "$PAIR/vol.toml" --node alpha --discard-my-data
wait_state beta synchronized 120
[ "$(status_field beta role)" = primary ] || die "beta's role: $(status_field beta role)"
[ "$(status_field beta peer_disk_failed)" = false ] || die "beta still says its peer's disk failed"
stop_node alpha
stop_node beta
images_equal "alpha's new disk after its full copy"
run mount -t ext4 -o ro,noload "$A_IMG" /mnt
files_intact /mnt "alpha's new disk"
run umount /mnt
run dmsetup remove "$DM"
run losetup -d "$LOOP"
step "mirror_disk_failure: OK"
