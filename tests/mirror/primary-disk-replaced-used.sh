#!/bin/bash
# primary-disk-replaced-used (review7): primary-disk-replaced, but alpha's
# new disk is not blank: a used disk, or any block device (mirrord counts a
# block device as holding data whatever it holds). The pair ran (alpha
# primary, writes mirrored) and both nodes stopped; alpha's disk is replaced
# by one holding other data (its metadata goes with it) and both nodes
# start; the volume file names alpha primary.
#
# alpha's new metadata over a disk that holds data is kFlagUnpaired |
# kFlagCopyUnknown: the blank-disk refusal (kFlagUnpaired without
# kFlagCopyUnknown) does not apply, alpha plans FULL, and beta, whose copy
# has a history and no kFlagCopyUnknown, accepts it: beta's copy, the only
# one with the pair's data, is overwritten with the new disk's contents
# without the operator's word. alpha is read-only meanwhile (its copy's
# history is unknown) but the pair agreeing the plan makes it writable.
# A copy of unknown history must not become the sync source over one with a
# history until the operator says so (`promote --force` on alpha, as in
# meta-lost-primary's "current" case), as DRBD's first `primary --force`.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
have_ctl || skip "needs mirrorctl"

replace_primary_disk
# The new disk held something else before (another server's data).
head -c $((8 * MiB)) /dev/urandom | dd of="${NODE_IMG[alpha]}" conv=notrunc status=none
must_start beta
must_start alpha
if wait_state alpha synchronized 20 >/dev/null; then
    fail "the pair synchronized: alpha's new disk over beta's copy (alpha's plan: $(plan_of alpha))"
else
    pass "the pair does not synchronize on its own"
fi
check_eq "beta's copy untouched" "$beta_sha" "$(sha_of "${NODE_IMG[beta]}")"
verify_writes "beta's disk holds every acknowledged write" w \
    --image "${NODE_IMG[beta]}" $((16 * MiB)) $((4 * MiB))
stop_pair
pair_finish
