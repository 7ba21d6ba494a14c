#!/bin/bash
# copy-unknown-status (review7): what the operator sees when both-meta-lost
# asks them to choose. After a forced failover (alpha killed, promote
# --force on beta, beta writes alone and stops) both metadata files are
# lost and both nodes start; beta refuses the first sync and the operator
# must say which copy is current. beta's copy is the only current one and
# nothing has touched it, but its new metadata carries kFlagFullSyncNeeded,
# so `mirrorctl status` says "this copy is INCONSISTENT" (consistent:
# false) and `promote` there says "this copy is not consistent (a resync
# has not finished)": both pointed the operator at alpha, the stale copy.
# What a user checks: beta's status says its copy's history is UNKNOWN (the
# table and `copy_history_unknown`), not that it is INCONSISTENT;
# `consistent` stays false for scripts (an unknown copy may also be one torn
# by a resync whose record was lost: meta-lost-resync-target).
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "needs mirrorctl"
VOL_SIZE=64M
WIN=$((16 * MiB))

failover_both_meta_lost $WIN
start_pair
wait_log beta "neither node records its copy's history" 20 >/dev/null ||
    die "beta did not refuse the first sync"
check_eq "beta's status: its history is unknown" true "$(status_get beta .copy_history_unknown)"
# (`consistent` stays false for scripts: an unknown copy may also be one torn by a
# resync whose record was lost, meta-lost-resync-target.)
out=$(ctl beta status)
check "beta's status does not call its untouched copy inconsistent ($(grep -m1 state <<<"$out"))" \
    test "${out/INCONSISTENT/}" = "$out"
check "beta's status says its copy's history is unknown" grep -q "history is UNKNOWN" <<<"$out"
out=$(ctl beta promote 2>&1)
check "promote on beta does not say its copy is not consistent ($out)" \
    test "${out/not consistent/}" = "$out"
verify_writes "beta's disk holds every write beta acknowledged" w2 \
    --image "${NODE_IMG[beta]}" $WIN $WIN
stop_pair
pair_finish
