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

attached_load_start "$FILES" "$KILL_AFTER"
kill9_node alpha
start_node alpha
reattached_verify "$FILES" "the restart"

wait_state alpha synchronized 120
stop_node alpha
expect_detached /dev/nbd0
stop_node beta
images_equal "after shutdown"
step "attach_restart: OK"
