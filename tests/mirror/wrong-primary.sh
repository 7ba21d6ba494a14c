#!/bin/bash
# wrong-primary (chaos8): a new pair whose volume file names the wrong node
# primary: beta's disk holds the database, alpha's is blank or holds older
# data. The operator follows the refusal's words literally to keep beta's
# copy: stop alpha, `promote --force` on beta, start alpha once with
# --discard-my-data. Beta's data must survive, and the pair end identical.
# Also: promote --force --identical on the secondary of a new pair.
# Cases: WP_CASES ("blank-full blank-skip data-full data-skip").
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "needs mirrorctl"
VOL_SIZE=64M
VOL_ACK=1s
WIN=$((16 * MiB))


wp_case() {
    local adisk=$1 init=$2 label="$1-$2" out shb line rc
    log "---- $label"
    VOL_EXTRA="initial-sync = \"$init\""
    fresh_pair
    head -c $((8 * MiB)) /dev/urandom | dd of="${NODE_IMG[beta]}" bs=1M seek=40 conv=notrunc status=none
    [ "$adisk" = data ] &&
        head -c $((8 * MiB)) /dev/urandom | dd of="${NODE_IMG[alpha]}" bs=1M seek=40 conv=notrunc status=none
    shb=$(sha_of "${NODE_IMG[beta]}")
    start_pair
    sleep 4
    line=$({ log_all alpha; log_all beta; } | grep -E 'error|warn' | grep -vE 'Connection refused' | tail -n 3)
    log "[$label] messages: $line"
    log "[$label] alpha: $(status_get alpha '.state + " writable=" + (.writable|tostring)')  beta: $(status_get beta .state)"
    check_eq "[$label] beta's data untouched" "$shb" "$(sha_of "${NODE_IMG[beta]}")"
    # The operator follows the message: stop alpha, promote --force on beta.
    stop_node alpha
    out=$(ctl beta promote --force); rc=$?
    log "[$label] promote --force beta (rc $rc): $out"
    check_eq "[$label] beta's data untouched after promote" "$shb" "$(sha_of "${NODE_IMG[beta]}")"
    log "[$label] beta: $(status_get beta '.state + " writable=" + (.writable|tostring)')"
    write_acked w "$(nbd_unix_uri beta)" 0 $WIN 200
    log_mark alpha
    if start_node alpha --discard-my-data; then
        if wait_state beta synchronized 30 >/dev/null; then
            log "[$label] plan: $(plan_of beta)"
        else
            fail "[$label] no sync after following the message"
            log_since alpha | grep -E 'warn|error' | tail -n 3 >&2
        fi
    else
        fail "[$label] alpha --discard-my-data did not start: $(log_all alpha | tail -n 2)"
    fi
    stop_pair
    check_identical "[$label] end"
    verify_writes "[$label] alpha's image holds beta's writes" w --image "${NODE_IMG[alpha]}" 0 $WIN
    check_eq "[$label] beta's old data at 40M kept on alpha" \
        "$(dd if="${NODE_IMG[beta]}" bs=1M skip=40 count=8 status=none | sha256sum)" \
        "$(dd if="${NODE_IMG[alpha]}" bs=1M skip=40 count=8 status=none | sha256sum)"
}

for c in ${WP_CASES:-blank-full blank-skip data-full data-skip}; do
    wp_case "${c%-*}" "${c#*-}"
done
pair_finish
