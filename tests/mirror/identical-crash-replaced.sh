#!/bin/bash
# identical-crash-replaced (review7): the operator's `promote --force
# --identical` outlives the pairing it was given for. A new pair on two
# disks restored from one image (initial-sync = "full", the default): beta
# refuses the first sync, `promote --force --identical` on alpha, the pair
# adopts the copies (ADOPT) and says synchronized. confirm_copy clears
# kFlagUnpaired, kFlagAssertIdentical and kFlagCopyUnknown in memory only,
# and an ADOPT commits nothing after it on the primary: alpha crashes (no
# write since), and its metadata still says Unpaired | AssertIdentical |
# CopyUnknown. Later beta's disk is replaced (a blank disk, new metadata):
# alpha's stale word makes it plan ADOPT again, beta's blank disk is taken
# as identical, the pair says synchronized, and a failover to beta would
# serve zeros. A replaced disk must take a full copy (skip-replaced-disk).
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "needs mirrorctl"
VOL_SIZE=64M

setup_pair
head -c $((4 * MiB)) /dev/urandom | dd of="${NODE_IMG[alpha]}" conv=notrunc status=none
cp "${NODE_IMG[alpha]}" "${NODE_IMG[beta]}"
start_pair
wait_log beta "neither node records its copy's history" 20 >/dev/null ||
    die "beta did not refuse the first sync"
out=$(ctl alpha promote --force --identical) || die "promote --force --identical: $out"
wait_state alpha synchronized 30 >/dev/null || die "the pair did not adopt the copies"
check_eq "the pair adopted the copies" "no sync (initial-sync = skip) 0" "$(plan_of alpha)"
kill_node alpha
stop_node beta
# beta's disk replaced: blank, its metadata with it.
rm -f "${NODE_IMG[beta]}" "${NODE_META[beta]}" "${NODE_META[beta]}.backup"
truncate -s "$(size_bytes "$VOL_SIZE")" "${NODE_IMG[beta]}"
must_start alpha
must_start beta
wait_state alpha synchronized 30 >/dev/null || fail "the pair did not synchronize after beta's disk was replaced"
check_eq "beta's new disk takes a full copy" "full sync $(size_bytes "$VOL_SIZE")" "$(plan_of alpha)"
stop_pair
check_identical "after beta's disk was replaced"
pair_finish
