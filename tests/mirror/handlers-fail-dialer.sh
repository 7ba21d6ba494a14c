#!/bin/bash
# handlers-fail-dialer: as handlers-fail, with the roles swapped, so that the
# secondary ('alpha', whose name sorts first) is the node that dials. Its
# before-resync-target fails (exit 3): alpha refuses the plan with a 30 s
# retry-after, and holds its own dialer off for as long. Once the script is
# fixed, the operator's `mirrorctl rejoin` on the primary ('beta') must
# retry at once (docs: "rejoin on the primary retries at once"), as it does
# when the primary dials: `rejoin --wait` returns synchronized well within
# the 30 s.
# Also run over TLS (MIRROR_TLS=1, mirror.handlers-fail-dialer-tls), where the
# refusal's ERROR used to be lost: the link closed before its ciphertext was
# sent, so the primary never learned why and 'rejoin --wait' hung.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
have_ctl || skip "needs mirrorctl"

rc_before_handler
VOL_EXTRA="initial-sync = \"skip\"
before-resync-target = \"$T/before.sh\"
handler-timeout = \"3s\""
runs() { [ -f "$T/before.runs" ] && wc -l <"$T/before.runs" || echo 0; }
start_synced_pair 30
# Planned failover: beta becomes the primary, alpha (the dialer) secondary.
out=$(ctl alpha demote) || die "demote alpha: $out"
out=$(ctl beta promote) || die "promote beta: $out"
wait_state beta synchronized 30 >/dev/null || die "beta (primary) not synchronized after the failover"
check_eq "alpha is secondary" secondary "$(status_get alpha .role)"
wait_for 10 synchronized_both || die "not synchronized on both nodes after the failover"
echo 3 >"$T/before.rc"
rm -f "$T/before.runs"

out=$(ctl beta split) || die "split: $out"
nbd_fill "$(nbd_unix_uri beta)" $((1 * MiB)) $((2 * MiB)) 7 || die "write after the split"
out=$(timeout 40 "$MIRRORCTL" --socket "${NODE_CTL[beta]}" rejoin --wait 2>&1); rc=$?
[ $rc -eq 1 ] && [[ "$out" == *"before-resync-target"* ]] \
    && pass "rejoin --wait exits 1 naming alpha's handler failure: $out" \
    || fail "rejoin --wait: exit $rc: $out"
check_eq "the failing handler ran once" 1 "$(runs)"

echo 0 >"$T/before.rc"
t0=$SECONDS
out=$(timeout 15 "$MIRRORCTL" --socket "${NODE_CTL[beta]}" rejoin --wait 2>&1) \
    && pass "fixed: rejoin --wait on beta retried at once ($((SECONDS - t0)) s): $out" \
    || fail "fixed: rejoin --wait on beta did not return within 15 s (alpha's dialer waits out its 30 s retry-after): $out"
wait_for 10 synchronized_both && pass "synchronized on both nodes $((SECONDS - t0)) s after the rejoin" \
    || fail "not synchronized on both nodes $((SECONDS - t0)) s after the rejoin (handler runs: $(runs))"
stop_pair
check_identical "after the fixed handler's resync"
pair_finish
