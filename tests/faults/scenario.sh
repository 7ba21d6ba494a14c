#!/bin/bash
# One run of one fault scenario on a new pair of real mirrord nodes, with
# random timing from a seed. Called by run.sh (which makes the table):
#
#   scenario.sh NAME SEED RUN RESULT_FILE
#
# appends "NAME RUN SEED CHECKED LOST CONVERGED STATUS" to RESULT_FILE:
# CHECKED acknowledged writes checked (each on every copy that must hold
# it), LOST those missing or wrong (must be 0), CONVERGED yes/no (images
# identical after recovery), STATUS pass/fail (every check of the run).
# scenario.sh --list prints the scenario names.
SCENARIOS=(kill-primary-write kill-secondary-write kill-primary-resync kill-secondary-resync
           kill-primary-split kill-secondary-split kill-primary-rejoin kill-secondary-rejoin
           link-partition link-partition-netns link-delay link-lossy link-flap enospc-primary eio-primary dead-disk-primary meta-eio-primary
           enospc-secondary eio-secondary meta-eio-secondary
           bitmap-damage power-loss-primary power-loss-secondary
           power-loss-resize-primary power-loss-resize-secondary)
if [ "${1:-}" = --list ]; then printf '%s\n' "${SCENARIOS[@]}"; exit 0; fi
[ $# -eq 4 ] || { echo "usage: $0 NAME SEED RUN RESULT_FILE | --list" >&2; exit 2; }
NAME=$1 SEED=$2 RUN=$3 RESULT=$4
. "$(dirname "$0")/faultlib.sh"
TEST_NAME="$NAME#$RUN"
# run.sh's timeout: the EXIT trap still kills this run's daemons.
trap 'fail "terminated (run timeout)"; exit 1' TERM

VOL_SIZE=128M
VOL_ACK=2s
# Both images start as the same zeroes; a rate-limited resync (16M of
# window at 8M/s: ~2s) leaves time to crash in the middle of it.
VOL_EXTRA='initial-sync = "skip"
resync-rate = "8M"'
# More [volume] lines for every run, e.g. FAULT_VOL_EXTRA='resync-checksums = true'.
[ -z "${FAULT_VOL_EXTRA:-}" ] || VOL_EXTRA+=$'\n'"$FAULT_VOL_EXTRA"
W1=$((16 * MiB)) W2=$((48 * MiB)) W3=$((80 * MiB)) WIN=$((16 * MiB))
have_ctl || die "the fault harness needs mirrorctl"

RECORDED=""
record() {
    local status=pass
    [ -z "$RECORDED" ] || return 0
    RECORDED=1
    [ "$N_FAIL" -eq 0 ] || status=fail
    echo "$NAME $RUN $SEED $CHECKED $LOST $CONVERGED $status" >>"$RESULT"
}
# A run that dies half-way still gets its row (a failed one).
CLEANUP_HOOKS+=("N_FAIL=\$((N_FAIL + 1)); record")

# some_acks NAME LO HI: wait for a random number more acknowledged writes.
some_acks() {
    local n
    rand n "$2" "$3"
    wait_acks "$1" $(($(acks "$1") + n)) 90 || fail "writer $1 did not get $n more writes acknowledged ($(tail -n 2 "$T/$1.err"))"
}


# kill_during_resync NODE: beta goes away, the primary writes alone, beta
# comes back; NODE is killed at a random point of the resync.
kill_during_resync() {
    local node=$1
    add_writer w1 "$(nbd_uri alpha)" $W1 $WIN
    some_acks w1 200 1000
    kill_node beta
    wait_state alpha 'degraded|disconnected' 20 >/dev/null || fail "alpha not degraded with beta dead"
    some_acks w1 2000 4000
    log_mark alpha
    must_start beta
    wait_log alpha "resync started" 30 >/dev/null || fail "no resync after beta came back"
    rand_sleep 50 1500
    if log_since alpha | grep -q "resync complete"; then
        log "the resync finished before the kill (timing: allowed, but nothing was interrupted)"
    fi
    kill_node "$node"
    pass "$node killed (SIGKILL) during the resync"
    if [ "$node" = alpha ]; then
        writer_gone w1 30
        must_start alpha
        add_writer w2 "$(nbd_uri alpha)" $W2 $WIN --duration 3
    else
        some_acks w1 200 1000
        must_start beta
    fi
}

# split_then_kill NODE: writes, split, writes (tracked), NODE killed and
# restarted (still split), rejoin.
split_then_kill() {
    local node=$1
    add_writer w1 "$(nbd_uri alpha)" $W1 $WIN
    some_acks w1 200 1500
    ctl alpha split >/dev/null || fail "split under load failed"
    check_eq "alpha split" split "$(status_get alpha .state)"
    some_acks w1 200 1500
    kill_node "$node"
    pass "$node killed (SIGKILL) while split"
    if [ "$node" = alpha ]; then
        writer_gone w1 30
        must_start alpha
        check_eq "the restarted primary is still split" split "$(status_get alpha .state)"
        add_writer w2 "$(nbd_uri alpha)" $W2 $WIN
    else
        some_acks w1 200 1000
        must_start beta
    fi
    ctl alpha rejoin --wait >/dev/null || fail "rejoin after the crash failed"
}

# rejoin_then_kill NODE: split, writes, rejoin, NODE killed during the
# rejoin's resync; restarted, the pair finishes it (rejoining again if the
# split survived the crash).
rejoin_then_kill() {
    local node=$1
    add_writer w1 "$(nbd_uri alpha)" $W1 $WIN
    some_acks w1 200 1000
    ctl alpha split >/dev/null || fail "split failed"
    some_acks w1 2000 4000
    log_mark alpha
    ctl alpha rejoin >/dev/null || fail "rejoin failed"
    wait_log alpha "resync started" 30 >/dev/null || fail "no resync after rejoin"
    rand_sleep 50 1500
    kill_node "$node"
    pass "$node killed (SIGKILL) during the rejoin"
    if [ "$node" = alpha ]; then
        writer_gone w1 30
        must_start alpha
        add_writer w2 "$(nbd_uri alpha)" $W2 $WIN
    else
        some_acks w1 200 1000
        must_start beta
    fi
    if [ "$(status_get alpha .state)" = split ]; then
        ctl alpha rejoin --wait >/dev/null || fail "second rejoin failed"
    fi
}

# secondary_fault_check W WHAT: the secondary's disk is failing under
# writer W's mirrored writes (DRBD's on-io-error=detach): the client of the
# primary sees no error, the primary keeps serving and tracks what beta
# lacks, beta says so in its log and status and no longer calls its copy
# consistent (it lacks acknowledged writes).
secondary_fault_check() {
    local w=$1 what=$2
    wait_log beta "$what" 90 >/dev/null && pass "beta logs its failing disk" \
        || fail "beta does not log the failure of its disk ($what)"
    some_acks "$w" 200 1000
    check_eq "no client write failed with the secondary's disk failing" 0 "$(grep -c '^E ' "$T/$w.acks")"
    node_alive alpha && pass "alpha keeps serving" || die "alpha died when beta's disk failed"
    node_alive beta && pass "beta survives its failing disk" || fail "beta died on its disk failure"
    local st
    st=$(status_get alpha .state)
    [ "$st" != synchronized ] && pass "alpha does not call the pair synchronized ($st)" \
        || fail "alpha reports synchronized while beta cannot store writes"
    [ "$(status_get alpha .out_of_sync_bytes)" -gt 0 ] && pass "alpha tracks what beta lacks" \
        || fail "alpha has nothing out of sync although beta failed writes"
    [ "$(status_get beta .local_io_errors)" -gt 0 ] && pass "beta's status counts its failed writes" \
        || fail "beta's status shows no local I/O errors"
    check_eq "beta's status: its copy is not consistent" false "$(status_get beta .consistent)"
    status_get beta .last_error | grep -q "local disk" && pass "beta's last_error names its disk" \
        || fail "beta's last_error does not name its disk: $(status_get beta .last_error)"
}

# ---- power loss during `mirrorctl resize` (power-loss-resize-*) ----

# resize_restart NODE: NODE starts again after its power loss with the
# grown size in its volume file. A backing file whose extension no sync
# covered is back at its old length: the start is refused, saying how to
# fix it, and the harness does what it says.
resize_restart() {
    local node=$1 len
    len=$(stat -c %s "${NODE_IMG[$node]}")
    if [ "$len" -lt "$NEW_BYTES" ]; then
        if start_node "$node"; then
            fail "$node started with a $len-byte backing file under a $NEW_BYTES-byte volume"
            return
        fi
        grep -q "less than the volume's $NEW_BYTES: grow it first (truncate -s $NEW_BYTES " "${NODE_LOG[$node]}" \
            && pass "$node refuses its short backing file and says how to grow it" \
            || fail "$node's refusal does not say how to grow its backing file: $(tail -n 1 "${NODE_LOG[$node]}")"
        truncate -s "$NEW_BYTES" "${NODE_IMG[$node]}"
    fi
    must_start "$node"
}

# resize_meet: both nodes run, their volume files say NEW_BYTES. If their
# sizes differ, the reconnect is refused naming the smaller node, which then
# grows alone (docs/configuration.md, "Growing a volume"); both end at
# NEW_BYTES, the size both volume files ask for.
resize_meet() {
    local sa sb small out rc try deadline=$((SECONDS + 20))
    sa=$(status_get alpha .size) sb=$(status_get beta .size)
    log "sizes after the restart: alpha $sa, beta $sb"
    if [ "$sa" != "$sb" ]; then
        small=alpha; [ "$sb" -lt "$sa" ] && small=beta
        until log_since alpha | grep -q "smaller node ('$small')" ||
              log_since beta | grep -q "smaller node ('$small')"; do
            [ $SECONDS -lt $deadline ] || { fail "no refusal naming the smaller node ('$small')"; break; }
            sleep 0.1
        done
        [ $SECONDS -lt $deadline ] && pass "the reconnect is refused naming the smaller node ('$small')"
        for try in $(seq 20); do
            out=$(ctl "$small" resize 2>&1); rc=$?
            grep -q "under way" <<<"$out" || break
            sleep 0.2
        done
        [ $rc -eq 0 ] && pass "$small grows alone: $out" || fail "$small could not grow alone: exit $rc: $out"
    fi
    check_eq "alpha serves the size both volume files say" "$NEW_BYTES" "$(status_get alpha .size)"
    check_eq "beta serves the size both volume files say" "$NEW_BYTES" "$(status_get beta .size)"
}

# resize_power_loss NODE: the pair grows from VOL_SIZE to 192M under a
# writer and NODE loses power at a step of the resize drawn from the seed
# (power-loss-at-resize=STEP), or, "after", by SIGUSR2 once both grew and a
# second writer runs in the new area. The writers use FUA, or by seed not
# when the secondary loses power. By seed, one image holds stale bytes
# where the volume grows (then the new area is resynced). Checked: the
# survivor's copy (or, with FUA, the dead secondary's disk) holds every
# write acknowledged before the power loss; an extension is on disk after the
# power loss unless it was lost before its sync ("extended"); the restarted
# pair meets at the new size, resyncs, and `mirrorctl verify` finds
# nothing; then converge_and_check.
resize_power_loss() {
    local node=$1 steps step i spec len acked_before="" resized rc w name off win line
    if [ "$node" = alpha ]; then steps=(extended flushed answered grown after)
    else steps=(extended flushed grown after); fi
    rand i 0 $((${#steps[@]} - 1))
    # FAULT_RESIZE_STEP chooses the step instead of the seed (to cover each).
    step=${FAULT_RESIZE_STEP:-${steps[$i]}}
    spec=power-loss-at-resize=$step
    [ "$step" = after ] && spec=power-loss
    log "$node loses power at resize step '$step'"
    OLD_BYTES=$(size_bytes "$VOL_SIZE") NEW_BYTES=$((192 * MiB))
    setup_pair
    # By seed, one node's image already reaches the new size with stale bytes
    # in the area the resize adds (a reused file; a block device): that area
    # is not known to read as zeros, so the primary marks it out of sync and
    # the pair resyncs it after the grow. They lie below the writers' windows
    # in the new area: a block no writer wrote must read as zeroes there.
    local stale stale_node="" soff
    rand stale 0 2
    if [ "$stale" -gt 0 ]; then
        stale_node=alpha; [ "$stale" = 2 ] && stale_node=beta
        rand soff 0 24
        truncate -s "$NEW_BYTES" "${NODE_IMG[$stale_node]}"
        dd if=/dev/urandom of="${NODE_IMG[$stale_node]}" bs=1M seek=$((OLD_BYTES / MiB + soff)) count=8 \
            conv=notrunc status=none
        log "$stale_node's image holds 8 MiB of stale bytes $soff MiB past the old end"
    fi
    # FUA writes when the primary loses power (the NBD contract); when the
    # secondary does, FUA or not by seed (without, the primary's resync must
    # repair what beta lost, in the new area too).
    local fua=--fua f
    if [ "$node" = beta ]; then
        rand f 0 1
        [ "$f" = 1 ] || fua=""
    fi
    log "writers ${fua:-without FUA}"
    if [ "$node" = alpha ]; then start_with_faults alpha "$spec"; must_start beta
    else must_start alpha; start_with_faults beta "$spec"; fi
    wait_state alpha synchronized 60 >/dev/null || die "the pair did not synchronize"
    add_writer w1 "$(nbd_uri alpha)" $W1 $WIN $fua
    some_acks w1 300 1500
    VOL_SIZE=192M
    write_configs
    log_mark alpha
    log_mark beta
    ctl alpha resize >"$T/resize.out" 2>&1 &
    resized=$!
    if [ "$step" = after ]; then
        wait "$resized"; rc=$?
        [ $rc -eq 0 ] && pass "resized under writes: $(cat "$T/resize.out")" \
            || die "resize failed (exit $rc): $(cat "$T/resize.out")"
        # A second writer in the new area, its window past the old end.
        add_writer w3 "$(nbd_uri alpha)" $((OLD_BYTES + 32 * MiB)) $WIN $fua
        some_acks w3 200 1500
        acked_before=$(date +%s%3N)
        power_loss "$node"
    else
        local deadline=$((SECONDS + 60))
        while node_alive "$node" && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
        node_alive "$node" && die "$node did not lose power at step '$step': $(cat "$T/resize.out")"
        wait "${NODE_PID[$node]}" 2>/dev/null; NODE_PID[$node]=""
        wait_dead_log "$node"
        line=$(grep -m1 "power-loss-at-resize=$step: power lost" "${NODE_LOG[$node]}") \
            || fail "$node's log does not say at which step its power went"
        acked_before=$(log_line_ms "$line")
        wait "$resized"; rc=$?
        log "the resize command: exit $rc: $(cat "$T/resize.out")"
        if [ "$node" = beta ]; then
            [ $rc -ne 0 ] && grep -q "size is unknown" "$T/resize.out" \
                && pass "the resize fails saying beta's size is unknown" \
                || fail "resize with beta's power lost: exit $rc: $(cat "$T/resize.out")"
            check_eq "alpha still serves the old size" "$OLD_BYTES" "$(status_get alpha .size)"
        fi
    fi
    len=$(stat -c %s "${NODE_IMG[$node]}")
    if [ "$step" = extended ] && [ "$node" != "$stale_node" ]; then
        check_eq "$node's extension, never synced, is lost with the power" "$OLD_BYTES" "$len"
    else
        check_eq "$node's extension was durable before it acted on it" "$NEW_BYTES" "$len"
    fi
    if [ "$node" = alpha ]; then
        for w in "${WRITERS[@]}"; do writer_gone "${w%% *}" 30; done
        for w in "${WRITERS[@]}"; do
            read -r name off win <<<"$w"
            count_verify "beta's copy right after the primary's power loss ($name)" "$name" \
                --uri "$(nbd_unix_uri beta)" "$off" "$win"
        done
        resize_restart alpha
        resize_meet
        add_writer w2 "$(nbd_uri alpha)" $((NEW_BYTES - WIN)) $WIN --duration 3
    else
        # FUA writes acknowledged before the power loss are on beta's disk;
        # those after it may be (in flight then) or not.
        for w in "${WRITERS[@]}"; do
            [ -n "$fua" ] || break
            read -r name off win <<<"$w"
            count_verify "beta's disk right after its power loss ($name, acknowledged before it)" "$name" \
                --image "${NODE_IMG[beta]}" "$off" "$win" --acked-before "$acked_before"
        done
        some_acks w1 200 1000
        log_mark alpha
        resize_restart beta
        resize_meet
        add_writer w2 "$(nbd_uri alpha)" $((NEW_BYTES - WIN)) $WIN --duration 3
    fi
    for w in "${WRITERS[@]}"; do end_writer "${w%% *}"; done
    wait_state alpha synchronized 180 >/dev/null && pass "synchronized at the new size" \
        || fail "not synchronized 180 s after the restart (alpha: $(status_get alpha .state))"
    local v
    v=$(ctl alpha verify --wait 2>&1) || fail "verify failed: $v"
    check_eq "verify compared the whole grown volume" "$NEW_BYTES" "$(jq -r .done_bytes <<<"$v" 2>/dev/null)"
    check_eq "verify finds nothing out of sync" 0 "$(jq -r .out_of_sync_bytes <<<"$v" 2>/dev/null)"
}

case $NAME in
kill-primary-write)
    start_synced_pair
    add_writer w1 "$(nbd_uri alpha)" $W1 $WIN
    some_acks w1 300 3000
    kill_node alpha
    pass "alpha killed (SIGKILL) under mirrored writes"
    writer_gone w1 30
    count_verify "beta's copy right after the crash" w1 --uri "$(nbd_unix_uri beta)" $W1 $WIN
    must_start alpha
    add_writer w2 "$(nbd_uri alpha)" $W2 $WIN --duration 3
    ;;
kill-secondary-write)
    start_synced_pair
    add_writer w1 "$(nbd_uri alpha)" $W1 $WIN
    some_acks w1 300 3000
    kill_node beta
    pass "beta killed (SIGKILL) under mirrored writes"
    some_acks w1 500 2000
    check_eq "no write failed with the secondary dead" 0 "$(grep -c '^E ' "$T/w1.acks")"
    must_start beta
    some_acks w1 200 1000
    ;;
kill-primary-resync) start_synced_pair; kill_during_resync alpha ;;
kill-secondary-resync) start_synced_pair; kill_during_resync beta ;;
kill-primary-split) start_synced_pair; split_then_kill alpha ;;
kill-secondary-split) start_synced_pair; split_then_kill beta ;;
kill-primary-rejoin) start_synced_pair; rejoin_then_kill alpha ;;
kill-secondary-rejoin) start_synced_pair; rejoin_then_kill beta ;;
link-partition)
    use_proxies
    start_synced_pair
    add_writer w1 "$(nbd_uri alpha)" $W1 $WIN
    some_acks w1 300 2000
    link_fault "0 down"
    wait_state alpha 'degraded|disconnected' 20 >/dev/null && pass "alpha degraded during the partition" \
        || fail "alpha not degraded 20s into the partition"
    rand_sleep 500 4000
    some_acks w1 200 1000
    link_fault ""
    some_acks w1 200 1000
    ;;
link-partition-netns)
    # The nodes in two network namespaces joined by a veth pair; the link
    # goes down (no proxy: the kernel's own TCP sees the partition).
    require ip
    NSA=mf-a-$$ NSB=mf-b-$$ VA=mfa$$ VB=mfb$$
    netns_pair "$NSA" "$NSB" "$VA" "$VB" 10.124.0
    NODE_NS[alpha]=$NSA NODE_NS[beta]=$NSB
    NODE_ADDR[alpha]=10.124.0.1:7788 NODE_ADDR[beta]=10.124.0.2:7788
    start_synced_pair
    # A unix socket reaches alpha's export from this namespace.
    add_writer w1 "$(nbd_unix_uri alpha)" $W1 $WIN
    some_acks w1 300 2000
    ip -n "$NSA" link set "$VA" down
    wait_state alpha 'degraded|disconnected' 20 >/dev/null && pass "alpha degraded with the veth down" \
        || fail "alpha not degraded 20s after the veth went down"
    rand_sleep 500 4000
    some_acks w1 200 1000
    ip -n "$NSA" link set "$VA" up
    some_acks w1 200 1000
    ;;
link-delay)
    use_proxies
    link_fault "25"
    start_synced_pair
    add_writer w1 "$(nbd_uri alpha)" $W1 $WIN
    some_acks w1 200 600
    link_fault ""
    end_writer w1
    lat=$(writer_field w1 max_latency_ms)
    [ "${lat:-0}" -ge 40 ] && pass "writes waited for the delayed peer (worst ${lat} ms)" \
        || fail "worst write latency ${lat} ms with a 50 ms round trip: not mirrored synchronously?"
    ;;
link-lossy)
    use_proxies
    start_synced_pair
    add_writer w1 "$(nbd_uri alpha)" $W1 $WIN
    some_acks w1 200 1000
    link_fault "1 loss=5"
    rand_sleep 3000 8000
    link_fault ""
    some_acks w1 200 1000
    ;;
link-flap)
    use_proxies
    start_synced_pair
    add_writer w1 "$(nbd_uri alpha)" $W1 $WIN
    rand flaps 3 6
    for _ in $(seq "$flaps"); do
        rand_sleep 300 3000
        link_fault "0 down"
        rand_sleep 300 3000
        link_fault ""
    done
    pass "$flaps link flaps"
    some_acks w1 200 1000
    ;;
enospc-primary)
    # alpha's 128M image on a 12M filesystem: writes to new blocks fail once
    # it is full; the writer's window is bigger than that.
    tmpfs_for alpha 12
    start_synced_pair
    add_writer w1 "$(nbd_uri alpha)" $W1 $((32 * MiB))
    WRITERS[-1]="w1 $W1 $((32 * MiB))"
    deadline=$((SECONDS + 120))
    while [ "$(grep -c '^E ' "$T/w1.acks")" -lt 20 ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    nfail=$(grep -c '^E ' "$T/w1.acks")
    [ "$nfail" -ge 20 ] && pass "the client gets errors for writes the full disk refused ($nfail)" \
        || fail "no ENOSPC errors reached the client ($nfail failed writes)"
    grep -q 'No space left' "$T/w1.err" && pass "the errors say ENOSPC" || fail "no ENOSPC in the client's errors"
    node_alive alpha && pass "alpha survives the full filesystem" || die "alpha died on ENOSPC"
    end_writer w1
    # Recovery: the operator frees space (a bigger filesystem) and restarts
    # the primary; the copies must then agree.
    stop_node alpha
    mount -o remount,size=256m "$T/fs-alpha" || fail "cannot grow the tmpfs"
    must_start alpha
    ;;
eio-primary)
    # A bad region of alpha's disk (or, by seed, a disk failing after N
    # writes), with on-io-error = "pass-on": every write that touches it
    # fails for the client; none is acknowledged; the copies agree after the
    # disk is replaced (restart without faults). (dead-disk-primary: detach.)
    VOL_EXTRA+=$'\non-io-error = "pass-on"'
    rand which 0 1
    rand boff 0 15
    if [ "$which" = 0 ]; then
        BAD_OFF=$((W1 + boff * MiB)) BAD_LEN=$MiB
        spec="write-eio=$BAD_OFF:$BAD_LEN"
    else
        rand after 500 3000
        BAD_OFF=0 BAD_LEN=$(size_bytes "$VOL_SIZE")
        spec="eio-after=$after"
    fi
    setup_pair
    start_with_faults alpha "$spec"
    must_start beta
    wait_state alpha synchronized 60 >/dev/null || die "the pair did not synchronize"
    add_writer w1 "$(nbd_uri alpha)" $W1 $WIN
    deadline=$((SECONDS + 90))
    while [ "$(in_range_count E $BAD_OFF $BAD_LEN w1)" -lt 10 ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    end_writer w1
    nerr=$(in_range_count E $BAD_OFF $BAD_LEN w1)
    nok=$(in_range_count A $BAD_OFF $BAD_LEN w1)
    [ "$nerr" -ge 10 ] && pass "writes to the failing disk get EIO ($nerr)" || fail "only $nerr writes to the failing disk got an error"
    grep -q 'Input/output error' "$T/w1.err" && pass "the client's errors are EIO" || fail "no EIO in the client's errors"
    if [ "$which" = 0 ]; then
        check_eq "no write to the bad region was acknowledged (no false success)" 0 "$nok"
    else
        check_eq "no write after the disk failed was acknowledged" "$after" "$(grep -c '^A ' "$T/w1.acks")"
    fi
    # What the secondary holds for failed writes is checked by the final
    # verify (a failed write may be there or not, nothing else may).
    stop_node alpha
    must_start alpha
    ;;
dead-disk-primary)
    # alpha's disk dies under the writer (dead-after=N: every request fails
    # from then on) with on-io-error = "detach" (the default): alpha goes on
    # with beta's copy alone and the client sees no error. By seed alpha is
    # then killed (-9) under the writer. Recovery is the documented one:
    # alpha refuses to start on its failed disk; beta is promoted (no
    # --force); alpha gets a new disk and --discard-my-data (a full copy from
    # beta); a planned switchover (demote beta, promote alpha) ends it.
    # Every acknowledged write must be on both copies.
    rand after 300 3000
    rand crash 0 1
    setup_pair
    start_with_faults alpha "dead-after=$after"
    must_start beta
    wait_state alpha synchronized 60 >/dev/null || die "the pair did not synchronize"
    add_writer w1 "$(nbd_uri alpha)" $W1 $WIN
    deadline=$((SECONDS + 90))
    until [ "$(status_get alpha .disk)" = diskless ] || [ $SECONDS -ge $deadline ]; do sleep 0.2; done
    check_eq "alpha detached its dead disk (after $after writes)" diskless "$(status_get alpha .disk)"
    some_acks w1 200 1500
    check_eq "no client write failed with alpha's disk dead" 0 "$(grep -c '^E ' "$T/w1.acks")"
    if [ "$crash" = 1 ]; then
        kill_node alpha
        pass "alpha (diskless) killed (SIGKILL) under the writer"
        writer_gone w1 30
    else
        end_writer w1
        count_verify "alpha's export (beta's copy) while diskless" w1 --uri "$(nbd_unix_uri alpha)" $W1 $WIN
        stop_node alpha
    fi
    count_verify "beta's copy once alpha is gone" w1 --uri "$(nbd_unix_uri beta)" $W1 $WIN
    start_refused "alpha refuses to start on its failed disk" alpha \
        "this node's disk failed and was detached"
    out=$(ctl beta promote 2>&1); rc=$?
    check_eq "beta promoted without --force ($out)" 0 "$rc"
    add_writer w2 "$(nbd_uri beta)" $W2 $WIN --duration 2
    rm -f "${NODE_IMG[alpha]}"
    truncate -s "$(size_bytes "$VOL_SIZE")" "${NODE_IMG[alpha]}"
    must_start alpha --discard-my-data
    end_writer w2
    wait_state beta synchronized 120 >/dev/null || fail "beta did not copy alpha's new disk"
    out=$(ctl beta demote 2>&1); rc=$?
    check_eq "switchover: beta demoted ($out)" 0 "$rc"
    wait_state alpha standby 30 >/dev/null || true
    out=$(ctl alpha promote 2>&1); rc=$?
    check_eq "switchover: alpha promoted ($out)" 0 "$rc"
    ;;
meta-eio-primary)
    # alpha's metadata file fails (every commit after the first N gets EIO).
    # With beta gone every write needs its dirty bit on disk, or its extent
    # durably active (crash recovery marks it dirty whole) while the
    # metadata still works: once a commit failed, no bit can be persisted
    # any more, and every write must fail for the client, never be
    # acknowledged untracked. (Writes that need a new activity extent fail
    # too, so errors may start before beta is gone.) The activity log keeps
    # extents active, so few commits happen: N stays small enough that one
    # fails within w2's first writes to its new window.
    rand n 2 5
    setup_pair
    start_with_faults alpha "meta-eio-after=$n"
    must_start beta
    wait_state alpha synchronized 60 >/dev/null || die "the pair did not synchronize"
    add_writer w1 "$(nbd_uri alpha)" $W1 $WIN
    rand_sleep 500 3000
    kill_node beta
    pass "beta killed: alpha must now record every write in its failing metadata"
    # Beta's loss marks w1's (active) window dirty at once; a window never
    # written needs new bits, hence commits.
    end_writer w1
    add_writer w2 "$(nbd_uri alpha)" $W2 $WIN
    deadline=$((SECONDS + 60))
    while [ "$(grep -c '^E ' "$T/w2.acks")" -lt 10 ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    nerr=$(($(grep -c '^E ' "$T/w1.acks") + $(grep -c '^E ' "$T/w2.acks")))
    [ "$nerr" -ge 10 ] && pass "writes that cannot be tracked fail for the client ($nerr)" \
        || fail "only $nerr writes failed with the metadata refusing every commit"
    end_writer w2
    # Once one failed, only writes already in flight (16) may still succeed.
    late=$(awk '/^E /{e=1} e && /^A /{n++} END{print n+0}' "$T/w2.acks")
    [ "$late" -le 16 ] && pass "no write was acknowledged untracked after the metadata failed ($late in flight)" \
        || fail "$late writes were acknowledged after the metadata failed: their dirty bits are not on disk"
    grep -q "metadata .* failed" "${NODE_LOG[alpha]}" && pass "alpha logs the metadata failure" \
        || fail "alpha does not log its metadata failure"
    # The metadata disk is replaced: alpha crashes and comes back without
    # faults (its last good metadata), then beta.
    kill_node alpha
    must_start alpha
    must_start beta
    ;;
enospc-secondary)
    # beta's 128M image on a 12M filesystem: its writes to new blocks fail
    # once the filesystem is full. Then the operator frees space (the tmpfs
    # grows) WITHOUT restarting anything: the next resync must succeed.
    tmpfs_for beta 12
    start_synced_pair
    add_writer w1 "$(nbd_uri alpha)" $W1 $((32 * MiB))
    WRITERS[-1]="w1 $W1 $((32 * MiB))"
    secondary_fault_check w1 "No space left"
    mount -o remount,size=256m "$T/fs-beta" || fail "cannot grow the tmpfs"
    pass "space freed on beta (tmpfs grown), nothing restarted"
    wait_state alpha synchronized 120 >/dev/null && pass "the pair resynchronized once beta had space" \
        || fail "not synchronized 120 s after beta got space back (alpha: $(status_get alpha .state))"
    check_eq "beta's copy is consistent again" true "$(status_get beta .consistent)"
    some_acks w1 200 1000
    ;;
eio-secondary)
    # A bad region of beta's disk, or (by seed) a disk failing after N
    # writes; fixed by restarting beta without faults (disk replaced).
    rand which 0 1
    rand boff 0 15
    if [ "$which" = 0 ]; then
        spec="write-eio=$((W1 + boff * MiB)):$MiB"
    else
        rand after 500 3000
        spec="eio-after=$after"
    fi
    setup_pair
    must_start alpha
    start_with_faults beta "$spec"
    wait_state alpha synchronized 60 >/dev/null || die "the pair did not synchronize"
    add_writer w1 "$(nbd_uri alpha)" $W1 $WIN
    secondary_fault_check w1 "Input/output error"
    stop_node beta
    must_start beta
    some_acks w1 200 1000
    ;;
meta-eio-secondary)
    # beta's metadata file fails after N commits (N = 1-2). It commits at
    # each handshake (the plan), at a split and at the end of a resync; a
    # split and a rejoin take it past N. A secondary that cannot record its
    # state refuses the session or the end of the resync: the primary goes
    # on alone, the client sees no error. Fixed by restarting beta without
    # faults.
    rand n 1 2
    setup_pair
    must_start alpha
    start_with_faults beta "meta-eio-after=$n"
    wait_state alpha synchronized 60 >/dev/null || die "the pair did not synchronize"
    add_writer w1 "$(nbd_uri alpha)" $W1 $WIN
    some_acks w1 300 2000
    ctl alpha split >/dev/null 2>&1
    some_acks w1 300 1000
    ctl alpha rejoin >/dev/null 2>&1
    wait_log beta "metadata .*failed" 60 >/dev/null && pass "beta logs its metadata failure" \
        || fail "beta does not log its metadata failure"
    some_acks w1 300 1000
    check_eq "no client write failed with beta's metadata failing" 0 "$(grep -c '^E ' "$T/w1.acks")"
    node_alive alpha && pass "alpha keeps serving" || die "alpha died when beta's metadata failed"
    st=$(status_get alpha .state)
    [ "$st" != synchronized ] && pass "alpha does not call the pair synchronized ($st)" \
        || fail "alpha reports synchronized while beta cannot record its state"
    stop_node beta
    must_start beta
    # The rejoin above is still under way (its resync runs now), or was
    # refused if the split itself never reached beta; either way the pair
    # must end synchronized (converge_and_check).
    [ "$(status_get alpha .state)" = split ] && ctl alpha rejoin >/dev/null 2>&1
    ;;
bitmap-damage)
    # alpha holds writes beta never saw (beta down), stops; its metadata is
    # damaged or removed; restarted, the pair must still end identical with
    # every write.
    start_synced_pair
    stop_node beta
    wait_state alpha 'degraded|disconnected' 20 >/dev/null || fail "alpha not degraded"
    add_writer w1 "$(nbd_uri alpha)" $W1 $WIN
    some_acks w1 500 3000
    end_writer w1
    stop_node alpha
    meta=${NODE_META[alpha]}
    rand how 0 3
    rand at 0 $(($(stat -c %s "$meta") - 64))
    case $how in
        0) rm -f "$meta"; what="removed" ;;
        1) truncate -s 4096 "$meta"; what="truncated to 4096 bytes" ;;
        2) dd if=/dev/urandom of="$meta" bs=1 seek="$at" count=64 conv=notrunc status=none
           what="64 random bytes at offset $at" ;;
        3) dd if=/dev/zero of="$meta" bs=4096 count=2 conv=notrunc status=none; what="both superblocks zeroed" ;;
    esac
    pass "alpha's metadata damaged: $what"
    must_start alpha
    must_start beta
    # Metadata that no longer names a generation the peer knows makes the
    # primary refuse to overwrite anything until the operator decides (the
    # log says how); the harness then does what it says.
    deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ]; do
        [ "$(status_get alpha .state)" = synchronized ] && break
        grep -q "share no generation" "${NODE_LOG[alpha]}" && break
        sleep 0.2
    done
    if grep -q "share no generation" "${NODE_LOG[alpha]}"; then
        pass "alpha refuses to overwrite beta without the operator's word (nothing overwritten)"
        stop_node alpha
        must_start alpha --force-full-sync
    fi
    ;;
power-loss-primary|power-loss-secondary)
    # The node loses power: its writes that were not synced vanish (data and
    # metadata). The writer uses FUA when the primary dies, so that every
    # acknowledged write was durable on both copies and must survive; when
    # the secondary dies, FUA or not by seed: with FUA, its image must hold
    # every write acknowledged before the power loss (FUA is durable on
    # every copy); without, the primary's resync must repair it.
    node=alpha fua=--fua
    if [ $NAME = power-loss-secondary ]; then
        node=beta
        rand f 0 1
        [ "$f" = 1 ] || fua=""
    fi
    rand which 0 1
    spec=power-loss
    if [ "$which" = 1 ]; then rand n 300 3000; spec=crash-after=$n; fi
    setup_pair
    if [ $node = alpha ]; then start_with_faults alpha $spec; must_start beta
    else must_start alpha; start_with_faults beta $spec; fi
    wait_state alpha synchronized 60 >/dev/null || die "the pair did not synchronize"
    add_writer w1 "$(nbd_uri alpha)" $W1 $WIN $fua
    if [ "$which" = 0 ]; then
        some_acks w1 300 2000
        before=$(wc -l <"$T/w1.acks")
        power_loss $node
    else
        deadline=$((SECONDS + 120))
        while node_alive $node && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        node_alive $node && die "$node did not crash after $n writes"
        wait "${NODE_PID[$node]}" 2>/dev/null; NODE_PID[$node]=""
        wait_dead_log $node
    fi
    if [ $node = alpha ]; then
        writer_gone w1 30
        count_verify "beta's copy right after the primary's power loss" w1 --uri "$(nbd_unix_uri beta)" $W1 $WIN
        must_start alpha
        add_writer w2 "$(nbd_uri alpha)" $W2 $WIN --duration 3
    else
        if [ -n "$fua" ] && [ "$which" = 0 ]; then
            # Acknowledged before the power loss: on beta's disk. After it:
            # maybe (in flight at the instant), so marked unacknowledged.
            { head -n "$before" "$T/w1.acks"; tail -n +$((before + 1)) "$T/w1.acks" | sed 's/^A /U /'; } >"$T/cut.acks"
            CHECKED=$((CHECKED + $(grep -c '^A ' "$T/cut.acks")))
            check "beta's disk right after its power loss holds every FUA write acknowledged before it" \
                "${NBDTOOL[@]}" verify --image "${NODE_IMG[beta]}" --log "$T/cut.acks" --offset $W1 --window $WIN \
                || LOST=$((LOST + 1))
        fi
        some_acks w1 200 1000
        must_start beta
    fi
    ;;
power-loss-resize-primary) resize_power_loss alpha ;;
power-loss-resize-secondary) resize_power_loss beta ;;
*) die "unknown scenario '$NAME' (scenario.sh --list)" ;;
esac

converge_and_check
record
pair_finish
