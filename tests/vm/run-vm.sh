#!/usr/bin/env bash
# run-vm.sh - run a guest test script against the REAL Linux kernel NBD client (/dev/nbdX).
#
# The host kernel may lack nbd.ko (and nested KVM), so this boots Debian's packaged kernel
# (linux-image-amd64, which ships nbd.ko/ext4.ko/raid1.ko/drbd.ko) in qemu, TCG if need be:
#
#   host : a host-side NBD server (SERVER_CMD, default: nbdkit serving a scratch file) on
#          127.0.0.1:$PORT or on the Unix socket $SERVER_UNIX.
#   guest: PVH direct boot of the extracted vmlinux + a busybox initramfs with the Debian
#          kernel's modules, nbd-client, mke2fs, e2fsck and EXTRA_BINS. guest-init.sh (PID 1)
#          runs GUEST_TEST and prints "VMTEST-RESULT: PASS" only when it exits 0.
#   net  : slirp with restrict=on. The guest reaches ONE address, $VM_NBD_HOST:$VM_NBD_PORT
#          (10.0.2.100:10809), which qemu forwards per connection with
#          `socat STDIO TCP:127.0.0.1:$PORT` (or UNIX-CONNECT:$SERVER_UNIX). Nothing else.
#
# Exit status: 0 PASS, 1 FAIL (console tail printed), 77 SKIP (no qemu or no Debian kernel).
#
# Settings (environment, all optional):
#   GUEST_TEST   guest sh script to run (default tests/vm/guest/fs-roundtrip.sh); it may
#                source /lib/vmtest.sh (tests/vm/guest/lib.sh) for step/die/nbd_connect,
#                start_mirrord/stop_mirrord and nbd_io (qemu-io).
#   GUEST_ENV    "VAR=value ..." exported to the guest test (values without spaces)
#   SERVER_CMD   host server command, run in the foreground (exec'd, word-split), output in
#                $WORK/server.log. Default: nbdkit serving $WORK/disk.img ($DISK_SIZE).
#                "none": use a server that is already listening.
#                The server is stopped with SIGTERM after the VM and must exit 0 (set
#                SERVER_EXIT_CHECK=0 to not care).
#   READY_FILE   file the server creates once it listens (mirrord --ready-file, nbdkit -P).
#                Waited for before booting. With PORT=0 the port is read from its
#                "tcp HOST:PORT" line. Without READY_FILE the script polls `ss` / the socket.
#   PORT         host TCP port of the server (default 10809; 0 = take it from READY_FILE)
#   SERVER_UNIX  the server listens on this Unix socket instead (no commas)
#   WORK         scratch dir (default: a fresh mktemp dir); must be unique per parallel run
#   VM_CACHE     where the base initramfs and vmlinux are cached (default $WORK/cache);
#                may be shared by parallel runs (files are replaced atomically)
#   MEM          guest MiB (default 256; 128 works, 96 does not boot)
#   SMP          guest CPUs (default 1)
#   TIMEOUT      VM wall-clock limit in s (default 240); the guest watchdog fires 20 s earlier
#   ACCEL        auto (default: kvm if usable, else tcg) | kvm | tcg
#   EXTRA_BINS   host executables to pack, same paths, + symlink in /usr/local/bin: paths,
#                or names found on PATH (a missing one fails the run); their shared
#                libraries are packed too; debug info is stripped from the copies
#   EXTRA_LIBS   extra shared libraries to pack (sonames or paths)
#   EXTRA_MODULES extra kernel modules (+deps), loaded at boot: e.g. "raid1 drbd"
#   SHARE_DIR    host dir exported read-only over virtio-9p at guest /share (mount tag
#                hostshare)
#   GUEST_INIT   a script packed as /init instead of guest-init.sh (e.g. systemd-init.sh,
#                which boots the host's systemd); it must print the VMTEST-RESULT line itself
#   KVER         guest kernel version (default: newest /boot/vmlinuz-* with nbd.ko)
#   VERBOSE=1    stream the guest console live (else only the VMTEST-STEP lines at the end)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GUEST_TEST=${GUEST_TEST:-$HERE/guest/fs-roundtrip.sh}
GUEST_ENV=${GUEST_ENV:-}
MEM=${MEM:-256}
SMP=${SMP:-1}
TIMEOUT=${TIMEOUT:-240}
ACCEL=${ACCEL:-auto}
SERVER_UNIX=${SERVER_UNIX:-}
SERVER_CMD=${SERVER_CMD:-}
SERVER_EXIT_CHECK=${SERVER_EXIT_CHECK:-1}
READY_FILE=${READY_FILE:-}
PORT=${PORT:-10809}
DISK_SIZE=${DISK_SIZE:-64M}
VERBOSE=${VERBOSE:-0}
GUEST_ADDR=10.0.2.100   # what the guest dials; slirp forwards it to the host server
GUEST_PORT=10809

log()  { echo "[run-vm] $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
skip() { log "SKIP: $*"; exit 77; }
now()  { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }
T_START=$(now)

# ------------------------------------------------------------------------ prerequisites ----
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
if [ -z "${KVER:-}" ]; then
  for k in $(find /boot -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' 2>/dev/null | sed 's/^vmlinuz-//' | sort -V -r); do
    if [ -e "/lib/modules/$k/kernel/drivers/block/nbd.ko" ]; then KVER=$k; break; fi
  done
fi
[ -n "${KVER:-}" ] || skip "no /boot/vmlinuz-* with a matching nbd.ko (apt-get install linux-image-amd64)"
KERNEL=/boot/vmlinuz-$KVER
if [ ! -e "$KERNEL" ] || [ ! -e "/lib/modules/$KVER/kernel/drivers/block/nbd.ko" ]; then
  skip "kernel $KVER or its nbd.ko not installed"
fi
[ -r "$KERNEL" ] || fail "cannot read $KERNEL (Debian installs it mode 0600: run as root)"
for t in busybox nbd-client mke2fs e2fsck cpio depmod modprobe socat ss ldd python3 sha256sum; do
  command -v "$t" >/dev/null || fail "missing tool: $t (run scripts/install-deps.sh)"
done
[ -r "$GUEST_TEST" ] || fail "GUEST_TEST not readable: $GUEST_TEST"
# EXTRA_BINS as absolute paths, each found now: a missing tool fails before any packing.
BINS=
for b in ${EXTRA_BINS:-}; do
  p=$(command -v "$b" || echo "$b")
  case "$p" in /*) ;; *) p=$(pwd)/$p;; esac
  [ -x "$p" ] || fail "EXTRA_BINS: missing tool: $b (run scripts/install-deps.sh)"
  BINS="$BINS $p"
done
[ -z "${GUEST_INIT:-}" ] || [ -r "$GUEST_INIT" ] || fail "GUEST_INIT not readable: $GUEST_INIT"
case "$SERVER_UNIX" in *,*) fail "commas are not allowed in SERVER_UNIX (qemu option syntax)";; esac

if [ -z "${WORK:-}" ]; then WORK=$(mktemp -d "${TMPDIR:-/tmp}/run-vm.XXXXXX"); fi
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
VM_CACHE=${VM_CACHE:-$WORK/cache}
mkdir -p "$VM_CACHE"
CONSOLE=$WORK/console.log
SERVER_LOG=$WORK/server.log
rm -f "$CONSOLE"
log "guest kernel $KVER, work dir $WORK"

# ------------------------------------------------------------------------------ packing ----
# Base initramfs: busybox, nbd-client, e2fsprogs, modules, /init. Cached under a key of all
# its inputs. The per-run part (EXTRA_BINS, the guest test, its environment) is a second cpio
# archive appended to it: the kernel unpacks concatenated newc archives in order.
R=
copy_file() {  # copy $1 (following symlinks) to the same path inside $R
  install -D -m "$(stat -L -c %a "$1")" "$(readlink -f "$1")" "$R$1"
}
copy_libs() {  # shared libraries needed by $1 (none for static binaries)
  local lib
  for lib in $(ldd "$1" 2>/dev/null | awk '/=> \//{print $3} /^\t\//{print $1}'); do
    [ -e "$R$lib" ] || copy_file "$lib"
  done
}
copy_bin() { copy_file "$1"; copy_libs "$1"; }
pack() {  # pack $R into cpio $1 (uncompressed: unpacks faster than gzip under TCG)
  (cd "$R" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) > "$1.tmp.$$"
  mv "$1.tmp.$$" "$1"
}

MODULES="virtio_pci virtio_net nbd ext4 ${EXTRA_MODULES:-}"
[ -z "${SHARE_DIR:-}" ] || MODULES="$MODULES 9pnet_virtio 9p"
BASE_TOOLS="$(command -v busybox) $(command -v nbd-client) $(command -v mke2fs) $(command -v e2fsck)"
base_key() {
  {
    echo "$KVER $MODULES"
    local f
    for f in $BASE_TOOLS /etc/mke2fs.conf "/lib/modules/$KVER/modules.dep"; do
      [ -e "$f" ] && stat -L -c '%n %s %Y' "$f"
    done
    cat "$HERE/guest-init.sh" "$HERE/guest/lib.sh"
  } | sha256sum | cut -c1-16
}
build_base() {  # $1 = output cpio
  R=$WORK/root-base
  rm -rf "$R"
  mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,lib,proc,sys,dev,tmp,mnt,run,root}
  # busybox applets in /bin; the real tools in /usr/sbin come first in the guest PATH
  # (busybox's mke2fs cannot make ext4 and it has no nbd-client).
  local bb a m p
  bb=$(readlink -f "$(command -v busybox)")
  install -m755 "$bb" "$R/bin/busybox"; copy_libs "$bb"
  for a in $(busybox --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
  ln -s /bin/busybox "$R/sbin/modprobe"
  copy_bin "$(command -v nbd-client)"
  copy_bin "$(command -v mke2fs)"; ln -sf mke2fs "$R$(dirname "$(command -v mke2fs)")/mkfs.ext4"
  copy_bin "$(command -v e2fsck)"
  [ -e /etc/mke2fs.conf ] && copy_file /etc/mke2fs.conf   # else the ext4 defaults are odd

  # Modules and their dependencies from the DEBIAN kernel's tree (not the host's), then
  # depmod so busybox modprobe resolves dependencies in the guest.
  for m in $MODULES; do
    for p in $(modprobe -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'); do
      p=/lib/modules/$KVER/${p#*/lib/modules/"$KVER"/}
      [ -e "$R$p" ] || install -D -m644 "$p" "$R$p"
    done
  done
  cp /lib/modules/"$KVER"/modules.{order,builtin,builtin.modinfo} "$R/lib/modules/$KVER/"
  depmod -b "$R" "$KVER"
  mkdir -p "$R/etc/modprobe.d"
  echo "options nbd nbds_max=16 max_part=15" > "$R/etc/modprobe.d/nbd.conf"

  install -m755 "$HERE/guest-init.sh" "$R/init"
  install -m644 "$HERE/guest/lib.sh" "$R/lib/vmtest.sh"
  pack "$1"
  rm -rf "$R"
}
shquote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
build_run() {  # $1 = output cpio: EXTRA_BINS, EXTRA_LIBS, the guest test, /etc/vmtest.env
  R=$WORK/root-run
  rm -rf "$R"; mkdir -p "$R/etc" "$R/usr/local/bin"
  local b kv
  for b in $BINS; do
    copy_bin "$b"
    # debug info only slows unpacking; keep symbols for backtraces
    objcopy --strip-debug "$R$b" 2>/dev/null || true
    [ -e "$R/usr/local/bin/$(basename "$b")" ] || ln -s "$b" "$R/usr/local/bin/$(basename "$b")"
  done
  for b in ${EXTRA_LIBS:-}; do
    case "$b" in /*) ;; *) b=$(ldconfig -p | awk -v n="$b" '$1==n && /x86-64/{print $NF; exit}');; esac
    if [ -z "$b" ] || [ ! -e "$b" ]; then fail "EXTRA_LIBS: library not found"; fi
    copy_bin "$b"
  done
  install -m755 "$GUEST_TEST" "$R/guest-test.sh"
  # A later archive's file replaces the base archive's: this /init wins.
  [ -z "${GUEST_INIT:-}" ] || install -m755 "$GUEST_INIT" "$R/init"
  {
    echo "VM_NBD_HOST=$GUEST_ADDR"
    echo "VM_NBD_PORT=$GUEST_PORT"
    echo "VM_SHARE=${SHARE_DIR:+1}"
    echo "VM_MODULES=$(shquote "${EXTRA_MODULES:-}")"
    echo "VM_TEST_NAME=$(shquote "$(basename "$GUEST_TEST")")"
    echo "VM_GUEST_TIMEOUT=$((TIMEOUT > 60 ? TIMEOUT - 20 : TIMEOUT * 2 / 3))"
    for kv in $GUEST_ENV; do
      [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || fail "GUEST_ENV entry is not VAR=value: $kv"
      echo "${kv%%=*}=$(shquote "${kv#*=}")"
    done
  } > "$R/etc/vmtest.env"
  pack "$1"
  rm -rf "$R"
}

BASE=$VM_CACHE/initrd-base-$KVER-$(base_key).cpio
# forget bases nobody used for a day (a parallel run may still read a newer one)
find "$VM_CACHE" -maxdepth 1 \( -name 'initrd-base-*.cpio' -o -name 'vmlinux-*' \) -mtime +1 -delete 2>/dev/null || true
if [ -s "$BASE" ]; then
  touch "$BASE"
  log "reusing cached $(basename "$BASE")"
else
  build_base "$BASE"
  log "built $(basename "$BASE") ($(du -h "$BASE" | cut -f1))"
fi
build_run "$WORK/initrd-run.cpio"
cat "$BASE" "$WORK/initrd-run.cpio" > "$WORK/initrd.cpio"

# PVH direct boot of the uncompressed ELF vmlinux: skips the real-mode setup and the in-guest
# xz decompression (~3 s under TCG). Needs qemu >= 4.0 and CONFIG_PVH=y (Debian has both).
VMLINUX=$VM_CACHE/vmlinux-$KVER-$(stat -L -c '%s-%Y' "$KERNEL")
if [ -s "$VMLINUX" ]; then
  touch "$VMLINUX"
else
  python3 - "$KERNEL" "$VMLINUX.tmp.$$" <<'PYEOF'
import lzma, sys
d = open(sys.argv[1], 'rb').read()
i = d.find(b'\xfd7zXZ\x00')          # Debian amd64 kernels: CONFIG_KERNEL_XZ=y
if i < 0:
    sys.exit("no xz payload in " + sys.argv[1])
out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(d[i:])
if out[:4] != b'\x7fELF':
    sys.exit("xz payload of " + sys.argv[1] + " is not an ELF vmlinux")
open(sys.argv[2], 'wb').write(out)
PYEOF
  mv "$VMLINUX.tmp.$$" "$VMLINUX"
  log "extracted $(basename "$VMLINUX")"
fi
T_PACKED=$(now)

# -------------------------------------------------------------------------- host server ----
SERVER_PID=
SERVER_RC=
stop_server() {  # SIGTERM, then wait up to 15 s; sets SERVER_RC
  [ -n "$SERVER_PID" ] || return 0
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      log "server pid $SERVER_PID still running 15 s after SIGTERM: SIGKILL"
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
  fi
  SERVER_RC=0
  wait "$SERVER_PID" 2>/dev/null || SERVER_RC=$?
  SERVER_PID=
}
QEMU_PID=
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
  [ -z "$QEMU_PID" ] || kill "$QEMU_PID" 2>/dev/null || true
  stop_server
}
trap cleanup EXIT
trap 'exit 130' INT TERM

show_failure() {
  if [ -s "$CONSOLE" ]; then
    log "---- last 60 lines of the guest console ($CONSOLE) ----"
    tail -n 60 "$CONSOLE" | sed 's/\r$//' >&2
  fi
  if [ -s "$SERVER_LOG" ]; then
    log "---- last 30 lines of the server log ($SERVER_LOG) ----"
    tail -n 30 "$SERVER_LOG" >&2
  fi
}

if [ "$SERVER_CMD" = none ]; then
  log "using the server already listening on ${SERVER_UNIX:-127.0.0.1:$PORT}"
else
  if [ -z "$SERVER_CMD" ]; then
    rm -f "$WORK/disk.img"; truncate -s "$DISK_SIZE" "$WORK/disk.img"
    READY_FILE=$WORK/nbdkit.pid   # nbdkit writes its pid file once it accepts connections
    [ "$PORT" != 0 ] || fail "the default nbdkit server needs a fixed PORT (or SERVER_UNIX)"
    if [ -n "$SERVER_UNIX" ]; then
      SERVER_CMD="nbdkit -f -P $READY_FILE -U $SERVER_UNIX file $WORK/disk.img"
    else
      SERVER_CMD="nbdkit -f -P $READY_FILE -i 127.0.0.1 -p $PORT file $WORK/disk.img"
    fi
  fi
  [ -z "$READY_FILE" ] || rm -f "$READY_FILE"
  [ -z "$SERVER_UNIX" ] || rm -f "$SERVER_UNIX"
  log "host server: $SERVER_CMD"
  # shellcheck disable=SC2086  # SERVER_CMD is a command line
  bash -c "exec $SERVER_CMD" </dev/null >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  server_died() {
    stop_server
    show_failure
    fail "server exited (status $SERVER_RC) before it was ready: $SERVER_CMD"
  }
  # Wait for the server's readiness signal (its ready file), or failing that for the listener.
  deadline=$(( $(date +%s) + 30 ))
  while :; do
    if [ -n "$READY_FILE" ]; then
      [ -s "$READY_FILE" ] && break
    elif [ -n "$SERVER_UNIX" ]; then
      [ -S "$SERVER_UNIX" ] && break
    else
      ss -Hltn "sport = :$PORT" | grep -q . && break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || server_died
    [ "$(date +%s)" -lt "$deadline" ] || { show_failure; fail "server not ready after 30 s: $SERVER_CMD"; }
    sleep 0.05
  done
fi
if [ -z "$SERVER_UNIX" ] && [ "$PORT" = 0 ]; then
  [ -n "$READY_FILE" ] || fail "PORT=0 needs READY_FILE to learn the port"
  PORT=$(awk '$1=="tcp"{n=split($2,a,":"); print a[n]; exit}' "$READY_FILE")
  if ! [[ $PORT =~ ^[1-9][0-9]*$ ]]; then fail "no 'tcp HOST:PORT' line in $READY_FILE"; fi
fi
if [ -n "$SERVER_UNIX" ]; then
  TARGET="UNIX-CONNECT:$SERVER_UNIX"
  [ -S "$SERVER_UNIX" ] || fail "SERVER_UNIX $SERVER_UNIX is not a socket"
else
  TARGET="TCP:127.0.0.1:$PORT"
fi
log "server ready at ${SERVER_UNIX:-127.0.0.1:$PORT}"

# --------------------------------------------------------------------------------- qemu ----
if [ "$ACCEL" = auto ]; then
  # /dev/kvm alone is not enough: under nested PVM (kvm_pvm, no vmx/svm in cpuinfo) a stock
  # kernel crawls and dies with "KVM internal error".
  if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && [ ! -d /sys/module/kvm_pvm ]; then
    ACCEL=kvm
  else
    ACCEL=tcg
  fi
fi
CPU=max; [ "$ACCEL" = kvm ] && CPU=host
NIC="user,model=virtio-net-pci,restrict=on,guestfwd=tcp:$GUEST_ADDR:$GUEST_PORT-cmd:socat STDIO $(shquote "$TARGET")"
SHARE_ARGS=()
[ -z "${SHARE_DIR:-}" ] ||
  # multidevs=remap: a share spanning several host file systems (SHARE_DIR=/) keeps unique
  # inode numbers in the guest.
  SHARE_ARGS=(-virtfs "local,path=$SHARE_DIR,mount_tag=hostshare,security_model=none,readonly=on,multidevs=remap")
log "booting: accel=$ACCEL mem=${MEM}M smp=$SMP timeout=${TIMEOUT}s test=$(basename "$GUEST_TEST")"

T_BOOT=$(now)
qemu-system-x86_64 \
  -nodefaults -no-user-config -display none -no-reboot \
  -M pc -accel "$ACCEL" -cpu "$CPU" -smp "$SMP" -m "$MEM" \
  -kernel "$VMLINUX" -initrd "$WORK/initrd.cpio" \
  -append "console=ttyS0 panic=-1 quiet loglevel=4 tsc=reliable no_timer_check cryptomgr.notests ${APPEND_EXTRA:-}" \
  -serial "file:$CONSOLE" -monitor none \
  -nic "$NIC" "${SHARE_ARGS[@]}" </dev/null >"$WORK/qemu.log" 2>&1 &
QEMU_PID=$!
if [ "$VERBOSE" = 1 ]; then
  tail -n +1 -F "$CONSOLE" 2>/dev/null --pid="$QEMU_PID" &
fi
QRC=0
timed_out=0
deadline=$(( $(date +%s) + TIMEOUT ))
while kill -0 "$QEMU_PID" 2>/dev/null; do
  if [ "$(date +%s)" -ge "$deadline" ]; then timed_out=1; kill "$QEMU_PID" 2>/dev/null || true; break; fi
  if [ -n "$SERVER_PID" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "the host server exited while the guest was running"
    kill "$QEMU_PID" 2>/dev/null || true
    break
  fi
  sleep 0.2
done
wait "$QEMU_PID" 2>/dev/null || QRC=$?
QEMU_PID=
T_END=$(now)
[ "$VERBOSE" = 1 ] && sleep 0.3   # let tail -F print the last lines

# ------------------------------------------------------------------------------ verdict ----
stop_server
if [ "$SERVER_CMD" != none ] && [ "$SERVER_EXIT_CHECK" = 1 ] && [ "${SERVER_RC:-0}" != 0 ]; then
  show_failure
  fail "host server exit status $SERVER_RC (expected 0 after SIGTERM): $SERVER_CMD"
fi
[ "$VERBOSE" = 1 ] || grep -a '^VMTEST-\(STEP\|FAIL\)' "$CONSOLE" 2>/dev/null | sed 's/\r$//;s/^/  /' >&2 || true
if ! grep -aq '^VMTEST-RESULT: PASS' "$CONSOLE" 2>/dev/null; then
  show_failure
  [ ! -s "$WORK/qemu.log" ] || { log "---- qemu stderr ----"; cat "$WORK/qemu.log" >&2; }
  [ "$timed_out" = 0 ] || fail "VM did not finish within TIMEOUT=${TIMEOUT}s"
  reason=$(grep -a '^VMTEST-RESULT:' "$CONSOLE" 2>/dev/null | head -n1 | sed 's/\r$//' || true)
  fail "guest did not report PASS (${reason:-no result line}; qemu status $QRC)"
fi
log "PASS accel=$ACCEL pack=$(elapsed "$T_START" "$T_PACKED")s vm=$(elapsed "$T_BOOT" "$T_END")s total=$(elapsed "$T_START" "$T_END")s"
exit 0
