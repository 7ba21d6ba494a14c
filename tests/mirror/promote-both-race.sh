#!/bin/bash
# promote-both-race: `mirrorctl promote` on both nodes of a pair in standby
# (both secondary, connected) at the same moment. Each checks that its peer
# is not primary before its role's metadata commits; both commits then run
# together. Here both nodes' metadata commits are slowed
# (MIRRORD_FAULTS=meta-delay-ms) so the two promotes always overlap.
# At most one may succeed: two primaries each take writes the other lacks
# (a split brain, whose resolution discards one side's acknowledged writes).
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "promote-both-race needs mirrorctl"
DELAY_MS=1500

setup_pair
start_with_faults alpha "meta-delay-ms=$DELAY_MS"
start_with_faults beta "meta-delay-ms=$DELAY_MS"
wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize"
out=$(ctl alpha demote) || die "demote alpha: $out"
log "demote alpha: $out"

ctl alpha promote >"$T/pa.out" 2>&1 &
pa=$!
ctl beta promote >"$T/pb.out" 2>&1 &
pb=$!
wait $pa; ra=$?
wait $pb; rb=$?
log "promote alpha (exit $ra): $(cat "$T/pa.out")"
log "promote beta (exit $rb): $(cat "$T/pb.out")"
if [ $ra -eq 0 ] && [ $rb -eq 0 ]; then
    fail "both promotes succeeded: two primaries"
    nbd_fill "$(nbd_unix_uri alpha)" 0 $((64 * KiB)) 1 && nbd_fill "$(nbd_unix_uri beta)" 0 $((64 * KiB)) 2 \
        && fail "both nodes acknowledged a write to the same range"
else
    pass "at most one promote succeeded (alpha: $ra, beta: $rb)"
fi
sleep 2
log "alpha: $(status_get alpha '.role + " " + .state'), beta: $(status_get beta '.role + " " + .state')"
stop_pair
finish
