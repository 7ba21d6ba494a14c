#!/bin/bash
# enospc-split-rw: the secondary's backing file on a small tmpfs (24M for a
# 64M volume) that fills up
#   1. while split with open-rw: the client writing to the secondary gets
#      ENOSPC for what did not fit, the daemon stays up, the primary writes on;
#   2. at the rejoin, the resync into the full file system fails too; the
#      primary keeps serving without an error (its client writes go on);
#   3. the tmpfs grows (space freed) WITHOUT a restart: the pair resyncs by
#      itself, both images identical, every write acknowledged through the
#      primary on both.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "no mirrorctl"
require mount umount
VOL_SIZE=64M
VOL_ACK=2s
ACK_MS=2000
VOL_EXTRA='initial-sync = "skip"'
mkdir -p "$T/small"
mount -t tmpfs -o size=24M tmpfs "$T/small" 2>/dev/null || skip "cannot mount a tmpfs"
CLEANUP_HOOKS+=("umount -l $T/small")
NODE_IMG[beta]=$T/small/beta.img
start_synced_pair 30
check "16M of 0x21 at 0 through alpha (both copies)" nbd_fill "$(nbd_unix_uri alpha)" 0 $((16 * MiB)) 33

# 1. split, open-rw on beta, beta's client fills its file system.
out=$(ctl alpha split) || die "split: $out"
out=$(ctl beta open-rw) || die "open-rw: $out"
start_writer w "$(nbd_unix_uri alpha)" $((32 * MiB)) $((16 * MiB)) --qd 4 --seed 51
if out=$(nbd_fill "$(nbd_unix_uri beta)" $((16 * MiB)) $((16 * MiB)) 68 2>&1); then
    fail "[open-rw] 16M into a tmpfs with 8M free succeeded"
elif grep -qiE 'ENOSPC|No space|space' <<<"$out"; then
    pass "[open-rw] the secondary's client gets ENOSPC: $(tail -n 1 <<<"$out" | cut -c1-160)"
else
    fail "[open-rw] the secondary's client got another error: $(tail -n 1 <<<"$out" | cut -c1-200)"
fi
node_alive beta && pass "[open-rw] beta is still running" || fail "[open-rw] beta died"
log "beta status: $(node_status beta | jq -c '{state,link,consistent,local_io_errors,last_error,writable}')"
n=$(acks w); wait_acks w $((n + 200)) 30 && pass "[open-rw] the primary's client writes on" || fail "[open-rw] alpha's writes stalled"

# 2. rejoin into the full file system.
out=$(ctl alpha rejoin) && log "rejoin: $out" || log "rejoin refused: $out"
sleep 5   # not readiness: lets the resync meet the full file system
log "alpha: $(node_status alpha | jq -c '{state,link,out_of_sync_bytes,resync,last_error}')"
log "beta: $(node_status beta | jq -c '{state,link,consistent,local_io_errors,last_error}')"
n=$(acks w); wait_acks w $((n + 200)) 30 && pass "[rejoin, full] the primary's client writes on" ||
    fail "[rejoin, full] alpha's writes stalled ($n -> $(acks w))"
check_eq "[rejoin, full] alpha is not synchronized (beta's disk is full)" yes \
    "$(status_get alpha '.state != "synchronized"' | sed 's/true/yes/')"

# 3. space freed: no restart.
mount -o remount,size=160M "$T/small" || die "cannot grow the tmpfs"
if wait_state alpha synchronized 150 >/dev/null; then
    pass "[space freed] synchronized without a restart"
else
    fail "[space freed] not synchronized 150 s after space was freed: $(node_status alpha | jq -c '{state,link,out_of_sync_bytes,resync,last_error}') / beta: $(node_status beta | jq -c '{state,link,consistent,last_error}')"
fi
check_eq "[space freed] beta's copy is consistent" true "$(status_get beta .consistent)"
check_eq "[space freed] beta's last_error cleared" "" "$(status_get beta .last_error)"
finish_writer w "$(nbd_unix_uri alpha)" $((32 * MiB)) $((16 * MiB)) $ACK_MS
check_eq "every node started once (no restart)" "1 1" "${NODE_STARTS[alpha]} ${NODE_STARTS[beta]}"
stop_pair
check_identical "after the full file system"
verify_writes "beta's image holds every acknowledged write" w --image "${NODE_IMG[beta]}" $((32 * MiB)) $((16 * MiB))
pair_finish
