#!/bin/bash
# failover-handler: a planned failover (demote, then promote on the peer)
# with a before-resync-target configured. The old primary's copy is identical
# to the new primary's (the demote waited for it), so the handshake after the
# promote overwrites nothing ("bitmap resync (0 bytes to copy)"): no snapshot
# is needed, and the new primary must not run unmirrored while one is taken.
# before-resync-target (3 s here, an lvcreate in real life) must not run, and
# the new primary's first writes are mirrored.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
have_ctl || skip "needs mirrorctl"
logging_before_handler 3
VOL_EXTRA="initial-sync = \"skip\"
before-resync-target = \"$T/before.sh\""
runs() { [ -f "$T/before.env" ] && wc -l <"$T/before.env" || echo 0; }

start_synced_pair 30
out=$(ctl alpha demote) || die "demote alpha: $out"
out=$(ctl beta promote) || die "promote beta: $out"
wait_state beta synchronized 30 >/dev/null || fail "beta not synchronized after the failover"
check_eq "before-resync-target did not run for a failover that copies nothing ($(tr '\n' ';' <"$T/before.env" 2>/dev/null))" 0 "$(runs)"
stop_pair
check_identical "after the failover"
pair_finish
