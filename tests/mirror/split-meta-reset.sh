#!/bin/bash
# split-meta-reset (found by chaos4): while the pair is split (the
# secondary's image is a backup source), one node stops, loses or damages
# its metadata, and starts again. Until the operator runs `rejoin`, the split
# image must stay exactly what it was at the split, both nodes say "split",
# and the primary's writes since the split are never overwritten by the
# older image; after the rejoin the copies end identical. Before the fix a
# reset dropped the split (only the role was kept) and the primary
# full-synced over the image at once, with no rejoin.
#   truncate  (either node): the superblock is readable, the reset keeps the
#             split; rejoin resyncs as usual.
#   alpha delete: the primary lost every record of the split; beta's split,
#             from a generation alpha does not know, makes alpha split again.
#   beta delete: beta lost its metadata while its copy held data; the
#             rejoin's full sync into it waits for --discard-my-data.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
have_ctl || skip "split needs mirrorctl"

run() {  # run VICTIM DAMAGE
    local victim=$1 damage=$2 out rc split_sha c="[$1 $2]"
    log "---- $c"
    new_synced_pair 60
    check "$c before the split: 1M of 0x11 at 0" nbd_fill "$(nbd_unix_uri alpha)" 0 $MiB 17
    out=$(ctl alpha split) && pass "$c split: $out" || die "$c split failed: $out"
    check "$c after the split: 1M of 0x22 at 0 on alpha" nbd_fill "$(nbd_unix_uri alpha)" 0 $MiB 34
    write_acked "w$victim$damage" "$(nbd_unix_uri alpha)" $((16 * MiB)) $((4 * MiB)) 200 --seed 7
    split_sha=$(sha_of "${NODE_IMG[beta]}")
    stop_node "$victim"
    case $damage in
        delete) rm -f "${NODE_META[$victim]}" ;;
        truncate) truncate -s 8192 "${NODE_META[$victim]}" ;;
    esac
    must_start "$victim"
    wait_log alpha "peer 'beta' connected: standby" 20 >/dev/null || fail "$c alpha and beta do not reconnect split"
    sleep 2
    check_eq "$c alpha still primary" primary "$(status_get alpha .role)"
    check_eq "$c alpha says split before any rejoin" split "$(status_get alpha .state)"
    check_eq "$c beta says split before any rejoin" split "$(status_get beta .state)"
    check_eq "$c beta's split image untouched before any rejoin" "$split_sha" "$(sha_of "${NODE_IMG[beta]}")"
    check_eq "$c alpha's post-split write is still on alpha" 34 "$(byte_at "${NODE_IMG[alpha]}" 0)"
    out=$(timeout 90 "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" rejoin --wait 2>&1); rc=$?
    if [ "$victim $damage" = "beta delete" ]; then
        [ $rc -ne 0 ] && grep -q "has no record of its copy.s history.*--discard-my-data" <<<"$out" \
            && pass "$c rejoin --wait: beta refuses a full sync into its copy of unknown history: $(cut -c1-120 <<<"$out")..." \
            || fail "$c rejoin --wait (exit $rc): $out"
        check_eq "$c beta's image still untouched" "$split_sha" "$(sha_of "${NODE_IMG[beta]}")"
        stop_node beta
        must_start beta --discard-my-data
    else
        check_eq "$c rejoin --wait" "synchronized" "$(tail -n 1 <<<"$out")"
    fi
    wait_state alpha synchronized 60 >/dev/null || fail "$c not synchronized after rejoin"
    verify_writes "$c alpha holds every acknowledged write" "w$victim$damage" \
        --uri "$(nbd_unix_uri alpha)" $((16 * MiB)) $((4 * MiB))
    stop_pair
    check_eq "$c alpha keeps 0x22 at 0" 34 "$(byte_at "${NODE_IMG[alpha]}" 0)"
    check_identical "$c after rejoin"
}

run beta truncate
run alpha truncate
run alpha delete
run beta delete
pair_finish
