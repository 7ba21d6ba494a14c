#!/bin/bash
# failover-meta-truncated (review7): both nodes' metadata lost after a forced
# failover, as in both-meta-lost, but the stale node's metadata is not gone:
# it is reset with its superblock still readable (the file truncated to its
# two superblocks, so the maps are missing; a foreign identity resets it the
# same way). alpha (killed, stale) keeps the role its superblock recorded,
# primary, and its generations are zeroed with kFlagFullSyncNeeded set, but
# neither kFlagCopyUnknown nor kFlagUnpaired: nothing in its STATE says its
# copy's history is unknown. beta (promoted, wrote alone, metadata deleted)
# starts as secondary by the volume file with kFlagCopyUnknown.
#
# On cb257c2 beta accepts alpha's FULL plan (the peer "asked for a full
# sync": kFlagFullSyncNeeded) and every write beta acknowledged after the
# failover is overwritten with alpha's stale copy, on both disks. What a user
# checks: beta's copy, the only current one, is untouched until the operator
# chooses; the pair does not say synchronized.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "needs mirrorctl"
VOL_SIZE=64M

run() {  # run kill|stop
    local d=$1 out shb
    log "---- alpha: $d"
    new_synced_pair 30
    check "[$d] 1M of 0x11 at 0 through alpha" nbd_fill "$(nbd_unix_uri alpha)" 0 $MiB 17
    "${d}_node" alpha
    out=$(ctl beta promote --force 2>&1) && pass "[$d] promote --force beta: $out" ||
        die "[$d] promote --force beta: $out"
    check "[$d] 1M of 0x22 at 0 through beta (alpha down)" nbd_fill "$(nbd_unix_uri beta)" 0 $MiB 34
    write_acked "w$d" "$(nbd_unix_uri beta)" $((16 * MiB)) $((4 * MiB)) 200 --seed 7
    stop_node beta
    shb=$(sha_of "${NODE_IMG[beta]}")
    # beta's metadata deleted; alpha's truncated to its two superblocks.
    rm -f "${NODE_META[beta]}" "${NODE_META[beta]}.backup"
    truncate -s 8192 "${NODE_META[alpha]}"
    must_start beta
    must_start alpha
    if wait_state alpha synchronized 20 >/dev/null; then
        fail "[$d] the pair synchronized: alpha's stale copy over beta's (alpha's plan: $(plan_of alpha))"
    else
        pass "[$d] the pair does not synchronize on its own (alpha's plan: $(plan_of alpha))"
    fi
    check_eq "[$d] beta still holds its post-failover write" 34 "$(byte_at "${NODE_IMG[beta]}" 0)"
    check_eq "[$d] beta's copy (the only one with w$d) is untouched" "$shb" \
        "$(sha_of "${NODE_IMG[beta]}")"
    verify_writes "[$d] beta's disk holds every write beta acknowledged" "w$d" \
        --image "${NODE_IMG[beta]}" $((16 * MiB)) $((4 * MiB))
    stop_pair
}

run kill
run stop
pair_finish
