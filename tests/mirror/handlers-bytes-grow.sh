#!/bin/bash
# handlers-bytes-grow: before-resync-target sizes its snapshot from
# MIRROR_RESYNC_BYTES (systemd/before-resync-target-lvm.sh: the bytes plus a
# quarter and 1 GiB; LVM invalidates a snapshot whose copy-on-write space runs
# out). While it runs, the primary goes on serving and tracking writes, so the
# plan that finally goes ahead may overwrite far more than the plan the
# handler ran for. The resync into the secondary must never overwrite more
# than the last before-resync-target run was told (else the handler runs
# again with the new size).
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=128M
VOL_EXTRA='initial-sync = "skip"
handler-timeout = "30s"'
have_ctl || skip "needs mirrorctl"

logging_before_handler 3
VOL_EXTRA="$VOL_EXTRA
before-resync-target = \"$T/before.sh\""
handler_running() { [ "$(status_get beta .handlers.before_resync_target.running)" = true ]; }

start_synced_pair 30
out=$(ctl alpha split) || die "split: $out"
nbd_fill "$(nbd_unix_uri alpha)" 0 $((1 * MiB)) 7 || die "write after the split"
log_mark alpha
out=$(ctl alpha rejoin) || die "rejoin: $out"
wait_for 10 handler_running || die "before-resync-target did not start"
# While it runs (3 s): 64 MiB more on the primary, tracked, not mirrored.
nbd_fill "$(nbd_unix_uri alpha)" $((16 * MiB)) $((64 * MiB)) 8 || die "write while the handler runs"
wait_for 60 synchronized_both || fail "not synchronized after the rejoin"
told=$(tail -n 1 "$T/before.env" | sed -n 's/.*bytes=\([0-9]*\).*/\1/p')
copied=$(log_since alpha | sed -n "s/.*peer 'beta' connected: bitmap resync (\([0-9]*\) bytes to copy).*/\1/p" | tail -n 1)
log "handler runs: $(tr '\n' ';' <"$T/before.env"); resync planned: $copied bytes"
[ -n "$told" ] && [ -n "$copied" ] && [ "$copied" -le "$told" ] \
    && pass "the resync ($copied bytes) is within what before-resync-target was told ($told bytes)" \
    || fail "the resync overwrote $copied bytes, before-resync-target was told $told bytes (its snapshot would overflow)"
stop_pair
check_identical "after the rejoin"
pair_finish
