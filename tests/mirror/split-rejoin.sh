#!/bin/bash
# split-rejoin: a workload with a known write log runs through the primary;
# the mirror is split mid-load. The secondary's image must hold every write
# acknowledged before the split and none issued after it (writes in flight
# at the split may be either way: that is a crash-consistent instant). Writes
# go on; rejoin under load resyncs only the regions written since the split,
# and the copies end identical.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=256M
VOL_ACK=5s
VOL_EXTRA='initial-sync = "skip"'
WIN_OFF=$((32 * MiB))
WIN=$((16 * MiB))

start_synced_pair 30
have_ctl || die "split needs mirrorctl"

start_writer w "$(nbd_uri alpha)" $WIN_OFF $WIN --qd 8 --seed 21
wait_acks w 2000 60 || die "the writer did not get 2000 writes acknowledged"

# --- split mid-load; remember how far the log was before and after
before=$(wc -l <"$T/w.acks")
out=$("$MIRRORCTL" --socket "${NODE_CTL[alpha]}" split 2>&1) && pass "split under load: $out" \
    || die "split failed: $out"
sleep 0.3   # the writer logs acknowledgements a moment after it gets them
after=$(wc -l <"$T/w.acks")
check_eq "alpha reports split" split "$(status_get alpha .state)"
check_eq "beta reports split" split "$(status_get beta .state)"

# The cut log: acknowledged before the split: must be there; acknowledged
# around it: may be there; later: must not be (the verifier rejects data of
# writes it does not know).
cut_acks w "$before" "$after"
wait_acks w $(( $(acks w) + 1000 )) 60 || fail "writes did not go on after the split"
check "beta's split image holds exactly the writes acknowledged before the split" \
    "${NBDTOOL[@]}" verify --uri "$(nbd_unix_uri beta)" --log "$T/w.cut.acks" --offset $WIN_OFF --window $WIN
dirty=$(status_get alpha .out_of_sync_bytes)
[ "$dirty" -gt 0 ] && [ "$dirty" -le "$WIN" ] && pass "alpha tracks $dirty bytes changed since the split (window $WIN)" \
    || fail "alpha tracks $dirty bytes changed since the split (window $WIN)"

# --- rejoin under load
base=$(status_get alpha .resynced_bytes_total)
out=$("$MIRRORCTL" --socket "${NODE_CTL[alpha]}" rejoin --wait 2>&1) && pass "rejoin --wait under load: $out" \
    || fail "rejoin failed: $out"
wait_state alpha synchronized 60 >/dev/null || fail "alpha not synchronized after rejoin"
copied=$(( $(status_get alpha .resynced_bytes_total) - base ))
[ "$copied" -gt 0 ] && [ "$copied" -le "$WIN" ] \
    && pass "rejoin copied $copied bytes: only the regions written since the split (window $WIN)" \
    || fail "rejoin copied $copied bytes (window $WIN)"
stop_writer w
check_eq "the writer saw no error" 0 "$WRITER_RC"
nbd_flush alpha
verify_writes "alpha holds every acknowledged write" w --uri "$(nbd_uri alpha)" $WIN_OFF $WIN
stop_pair
check_identical "after rejoin"
finish
