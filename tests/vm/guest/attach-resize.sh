#!/bin/sh
# shellcheck shell=sh
# attach-resize.sh - guest test vm.mirror_attach_resize: grow a live mirrored volume under a
# mounted ext4, the way an operator would: edit `size` in the volume file on both hosts (one
# shared file here), `mirrorctl resize` on the primary, `resize2fs` on the mounted /dev/nbd0.
#
# The primary attached /dev/nbd0 itself; a write loop (conv=fsync) runs on /mnt through the
# resize. Then: /dev/nbd0 and both nodes' status report the new size; resize2fs grows ext4
# online; a file larger than the old file system's free space is written (it can only land in
# the new area); the pair is synchronized with no full resync; every file reads back after a
# remount; e2fsck -fn clean; both images identical and of the new size. Restarted with the new
# configuration, both daemons come back synchronized without a resync, and mirrord attaches
# /dev/nbd0 at the new size.
# STALE=1 (vm.mirror_attach_resize_stale): the secondary's backing was grown beforehand and
# holds old bytes past the old end (a reused LV): the new area is then not known to be equal
# on both copies, so the primary resyncs it, while ext4 grows into it; the copies must still
# end identical.
# Environment (GUEST_ENV): FROM_MIB (default 32), GROW_MIB (default 80), FILES (default 16).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh
FILES=${FILES:-16}
VOL_SIZE=${FROM_MIB:-32}M
GROW_MIB=${GROW_MIB:-80}
NEW_SIZE=$((GROW_MIB * 1048576))
ALPHA_KEYS='device = "/dev/nbd0"'

attached_load_start "$FILES" 4
OLD_SIZE=$(blockdev --getsize64 /dev/nbd0)
[ "$OLD_SIZE" -lt "$NEW_SIZE" ] || die "VOL_SIZE $OLD_SIZE is not below ${GROW_MIB}M"
FREE_KIB=$(df -k /mnt | awk 'NR == 2 { print $4 }')

# log_since NODE MARK: the lines NODE logged after MARK (a line count taken earlier).
log_since() { tail -n +$(($2 + 1)) "$PAIR/$1.log"; }
A_MARK=$(wc -l <"$PAIR/alpha.log") B_MARK=$(wc -l <"$PAIR/beta.log")

if [ "${STALE:-0}" = 1 ]; then
  run dd if=/dev/urandom of="$B_IMG" bs=1M seek=$((OLD_SIZE / 1048576)) count=$((GROW_MIB / 4)) \
    conv=notrunc 2>/dev/null
  step "b.img grown to $(stat -c %s "$B_IMG") bytes beforehand, stale data past the old end"
  EXPECT="the new area is resynced to 'beta'"
else
  EXPECT="the new area reads as zeros on both nodes: nothing to copy"
fi

# Both hosts' volume files say the new size; the primary grows both nodes and /dev/nbd0.
run sed -i "s/^size = .*/size = \"${GROW_MIB}M\"/" "$PAIR/vol.toml"
ctl alpha resize >/tmp/resize.out 2>&1 || { cat /tmp/resize.out; die "mirrorctl resize failed"; }
step "mirrorctl resize: $(cat /tmp/resize.out)"
grep -qF "$EXPECT" /tmp/resize.out || die "mirrorctl resize did not say: $EXPECT"
[ "$(blockdev --getsize64 /dev/nbd0)" = "$NEW_SIZE" ] ||
  die "/dev/nbd0 is $(blockdev --getsize64 /dev/nbd0) bytes after the resize, expected $NEW_SIZE"
for n in alpha beta; do
  [ "$(status_field $n size)" = "$NEW_SIZE" ] || die "$n status: size $(status_field $n size), expected $NEW_SIZE"
done
step "/dev/nbd0 and both nodes' status: $OLD_SIZE -> $NEW_SIZE bytes"

run resize2fs /dev/nbd0 >/tmp/resize2fs.out 2>&1
NEW_FREE_KIB=$(df -k /mnt | awk 'NR == 2 { print $4 }')
step "resize2fs online: free $FREE_KIB KiB -> $NEW_FREE_KIB KiB"
wait "$LOAD" || die "the writer saw an error across the resize: $(cat /tmp/load.err 2>/dev/null)"
step "all $FILES files written with conv=fsync across the resize, no error"

# More than the old file system could hold: part of it must land past the old end.
BIG_MIB=$((FREE_KIB / 1024 + 8))
run dd if=/dev/urandom of=/tmp/big.src bs=1M count="$BIG_MIB" 2>/dev/null
run dd if=/tmp/big.src of=/mnt/big.bin bs=1M conv=fsync 2>/dev/null
step "wrote big.bin, $BIG_MIB MiB (the old file system had $FREE_KIB KiB free)"
run sync
wait_state alpha synchronized 120
{ log_since alpha "$A_MARK"; log_since beta "$B_MARK"; } | grep -i "full resync" &&
  die "a node logged a full resync after the resize"

run umount /mnt
echo 3 >/proc/sys/vm/drop_caches
run mount -t ext4 -o ro /dev/nbd0 /mnt
i=1
while [ $i -le "$FILES" ]; do
  cmp "/tmp/src$i" "/mnt/f$i" || die "f$i differs from what was written"
  i=$((i + 1))
done
cmp /tmp/big.src /mnt/big.bin || die "big.bin differs from what was written"
step "remounted: all $FILES files and big.bin equal to their sources"
run umount /mnt
e2fsck -fn /dev/nbd0 >/tmp/e2fsck.log 2>&1 || { cat /tmp/e2fsck.log; die "e2fsck -fn /dev/nbd0 found errors"; }
step "e2fsck -fn /dev/nbd0 clean: $(tail -n1 /tmp/e2fsck.log)"
no_io_errors

stop_node alpha
expect_detached /dev/nbd0
stop_node beta
images_equal "after shutdown"
for img in "$A_IMG" "$B_IMG"; do
  [ "$(stat -c %s "$img")" = "$NEW_SIZE" ] || die "$img is $(stat -c %s "$img") bytes, expected $NEW_SIZE"
done
step "both images are $NEW_SIZE bytes"

# A restart with the new configuration: the metadata matches, nothing to resync.
A_MARK=$(wc -l <"$PAIR/alpha.log") B_MARK=$(wc -l <"$PAIR/beta.log")
start_node beta
start_node alpha
wait_state alpha synchronized 60
[ "$(status_field alpha out_of_sync_bytes)" = 0 ] || die "out of sync after the restart"
{ log_since alpha "$A_MARK"; log_since beta "$B_MARK"; } | grep -i "full resync\|foreign" &&
  die "the restart did a full resync"
expect_attached /dev/nbd0 alpha
[ "$(blockdev --getsize64 /dev/nbd0)" = "$NEW_SIZE" ] || die "re-attached at $(blockdev --getsize64 /dev/nbd0) bytes"
run mount -t ext4 -o ro /dev/nbd0 /mnt
cmp /tmp/big.src /mnt/big.bin || die "big.bin differs after the restart"
run umount /mnt
step "restarted: synchronized without a resync, /dev/nbd0 attached at $NEW_SIZE bytes, big.bin intact"

# An offline grow under a mounted file system: SIGTERM leaves the mounted /dev/nbd0 attached,
# both hosts raise size and grow their files, the daemons start again: alpha re-attaches the
# device with fresh sockets, then gives it the size it serves now.
run mount -t ext4 /dev/nbd0 /mnt
stop_node alpha
stop_node beta
[ "$(blockdev --getsize64 /dev/nbd0)" = "$NEW_SIZE" ] || die "the mounted /dev/nbd0 was not left attached"
GROW2_MIB=$((GROW_MIB + 16))
SIZE2=$((GROW2_MIB * 1048576))
run sed -i "s/^size = .*/size = \"${GROW2_MIB}M\"/" "$PAIR/vol.toml"
run truncate -s "$SIZE2" "$A_IMG" "$B_IMG"
start_node beta
start_node alpha
wait_state alpha synchronized 60
grep -q "re-attached export 'db' to /dev/nbd0" "$PAIR/alpha.log" || die "alpha did not re-attach /dev/nbd0"
_i=0
while [ "$(blockdev --getsize64 /dev/nbd0)" != "$SIZE2" ]; do
  _i=$((_i + 1)); [ $_i -le 100 ] || die "/dev/nbd0 kept $(blockdev --getsize64 /dev/nbd0) bytes after the re-attach"
  usleep 50000
done
run resize2fs /dev/nbd0 >/tmp/resize2fs.out 2>&1
run dd if=/dev/urandom of=/mnt/after.bin bs=1M count=4 conv=fsync 2>/dev/null
run umount /mnt
e2fsck -fn /dev/nbd0 >/tmp/e2fsck.log 2>&1 || { cat /tmp/e2fsck.log; die "e2fsck -fn /dev/nbd0 found errors"; }
# (the stopped daemon's closed sockets are logged as "Receive control failed": expected)
if dmesg | grep -iE 'I/O error|blk_update_request|EXT4-fs error|Buffer I/O'; then
  die "the kernel logged I/O errors (above)"
fi
step "grown offline while mounted: re-attached at $SIZE2 bytes, resize2fs, written, e2fsck clean"
wait_state alpha synchronized 60
stop_node alpha
stop_node beta
images_equal "after the offline grow"
step "attach_resize: OK"
