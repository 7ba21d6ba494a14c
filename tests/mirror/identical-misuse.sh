#!/bin/bash
# identical-misuse (chaos8): `promote --force --identical` and
# initial-sync = "skip" on a new pair whose primary took writes before the
# peer ever connected. Whatever the operator says, no write alpha
# acknowledged may be missing from beta once both say synchronized.
# Cases (IDM_CASES picks some):
#  skip-blank: initial-sync = "skip", both disks blank (sparse), alpha alone
#    takes writes, beta then connects: ADOPT would leave beta without them.
#  skip-blank-restart: the same with a restart of alpha before beta connects.
#  ident-written: disks blank, alpha alone takes writes, restarts, then
#    `promote --force --identical` (twice) before beta connects.
#  ident-data: disks hold the same data, alpha alone is promote --force'd,
#    takes writes, restarts, then `promote --force --identical`.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "needs mirrorctl"
VOL_SIZE=64M
VOL_ACK=1s
WIN=$((16 * MiB))


# converge LABEL: start beta, wait for alpha synchronized (or not), then
# check the invariant: synchronized => identical and w holds on beta.
converge() {
    local label=$1 st
    node_alive beta || must_start beta
    if wait_state alpha synchronized 30 >/dev/null; then
        log "[$label] alpha synchronized, plan: $(plan_of alpha)"
        sleep 1
        st=$(status_get beta .state)
        stop_pair
        check_identical "[$label] synchronized pair"
        verify_writes "[$label] beta's image holds every write alpha acknowledged" w \
            --image "${NODE_IMG[beta]}" 0 $WIN
    else
        log "[$label] alpha: $(status_get alpha .state) beta: $(status_get beta .state)"
        log "[$label] alpha log:"; log_all alpha | tail -n 8 >&2
        log "[$label] beta log:"; log_all beta | tail -n 8 >&2
        stop_pair
        verify_writes "[$label] alpha's image holds every write it acknowledged" w \
            --image "${NODE_IMG[alpha]}" 0 $WIN
    fi
}

case_skip_blank() {
    local restart=$1 label=skip-blank$1 out
    log "---- $label"
    VOL_EXTRA='initial-sync = "skip"'
    fresh_pair
    must_start alpha
    sleep 2
    log "[$label] alpha alone: $(status_get alpha '.state + " writable=" + (.writable|tostring)')"
    write_acked w "$(nbd_unix_uri alpha)" 0 $WIN 200
    if [ -n "$restart" ]; then stop_node alpha; must_start alpha; sleep 1; fi
    converge "$label"
}

case_ident() {
    local data=$1 label=ident-$1 out i
    log "---- $label"
    VOL_EXTRA='initial-sync = "skip"'
    fresh_pair
    if [ "$data" = data ]; then
        head -c $((4 * MiB)) /dev/urandom | dd of="${NODE_IMG[alpha]}" bs=1M seek=40 conv=notrunc status=none
        cp "${NODE_IMG[alpha]}" "${NODE_IMG[beta]}"
    fi
    must_start alpha
    sleep 2
    log "[$label] alpha alone: $(status_get alpha '.state + " writable=" + (.writable|tostring)')"
    if [ "$(status_get alpha .writable)" != true ]; then
        out=$(ctl alpha promote --force); log "[$label] promote --force alpha: $out"
    fi
    write_acked w "$(nbd_unix_uri alpha)" 0 $WIN 200
    out=$(ctl alpha promote --force --identical); log "[$label] --identical after writes: $out"
    stop_node alpha; must_start alpha; sleep 1
    for i in 1 2; do
        out=$(ctl alpha promote --force --identical); log "[$label] --identical after restart #$i (rc $?): $out"
    done
    converge "$label"
}

for c in ${IDM_CASES:-skip-blank skip-blank-restart ident-blank ident-data}; do
    case $c in
        skip-blank) case_skip_blank "" ;;
        skip-blank-restart) case_skip_blank -restart ;;
        ident-blank) case_ident blank ;;
        ident-data) case_ident data ;;
    esac
done
pair_finish
