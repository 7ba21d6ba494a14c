#!/bin/bash
# handlers-flush: before-resync-target sees every write the secondary
# acknowledged on stable storage. An LVM snapshot is taken of the device
# under the backing file, not of the page cache: writes beta acknowledged but
# never flushed would be missing from it (a torn "consistent" image). Here
# the handler simulates exactly that: it cuts beta's power
# (MIRRORD_FAULTS=power-loss drops every write not yet synced), so beta's
# image afterwards is what a snapshot taken by the handler would hold. It
# must be alpha's image: every write the client got acknowledged.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
have_ctl || skip "needs mirrorctl"

# before.sh: its first run cuts beta's power (mirrord is its parent);
# later runs just succeed.
cat >"$T/before.sh" <<EOF
#!/bin/bash
echo "\$(date +%s.%N)" >>"$T/before.runs"
[ "\$(wc -l <"$T/before.runs")" -eq 1 ] && kill -USR2 \$PPID
exit 0
EOF
chmod 755 "$T/before.sh"
VOL_EXTRA="initial-sync = \"skip\"
before-resync-target = \"$T/before.sh\"
handler-timeout = \"30s\""
runs() { [ -f "$T/before.runs" ] && wc -l <"$T/before.runs" || echo 0; }
beta_dead() { ! node_alive beta; }

setup_pair
must_start alpha
start_with_faults beta power-loss
wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize"

# Writes acknowledged by both copies, never flushed by the client: on beta
# they are in the page cache only. The client's FLUSH just before them
# resets the primary's internal flush (every 5 s while writes come): alpha
# dies well before it would be due.
"$PY" - "$(nbd_unix_uri alpha)" <<'PYEOF' || die "unflushed writes through alpha"
import sys
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.flush()
for i in range(8):
    h.pwrite(bytes([0x30 + i]) * (1 << 20), (4 + 3 * i) << 20)
h.shutdown()
PYEOF
kill_node alpha
check_eq "beta acknowledged them (its page cache holds them)" "$(sha_of "${NODE_IMG[alpha]}")" \
    "$(sha_of "${NODE_IMG[beta]}")"
want=$(sha_of "${NODE_IMG[alpha]}")

# alpha crashed and comes back: the regions of its activity log are
# resynced into beta's consistent copy, so before-resync-target runs first.
must_start alpha
wait_for 30 beta_dead || die "before-resync-target did not run (beta still alive)"
wait "${NODE_PID[beta]}" 2>/dev/null
NODE_PID[beta]=""
grep -q "simulated power loss" "$(node_log beta)" && pass "the handler cut beta's power" \
    || die "beta died without a simulated power loss"
check_eq "before-resync-target ran once" 1 "$(runs)"
if grep -q "this copy is flushed to stable storage" "$(node_log beta)"; then
    pass "beta flushed its copy before starting the handler"
else
    fail "beta's log does not say it flushed its copy before the handler"
fi
check_eq "the image the handler saw on stable storage holds every acknowledged write" \
    "$want" "$(sha_of "${NODE_IMG[beta]}")"

# beta back (no faults): the handler runs again and the resync finishes.
must_start beta
wait_state alpha synchronized 30 >/dev/null || fail "the pair did not synchronize after beta's restart"
check_eq "before-resync-target ran again for the resync after the restart" 2 "$(runs)"
stop_pair
check_identical "after the resync"
check_eq "alpha's image is unchanged" "$want" "$(sha_of "${NODE_IMG[alpha]}")"
pair_finish
