#!/bin/bash
# grow-offline: the operator grows a volume while both daemons are down: stops
# them, grows both backing files, raises `size` on both hosts, starts them
# again. The metadata keeps its bits (docs/bitmap-format.md, "Loading"): each
# node says in its log that the volume grew, the primary resyncs the regions
# it wrote while the secondary was away plus the new area, not the whole
# volume; clients see the new size, writes in the new area replicate, and the
# copies end identical. A clean restart afterwards finds the grown metadata as
# it was left: nothing more to copy.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
OLD=$(size_bytes 64M)
NEW=$(size_bytes 96M)

start_synced_pair 30

# Unreplicated writes: beta down, alpha writes 2 MiB.
stop_node beta
if have_ctl; then
    wait_state alpha 'degraded|disconnected' 20 >/dev/null || fail "alpha not degraded after beta stopped"
fi
check "alpha writes 2 MiB with beta down" \
    "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((8 * MiB)) $((2 * MiB)) 5
stop_node alpha

# The operator's resize: both configs and both backing files. A node started
# with the raised size before its file grew is refused and says how to fix it.
VOL_SIZE=96M
write_configs
if start_node alpha; then
    fail "alpha started with a backing file shorter than the volume"
    stop_node alpha
else
    grep -q "less than the volume's $NEW: grow it first (truncate -s $NEW ${NODE_IMG[alpha]})" \
        "$(node_log alpha)" && pass "alpha with its file not grown: refused, saying how to grow it" \
        || fail "alpha's refusal does not say how to grow the file: $(tail -n 2 "$(node_log alpha)")"
    check_eq "the refused start left the metadata's size alone (no grow logged)" 0 \
        "$(grep -c 'volume grew' "$(node_log alpha)")"
fi
truncate -s "$NEW" "${NODE_IMG[alpha]}" "${NODE_IMG[beta]}"

grew="volume grew from $OLD to $NEW bytes: the $((NEW - OLD)) new bytes are marked dirty"
must_start alpha
line=$(wait_log alpha "$grew" 5) && pass "alpha's log: ${line#*: }" || fail "alpha's log does not say: $grew"
must_start beta
line=$(wait_log beta "$grew" 5) && pass "beta's log: ${line#*: }" || fail "beta's log does not say: $grew"
if wait_log alpha "peer 'beta' connected:" 20 >/dev/null; then
    read -r -a plan <<<"$(plan_of alpha)"
    check_eq "alpha resyncs its 2 MiB written alone plus the 32 MiB new area, not the whole volume (${plan[*]:0:${#plan[@]}-1})" \
        $((2 * MiB + NEW - OLD)) "${plan[-1]:-0}"
else
    fail "alpha and beta did not agree on a resync within 20s"
    (log_since alpha; log_since beta) | grep -E 'warn|error' | tail -n 4 | sed 's/^/    | /'
fi
wait_state alpha synchronized 60 >/dev/null && pass "synchronized after the resync" \
    || fail "not synchronized 60s after the resync started"

size=$("$PY" -c 'import nbd,sys; h=nbd.NBD(); h.connect_uri(sys.argv[1]); print(h.get_size()); h.shutdown()' \
    "$(nbd_unix_uri alpha)")
check_eq "an NBD client sees the new size" "$NEW" "$size"
check "alpha writes 4 MiB across the old end and in the new area" \
    "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((OLD - 1 * MiB)) $((4 * MiB)) 6
check "alpha writes the last MiB" \
    "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((NEW - 1 * MiB)) $((1 * MiB)) 7

# The grown metadata persists: a clean restart has nothing to copy.
clean_restart_copies_nothing "after the grow"
if log_all alpha | grep -c "volume grew" | grep -qx 1 && log_all beta | grep -c "volume grew" | grep -qx 1; then
    pass "each node grew its metadata once"
else
    fail "a node grew its metadata again at the clean restart"
fi

pair_finish
