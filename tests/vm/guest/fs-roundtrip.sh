#!/bin/sh
# shellcheck shell=sh
# fs-roundtrip.sh - guest test: ext4 on the real kernel NBD client against the host server.
#
# Passes, one device each, all on the same export (the file system persists across them):
#   nbd0  netlink, export $EXPORT    mkfs.ext4 (discards the device: TRIM), write, fstrim
#   nbd1  ioctl (-L), default export ""   (the server serves its first export under "")
#   nbd2  netlink, $CONNECTIONS connections (multi-conn), export $EXPORT   [if CONNECTIONS>1]
# Each pass: connect, check the size, mount, verify what the previous passes wrote, write a
# text file and $RANDOM_MIB MiB of random data, record its sha256, sync, umount, drop caches,
# e2fsck -fn the device, remount read-only, verify every checksum, umount, disconnect.
# The host then checks the image itself (e2fsck, debugfs): see tests/vm/kernel-nbd.sh.
#
# Environment (GUEST_ENV): EXPORT (default disk), EXPECT_SIZE (bytes, optional),
# RANDOM_MIB (default 4), CONNECTIONS (default 2).
# shellcheck disable=SC1091  # packed from tests/vm/guest/lib.sh
. /lib/vmtest.sh

EXPORT=${EXPORT:-disk}
RANDOM_MIB=${RANDOM_MIB:-4}
CONNECTIONS=${CONNECTIONS:-2}
WRITTEN=""   # tags whose files are on the file system

verify_all() {  # checksums of every random file written so far, as recorded in the fs
  for t in $WRITTEN; do
    want=$(cat "/mnt/random-$t.sha256") || die "$t: /mnt/random-$t.sha256 missing"
    got=$(sha256_of "/mnt/random-$t.bin") || die "$t: cannot read /mnt/random-$t.bin"
    [ "$got" = "$want" ] || die "$t: sha256 mismatch: file $got, recorded $want"
    grep -qx "hello from the guest kernel via $t" "/mnt/hello-$t.txt" ||
      die "$t: /mnt/hello-$t.txt has unexpected content: $(cat "/mnt/hello-$t.txt")"
  done
  step "verified:${WRITTEN:- nothing yet}"
}

# roundtrip DEV MODE TAG MKFS [nbd-client options...]
roundtrip() {
  dev=$1 mode=$2 tag=$3 domkfs=$4; shift 4
  nbd_connect "$dev" "$mode" "$@"
  size=$(blockdev --getsize64 "$dev")
  if [ -n "${EXPECT_SIZE:-}" ] && [ "$size" != "$EXPECT_SIZE" ]; then
    die "$tag: $dev has $size bytes, the export has $EXPECT_SIZE"
  fi
  if [ "$domkfs" = 1 ]; then
    # mke2fs discards the whole device first when the server offers TRIM
    run mkfs.ext4 -q -F -L mirrord-vm "$dev"
    step "$tag: mkfs.ext4 done"
  fi
  # noinit_itable: no ext4lazyinit writes racing with the checks
  run mount -t ext4 -o noinit_itable "$dev" /mnt
  verify_all

  echo "hello from the guest kernel via $tag" > "/mnt/hello-$tag.txt" || die "$tag: write failed"
  run dd if=/dev/urandom of="/mnt/random-$tag.bin" bs=1M count="$RANDOM_MIB" 2>/dev/null
  sha256_of "/mnt/random-$tag.bin" > "/mnt/random-$tag.sha256" || die "$tag: sha256sum failed"
  if [ "$domkfs" = 1 ]; then
    # discard freed blocks through the file system: TRIM requests on the wire
    run dd if=/dev/urandom of=/mnt/scratch.bin bs=1M count=2 2>/dev/null
    run sync
    run rm /mnt/scratch.bin
    run fstrim -v /mnt
  fi
  WRITTEN="$WRITTEN $tag"
  step "$tag: wrote hello-$tag.txt and random-$tag.bin sha256 $(cat "/mnt/random-$tag.sha256")"
  run sync
  run umount /mnt

  # Drop the page cache so that what follows really reads from the server.
  run blockdev --flushbufs "$dev"
  echo 3 > /proc/sys/vm/drop_caches
  e2fsck -fn "$dev" >/tmp/e2fsck.log 2>&1 || { cat /tmp/e2fsck.log; die "$tag: e2fsck -fn $dev found errors"; }
  step "$tag: e2fsck -fn $dev clean"
  run mount -t ext4 -o ro "$dev" /mnt
  verify_all
  run umount /mnt
  nbd_disconnect "$dev"
  step "$tag: pass OK"
}

roundtrip /dev/nbd0 netlink nbd0-netlink 1 -N "$EXPORT"
roundtrip /dev/nbd1 ioctl nbd1-ioctl 0
if [ "$CONNECTIONS" -gt 1 ]; then
  roundtrip /dev/nbd2 netlink "nbd2-multiconn$CONNECTIONS" 0 -N "$EXPORT" -C "$CONNECTIONS"
fi
step "fs-roundtrip: all passes OK"
