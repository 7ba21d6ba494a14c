#!/bin/sh
# shellcheck shell=sh
# attach-restart.sh - guest test vm.attach_restart: kill -9 the primary mirrord while ext4 on
# the /dev/nbd0 it attached is being written; start it again: it finds its device by the
# backend identifier and RECONFIGUREs it with fresh sockets. The writer never sees an error.
#
# A loop copies FILES files of 512 KiB (prepared in RAM) onto /mnt with conv=fsync; after
# KILL_AFTER of them the primary gets SIGKILL, then is started again. Every copy succeeds,
# the kernel logs no I/O error, mirrorctl reports the device re-attached, every file
# compares equal after a remount, e2fsck -fn of the unmounted /dev/nbd0 is clean, and after
# shutdown both images are identical.
# Environment (GUEST_ENV): VOL_SIZE (default 64M), FILES (default 16), KILL_AFTER (default 4).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh
FILES=${FILES:-16}
KILL_AFTER=${KILL_AFTER:-4}
# The kernel retries a request unanswered for 8 s (the killed daemon's in-flight ones) and
# waits up to 60 s for live sockets.
ALPHA_KEYS='device = "/dev/nbd0"
device-timeout = "8s"
dead-connection-timeout = "60s"'

pair_start
expect_attached /dev/nbd0 alpha
mkfs_mount
i=1
while [ $i -le "$FILES" ]; do
  dd if=/dev/urandom of="/tmp/src$i" bs=128k count=4 2>/dev/null || die "cannot prepare /tmp/src$i"
  i=$((i + 1))
done

load_start "$FILES"
load_wait "$KILL_AFTER"
kill9_node alpha
start_node alpha
grep -q "re-attached export 'db' to /dev/nbd0 (RECONFIGURE" "$PAIR/alpha.log" ||
  die "the restarted primary did not re-attach /dev/nbd0 with RECONFIGURE"
[ "$(device_field alpha reattached)" = true ] || die "status does not say re-attached"
step "mirrord alpha re-attached /dev/nbd0: $(grep 're-attached' "$PAIR/alpha.log" | tail -n1 | cut -c1-120)"
wait "$LOAD" || die "the writer saw an error across the restart: $(cat /tmp/load.err 2>/dev/null)"
step "all $FILES files written with conv=fsync across the restart, no error"
run sync
expect_attached /dev/nbd0 alpha

run umount /mnt
echo 3 >/proc/sys/vm/drop_caches
run mount -t ext4 -o ro /dev/nbd0 /mnt
i=1
while [ $i -le "$FILES" ]; do
  cmp "/tmp/src$i" "/mnt/f$i" || die "f$i differs from what was written"
  i=$((i + 1))
done
step "remounted: all $FILES files equal to their sources"
run umount /mnt
e2fsck -fn /dev/nbd0 >/tmp/e2fsck.log 2>&1 || { cat /tmp/e2fsck.log; die "e2fsck -fn /dev/nbd0 found errors"; }
step "e2fsck -fn /dev/nbd0 clean: $(tail -n1 /tmp/e2fsck.log)"
if dmesg | grep -iE 'I/O error|blk_update_request|EXT4-fs error|Buffer I/O'; then
  die "the kernel logged I/O errors (above)"
fi
step "dmesg: no I/O errors ($(dmesg | grep -c 'nbd0: Connection timed out') request timeouts retried," \
     "$(dmesg | grep -c 'nbd0: reconnected socket') sockets reconnected)"

wait_state alpha synchronized 120
stop_node alpha
expect_detached /dev/nbd0
stop_node beta
images_equal "after shutdown"
step "attach_restart: OK"
