#!/bin/sh
# shellcheck shell=sh
# attach-term.sh - guest test vm.mirror_attach_term: SIGTERM (what `systemctl stop` and
# `restart` send) the primary mirrord while ext4 on the /dev/nbd0 it attached is mounted and
# being written. A mounted device must not be pulled: mirrord logs that it leaves /dev/nbd0
# attached, exits 0, and the kernel still has the device (our backend identifier, its size)
# with no daemon behind it. A new mirrord re-attaches it with RECONFIGURE; the writer (dd
# conv=fsync) never sees an error, every file compares equal after a remount, e2fsck is clean.
# Once unmounted, SIGTERM detaches the device as before.
# Environment (GUEST_ENV): VOL_SIZE (default 64M), FILES (default 12), TERM_AFTER (default 3).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh
FILES=${FILES:-12}
TERM_AFTER=${TERM_AFTER:-3}
ALPHA_KEYS='device = "/dev/nbd0"
device-timeout = "8s"
dead-connection-timeout = "60s"'

attached_load_start "$FILES" "$TERM_AFTER"
stop_node alpha
grep -q "/dev/nbd0 is in use .*leaving it attached" "$PAIR/alpha.log" ||
  die "mirrord did not log that it left the mounted /dev/nbd0 attached"
! grep -q "detached /dev/nbd0" "$PAIR/alpha.log" || die "mirrord detached the mounted /dev/nbd0"
[ "$(cat /sys/block/nbd0/backend 2>/dev/null)" = mirrord:db:alpha ] ||
  die "after SIGTERM /dev/nbd0 lost our backend identifier ('$(cat /sys/block/nbd0/backend 2>/dev/null)')"
[ "$(cat /sys/block/nbd0/size)" != 0 ] || die "after SIGTERM /dev/nbd0 has size 0: it was detached"
step "SIGTERM left the mounted /dev/nbd0 attached: $(grep -m1 'leaving it attached' "$PAIR/alpha.log" | cut -c1-110)"

start_node alpha
reattached_verify "$FILES" "the SIGTERM restart"

wait_state alpha synchronized 120
# Not mounted now: SIGTERM detaches.
stop_node alpha
expect_detached /dev/nbd0
grep -q "detached /dev/nbd0" "$PAIR/alpha.log" || die "mirrord did not log the detach"
stop_node beta
images_equal "after shutdown"
step "attach_term: OK"
