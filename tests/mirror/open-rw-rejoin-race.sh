#!/bin/bash
# open-rw-rejoin-race: `mirrorctl open-rw` on the split secondary while the
# primary rejoins. open-rw makes the export read-write once its metadata
# commit is done; a rejoin's plan reaching the secondary meanwhile finds it
# still read-only (nothing to close) and ends the split. Here beta's metadata
# commits are slowed (MIRRORD_FAULTS=meta-delay-ms) so the plan always falls
# inside open-rw's commit.
# Once the pair is synchronized again, beta's export must be read-only: a
# local write there would change one copy while both say synchronized.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "open-rw-rejoin-race needs mirrorctl"
DELAY_MS=1500

setup_pair
must_start alpha
start_with_faults beta "meta-delay-ms=$DELAY_MS"
wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize"

out=$(ctl alpha split) || die "split failed: $out"
wait_state beta split 30 >/dev/null || die "beta is not split"

ctl beta open-rw >"$T/open-rw.out" 2>&1 &
opener=$!
sleep 0.3
out=$(ctl alpha rejoin 2>&1) || die "rejoin failed: $out"
log "rejoin: $out"
wait $opener; rc=$?
log "open-rw (exit $rc): $(cat "$T/open-rw.out")"
wait_state alpha synchronized 60 >/dev/null || die "alpha not synchronized after the rejoin"
wait_state beta synchronized 30 >/dev/null || fail "beta not synchronized after the rejoin"

check_eq "beta's export is read-only while synchronized" false "$(status_get beta .writable)"
if nbd_fill "$(nbd_unix_uri beta)" $((8 * MiB)) $((64 * KiB)) 7 2>/dev/null; then
    fail "beta took a local write while the pair is synchronized"
else
    pass "beta refuses local writes while the pair is synchronized"
fi
sleep 1
check_eq "alpha still says synchronized" synchronized "$(status_get alpha .state)"
stop_pair
check_identical "after the rejoin"
finish
