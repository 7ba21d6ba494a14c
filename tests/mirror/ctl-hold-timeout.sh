#!/bin/bash
# ctl-hold-timeout: `hold` takes its timeout_ms as an int64 and the daemon
# casts it to uint32 (volume_control.cc), so on main (8e2e0d6)
#   mirrorctl hold --timeout_ms -1           "holding new writes" for 49.7 days
#   mirrorctl hold --timeout_ms 4294967296   "holding new writes", released at once
# A consistency-group script that passes -1 for "until I release" freezes
# the database's writes if it dies before `release`; one that passes a large
# value gets no hold while told it has one. Either must be refused (EINVAL,
# exit 1) and leave writes flowing.
. "$(dirname "$0")/pairlib.sh"
VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
start_synchronized_pair
for t in -1 -4294967295 4294967296 18446744073709551615; do
    out=$(ctl alpha hold --timeout_ms "$t"); rc=$?
    held=$(status_get alpha .holding_writes)
    if [ $rc -eq 1 ] && [ "$held" = false ]; then
        pass "hold --timeout_ms $t refused: $out"
    else
        fail "hold --timeout_ms $t: exit $rc ($out), holding_writes=$held"
    fi
    ctl alpha release >/dev/null
done
out=$(ctl alpha hold --timeout_ms 60000); rc=$?
check_eq "a valid hold is still accepted ($out)" 0 $rc
check_eq "and holds" true "$(status_get alpha .holding_writes)"
ctl alpha release >/dev/null
check_eq "released" false "$(status_get alpha .holding_writes)"
pair_finish
