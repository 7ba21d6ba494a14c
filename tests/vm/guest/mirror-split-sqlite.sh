#!/bin/sh
# shellcheck shell=sh
# mirror-split-sqlite.sh - guest test vm.mirror_split_sqlite: the product's main job for a
# database, on the real kernel. An SQLite database (WAL, synchronous=FULL: every commit is
# an fsync, a FLUSH to /dev/nbd0) on ext4 over the mirrored /dev/nbd0 takes one committed
# transaction after another while the operator splits the mirror for a backup:
#   mirrorctl split --pre 'sqlite3 ... wal_checkpoint' --freeze /mnt --post ...
# The secondary's image is then a point-in-time backup: its database (copied out with
# debugfs, as a restore would) passes PRAGMA integrity_check, holds every transaction
# committed before the split began (the writer's own record) and none that began after it
# ended, with no gap, and takes new transactions. The writer never stops: the rejoin
# copies the changed blocks back while it commits, and at the end the primary's database
# holds every committed transaction and the two images are identical.
# Environment (GUEST_ENV): VOL_SIZE (default 64M).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh
DB=/mnt/app.db
COMMITTED=/tmp/committed   # the writer's record: one id per line, after its COMMIT returned
SNAP=$PAIR/snapshot.img
R=/tmp/restore
sql() { sqlite3 -cmd ".timeout 10000" "$@"; }

pair_start
attach_primary
mkfs_mount

run sql "$DB" "PRAGMA journal_mode=WAL;" "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, pad BLOB);"
: >"$COMMITTED"
writer() {
  i=0
  while [ ! -e /tmp/stop-writer ]; do
    i=$((i + 1))
    sql "$DB" "PRAGMA synchronous=FULL;" \
      "INSERT INTO t VALUES($i, printf('row %d', $i), randomblob(3000));" >/dev/null ||
      { echo "FAILED $i" >>"$COMMITTED"; return 1; }
    echo "$i" >>"$COMMITTED"
  done
}
writer &
WRITER=$!
last_committed() { grep -v FAILED "$COMMITTED" | tail -n 1; }
_n=0
until [ "$(last_committed)" -ge 30 ] 2>/dev/null; do
  _n=$((_n + 1)); [ $_n -le 600 ] || die "the writer committed nothing in 60 s"; sleep 0.1
done
step "writer: $(last_committed) transactions committed on the primary"

BEFORE=$(last_committed)
# The database's own quiesce first (its WAL checkpointed into the main file), then the
# file system frozen around the split instant.
run ctl alpha split --pre "sqlite3 -cmd '.timeout 10000' $DB 'PRAGMA wal_checkpoint(PASSIVE);'" \
  --freeze /mnt --post "echo thawed" --timeout 60
AFTER=$(last_committed)
wait_state alpha split 10
step "split with the writer running: committed $BEFORE before it began, $AFTER when it returned"

# Keep committing after the split, then take the backup from the secondary's image.
_n=0
until [ "$(last_committed)" -ge $((AFTER + 20)) ]; do
  _n=$((_n + 1)); [ $_n -le 600 ] || die "the writer stalled after the split"; sleep 0.1
done
run cp "$B_IMG" "$SNAP"
fsck_clean "$SNAP"
mkdir -p "$R"
for f in app.db app.db-wal; do
  if debugfs -R "stat /$f" "$SNAP" 2>&1 | grep -q "File not found"; then continue; fi
  debugfs -R "dump /$f $R/$f" "$SNAP" >/dev/null 2>&1 || die "debugfs could not copy /$f out"
done
[ -s "$R/app.db" ] || die "the backup has no /app.db"
ic=$(sql "$R/app.db" "PRAGMA integrity_check;")
[ "$ic" = ok ] || die "the backup's database: integrity_check says: $ic"
set -- $(sql -separator ' ' "$R/app.db" "SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0), (SELECT count(*) FROM t WHERE v != printf('row %d', id) OR length(pad) != 3000) FROM t;")
count=$1 min=$2 max=$3 bad=$4
step "backup: integrity ok; $count rows, ids $min..$max, $bad damaged"
[ "$bad" = 0 ] || die "the backup holds $bad rows whose contents are not what was committed"
[ "$max" -ge "$BEFORE" ] || die "the backup lacks transactions committed before the split ($max < $BEFORE)"
# A transaction whose COMMIT returned just before the freeze is recorded by the writer
# just after: AFTER + 1 at most.
[ "$max" -le $((AFTER + 1)) ] || die "the backup holds transactions of after the split ($max > $AFTER + 1)"
[ "$count" = "$max" ] && [ "$min" -le 1 ] || die "the backup has gaps: $count rows for ids $min..$max"
run sql "$R/app.db" "INSERT INTO t VALUES($((max + 1)), 'restored', zeroblob(3000));"
step "the restored database takes a new transaction"

run ctl alpha rejoin --wait
wait_state alpha synchronized 30
step "rejoined with the writer running: $(last_committed) committed"
touch /tmp/stop-writer
wait "$WRITER" || die "the writer failed: $(grep FAILED "$COMMITTED")"
LAST=$(last_committed)
ic=$(sql "$DB" "PRAGMA integrity_check;")
[ "$ic" = ok ] || die "the primary's database: integrity_check says: $ic"
set -- $(sql -separator ' ' "$DB" "SELECT count(*), max(id) FROM t;")
[ "$1" = "$LAST" ] && [ "$2" = "$LAST" ] || die "the primary's database: $1 rows, max id $2; the writer committed $LAST"
step "primary: integrity ok, every one of the $LAST committed transactions there"
no_io_errors
pair_finish
step "mirror_split_sqlite: OK"
