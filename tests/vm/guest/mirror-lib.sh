#!/bin/sh
# shellcheck shell=sh
# mirror-lib.sh - guest helpers for the mirrored-pair kernel tests (busybox ash).
#
# Packed by tests/vm/kernel-mirror.sh through EXTRA_BINS (so it lands in /usr/local/bin);
# guest tests start with:  . /usr/local/bin/mirror-lib.sh
#
# Both daemons run INSIDE the guest, on its own loopback: alpha (primary) and beta
# (secondary), images in the initramfs (RAM) under $PAIR. The primary is attached as /dev/nbd0
# by the kernel's NBD client over 127.0.0.1:$NBD_PORT (export "db").
#
# Environment (GUEST_ENV): VOL_SIZE (default 64M).
# VOL_KEYS: extra lines for the [volume] table.
# ALPHA_KEYS / BETA_KEYS: extra lines for that node's table (the kernel-attach tests set
# device = "/dev/nbd0" etc. there; mirrord then attaches the device itself).
# shellcheck disable=SC1091  # packed from tests/vm/guest/lib.sh
. /lib/vmtest.sh

PAIR=/tmp/pair
VOL_SIZE=${VOL_SIZE:-64M}
NBD_PORT=10809     # the primary's NBD listener
NBD_PORT_B=10810   # the secondary's (read-only)
A_IMG=$PAIR/a.img
B_IMG=$PAIR/b.img

# On failure: both daemons' logs (guest-init then prints dmesg and the verdict).
pair_on_exit() {
  _rc=$?
  if [ "$_rc" != 0 ]; then
    for _n in alpha beta; do
      echo "---- $_n.log (last 25 lines) ----"
      tail -n 25 "$PAIR/$_n.log" 2>/dev/null
    done
    mirrorctl --socket "$PAIR/alpha.ctl" status 2>&1
  fi
  exit "$_rc"
}
trap pair_on_exit EXIT

# start_node NAME: start mirrord for NAME (log $PAIR/NAME.log, pid $PAIR/NAME.pid); returns
# once its ready file exists.
start_node() { start_mirrord "$PAIR" "$1" --config "$PAIR/vol.toml" --node "$1"; }

# stop_node NAME: SIGTERM; it must exit 0.
stop_node() { stop_mirrord "$PAIR" "$1"; }

# kill9_node NAME
kill9_node() {
  _pid=$(cat "$PAIR/$1.pid")
  kill -9 "$_pid" || die "mirrord $1 (pid $_pid) is not running"
  wait "$_pid" 2>/dev/null
  step "mirrord $1 (pid $_pid) killed with SIGKILL"
}

ctl() { _n=$1; shift; mirrorctl --socket "$PAIR/$_n.ctl" "$@"; }

# status_field NODE KEY: a top-level scalar of `mirrorctl status --json` (pretty-printed,
# top-level keys indented by two spaces; no jq or python in the guest).
status_field() {
  ctl "$1" status --json 2>/dev/null |
    sed -n "s/^  \"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p"
}

# wait_state NODE STATE [SECONDS]
wait_state() {
  _limit=$((${3:-60} * 10)) _i=0 _s=
  while :; do
    _s=$(status_field "$1" state)
    [ "$_s" = "$2" ] && break
    _i=$((_i + 1))
    [ $_i -le $_limit ] || die "$1: state '$_s' after ${3:-60} s, expected '$2'"
    usleep 100000
  done
  step "$1 is $2 (out of sync $(status_field "$1" out_of_sync_bytes) bytes)"
}

# pair_config: fresh (sparse) images and the volume file; no daemon started.
pair_config() {
  rm -rf "$PAIR"
  mkdir -p "$PAIR"
  for _img in "$A_IMG" "$B_IMG"; do  # a block device (a test's A_IMG) is used as it is
    [ -b "$_img" ] || truncate -s "$VOL_SIZE" "$_img" || die "truncate $_img failed"
  done
  cat >"$PAIR/vol.toml" <<EOF
[volume]
name = "db"
size = "$VOL_SIZE"
secret = "vm-test-secret-0123456789"
primary = "alpha"
ack-timeout = "2s"
${VOL_KEYS:-}

[[node]]
name = "alpha"
address = "127.0.0.1:7788"
backing = "$A_IMG"
metadata = "$PAIR/a.meta"
nbd-listen = ["127.0.0.1:$NBD_PORT", "unix:$PAIR/alpha.nbd"]
control = "$PAIR/alpha.ctl"
${ALPHA_KEYS:-}

[[node]]
name = "beta"
address = "127.0.0.1:7789"
backing = "$B_IMG"
metadata = "$PAIR/b.meta"
nbd-listen = ["127.0.0.1:$NBD_PORT_B", "unix:$PAIR/beta.nbd"]
control = "$PAIR/beta.ctl"
${BETA_KEYS:-}
EOF
  chmod 600 "$PAIR/vol.toml"
}

# pair_start: pair_config, then beta and alpha, synchronized.
pair_start() {
  pair_config
  start_node beta
  start_node alpha
  wait_state alpha synchronized 120   # a new pair: the full initial sync
}

# attach_primary: /dev/nbd0 = the primary's export "db" over the guest's loopback.
attach_primary() {
  # shellcheck disable=SC2034  # read by nbd_connect (lib.sh)
  VM_NBD_HOST=127.0.0.1 VM_NBD_PORT=$NBD_PORT
  nbd_connect /dev/nbd0 netlink -N db
}

# images_equal WHAT: cmp the two backing files (the copies the daemons wrote).
# (md5sum first: busybox cmp takes seconds per 64 MiB; cmp names the first difference.)
images_equal() {
  _a=$(md5sum <"$A_IMG" | cut -d' ' -f1) _b=$(md5sum <"$B_IMG" | cut -d' ' -f1)
  if [ -z "$_a" ] || [ "$_a" != "$_b" ]; then
    cmp "$A_IMG" "$B_IMG"
    die "$1: a.img and b.img differ (md5 '$_a' and '$_b')"
  fi
  step "$1: a.img and b.img identical, md5 $_a"
}

# no_io_errors: the kernel logged no block-layer or ext4 errors.
no_io_errors() {
  if dmesg | grep -iE 'I/O error|blk_update_request|EXT4-fs error|Buffer I/O|nbd[0-9]+: (Receive|Send|Connection|Dead|Other)'; then
    die "the kernel logged I/O errors (above)"
  fi
  step "dmesg: no I/O errors"
}

# mkfs_mount: ext4 on /dev/nbd0 mounted at /mnt.
mkfs_mount() {
  run mkfs.ext4 -q -F -L mirror-vm /dev/nbd0
  # noinit_itable: no ext4lazyinit writes racing with the comparisons
  run mount -t ext4 -o noinit_itable /dev/nbd0 /mnt
  step "ext4 on /dev/nbd0 mounted at /mnt"
}

# write_files TEXT MIB N BLOCKS: on /mnt, hello.txt (TEXT), random.bin (MIB MiB of random
# data) and dir/small1.bin .. dir/smallN.bin (I * BLOCKS random 4 KiB blocks each); their
# md5sums in /tmp/sums (for remount_verify).
write_files() {
  echo "$1" >/mnt/hello.txt || die "write failed"
  run dd if=/dev/urandom of=/mnt/random.bin bs=1M count="$2" 2>/dev/null
  run mkdir /mnt/dir
  _i=1
  while [ $_i -le "$3" ]; do
    run dd if=/dev/urandom of="/mnt/dir/small$_i.bin" bs=4k count=$((_i * $4)) 2>/dev/null
    _i=$((_i + 1))
  done
  (cd /mnt && md5sum hello.txt random.bin dir/*) >/tmp/sums || die "md5sum failed"
  step "wrote hello.txt, random.bin ($2 MiB) and $3 small files"
}

# remount_verify OPTIONS: umount /mnt, flush /dev/nbd0's buffers, drop the page cache, mount
# /dev/nbd0 again with OPTIONS: every checksum in /tmp/sums must match (read from the pair).
remount_verify() {
  run umount /mnt
  run blockdev --flushbufs /dev/nbd0
  echo 3 >/proc/sys/vm/drop_caches
  run mount -t ext4 -o "$1" /dev/nbd0 /mnt
  (cd /mnt && md5sum -c /tmp/sums) >/tmp/sums.out 2>&1 ||
    { cat /tmp/sums.out; die "checksums differ after remount"; }
  step "remounted (-o $1): all $(wc -l </tmp/sums) checksums match"
}

# device_field NODE KEY: a scalar of the "device" object of `mirrorctl status --json`
# (indented by four spaces).
device_field() {
  ctl "$1" status --json 2>/dev/null |
    sed -n "s/^    \"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p"
}

# expect_attached DEV NODE: mirrord NODE attached DEV itself: the kernel reports our backend
# identifier and a size, and `mirrorctl status` shows the device attached.
expect_attached() {
  _sys=/sys/block/${1#/dev/}
  [ "$(cat "$_sys/backend" 2>/dev/null)" = "mirrord:db:$2" ] ||
    die "$1: backend '$(cat "$_sys/backend" 2>/dev/null)', expected mirrord:db:$2"
  [ "$(blockdev --getsize64 "$1")" -gt 0 ] || die "$1 has size 0"
  [ "$(device_field "$2" state)" = attached ] || die "$2 status: device $(device_field "$2" state)"
  [ "$(device_field "$2" path)" = "$1" ] || die "$2 status: device path $(device_field "$2" path)"
  step "$1 attached by mirrord $2: backend $(cat "$_sys/backend"), $(blockdev --getsize64 "$1") bytes," \
       "$(device_field "$2" connections) connection(s), api $(device_field "$2" api)"
}

# expect_detached DEV: the kernel released DEV (no client pid, size 0).
expect_detached() {
  _sys=/sys/block/${1#/dev/}
  _i=0
  while [ -e "$_sys/pid" ] || [ "$(cat "$_sys/size")" != 0 ]; do
    _i=$((_i + 1))
    [ $_i -le 100 ] || die "$1 still attached (pid $(cat "$_sys/pid" 2>/dev/null), size $(cat "$_sys/size"))"
    usleep 50000
  done
  step "$1 detached: no pid, size 0"
}

# no_block_errors: no I/O error reached the block layer or ext4 (a device left attached
# across a restart logs its dead connection, which is not one).
no_block_errors() {
  if dmesg | grep -iE 'I/O error|blk_update_request|EXT4-fs error|Buffer I/O'; then
    die "the kernel logged I/O errors (above)"
  fi
}

# load_start FILES: in the background, write /mnt/f1 .. /mnt/fFILES with conv=fsync: a copy
# of /tmp/srcI when the test prepared one, else 1 MiB from /dev/urandom; it stops early once
# /tmp/load.stop exists. Progress in /tmp/load.progress, errors in /tmp/load.err; the loop's
# pid in LOAD.
load_start() {
  rm -f /tmp/load.stop
  (
    i=1
    while [ $i -le "$1" ] && [ ! -e /tmp/load.stop ]; do
      if [ -e "/tmp/src$i" ]; then
        dd if="/tmp/src$i" of="/mnt/f$i" bs=128k conv=fsync 2>>/tmp/load.err
      else
        dd if=/dev/urandom of="/mnt/f$i" bs=256k count=4 conv=fsync 2>>/tmp/load.err
      fi || { echo "write $i failed" >>/tmp/load.err; exit 1; }
      echo $i >/tmp/load.progress
      i=$((i + 1))
    done
  ) &
  LOAD=$!
}

# load_wait N: until the write loop has written N files (60 s at most); it must not fail
# meanwhile.
load_wait() {
  _i=0
  while [ "$(cat /tmp/load.progress 2>/dev/null || echo 0)" -lt "$1" ]; do
    kill -0 "$LOAD" 2>/dev/null || die "the write loop ended at file" \
      "$(cat /tmp/load.progress 2>/dev/null || echo 0): $(tail -n 3 /tmp/load.err 2>/dev/null)"
    _i=$((_i + 1)); [ $_i -le 1200 ] || die "the write loop made no progress in 60 s"
    usleep 50000
  done
  step "write loop at file $(cat /tmp/load.progress)"
}

# fsck_clean DEV: e2fsck -fn finds no error on the (unmounted) DEV.
fsck_clean() {
  e2fsck -fn "$1" >/tmp/e2fsck.log 2>&1 || { cat /tmp/e2fsck.log; die "e2fsck -fn $1 found errors"; }
  step "e2fsck -fn $1 clean: $(tail -n1 /tmp/e2fsck.log)"
}

# pair_finish: umount, disconnect, both daemons SIGTERM (exit 0), images identical,
# e2fsck -fn clean on both.
pair_finish() {
  run sync
  run umount /mnt
  run blockdev --flushbufs /dev/nbd0
  nbd_disconnect /dev/nbd0
  stop_node alpha
  stop_node beta
  images_equal "after shutdown"
  e2fsck -fn "$A_IMG" >/tmp/e2fsck.log 2>&1 || { cat /tmp/e2fsck.log; die "e2fsck -fn a.img found errors"; }
  e2fsck -fn "$B_IMG" >/tmp/e2fsck.log 2>&1 || { cat /tmp/e2fsck.log; die "e2fsck -fn b.img found errors"; }
  step "e2fsck -fn clean on both images: $(tail -n1 /tmp/e2fsck.log)"
}

# attached_load_start FILES AFTER: the pair with /dev/nbd0 attached by alpha itself, ext4 on
# it, FILES source files, and the fsync write loop (load_start) past file AFTER.
attached_load_start() {
  local files=$1 after=$2 i=1
  pair_start
  expect_attached /dev/nbd0 alpha
  mkfs_mount
  while [ $i -le "$files" ]; do
    dd if=/dev/urandom of="/tmp/src$i" bs=128k count=4 2>/dev/null || die "cannot prepare /tmp/src$i"
    i=$((i + 1))
  done
  load_start "$files"
  load_wait "$after"
}

# reattached_verify FILES WHAT: a new alpha took /dev/nbd0 over with RECONFIGURE; the write
# loop ended without an error across WHAT; every file equals its source after a remount;
# e2fsck -fn is clean and the kernel logged no I/O error. Leaves /mnt unmounted.
reattached_verify() {
  local files=$1 what=$2 i=1
  grep -q "re-attached export 'db' to /dev/nbd0 (RECONFIGURE" "$PAIR/alpha.log" ||
    die "the new primary did not re-attach /dev/nbd0 with RECONFIGURE"
  [ "$(device_field alpha reattached)" = true ] || die "status does not say re-attached"
  step "mirrord alpha re-attached /dev/nbd0: $(grep 're-attached' "$PAIR/alpha.log" | tail -n1 | cut -c1-120)"
  wait "$LOAD" || die "the writer saw an error across $what: $(cat /tmp/load.err 2>/dev/null)"
  step "all $files files written with conv=fsync across $what, no error"
  run sync
  expect_attached /dev/nbd0 alpha
  run umount /mnt
  echo 3 >/proc/sys/vm/drop_caches
  run mount -t ext4 -o ro /dev/nbd0 /mnt
  while [ $i -le "$files" ]; do
    cmp "/tmp/src$i" "/mnt/f$i" || die "f$i differs from what was written"
    i=$((i + 1))
  done
  step "remounted: all $files files equal to their sources"
  run umount /mnt
  e2fsck -fn /dev/nbd0 >/tmp/e2fsck.log 2>&1 || { cat /tmp/e2fsck.log; die "e2fsck -fn /dev/nbd0 found errors"; }
  step "e2fsck -fn /dev/nbd0 clean: $(tail -n1 /tmp/e2fsck.log)"
  no_block_errors
  step "dmesg: no I/O errors ($(dmesg | grep -c 'nbd0: Connection timed out') request timeouts retried," \
       "$(dmesg | grep -c 'nbd0: reconnected socket') sockets reconnected)"
}

# faulty_pair_files FAULTS TEXT: the pair with alpha started under MIRRORD_FAULTS=FAULTS
# (docs/reliability.md), /dev/nbd0 attached by alpha, ext4 mounted on it at /mnt with
# write_files TEXT 4 4 2 (checksums in /tmp/sums).
faulty_pair_files() {
  export MIRRORD_FAULTS="$1"
  pair_start
  unset MIRRORD_FAULTS
  expect_attached /dev/nbd0 alpha
  mkfs_mount
  write_files "$2" 4 4 2
}

# wait_log NODE TEXT: until NODE's log has a line with TEXT (30 s at most).
wait_log() {
  _i=0
  until grep -q "$2" "$PAIR/$1.log"; do
    _i=$((_i + 1))
    [ $_i -le 600 ] || die "$1 did not log '$2' within 30 s"
    usleep 50000
  done
}

# pair_start_lost_primary: the pair with both devices attached by mirrord (alpha /dev/nbd0,
# beta /dev/nbd1), for tests that lose the primary: its device fails its I/O 3 s after its
# mirrord is gone instead of waiting 120 s for a new one.
pair_start_lost_primary() {
  ALPHA_KEYS='device = "/dev/nbd0"
dead-connection-timeout = "3s"'
  BETA_KEYS='device = "/dev/nbd1"'
  pair_start
  expect_attached /dev/nbd0 alpha
  expect_attached /dev/nbd1 beta
}

# --- An SQLite database as the application (vm.mirror_split_sqlite, vm.mirror_failover_sqlite;
# kernel-mirror.sh packs sqlite3). Table t: id 1, 2, ... each in its own transaction, v the
# text 'row ID', pad 3000 random bytes. The writer's record of what committed is
# $COMMITTED: one id per line, written after its COMMIT returned ("FAILED ID" once one fails).
COMMITTED=/tmp/committed
sql() { sqlite3 -cmd ".timeout 10000" "$@"; }
last_committed() { grep -v FAILED "$COMMITTED" | tail -n 1; }

# db_writer_start FILE: create the database (WAL) and commit one transaction after another in
# the background (synchronous=FULL: each COMMIT is an fsync) until /tmp/stop-writer exists or
# a transaction fails; its pid in WRITER. Returns once 30 have committed.
db_writer_start() {
  run sql "$1" "PRAGMA journal_mode=WAL;" "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, pad BLOB);"
  : >"$COMMITTED"
  (
    i=0
    while [ ! -e /tmp/stop-writer ]; do
      i=$((i + 1))
      sql "$1" "PRAGMA synchronous=FULL;" \
        "INSERT INTO t VALUES($i, printf('row %d', $i), randomblob(3000));" >/dev/null 2>&1 ||
        { echo "FAILED $i" >>"$COMMITTED"; exit 1; }
      echo "$i" >>"$COMMITTED"
    done
  ) &
  WRITER=$!
  db_wait_committed 30
  step "writer: $(last_committed) transactions committed on $1"
}

# db_wait_committed N: until the writer has committed id N (60 s at most).
db_wait_committed() {
  _i=0
  until [ "$(last_committed)" -ge "$1" ] 2>/dev/null; do
    _i=$((_i + 1)); [ $_i -le 600 ] || die "the writer did not reach $1 committed in 60 s"; sleep 0.1
  done
}

# db_check FILE LOW HIGH WHAT: the database passes integrity_check, holds ids 1..max with no
# gap and no damaged row, and LOW <= max <= HIGH (every transaction committed before the
# moment checked, none that began after it). max in DB_MAX.
db_check() {
  _ic=$(sql "$1" "PRAGMA integrity_check;")
  [ "$_ic" = ok ] || die "$4: integrity_check says: $_ic"
  # shellcheck disable=SC2046  # four numbers
  set -- "$@" $(sql -separator ' ' "$1" "SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0), (SELECT count(*) FROM t WHERE v != printf('row %d', id) OR length(pad) != 3000) FROM t;")
  DB_MAX=$7
  step "$4: integrity ok; $5 rows, ids $6..$7, $8 damaged"
  [ "$8" = 0 ] || die "$4: $8 rows whose contents are not what was committed"
  [ "$7" -ge "$2" ] || die "$4: transactions committed before are missing (max id $7 < $2)"
  [ "$7" -le "$3" ] || die "$4: transactions of after the moment are there (max id $7 > $3)"
  [ "$5" = "$7" ] && [ "$6" -le 1 ] || die "$4: gaps: $5 rows for ids $6..$7"
}
