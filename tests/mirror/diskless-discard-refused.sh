#!/bin/bash
# diskless-discard-refused (found by chaos6): alpha's disk died and was
# detached, so beta holds the only current copy (its metadata records it:
# kFlagPeerDiskFailed). Beta is then started with --discard-my-data: that
# would throw the only current copy away, so mirrord refuses to start and
# says why; started without it, beta is promoted, alpha (its disk replaced)
# takes a full copy once with --discard-my-data, and both copies end with
# every acknowledged write. Before: beta started, dropped the record and
# turned inconsistent; alpha refused it and nothing served the volume until
# `promote --force` on beta. Case MODE=lost (beta's metadata lost as well,
# then the copy-unknown advice followed) is the same script with MODE=discard.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "needs mirrorctl"
VOL_SIZE=64M
VOL_ACK=1s
VOL_EXTRA='initial-sync = "skip"'
WIN=$((16 * MiB))
MODE=${MODE:-discard-keepmeta}
setup_pair
must_start beta
start_with_faults alpha "dead-after=400"
wait_state alpha synchronized 30 >/dev/null || die "no sync"
write_acked w1 "$(nbd_unix_uri alpha)" 0 $WIN 1500
wait_state alpha diskless 10 >/dev/null || die "alpha not diskless"
stop_node beta
SHB=$(sha_of "${NODE_IMG[beta]}")
if [ "$MODE" != discard-keepmeta ]; then
    mv "${NODE_META[beta]}" "$T/beta.meta.lost"; rm -f "${NODE_META[beta]}.backup"
fi
log_mark alpha
case $MODE in
    discard) must_start beta --discard-my-data ;;
    discard-keepmeta)
        # beta's metadata says its copy is the only current one (the peer's
        # disk failed): --discard-my-data here must be refused.
        if start_node beta --discard-my-data; then
            fail "beta, the only current copy (peer_disk_failed), started with --discard-my-data"
        elif grep -q "discarding it would leave the volume with none" "$(node_log beta)"; then
            pass "beta refuses --discard-my-data: $(tail -n 1 "$(node_log beta)")"
        else
            fail "beta did not start, but does not say why: $(tail -n 1 "$(node_log beta)")"
        fi
        must_start beta ;;
    *) must_start beta ;;
esac
sleep 6
log "alpha: $(status_get alpha '"\(.state) \(.disk) \(.link) \(.last_error)"')"
log "beta: $(status_get beta '"\(.state) \(.role) \(.link) \(.copy_history_unknown) \(.last_error)"')"
log "alpha log: $(log_since alpha | grep -v debug: | tail -n 4)"
log "beta log: $(grep -v debug: "$(node_log beta)" | tail -n 6)"
log "beta status: $(ctl beta status)"
if out=$("${NBDTOOL[@]}" sha "$(nbd_unix_uri alpha)" 2>&1); then log "alpha read ok: $out"; else log "alpha read fails: ${out: -120}"; fi
check_eq "beta's copy untouched" "$SHB" "$(sha_of "${NODE_IMG[beta]}")"
verify_writes "beta's image holds every acked write" w1 --image "${NODE_IMG[beta]}" 0 $WIN
# way out: stop alpha, promote beta
kill -TERM "${NODE_PID[alpha]}"; reap_node alpha 20 || fail "alpha did not stop"
log "alpha exit $NODE_RC"
out=$(ctl beta promote); rc=$?; log "promote on beta: rc=$rc $out"
if [ $rc -ne 0 ]; then out=$(ctl beta promote --force); rc=$?; log "promote --force on beta: rc=$rc $out"; fi
check_eq "beta promoted" primary "$(status_get beta .role)"
check_eq "beta's copy untouched" "$SHB" "$(sha_of "${NODE_IMG[beta]}")"
rm -f "${NODE_IMG[alpha]}"; truncate -s "$VOL_SIZE" "${NODE_IMG[alpha]}"
must_start alpha --discard-my-data
wait_state beta synchronized 60 >/dev/null || fail "no resync to alpha: $(status_get beta '"\(.state) \(.last_error)"')"
stop_pair beta alpha
check_identical "after alpha's full copy"
verify_writes "alpha holds w1" w1 --image "${NODE_IMG[alpha]}" 0 $WIN
pair_finish
