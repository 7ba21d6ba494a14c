#!/bin/sh
# shellcheck shell=sh
# sync-error.sh - guest test vm.sync_error: a disk that fails writes under mirrord's durable
# writes (nbd-backend/file_backend.cc; docs/nbd-server.md, "Durability and fsync errors").
#
# Storage stack, all in the guest kernel: a loop device over a file in RAM, a device-mapper
# table over it (dm "linear"), ext4 on the dm device, and on ext4 the backing file mirrord
# serves (prewritten, so no write needs new blocks). To make the disk fail, the table is
# swapped (suspend/load/resume) for one that maps the backing file's own extents to the dm
# "error" target and leaves the rest linear: data writes fail with EIO, while ext4's journal
# and metadata keep working, so ext4 never aborts and every error the client sees comes from
# mirrord's own writes and syncs. A real client (qemu-io) talks NBD to a single unmirrored
# mirrord on the guest's loopback.
#
#   1. flush path: a write and a FLUSH succeed; with the disk failing, a plain write still
#      succeeds (page cache) but the FLUSH fails with EIO, and so does a FUA write; the disk
#      restored, a later FLUSH and a later write STILL fail (sticky) and the daemon logs
#      "refusing further writes until restart"; reads work. A restarted daemon writes and
#      flushes again, and the data acknowledged before the failure reads back from disk.
#   2. lone FUA path: a fresh daemon, the disk failing, one 4 KiB aligned FUA write with
#      nothing else in flight (the O_DIRECT + RWF_DSYNC path: the daemon's closing log
#      must count it as "1 direct+dsync") fails with EIO, and after the disk is restored
#      writes and flushes still fail until restart.
# Without the stickiness both "STILL fail" checks fail: the page cache forgot the failed
# pages and the next fdatasync has nothing left to report.
. /lib/vmtest.sh

W=/tmp/syncerr
DM=syncerr
DEV=/dev/mapper/$DM
IMG=/mnt/disk.img
IMG_MIB=16
PORT=10809
URI=nbd://127.0.0.1:$PORT/disk
N=0              # daemon runs: log $W/mirrord.$N.log
PID=
# dmsetup without udev creates the /dev/mapper nodes itself
export DM_DISABLE_UDEV=1

on_exit() {
  _rc=$?
  if [ "$_rc" != 0 ]; then
    # A failure between suspend and resume would leave ext4 hanging on the suspended device.
    dmsetup resume "$DM" 2>/dev/null
    if [ -f "$W/mirrord.$N.log" ]; then
      echo "---- mirrord.$N.log (last 30 lines) ----"
      tail -n 30 "$W/mirrord.$N.log"
    fi
    echo "---- the backing file's extents, the table loaded last, the live table ----"
    cat "$W/extents" "$W/table" 2>/dev/null
    dmsetup table "$DM" 2>&1
  fi
  exit "$_rc"
}
trap on_exit EXIT

start_mirrord() {
  N=$((N + 1))
  rm -f "$W/ready"
  mirrord --export "disk=$IMG" --listen "127.0.0.1:$PORT" --ready-file "$W/ready" \
    --log-level info >"$W/mirrord.$N.log" 2>&1 &
  PID=$!
  _i=0
  while [ ! -s "$W/ready" ]; do
    kill -0 "$PID" 2>/dev/null || die "mirrord exited at start"
    _i=$((_i + 1))
    [ $_i -le 600 ] || die "mirrord wrote no ready file in 30 s"
    usleep 50000
  done
  step "mirrord run $N (pid $PID) ready"
}

# stop_mirrord: SIGTERM, wait; its exit status in STOP_RC.
stop_mirrord() {
  kill -TERM "$PID" || die "mirrord (pid $PID) is not running"
  STOP_RC=0
  wait "$PID" || STOP_RC=$?
  PID=
  step "mirrord run $N exited with status $STOP_RC"
}

# qio ARGS...: qemu-io on the export. Cache mode writeback: qemu-io's default, writethrough,
# would send every write with FUA; here only `write -f` does.
qio() { qemu-io -f raw -t writeback "$URI" "$@"; }

# io_ok DESC qemu-io-commands...: every command must succeed; patterns read back must match.
io_ok() {
  _desc=$1; shift
  _rc=0
  qio "$@" >"$W/io.out" 2>&1 || _rc=$?
  if [ "$_rc" != 0 ] || grep -q "failed" "$W/io.out"; then
    cat "$W/io.out"
    die "$_desc: qemu-io exited $_rc"
  fi
  step "ok: $_desc"
}

# io_fails DESC write|flush qemu-io-commands...: qemu-io must exit non-zero, and
#   write: the client sees "write failed: Input/output error";
#   flush: the last command is the flush, and no command before it failed (qemu-io 7.2's
#          flush prints nothing when it fails: its failure is the exit status).
io_fails() {
  _desc=$1 _what=$2; shift 2
  _rc=0
  qio "$@" >"$W/io.out" 2>&1 || _rc=$?
  _seen=0
  case "$_what" in
    write) grep -q "^write failed: Input/output error" "$W/io.out" && _seen=1 ;;
    flush) eval "_last=\${$#}"
           [ "$_last" = flush ] && ! grep -q "failed" "$W/io.out" && _seen=1 ;;
  esac
  if [ "$_rc" = 0 ] || [ "$_seen" = 0 ]; then
    cat "$W/io.out"
    die "$_desc: expected the $_what to fail with EIO (qemu-io exited $_rc)"
  fi
  step "fails as it must: $_desc"
}

# set_table linear|error: swap the dm table. --nolockfs: no ext4 freeze, so the swap itself
# writes nothing back; the test's own flushes and writes meet the failing disk.
set_table() {
  if [ "$1" = linear ]; then
    _t="0 $SECTORS linear $LOOP 0"
  else
    _t=$ERROR_TABLE
  fi
  printf '%s\n' "$_t" >"$W/table"
  run dmsetup suspend --nolockfs "$DM"
  run dmsetup load "$DM" "$W/table"
  run dmsetup resume "$DM"
  step "dm table: $1 ($(dmsetup table "$DM" | wc -l) targets)"
}

# ------------------------------------------------------------------------- the stack ----
mkdir -p "$W"
run truncate -s 96M "$W/lower.img"
LOOP=$(losetup -f) || die "no free loop device"
run losetup "$LOOP" "$W/lower.img"
SECTORS=$(blockdev --getsz "$LOOP")
run dmsetup create "$DM" --table "0 $SECTORS linear $LOOP 0"
[ -b "$DEV" ] || die "$DEV is not a block device after dmsetup create"
run mkfs.ext4 -q -b 4096 -E nodiscard "$DEV"
run mount -t ext4 "$DEV" /mnt
# Prewritten (not sparse): overwrites need no new blocks, so no data write touches metadata.
run dd if=/dev/zero of="$IMG" bs=1M count=$IMG_MIB conv=fsync 2>/dev/null
step "stack: $LOOP -> dm $DM -> ext4 -> $IMG ($IMG_MIB MiB)"

# The error table: the file's extents (filefrag, in 4 KiB blocks) map to "error", the gaps
# between them stay linear. Fails loudly if the extents cannot be read.
run filefrag -v -b4096 "$IMG" >"$W/extents"
ERROR_TABLE=$(awk -v total="$SECTORS" -v loop="$LOOP" '
  BEGIN { n = 0 }  # busybox awk: an unset n is the key "", not 0
  /^ *[0-9]+:/ {
    gsub(/[.:]+/, " ")
    # ext logical_start logical_end physical_start physical_end length ...
    start[n] = $4 * 8; len[n] = $6 * 8; n++
  }
  END {
    if (n == 0) exit 1
    # filefrag lists extents in logical order; sort by physical start (insertion sort).
    for (i = 1; i < n; i++)
      for (j = i; j > 0 && start[j - 1] > start[j]; j--) {
        t = start[j]; start[j] = start[j - 1]; start[j - 1] = t
        t = len[j]; len[j] = len[j - 1]; len[j - 1] = t
      }
    pos = 0
    for (i = 0; i < n; i++) {
      if (start[i] > pos) printf "%d %d linear %s %d\n", pos, start[i] - pos, loop, pos
      printf "%d %d error\n", start[i], len[i]
      pos = start[i] + len[i]
    }
    if (pos < total) printf "%d %d linear %s %d\n", pos, total - pos, loop, pos
  }' "$W/extents") || { cat "$W/extents"; die "no extents in filefrag's output"; }
step "the backing file has $(printf '%s\n' "$ERROR_TABLE" | grep -c ' error$') extent(s):" \
  "the error table fails them"

# ----------------------------------------------------------------- 1. the flush path ----
start_mirrord
io_ok "write 1 MiB of 0x5a at 0 and flush (the disk works)" \
  -c 'write -P 0x5a 0 1M' -c 'flush' -c 'read -P 0x5a 0 1M'
set_table error
# A plain write lands in the page cache and succeeds; the FLUSH that follows must fail.
io_fails "a FLUSH with the disk failing" flush -c 'write -P 0x6b 2M 1M' -c 'flush'
grep -q "^wrote 1048576/1048576 bytes at offset 2097152" "$W/io.out" ||
  { cat "$W/io.out"; die "a plain write with the disk failing was not acknowledged"; }
step "ok: the plain write before it was acknowledged (page cache)"
io_fails "a FUA write with the disk failing" write -c 'write -f -P 0x7c 4M 4k'
set_table linear
io_fails "a FLUSH after the disk is restored (sticky)" flush -c 'flush'
io_fails "a write after the disk is restored (sticky)" write -c 'write -P 0x11 5M 4k'
io_fails "a FUA write after the disk is restored (sticky)" write -c 'write -f -P 0x11 5M 4k'
grep -q "refusing further writes until restart" "$W/mirrord.$N.log" ||
  die "mirrord did not log 'refusing further writes until restart'"
step "ok: mirrord logged: $(grep -m1 'refusing further writes' "$W/mirrord.$N.log")"
# Reads go on, from the disk (qemu-io -r: a read-only client sends no flush at close).
echo 3 >/proc/sys/vm/drop_caches
qio -r -c 'read -P 0x5a 0 1M' >"$W/io.out" 2>&1 &&
  ! grep -q "failed" "$W/io.out" || { cat "$W/io.out"; die "reads fail after the sync error"; }
step "ok: reads work after the sync error; data flushed before it reads back"
kill -0 "$PID" 2>/dev/null || die "mirrord died after the sync error"
stop_mirrord

# What is on the disk now, not in the page cache.
echo 3 >/proc/sys/vm/drop_caches
start_mirrord
io_ok "after a restart: data flushed before the failure reads back from disk" \
  -r -c 'read -P 0x5a 0 1M'
io_ok "after a restart: writes and flushes work again" \
  -c 'write -P 0x22 6M 1M' -c 'flush' -c 'write -f -P 0x23 7M 4k' -c 'read -P 0x22 6M 1M' \
  -c 'read -P 0x23 7M 4k'
stop_mirrord
[ "$STOP_RC" = 0 ] || die "mirrord exited $STOP_RC on SIGTERM after a clean run"

# --------------------------------------------------------- 2. the lone FUA write path ----
start_mirrord
set_table error
io_fails "a lone 4 KiB aligned FUA write with the disk failing" write \
  -c 'write -f -P 0x33 8M 4k'
set_table linear
io_fails "a write after the disk is restored (sticky after the FUA write)" write \
  -c 'write -P 0x44 9M 4k'
io_fails "a FLUSH after the disk is restored (sticky after the FUA write)" flush -c 'flush'
grep -q "write with RWF_DSYNC failed: Input/output error; refusing further writes until restart" \
  "$W/mirrord.$N.log" || die "mirrord did not log the failed RWF_DSYNC write as sticky"
step "ok: mirrord logged: $(grep -m1 'refusing further writes' "$W/mirrord.$N.log")"
stop_mirrord
# The closing log counts how FUA writes were made durable: the one above went direct.
grep -q "FUA writes: 1 direct+dsync, 0 buffered+dsync, 0 group-committed" \
  "$W/mirrord.$N.log" || { grep "FUA writes" "$W/mirrord.$N.log"; \
  die "the lone FUA write did not take the O_DIRECT + RWF_DSYNC path"; }
step "ok: the lone FUA write took the O_DIRECT + RWF_DSYNC path"

echo 3 >/proc/sys/vm/drop_caches
start_mirrord
io_ok "after a restart: every acknowledged write reads back" -r \
  -c 'read -P 0x5a 0 1M' -c 'read -P 0x22 6M 1M' -c 'read -P 0x23 7M 4k'
io_ok "after a restart: writes and flushes work" -c 'write -P 0x55 9M 4k' -c 'flush'
stop_mirrord
[ "$STOP_RC" = 0 ] || die "mirrord exited $STOP_RC on SIGTERM after a clean run"

run umount /mnt
run dmsetup remove "$DM"
run losetup -d "$LOOP"
step "sync_error: OK"
