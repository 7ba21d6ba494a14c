#!/bin/bash
# primary-disk-replaced: the pair ran (alpha primary, writes mirrored) and
# both nodes stopped; alpha's disk is replaced by a blank one (its metadata
# goes with it) and both nodes start. The volume file names alpha primary,
# so alpha starts as primary on an empty disk: its full sync would copy
# holes over beta's copy, the only one left. alpha refuses and says what to
# do; doing it (alpha once with --discard-my-data, promote beta) leaves
# every acknowledged write on both copies.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
have_ctl || skip "needs mirrorctl"

replace_primary_disk
must_start beta
must_start alpha
if wait_log alpha "metadata is new and its disk is blank" 20 >/dev/null; then
    pass "alpha refuses to full-sync its blank disk over beta: $(grep -o "this node's metadata is new.*" "${NODE_LOG[alpha]}" | head -n 1 | cut -c1-120)..."
else
    fail "alpha does not refuse to full-sync its blank disk over beta"
fi
sleep 1
check_eq "beta's copy untouched" "$beta_sha" "$(sha_of "${NODE_IMG[beta]}")"
# The way out the message gives.
stop_node alpha
must_start alpha --discard-my-data
wait_log alpha "connected, both secondary" 20 >/dev/null || fail "alpha and beta did not meet as secondaries"
out=$(ctl beta promote 2>&1) && pass "promote beta: $out" || fail "promote beta: $out"
wait_state beta synchronized 60 >/dev/null || fail "the pair did not synchronize from beta"
verify_writes "every acknowledged write, read through beta" w \
    --uri "$(nbd_unix_uri beta)" $((16 * MiB)) $((4 * MiB))
stop_pair
check_eq "alpha's new disk holds 0x33 at 0" 51 "$(byte_at "${NODE_IMG[alpha]}" 0)"
check_identical "after alpha took beta's copy"
pair_finish
