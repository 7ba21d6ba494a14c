#!/bin/bash
# flush-fail-primary: a FLUSH the primary's disk fails while the peer's
# copy flushed leaves the copies different; the primary must resync, not go
# on calling the pair synchronized.
#
# alpha's disk loses W at writeback (MIRRORD_FAULTS=writeback-eio) with
# on-io-error = "pass-on" (and so for a full thin pool's ENOSPC whatever
# on-io-error says: no detach): W was written on both copies, the client's
# FLUSH fails with EIO (alpha's sync failed), beta's flush succeeded, so
# beta's disk holds W and alpha's does not. The client may take either
# version, but both copies must hold the same one.
. "$(dirname "$0")/pairlib.sh"

have_ctl || skip "flush-fail-primary needs mirrorctl"
VOL_SIZE=64M
VOL_EXTRA=$'initial-sync = "skip"\non-io-error = "pass-on"'
W_OFF=$((4 * MiB))
start_synced_pair_faults "writeback-eio=$W_OFF:4096"

# A flush first: no periodic flush (5 s after the last one) comes between
# W and the client's own.
"${NBDTOOL[@]}" flush "$(nbd_unix_uri alpha)" >/dev/null || die "the first flush failed"
log_mark alpha
out=$("${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $W_OFF 4096 5 2>&1) \
    && die "the flush alpha's disk fails succeeded: $out"
grep -q "Input/output error" <<<"$out" && pass "the client's flush fails with EIO" \
    || fail "the client's flush failed without EIO: $out"
wait_log alpha "writeback-eio: the write at $W_OFF[+]4096 was lost" 1 >/dev/null \
    && pass "alpha's disk lost W at writeback" || die "alpha's disk did not lose W"
# (beta's disk held W after its flush; a resync may have replaced it by now.)

# Within a few seconds: synchronized, with W's range alike on both disks.
lie=""
dl=$((SECONDS + 20))
while :; do
    j=$(node_status alpha) || die "alpha's status failed"
    st=$(jq -r .state <<<"$j") oos=$(jq -r .out_of_sync_bytes <<<"$j")
    same=$([ "$(backing_sha alpha $W_OFF 4096)" = "$(backing_sha beta $W_OFF 4096)" ] && echo y)
    [ "$st" = synchronized ] && [ "$oos" = 0 ] && [ -z "$same" ] && lie="synchronized"
    [ "$st" = synchronized ] && [ "$oos" = 0 ] && [ -n "$same" ] && break
    [ $SECONDS -lt $dl ] || break
    sleep 0.2
done
[ -z "$lie" ] && pass "alpha never said synchronized while W's range differed" \
    || fail "alpha said synchronized while beta's disk held W and alpha's did not"
check_eq "synchronized with nothing out of sync" "synchronized 0" "$st $oos"
check_eq "W's range is alike on both copies" \
    "$(backing_sha alpha $W_OFF 4096)" "$(backing_sha beta $W_OFF 4096)"
stop_pair
check_identical "after the failed flush"
finish
