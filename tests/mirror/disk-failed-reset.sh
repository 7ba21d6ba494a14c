#!/bin/bash
# disk-failed-reset: a metadata reset keeps the recorded disk failure, as it
# keeps the recorded role. Alpha (primary) loses its disk under load and
# detaches it (on-io-error = detach): beta's copy is the only current one,
# alpha's is outdated. Both are stopped; alpha's metadata file is cut short,
# then the operator renames the volume in the volume file (on both hosts, as
# the docs ask): both metadata files are foreign and reset. What a user checks:
#   - alpha still refuses to start on its outdated copy and says what to do
#     (before: the reset forgot kFlagDiskFailed, alpha started as the primary
#     its metadata recorded, and full-synced its outdated copy over beta's:
#     every write acknowledged after the disk failed was lost on both copies);
#   - beta's copy keeps every acknowledged write;
#   - the way out the message names works: promote beta, start alpha with
#     --discard-my-data; both copies then hold every acknowledged write.
. "$(dirname "$0")/pairlib.sh"

have_ctl || skip "disk-failed-reset needs mirrorctl"
VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
WIN=$((16 * MiB))

setup_pair
must_start beta
start_with_faults alpha "dead-after=400"
wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize"
# The disk dies in the middle of the writer: the later writes are on beta only.
write_acked w "$(nbd_unix_uri alpha)" 0 $WIN 3000
wait_state alpha diskless 10 >/dev/null && pass "alpha detached its failed disk" \
    || fail "alpha is not diskless: $(status_get alpha '"\(.disk) \(.state)"')"
check "client FLUSH through alpha (beta's copy)" nbd_flush alpha
stop_node alpha
stop_node beta

# Only alpha's metadata damaged (cut short after its superblocks): a reset
# too, and alpha must still refuse (before: it started as primary on its
# outdated copy, serving stale reads and taking writes the way out discards).
truncate -s $((3 * 4096)) "${NODE_META[alpha]}"
start_refused "with its metadata cut short, alpha still refuses to start on its failed disk" \
    alpha "this node's disk failed and was detached.*--discard-my-data"
node_alive alpha && stop_node alpha

VOL_NAME=db2
write_configs
start_refused "after the rename, alpha still refuses to start on its failed disk" alpha \
    "this node's disk failed and was detached.*--discard-my-data"
must_start beta
if node_alive alpha; then
    # The bug: alpha runs as primary on its outdated copy; give its sync time.
    wait_state alpha synchronized 30 >/dev/null || true
    log "alpha started: $(status_get alpha '"\(.role) \(.state) \(.last_error)"')"
    stop_node alpha
fi
stop_node beta
verify_writes "beta's copy holds every acknowledged write" w --image "${NODE_IMG[beta]}" 0 $WIN

# The way out: promote beta (forced: its metadata was reset too, so nothing
# recorded shows its copy is current), alpha takes a full copy.
must_start beta
out=$(ctl beta promote --force); rc=$?
check_eq "beta promoted ($out)" 0 "$rc"
must_start alpha --discard-my-data
wait_state beta synchronized 60 >/dev/null && pass "beta resynced alpha" \
    || fail "beta did not resync alpha: $(status_get beta '"\(.state) \(.last_error)"')"
stop_node alpha
stop_node beta
check_identical "after alpha's full copy"
verify_writes "alpha's copy holds every acknowledged write" w --image "${NODE_IMG[alpha]}" 0 $WIN

pair_finish
