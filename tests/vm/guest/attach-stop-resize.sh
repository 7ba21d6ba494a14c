#!/bin/sh
# shellcheck shell=sh
# attach-stop-resize.sh - guest test vm.mirror_attach_stop_resize: SIGTERM (`systemctl stop`)
# reaches the primary while the kernel call that gives its mounted /dev/nbd0 the size of a
# `mirrorctl resize` has not returned (MIRRORD_FAULTS device-call-delay-ms=600000 holds it,
# as a kernel that waits for the requests in flight would: docs/reliability.md).
#
# The stop must end in bounded time (the resize's own 30 s limit, not the call's 10 min),
# saying why it waited and that it leaves the device attached (a DISCONNECT could wait behind
# the blocked call), and exit 0. A new mirrord re-attaches /dev/nbd0 with RECONFIGURE and
# gives it the new size; resize2fs grows the mounted ext4 online; every file written before
# reads back, new data past the old end too; no I/O error, e2fsck clean, images identical.
# Environment (GUEST_ENV): FROM_MIB (default 32), GROW_MIB (default 48).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh
VOL_SIZE=${FROM_MIB:-32}M
GROW_MIB=${GROW_MIB:-48}
NEW_SIZE=$((GROW_MIB * 1048576))
ALPHA_KEYS='device = "/dev/nbd0"
dead-connection-timeout = "120s"'

faulty_pair_files device-call-delay-ms=600000 "before the resize"
run sync
OLD_SIZE=$(blockdev --getsize64 /dev/nbd0)

run sed -i "s/^size = .*/size = \"${GROW_MIB}M\"/" "$PAIR/vol.toml"
ctl alpha resize >/tmp/resize.out 2>&1 &
RESIZE=$!
wait_log alpha "TEST FAULT: the resize call of /dev/nbd0 pauses"
step "mirrorctl resize: the volume grew, the kernel call for /dev/nbd0 is blocked"

# SIGTERM; the stop must not wait for the blocked call (10 minutes) itself.
A_PID=$(cat "$PAIR/alpha.pid")
T0=$(date +%s)
kill -TERM "$A_PID"
_i=0
while kill -0 "$A_PID" 2>/dev/null && ! grep -q "^State:.*Z" "/proc/$A_PID/status" 2>/dev/null; do
  _i=$((_i + 1))
  [ $_i -le 900 ] || die "mirrord alpha still runs 90 s after SIGTERM"
  usleep 100000
done
_rc=0
wait "$A_PID" || _rc=$?
T1=$(date +%s)
[ "$_rc" = 0 ] || die "mirrord alpha exited with status $_rc after SIGTERM"
step "SIGTERM during the blocked resize call: exited 0 in $((T1 - T0)) s"
grep -q "resize call of /dev/nbd0 has not returned" "$PAIR/alpha.log" ||
  die "mirrord did not log why its stop waited"
grep -q "leaving /dev/nbd0 attached" "$PAIR/alpha.log" ||
  die "mirrord did not log that it leaves /dev/nbd0 attached"
! grep -q "detached /dev/nbd0" "$PAIR/alpha.log" || die "mirrord detached the mounted /dev/nbd0"
[ "$(cat /sys/block/nbd0/backend 2>/dev/null)" = mirrord:db:alpha ] ||
  die "/dev/nbd0 lost our backend identifier ('$(cat /sys/block/nbd0/backend 2>/dev/null)')"
step "$(grep -m1 'leaving /dev/nbd0 attached' "$PAIR/alpha.log" | cut -c1-140)"
wait "$RESIZE" || true
step "mirrorctl resize answered: $(cat /tmp/resize.out)"

# The next mirrord takes the device over and gives it the size it missed.
start_node alpha
grep -q "re-attached export 'db' to /dev/nbd0 (RECONFIGURE" "$PAIR/alpha.log" ||
  die "the new primary did not re-attach /dev/nbd0 with RECONFIGURE"
_i=0
until [ "$(blockdev --getsize64 /dev/nbd0)" = "$NEW_SIZE" ]; do
  _i=$((_i + 1))
  [ $_i -le 300 ] || die "/dev/nbd0 is $(blockdev --getsize64 /dev/nbd0) bytes 30 s after the restart, expected $NEW_SIZE"
  usleep 100000
done
expect_attached /dev/nbd0 alpha
step "restarted: /dev/nbd0 re-attached, $OLD_SIZE -> $NEW_SIZE bytes"

run resize2fs /dev/nbd0 >/tmp/resize2fs.out 2>&1
FREE_KIB=$(df -k /mnt | awk 'NR == 2 { print $4 }')
BIG_MIB=$((FREE_KIB / 1024 - 2))
run dd if=/dev/urandom of=/tmp/big.src bs=1M count="$BIG_MIB" 2>/dev/null
run dd if=/tmp/big.src of=/mnt/big.bin bs=1M conv=fsync 2>/dev/null
(cd /mnt && md5sum big.bin) >>/tmp/sums || die "md5sum failed"
step "resize2fs online, wrote big.bin ($BIG_MIB MiB, more than the old file system held)"
remount_verify ro
run umount /mnt
wait_state alpha synchronized 120
fsck_clean /dev/nbd0
no_block_errors
step "dmesg: no I/O errors ($(dmesg | grep -c 'nbd0: reconnected socket') socket reconnected)"

stop_node alpha
expect_detached /dev/nbd0
stop_node beta
images_equal "after the stop during the resize"
[ "$(stat -c %s "$A_IMG")" = "$NEW_SIZE" ] || die "a.img is $(stat -c %s "$A_IMG") bytes, expected $NEW_SIZE"
step "attach_stop_resize: OK"
