#!/bin/sh
# shellcheck shell=sh
# attach-ioctl.sh - guest test vm.attach_ioctl: `mirrord --export NAME=FILE --device auto`
# with --device-api ioctl, the fallback for kernels without the nbd netlink family
# (NBD_SET_SOCK per connection, NBD_DO_IT in a thread of its own).
#
# mirrord takes the first free device (/dev/nbd0) with 2 connections; data written through it
# lands in the file and reads back; SIGTERM detaches the device (no pid, size 0) and mirrord
# exits 0 (the NBD_DO_IT thread ended).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh
D=/tmp/ioctl
rm -rf "$D"; mkdir -p "$D"
run truncate -s 32M "$D/disk.img"
mirrord --export disk="$D/disk.img" --listen "unix:$D/nbd.sock" --device auto \
  --device-api ioctl --device-connections 2 --ready-file "$D/ready" >"$D/log" 2>&1 &
PID=$!
_i=0
while [ ! -s "$D/ready" ]; do
  kill -0 $PID 2>/dev/null || { cat "$D/log"; die "mirrord exited at start"; }
  _i=$((_i + 1)); [ $_i -le 600 ] || die "no ready file in 30 s"
  usleep 50000
done
grep -q "attached export 'disk' as /dev/nbd0 (ioctl, 2 connections)" "$D/log" ||
  { cat "$D/log"; die "mirrord did not say it attached /dev/nbd0 through the ioctls"; }
_i=0
while [ "$(blockdev --getsize64 /dev/nbd0 2>/dev/null || echo 0)" != 33554432 ]; do
  _i=$((_i + 1)); [ $_i -le 200 ] || die "/dev/nbd0 size $(blockdev --getsize64 /dev/nbd0), expected 32 MiB"
  usleep 50000
done
step "/dev/nbd0 attached through the ioctls: $(blockdev --getsize64 /dev/nbd0) bytes, pid $(cat /sys/block/nbd0/pid)"

run dd if=/dev/urandom of=/tmp/data bs=1M count=4 2>/dev/null
run dd if=/tmp/data of=/dev/nbd0 bs=1M seek=3 oflag=direct conv=notrunc 2>/dev/null
d=$(md5sum </tmp/data | cut -d' ' -f1)
a=$(dd if=/dev/nbd0 bs=1M skip=3 count=4 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
f=$(dd if="$D/disk.img" bs=1M skip=3 count=4 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$a" = "$d" ] || die "/dev/nbd0 reads back $a, wrote $d"
[ "$f" = "$d" ] || die "the exported file holds $f, wrote $d"
step "4 MiB written through /dev/nbd0: the device and the file both read $d"

kill -TERM $PID
_rc=0
wait $PID || _rc=$?
[ "$_rc" = 0 ] || { cat "$D/log"; die "mirrord exited with status $_rc after SIGTERM"; }
expect_detached /dev/nbd0
no_io_errors
step "attach_ioctl: OK"
