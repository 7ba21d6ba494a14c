#!/bin/bash
# unconfirmed-primary-two-primaries (review8): after a planned failover
# (alpha demoted, beta promoted) beta writes alone; alpha's metadata is lost
# and alpha starts: the volume file names it primary, so it is a primary of
# unknown history, read-only until the pair agrees a plan or the operator
# confirms its copy. beta, primary, is connected: the pair refuses (split
# brain). `promote --force` on alpha then takes alpha's copy as the current
# one while beta is primary and connected: two writable primaries, which a
# secondary's promote never allows ("demote it first").
# What a user checks: with beta connected and primary, promote --force on
# alpha is refused, and alpha takes no write.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "needs mirrorctl"
VOL_SIZE=64M

planned_failover_alone
rm -f "${NODE_META[alpha]}" "${NODE_META[alpha]}.backup"
must_start alpha
wait_log alpha "split brain" 20 >/dev/null && pass "beta primary and connected: split brain, refused" \
    || fail "no split brain with beta primary"
check_eq "beta is primary" primary "$(status_get beta .role)"
out=$(ctl alpha promote --force 2>&1) && fail "promote --force on alpha accepted with beta primary and connected: $out" \
    || pass "promote --force on alpha refused with beta primary and connected: $out"
check_eq "alpha is not writable" false "$(status_get alpha .writable)"
if nbd_fill "$(nbd_unix_uri alpha)" $((2 * MiB)) $((64 * KiB)) 85 2>/dev/null; then
    fail "alpha took a write while beta is primary"
else
    pass "alpha refuses writes"
fi
check_eq "beta still holds its post-failover write" 34 "$(byte_at "${NODE_IMG[beta]}" 0)"
stop_pair
pair_finish
