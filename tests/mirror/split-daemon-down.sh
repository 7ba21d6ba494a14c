#!/bin/bash
# split-daemon-down: `mirrorctl split` and `mirrorctl backup` while the
# primary's daemon is down (killed; its control socket file left behind, so
# the connect is refused). The request never reached a daemon, so no split
# was made, and the operator must be told so, not that one "may have been
# made" (which sends them to check and rejoin a pair that was never split).
#
# Before, any transport error counted as a request sent and unanswered: "the
# split may have been made, or be made when mirrord resumes", and backup
# "asking for a rejoin in case the split was made".
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "no mirrorctl"

VOL_SIZE=32M
VOL_EXTRA='initial-sync = "skip"'
start_synced_pair 30
kill_node alpha

out=$(timeout 60 "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" split 2>&1); rc=$?
log "split with alpha down: exit $rc: $out"
check_eq "split with the daemon down: exit 3 (unreachable)" 3 "$rc"
grep -q "may have been made" <<<"$out" && fail "split says a split may have been made: $out" \
    || pass "split does not say a split may have been made"
grep -q "no split was made" <<<"$out" && pass "split says no split was made" \
    || fail "split does not say no split was made: $out"

out=$(timeout 60 "$MIRRORCTL" --config "$T/vol.toml" --node alpha backup --to "$T/b.img" 2>&1); rc=$?
log "backup with alpha down: exit $rc: $out"
[ $rc -ne 0 ] && pass "backup with the daemon down fails (exit $rc)" || fail "backup exit 0: $out"
grep -q "in case the split was made\|may have been made" <<<"$out" \
    && fail "backup says a split may have been made: $out" \
    || pass "backup does not say a split may have been made"
check "the failed backup left no file" test ! -e "$T/b.img"

must_start alpha
wait_state alpha synchronized 30 >/dev/null && pass "alpha back: the pair is synchronized, not split" \
    || fail "alpha back: $(status_get alpha .state)"
pair_finish
