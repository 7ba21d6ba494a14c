#!/bin/sh
# shellcheck shell=sh
# mirror-kill-secondary.sh - guest test vm.mirror_kill_secondary: kill -9 the secondary while
# ext4 on the primary is being written; the file system must not notice.
#
# A loop writes FILES files of 1 MiB (dd conv=fsync) on /mnt; after KILL_AFTER of them the
# secondary gets SIGKILL. Every write succeeds, the kernel logs no I/O error, the primary goes
# degraded. The secondary is restarted, the pair resyncs to synchronized, every checksum
# verifies after a remount, and after shutdown both images are identical and e2fsck clean.
# Environment (GUEST_ENV): VOL_SIZE (default 64M), FILES (default 24), KILL_AFTER (default 6).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh
FILES=${FILES:-24}
KILL_AFTER=${KILL_AFTER:-6}

pair_start
attach_primary
mkfs_mount

load_start "$FILES"
load_wait "$KILL_AFTER"
kill9_node beta
wait "$LOAD" || die "the write loop failed while the secondary was down: $(cat /tmp/load.err 2>/dev/null)"
run sync
step "all $FILES files written and synced with the secondary dead"
wait_state alpha degraded 30
[ "$(status_field alpha out_of_sync_bytes)" -gt 0 ] || die "degraded with nothing out of sync"
(cd /mnt && md5sum f*) >/tmp/sums || die "md5sum failed"
no_io_errors

start_node beta
wait_state alpha synchronized 120
step "resynced_bytes_total $(status_field alpha resynced_bytes_total)"
run sync
run blockdev --flushbufs /dev/nbd0
images_equal "after the resync (mounted)"

remount_verify noinit_itable
no_io_errors
pair_finish
step "mirror_kill_secondary: OK"
