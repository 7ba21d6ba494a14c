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
SNAP=$PAIR/snapshot.img
R=/tmp/restore

pair_start
attach_primary
mkfs_mount
db_writer_start "$DB"

BEFORE=$(last_committed)
# The database's own quiesce first (its WAL checkpointed into the main file), then the
# file system frozen around the split instant.
run ctl alpha split --pre "sqlite3 -cmd '.timeout 10000' $DB 'PRAGMA wal_checkpoint(PASSIVE);'" \
  --freeze /mnt --post "echo thawed" --timeout 60
AFTER=$(last_committed)
wait_state alpha split 10
step "split with the writer running: committed $BEFORE before it began, $AFTER when it returned"

# Keep committing after the split, then take the backup from the secondary's image.
db_wait_committed $((AFTER + 20))
run cp "$B_IMG" "$SNAP"
fsck_clean "$SNAP"
mkdir -p "$R"
for f in app.db app.db-wal; do
  if debugfs -R "stat /$f" "$SNAP" 2>&1 | grep -q "File not found"; then continue; fi
  debugfs -R "dump /$f $R/$f" "$SNAP" >/dev/null 2>&1 || die "debugfs could not copy /$f out"
done
[ -s "$R/app.db" ] || die "the backup has no /app.db"
# A transaction whose COMMIT returned just before the freeze is recorded by the writer
# just after: AFTER + 1 at most.
db_check "$R/app.db" "$BEFORE" $((AFTER + 1)) "the backup"
run sql "$R/app.db" "INSERT INTO t VALUES($((DB_MAX + 1)), 'restored', zeroblob(3000));"
step "the restored database takes a new transaction"

run ctl alpha rejoin --wait
wait_state alpha synchronized 30
step "rejoined with the writer running: $(last_committed) committed"
touch /tmp/stop-writer
wait "$WRITER" || die "the writer failed: $(grep FAILED "$COMMITTED")"
LAST=$(last_committed)
db_check "$DB" "$LAST" "$LAST" "the primary"
no_io_errors
pair_finish
step "mirror_split_sqlite: OK"
