#!/bin/bash
# identical-reset-meta (review7): `promote --force --identical` when one
# node's metadata is not new but unreadable (no valid superblock: reset,
# kFlagCopyUnknown without kFlagUnpaired). Both disks hold the same data (as
# restored from one image); alpha's metadata is new, beta's is garbage.
#
# The first sync is refused and the refusal offers `promote --force
# --identical` on alpha, which must then do what it says (the pair adopts
# the copies), or be refused for the right reason and not be offered.
# On cb257c2, beta's unreadable: alpha answers "both copies are taken as
# identical: 'beta' adopts this one without a copy", but its plan needs
# kFlagUnpaired on the peer for ADOPT, so it plans FULL again, refused
# again: the word is accepted and never acted on. On 938217c it is refused
# saying beta's "metadata records a history" (it is unreadable), while
# both refusals still offer it. alpha's unreadable: EINVAL saying alpha's
# "copy has a history", which it has not, while the refusals offer it.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "needs mirrorctl"
VOL_SIZE=64M
REFUSAL="neither node records its copy's history"

# case RESET-NODE: RESET-NODE's metadata is garbage, the other's is missing.
run() {
    local r=$1 out sha
    log "---- $r's metadata unreadable"
    for n in alpha beta; do kill_node "$n"; rm -f "${NODE_IMG[$n]}" "${NODE_META[$n]}"*; done
    setup_pair
    head -c $((4 * MiB)) /dev/urandom | dd of="${NODE_IMG[alpha]}" conv=notrunc status=none
    cp "${NODE_IMG[alpha]}" "${NODE_IMG[beta]}"
    sha=$(sha_of "${NODE_IMG[alpha]}")
    head -c 16384 /dev/urandom >"${NODE_META[$r]}"
    start_pair
    wait_log beta "$REFUSAL" 20 >/dev/null && pass "[$r] beta refuses the first sync" ||
        fail "[$r] beta did not refuse the first sync"
    local offered=no
    cat "${NODE_LOG[alpha]}" "${NODE_LOG[beta]}" | grep -q "promote --force --identical" && offered=yes
    if out=$(ctl alpha promote --force --identical 2>&1); then
        pass "[$r] promote --force --identical alpha: $out"
        if wait_state alpha synchronized 30 >/dev/null; then
            pass "[$r] the pair adopted the copies as it said"
            check_eq "[$r] nothing copied" "no sync (initial-sync = skip) 0" "$(plan_of alpha)"
        else
            fail "[$r] alpha said beta adopts its copy, but the pair did not synchronize (alpha's plan: $(plan_of alpha))"
        fi
    else
        check_eq "[$r] --identical refused ($out), so the refusal did not offer it" no "$offered"
        check "[$r] the reason does not give either copy a history: $out" \
            test "${out/a history/}" = "$out"
    fi
    stop_pair
    check_eq "[$r] alpha's data kept" "$sha" "$(sha_of "${NODE_IMG[alpha]}")"
    check_eq "[$r] beta's data kept" "$sha" "$(sha_of "${NODE_IMG[beta]}")"
}

run beta
run alpha
pair_finish
