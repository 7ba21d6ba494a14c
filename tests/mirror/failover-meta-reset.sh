#!/bin/bash
# failover-meta-reset: after a forced failover (alpha killed, `promote
# --force` on beta) beta writes alone, stops, and loses its metadata
# (deleted, or both superblock slots corrupted); then both nodes start. The
# volume file still names alpha as primary and alpha's metadata still says
# so, so beta starts as secondary, and nothing records that its copy is the
# only current one. Found by chaos4: alpha's full sync overwrote it, and
# every write beta had acknowledged was gone from both copies. Now beta
# refuses a full sync into a copy of unknown history from a primary whose
# metadata is intact, and says what to do; the operator does it (stop alpha,
# promote beta, start alpha once with --discard-my-data) and both copies
# end with every write beta acknowledged.
#
# alpha killed, or stopped cleanly (a host shut down for maintenance; review6):
# then, with initial-sync = "skip", alpha's generations look like a new
# pair's (no bitmap, no history, nothing dirty: a clean stop leaves no
# activity log to mark) and beta's are zero, so alpha plans ADOPT ("no
# sync"), not FULL, which kFlagCopyUnknown did not refuse: beta adopted
# alpha's generation, the pair said synchronized while alpha served its
# stale copy, and alpha's next writes landed over beta's acknowledged ones.
# Meanwhile (until the operator chose) clients go on writing through alpha:
# none of it may land on beta's copy.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "needs mirrorctl"

# flip FILE OFFSET COUNT: xor COUNT bytes at OFFSET with 0xff.
flip() {
    "$PY" -c 'import sys; p,o,n=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]); f=open(p,"r+b"); f.seek(o); b=f.read(n); f.seek(o); f.write(bytes(x^255 for x in b))' "$@"
}

run() {  # run DAMAGE kill|stop
    local d="$1-$2" out
    log "---- $d"
    new_synced_pair 30
    check "[$d] 1M of 0x11 at 0 through alpha" nbd_fill "$(nbd_unix_uri alpha)" 0 $MiB 17
    "${2}_node" alpha
    out=$(ctl beta promote --force 2>&1) && pass "[$d] promote --force beta: $out" || die "[$d] promote --force: $out"
    check "[$d] 1M of 0x22 at 0 through beta (alpha down)" nbd_fill "$(nbd_unix_uri beta)" 0 $MiB 34
    write_acked "w$d" "$(nbd_unix_uri beta)" $((16 * MiB)) $((4 * MiB)) 200 --seed 9
    stop_node beta
    case $1 in
        delete) rm -f "${NODE_META[beta]}" ;;
        superblock) flip "${NODE_META[beta]}" 40 64; flip "${NODE_META[beta]}" $((4096 + 40)) 64 ;;
    esac
    must_start beta
    must_start alpha
    if wait_log beta "node 'beta' has no record of its copy's history" 30 >/dev/null; then
        pass "[$d] beta refuses alpha's full sync: $(grep -o "has no record of its copy.s history.*" "${NODE_LOG[beta]}" | head -n 1 | cut -c1-160)..."
    else
        fail "[$d] beta does not refuse alpha's copy (alpha's plan: $(plan_of alpha))"
    fi
    wait_log alpha "has no record of its copy.s history" 10 >/dev/null && pass "[$d] alpha's log says why the peer refused" \
        || fail "[$d] alpha's log does not say why the peer refused"
    check_eq "[$d] beta's status says its copy's history is unknown" true \
        "$(status_get beta .copy_history_unknown)"
    check "[$d] mirrorctl status (table) on beta warns about it" \
        sh -c "'$MIRRORCTL' --socket '${NODE_CTL[beta]}' status | grep -q 'nothing records this copy'"
    out=$(status_get alpha .state)
    [ "$out" != synchronized ] && pass "[$d] alpha does not say synchronized ($out)" \
        || fail "[$d] alpha says synchronized without beta's post-failover writes"
    check "[$d] 1M of 0x33 at 16M through alpha meanwhile" nbd_fill "$(nbd_unix_uri alpha)" $((16 * MiB)) $MiB 51
    check_eq "[$d] beta still holds its post-failover write" 34 "$(byte_at "${NODE_IMG[beta]}" 0)"
    verify_writes "[$d] beta's disk holds every write beta acknowledged" "w$d" \
        --image "${NODE_IMG[beta]}" $((16 * MiB)) $((4 * MiB))
    # What the message tells the operator when beta holds the current data.
    stop_node alpha
    out=$(ctl beta promote --force 2>&1) && pass "[$d] promote --force beta again: $out" \
        || fail "[$d] promote --force beta: $out"
    must_start alpha --discard-my-data
    wait_state beta synchronized 60 >/dev/null || fail "[$d] the pair did not synchronize from beta"
    check_eq "[$d] once alpha took beta's copy, beta's history is known again" false \
        "$(status_get beta .copy_history_unknown)"
    verify_writes "[$d] every write beta acknowledged, read through beta" "w$d" \
        --uri "$(nbd_unix_uri beta)" $((16 * MiB)) $((4 * MiB))
    stop_pair
    check_eq "[$d] alpha took beta's post-failover write" 34 "$(byte_at "${NODE_IMG[alpha]}" 0)"
    check_identical "[$d] after alpha took beta's copy"
}

run delete kill
run superblock kill
run delete stop
pair_finish
