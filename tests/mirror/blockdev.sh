#!/bin/bash
# blockdev: the pair on block devices, as most DRBD users run it (an LV on
# each host): here two loop devices. What an operator checks:
#   - the initial full sync copies the primary's device to the secondary's;
#   - kill -9 of the secondary under a writer: no client error, and the
#     resync copies only what was written meanwhile;
#   - TRIM and WRITE_ZEROES through the primary leave both devices zeroed
#     alike;
#   - online resize after growing both devices (`losetup -c`, as after
#     lvextend): both grow under a writer, clients see the new size, the
#     grown area mirrors; a secondary whose device was not grown refuses,
#     naming its device and what to do, and nothing changes;
#   - a restart finds everything as it was (nothing to copy).
. "$(dirname "$0")/pairlib.sh"
require losetup blockdev

VOL_SIZE=64M
OLD=$(size_bytes 64M)
NEW=$(size_bytes 96M)

for n in alpha beta; do
    truncate -s "$OLD" "$T/$n.lower"
    dev=$(losetup -f --show "$T/$n.lower" 2>/dev/null) || skip "no loop device (losetup -f failed)"
    CLEANUP_HOOKS+=("losetup -d $dev")
    NODE_IMG[$n]=$dev
done
log "alpha on ${NODE_IMG[alpha]}, beta on ${NODE_IMG[beta]}"
# The primary's device holds data before the pair is made: its first 8 MiB,
# and 1 MiB in every 4 from 32 MiB on (the writers' windows, 16-24 MiB, start
# as zeros: the write checker expects that).
"$PY" -c 'import random,sys
r = random.Random(7)
with open(sys.argv[1], "r+b") as f:
    f.write(r.randbytes(8 << 20))
    for off in range(32 << 20, int(sys.argv[2]), 4 << 20):
        f.seek(off); f.write(r.randbytes(1 << 20))' "${NODE_IMG[alpha]}" "$OLD"
sync

# trim_zero NODE: through NODE, a TRIM of 1 MiB at 4 MiB and a WRITE_ZEROES
# of 1 MiB at 32 MiB (both ranges hold data), then a FLUSH.
trim_zero() {
    "$PY" -c 'import nbd,sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.trim(1 << 20, 4 << 20); h.zero(1 << 20, 32 << 20, nbd.CMD_FLAG_NO_HOLE); h.flush(); h.shutdown()' \
        "$(nbd_unix_uri "$1")"
}
region_is_zero() {
    "$PY" -c 'import sys
f = open(sys.argv[1], "rb"); f.seek(int(sys.argv[2])); sys.exit(any(f.read(int(sys.argv[3]))))' "$@"
}
nbd_size() {
    "$PY" -c 'import nbd,sys; h=nbd.NBD(); h.connect_uri(sys.argv[1]); print(h.get_size()); h.shutdown()' \
        "$(nbd_unix_uri "$1")"
}

setup_pair
start_pair
# Block devices always hold data as far as mirrord can tell: the first sync
# of a new pair waits for the operator's word.
first_sync_consent alpha
wait_state alpha synchronized 60 >/dev/null || die "the pair did not synchronize"
check_identical "after the initial full sync from alpha's device"
check_eq "alpha's device still holds its data (the sync went the right way)" 1 \
    "$(region_is_zero "${NODE_IMG[alpha]}" 0 $MiB; echo $?)"

# kill -9 of the secondary under a writer.
start_writer w "$(nbd_unix_uri alpha)" $((16 * MiB)) $((4 * MiB))
wait_acks w 200 30 || fail "the writer made no progress"
kill_node beta
n=$(acks w); wait_acks w $((n + 200)) 30 && pass "alpha keeps serving with beta killed" \
    || fail "alpha stalled with beta down"
log_mark alpha
must_start beta
if wait_log alpha "peer 'beta' connected:" 20 >/dev/null; then
    read -r -a plan <<<"$(plan_of alpha)"
    copied=${plan[-1]:-0}
    [ "$copied" -gt 0 ] && [ "$copied" -le $((4 * MiB)) ] \
        && pass "the resync copies what was written meanwhile (${copied} bytes of a 4 MiB window), not the device" \
        || fail "the resync copies ${copied} bytes (the writer's window is 4 MiB)"
else
    fail "beta did not reconnect within 20s"
fi
wait_state alpha synchronized 60 >/dev/null || fail "not synchronized after beta's restart"
finish_writer w "$(nbd_unix_uri alpha)" $((16 * MiB)) $((4 * MiB)) 2000
nbd_flush alpha
check_identical "after the secondary's crash and resync"

# TRIM and WRITE_ZEROES on block devices.
for n in alpha beta; do
    check_eq "$n's device holds data at 4 MiB and 32 MiB before" "1 1" \
        "$(region_is_zero "${NODE_IMG[$n]}" $((4 * MiB)) $MiB; echo -n "$? "; region_is_zero "${NODE_IMG[$n]}" $((32 * MiB)) $MiB; echo $?)"
done
check "TRIM at 4 MiB and WRITE_ZEROES (NO_HOLE) at 32 MiB through alpha" trim_zero alpha
for n in alpha beta; do
    check "$n's device reads zeros where trimmed" region_is_zero "${NODE_IMG[$n]}" $((4 * MiB)) $MiB
    check "$n's device reads zeros where zeroed" region_is_zero "${NODE_IMG[$n]}" $((32 * MiB)) $MiB
done
check_identical "after TRIM and WRITE_ZEROES"

# Online resize: the operator grows both devices (lvextend; here the loop
# files, then `losetup -c`), raises `size`, runs resize on the primary.
truncate -s "$NEW" "$T/alpha.lower" "$T/beta.lower"
losetup -c "${NODE_IMG[alpha]}" && losetup -c "${NODE_IMG[beta]}" || die "losetup -c failed"
check_eq "both devices have the new size" "$NEW $NEW" \
    "$(blockdev --getsize64 "${NODE_IMG[alpha]}") $(blockdev --getsize64 "${NODE_IMG[beta]}")"
VOL_SIZE=96M
write_configs
start_writer w2 "$(nbd_unix_uri alpha)" $((20 * MiB)) $((4 * MiB))
wait_acks w2 100 30 || fail "the writer made no progress"
out=$(ctl alpha resize); rc=$?
check_eq "mirrorctl resize on block devices exits 0 ($out)" 0 "$rc"
check_eq "alpha's status says $NEW bytes" "$NEW" "$(status_get alpha .size)"
check_eq "beta's status says $NEW bytes" "$NEW" "$(status_get beta .size)"
check_eq "an NBD client of alpha sees the new size" "$NEW" "$(nbd_size alpha)"
wait_state alpha synchronized 60 >/dev/null || fail "not synchronized after the resize"
finish_writer w2 "$(nbd_unix_uri alpha)" $((20 * MiB)) $((4 * MiB)) 2000
check "alpha writes the last 2 MiB of the grown device" \
    "${NBDTOOL[@]}" pattern "$(nbd_unix_uri alpha)" $((NEW - 2 * MiB)) $((2 * MiB)) 9
nbd_flush alpha
check_identical "after the online resize"

# A secondary whose device was not grown refuses; nothing changes.
truncate -s "$(size_bytes 128M)" "$T/alpha.lower"
losetup -c "${NODE_IMG[alpha]}"
VOL_SIZE=128M
write_configs
refused_ctl "beta's device not grown" alpha \
    "${NODE_IMG[beta]} has $NEW bytes, less than the new size $(size_bytes 128M): grow it first" resize
check_eq "alpha is still $NEW bytes" "$NEW" "$(status_get alpha .size)"
check_eq "beta is still $NEW bytes" "$NEW" "$(status_get beta .size)"
check_eq "alpha's NBD clients still see $NEW bytes" "$NEW" "$(nbd_size alpha)"
VOL_SIZE=96M
write_configs

# A clean restart: both at the grown size, nothing to copy.
clean_restart_copies_nothing "after a clean stop"
check_eq "alpha serves $NEW bytes after the restart" "$NEW" "$(status_get alpha .size)"

pair_finish
