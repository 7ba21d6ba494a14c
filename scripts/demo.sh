#!/usr/bin/env bash
# demo.sh - see mirrord serve real NBD clients:   sudo ./scripts/demo.sh
#
# Installs the Debian packages (if missing), builds build/mirrord, starts it serving a fresh
# 256 MiB sparse file on a Unix socket and on a TCP loopback port the kernel picks, then:
#   1. nbdinfo         shows the export (size, flags, structured replies, base:allocation)
#   2. nbdcopy         writes 64 MiB of random data from a file over TCP (multi-conn)
#   3. nbdinfo --map   shows what is allocated now (block status)
#   4. qemu-io         writes a 1 MiB pattern at 96 MiB over the Unix socket, reads it back (-P)
#   5. nbdcopy         reads the whole disk back; sha256 against the source data and against
#                      the expected image (source + pattern + zeros)
#   6. SIGTERM         mirrord stops cleanly (exit 0); the backing file holds the same bytes
#
# Environment: MIRRORD (use this binary, skip the build), KEEP=1 (keep the temp dir).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DISK_SIZE=256M
DATA_MIB=64
PATTERN_OFFSET_MIB=96

TMP=
MIRRORD_PID=
STEP=0

# ------------------------------------------------------------------------- helpers ----
BOLD=; PLAIN=
if [ -t 1 ]; then BOLD=$'\033[1m'; PLAIN=$'\033[0m'; fi
say()  { printf '\n%s[%d] %s%s\n' "$BOLD" "$STEP" "$*" "$PLAIN"; }
step() { STEP=$((STEP + 1)); say "$@"; }
info() { echo "    $*"; }
die()  { echo "demo: FAILED: $*" >&2; exit 1; }
show() { echo "    \$ $*"; "$@" 2>&1 | sed 's/^/      /'; return "${PIPESTATUS[0]}"; }

cleanup() {
  if [ -n "$MIRRORD_PID" ] && kill -0 "$MIRRORD_PID" 2>/dev/null; then
    kill -TERM "$MIRRORD_PID" 2>/dev/null || true
    wait "$MIRRORD_PID" 2>/dev/null || true
  fi
  if [ -n "$TMP" ]; then
    if [ "${KEEP:-0}" = 1 ]; then echo "demo: kept $TMP"; else rm -rf "$TMP"; fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------- setup stages ----
install_deps() {
  step "Debian packages"
  "$ROOT/scripts/install-deps.sh"
}

build_mirrord() {
  if [ -n "${MIRRORD:-}" ]; then
    step "Using MIRRORD=$MIRRORD"
    [ -x "$MIRRORD" ] || die "$MIRRORD is not executable"
    return
  fi
  step "Building build/mirrord (RelWithDebInfo)"
  if [ ! -f "$ROOT/build/build.ninja" ]; then
    cmake -S "$ROOT" -B "$ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  fi
  ninja -C "$ROOT/build" mirrord
  MIRRORD=$ROOT/build/mirrord
}

# start_mirrord NAME IMG: serve IMG as export "disk" on $TMP/NAME.sock and 127.0.0.1:0.
# Sets MIRRORD_PID, SOCK, PORT once mirrord has written its ready file.
start_mirrord() {
  local name=$1 img=$2 ready=$TMP/$1.ready
  SOCK=$TMP/$name.sock
  rm -f "$ready" "$SOCK"
  "$MIRRORD" --export "disk=$img" --listen "unix:$SOCK" --listen 127.0.0.1:0 \
    --ready-file "$ready" --log-level info >"$TMP/$name.log" 2>&1 &
  MIRRORD_PID=$!
  local i
  for i in $(seq 200); do   # wait for the readiness signal, not a guess
    [ -s "$ready" ] && break
    kill -0 "$MIRRORD_PID" 2>/dev/null || { cat "$TMP/$name.log" >&2; die "mirrord exited at start"; }
    [ "$i" -lt 200 ] || die "mirrord wrote no ready file in 10 s"
    sleep 0.05
  done
  PORT=$(awk '$1=="tcp"{n=split($2,a,":"); print a[n]; exit}' "$ready")
  [[ $PORT =~ ^[0-9]+$ ]] || die "no tcp line in $ready: $(cat "$ready")"
  info "mirrord pid $MIRRORD_PID is ready; its ready file says:"
  sed 's/^/      /' "$ready"
}

stop_mirrord() {
  local rc=0
  kill -TERM "$MIRRORD_PID"
  wait "$MIRRORD_PID" || rc=$?
  MIRRORD_PID=
  [ "$rc" = 0 ] || { tail -n 20 "$TMP"/*.log >&2; die "mirrord exited with status $rc after SIGTERM"; }
  info "mirrord exited with status 0"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# ------------------------------------------------------------------ demo stages ----
demo_single() {
  TMP=$(mktemp -d /tmp/mirrord-demo.XXXXXX)
  local img=$TMP/disk.img src=$TMP/source.bin expected=$TMP/expected.img back=$TMP/readback.img
  truncate -s "$DISK_SIZE" "$img"

  step "Starting mirrord on a fresh $DISK_SIZE sparse file"
  show du -h --apparent-size "$img"
  start_mirrord node "$img"
  local unix_uri="nbd+unix:///disk?socket=$SOCK" tcp_uri="nbd://127.0.0.1:$PORT/disk"

  step "nbdinfo: what the server offers"
  show nbdinfo "$unix_uri"

  step "nbdcopy: write $DATA_MIB MiB of random data over TCP"
  head -c "${DATA_MIB}M" /dev/urandom >"$src"
  info "source sha256 $(sha "$src")"
  show nbdcopy --flush "$src" "$tcp_uri" || die "nbdcopy write failed"

  step "nbdinfo --map: allocation after the write (base:allocation)"
  show nbdinfo --map "$tcp_uri"

  step "qemu-io: write pattern 0xa5 at ${PATTERN_OFFSET_MIB} MiB over the Unix socket, read it back"
  local out
  info "\$ qemu-io -f raw -c 'write -P 0xa5 ${PATTERN_OFFSET_MIB}M 1M' -c flush" \
       "-c 'read -P 0xa5 ${PATTERN_OFFSET_MIB}M 1M' $unix_uri"
  out=$(qemu-io -f raw \
          -c "write -P 0xa5 ${PATTERN_OFFSET_MIB}M 1M" \
          -c "flush" \
          -c "read -P 0xa5 ${PATTERN_OFFSET_MIB}M 1M" "$unix_uri" 2>&1) || { echo "$out"; die "qemu-io failed"; }
  printf '      %s\n' "${out//$'\n'/$'\n'      }"
  ! grep -qi 'pattern verification failed\|error' <<<"$out" || die "qemu-io reported an error"
  grep -q '^read 1048576/1048576 bytes' <<<"$out" || die "qemu-io did not read the pattern back"

  step "nbdcopy: read the whole disk back and compare"
  show nbdcopy "$unix_uri" "$back" || die "nbdcopy read failed"
  # what the disk must hold: the source, then zeros, the pattern, zeros
  truncate -s "$DISK_SIZE" "$expected"
  dd if="$src" of="$expected" conv=notrunc status=none
  head -c 1M /dev/zero | tr '\0' '\245' |
    dd of="$expected" bs=1M seek="$PATTERN_OFFSET_MIB" conv=notrunc status=none
  local want_src have_src want_all have_all
  want_src=$(sha "$src")
  have_src=$(head -c "${DATA_MIB}M" "$back" | sha256sum | cut -d' ' -f1)
  want_all=$(sha "$expected")
  have_all=$(sha "$back")
  info "first $DATA_MIB MiB: read back $have_src"
  info "              source    $want_src"
  info "whole disk:   read back $have_all"
  info "              expected  $want_all"
  [ "$have_src" = "$want_src" ] || die "the data read back differs from the source"
  [ "$have_all" = "$want_all" ] || die "the disk read back differs from the expected image"
  info "match"

  step "SIGTERM: mirrord stops cleanly"
  stop_mirrord
  local on_disk
  on_disk=$(sha "$img")
  info "backing file sha256 $on_disk"
  [ "$on_disk" = "$want_all" ] || die "the backing file differs from what the clients wrote"
  show du -h "$img"
}

main() {
  [ "$(id -u)" = 0 ] || echo "demo: not root; this works only if every package is installed" >&2
  install_deps
  build_mirrord
  demo_single
  printf '\n%sdemo: all steps passed%s\n' "$BOLD" "$PLAIN"
}

main "$@"
