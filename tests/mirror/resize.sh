#!/bin/bash
# resize: `mirrorctl resize` grows a live mirrored volume (DRBD's drbdadm
# resize). Each node re-reads its own volume file; the operator edits `size`
# in both.
#  1. refused, naming the node and both sizes, while the secondary's file
#     still says the old size: nothing changes, the link stays up, writes go
#     on. Shrinking is refused, the same size is a no-op.
#  2. under a write workload through the primary: both nodes grow, a new NBD
#     connection sees the new size, data written into the new area is on
#     both copies; a secondary whose new area holds stale data gets it
#     resynced (only the new area), two sparse files need no copy at all,
#     nor does --assume-clean over identical old bytes;
#     every acknowledged write checks out, the images are identical, and
#     the resized events are emitted. From the secondary it is relayed.
#  3. both daemons restarted: no resync at all, nothing out of sync.
#  4. the secondary down: the primary grows alone (new area out of sync),
#     the secondary restarted with its old size is refused naming it, grown
#     there with `mirrorctl resize` while disconnected, it connects and a
#     bitmap resync copies about the new area and the outage's writes.
#  5. the same with the secondary grown offline (volume file and backing
#     file, then a restart: the metadata grows at open).
#  6. (MIRRORD_OLD) a peer built before resize: refused, the link stays up.
#  7. the secondary hangs with RESIZE unanswered: the command fails saying its
#     size is unknown, writes go on; the sizes are reconciled afterwards.
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_ACK=5s
VOL_EXTRA='initial-sync = "skip"'
ACK_MS=5000
WIN_OFF=$((8 * MiB))
WIN=$((16 * MiB))
require jq nbdinfo
have_ctl || skip "resize needs mirrorctl"

# Each node reads its own volume file, as on two hosts.
ALPHA_SIZE=$VOL_SIZE
BETA_SIZE=$VOL_SIZE
NODE_CFG[alpha]=$T/alpha.toml
NODE_CFG[beta]=$T/beta.toml
write_configs() {
    VOL_SIZE=$ALPHA_SIZE write_config "$T/alpha.toml"
    VOL_SIZE=$BETA_SIZE write_config "$T/beta.toml"
}
# sizes A B: what alpha's and beta's volume files say from now on.
sizes() { ALPHA_SIZE=$1; BETA_SIZE=$2; write_configs; }

# resize_ok LABEL NODE ERE [ARGS...]: `mirrorctl resize` succeeds saying ERE.
resize_ok() {
    local label=$1 node=$2 re=$3 out rc; shift 3
    out=$(ctl "$node" resize "$@"); rc=$?
    if [ $rc -eq 0 ] && grep -qE -- "$re" <<<"$out"; then
        pass "$label: $out"
    else
        fail "$label: expected success matching /$re/, got exit $rc: $out"
    fi
}
# resize_alone LABEL NODE: NODE, refused by its peer for its size, grows
# alone. The peer keeps dialing: a resize during one of those handshakes is
# refused (EAGAIN, "under way") and tried again.
resize_alone() {
    local label=$1 node=$2 out rc try
    for try in $(seq 20); do
        out=$(ctl "$node" resize); rc=$?
        grep -q "under way" <<<"$out" || break
        sleep 0.2
    done
    if [ $rc -eq 0 ] && grep -q "on this node alone" <<<"$out"; then
        pass "$label: $out"
    else
        fail "$label: exit $rc: $out"
    fi
}
sizes_are() {  # LABEL BYTES: both nodes' status and a new NBD connection to each
    check_eq "$1: alpha's status says $2 bytes" "$2" "$(status_get alpha .size)"
    check_eq "$1: beta's status says $2 bytes" "$2" "$(status_get beta .size)"
    check_eq "$1: a new NBD connection to alpha sees $2 bytes" "$2" "$(nbdinfo --size "$(nbd_uri alpha)")"
    check_eq "$1: a new NBD connection to beta sees $2 bytes" "$2" "$(nbdinfo --size "$(nbd_unix_uri beta)")"
}
# nbd_holds URI OFFSET LENGTH BYTE: a new NBD client reads LENGTH bytes of
# value BYTE there.
nbd_holds() {
    "$PY" - "$@" <<'PYEOF'
import sys
import nbd
uri, off, length, byte = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
h = nbd.NBD()
h.connect_uri(uri)
data = h.pread(length, off)
h.shutdown()
sys.exit(0 if data == bytes([byte]) * length else 1)
PYEOF
}

start_synchronized_pair
nbd_fill "$(nbd_unix_uri alpha)" $((40 * MiB)) $MiB 17 || die "writing to alpha failed"
"$MIRRORCTL" --socket "${NODE_CTL[alpha]}" events >"$T/events.alpha" 2>&1 &
BG_PIDS+=($!)
"$MIRRORCTL" --socket "${NODE_CTL[beta]}" events >"$T/events.beta" 2>&1 &
BG_PIDS+=($!)

start_writer w "$(nbd_uri alpha)" $WIN_OFF $WIN --qd 8 --seed 3
wait_acks w 300 60 || die "the writer did not get 300 writes acknowledged"
log_mark alpha
log_mark beta

# --- 1. refusals: nothing changes
sizes 128M 64M
refused_ctl "beta's volume file not edited" alpha \
    "node 'beta' config says 67108864 bytes, not 134217728 bytes" resize
check_eq "still 64M on alpha" $((64 * MiB)) "$(status_get alpha .size)"
check_eq "still 64M on beta" $((64 * MiB)) "$(status_get beta .size)"
check_eq "alpha's backing file untouched" $((64 * MiB)) "$(stat -c %s "${NODE_IMG[alpha]}")"
check_eq "beta's backing file untouched" $((64 * MiB)) "$(stat -c %s "${NODE_IMG[beta]}")"
check_eq "the link stayed up" "" "$(link_drops alpha beta)"
a0=$(acks w)
wait_acks w $((a0 + 100)) 30 && pass "writes go on after the refusal" || fail "writes stalled after the refusal"
sizes 32M 32M
refused_ctl "shrinking" alpha "shrinking is not supported" resize
sizes 64M 64M
resize_ok "the same size" alpha "already 67108864 bytes"
check_eq "still synchronized" synchronized "$(status_get alpha .state)"

# --- 2. grow under load. beta's file holds stale bytes past its end: its
# new area is not known to be zeros, so alpha resyncs it (only it).
"$PY" -c 'import sys; f=open(sys.argv[1], "r+b"); f.seek(100 << 20); f.write(b"\x55" * 65536)' "${NODE_IMG[beta]}"
rb0=$(status_get alpha .resynced_bytes_total)
sizes 128M 128M
t0=$(date +%s%N)
resize_ok "grow to 128M under load" alpha "resized from 67108864 bytes to 134217728 bytes; the new area is resynced"
log "resize took $((($(date +%s%N) - t0) / 1000000)) ms under load"
sizes_are "after the resize" $((128 * MiB))
wait_state alpha synchronized 60 >/dev/null || fail "alpha not synchronized after the resize"
rb1=$(status_get alpha .resynced_bytes_total)
copied=$((rb1 - rb0))
if [ $copied -gt 0 ] && [ $copied -le $((64 * MiB)) ]; then
    pass "the resync after the resize copied $copied bytes: the new area at most, not the volume"
else
    fail "the resync after the resize copied $copied bytes (expected 1..$((64 * MiB)))"
fi
nbd_fill "$(nbd_unix_uri alpha)" $((120 * MiB)) $MiB 171 && pass "a write into the new area succeeds" \
    || fail "writing into the new area failed"
check_eq "the link stayed up through the resize" "" "$(link_drops alpha beta)"
finish_writer w "$(nbd_uri alpha)" $WIN_OFF $WIN $ACK_MS

# Two sparse files: nothing to copy. Asked on the secondary: relayed.
rb0=$(status_get alpha .resynced_bytes_total)
sizes 160M 160M
resize_ok "grow to 160M, asked on beta" beta "reads as zeros on both nodes: nothing to copy"
sizes_are "after the second resize" $((160 * MiB))
check_eq "alpha: nothing out of sync" 0 "$(status_get alpha .out_of_sync_bytes)"
check_eq "beta: nothing out of sync" 0 "$(status_get beta .out_of_sync_bytes)"
check_eq "nothing copied" "$rb0" "$(status_get alpha .resynced_bytes_total)"
check_eq "still synchronized" synchronized "$(status_get alpha .state)"
check "the new area's data reads back from alpha" nbd_holds "$(nbd_uri alpha)" $((120 * MiB)) $MiB 171
check "the new area's data reads back from beta's export" nbd_holds "$(nbd_unix_uri beta)" $((120 * MiB)) $MiB 171
nbd_flush alpha
check_eq "the new area's data is in beta's backing file" 171 "$(byte_at "${NODE_IMG[beta]}" $((120 * MiB + 4096)))"
check_eq "beta's stale bytes were replaced" 0 "$(byte_at "${NODE_IMG[beta]}" $((100 * MiB)))"
for n in alpha beta; do
    if grep -q '"event":"resized".*"from":67108864.*"to":134217728\|"event":"resized".*"to":134217728' "$T/events.$n"; then
        pass "$n's event stream says resized (64M -> 128M)"
    else
        fail "$n's event stream has no resized event: $(grep -c event "$T/events.$n") events"
    fi
done

# --assume-clean (both LVs grown over the same old bytes): both files hold the
# same non-zero bytes past their end, so neither new area is known to be
# zeros; nothing is copied and the copies still agree.
for n in alpha beta; do
    "$PY" -c 'import sys; f=open(sys.argv[1], "r+b"); f.seek(168 << 20); f.write(b"\x66" * 65536)' "${NODE_IMG[$n]}"
done
rb0=$(status_get alpha .resynced_bytes_total)
sizes 176M 176M
resize_ok "grow to 176M with --assume-clean" alpha "--assume-clean: the new area is not copied" --assume-clean
sizes_are "after --assume-clean" $((176 * MiB))
check_eq "--assume-clean: nothing out of sync" 0 "$(status_get alpha .out_of_sync_bytes)"
check_eq "--assume-clean: nothing copied" "$rb0" "$(status_get alpha .resynced_bytes_total)"
check "--assume-clean: the old bytes past the end are served" nbd_holds "$(nbd_uri alpha)" $((168 * MiB)) 65536 102

# --- 3. both restarted: no resync, nothing out of sync
VOL_SIZE=176M
stop_pair
check_identical "after the online resizes"
must_start alpha
must_start beta
wait_state alpha synchronized 30 >/dev/null || fail "not synchronized after the restart"
check_eq "the restart copies nothing" "in sync 0" "$(plan_of alpha)"
check_eq "alpha: nothing out of sync" 0 "$(status_get alpha .out_of_sync_bytes)"
check_eq "beta: nothing out of sync" 0 "$(status_get beta .out_of_sync_bytes)"
if { log_since alpha; log_since beta; } | grep -qiE "full (re)?sync"; then
    fail "a full sync was logged: $({ log_since alpha; log_since beta; } | grep -iE 'full (re)?sync' | head -n 1)"
else
    pass "no full sync in either log since the restart"
fi
sizes_are "after the restart" $((176 * MiB))

# --- 4. beta down: alpha grows alone; beta refused with its old size, then
# grown there while disconnected
kill_node beta
wait_state alpha 'degraded|disconnected' 20 >/dev/null || fail "alpha did not notice beta's death"
sizes 192M 176M
resize_ok "grow alone with beta down" alpha "on this node alone"
check_eq "alpha is 192M" $((192 * MiB)) "$(status_get alpha .size)"
dirty=$(status_get alpha .out_of_sync_bytes)
[ "$dirty" -ge $((16 * MiB)) ] && pass "the new area is out of sync ($dirty bytes)" \
    || fail "only $dirty bytes out of sync after growing alone"
nbd_fill "$(nbd_unix_uri alpha)" $((180 * MiB)) $MiB 181 || fail "writing into the new area failed"
nbd_fill "$(nbd_unix_uri alpha)" $((20 * MiB)) $MiB 182 || fail "writing during the outage failed"
must_start beta
if line=$(wait_log beta "volume size differs.*mirrorctl resize. on the smaller node \('beta'\)" 20); then
    pass "beta with the old size is refused: ${line#*: }"
else
    fail "no refusal naming the smaller node: $(log_since beta | grep -i size | tail -n 2)"
fi
check_eq "alpha still degraded" degraded "$(status_get alpha .state)"
log_mark alpha
sizes 192M 192M
resize_alone "beta grows alone while disconnected" beta
wait_state alpha synchronized 60 >/dev/null || fail "not synchronized after beta grew"
plan=$(plan_of alpha)
case "$plan" in
    "bitmap resync "*) n=${plan##* }
        if [ "$n" -ge $((16 * MiB)) ] && [ "$n" -le $((32 * MiB)) ]; then
            pass "bitmap resync of about the new area and the outage's writes ($n bytes)"
        else
            fail "bitmap resync of $n bytes (expected 16M..32M)"
        fi ;;
    *) fail "plan after beta grew: '$plan' (expected a bitmap resync)" ;;
esac
sizes_are "after both grew" $((192 * MiB))

# --- 5. beta down again, grown offline: volume file, backing file, restart
kill_node beta
wait_state alpha 'degraded|disconnected' 20 >/dev/null || fail "alpha did not notice beta's death"
sizes 224M 224M
resize_ok "grow alone again" alpha "on this node alone"
nbd_fill "$(nbd_unix_uri alpha)" $((200 * MiB)) $MiB 201 || fail "writing into the new area failed"
truncate -s 224M "${NODE_IMG[beta]}"
log_mark alpha
# beta stops itself at the next RESIZE it gets (part 7).
start_with_faults beta stop-on-resize
wait_state alpha synchronized 60 >/dev/null || fail "not synchronized after beta's offline grow"
plan=$(plan_of alpha)
case "$plan" in
    "bitmap resync "*) n=${plan##* }
        [ "$n" -le $((40 * MiB)) ] && pass "offline grow: bitmap resync of $n bytes, not the volume" \
            || fail "offline grow: bitmap resync of $n bytes" ;;
    *) fail "plan after beta's offline grow: '$plan' (expected a bitmap resync)" ;;
esac
sizes_are "after the offline grow" $((224 * MiB))
check_eq "alpha's new area data is on beta" 201 "$(byte_at "${NODE_IMG[beta]}" $((200 * MiB)))"

# --- 7. beta hangs with RESIZE unanswered (it stops itself when RESIZE
# arrives: MIRRORD_FAULTS=stop-on-resize, after the flush that comes before
# the pause): the command fails once the link is declared lost,
# saying beta's size is unknown; writes go on (tracked for beta). Resumed,
# beta reads the RESIZE still in its socket and grows; alpha did not: the
# reconnect is refused naming alpha, which then grows alone, and the pair
# resyncs the new area.
sizes 256M 256M
log_mark alpha
log_mark beta
refused_ctl "beta hung: resize fails, saying beta's size is unknown" alpha "its size is unknown" resize
wait_stopped beta 1 && pass "beta stopped at the RESIZE" || fail "beta is not stopped at the RESIZE"
check_eq "alpha did not grow" $((224 * MiB)) "$(status_get alpha .size)"
nbd_fill "$(nbd_unix_uri alpha)" $((30 * MiB)) $MiB 230 && pass "writes go on after the failed resize" \
    || fail "a write failed after the failed resize"
kill -CONT "${NODE_PID[beta]}"
wait_log beta "resized from 234881024 to 268435456 bytes" 20 >/dev/null \
    && pass "beta, resumed, grew from the RESIZE it had received" || fail "beta did not grow"
if line=$(wait_log alpha "smaller node \('alpha'\)" 20); then
    pass "the reconnect is refused naming alpha: ${line#*: }"
else
    fail "no refusal naming alpha: $(log_since alpha | grep -i 'size' | tail -n 2)"
fi
resize_alone "alpha grows alone after the lost answer" alpha
wait_state alpha synchronized 60 >/dev/null || fail "not synchronized after alpha grew"
sizes_are "after the lost answer" $((256 * MiB))
VOL_SIZE=256M
stop_pair
check_identical "after growing with the peer down and a lost answer"

# --- 6. a peer built before resize
if [ -n "${MIRRORD_OLD:-}" ]; then
    must_start alpha
    MIRRORD=$MIRRORD_OLD must_start beta
    wait_state alpha synchronized 60 >/dev/null || fail "alpha and the old beta do not synchronize"
    log_mark alpha
    sizes 288M 288M
    refused_ctl "resize against a peer without it" alpha "does not support resize" resize
    check_eq "alpha did not grow" $((256 * MiB)) "$(status_get alpha .size)"
    nbd_fill "$(nbd_unix_uri alpha)" $((10 * MiB)) $MiB 99 || fail "writing after the refusal failed"
    check_eq "the link stayed up" "" "$(link_drops alpha beta)"
    check_eq "still synchronized" synchronized "$(status_get alpha .state)"
    stop_pair
    check_identical "with the old peer"
else
    log "MIRRORD_OLD unset: the check against a mirrord built before resize is skipped"
fi
pair_finish
