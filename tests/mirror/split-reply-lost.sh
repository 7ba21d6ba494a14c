#!/bin/bash
# split-reply-lost: the SPLIT reaches the secondary and is applied there, but
# its answer never reaches the primary: beta stops itself once it applied the
# SPLIT, before answering (MIRRORD_FAULTS=stop-after-split), and alpha loses
# the link (ack-timeout). What a user checks:
#   - `mirrorctl split` fails and says whether a split was made; alpha's
#     `mirrorctl status` agrees with it (its state, and its "last split");
#   - `mirrorctl backup` (a nightly job) fails saying the backup failed, runs
#     its --post hook (the application is thawed), leaves no file at its
#     path;
#   - once beta resumes, or is killed (it applied the SPLIT, unanswered) and
#     restarted, the pair mirrors again by itself (no rejoin), both copies
#     identical, every acknowledged write on beta's copy.
#
# Before, alpha stayed split (status "split"), `split` said only "the
# secondary did not confirm the split: the link was lost", and the next
# session was a split one: the pair stayed split and unmirrored, and a
# failed `mirrorctl backup` left it so (it rejoins only a split it knows of).
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "no mirrorctl"

VOL_SIZE=64M
VOL_ACK=1s
ACK_MS=1000
VOL_EXTRA='initial-sync = "skip"'
WIN=$((16 * MiB))

setup_pair
start_with_faults beta stop-after-split
must_start alpha
wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize"

# reply_lost NAME OFF HOW CMD...: with a writer on alpha at OFF, CMD (a
# split) makes beta stop once it applied the SPLIT; CMD fails; beta resumes
# (HOW = resume) or is killed and restarted (HOW = restart) and the pair
# synchronizes with no rejoin. CMD's output in $T/NAME.cmd.
reply_lost() {
    local name=$1 off=$2 how=$3 out rc st last; shift 3
    start_writer "$name" "$(nbd_unix_uri alpha)" $off $WIN --qd 4 --seed "${#name}"
    wait_acks "$name" 300 60 || die "the writer did not start"
    last=$(status_get alpha .last_split.unix_ms)
    log_mark beta
    out=$(timeout 60 "$@" 2>&1); rc=$?
    echo "$out" >"$T/$name.cmd"
    log "$name: exit $rc: $out"
    wait_log beta "stop-after-split: stopping" 5 >/dev/null \
        || die "$name: beta did not stop after the SPLIT (the fault did not fire)"
    st=$(status_get alpha .state)
    log "$name: alpha after the failure: $(node_status alpha | jq -c '{state,link,last_error}')"
    if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then
        fail "$name: exit $rc: $out (expected a failure)"
    elif grep -q "no split was made" <<<"$out"; then
        pass "$name: fails (exit $rc), saying no split was made"
        [ "$st" != split ] && pass "$name: alpha's status agrees: $st" \
            || fail "$name: it says no split was made, but alpha's status says split"
        check_eq "$name: alpha's status shows no new split ('last split' as before)" "$last" \
            "$(status_get alpha .last_split.unix_ms)"
    elif grep -q "split WAS made" <<<"$out"; then
        pass "$name: fails (exit $rc), saying the split was made"
        check_eq "$name: alpha's status agrees" split "$st"
    else
        fail "$name: it does not say whether a split was made: $out (alpha: $st)"
    fi
    if [ "$how" = resume ]; then
        kill -CONT "${NODE_PID[beta]}"
    else
        kill_node beta
        start_with_faults beta stop-after-split
    fi
    if wait_state alpha synchronized 60 >/dev/null; then
        pass "$name: synchronized again by itself once beta was back, $how (no rejoin)"
    else
        fail "$name: not synchronized 60 s after beta was back ($how): alpha $(status_get alpha .state), beta $(status_get beta .state)"
        log "$name: rejoin: $(ctl alpha rejoin --wait)"
    fi
    check_eq "$name: beta's state" synchronized "$(status_get beta .state)"
    finish_writer "$name" "$(nbd_unix_uri alpha)" $off $WIN $ACK_MS
}

reply_lost split 0 resume "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" split
reply_lost killed $((2 * WIN)) restart "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" split
reply_lost backup $WIN resume "$MIRRORCTL" --config "$T/vol.toml" --node alpha backup \
    --to "$T/backup.img" --pre "touch $T/pre.ran" --post "touch $T/post.ran"
grep -q "backup.*fail" "$T/backup.cmd" && pass "backup: says the backup failed" \
    || fail "backup: its output does not say the backup failed: $(cat "$T/backup.cmd")"
check "backup: its --post hook ran (the application is thawed)" test -e "$T/post.ran"
[ -e "$T/backup.img" ] || [ -e "$T/backup.img.partial" ] \
    && fail "the failed backup left a file at its path" \
    || pass "the failed backup left no file at its path"

stop_pair
check_identical "after the lost split replies"
verify_writes "beta's image holds split's writes" split --image "${NODE_IMG[beta]}" 0 $WIN
verify_writes "beta's image holds backup's writes" backup --image "${NODE_IMG[beta]}" $WIN $WIN
verify_writes "beta's image holds killed's writes" killed --image "${NODE_IMG[beta]}" $((2 * WIN)) $WIN
pair_finish
