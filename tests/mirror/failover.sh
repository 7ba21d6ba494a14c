#!/bin/bash
# failover: planned failover with mirrorctl demote / promote, and what must
# be refused.
#   1. writes on alpha; demote alpha (its export turns read-only, writes get
#      EPERM); promote beta; writes on beta mirror back to alpha; both
#      phases' writes are on both copies, which end identical; the roles
#      survive a restart.
#   2. promote is refused while the peer is primary and while this copy is
#      behind (the peer down after writing more); nothing changes.
#   3. promote --force with the peer down, both write, the old primary comes
#      back: split brain on both nodes, neither copy overwritten.
#   4. rejoin during that split brain is refused and says how to choose the
#      survivor; the procedure (mirrord --discard-my-data on the victim)
#      works: the victim's writes are discarded, the copies converge.
#   Along 1, the map of changes since the last backup (NBD context
#   mirrord:dirty-since-backup) stays safe across role changes: beta's map,
#   emptied by a backup point, says "all changed" once beta was primary and
#   is demoted again; alpha (primary at start) says so after its demote.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=128M
VOL_EXTRA='initial-sync = "skip"'
W1=$((16 * MiB)) W2=$((48 * MiB)) WIN=$((8 * MiB))

setup_pair
start_pair
have_ctl || die "failover needs mirrorctl"
wait_state alpha synchronized 30 >/dev/null || die "alpha not synchronized"

roles() { echo "$(status_get alpha .role)/$(status_get beta .role)"; }

# A backup point on beta (backup-mark sent to alpha, relayed to beta): its
# map of changes since the last backup is empty.
out=$(ctl alpha split) && pass "split: $out" || fail "split: $out"
out=$(ctl alpha backup-mark --point 1001) && pass "backup-mark through alpha: $out" \
    || fail "backup-mark through alpha: $out"
check_eq "beta's map restarts empty at the backup point" "1001 0" \
    "$(status_get beta .backup.point) $(status_get beta .backup.changed_bytes)"
out=$(ctl alpha rejoin --wait) && pass "rejoin: $out" || fail "rejoin: $out"
VOL_BYTES=$(size_bytes $VOL_SIZE)

# --- 1. planned failover under the nbdtool write log
start_writer w1 "$(nbd_unix_uri alpha)" $W1 $WIN --qd 8 --seed 11
wait_acks w1 1500 60 || die "writer 1 did not get 1500 writes acknowledged on alpha"
stop_writer w1
check_eq "writer 1 (alpha) saw no error" 0 "$WRITER_RC"

refused_ctl "promote beta while alpha is primary" beta "alpha' is primary" promote
refused_ctl "promote --force beta while alpha is primary (the link says no)" beta \
    "alpha' is primary" promote --force
check_eq "roles unchanged after the refused promotes" primary/secondary "$(roles)"

# A client connected before the demote stays connected; its writes are
# refused once the demote started.
"$MIRRORCTL" --socket "${NODE_CTL[alpha]}" events >"$T/events.alpha" 2>&1 &
BG_PIDS+=($!)
start_writer w0 "$(nbd_unix_uri alpha)" $((96 * MiB)) $WIN --qd 4 --seed 10
wait_acks w0 200 30 || fail "writer 0 did not start"
out=$(ctl alpha demote) && pass "demote alpha: $out" || fail "demote alpha: $out"
stop_writer w0
[ "$WRITER_RC" -ne 0 ] && grep -qE "EPERM|EROFS|not permitted|ead-only" "$T/w0.err" "$T/w0.acks" \
    && pass "a write in flight across the demote was refused with EPERM (writer exit $WRITER_RC)" \
    || fail "writer 0 across the demote: exit $WRITER_RC, no EPERM: $(tail -n 2 "$T/w0.err")"
check_eq "alpha is secondary after demote" secondary "$(status_get alpha .role)"
wait_for 10 grep -q '"event":"change".*"role":"secondary"\|"role":"secondary".*"event":"change"' "$T/events.alpha" \
    && pass "mirrorctl events on alpha reported the change to secondary" \
    || fail "no role change event on alpha: $(tail -n 2 "$T/events.alpha")"
check "alpha's export is read-only now and refuses writes" \
    "${NBDTOOL[@]}" ro-check "$(nbd_unix_uri alpha)"
wait_state alpha standby 20 >/dev/null && pass "alpha: both secondary, connected (standby)" \
    || fail "alpha did not reach standby"
check_eq "beta sees alpha as secondary" secondary "$(status_get beta .peer_role)"
# In standby no node is primary: a command for the primary says so, not "runs on 'alpha'".
refused_ctl "split in standby" beta "not primary either \\(standby" split
refused_ctl "verify in standby" alpha "not primary either \\(standby" verify

out=$(ctl beta promote) && pass "promote beta: $out" || fail "promote beta: $out"
wait_state beta synchronized 30 >/dev/null || fail "beta (primary) not synchronized"
wait_state alpha synchronized 30 >/dev/null || fail "alpha (secondary) not synchronized"
check_eq "roles after failover" secondary/primary "$(roles)"
check_eq "alpha sees beta as primary" primary "$(status_get alpha .peer_role)"
check_eq "alpha (primary at start, now secondary): every region changed since a backup" \
    "$VOL_BYTES" "$(status_get alpha .backup.changed_bytes)"

start_writer w2 "$(nbd_unix_uri beta)" $W2 $WIN --qd 8 --seed 12
wait_acks w2 1500 60 || die "writer 2 did not get 1500 writes acknowledged on beta"
stop_writer w2
check_eq "writer 2 (beta) saw no error" 0 "$WRITER_RC"
nbd_flush beta
verify_writes "alpha (now secondary) holds beta's writes" w2 --uri "$(nbd_unix_uri alpha)" $W2 $WIN
# And back and forth at runtime: beta, promoted with an empty map at point
# 1001, wrote as primary (untracked); demoted, its map must not look clean.
out=$(ctl beta demote) && pass "demote beta: $out" || fail "demote beta: $out"
wait_state alpha standby 20 >/dev/null || fail "alpha did not reach standby"
out=$(ctl alpha promote) && pass "promote alpha: $out" || fail "promote alpha: $out"
wait_state beta synchronized 30 >/dev/null || fail "beta (secondary again) not synchronized"
check_eq "beta demoted after writing as primary: point kept, every region changed" \
    "1001 $VOL_BYTES" "$(status_get beta .backup.point) $(status_get beta .backup.changed_bytes)"
out=$(ctl alpha demote) && pass "demote alpha: $out" || fail "demote alpha: $out"
wait_state beta standby 20 >/dev/null || fail "beta did not reach standby"
out=$(ctl beta promote) && pass "promote beta: $out" || fail "promote beta: $out"
wait_state alpha synchronized 30 >/dev/null || fail "alpha (secondary again) not synchronized"
check_eq "roles back after the round trip" secondary/primary "$(roles)"
stop_pair beta alpha
for n in alpha beta; do
    verify_writes "$n's image holds alpha's writes (before failover)" w1 --image "${NODE_IMG[$n]}" $W1 $WIN
    verify_writes "$n's image holds beta's writes (after failover)" w2 --image "${NODE_IMG[$n]}" $W2 $WIN
done
check_identical "after failover"

start_pair
wait_state beta synchronized 30 >/dev/null || fail "the restarted pair did not synchronize"
check_eq "the roles survive a restart" secondary/primary "$(roles)"

# --- 2. promote refused while behind: alpha down, beta writes, beta down
stop_node alpha
check "beta writes 4M while alpha is down" \
    "${NBDTOOL[@]}" pattern "$(nbd_unix_uri beta)" $((64 * MiB)) $((4 * MiB)) 21
stop_node beta
must_start alpha
sa=$(sha_of "${NODE_IMG[alpha]}")
refused_ctl "promote alpha while beta (down) has newer data" alpha "behind|not connected" promote
check_eq "alpha still secondary" secondary "$(status_get alpha .role)"

# --- 3. forced promote with the peer down: a split brain, never a merge
out=$(ctl alpha promote --force) && pass "promote --force alpha: $out" || fail "promote --force: $out"
check_eq "alpha primary after the forced promote" primary "$(status_get alpha .role)"
check "alpha (forced primary) writes 4M" \
    "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((80 * MiB)) $((4 * MiB)) 22
stop_node alpha
must_start alpha
check_eq "alpha's forced role survives a restart" primary "$(status_get alpha .role)"
sa=$(sha_of "${NODE_IMG[alpha]}"); sb=$(sha_of "${NODE_IMG[beta]}")
must_start beta
wait_state alpha split-brain 30 >/dev/null && pass "alpha reports split brain" \
    || fail "alpha does not report split brain: $(status_get alpha .state)"
wait_state beta split-brain 30 >/dev/null && pass "beta reports split brain" \
    || fail "beta does not report split brain: $(status_get beta .state)"

# --- 4. rejoin refuses and names the procedure; the procedure works
refused_ctl "rejoin on beta during the split brain" beta "discard-my-data" rejoin
refused_ctl "rejoin on alpha during the split brain" alpha "discard-my-data" rejoin
check_eq "states unchanged by the refused rejoins" split-brain/split-brain \
    "$(status_get alpha .state)/$(status_get beta .state)"
stop_pair
check_eq "alpha's image unchanged by the split brain" "$sa" "$(sha_of "${NODE_IMG[alpha]}")"
check_eq "beta's image unchanged by the split brain" "$sb" "$(sha_of "${NODE_IMG[beta]}")"

# Survivor: beta. alpha (the victim) discards its own changes.
must_start beta
must_start alpha --discard-my-data
wait_state beta synchronized 60 >/dev/null || fail "beta did not resync alpha"
wait_state alpha synchronized 60 >/dev/null || fail "alpha did not become a synchronized secondary"
check_eq "roles after the recovery" secondary/primary "$(roles)"
stop_pair beta alpha
check_identical "after discarding alpha's data"
cmp -s -n $((4 * MiB)) -i $((80 * MiB)) "${NODE_IMG[alpha]}" /dev/zero \
    && pass "alpha's forced writes were discarded (the region is zero again, as on beta)" \
    || fail "alpha's forced writes are still there"
verify_writes "beta's writes after the failover survive on alpha" w2 --image "${NODE_IMG[alpha]}" $W2 $WIN

finish
