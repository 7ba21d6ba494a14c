#!/bin/bash
# granularity-failover: after a planned failover the metadata, not the volume
# file's `primary`, says which node is primary. Here beta was promoted and
# wrote alone (alpha stopped); then the operator stopped beta, edited the
# volume file (identical on both hosts, as the docs ask) and started both:
#   granularity  bitmap-granularity 64K -> 128K: the recorded dirty regions
#                are carried over to the new granularity; role and
#                generations stay, so only what beta wrote alone is resynced
#   rename       the volume renamed: the metadata is foreign (full resync),
#                but each node keeps the role its metadata recorded
# Either way the resync must run from beta (the current copy) to alpha:
# beta's acknowledged writes must still be on beta, and on alpha once
# synchronized. (Found by the chaos2 helper: before, both nodes reset their
# metadata, took their roles from `primary = "alpha"`, and alpha full-synced
# over beta: every write beta acknowledged as primary was lost on both copies.)
. "$(dirname "$0")/pairlib.sh"

have_ctl || die "granularity-failover needs mirrorctl"
VOL_SIZE=64M
BASE_EXTRA='initial-sync = "skip"'
WO=$((16 * MiB)); WIN=$((8 * MiB))

run() {
    local edit=$1
    log "---- $edit"
    VOL_NAME=db; VOL_EXTRA=$BASE_EXTRA
    rm -f "${NODE_META[alpha]}" "${NODE_META[beta]}" "${NODE_IMG[alpha]}" "${NODE_IMG[beta]}"
    start_synced_pair 30
    out=$(ctl alpha demote) && pass "[$edit] demote alpha: $out" || fail "[$edit] demote alpha: $out"
    out=$(ctl beta promote) && pass "[$edit] promote beta: $out" || fail "[$edit] promote beta: $out"
    stop_node alpha
    write_acked w "$(nbd_unix_uri beta)" $WO $WIN 1000 --qd 4 --seed 2
    stop_node beta

    case $edit in
        granularity) VOL_EXTRA="$VOL_EXTRA
bitmap-granularity = \"128K\"" ;;
        rename) VOL_NAME=db2 ;;
    esac
    write_configs
    must_start alpha
    must_start beta
    if wait_state beta synchronized 30 >/dev/null; then
        pass "[$edit] the pair synchronized after the edit"
        check_eq "[$edit] beta is still primary (its metadata said so)" primary "$(status_get beta .role)"
        check_eq "[$edit] alpha is still secondary" secondary "$(status_get alpha .role)"
        local copied
        copied=$(status_get beta .resynced_bytes_total)
        log "[$edit] resynced: $copied bytes"
        if [ "$edit" = granularity ]; then
            # Only the regions beta wrote alone (8 MiB, in 128K regions now).
            [ -n "$copied" ] && [ "$copied" -le $((WIN + 256 * KiB)) ] \
                && pass "[$edit] only beta's changes were resynced ($copied bytes)" \
                || fail "[$edit] resynced $copied bytes, expected at most $((WIN + 256 * KiB))"
        fi
        stop_pair
        check_identical "[$edit] after the edit"
        verify_writes "[$edit] alpha's copy holds every write beta acknowledged as primary" w \
            --image "${NODE_IMG[alpha]}" $WO $WIN
    else
        log "not synchronized: alpha: $(status_get alpha '.state + " " + .last_error'); beta: $(status_get beta '.state + " " + .last_error')"
        fail "[$edit] the pair did not synchronize after the edit"
        stop_pair
    fi
    verify_writes "[$edit] beta's copy holds every write it acknowledged as primary" w \
        --image "${NODE_IMG[beta]}" $WO $WIN
}

run granularity
run rename
pair_finish
