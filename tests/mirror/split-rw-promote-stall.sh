#!/bin/bash
# split-rw-promote-stall: a local write of a read-write split secondary
# (open-rw) still on its way to the disk when the operator fails over to it
# (`promote --force`, the primary lost) must land before the promoted node's
# resync copies its range to the peer.
#
# promote refuses while requests of an earlier session are in the disk's
# queue (Volume::earlier_requests), but counts only the applier's and a
# retired replicator's, not the split image's own writes (LocalWriteGate).
# Here (MIRRORD_FAULTS=write-stall: beta's disk holds the first write to
# 1 MiB for 20 s, as a disk stuck on a request does):
#   1. alpha splits the pair; beta is opened read-write; a client of beta
#      writes C at 1 MiB, which beta's disk holds;
#   2. alpha is lost (killed); `promote --force` on beta;
#   3. alpha comes back with --discard-my-data and takes a full copy of
#      beta's image, which reads 1 MiB before C has landed there;
#   4. C lands on beta and is acknowledged to its client; the pair says
#      synchronized.
# Both copies must hold C: it is an acknowledged write of the node that is
# now primary, and alpha is the copy the next failover promotes.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_ACK=1s
VOL_EXTRA='initial-sync = "skip"'
have_ctl || skip "split-rw-promote-stall needs mirrorctl"

OFF=$((1 * MiB))
LEN=4096
STALL_MS=20000

setup_pair
must_start alpha
start_with_faults beta "write-stall=$OFF:$LEN:$STALL_MS"
wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize"

image_sha() { backing_sha "$1" $OFF $LEN; }
C_SHA=$(pattern_sha 91 $LEN)

out=$(ctl alpha split) || die "split failed: $out"
out=$(ctl beta open-rw) || die "open-rw on beta failed: $out"
pass "beta is a read-write split image: $out"

# 1. C, held by beta's disk.
"${NBDTOOL[@]}" pattern "$(nbd_unix_uri beta)" $OFF $LEN 91 >"$T/writer.out" 2>&1 &
writer=$!
wait_log beta "TEST FAULT write-stall: the write at $OFF[+]$LEN reaches the disk" 10 >/dev/null \
    || die "beta's disk did not stall the local write C"

# 2. The failover while C is still on its way to beta's disk.
kill_node alpha
promoted=""
dl=$((SECONDS + 30))
until out=$(ctl beta promote --force); do
    [ $SECONDS -lt $dl ] || die "promote --force on beta never succeeded: $out"
    sleep 0.5
done
log "promote --force on beta: $out"
landed_before=$(grep -c "TEST FAULT write-stall: the write at $OFF+$LEN goes to the disk now" \
    "$(node_log beta)")
[ "$landed_before" -eq 0 ] && promoted=early
log "promoted ${promoted:-after C landed}"

# 3. alpha takes beta's copy.
must_start alpha --discard-my-data
wait_state beta synchronized 60 >/dev/null || die "beta did not synchronize alpha"

# 4. C lands and is acknowledged.
wait $writer; rc=$?
[ $rc -eq 0 ] && pass "write C through beta acknowledged" || die "write C failed: $(cat "$T/writer.out")"
wait_state beta synchronized 30 >/dev/null || fail "beta not synchronized after C landed"

check_eq "beta's image holds C at 1 MiB (its client's acknowledged write)" "$C_SHA" "$(image_sha beta)"
stop_pair beta alpha
got=$(image_sha alpha)
if [ "$got" = "$C_SHA" ]; then
    pass "alpha's image holds C at 1 MiB"
else
    fail "alpha's image lacks C at 1 MiB: the full copy read the range before C landed on" \
         "beta (promoted ${promoted:-late}), and the pair said synchronized (a failover to alpha loses C)"
fi
check_identical "after the failover's full copy"
finish
