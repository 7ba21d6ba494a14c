#!/bin/sh
# shellcheck shell=sh
# mirror-read-error.sh - guest test vm.mirror_read_error: the primary's backing store is a
# device-mapper disk (over a loop device) on which one 4 KiB range goes bad: a table with an
# "error" target there, so the real kernel fails every read (and write) of it with EIO, as a
# disk with a bad sector does. /dev/nbd0 is the primary (nbd-client). Checks:
#   1. mirrored: an O_DIRECT read of /dev/nbd0 across the bad range returns the data written
#      before (answered by the secondary's copy); the kernel logs no I/O error for nbd0; alpha
#      counts the read answered by the peer and says that the rewrite failed (the error target
#      fails writes too: a sector the disk cannot remap); later writes and fsyncs still work;
#   2. the disk healthy again (linear table): the read is served locally (the count stays);
#   3. the secondary stopped, the range bad again: the read fails with EIO (never stale data).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh

export DM_DISABLE_UDEV=1  # dmsetup without udev creates the /dev/mapper nodes itself
DM=alpha-disk
BAD=$((9 * 1024 * 1024))   # the bad 4 KiB, in the middle of the 4 MiB written at 8 MiB
run truncate -s "$VOL_SIZE" /tmp/lower.img
LOOP=$(losetup -f) || die "no free loop device"
run losetup "$LOOP" /tmp/lower.img
SECTORS=$(blockdev --getsz "$LOOP")
run dmsetup create "$DM" --table "0 $SECTORS linear $LOOP 0"
A_IMG=/dev/mapper/$DM
[ -b "$A_IMG" ] || die "$A_IMG is not a block device after dmsetup create"
step "alpha's backing store: $LOOP -> dm $DM ($SECTORS sectors)"

# set_table linear|bad: swap alpha's disk between healthy and one with 8 bad sectors at BAD.
set_table() {
  _s=$((BAD / 512))
  if [ "$1" = linear ]; then
    printf '0 %s linear %s 0\n' "$SECTORS" "$LOOP" >/tmp/table
  else
    printf '0 %s linear %s 0\n%s 8 error\n%s %s linear %s %s\n' "$_s" "$LOOP" "$_s" \
      $((_s + 8)) $((SECTORS - _s - 8)) "$LOOP" $((_s + 8)) >/tmp/table
  fi
  run dmsetup suspend "$DM"
  run dmsetup load "$DM" /tmp/table
  run dmsetup resume "$DM"
  # mirrord reads its backing store through the page cache: what it cached must go, or the
  # bad range would never be read from the "disk"
  echo 3 >/proc/sys/vm/drop_caches
  step "alpha's disk: $1 ($(dmsetup table "$DM" | wc -l) targets)"
}

# read_back WHAT: an O_DIRECT read of /dev/nbd0's 4 MiB at 8 MiB must equal /tmp/pattern.
read_back() {
  dd if=/dev/nbd0 of=/tmp/got bs=1M skip=8 count=4 iflag=direct 2>/tmp/dd.err ||
    { cat /tmp/dd.err; die "$1: the read of /dev/nbd0 failed"; }
  cmp /tmp/pattern /tmp/got || die "$1: /dev/nbd0 returned other data than was written"
  step "$1: /dev/nbd0 returns the 4 MiB written at 8 MiB"
}

pair_start
attach_primary
run dd if=/dev/urandom of=/tmp/pattern bs=1M count=4 2>/dev/null
run dd if=/tmp/pattern of=/dev/nbd0 bs=1M seek=8 oflag=direct conv=fsync 2>/dev/null
images_equal "after writing the pattern"

# 1. the bad range, mirrored
set_table bad
dd if="$A_IMG" of=/dev/null bs=4k skip=$((BAD / 4096)) count=1 iflag=direct 2>/dev/null &&
  die "the dm table does not fail reads at $BAD"
step "alpha's disk fails a direct read at $BAD with EIO (checked below mirrord)"
read_back "mirrored, across the bad range"
[ "$(status_field alpha reads_from_peer)" -ge 1 ] ||
  die "alpha's status: reads_from_peer $(status_field alpha reads_from_peer), expected >= 1"
grep -q "failed: Input/output error; reading the peer's copy" "$PAIR/alpha.log" ||
  die "alpha does not log the read error"
grep -q "from the peer's copy failed: Input/output error" "$PAIR/alpha.log" ||
  die "alpha does not log that the rewrite failed (the error target fails writes too)"
status_field alpha last_error | grep -q "rewriting .* from the peer's copy failed" ||
  die "alpha's last_error: $(status_field alpha last_error)"
step "alpha: $(status_field alpha reads_from_peer) read(s) answered by the peer," \
     "$(status_field alpha read_repairs) rewritten, last_error: $(status_field alpha last_error)"
if dmesg | grep -E "I/O error, dev nbd|I/O error on dev nbd|nbd0: (Receive|Send|Other|Dead)"; then
  die "the kernel saw an I/O error on nbd0"
fi
step "dmesg: no I/O error on nbd0"
# The failed rewrite is that request's alone: writes and flushes go on.
run dd if=/dev/urandom of=/dev/nbd0 bs=64k count=16 seek=512 oflag=direct conv=fsync 2>/dev/null
grep "refusing further writes" "$PAIR/alpha.log" && die "a failed rewrite made alpha refuse writes"
step "writes with fsync through /dev/nbd0 still succeed after the failed rewrite"

# 2. healthy again: served locally
before=$(status_field alpha reads_from_peer)
set_table linear
read_back "the disk healthy again"
[ "$(status_field alpha reads_from_peer)" = "$before" ] ||
  die "the read went to the peer though alpha's disk reads fine"
step "served by alpha's own disk (reads_from_peer still $before)"

# 3. no peer: EIO
stop_node beta
wait_state alpha disconnected 30   # nothing written since: nothing out of sync
set_table bad
if dd if=/dev/nbd0 of=/dev/null bs=4k skip=$((BAD / 4096)) count=1 iflag=direct 2>/tmp/dd.err; then
  die "with beta stopped the read of the bad range succeeded"
fi
grep -q "Input/output error" /tmp/dd.err || { cat /tmp/dd.err; die "expected EIO"; }
step "beta stopped: the read of the bad range fails with EIO"
grep -q "the mirror is not connected" "$PAIR/alpha.log" || die "alpha does not say why"
set_table linear
nbd_disconnect /dev/nbd0
stop_node alpha
run dmsetup remove "$DM"
run losetup -d "$LOOP"
step "mirror_read_error: OK"
