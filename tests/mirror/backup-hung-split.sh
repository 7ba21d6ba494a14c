#!/bin/bash
# backup-hung-split: `mirrorctl backup` against a primary that hangs (SIGSTOP
# here) when the backup asks for its split. The split request sits unread in
# the daemon's socket; mirrorctl gives up (exit 4) — but when the daemon
# resumes it reads that request and splits the pair, with no backup left to
# rejoin it: the primary would record every write as dirty for good and the
# secondary stay a stale image. mirrorctl must queue a rejoin behind the
# split it could not confirm, and say so; once the daemon resumes the pair
# must end synchronized, not split, and no partial backup file be left.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "needs mirrorctl"
start_synced_pair 30

out_file="$T/backup.img"
# The daemon hangs right before the split request (the --pre hook stops it):
# the status check before it was answered.
( timeout 90 "$MIRRORCTL" --config "$T/vol.toml" --node alpha backup --to "$out_file" \
      --pre "kill -STOP ${NODE_PID[alpha]}" --timeout 60 >"$T/backup.out" 2>&1
  echo $? >"$T/backup.rc" ) &
BG_PIDS+=("$!")
# The split's answer times out (15 s); the rejoin is then sent and waits too.
wait_for 40 grep -q "asking for a rejoin" "$T/backup.out" \
    && pass "mirrorctl backup says it queues a rejoin: $(tr '\n' ' ' <"$T/backup.out")" \
    || fail "mirrorctl backup did not queue a rejoin: $(tr '\n' ' ' <"$T/backup.out")"
sleep 1
kill -CONT "${NODE_PID[alpha]}"
wait_for 40 test -s "$T/backup.rc" || fail "mirrorctl backup did not end"
rc=$(cat "$T/backup.rc")
[ "$rc" = 4 ] && pass "mirrorctl backup exits 4 (timed out)" \
    || fail "mirrorctl backup exit $rc (expected 4): $(cat "$T/backup.out")"
check "no partial backup file" test ! -e "$out_file"
synced() { [ "$(status_get alpha .state)" = synchronized ]; }
wait_for 30 synced && pass "the pair is synchronized after the daemon resumed, not split" \
    || fail "after the daemon resumed: $(status_get alpha '.state + " " + .last_error')"
nbd_fill "$(nbd_unix_uri alpha)" $((1 * MiB)) $((1 * MiB)) 9 || fail "write after the resume"
check_eq "a write after it is mirrored (no dirty bytes)" 0 "$(status_get alpha .out_of_sync_bytes)"
stop_pair
check_identical "after the hung split"
pair_finish
