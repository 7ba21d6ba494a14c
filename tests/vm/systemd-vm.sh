#!/usr/bin/env bash
# systemd-vm.sh - mirrord@.service exercised under a real systemd as PID 1 (issue 5).
#
# Works where the host itself has no systemd as PID 1 (a container, a CI runner): it boots
# Debian's kernel under qemu (tests/vm/run-vm.sh, TCG when there is no usable KVM) with
# tests/vm/systemd-init.sh as /init, which mounts the HOST's root read-only over virtio-9p
# under a tmpfs overlay and execs the host's /lib/systemd/systemd. The guest runs the host's
# own binaries: nothing is downloaded, nothing on the host is written but $WORK.
#
#   1. `DESTDIR=$WORK/stage cmake --install BUILD_DIR`: binaries, units, example, completion;
#   2. the stage is copied over the guest's root before systemd starts;
#   3. tests/vm/guest/systemd-pair.sh runs as a service and checks start, readiness, status,
#      the watchdog restart and a clean stop (see that file).
#
# Exit status: 0 pass, 1 fail, 77 skip (no qemu, no Debian kernel, or no systemd to boot).
# Environment: BUILD_DIR (default <repo>/build), WORK (scratch dir, default a fresh mktemp
# dir; unique per parallel run), VOL_SIZE (default 16M), MEM (guest MiB, default 512).
# run-vm.sh settings (TIMEOUT, VM_CACHE, VERBOSE, ACCEL, KVER) pass through.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}

log()  { echo "[systemd-vm] $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
skip() { log "SKIP: $*"; exit 77; }

command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not installed (scripts/install-deps.sh)"
if ! compgen -G "/lib/modules/*/kernel/drivers/block/nbd.ko" >/dev/null ||
   ! compgen -G "/boot/vmlinuz-*" >/dev/null; then
  skip "no Debian kernel in /boot and /lib/modules (apt-get install linux-image-amd64)"
fi
# The guest boots the host's userland: it needs systemd installed, not running.
[ -x /lib/systemd/systemd ] || skip "no /lib/systemd/systemd on this host (apt-get install systemd)"
for t in cmake jq qemu-io; do
  command -v "$t" >/dev/null || fail "missing tool: $t (scripts/install-deps.sh)"
done
[ -f "$BUILD_DIR/cmake_install.cmake" ] || fail "$BUILD_DIR is not a configured build directory"

T_START=$(date +%s.%N)
if [ -z "${WORK:-}" ]; then WORK=$(mktemp -d "${TMPDIR:-/tmp}/systemd-vm.XXXXXX"); fi
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
case "$WORK$HERE" in *\ *) fail "paths must not contain spaces: $WORK $HERE";; esac

# What a user runs to install, into a staging tree the guest copies over its root.
rm -rf "$WORK/stage"
DESTDIR=$WORK/stage cmake --install "$BUILD_DIR" --prefix /usr/local >"$WORK/install.log" 2>&1 ||
  { cat "$WORK/install.log" >&2; fail "cmake --install failed"; }
[ -f "$WORK/stage/usr/local/lib/systemd/system/mirrord@.service" ] ||
  fail "cmake --install did not install mirrord@.service (see $WORK/install.log)"

rc=0
export WORK
SERVER_CMD=none MEM=${MEM:-512} TIMEOUT=${TIMEOUT:-260} \
  SHARE_DIR=/ GUEST_INIT=$HERE/systemd-init.sh EXTRA_MODULES=overlay \
  GUEST_TEST=$HERE/guest/systemd-pair.sh \
  GUEST_ENV="VM_ROOT_OVERLAY=$WORK/stage VOL_SIZE=${VOL_SIZE:-16M}" \
  "$HERE/run-vm.sh" || rc=$?
if [ "$rc" = 77 ]; then exit 77; fi
[ "$rc" = 0 ] || fail "VM test failed (run-vm.sh status $rc); console in $WORK/console.log"
log "PASS ($(awk -v a="$T_START" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s)"
