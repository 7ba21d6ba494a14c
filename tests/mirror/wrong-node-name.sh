#!/bin/bash
# wrong-node-name (found by chaos4): on beta's host (whose volume file, as on a real
# pair, names the same local paths for both nodes) the operator starts
# `mirrord --node alpha` by mistake (a copied env file, a swapped volume
# file). alpha's address is not local there, so the daemon cannot start; it
# must say so clearly and must leave beta's metadata as it was: the next
# correct start of beta resyncs only what it missed, never the whole volume,
# and a split image stays split. Before the fix the wrong start reset beta's
# metadata as "foreign" (and only then failed to bind alpha's address).
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "needs mirrorctl"

run() {  # run STATE: degraded or split
STATE=$1
log "---- $STATE"
new_synced_pair 30
check "1M of 0x11 at 0" nbd_fill "$(nbd_unix_uri alpha)" 0 $MiB 17
if [ "$STATE" = split ]; then
    out=$(ctl alpha split) && pass "split: $out" || die "split failed: $out"
fi
stop_node beta
check "1M of 0x22 at 0 on alpha (beta stopped)" nbd_fill "$(nbd_unix_uri alpha)" 0 $MiB 34
meta_sha=$(sha_of "${NODE_META[beta]}")
img_sha=$(sha_of "${NODE_IMG[beta]}")

# beta's host volume file: same paths for both nodes (beta's files), alpha's
# address is another host's (TEST-NET-1, not local here).
"$PY" - "$T/vol.toml" "$T/beta-host.toml" "${NODE_ADDR[alpha]}" "${NODE_IMG[alpha]}" "${NODE_IMG[beta]}" \
    "${NODE_META[alpha]}" "${NODE_META[beta]}" "${NODE_CTL[alpha]}" "${NODE_CTL[beta]}" "$T/alpha.nbd" "$T/beta.nbd" <<'PYEOF'
import sys
src, dst, aaddr, *pairs = sys.argv[1:]
t = open(src).read().replace(aaddr, "192.0.2.1:7788")
for a, b in zip(pairs[0::2], pairs[1::2]):
    t = t.replace(a, b)
open(dst, "w").write(t)
PYEOF
chmod 600 "$T/beta-host.toml"
log "beta-host.toml: $(grep -E 'name|address|backing|metadata' "$T/beta-host.toml" | tr '\n' ' ')"
out=$(timeout 20 "$MIRRORD" --config "$T/beta-host.toml" --node alpha --log-level info 2>&1 </dev/null); rc=$?
log "mirrord --node alpha on beta's host: exit $rc"
sed 's/^/    | /' <<<"$out" | head -n 12
[ $rc -ne 0 ] && [ $rc -ne 124 ] && pass "mirrord --node alpha on beta's host does not run (exit $rc)" \
    || fail "mirrord --node alpha on beta's host: exit $rc"
check_eq "beta's metadata untouched by the wrong start" "$meta_sha" "$(sha_of "${NODE_META[beta]}")"
check_eq "beta's image untouched by the wrong start" "$img_sha" "$(sha_of "${NODE_IMG[beta]}")"

must_start beta
wait_log alpha "peer 'beta' connected:" 20 >/dev/null || fail "beta did not reconnect"
read -r -a plan <<<"$(plan_of alpha)"
log "plan: ${plan[*]}"
if [ "$STATE" = split ]; then
    check_eq "still split after the wrong start" split "$(status_get beta .state)"
    check_eq "beta's split image unchanged" "$img_sha" "$(sha_of "${NODE_IMG[beta]}")"
    ctl alpha rejoin --wait >/dev/null
else
    [ "${plan[-1]:-0}" -le $((4 * MiB)) ] && pass "beta resyncs only what it missed (${plan[*]})" \
        || fail "beta resyncs ${plan[*]}: more than it missed"
fi
wait_state alpha synchronized 60 >/dev/null || fail "not synchronized"
stop_pair
check_identical "[$STATE] after beta's correct start"
}

run degraded
run split
pair_finish
