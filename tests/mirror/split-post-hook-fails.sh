#!/bin/bash
# split-post-hook-fails (found by chaos6): the --post hook of `mirrorctl
# split` / `mirrorctl backup` fails (exit 3) after the split was made.
#  split: exits non-zero and says the split WAS made (the pair is split, no
#    redundancy until rejoin), not just "post-hook exited with 3";
#  backup: copies nothing and queues the rejoin, so the pair does not stay
#    split with no backup running.
# Before: split said only the hook's exit, and backup left the pair split.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "needs mirrorctl"
VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
start_synced_pair 30
write_acked w1 "$(nbd_unix_uri alpha)" 0 $((16 * MiB)) 100
run() { timeout 90 "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" "$@" >"$T/out" 2>&1; RC=$?; OUT=$(cat "$T/out"); }

run split --post 'exit 3'
[ $RC -ne 0 ] && pass "split --post 'exit 3' exits $RC" || fail "split --post 'exit 3' exits 0"
check_eq "the pair is split" split "$(status_get alpha .state)"
grep -q "the split WAS made" <<<"$OUT" && pass "split says the split was made: $OUT" \
    || fail "split does not say the split was made: $OUT"
ctl alpha rejoin >/dev/null
wait_state alpha synchronized 30 >/dev/null || die "no resync after the rejoin"

run backup --to "$T/bk.img" --from "$(nbd_unix_uri beta)" --post 'exit 3'
[ $RC -ne 0 ] && pass "backup --post 'exit 3' exits $RC: $OUT" || fail "backup --post 'exit 3' exits 0"
grep -q "asking for a rejoin (the split was made)" <<<"$OUT" && pass "backup says it rejoins" \
    || fail "backup does not say it rejoins: $OUT"
wait_state alpha synchronized 30 >/dev/null && pass "the pair is mirroring again after the failed backup" \
    || fail "the pair stays $(status_get alpha .state) after the failed backup"
pair_finish
