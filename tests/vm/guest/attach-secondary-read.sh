#!/bin/sh
# shellcheck shell=sh
# attach-secondary-read.sh - guest test vm.mirror_attach_secondary_read: what a backup tool
# reading the secondary's /dev/nbd1 (attached by mirrord, read-only) gets, with a reader
# holding the device open throughout (so the kernel keeps its cached blocks).
#
# 1. Mirroring: block X is read through /dev/nbd1 (now cached), then rewritten through the
#    primary's /dev/nbd0. At the split mirrord drops the device's cache: a buffered read of
#    /dev/nbd1 after the split gives the split image, not the cached old block.
# 2. Rejoin with a rate-limited resync: while the secondary's copy is a mix of old and new
#    blocks, every read of /dev/nbd1 fails with an I/O error (never the mix), a block the
#    kernel had cached too (the plan dropped the cache).
# 3. After the resync /dev/nbd1 reads the primary's data.
# 4. A backup mounts the split image (ext4, read-only): the rejoin is refused while it is
#    mounted (rejoin --wait returns with the reason, alpha's status says it too; beta's copy
#    stays the split image) and goes ahead, by itself, once it is unmounted.
# Nothing but /dev/nbd1's refused reads reaches dmesg as an I/O error.
# Environment (GUEST_ENV): VOL_SIZE (default 64M).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh
ALPHA_KEYS='device = "/dev/nbd0"'
BETA_KEYS='device = "/dev/nbd1"'
VOL_KEYS='initial-sync = "skip"
resync-rate = "2M"'
X=4  # block X: MiB 4

pair_start
expect_attached /dev/nbd0 alpha
expect_attached /dev/nbd1 beta

# fill FILE BYTE: 1 MiB of BYTE
fill() { dd if=/dev/zero bs=1M count=1 2>/dev/null | tr '\000' "\\$2" >"$1"; }
# put FILE MIB: FILE through the primary's device, O_DIRECT (on both copies once dd returns)
put() { run dd if="$1" of=/dev/nbd0 bs=1M seek="$2" oflag=direct conv=notrunc 2>/dev/null; }
# sec_md5 MIB: md5 of 1 MiB of /dev/nbd1, read through the page cache
sec_md5() { dd if=/dev/nbd1 bs=1M skip="$1" count=1 2>/dev/null | md5sum | cut -d' ' -f1; }
md5() { md5sum <"$1" | cut -d' ' -f1; }

fill /tmp/a 101; fill /tmp/b 102; fill /tmp/c 103
put /tmp/a $X
wait_state alpha synchronized 30
exec 3</dev/nbd1   # a reader that holds the device open: the kernel keeps what it read
[ "$(sec_md5 $X)" = "$(md5 /tmp/a)" ] || die "/dev/nbd1 does not read what the primary wrote"
put /tmp/b $X
step "block $X: A read through /dev/nbd1 (cached), then B written through /dev/nbd0"

run ctl alpha split
wait_state beta split 10
got=$(sec_md5 $X)
[ "$got" = "$(md5 /tmp/b)" ] ||
  die "after the split /dev/nbd1 reads md5 $got at MiB $X: not the split image's B ($(md5 /tmp/b))$([ "$got" = "$(md5 /tmp/a)" ] && echo ': the stale cached A')"
step "after the split, /dev/nbd1 (held open) reads the split image: B"

# 16 MiB changed after the split: the rejoin's resync takes ~8 s at 2 MiB/s.
put /tmp/c $X
run dd if=/dev/urandom of=/dev/nbd0 bs=1M seek=16 count=16 oflag=direct conv=notrunc 2>/dev/null
run ctl alpha rejoin
_i=0
until [ "$(status_field beta consistent)" = false ]; do
  _i=$((_i + 1)); [ $_i -le 100 ] || die "beta never reported an inconsistent copy"
  usleep 50000
done
dmesg -c >/dev/null
if dd if=/dev/nbd1 of=/dev/null bs=1M skip=20 count=1 iflag=direct 2>/tmp/rd.err; then
  die "an O_DIRECT read of /dev/nbd1 mid-resync succeeded"
fi
grep -qi 'Input/output error' /tmp/rd.err || { cat /tmp/rd.err; die "the read did not fail with EIO"; }
if dd if=/dev/nbd1 of=/dev/null bs=1M skip=40 count=1 2>/tmp/rd2.err; then
  die "a buffered read of /dev/nbd1 mid-resync succeeded"
fi
# MiB X was read (and cached) after the split: the kernel must not serve it from its cache
# either (the resync's plan dropped it).
if dd if=/dev/nbd1 of=/dev/null bs=1M skip=$X count=1 2>/tmp/rd3.err; then
  die "a buffered read of MiB $X of /dev/nbd1 (cached before the rejoin) succeeded mid-resync"
fi
[ "$(status_field beta consistent)" = false ] || die "the resync ended before the reads: make it slower"
step "mid-resync: reads of /dev/nbd1 fail: $(head -n1 /tmp/rd.err)"
dmesg | grep -iE 'I/O error|Buffer I/O' | grep -v 'nbd1' && die "I/O errors on another device (above)"

wait_state alpha synchronized 60
_i=0
until [ "$(status_field beta consistent)" = true ]; do
  _i=$((_i + 1)); [ $_i -le 100 ] || die "beta not consistent after the resync"
  usleep 50000
done
got=$(sec_md5 $X)
[ "$got" = "$(md5 /tmp/c)" ] ||
  die "after the resync /dev/nbd1 reads md5 $got at MiB $X, the primary wrote C ($(md5 /tmp/c))"
a=$(dd if=/dev/nbd0 bs=1M count=64 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
b=$(dd if=/dev/nbd1 bs=1M count=64 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$a" = "$b" ] || die "after the resync /dev/nbd1 (md5 $b) differs from /dev/nbd0 ($a)"
step "after the resync, /dev/nbd1 (still held open) reads the primary's data: $b"
exec 3<&-

# 4. A backup mounts the split image; the rejoin waits for it. ext4 made through the primary
#    (the resync-rate limit makes the rejoin slow enough to watch).
run mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 -L backup /dev/nbd0
run mkdir -p /mnt/a /mnt/b
run mount -t ext4 /dev/nbd0 /mnt/a
echo "before the split" >/mnt/a/snap.txt || die "write to /mnt/a failed"
run umount /mnt/a
wait_state alpha synchronized 60
run ctl alpha split
wait_state beta split 10
run mount -t ext4 -o ro,noload /dev/nbd1 /mnt/b
run mount -t ext4 /dev/nbd0 /mnt/a
echo "after the split" >/mnt/a/snap.txt || die "write to /mnt/a failed"
run sync
step "the split image mounted read-only at /mnt/b (a backup), the primary changed it"
dmesg -c >/dev/null
if out=$(ctl alpha rejoin --wait 2>&1); then die "rejoin --wait succeeded under the mount: $out"; fi
echo "$out" | grep -q "the split image on node 'beta' is in use" ||
  die "rejoin --wait did not say why it was refused: $out"
step "rejoin --wait refused: $out"
_i=0
until ctl alpha status --json | grep -q "the split image on node 'beta' is in use: /dev/nbd1 is mounted"; do
  _i=$((_i + 1)); [ $_i -le 100 ] || { ctl alpha status; die "alpha never reported beta's image in use"; }
  usleep 100000
done
sleep 2
[ "$(status_field beta consistent)" = true ] || die "beta's copy became inconsistent under its mount"
[ "$(status_field beta state)" = split ] || die "beta left the split under its mount: $(status_field beta state)"
[ "$(cat /mnt/b/snap.txt)" = "before the split" ] || die "the backup reads '$(cat /mnt/b/snap.txt)'"
run ls -lR /mnt/b >/dev/null
no_block_errors
step "rejoin refused while /dev/nbd1 is mounted: alpha says why, the backup reads the split image"
run umount /mnt/b
wait_state alpha synchronized 60
run umount /mnt/a
step "unmounted: the rejoin went ahead, alpha synchronized"
images_equal "after the rejoin"

stop_node beta
expect_detached /dev/nbd1
stop_node alpha
expect_detached /dev/nbd0
images_equal "after shutdown"
step "attach_secondary_read: OK"
