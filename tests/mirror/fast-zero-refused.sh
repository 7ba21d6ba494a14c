#!/bin/bash
# fast-zero-refused: a write-zeroes with NBD_CMD_FLAG_FAST_ZERO that the
# primary's store cannot do fast (tmpfs has no FALLOC_FL_ZERO_RANGE, and
# NO_HOLE forbids punching) is refused with ENOTSUP, as the NBD spec asks:
# "nothing was done", the client falls back to writing zeroes (qemu-img
# convert does). It must change neither copy.
#
# The replicator sent it to the peer at once, without the flag (the link
# has none): beta zeroed the range the slow way while alpha refused it. The
# copies then differed with alpha "synchronized" (before b04813c), or a
# resync copied alpha's range back (after it); alpha also logged each
# refusal as "write at offset ... failed: Operation not supported".
. "$(dirname "$0")/pairlib.sh"

[ "$(id -u)" = 0 ] || skip "fast-zero-refused mounts a tmpfs: needs root"
have_ctl || skip "fast-zero-refused needs mirrorctl"
VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
image_on_tmpfs alpha 96M
start_synced_pair 30

OFF=$((4 * MiB)) LEN=65536
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $OFF $LEN 7 >/dev/null || die "the pattern write failed"
log_mark alpha
out=$("$PY" - "$(nbd_unix_uri alpha)" $OFF $LEN <<'PYEOF'
import sys
import nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
if not h.can_fast_zero():
    print("no fast zero advertised")
    sys.exit(3)
try:
    h.zero(int(sys.argv[3]), int(sys.argv[2]), nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
    print("fast zero done")
except nbd.Error as e:
    print("fast zero refused: %s" % e)
PYEOF
)
case "$out" in
    "fast zero refused: "*ENOTSUP*) pass "the fast zero is refused with ENOTSUP ($out)" ;;
    "fast zero done") skip "this tmpfs zeroes ranges fast: nothing to refuse" ;;
    *) fail "unexpected answer to the fast zero: $out" ;;
esac
want=$(pattern_sha 7 $LEN)
check_eq "alpha's range is unchanged" "$want" "$(backing_sha alpha $OFF $LEN)"
check_eq "beta's range is unchanged (the peer did not zero it)" "$want" "$(backing_sha beta $OFF $LEN)"
sleep 0.5   # not readiness: a resync or a log line it would cause comes within ms
if log_since alpha | grep -qE "resync started|failed: Operation not supported"; then
    fail "alpha logged a failure or resynced: $(log_since alpha | grep -E 'resync started|failed: Operation not supported' | head -n 2)"
else
    pass "no resync, no failure logged"
fi
check_eq "alpha: synchronized, nothing out of sync" "synchronized 0" \
    "$(status_get alpha '"\(.state) \(.out_of_sync_bytes)"')"
check "the client's fallback (writing the zeroes) succeeds" nbd_fill "$(nbd_unix_uri alpha)" $OFF $LEN 0
stop_pair
check_identical "after the refused fast zero"
finish
