#!/bin/bash
# replaced-primary-reset-secondary (review8): both nodes stop (a power loss
# on the site), alpha's disk is replaced by a blank one (its metadata goes
# with it) and beta's metadata is reset over a readable superblock (the file
# truncated to its two superblocks: torn maps), which recorded "secondary".
# beta's disk holds the pair's only copy. A reset that recorded "secondary"
# does not count as a copy of unknown history (cb3bf53 keeps it so; the code
# before set kFlagCopyUnknown only when no superblock was left), so beta's
# STATE shows kFlagFullSyncNeeded, a zero generation and no kFlagCopyUnknown:
# like a blank replaced disk. That disarms both refusals of a new primary's
# first sync (the primary's "new metadata and a blank disk against a peer
# with a history", the secondary's "copy of unknown history"): alpha
# full-syncs its blank disk over beta, and every acknowledged write is gone
# from both copies. Fails on main 9ce7ae2 and on the s14c release.
# What a user checks: beta's copy is untouched until the operator chooses,
# and the pair does not say synchronized.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "needs mirrorctl"
VOL_SIZE=64M

start_synced_pair 30
check "4M of 0x33 at 0 through alpha" nbd_fill "$(nbd_unix_uri alpha)" 0 $((4 * MiB)) 51
write_acked w "$(nbd_unix_uri alpha)" $((16 * MiB)) $((4 * MiB)) 200 --seed 3
wait_state alpha synchronized 30 >/dev/null || die "not synchronized before the stop"
stop_pair
rm -f "${NODE_IMG[alpha]}" "${NODE_META[alpha]}" "${NODE_META[alpha]}.backup"
truncate -s "$(size_bytes "$VOL_SIZE")" "${NODE_IMG[alpha]}"
truncate -s 8192 "${NODE_META[beta]}"
rm -f "${NODE_META[beta]}.backup"
beta_sha=$(sha_of "${NODE_IMG[beta]}")
must_start beta
grep -q "reset; this node starts as secondary, the role its metadata recorded" "$(node_log beta)" \
    || die "beta's metadata was not reset as a recorded secondary (see its log)"
must_start alpha
if wait_state alpha synchronized 20 >/dev/null; then
    fail "the pair synchronized: alpha's blank disk over beta's (alpha's plan: $(plan_of alpha))"
else
    pass "the pair does not synchronize on its own (alpha's plan: $(plan_of alpha))"
fi
stop_pair
check_eq "beta still holds 0x33 at 0" 51 "$(byte_at "${NODE_IMG[beta]}" 0)"
check_eq "beta's copy is untouched" "$beta_sha" "$(sha_of "${NODE_IMG[beta]}")"
verify_writes "beta's disk holds every write alpha acknowledged" w \
    --image "${NODE_IMG[beta]}" $((16 * MiB)) $((4 * MiB))
pair_finish
