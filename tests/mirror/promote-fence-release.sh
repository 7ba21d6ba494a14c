#!/bin/bash
# promote-fence-release: in standby (both nodes secondary, connected) a
# promote first asks the peer to stay secondary (the promote fence). When the
# fenced promote then fails here (beta's metadata file cannot be written:
# it is made immutable), the peer must be free again at once:
# an operator who turns to the other node gets it promoted, not 30 s of
# "'beta' is being promoted".
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "promote-fence-release needs mirrorctl"
command -v chattr >/dev/null || skip "no chattr"

setup_pair
start_pair
wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize"
out=$(ctl alpha demote) || die "demote alpha: $out"
log "demote alpha: $out"
wait_for 10 eval '[ "$(status_get beta .role)" = secondary ] && [ "$(status_get alpha .role)" = secondary ]' ||
    die "both nodes are not secondary after the demote"

meta="${NODE_META[beta]}"
chattr +i "$meta" 2>/dev/null || skip "chattr +i is not supported on $(dirname "$meta")"
CLEANUP_HOOKS+=("chattr -i $meta")
out=$(ctl beta promote); rc=$?
log "promote beta, metadata not writable (exit $rc): $out"
[ $rc -ne 0 ] || die "beta's promote succeeded although its metadata cannot be written"
[ "$(status_get beta .role)" = secondary ] || fail "beta is not secondary after its failed promote"
chattr -i "$meta"

# The release is relayed right after the failure: give it a moment, well
# under the fence's 30 s.
ok=0
for _ in $(seq 1 20); do
    out=$(ctl alpha promote) && { ok=1; break; }
    sleep 0.25
done
log "promote alpha: $out"
if [ $ok = 1 ]; then
    pass "alpha promoted within 5 s of beta's failed fenced promote"
else
    fail "alpha still refused 5 s after beta's fenced promote failed: $out"
fi
[ "$(status_get alpha .role)" = primary ] || fail "alpha is not primary"
[ "$(status_get beta .role)" = secondary ] || fail "beta is not secondary"
nbd_fill "$(nbd_unix_uri alpha)" 0 $((64 * KiB)) 7 || fail "alpha does not take a write as primary"
# beta's failed promote must leave it as it was: not a node that moved its
# generation on (the peer then saw a split brain, and the operator had to
# discard one side although beta never took a write). Its metadata refuses
# every write until a restart; after one the pair resyncs and converges.
sleep 1
log "alpha: $(status_get alpha '.state + ": " + (.last_error // "")'); beta: $(status_get beta '.state + ": " + (.last_error // "")')"
stop_node beta
start_node beta
if wait_state alpha synchronized 30 >/dev/null; then
    pass "beta, restarted, resynced from alpha"
else
    fail "the pair did not synchronize after beta's restart: alpha $(status_get alpha '.state + ": " + (.last_error // "")')"
fi
check_no_divergence_logged
[ "$(sha_of "${NODE_IMG[alpha]}")" = "$(sha_of "${NODE_IMG[beta]}")" ] &&
    pass "both images are identical" || fail "the images differ"
stop_pair
finish
