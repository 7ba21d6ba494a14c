#!/bin/sh
# shellcheck shell=sh
# attach-unknown-copy.sh - guest test vm.mirror_attach_unknown_copy: a new pair whose primary's
# disk already holds data (nothing records that copy's history: kFlagCopyUnknown), started
# alone with mirrord attaching /dev/nbd0. Until the operator or the pair confirms the copy,
# the primary serves reads only: /dev/nbd0 is attached read-only (kernel and status) and a
# plain `promote` is refused. `promote --force` takes the copy as the current one: /dev/nbd0
# becomes writable at once (the device follows), ext4 is made and written on it, and when
# beta starts the full sync gives it the same copy.
# Environment (GUEST_ENV): VOL_SIZE (default 64M).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh
ALPHA_KEYS='device = "/dev/nbd0"'

pair_config
run dd if=/dev/urandom of="$A_IMG" bs=1M count=4 conv=notrunc 2>/dev/null
start_node alpha
expect_attached /dev/nbd0 alpha
[ "$(blockdev --getro /dev/nbd0)" = 1 ] || die "/dev/nbd0 is writable on a copy of unknown history"
[ "$(status_field alpha writable)" = false ] || die "alpha status: writable $(status_field alpha writable)"
[ "$(status_field alpha copy_history_unknown)" = true ] ||
  die "alpha status: copy_history_unknown $(status_field alpha copy_history_unknown)"
step "alpha alone on a disk that holds data: /dev/nbd0 read-only, status says why"

if ctl alpha promote >/tmp/promote.out 2>&1; then
  die "a plain promote confirmed the copy: $(cat /tmp/promote.out)"
fi
step "plain promote refused: $(cut -c1-100 /tmp/promote.out)"
ctl alpha promote --force >/tmp/promote.out 2>&1 || { cat /tmp/promote.out; die "promote --force failed"; }
[ "$(blockdev --getro /dev/nbd0)" = 0 ] || die "/dev/nbd0 is still read-only after promote --force"
[ "$(status_field alpha writable)" = true ] || die "alpha status: writable $(status_field alpha writable)"
[ "$(device_field alpha read_only)" = false ] || die "alpha status: device read_only $(device_field alpha read_only)"
expect_attached /dev/nbd0 alpha
step "promote --force: $(cat /tmp/promote.out); /dev/nbd0 is writable (kernel and status)"

mkfs_mount
write_files "on a confirmed copy" 4 4 2
run sync
start_node beta
wait_state alpha synchronized 120
remount_verify ro
run umount /mnt
no_io_errors
stop_node alpha
expect_detached /dev/nbd0
stop_node beta
images_equal "after the full sync from the confirmed copy"
step "attach_unknown_copy: OK"
