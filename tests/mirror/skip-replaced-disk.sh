#!/bin/bash
# skip-replaced-disk (found by chaos5): a pair created with initial-sync =
# "skip" runs (writes acknowledged, mirrored), then both daemons stop for
# maintenance, the primary first (so it never sees the peer leave). beta's
# disk is replaced (a blank disk; its metadata goes with it) and beta is
# started, once with --discard-my-data (the documented way) and once
# without. initial-sync = skip is how a NEW pair starts: beta must get a full
# copy. Before the fix alpha planned "no sync (initial-sync = skip)" (beta's
# generation was 0 and alpha's bitmap, history and dirty map empty), both
# said synchronized, and a planned failover then served zeros where alpha's
# acknowledged writes were.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "needs mirrorctl"

run() {  # run discard|plain
    local c="[$1]" out
    log "---- $c"
    new_synced_pair 30
    check "$c 4M of 0x33 at 0 through alpha" nbd_fill "$(nbd_unix_uri alpha)" 0 $((4 * MiB)) 51
    write_acked "w$1" "$(nbd_unix_uri alpha)" $((16 * MiB)) $((4 * MiB)) 200 --seed 5
    stop_node alpha
    stop_node beta
    check_identical "$c before the disk replacement"
    rm -f "${NODE_IMG[beta]}" "${NODE_META[beta]}"
    truncate -s "$(size_bytes "$VOL_SIZE")" "${NODE_IMG[beta]}"
    must_start alpha
    case $1 in
        discard) must_start beta --discard-my-data ;;
        plain) must_start beta ;;
    esac
    wait_state alpha synchronized 60 >/dev/null || fail "$c the pair did not synchronize"
    check "$c alpha planned a full sync, not initial-sync = skip" \
        grep -q "peer 'beta' connected: full sync" "${NODE_LOG[alpha]}"
    # What the operator does next, trusting "synchronized": a planned failover.
    out=$(ctl alpha demote) && pass "$c demote alpha: $out" || fail "$c demote alpha: $out"
    out=$(ctl beta promote) && pass "$c promote beta: $out" || fail "$c promote beta: $out"
    verify_writes "$c after the failover, beta's export holds every write alpha acknowledged" \
        "w$1" --uri "$(nbd_unix_uri beta)" $((16 * MiB)) $((4 * MiB))
    stop_pair
    check_eq "$c beta's new disk holds alpha's 0x33 at 0" 51 "$(byte_at "${NODE_IMG[beta]}" 0)"
    check_identical "$c after the replaced disk was filled"
}

run discard
run plain
pair_finish
