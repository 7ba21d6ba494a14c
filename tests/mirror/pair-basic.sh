#!/bin/bash
# pair-basic: a new pair copies the whole volume to the secondary (full
# initial sync), then mirrors every write: after fio's random writes through
# the primary, the secondary's copy (read over its own read-only NBD export
# while mirroring, and its backing file after a clean stop) equals the
# primary's byte for byte. 30 s of sustained writes do not drop the link. A
# clean stop logs no error, and a clean restart finds the pair in sync.
. "$(dirname "$0")/pairlib.sh"
require fio nbdcopy dd
fio --enghelp 2>/dev/null | grep -qw nbd || skip "this fio has no nbd ioengine"

SIZE=$(size_bytes "$VOL_SIZE")
setup_pair
# Different data on both sides before they meet: the initial sync must
# overwrite all of beta's.
dd if=/dev/urandom of="${NODE_IMG[alpha]}" bs=1M count=16 conv=notrunc status=none
dd if=/dev/urandom of="${NODE_IMG[alpha]}" bs=1M count=8 seek=200 conv=notrunc status=none
dd if=/dev/urandom of="${NODE_IMG[beta]}" bs=1M count=16 seek=100 conv=notrunc status=none
ALPHA_BEFORE=$(sha_of "${NODE_IMG[alpha]}")

start_pair
# Both disks hold data: the first sync waits for the operator's word.
first_sync_consent alpha

# --- initial full sync
line=$(wait_log alpha "peer 'beta' connected:" 30) || die "alpha never connected to beta"
log "alpha: $line"
check_eq "new pair: alpha plans a full sync of the whole volume" "full sync $SIZE" "$(plan_of alpha)"
wait_state alpha synchronized 120 >/dev/null || die "alpha: not synchronized 120s after the full sync started"
pass "alpha reports synchronized after the initial sync"
if wait_state beta synchronized 30 >/dev/null; then pass "beta reports synchronized"; else fail "beta does not report synchronized"; fi
check_eq "the initial sync did not change the primary's data" "$ALPHA_BEFORE" "$(sha_of "${NODE_IMG[alpha]}")"
check_identical "after the initial full sync"

# --- the secondary serves its copy read-only
check "beta's export is read-only and refuses WRITE/TRIM/WRITE_ZEROES with EPERM" \
    "${NBDTOOL[@]}" ro-check "$(nbd_unix_uri beta)"

# --- mirrored writes
run_fio "randwrite 4k qd32 128M crc32c through alpha" w -- \
    --name=pairwrite --ioengine=nbd --uri="$(nbd_uri alpha)" --rw=randwrite --bs=4k \
    --iodepth=32 --size=128M --verify=crc32c --verify_fatal=1 --randrepeat=1 --randseed=4242
node_alive alpha && node_alive beta || die "a node died under fio"
check "client FLUSH through alpha" nbd_flush alpha

# While mirroring: read both copies over NBD (beta's own export) and compare.
rm -f "$T/alpha.copy" "$T/beta.copy"
check "nbdcopy alpha's export (tcp) to a file" nbdcopy "$(nbd_uri alpha)" "$T/alpha.copy"
check "nbdcopy beta's read-only export (unix socket) to a file" nbdcopy "$(nbd_unix_uri beta)" "$T/beta.copy"
check_eq "while mirroring, beta's export reads the same bytes as alpha's" \
    "$(sha_of "$T/alpha.copy")" "$(sha_of "$T/beta.copy")"
rm -f "$T/alpha.copy" "$T/beta.copy"
# fio's verify pass reads beta's copy through beta's export.
run_fio "fio verify-only pass of the written data on beta's export" r -- \
    --name=pairwrite --ioengine=nbd --uri="$(nbd_unix_uri beta)" --rw=randwrite --bs=4k \
    --iodepth=32 --size=128M --verify=crc32c --verify_fatal=1 --randrepeat=1 --randseed=4242 \
    --verify_only=1

# --- sustained load on a healthy pair: the link holds (no drop, no resync)
log_mark alpha
start_writer soak "$(nbd_uri alpha)" $((128 * MiB)) $((64 * MiB)) --qd 16 --seed 21 --duration 30
wait_writer soak 120
check_eq "30s of random 4k writes at qd16: the writer saw no error" 0 "$WRITER_RC"
log "writer: $(cat "$T/soak.out")"
drops=$(link_drops alpha beta)
if [ -z "$drops" ]; then
    pass "30s of random writes on a healthy pair: the replication link never dropped"
else
    fail "30s of random writes on a healthy pair (ack-timeout $VOL_ACK): the link dropped $(echo "$drops" | wc -l) times, each followed by a resync"
    echo "$drops" | head -n 3 | sed 's/^/    | /'
fi
if have_ctl; then
    check_eq "alpha still synchronized after the sustained load" synchronized "$(status_get alpha .state)"
fi
check "client FLUSH through alpha" nbd_flush alpha
verify_writes "alpha's export holds every acknowledged write of the load" soak --uri "$(nbd_uri alpha)" \
    $((128 * MiB)) $((64 * MiB))
# (Only meaningful if the pair stayed in sync: else beta may lag, legitimately.)
if [ -z "$drops" ]; then
    verify_writes "beta's read-only export holds every acknowledged write of the load" soak \
        --uri "$(nbd_unix_uri beta)" $((128 * MiB)) $((64 * MiB))
fi

# --- clean stop: identical files
stop_node alpha
stop_node beta
check_identical "after fio and a clean stop"
check_eq "sha256 alpha.img == beta.img" "$(sha_of "${NODE_IMG[alpha]}")" "$(sha_of "${NODE_IMG[beta]}")"

# --- clean restart: nothing to copy
start_pair
wait_log alpha "peer 'beta' connected:" 30 >/dev/null || fail "after a clean restart alpha did not reconnect to beta"
check_eq "after a clean stop of both nodes, the restarted pair is in sync (nothing to copy)" \
    "in sync 0" "$(plan_of alpha)"
if log_since alpha | grep -q "unclean shutdown"; then
    fail "alpha's restart after a clean stop reports an unclean shutdown: $(log_since alpha | grep 'unclean shutdown')"
else
    pass "alpha's restart after a clean stop finds a clean shutdown"
fi
wait_state alpha synchronized 30 >/dev/null && pass "alpha synchronized after the restart" \
    || fail "alpha not synchronized after the restart"
stop_node alpha
stop_node beta
check_identical "after the restart"

# A clean stop is clean: no error in any log of this test.
for n in alpha beta; do
    errs=$(log_all $n | grep -E '\] (error|fatal):' | grep -v 'split brain')
    if [ -z "$errs" ]; then
        pass "$n: no error logged across starts, syncs and clean stops"
    else
        fail "$n: errors logged: $(echo "$errs" | sed 's/^[0-9:.]* //' | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
    fi
done

pair_finish
