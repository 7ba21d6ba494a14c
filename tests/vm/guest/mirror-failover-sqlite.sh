#!/bin/sh
# shellcheck shell=sh
# mirror-failover-sqlite.sh - guest test vm.mirror_failover_sqlite: protocol C seen from a
# database. An SQLite database (WAL, synchronous=FULL: a COMMIT returns only after its fsync,
# a FLUSH through /dev/nbd0) on ext4 over the primary's /dev/nbd0 commits one transaction after
# another; the primary's mirrord is killed (kill -9) in the middle. `promote --force` makes
# the secondary primary and its /dev/nbd1 writable: ext4 replays its journal, the database
# passes PRAGMA integrity_check and holds every transaction whose COMMIT returned on the lost
# primary (the writer's own record), with no gap and nothing damaged, and takes new ones.
# Both devices are attached by mirrord (alpha /dev/nbd0, beta /dev/nbd1).
# Environment (GUEST_ENV): VOL_SIZE (default 64M).
# shellcheck disable=SC1091  # packed by kernel-mirror.sh through EXTRA_BINS
. /usr/local/bin/mirror-lib.sh

pair_start_lost_primary
mkfs_mount
db_writer_start /mnt/app.db
db_wait_committed 40
kill9_node alpha
step "alpha killed with the writer running ($(last_committed) committed at that moment)"
# The lost primary's device fails the writer's next I/O within the 3 s dead-connection-timeout.
_n=0
while kill -0 "$WRITER" 2>/dev/null; do
  _n=$((_n + 1)); [ $_n -le 300 ] || { kill -9 "$WRITER"; break; }; sleep 0.1
done
LAST=$(last_committed)
step "the writer stopped: $(grep FAILED "$COMMITTED" || echo 'no failure recorded'); $LAST committed"

ctl beta promote --force >/tmp/promote.out 2>&1 || { cat /tmp/promote.out; die "promote --force failed"; }
[ "$(blockdev --getro /dev/nbd1)" = 0 ] || die "/dev/nbd1 is still read-only after promote --force"
step "promote --force: $(cat /tmp/promote.out)"
mkdir -p /mnt2
echo 3 >/proc/sys/vm/drop_caches
run mount -t ext4 -o noinit_itable /dev/nbd1 /mnt2
# The transaction in flight at the kill may have reached both copies without its COMMIT
# returning: LAST + 1 at most.
db_check /mnt2/app.db "$LAST" $((LAST + 1)) "the new primary"
run sql /mnt2/app.db "PRAGMA synchronous=FULL;" "INSERT INTO t VALUES($((DB_MAX + 1)), 'after the failover', zeroblob(3000));"
step "the database takes new transactions on the new primary"
run umount /mnt2
fsck_clean /dev/nbd1
if dmesg | grep -iE 'I/O error|EXT4-fs error|Buffer I/O|Aborting journal' | grep nbd1; then
  die "the kernel logged I/O errors on /dev/nbd1 (above)"
fi
stop_node beta
expect_detached /dev/nbd1
step "mirror_failover_sqlite: OK"
