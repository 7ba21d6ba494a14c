#!/bin/bash
# flush-fail-secondary: a FLUSH the secondary's disk fails (a write's
# writeback failed: the write it acknowledged is gone from its disk) must
# leave the secondary flagged inconsistent, as a failed write does.
#
# beta's disk loses W at writeback (MIRRORD_FAULTS=writeback-eio): W was
# applied and acknowledged, so alpha acknowledged it to the client; the next
# mirrored FLUSH fails on beta. alpha marks the range, drops the link and
# goes on alone. With alpha then lost, beta must not report a consistent
# copy: it lacks the acknowledged, flushed W. And the pair must converge
# once alpha is back.
. "$(dirname "$0")/pairlib.sh"

have_ctl || skip "flush-fail-secondary needs mirrorctl"
VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
W_OFF=$((32 * MiB))
# alpha's link through a proxy: once the failed FLUSH is answered, alpha's
# next session takes seconds (300 ms each way), so alpha is lost before it
# could resync W.
proxied_beta "$T/delay_ms"
setup_pair
must_start alpha
start_with_faults beta "writeback-eio=$W_OFF:4096"
wait_state alpha synchronized 60 >/dev/null || die "the pair did not synchronize"
check_eq "beta's copy is consistent before" true "$(status_get beta .consistent)"

echo 300 >"$T/delay_ms"
log_mark alpha
log_mark beta
# Written, then flushed: the client's FLUSH succeeds (alpha's disk has W).
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $W_OFF 4096 9 >/dev/null \
    && pass "W written and flushed through alpha" || die "W failed on alpha"
# (beta's answer reached alpha: whatever beta records, it recorded before.)
wait_log alpha "the peer failed to flush" 15 >/dev/null \
    && pass "alpha saw beta's failed flush" || die "alpha did not see beta's failed flush"
kill_node alpha
wait_log beta "writeback-eio: the write at $W_OFF[+]4096 was lost" 1 >/dev/null \
    && pass "beta's disk lost W at writeback (its flush failed)" || die "beta's flush did not fail"
[ "$(backing_sha beta $W_OFF 4096)" != "$(pattern_sha 9 4096)" ] \
    || die "beta holds W: nothing to check"
check_eq "alpha lost: beta's copy is not consistent (it lacks the acknowledged W)" false \
    "$(status_get beta .consistent)"
status_get beta .last_error | grep -q "flush" \
    && pass "beta's status says its disk failed a flush: $(status_get beta .last_error)" \
    || fail "beta's status does not say why: $(status_get beta .last_error)"
# Durable: a restart keeps it.
stop_node beta
must_start beta
check_eq "restarted, beta's copy is still not consistent" false "$(status_get beta .consistent)"

# alpha back: the pair resyncs W and converges.
: >"$T/delay_ms"
must_start alpha
wait_state alpha synchronized 60 >/dev/null && pass "the pair synchronizes again" \
    || die "the pair did not synchronize after alpha came back"
check_eq "beta's copy is consistent after the resync" true "$(status_get beta .consistent)"
check_eq "beta holds W" "$(pattern_sha 9 4096)" "$(backing_sha beta $W_OFF 4096)"
stop_pair
check_identical "after the resync"
finish
