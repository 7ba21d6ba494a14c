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
#      "refusing further writes until restart"; reads work; stopped (SIGTERM), it exits 1,
#      after every sync error below too (it acknowledged writes that may be lost), and 0
#      after a clean run. A restarted daemon writes and flushes again, and the data
#      acknowledged before the failure reads back from disk.
#   2. lone FUA path: a fresh daemon, the disk failing, one 4 KiB aligned FUA write with
#      nothing else in flight (the O_DIRECT + RWF_DSYNC path: the daemon's closing log
#      must count it as "1 direct+dsync") fails with EIO, and after the disk is restored
#      writes and flushes still fail until restart.
# Without the stickiness both "STILL fail" checks fail: the page cache forgot the failed
# pages and the next fdatasync has nothing left to report.
#   4. (runs before 3, on the same stack) the same through a volume (--config, a primary whose peer never
#      starts): the FLUSH fails, later writes and flushes fail (sticky), SIGTERM exits 1.
#   3. ENOSPC from a sync half: XFS on a full dm-thin pool; a FUA write reports ENOSPC (not
#      sticky) for a page an acknowledged plain write had dirtied; the next FLUSH must fail.
#      It succeeded while buffered RWF_DSYNC writes shared the descriptor fdatasync uses.
# shellcheck disable=SC1091  # packed from tests/vm/guest/lib.sh
. /lib/vmtest.sh

W=/tmp/syncerr
DM=syncerr
DEV=/dev/mapper/$DM
IMG=/mnt/disk.img
IMG_MIB=16
PORT=10809
URI=nbd://127.0.0.1:$PORT/disk
N=0              # daemon runs: log $W/run$N.log
IO_OUT=$W/io.out  # qemu-io's output (nbd_io, lib.sh; qio callers)
# dmsetup without udev creates the /dev/mapper nodes itself
export DM_DISABLE_UDEV=1

on_exit() {
  _rc=$?
  if [ "$_rc" != 0 ]; then
    # A failure between suspend and resume would leave ext4 hanging on the suspended device.
    dmsetup resume "$DM" 2>/dev/null
    if [ -f "$W/run$N.log" ]; then
      echo "---- run$N.log (last 30 lines) ----"
      tail -n 30 "$W/run$N.log"
    fi
    echo "---- the backing file's extents, the table loaded last, the live table ----"
    cat "$W/extents" "$W/table" 2>/dev/null
    dmsetup table "$DM" 2>&1
  fi
  exit "$_rc"
}
trap on_exit EXIT

# run_start: a fresh mirrord on the export, run N+1 (log $W/runN.log).
run_start() {
  N=$((N + 1))
  start_mirrord "$W" "run$N" --export "disk=$IMG" --listen "127.0.0.1:$PORT"
}

# run_stop_after_sync_error: a daemon that refused writes after a failed sync must not exit
# 0 on SIGTERM: writes it acknowledged before the failure may be lost, and exit status 1 (as
# when its own fdatasync at stop fails, daemon/main.cc) tells systemd and the operator so.
run_stop_after_sync_error() {
  stop_mirrord "$W" "run$N" 1
  grep -q "stopping after a failed sync: acknowledged writes may be lost" "$W/run$N.log" ||
    die "mirrord did not log why it exits 1"
  step "ok: mirrord exited 1 after the sync error and logged why"
}

# qio ARGS...: qemu-io on the export. Cache mode writeback: qemu-io's default, writethrough,
# would send every write with FUA; here only `write -f` does.
qio() { qemu-io -f raw -t writeback "$URI" "$@"; }

# io_ok DESC qemu-io-commands...: nbd_io (lib.sh) on the export, in qio's cache mode.
io_ok() { _d=$1; shift; nbd_io "$_d" "$URI" -t writeback "$@"; }

# io_fails DESC write|flush qemu-io-commands...: qemu-io must exit non-zero, and
#   write: the client sees "write failed: Input/output error";
#   flush: the last command is the flush, qemu-io reached the export, and no command before
#          the flush failed (qemu-io 7.2's flush prints nothing when it fails: its failure is
#          the exit status; a client that cannot connect also exits 1, with "Failed to
#          connect" / "can't open device", which must not pass for a failed flush).
io_fails() {
  _desc=$1 _what=$2; shift 2
  _rc=0
  qio "$@" >"$IO_OUT" 2>&1 || _rc=$?
  _seen=0
  case "$_what" in
    write) grep -q "^write failed: Input/output error" "$IO_OUT" && _seen=1 ;;
    flush) for _last in "$@"; do :; done
           [ "$_last" = flush ] && ! grep -qiE "failed|can't open" "$IO_OUT" && _seen=1 ;;
  esac
  if [ "$_rc" = 0 ] || [ "$_seen" = 0 ]; then
    cat "$IO_OUT"
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
run_start
io_ok "write 1 MiB of 0x5a at 0 and flush (the disk works)" \
  -c 'write -P 0x5a 0 1M' -c 'flush' -c 'read -P 0x5a 0 1M'
set_table error
# A plain write lands in the page cache and succeeds; the FLUSH that follows must fail.
io_fails "a FLUSH with the disk failing" flush -c 'write -P 0x6b 2M 1M' -c 'flush'
grep -q "^wrote 1048576/1048576 bytes at offset 2097152" "$IO_OUT" ||
  { cat "$IO_OUT"; die "a plain write with the disk failing was not acknowledged"; }
step "ok: the plain write before it was acknowledged (page cache)"
io_fails "a FUA write with the disk failing" write -c 'write -f -P 0x7c 4M 4k'
set_table linear
io_fails "a FLUSH after the disk is restored (sticky)" flush -c 'flush'
io_fails "a write after the disk is restored (sticky)" write -c 'write -P 0x11 5M 4k'
io_fails "a FUA write after the disk is restored (sticky)" write -c 'write -f -P 0x11 5M 4k'
grep -q "refusing further writes until restart" "$W/run$N.log" ||
  die "mirrord did not log 'refusing further writes until restart'"
step "ok: mirrord logged: $(grep -m1 'refusing further writes' "$W/run$N.log")"
# Reads go on, from the disk (qemu-io -r: a read-only client sends no flush at close).
echo 3 >/proc/sys/vm/drop_caches
io_ok "reads work after the sync error; data flushed before it reads back" -r \
  -c 'read -P 0x5a 0 1M'
kill -0 "$(cat "$W/run$N.pid")" 2>/dev/null || die "mirrord died after the sync error"
run_stop_after_sync_error

# What is on the disk now, not in the page cache.
echo 3 >/proc/sys/vm/drop_caches
run_start
io_ok "after a restart: data flushed before the failure reads back from disk" \
  -r -c 'read -P 0x5a 0 1M'
io_ok "after a restart: writes and flushes work again" \
  -c 'write -P 0x22 6M 1M' -c 'flush' -c 'write -f -P 0x23 7M 4k' -c 'read -P 0x22 6M 1M' \
  -c 'read -P 0x23 7M 4k'
stop_mirrord "$W" "run$N"

# --------------------------------------------------------- 2. the lone FUA write path ----
run_start
set_table error
io_fails "a lone 4 KiB aligned FUA write with the disk failing" write \
  -c 'write -f -P 0x33 8M 4k'
set_table linear
io_fails "a write after the disk is restored (sticky after the FUA write)" write \
  -c 'write -P 0x44 9M 4k'
io_fails "a FLUSH after the disk is restored (sticky after the FUA write)" flush -c 'flush'
grep -q "write with RWF_DSYNC failed: Input/output error; refusing further writes until restart" \
  "$W/run$N.log" || die "mirrord did not log the failed RWF_DSYNC write as sticky"
step "ok: mirrord logged: $(grep -m1 'refusing further writes' "$W/run$N.log")"
run_stop_after_sync_error
# The closing log counts how FUA writes were made durable: the one above went direct.
grep -q "FUA writes: 1 direct+dsync, 0 buffered+dsync, 0 group-committed" \
  "$W/run$N.log" || { grep "FUA writes" "$W/run$N.log"; \
  die "the lone FUA write did not take the O_DIRECT + RWF_DSYNC path"; }
step "ok: the lone FUA write took the O_DIRECT + RWF_DSYNC path"

echo 3 >/proc/sys/vm/drop_caches
run_start
io_ok "after a restart: every acknowledged write reads back" -r \
  -c 'read -P 0x5a 0 1M' -c 'read -P 0x22 6M 1M' -c 'read -P 0x23 7M 4k'
io_ok "after a restart: writes and flushes work" -c 'write -P 0x55 9M 4k' -c 'flush'
stop_mirrord "$W" "run$N"

# ------------------------------------------ 4. a volume's primary (--config), alone ----
# The same sticky error and exit status 1 through a volume (the mirroring path: Volume,
# Replicator) as through --export. Its peer never starts: the primary serves alone, so the
# failed FLUSH is its own disk's. The volume is named "disk", like the export, so URI holds.
cat >"$W/vol.toml" <<EOF
[volume]
name = "disk"
size = "${IMG_MIB}M"
secret = "vm-test-secret-0123456789"
primary = "alpha"

[[node]]
name = "alpha"
address = "127.0.0.1:7788"
backing = "$IMG"
metadata = "$W/alpha.meta"
nbd-listen = ["127.0.0.1:$PORT"]
control = "$W/alpha.ctl"

[[node]]
name = "beta"
address = "127.0.0.1:7789"
backing = "$W/beta.img"
metadata = "$W/beta.meta"
control = "$W/beta.ctl"
EOF
chmod 600 "$W/vol.toml"
N=$((N + 1))
start_mirrord "$W" "run$N" --config "$W/vol.toml" --node alpha
# A new volume on a file that already holds data (preallocated here): its
# copy has no recorded history, so the primary serves reads only until its
# peer connects or the operator takes this copy as the current one.
qio -c 'write -P 0x65 10M 4k' >"$IO_OUT" 2>&1 || true
# (The export is read-only: qemu-io cannot even open it for writing.)
grep -qE "^write failed: Operation not permitted|Could not open image: Permission denied" "$IO_OUT" ||
  { cat "$IO_OUT"; die "volume: a write before the operator confirms the copy was not refused"; }
step "ok: volume: the export is read-only before the operator confirms the copy: $(tail -n 1 "$IO_OUT")"
mirrorctl --socket "$W/alpha.ctl" promote --force >"$W/promote.out" 2>&1 ||
  die "mirrorctl promote --force: $(cat "$W/promote.out")"
step "mirrorctl promote --force: $(cat "$W/promote.out")"
io_ok "volume: write and flush (the disk works)" -c 'write -P 0x66 10M 1M' -c 'flush'
set_table error
io_fails "volume: a FLUSH with the disk failing" flush -c 'write -P 0x67 11M 1M' -c 'flush'
set_table linear
io_fails "volume: a write after the disk is restored (sticky)" write -c 'write -P 0x68 12M 4k'
io_fails "volume: a FLUSH after the disk is restored (sticky)" flush -c 'flush'
run_stop_after_sync_error

run umount /mnt
run dmsetup remove "$DM"
run losetup -d "$LOOP"
rm -f "$W/lower.img"   # guest RAM, for the next stack

# ------------------------------------------- 3. ENOSPC reported by an RWF_DSYNC write ----
# Thin provisioning: XFS on a dm-thin volume with a snapshot, in a full pool
# ("error_if_no_space"): an overwrite of a block shared with the snapshot needs a new pool
# block and fails with ENOSPC. A plain write of one page of the backing file is acknowledged
# from the page cache. A lone unaligned FUA write into the same page (buffered + RWF_DSYNC)
# writes the page back; that fails with ENOSPC and the kernel forgets the page, the plain
# write's bytes with it. ENOSPC is no sticky error (the client is told this FUA write
# failed), but the plain write acknowledged before is lost: a later FLUSH must fail, never
# report it durable. XFS, not ext4: the guest's ext4 (6.1) records every writeback error as
# EIO, which is sticky anyway; XFS keeps the ENOSPC. Its log is on a device of its own, out
# of the full pool.
run truncate -s 8M "$W/tmeta.img"
run truncate -s 32M "$W/tdata.img"
run truncate -s 64M "$W/xlog.img"
TMETA=$(losetup -f) || die "no free loop device"
run losetup "$TMETA" "$W/tmeta.img"
TDATA=$(losetup -f) || die "no free loop device"
run losetup "$TDATA" "$W/tdata.img"
XLOG=$(losetup -f) || die "no free loop device"
run losetup "$XLOG" "$W/xlog.img"
run dd if=/dev/zero of="$TMETA" bs=4096 count=1 2>/dev/null   # a new pool's metadata
# 64 KiB pool blocks, no low-water mark, fail (not queue) writes when full
run dmsetup create syncerr-pool \
  --table "0 $(blockdev --getsz "$TDATA") thin-pool $TMETA $TDATA 128 0 1 error_if_no_space"
run dmsetup message syncerr-pool 0 "create_thin 0"
run dmsetup message syncerr-pool 0 "create_thin 2"
run dmsetup create syncerr-thin --table "0 655360 thin /dev/mapper/syncerr-pool 0"   # 320 MiB
run dmsetup create syncerr-fill --table "0 655360 thin /dev/mapper/syncerr-pool 2"
# 320 MiB: mkfs.xfs's minimum. -K: no discard.
run mkfs.xfs -q -K -l logdev="$XLOG",size=64m /dev/mapper/syncerr-thin
run mount -t xfs -o logdev="$XLOG" /dev/mapper/syncerr-thin /mnt
run dd if=/dev/zero of="$IMG" bs=1M count=$IMG_MIB conv=fsync 2>/dev/null
# The snapshot (thin id 1) shares every block; the origin's next overwrite needs new ones.
run dmsetup suspend syncerr-thin
run dmsetup message syncerr-pool 0 "create_snap 1 0"
run dmsetup resume syncerr-thin
# Fill the pool through the other thin volume, until it stays full (the pool's commit after
# the first ENOSPC may free blocks).
_i=0
while :; do
  dd if=/dev/zero of=/dev/mapper/syncerr-fill bs=64k oflag=direct 2>"$W/fill.out" &&
    die "filling the pool did not end with an error"
  grep -q "No space left on device" "$W/fill.out" ||
    { cat "$W/fill.out"; die "the pool did not fill with ENOSPC"; }
  sync
  dmsetup status syncerr-pool >"$W/pool" 2>&1
  grep -q out_of_data_space "$W/pool" && break
  _i=$((_i + 1))
  [ $_i -lt 5 ] || { cat "$W/pool"; die "the thin pool does not stay out of space"; }
done
step "thin pool full: $(cat "$W/pool")"

run_start
qio -c 'write -P 0x77 8M 4k' -c 'write -f -P 0x78 8388708 100' >"$IO_OUT" 2>&1
if ! grep -q "^wrote 4096/4096 bytes at offset 8388608" "$IO_OUT" ||
   ! grep -q "^write failed: No space left on device" "$IO_OUT"; then
  cat "$IO_OUT"
  die "expected the plain write acknowledged, the FUA write failing with ENOSPC"
fi
step "ok: a plain write is acknowledged, the unaligned FUA write into its page fails with ENOSPC"
io_fails "a FLUSH after the ENOSPC (the acknowledged write never reached the disk)" flush \
  -c 'flush'
# Sticky from now on, with EIO: ENOSPC would tell the client that freeing space helps.
io_fails "a later write fails with EIO (sticky), not ENOSPC" write -c 'write -P 0x79 12M 4k'
run_stop_after_sync_error
grep -q "FUA writes: 0 direct+dsync, 1 buffered+dsync, 0 group-committed" \
  "$W/run$N.log" || { grep "FUA writes" "$W/run$N.log"; \
  die "the unaligned FUA write did not take the buffered RWF_DSYNC path"; }
step "ok: the unaligned FUA write took the buffered RWF_DSYNC path"
# No umount: XFS's own metadata writeback into the full pool would fail too.
step "sync_error: OK"
