#!/usr/bin/env bash
# kernel-mirror.sh CASE - a mirrored pair under the real Linux kernel NBD client.
#
# CASE: ext4 | split-freeze | split-sqlite | failover-sqlite | kill-secondary | trim-vfat | read-error | disk-failure
#       (runs tests/vm/guest/mirror-CASE.sh)
#       attach-ext4 | attach-restart | attach-term | attach-multi-ro | attach-ioctl |
#       attach-resize[-stale] | attach-failover | attach-force-promote |
#       attach-stop-reattach | attach-stop-resize | attach-reattach-mount
#       (tests/vm/guest/CASE.sh: mirrord attaches /dev/nbdX itself, no nbd-client)
#       sync-error (tests/vm/guest/sync-error.sh: ONE unmirrored mirrord over a device-mapper
#       disk that fails writes, driven by qemu-io; the host kernel has no device-mapper)
#
# Both daemons run INSIDE the guest (tests/vm/run-vm.sh, Debian's kernel under qemu): alpha
# (primary) and beta (secondary) on the guest's own loopback, their backing images in guest
# RAM, the primary attached as /dev/nbd0 by nbd-client. No host-side server (SERVER_CMD=none);
# mirrord, mirrorctl, debugfs and tests/vm/guest/mirror-lib.sh are packed with EXTRA_BINS.
# The guest scripts say what each case checks.
#
# Exit status: 0 pass, 1 fail, 77 skip (qemu or the Debian kernel not installed).
#
# Environment: MIRRORD, MIRRORCTL (default <repo>/build/mirrord, mirrorctl), WORK (scratch dir,
# default a fresh mktemp dir; unique per parallel run), VOL_SIZE (default 64M), MEM (guest MiB,
# default 512: two images in RAM). run-vm.sh settings (TIMEOUT, VM_CACHE, VERBOSE, ACCEL,
# KVER, SMP) pass through.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CASE=${1:-}
MIRRORD=${MIRRORD:-$ROOT/build/mirrord}
MIRRORCTL=${MIRRORCTL:-$(dirname "$MIRRORD")/mirrorctl}
VOL_SIZE=${VOL_SIZE:-64M}

log()  { echo "[kernel-mirror $CASE] $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
skip() { log "SKIP: $*"; exit 77; }

# What the guest needs besides the base initramfs (run-vm.sh finds names on PATH):
EXTRA_BINS="debugfs $HERE/guest/mirror-lib.sh"
case "$CASE" in
  ext4|split-freeze|kill-secondary) SCRIPT=$HERE/guest/mirror-$CASE.sh ;;
  split-sqlite|failover-sqlite) SCRIPT=$HERE/guest/mirror-$CASE.sh; EXTRA_BINS="$EXTRA_BINS sqlite3" ;;
  attach-ext4|attach-restart|attach-term|attach-ioctl|attach-failover|attach-force-promote|\
  attach-stop-reattach|attach-reattach-mount|attach-secondary-read|attach-unknown-copy)
    SCRIPT=$HERE/guest/$CASE.sh ;;
  attach-stop-resize) SCRIPT=$HERE/guest/$CASE.sh; EXTRA_BINS="$EXTRA_BINS resize2fs" ;;
  attach-resize|attach-resize-stale)
    # the root tmpfs (half the guest's RAM) holds both grown images and the sources
    SCRIPT=$HERE/guest/attach-resize.sh; EXTRA_BINS="$EXTRA_BINS resize2fs"; MEM=${MEM:-768}
    [ "$CASE" = attach-resize ] || MIRROR_GUEST_ENV="STALE=1 ${MIRROR_GUEST_ENV:-}" ;;
  # 2 CPUs: the kernel queues per connection only up to the CPU count, and with one queue it
  # would send everything down the first connection
  attach-multi-ro) SCRIPT=$HERE/guest/$CASE.sh; export SMP=${SMP:-2} ;;
  trim-vfat) SCRIPT=$HERE/guest/mirror-$CASE.sh
             export EXTRA_MODULES="loop vfat nls_cp437 nls_ascii" ;;
  read-error|disk-failure) SCRIPT=$HERE/guest/mirror-$CASE.sh
              EXTRA_BINS="$EXTRA_BINS dmsetup losetup"
              export EXTRA_MODULES="loop dm_mod" ;;
  sync-error) SCRIPT=$HERE/guest/$CASE.sh
              EXTRA_BINS="$EXTRA_BINS qemu-io dmsetup losetup filefrag mkfs.xfs"
              export EXTRA_MODULES="loop dm_mod dm_thin_pool xfs" ;;
  *) echo "usage: $0 ext4|split-freeze|split-sqlite|failover-sqlite|kill-secondary|attach-ext4|attach-restart|attach-term|attach-multi-ro|attach-ioctl|attach-resize|attach-resize-stale|attach-failover|attach-force-promote|attach-stop-reattach|attach-stop-resize|attach-reattach-mount|attach-secondary-read|attach-unknown-copy|trim-vfat|read-error|disk-failure|sync-error" >&2
     exit 2 ;;
esac

command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not installed (scripts/install-deps.sh)"
if ! compgen -G "/lib/modules/*/kernel/drivers/block/nbd.ko" >/dev/null ||
   ! compgen -G "/boot/vmlinuz-*" >/dev/null; then
  skip "no Debian kernel with nbd.ko in /boot and /lib/modules (apt-get install linux-image-amd64)"
fi
for b in "$MIRRORD" "$MIRRORCTL"; do
  [ -x "$b" ] || fail "$b not found (build it, or set MIRRORD= / MIRRORCTL=)"
done
MIRRORD=$(cd "$(dirname "$MIRRORD")" && pwd)/$(basename "$MIRRORD")
MIRRORCTL=$(cd "$(dirname "$MIRRORCTL")" && pwd)/$(basename "$MIRRORCTL")

T_START=$(date +%s.%N)
if [ -z "${WORK:-}" ]; then WORK=$(mktemp -d "${TMPDIR:-/tmp}/kernel-mirror-$CASE.XXXXXX"); fi
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
case "$WORK$HERE" in *\ *) fail "paths must not contain spaces: $WORK $HERE";; esac

rc=0
SERVER_CMD=none WORK=$WORK MEM=${MEM:-512} \
  GUEST_TEST=$SCRIPT \
  EXTRA_BINS="$MIRRORD $MIRRORCTL $EXTRA_BINS" \
  GUEST_ENV="VOL_SIZE=$VOL_SIZE ${MIRROR_GUEST_ENV:-}" \
  "$HERE/run-vm.sh" || rc=$?
if [ "$rc" = 77 ]; then exit 77; fi
[ "$rc" = 0 ] || fail "VM test failed (run-vm.sh status $rc); console in $WORK/console.log"
log "PASS ($(awk -v a="$T_START" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s)"
