#!/usr/bin/env bash
# kernel-nbd.sh tcp|unix - acceptance test: the real Linux kernel NBD client against mirrord.
#
# Host: starts `mirrord --export disk=IMG` listening on 127.0.0.1:0 (tcp) or unix:SOCK (unix),
# waits for its --ready-file. Guest (tests/vm/run-vm.sh, Debian's kernel under qemu): runs
# tests/vm/guest/fs-roundtrip.sh, which uses /dev/nbd0 (netlink, export "disk"), /dev/nbd1
# (ioctl -L, default export "") and /dev/nbd2 (netlink, 2 connections): mkfs.ext4, mount, write
# files and random data, sync, umount, drop caches, e2fsck, remount, verify sha256, disconnect.
# Then mirrord is stopped with SIGTERM and must exit 0, and the host checks the image itself:
# `e2fsck -fn` clean, and debugfs reads back every file the guest wrote, checksums included.
#
# Exit status: 0 pass, 1 fail, 77 skip (qemu or the Debian kernel not installed).
#
# Environment: MIRRORD (default <repo>/build/mirrord), WORK (scratch dir, default a fresh
# mktemp dir; unique per parallel run), PORT (default 0: the kernel picks, read from the ready
# file), DISK_SIZE (default 64M), CONNECTIONS (default 2), MIRRORD_ARGS (extra arguments),
# REFERENCE=nbdkit (run the very same test against nbdkit instead: checks the test itself).
# run-vm.sh settings (MEM, TIMEOUT, VM_CACHE, VERBOSE, ACCEL, KVER) pass through.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MODE=${1:-}
MIRRORD=${MIRRORD:-$ROOT/build/mirrord}
DISK_SIZE=${DISK_SIZE:-64M}
CONNECTIONS=${CONNECTIONS:-2}
REFERENCE=${REFERENCE:-}

log()  { echo "[kernel-nbd $MODE] $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
skip() { log "SKIP: $*"; exit 77; }

case "$MODE" in
  tcp|unix) ;;
  *) echo "usage: $0 tcp|unix" >&2; exit 2 ;;
esac

# Skip only when the VM itself cannot run here; every other missing piece is a failure.
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not installed (scripts/install-deps.sh)"
if ! compgen -G "/lib/modules/*/kernel/drivers/block/nbd.ko" >/dev/null ||
   ! compgen -G "/boot/vmlinuz-*" >/dev/null; then
  skip "no Debian kernel with nbd.ko in /boot and /lib/modules (apt-get install linux-image-amd64)"
fi
for t in e2fsck debugfs sha256sum truncate; do
  command -v "$t" >/dev/null || fail "missing tool: $t (scripts/install-deps.sh)"
done
if [ -z "$REFERENCE" ]; then
  [ -x "$MIRRORD" ] || fail "mirrord binary not found at $MIRRORD (build it, or set MIRRORD=)"
  MIRRORD=$(cd "$(dirname "$MIRRORD")" && pwd)/$(basename "$MIRRORD")
fi

T_START=$(date +%s.%N)
if [ -z "${WORK:-}" ]; then WORK=$(mktemp -d "${TMPDIR:-/tmp}/kernel-nbd-$MODE.XXXXXX"); fi
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
IMG=$WORK/disk.img
READY=$WORK/ready
rm -f "$IMG" "$READY" "$WORK"/host-*.bin
truncate -s "$DISK_SIZE" "$IMG"
SIZE=$(stat -c %s "$IMG")

SOCKDIR=
# shellcheck disable=SC2317  # invoked by the trap
cleanup() { [ -z "$SOCKDIR" ] || rm -rf "$SOCKDIR"; }
trap cleanup EXIT

if [ "$MODE" = unix ]; then
  SOCK=$WORK/nbd.sock
  if [ ${#SOCK} -gt 100 ] || [[ $SOCK == *[,\ ]* ]]; then
    # sun_path holds 108 bytes, and qemu's option syntax cannot take commas
    SOCKDIR=$(mktemp -d /tmp/kernel-nbd.XXXXXX)
    SOCK=$SOCKDIR/nbd.sock
  fi
  rm -f "$SOCK"
  export SERVER_UNIX=$SOCK
  LISTEN=unix:$SOCK
else
  unset SERVER_UNIX
  PORT=${PORT:-0}
  LISTEN=127.0.0.1:$PORT
fi

if [ -z "$REFERENCE" ]; then
  SERVER_CMD="$MIRRORD --export disk=$IMG --listen $LISTEN --ready-file $READY --log-level info ${MIRRORD_ARGS:-}"
elif [ "$REFERENCE" = nbdkit ]; then
  # nbdkit's pid file appears once it accepts connections; it cannot report a port 0.
  if [ "$MODE" = unix ]; then
    SERVER_CMD="nbdkit -f -P $READY -U $SOCK file $IMG"
  else
    if [ "$PORT" = 0 ]; then
      PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    fi
    SERVER_CMD="nbdkit -f -P $READY -i 127.0.0.1 -p $PORT file $IMG"
  fi
else
  fail "REFERENCE must be empty or nbdkit"
fi
case "$WORK" in *\ *) fail "WORK must not contain spaces: $WORK";; esac

log "server: $SERVER_CMD"
rc=0
SERVER_CMD=$SERVER_CMD READY_FILE=$READY PORT=${PORT:-0} WORK=$WORK \
  GUEST_TEST=$HERE/guest/fs-roundtrip.sh \
  GUEST_ENV="EXPORT=disk EXPECT_SIZE=$SIZE CONNECTIONS=$CONNECTIONS" \
  "$HERE/run-vm.sh" || rc=$?
if [ "$rc" = 77 ]; then exit 77; fi
[ "$rc" = 0 ] || fail "VM test failed (run-vm.sh status $rc); logs in $WORK"

# ------------------------------------------------------------- host-side image checks ----
# The server has exited by now: the image is what it wrote to the file.
if ! e2fsck -fn "$IMG" >"$WORK/e2fsck.log" 2>&1; then
  cat "$WORK/e2fsck.log" >&2
  fail "e2fsck -fn $IMG reports errors"
fi
log "host: e2fsck -fn clean: $(tail -n1 "$WORK/e2fsck.log")"
tags="nbd0-netlink nbd1-ioctl"
[ "$CONNECTIONS" -le 1 ] || tags="$tags nbd2-multiconn$CONNECTIONS"
for t in $tags; do
  got=$(debugfs -R "cat /hello-$t.txt" "$IMG" 2>/dev/null)
  [ "$got" = "hello from the guest kernel via $t" ] || fail "host: /hello-$t.txt reads '$got'"
  want=$(debugfs -R "cat /random-$t.sha256" "$IMG" 2>/dev/null)
  debugfs -R "dump /random-$t.bin $WORK/host-$t.bin" "$IMG" >/dev/null 2>&1 ||
    fail "host: debugfs cannot dump /random-$t.bin"
  have=$(sha256sum "$WORK/host-$t.bin" | cut -d' ' -f1)
  if [ -z "$want" ] || [ "$have" != "$want" ]; then
    fail "host: /random-$t.bin sha256 $have, the guest recorded '$want'"
  fi
  rm -f "$WORK/host-$t.bin"
  log "host: debugfs reads /hello-$t.txt and /random-$t.bin (sha256 ${have:0:16}...) as written"
done
T_END=$(date +%s.%N)
log "PASS ($(awk -v a="$T_START" -v b="$T_END" 'BEGIN{printf "%.1f", b-a}') s, ${REFERENCE:-mirrord} over $MODE)"
