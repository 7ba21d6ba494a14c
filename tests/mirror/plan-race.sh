#!/bin/bash
# plan-race: a write that arrives just before a handshake decides its plan,
# and whose activity-log commit completes only after the decision, must reach
# the secondary. Issued then while not mirroring, it was marked dirty under a
# plan already decided as "in sync": nothing copied it, yet the pair reported
# synchronized and the secondary lacked an acknowledged write (a failover
# would have lost it). The primary's metadata commits are slowed
# (MIRRORD_FAULTS=meta-delay-ms) so the handshake always falls inside that
# commit.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
DELAY_MS=4000

start_synced_pair 30
stop_pair
check_identical "a clean stop in sync"

# Alpha alone, in sync with beta's copy: the next plan is "in sync" unless a
# write the peer lacks is marked first.
start_with_faults alpha "meta-delay-ms=$DELAY_MS"
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((8 * MiB)) $((1 * MiB)) 11 &
WPID=$!
BG_PIDS+=("$WPID")
# The client is connected (its write follows at once); its activity-log
# commit now takes DELAY_MS, and beta connects well within that.
wait_log alpha "serving export" 20 >/dev/null || die "the client did not connect to alpha"
must_start beta
wait "$WPID"; rc=$?
check_eq "the client's write and flush through alpha succeed" 0 "$rc"
wait_state alpha synchronized 60 >/dev/null || fail "alpha not synchronized"
check_eq "the plan was decided while the write waited (in sync, nothing to copy)" \
    "in sync 0" "$(plan_of alpha)"
log_since alpha | grep -q "waits for the handshake's plan to be attached" \
    && pass "the write's commit ended between the plan's decision and attach" \
    || fail "the write's commit did not end inside the handshake: the race was not exercised"
check_eq "synchronized: nothing left out of sync" 0 "$(status_get alpha .out_of_sync_bytes)"
a=$("${NBDTOOL[@]}" sha "$(nbd_unix_uri alpha)")
b=$("${NBDTOOL[@]}" sha "$(nbd_unix_uri beta)")
check_eq "synchronized: beta's export holds what alpha acknowledged" "$a" "$b"
stop_pair
check_identical "after the handshake"
finish
