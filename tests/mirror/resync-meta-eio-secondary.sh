#!/bin/bash
# resync-meta-eio-secondary: the secondary's metadata disk fails at the end of a
# resync (MIRRORD_FAULTS=meta-eio-after=1: the plan's commit succeeds, the
# end-of-resync commit fails), then the disk is fixed (beta restarted without
# faults). The pair must resync by itself: the primary holds every write, the
# secondary's copy is a resync target (inconsistent) that the primary may
# overwrite. On main (8e2e0d6) it never reconnects: alpha refuses every
# handshake, "the two copies share no generation (unrelated data); restart the
# primary with --force-full-sync", though beta's durable generation is alpha's
# history[0]: the secondary took the failed plans' generations in memory
# (Volume::on_plan_apply sets them before its commit and keeps them when the
# commit fails), so alpha moved on to bases beta never recorded.
. "$(dirname "$0")/pairlib.sh"
VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"
resync-rate = "8M"'
WIN_OFF=$((8 * MiB)); WIN=$((8 * MiB))
start_synchronized_pair
kill_node beta
wait_state alpha 'degraded|disconnected' 20 >/dev/null || fail "alpha does not notice beta's death"
write_acked w "$(nbd_uri alpha)" $WIN_OFF $WIN 2000 --seed 5
log_mark alpha
start_with_faults beta meta-eio-after=1
if line=$(wait_log alpha "peer refused the end of resync|peer refused the connection: cannot write metadata" 60); then
    pass "alpha sees beta's metadata failure: ${line#*: }"
else
    fail "beta's metadata never failed within 60 s"
fi
sleep 3   # a few handshakes against the failing metadata
check_eq "alpha is not synchronized with beta's metadata failing" yes \
    "$(status_get alpha '.state != "synchronized"' | sed 's/true/yes/')"
check_eq "beta reports its copy inconsistent" false "$(status_get beta .consistent)"
log "beta's metadata disk replaced: restarted without faults"
kill_node beta
log_mark alpha
must_start beta
if wait_state alpha synchronized 60 >/dev/null; then
    pass "the pair resyncs by itself once beta's metadata disk works"
else
    fail "the pair does not resync after beta's metadata disk was fixed: alpha: $(status_get alpha '.state + ": " + .last_error')"
fi
stop_pair
check_identical "after the resync"
verify_writes "beta's image holds every acknowledged write" w --image "${NODE_IMG[beta]}" $WIN_OFF $WIN
verify_writes "alpha's image holds every acknowledged write" w --image "${NODE_IMG[alpha]}" $WIN_OFF $WIN
pair_finish
