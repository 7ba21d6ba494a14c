#!/bin/sh
# shellcheck shell=sh
# mirror-split-freeze.sh - guest test vm.mirror_split_freeze: `mirrorctl split --freeze /mnt`
# with ext4 mounted on the primary leaves the secondary a clean point-in-time file system.
#
# Write file A; split with the mount frozen (FIFREEZE) around it; write file B; snapshot the
# secondary's image (cp b.img): e2fsck -fn clean, debugfs reads A as written, B absent; the
# secondary's NBD export reads the same as the snapshot. Then rejoin --wait, B verified,
# umount: the two images identical, e2fsck clean.
# Environment (GUEST_ENV): VOL_SIZE (default 64M), B_MIB (default 8).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh
B_MIB=${B_MIB:-8}
SNAP=$PAIR/snapshot.img

pair_start
attach_primary
mkfs_mount

run dd if=/dev/urandom of=/mnt/A bs=1M count=2 2>/dev/null
A_SUM=$(md5sum /mnt/A | cut -d' ' -f1)
echo "written before the split" >/mnt/A.txt || die "write failed"
step "wrote /mnt/A (md5 $A_SUM) and /mnt/A.txt"
# no sync here on purpose: the freeze must write A out before the split

run ctl alpha split --freeze /mnt --pre "echo pre-hook" --post "echo post-hook" --timeout 60
wait_state alpha split 10

run dd if=/dev/urandom of=/mnt/B bs=1M count="$B_MIB" 2>/dev/null
B_SUM=$(md5sum /mnt/B | cut -d' ' -f1)
run rm /mnt/A.txt
run sync
step "after the split: wrote /mnt/B ($B_MIB MiB, md5 $B_SUM), removed /mnt/A.txt, synced"
oos=$(status_field alpha out_of_sync_bytes)
[ "$oos" -ge $((B_MIB * 1048576)) ] || die "out of sync $oos bytes, expected >= $B_MIB MiB"
step "alpha: state $(status_field alpha state), $oos bytes out of sync"

run cp "$B_IMG" "$SNAP"
e2fsck -fn "$SNAP" >/tmp/e2fsck.log 2>&1 || { cat /tmp/e2fsck.log; die "e2fsck -fn of the secondary's snapshot found errors"; }
step "snapshot of b.img: e2fsck -fn clean: $(tail -n1 /tmp/e2fsck.log)"
debugfs -R "dump /A $PAIR/A.out" "$SNAP" >/dev/null 2>&1
got=$(md5sum "$PAIR/A.out" 2>/dev/null | cut -d' ' -f1)
[ "$got" = "$A_SUM" ] || die "snapshot: /A has md5 '$got', expected $A_SUM"
txt=$(debugfs -R "cat /A.txt" "$SNAP" 2>/dev/null)
[ "$txt" = "written before the split" ] || die "snapshot: /A.txt reads '$txt'"
debugfs -R "stat /B" "$SNAP" 2>&1 | grep -q "File not found" || die "snapshot: /B exists"
step "snapshot: /A and /A.txt as written before the split, /B absent"
# the secondary serves the same frozen copy read-only over NBD
# shellcheck disable=SC2034  # read by nbd_connect (lib.sh)
VM_NBD_HOST=127.0.0.1 VM_NBD_PORT=$NBD_PORT_B
nbd_connect /dev/nbd1 netlink -R -N db
s1=$(md5sum /dev/nbd1 | cut -d' ' -f1)
s2=$(md5sum "$SNAP" | cut -d' ' -f1)
[ "$s1" = "$s2" ] || die "the secondary's export (md5 $s1) differs from its image snapshot ($s2)"
nbd_disconnect /dev/nbd1
step "the secondary's NBD export (/dev/nbd1, read-only) equals the snapshot"

run ctl alpha rejoin --wait
wait_state alpha synchronized 10
[ "$(md5sum /mnt/B | cut -d' ' -f1)" = "$B_SUM" ] || die "/mnt/B changed"
[ ! -e /mnt/A.txt ] || die "/mnt/A.txt is back"
run sync
run blockdev --flushbufs /dev/nbd0
images_equal "after rejoin (mounted)"
no_io_errors
pair_finish
step "mirror_split_freeze: OK"
