#!/bin/bash
# handlers-fail: a before-resync-target that fails (exit 3), then one that
# hangs past handler-timeout. Either way the resync into the secondary does
# not start: its image stays the split-time one, its status names the
# program and how it failed, `rejoin --wait` exits 1 with that reason, the
# handler is not rerun and the primary does not retry the handshake before
# the 30 s retry period is over, and it goes on serving writes (degraded,
# tracking them, none held). Once the script is fixed, `mirrorctl rejoin` on
# the primary retries at once (well within the 30 s): the copies converge.
# (The automatic 30 s retry is covered by unit.ResyncHandlersTest.)
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
have_ctl || skip "needs mirrorctl"

# before.sh: exits with the code in before.rc; with before.hang, hangs in a
# child whose pid it records in hang.pid (killed with its process group at
# the timeout).
cat >"$T/before.sh" <<EOF
#!/bin/bash
echo "\$(date +%s.%N)" >>"$T/before.runs"
if [ -f "$T/before.hang" ]; then sleep 1000 & echo \$! >"$T/hang.pid"; wait; fi
exit \$(cat "$T/before.rc")
EOF
CLEANUP_HOOKS+=("[ -f '$T/hang.pid' ] && kill -KILL \$(cat '$T/hang.pid')")
chmod 755 "$T/before.sh"
echo 3 >"$T/before.rc"
VOL_EXTRA="initial-sync = \"skip\"
before-resync-target = \"$T/before.sh\"
handler-timeout = \"3s\""
runs() { [ -f "$T/before.runs" ] && wc -l <"$T/before.runs" || echo 0; }
last_result_is() { [[ "$(status_get beta .handlers.before_resync_target.last_result)" =~ $1 ]]; }
# rejoin_fixed: the handler fixed, the operator's rejoin on alpha retries
# it now; --wait returns once synchronized (bounded well under the 30 s
# automatic retry, which the handler failed less than 10 s ago).
rejoin_fixed() {
    local out
    out=$(timeout 15 "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" rejoin --wait 2>&1) \
        && pass "fixed: rejoin --wait on alpha retried at once: $out" \
        || fail "fixed: rejoin --wait on alpha: $out"
    wait_for 10 synchronized_both || fail "not synchronized on both nodes after the rejoin"
}

start_synced_pair 30

# failed_resync LABEL RESULT-ERE RESULT-TEXT: after a split and a rejoin,
# the handler fails as RESULT-ERE says (status), RESULT-TEXT in last_error;
# nothing is resynced meanwhile, the primary serves and tracks writes.
failed_resync() {
    local label=$1 want=$2 text=$3 split_sha dirty1 dirty2 le n lat hs rc
    out=$(ctl alpha split) || die "[$label] split: $out"
    nbd_fill "$(nbd_unix_uri alpha)" $((1 * MiB)) $((2 * MiB)) 7 || die "[$label] write after the split"
    split_sha=$(sha_of "${NODE_IMG[beta]}")
    # rejoin --wait returns once the secondary refused for a failed handler,
    # with its reason (bounded here: it used to wait for good).
    out=$(timeout 40 "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" rejoin --wait 2>&1); rc=$?
    [ $rc -eq 1 ] && [[ "$out" == *"refused by 'beta': before-resync-target $T/before.sh failed ($text)"* ]] \
        && pass "[$label] rejoin --wait exits 1 naming beta's handler failure: $out" \
        || fail "[$label] rejoin --wait: exit $rc: $out"
    wait_for 20 last_result_is "$want" || fail "[$label] the handler did not end as /$want/: $(status_get beta .handlers)"
    n=$(runs)
    le=$(status_get beta .last_error)
    [[ "$le" == *"before-resync-target $T/before.sh failed ($text)"* ]] \
        && pass "[$label] beta's last_error names the program and how it failed: $le" \
        || fail "[$label] beta's last_error: $le"
    check_eq "[$label] beta is not resyncing: its copy stays consistent" true "$(status_get beta .consistent)"
    check_eq "[$label] alpha is degraded" degraded "$(status_get alpha .state)"
    [[ "$(status_get alpha .last_error)" == *"before-resync-target"* ]] \
        && pass "[$label] alpha's last_error says why the peer refused" \
        || fail "[$label] alpha's last_error: $(status_get alpha .last_error)"
    dirty1=$(status_get alpha .out_of_sync_bytes)
    nbd_fill "$(nbd_unix_uri alpha)" $((32 * MiB)) $((4 * MiB)) 8 \
        && pass "[$label] alpha serves writes meanwhile" || fail "[$label] a write to alpha failed"
    dirty2=$(status_get alpha .out_of_sync_bytes)
    [ "$dirty2" -gt "$dirty1" ] && pass "[$label] alpha tracks them: out of sync $dirty1 -> $dirty2 bytes" \
        || fail "[$label] alpha's out-of-sync bytes did not grow: $dirty1 -> $dirty2"
    # Six seconds of writes: the refusal told alpha when the retry is due,
    # so it does not come back meanwhile (it did every second), and no
    # write waits for a handshake's hold.
    log_mark alpha
    start_writer "w$n" "$(nbd_unix_uri alpha)" $((40 * MiB)) $((4 * MiB)) --duration 6
    wait_writer "w$n" 60
    check_eq "[$label] the writer saw no error" 0 "$WRITER_RC"
    lat=$(writer_field "w$n" max_latency_ms)
    [ -n "$lat" ] && [ "$lat" -le 1000 ] && pass "[$label] no write was held (worst ${lat} ms)" \
        || fail "[$label] a write took ${lat} ms while the handler was failing"
    hs=$(log_since alpha | grep -cE "(warn|debug): replication: the peer refused the connection")
    [ "$hs" -le 1 ] && pass "[$label] alpha did not retry the handshake meanwhile ($hs refusals in 6 s)" \
        || fail "[$label] alpha retried the handshake $hs times in 6 s"
    check_eq "[$label] the failed handler is not rerun meanwhile" "$n" "$(runs)"
    check_eq "[$label] beta's image is unchanged (the split-time image)" "$split_sha" "$(sha_of "${NODE_IMG[beta]}")"
}

# --- 2. a handler that fails (exit 3)
failed_resync "exit 3" "^exit 3$" "exit 3"
echo 0 >"$T/before.rc"
rejoin_fixed
check_eq "the fixed handler ran once more" 2 "$(runs)"
check_eq "beta's last_error is cleared" "" "$(status_get beta .last_error)"
check_eq "the copies converged" "$(sha_of "${NODE_IMG[alpha]}")" "$(sha_of "${NODE_IMG[beta]}")"

# --- 3. a handler that hangs: killed at handler-timeout (3 s), same as failing
touch "$T/before.hang"
failed_resync "hang" "^timed out after 3 s \(killed\)$" "timed out after 3 s (killed)"
if [ ! -s "$T/hang.pid" ]; then
    fail "the hanging handler did not record its child"
elif kill -0 "$(cat "$T/hang.pid")" 2>/dev/null; then
    fail "the hanging handler's child survived the timeout"
else
    pass "the timeout killed the handler's whole process group"
fi
rm -f "$T/before.hang"
rejoin_fixed
check_eq "the fixed handler ran once more" 4 "$(runs)"
stop_pair
check_identical "after the fixed handler's resync"
pair_finish
