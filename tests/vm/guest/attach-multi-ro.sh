#!/bin/sh
# shellcheck shell=sh
# attach-multi-ro.sh - guest test vm.attach_multi_ro: the primary attaches /dev/nbd0 with 4
# connections (booted with 2 CPUs by kernel-mirror.sh, so that 2 of them carry I/O), the
# secondary attaches its copy as /dev/nbd1, read-only.
#
# Data written through /dev/nbd0 (O_DIRECT, so it is on both copies once dd returns) reads
# back identical through /dev/nbd1; writes to /dev/nbd1 are refused (EPERM/EROFS) and change
# nothing; SIGTERM detaches both devices.
# Environment (GUEST_ENV): VOL_SIZE (default 64M).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh
ALPHA_KEYS='device = "/dev/nbd0"
device-connections = 4'
BETA_KEYS='device = "/dev/nbd1"'

pair_start
expect_attached /dev/nbd0 alpha
expect_attached /dev/nbd1 beta
# blk-mq gives the device one hardware queue per connection, at most one per CPU.
queues=$(ls /sys/block/nbd0/mq | wc -l)
cpus=$(grep -c ^processor /proc/cpuinfo)
want=$((cpus < 4 ? cpus : 4))
[ "$queues" = "$want" ] || die "/dev/nbd0 has $queues hardware queues, expected $want ($cpus CPUs, 4 connections)"
# The kernel holds its ends of the socketpairs (mirrord closed its copies after handing them
# over): 4 pairs for nbd0 and 1 for nbd1 are 10 connected anonymous stream sockets, and
# nothing else in this guest makes such sockets.
pairs=$(awk 'NR > 1 && $5 == "0001" && $6 == "03" && NF == 7' /proc/net/unix | wc -l)
[ "$pairs" = 10 ] || { cat /proc/net/unix; die "$pairs connected anonymous stream sockets, expected 10"; }
[ "$(device_field alpha connections)" = 4 ] || die "alpha status: $(device_field alpha connections) connections"
step "/dev/nbd0: 4 connections (kernel holds 5 socketpair ends), $queues hardware queue(s) on $cpus CPU(s)"
[ "$(blockdev --getro /dev/nbd1)" = 1 ] || die "/dev/nbd1 is not read-only"
[ "$(blockdev --getro /dev/nbd0)" = 0 ] || die "/dev/nbd0 is read-only"
[ "$(device_field beta read_only)" = true ] || die "beta status does not say read-only"
step "/dev/nbd1 (the secondary) is read-only, /dev/nbd0 is not"

# Parallel writers through the 4 connections.
run dd if=/dev/urandom of=/tmp/data bs=1M count=8 2>/dev/null
writers=
for k in 0 1 2 3; do
  dd if=/tmp/data of=/dev/nbd0 bs=256k count=8 skip=$((k * 8)) seek=$((k * 8)) \
     oflag=direct conv=notrunc 2>/tmp/dd$k.err &
  writers="$writers $!"
done
for w in $writers; do  # not a bare `wait`: the daemons are this shell's jobs too
  wait "$w" || die "a writer failed: $(cat /tmp/dd*.err)"
done
run blockdev --flushbufs /dev/nbd0
wait_state alpha synchronized 30
echo 3 >/proc/sys/vm/drop_caches
run blockdev --flushbufs /dev/nbd1
a=$(dd if=/dev/nbd0 bs=1M count=8 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
b=$(dd if=/dev/nbd1 bs=1M count=8 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
d=$(md5sum </tmp/data | cut -d' ' -f1)
[ "$a" = "$d" ] || die "/dev/nbd0 reads back $a, wrote $d"
[ "$b" = "$d" ] || die "/dev/nbd1 (secondary) reads $b, the primary wrote $d"
step "8 MiB written by 4 parallel writers: /dev/nbd0 and the secondary's /dev/nbd1 both read $d"

if dd if=/dev/zero of=/dev/nbd1 bs=4k count=1 oflag=direct conv=notrunc 2>/tmp/ro.err; then
  die "a write to the read-only /dev/nbd1 succeeded"
fi
grep -qiE 'Operation not permitted|Read-only file system' /tmp/ro.err ||
  { cat /tmp/ro.err; die "the refused write did not fail with EPERM or EROFS"; }
step "write to /dev/nbd1 refused: $(head -n1 /tmp/ro.err)"
b=$(dd if=/dev/nbd1 bs=1M count=8 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$b" = "$d" ] || die "/dev/nbd1 changed after a refused write"

stop_node beta
expect_detached /dev/nbd1
stop_node alpha
expect_detached /dev/nbd0
images_equal "after shutdown"
step "attach_multi_ro: OK"
