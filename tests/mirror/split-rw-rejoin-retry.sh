#!/bin/bash
# split-rw-rejoin-retry (review6): the operator rejoins a read-write split
# (open-rw on beta), and the first handshake after the rejoin does not
# finish the job:
#   restart  beta is down at the rejoin, alpha restarts before beta is back
#            (the rejoin is recorded: alpha's metadata no longer says split);
#   handler  beta's before-resync-target fails once; it is fixed, and the
#            secondary's automatic retry 30 s later is what goes ahead.
#   lost     (the rule's own case, kept) alpha's metadata is deleted while
#            the read-write split stands: alpha must say split again and
#            beta's image stay as it is until the operator's rejoin.
# Either way the rejoin must go through at the next handshake: alpha's
# metadata is intact and says "not split". But open-rw moved beta's
# `current` to an id of its own (its split base kept as `bitmap`), and the
# rule for a primary that lost its metadata while split ("the peer is split
# at a generation I do not know") compares only the peer's `current`: alpha
# records the split again, says "its metadata was lost or reset", and the
# pair is back to split until a second rejoin (beta refuses the union plan
# for the same reason when the PLAN lacks the rejoin's flag).
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
have_ctl || skip "needs mirrorctl"

rc_before_handler
VOL_EXTRA="before-resync-target = \"$T/before.sh\"
handler-timeout = \"5s\""
runs() { [ -f "$T/before.runs" ] && wc -l <"$T/before.runs" || echo 0; }
runs_over() { [ "$(runs)" -gt "$1" ]; }
# alpha_logs_since N: alpha's logs from its start number N on.
alpha_logs_since() { local i; for ((i = $1; i <= NODE_STARTS[alpha]; i++)); do cat "$T/alpha.$i.log"; done; }

run() {  # run CASE
    local c=[$1] out n first img
    log "---- $c"
    new_synced_pair 60
    first=${NODE_STARTS[alpha]}
    check "$c 1M of 0x11 at 0 through alpha" nbd_fill "$(nbd_unix_uri alpha)" 0 $MiB 17
    out=$(ctl alpha split) && pass "$c split: $out" || die "$c split: $out"
    check "$c after the split: 1M of 0x22 at 0 through alpha" nbd_fill "$(nbd_unix_uri alpha)" 0 $MiB 34
    out=$(ctl beta open-rw) && pass "$c open-rw on beta: $out" || die "$c open-rw: $out"
    check "$c beta's own change: 1M of 0x55 at 8M" nbd_fill "$(nbd_unix_uri beta)" $((8 * MiB)) $MiB 85
    case $1 in
        restart)
            stop_node beta
            out=$(ctl alpha rejoin) && pass "$c rejoin with beta down: $out" || fail "$c rejoin: $out"
            stop_node alpha
            must_start alpha
            must_start beta
            ;;
        handler)
            echo 3 >"$T/before.rc"
            n=$(runs)
            out=$(ctl alpha rejoin) && pass "$c rejoin: $out" || fail "$c rejoin: $out"
            wait_for 20 runs_over "$n" || fail "$c beta's before-resync-target did not run"
            wait_for 10 grep -q "exit 3" <(status_get beta .handlers.before_resync_target.last_result) \
                || log "$c handler result: $(status_get beta .handlers.before_resync_target.last_result)"
            echo 0 >"$T/before.rc"  # fixed; the automatic retry comes within 30 s
            ;;
        lost)
            img=$(sha_of "${NODE_IMG[beta]}")
            stop_node alpha
            rm -f "${NODE_META[alpha]}"
            must_start alpha
            wait_log alpha "peer 'beta' connected: standby" 20 >/dev/null \
                || fail "$c alpha and beta do not reconnect split"
            check_eq "$c alpha says split again" split "$(status_get alpha .state)"
            check_eq "$c beta's read-write image untouched" "$img" "$(sha_of "${NODE_IMG[beta]}")"
            out=$(ctl alpha rejoin) && pass "$c rejoin: $out" || fail "$c rejoin: $out"
            ;;
    esac
    wait_state alpha synchronized 50 >/dev/null \
        && pass "$c the rejoin went through: synchronized" \
        || fail "$c not synchronized after the rejoin: alpha $(status_get alpha .state), beta $(status_get beta .state)"
    if [ "$1" = lost ]; then
        :  # alpha did lose it
    elif alpha_logs_since "$first" | grep -q "no longer knows of"; then
        fail "$c alpha claims its metadata was lost: $(alpha_logs_since "$first" | grep -o "'beta' keeps a split image.*" | head -n 1)"
    else
        pass "$c alpha does not claim it lost its metadata"
    fi
    stop_pair
    check_eq "$c alpha keeps its post-split write" 34 "$(byte_at "${NODE_IMG[alpha]}" 0)"
    check_eq "$c beta's own change was replaced by alpha's data" 0 "$(byte_at "${NODE_IMG[beta]}" $((8 * MiB)))"
    check_identical "$c after the rejoin"
}

run restart
run handler
run lost
pair_finish
