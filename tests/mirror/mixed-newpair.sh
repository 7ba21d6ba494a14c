#!/bin/bash
# mixed-newpair (chaos8): a NEW pair on disks that both hold data (different,
# or the same image), one node on the code before cb257c2 (OLD_MIRRORD), the
# other on this code, each direction. Nothing may be overwritten before the
# operator's word; the messages must be followable with each node's own
# mirrorctl; once synchronized the copies are identical.
# Cases MN_CASES: "old=alpha:diff old=beta:diff old=alpha:same old=beta:same"
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "needs mirrorctl"
OLD_MIRRORD=${OLD_MIRRORD:-/opt/mirrord-s14c/bin/mirrord}
OLD_CTL=$(dirname "$OLD_MIRRORD")/mirrorctl
[ -x "$OLD_MIRRORD" ] || skip "no old mirrord at $OLD_MIRRORD"
VOL_SIZE=64M
VOL_ACK=1s
declare -A NODE_BIN
eval "new_start_node() $(declare -f start_node | tail -n +2)"
start_node() { MIRRORD=${NODE_BIN[$1]:-$MIRRORD} new_start_node "$@"; }
# nctl NODE ARGS: the node's own mirrorctl.
nctl() {
    local n=$1 c=$MIRRORCTL; shift
    [ "${NODE_BIN[$n]:-}" = "$OLD_MIRRORD" ] && c=$OLD_CTL
    timeout 60 "$c" --socket "${NODE_CTL[$n]}" "$@" 2>&1
}

mn_case() {
    local old=$1 kind=$2 init=$3 label="old=$1,$2,$3" sha shb out
    log "---- $label"
    for n in alpha beta; do kill_node "$n" 2>/dev/null; rm -f "${NODE_IMG[$n]}" "${NODE_META[$n]}"*; done
    NODE_BIN=()
    VOL_EXTRA="initial-sync = \"$init\""
    setup_pair
    head -c $((8 * MiB)) /dev/urandom | dd of="${NODE_IMG[alpha]}" bs=1M seek=8 conv=notrunc status=none
    if [ "$kind" = same ]; then cp "${NODE_IMG[alpha]}" "${NODE_IMG[beta]}"
    else head -c $((8 * MiB)) /dev/urandom | dd of="${NODE_IMG[beta]}" bs=1M seek=8 conv=notrunc status=none; fi
    sha=$(sha_of "${NODE_IMG[alpha]}"); shb=$(sha_of "${NODE_IMG[beta]}")
    NODE_BIN[$old]=$OLD_MIRRORD
    start_pair
    log_mark alpha; log_mark beta
    sleep 6
    log "[$label] alpha: $(status_get alpha '.state + " writable=" + (.writable|tostring)')  beta: $(status_get beta .state)"
    { log_since alpha; log_since beta; } | grep -E ' (warn|error):' | grep -v 'Connection refused' | cut -c1-400 | head -6 >&2
    check_eq "[$label] beta's data untouched before the operator's word" "$shb" "$(sha_of "${NODE_IMG[beta]}")"
    if [ "$kind" = same ]; then
        out=$(nctl alpha promote --force --identical); log "[$label] promote --force --identical alpha (rc $?): $out"
    else
        out=$(nctl alpha promote --force); log "[$label] promote --force alpha (rc $?): $out"
    fi
    if wait_state alpha synchronized 30 >/dev/null; then
        log "[$label] synchronized: plan $(plan_of alpha)"
        stop_pair
        check_identical "[$label] synchronized copies"
        check_eq "[$label] alpha's data kept" "$sha" "$(sha_of "${NODE_IMG[alpha]}")"
    else
        log "[$label] not synchronized: alpha $(status_get alpha .state) beta $(status_get beta .state)"
        { log_all alpha; log_all beta; } | grep -E ' (warn|error):' | grep -v 'Connection refused' | cut -c1-400 | tail -n 4 >&2
        check_eq "[$label] beta's data untouched" "$shb" "$(sha_of "${NODE_IMG[beta]}")"
        fail "[$label] the message's way (promote --force on alpha) does not work: $out"
        # The other way: beta discards its copy.
        stop_node beta
        must_start beta --discard-my-data
        if wait_state alpha synchronized 30 >/dev/null; then
            log "[$label] beta --discard-my-data: synchronized, plan $(plan_of alpha)"
        else
            fail "[$label] beta --discard-my-data: not synchronized"
        fi
        stop_pair
        check_identical "[$label] after beta --discard-my-data"
        check_eq "[$label] alpha's data kept" "$sha" "$(sha_of "${NODE_IMG[alpha]}")"
    fi
}

for c in ${MN_CASES:-old=alpha:diff:full old=beta:diff:full old=alpha:same:skip old=beta:same:skip}; do
    IFS=: read -r o k i <<<"$c"
    mn_case "${o#old=}" "$k" "$i"
done
pair_finish
