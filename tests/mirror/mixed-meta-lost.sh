#!/bin/bash
# mixed-meta-lost (found by chaos7): a rolling upgrade, one node on the code
# before cb257c2 (OLD_MIRRORD, default /opt/mirrord-s14c/bin/mirrord), the
# other on this code, and both metadata files lost after a forced failover
# (the case of both-meta-lost): alpha (stale) is the volume file's primary,
# beta holds every write it acknowledged alone. Whichever node runs the old
# code, no write beta acknowledged may be lost: the new node must not sync
# its copy of unknown history over a peer whose copy has none either (the
# peer's STATE shows kFlagCopyUnknown), even where the old peer would accept
# it. Cases: OLD=beta and OLD=alpha, with initial-sync "full" and "skip"
# (MIXED_OLD / MIXED_INIT pick some).
# Found: OLD=beta with initial-sync = "full" (the default): the new alpha,
# read-only, plans FULL (kFlagFullSyncNeeded), the old beta accepts it (its
# only rule refuses a full sync from a primary WITHOUT kFlagFullSyncNeeded),
# and alpha's stale copy overwrites beta's: every write beta acknowledged
# alone is lost from both copies, and both say synchronized. The refusal
# cb257c2 added lives only on the secondary; the new primary should refuse
# to plan FULL/ADOPT itself while both copies lack a history (its own
# kFlagCopyUnknown or kFlagUnpaired without the operator's promote --force,
# the peer's kFlagCopyUnknown).
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "needs mirrorctl"
OLD_MIRRORD=${OLD_MIRRORD:-/opt/mirrord-s14c/bin/mirrord}
[ -x "$OLD_MIRRORD" ] || skip "no old mirrord at $OLD_MIRRORD"
VOL_SIZE=64M
VOL_ACK=1s
WIN=$((16 * MiB))
declare -A NODE_BIN
eval "new_start_node() $(declare -f start_node | tail -n +2)"
start_node() { MIRRORD=${NODE_BIN[$1]:-$MIRRORD} new_start_node "$@"; }

mixed_case() {
    local old=$1 init=$2 shb
    local label="old=$old,$init"
    log "---- $label"
    NODE_BIN=()
    VOL_EXTRA="initial-sync = \"$init\""
    failover_both_meta_lost $WIN
    shb=$(sha_of "${NODE_IMG[beta]}")
    NODE_BIN[$old]=$OLD_MIRRORD
    start_pair
    sleep 8
    log "[$label] alpha: $(status_get alpha '.state + " " + (.writable|tostring)')  beta: $(status_get beta .state)"
    check_eq "[$label] beta's copy (the only one with w2) is untouched" "$shb" \
        "$(sha_of "${NODE_IMG[beta]}")"
    check "[$label] the pair does not say synchronized" test "$(status_get alpha .state)" != synchronized
    stop_pair
    verify_writes "[$label] beta's image holds every write beta acknowledged" w2 \
        --image "${NODE_IMG[beta]}" $WIN $WIN
}

for old in ${MIXED_OLD:-beta alpha}; do
    for init in ${MIXED_INIT:-full skip}; do mixed_case $old $init; done
done
pair_finish
