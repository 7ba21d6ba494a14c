#!/bin/bash
# local-fail-peer-ok: a client write the primary's disk refuses while the
# peer's copy takes it leaves the copies different; the primary must resync
# that range and say so meanwhile, not go on calling the pair synchronized.
#
# A write to a range alpha's disk refuses (MIRRORD_FAULTS=write-enospc, as
# a full filesystem does; EIO with on-io-error = "pass-on" takes the same
# path) is mirrored: beta applies it, alpha fails it, the client gets
# ENOSPC. Replicator::maybe_complete marks the range dirty ("written on the
# peer only: resync will restore one version on both"), but nothing resyncs
# it while the link stays up.
#
# Expected: the pair resyncs alpha's version of the range to beta at once;
# alpha's status never says synchronized with bytes out of sync; then the
# images are identical, and a planned failover (demote) goes through.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "local-fail-peer-ok needs mirrorctl"

OFF=$((4 * MiB))
LEN=4096

start_synced_pair_faults "write-enospc=$OFF:$LEN"

log_mark alpha
out=$("${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $OFF $LEN 5 2>&1) && die "the write alpha's disk refuses succeeded: $out"
grep -q "No space left" <<<"$out" && pass "the client's write fails with ENOSPC" \
    || fail "the client's write failed without ENOSPC: $out"

# Within a few seconds: resynced, and synchronized only with nothing out of sync.
lie=""
dl=$((SECONDS + 20))
while :; do
    j=$(node_status alpha) || die "alpha's status failed"
    st=$(jq -r .state <<<"$j") oos=$(jq -r .out_of_sync_bytes <<<"$j")
    [ "$st" = synchronized ] && [ "$oos" != 0 ] && lie="state synchronized, out_of_sync_bytes $oos"
    [ "$st" = synchronized ] && [ "$oos" = 0 ] && break
    [ $SECONDS -lt $dl ] || break
    sleep 0.2
done
[ -z "$lie" ] && pass "alpha never said synchronized with bytes out of sync" \
    || fail "alpha said '$lie' (the copies differ and nothing resyncs them)"
check_eq "alpha is synchronized with nothing out of sync" "synchronized 0" "$st $oos"
check "alpha resynced the range ('resync started' logged)" wait_log alpha "resync started" 1
check_eq "the range is alike on both copies again (alpha's version)" \
    "$(backing_sha alpha $OFF $LEN)" "$(backing_sha beta $OFF $LEN)"

out=$(ctl alpha demote --timeout 10)
check_eq "a planned failover goes through (demote: $out)" 0 $?
stop_pair
check_identical "after the failed write"
finish
