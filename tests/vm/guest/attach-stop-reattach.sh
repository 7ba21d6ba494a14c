#!/bin/sh
# shellcheck shell=sh
# attach-stop-reattach.sh - guest test vm.mirror_attach_stop_reattach: SIGTERM (`systemctl
# stop`) reaches the primary while `mirrorctl demote` re-attaches its /dev/nbd0 for the new
# role, between the DISCONNECT and the CONNECT (the window held open by MIRRORD_FAULTS
# device-call-delay-ms=5000, docs/reliability.md).
#
# The stop must wait for the re-attach (saying so in the log), then detach the unused device
# as any stop does, and exit 0 within a bounded time: no device left attached to the sockets
# of a mirrord that is gone (I/O on it would hang for the dead-connection timeout). The
# demote is answered and recorded. A new mirrord attaches /dev/nbd0 afresh, read-only (it is
# secondary now); promoted again, the device is writable and every file written before reads
# back; e2fsck is clean and both images are identical.
# Environment (GUEST_ENV): VOL_SIZE (default 64M).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh
ALPHA_KEYS='device = "/dev/nbd0"
dead-connection-timeout = "60s"'

faulty_pair_files device-call-delay-ms=5000 "before the stop"
run umount /mnt

ctl alpha demote >/tmp/demote.out 2>&1 &
DEMOTE=$!
wait_log alpha "TEST FAULT: /dev/nbd0 disconnected; the re-attach pauses"
expect_detached /dev/nbd0
step "demote: /dev/nbd0 disconnected, its re-attach paused before the CONNECT"

T0=$(date +%s)
stop_node alpha
T1=$(date +%s)
[ $((T1 - T0)) -le 30 ] || die "the stop took $((T1 - T0)) s"
expect_detached /dev/nbd0
grep -q "waiting for the re-attach of /dev/nbd0" "$PAIR/alpha.log" ||
  die "mirrord did not log that its stop waits for the re-attach"
step "SIGTERM inside the re-attach: stopped in $((T1 - T0)) s, /dev/nbd0 detached:" \
     "$(grep -m1 'waiting for the re-attach' "$PAIR/alpha.log" | cut -c1-100)"
wait "$DEMOTE" || { cat /tmp/demote.out; die "the demote failed"; }
step "demote answered: $(cat /tmp/demote.out)"

# The next mirrord: secondary (the demote was recorded), /dev/nbd0 attached afresh read-only.
start_node alpha
[ "$(status_field alpha role)" = secondary ] || die "alpha is $(status_field alpha role) after the restart"
expect_attached /dev/nbd0 alpha
grep -q "attached export 'db' as /dev/nbd0" "$PAIR/alpha.log" || die "the new mirrord did not CONNECT /dev/nbd0"
[ "$(blockdev --getro /dev/nbd0)" = 1 ] || die "the secondary's /dev/nbd0 is writable"
step "restarted: alpha secondary, /dev/nbd0 attached afresh, read-only"

ctl alpha promote >/tmp/promote.out 2>&1 || { cat /tmp/promote.out; die "promote alpha failed"; }
[ "$(blockdev --getro /dev/nbd0)" = 0 ] || die "/dev/nbd0 is read-only after the promote: $(cat /tmp/promote.out)"
step "promote alpha: $(cat /tmp/promote.out)"
wait_state alpha synchronized 60
echo 3 >/proc/sys/vm/drop_caches
run mount -t ext4 -o ro /dev/nbd0 /mnt
(cd /mnt && md5sum -c /tmp/sums) >/tmp/sums.out 2>&1 || { cat /tmp/sums.out; die "checksums differ"; }
step "all $(wc -l </tmp/sums) checksums match"
run umount /mnt
fsck_clean /dev/nbd0
no_io_errors

stop_node alpha
expect_detached /dev/nbd0
stop_node beta
images_equal "after the stop inside the re-attach"
step "attach_stop_reattach: OK"
