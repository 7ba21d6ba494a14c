#!/bin/bash
# refusals: a pair that must not mirror refuses the connection, says why in
# the log, and changes neither copy (sha256 of both images before and after
# repeated connection attempts):
#   - a wrong secret on one side             -> "authentication failed"
#   - the other node serves another volume   -> "serves volume"
#   - the other node has another volume size -> "size differs"
#   - both nodes primary (split brain)       -> "split brain"
# Each case is a new pair (no metadata), so a connection would mean a full
# sync overwriting beta: the most destructive thing that could follow.
. "$(dirname "$0")/pairlib.sh"
require dd

setup_pair
dd if=/dev/urandom of="${NODE_IMG[alpha]}" bs=1M count=8 conv=notrunc status=none
dd if=/dev/urandom of="${NODE_IMG[beta]}" bs=1M count=8 seek=32 conv=notrunc status=none

# Beta gets its own file; these variables change only that file.
B_NAME=$VOL_NAME B_SIZE=$VOL_SIZE B_SECRET=$VOL_SECRET B_PRIMARY=$VOL_PRIMARY
write_configs() {
    write_config "$T/vol.toml"
    VOL_NAME=$B_NAME VOL_SIZE=$B_SIZE VOL_SECRET=$B_SECRET VOL_PRIMARY=$B_PRIMARY \
        write_config "$T/beta.toml"
}
NODE_CFG[beta]=$T/beta.toml

new_pair() { rm -f "${NODE_META[alpha]}" "${NODE_META[beta]}"; write_configs; }

B_SECRET=another-secret-0123456789; new_pair
refused "wrong secret on beta" "authentication failed"
B_SECRET=$VOL_SECRET

B_NAME=other; new_pair
refused "beta's file names volume 'other'" "serves volume"
B_NAME=$VOL_NAME

B_SIZE=128M; new_pair
refused "beta's file says 128M, alpha's 256M" "size differs"
B_SIZE=$VOL_SIZE

# The secret must not appear in any log.
if cat "$T"/*.log | grep -qF -e "$VOL_SECRET" -e another-secret-0123456789; then
    fail "a secret appears in a log"
else
    pass "no log contains a secret"
fi

# --- split brain: both nodes primary, both with writes of their own
new_pair
start_pair
first_sync_consent alpha
wait_log alpha "peer 'beta' connected:" 30 >/dev/null || die "the (correct) pair did not connect"
wait_state alpha synchronized 120 >/dev/null || die "the (correct) pair did not synchronize"
stop_node alpha
stop_node beta
check_identical "[split brain] the pair was in sync before it split"
# alpha writes alone (beta down).
must_start alpha
check "[split brain] alpha writes 4M while beta is down" \
    "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((8 * MiB)) $((4 * MiB)) 1
stop_node alpha
# beta gets new metadata and, from its own copy of the file, the primary role.
rm -f "${NODE_META[beta]}"
B_PRIMARY=beta; write_configs
must_start beta
# Its copy's history is unknown (its metadata is new): read-only until the
# operator takes it as the current one.
if have_ctl; then
    check_eq "[split brain] beta, primary with new metadata, is read-only at first" false \
        "$(status_get beta .writable)"
    check "[split brain] promote --force takes beta's copy as the current one" ctl beta promote --force
fi
check "[split brain] beta, now primary with new metadata, writes 4M alone" \
    "${NBDTOOL[@]}" pattern "$(nbd_unix_uri beta)" $((16 * MiB)) $((4 * MiB)) 2
stop_node beta
refused "split brain: both primary, both written" "split brain" split-brain
if log_all alpha | grep -q "split brain"; then
    pass "[split brain] alpha's log names the split brain: $(log_all alpha | grep 'split brain' | head -n 1 | sed 's/^[^:]*:[^:]*:[^:]*: //')"
else
    fail "[split brain] alpha's log does not say 'split brain'"
fi

pair_finish
