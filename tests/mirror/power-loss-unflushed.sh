#!/bin/bash
# power-loss-unflushed: a power loss of the primary (MIRRORD_FAULTS
# power-loss: every unsynced write is dropped) while it holds plain writes
# no client flushed. Its activity log covers them; the periodic internal
# flush of both copies (every 5 s with writes) makes the older ones durable.
# After the restart and the resync: two identical copies holding every write
# a client FLUSH covered, after each of:
#  1. plain writes, then 7 s of quiet (a periodic flush), then more writes;
#  2. the same, then the secondary killed (degraded), writes while
#     degraded, 7 s of quiet;
#  3. the same, with a split instead of the secondary's loss;
#  4. a power loss during the resync after the secondary's return;
#  5. a planned failover (demote, promote) right after plain writes, then a
#     power loss of the old primary (now secondary) and of the new primary.
# Writes that no FLUSH or FUA covered may be lost (the NBD contract); the
# test says which were, but does not count that as a failure, except for one
# older than a periodic flush (1.), which must be on both copies (it was not
# while 89c35a5 flushed only the peer's copy).
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"
resync-rate = "4M"'
have_ctl || skip "needs mirrorctl"

# holds IMAGE OFFSET LENGTH BYTE: every byte of the range is BYTE.
holds() {
    "$PY" - "$@" <<'PYEOF'
import sys
img, off, length, byte = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with open(img, "rb") as f:
    f.seek(off)
    sys.exit(0 if f.read(length) == bytes([byte]) * length else 1)
PYEOF
}
# Each phase writes its own extents (4 MiB): FLUSHed data (must survive)
# and plain data (may be lost), and says what survived.
FLUSHED=()
flushed_put() {  # flushed_put OFFSET LENGTH BYTE
    nbd_fill "$(nbd_unix_uri "${WRITER_NODE:-alpha}")" "$1" "$2" "$3" || die "flushed write at $1"
    FLUSHED+=("$1:$2:$3")
}
plain_put() { nbd_put "$(nbd_unix_uri "${WRITER_NODE:-alpha}")" "$1" "$2" "$3" || die "plain write at $1"; }
check_flushed() {  # check_flushed LABEL: both images hold every FLUSHed write
    local w off len b bad=0
    for w in "${FLUSHED[@]}"; do
        IFS=: read -r off len b <<<"$w"
        holds "${NODE_IMG[alpha]}" "$off" "$len" "$b" || { bad=1; log "alpha lacks flushed $w"; }
        holds "${NODE_IMG[beta]}" "$off" "$len" "$b" || { bad=1; log "beta lacks flushed $w"; }
    done
    check_eq "$1: both copies hold every write a client FLUSH covered" 0 "$bad"
}
report_plain() {  # report_plain LABEL OFFSET BYTE
    log "$1: plain write at $2 (byte $3): alpha holds $(byte_at "${NODE_IMG[alpha]}" "$2"), beta $(byte_at "${NODE_IMG[beta]}" "$2")"
}
converge() {  # converge LABEL: both up, synchronized, stopped; identical
    local n
    for n in alpha beta; do node_alive "$n" || must_start "$n"; done
    wait_state alpha synchronized 90 >/dev/null || fail "$1: the pair did not synchronize"
    stop_pair
    check_identical "$1"
    check_flushed "$1"
}
E=$((4 * MiB))
both_up() {  # both_up PHASE: alpha (power-loss injector) and beta up, synchronized
    start_with_faults alpha power-loss
    must_start beta
    wait_state alpha synchronized 60 >/dev/null || die "$1. not synchronized"
}

setup_pair
start_with_faults alpha power-loss
must_start beta
wait_state alpha synchronized 60 >/dev/null || die "the pair did not synchronize"

# 1. plain writes, a periodic flush, more plain writes, power loss.
flushed_put $((0 * E)) $((64 * KiB)) 11
plain_put $((1 * E)) $((64 * KiB)) 12
sleep 7
plain_put $((2 * E)) $((64 * KiB)) 13
power_loss alpha
start_with_faults alpha power-loss
converge "1. primary power loss after a periodic flush"
# Written 7 s before the power loss: a periodic flush of both copies (every
# 5 s) covered it, so it must be there though no client flushed it.
check_eq "1. a plain write older than the periodic flush is on alpha" 12 "$(byte_at "${NODE_IMG[alpha]}" $((1 * E)))"
check_eq "1. and on beta" 12 "$(byte_at "${NODE_IMG[beta]}" $((1 * E)))"
report_plain 1 $((2 * E)) 13

# 2. degraded after a periodic flush, then power loss.
both_up 2
flushed_put $((3 * E)) $((64 * KiB)) 21
plain_put $((4 * E)) $((64 * KiB)) 22
sleep 7
kill_node beta
wait_for 10 sh -c "grep -q 'tracking changes for the peer' '${NODE_LOG[alpha]}'" || die "2. alpha did not notice"
plain_put $((5 * E)) $((64 * KiB)) 23
plain_put $((1 * E)) $((64 * KiB)) 24
sleep 7
power_loss alpha
start_with_faults alpha power-loss
converge "2. primary power loss while degraded"
report_plain 2 $((4 * E)) 22
report_plain 2 $((5 * E)) 23
report_plain 2 $((1 * E)) 24

# 3. split after a periodic flush, writes during the split, power loss.
both_up 3
flushed_put $((6 * E)) $((64 * KiB)) 31
plain_put $((7 * E)) $((64 * KiB)) 32
sleep 7
out=$(ctl alpha split) || die "3. split failed: $out"
plain_put $((8 * E)) $((64 * KiB)) 33
plain_put $((7 * E + 128 * KiB)) $((64 * KiB)) 34
sleep 7
power_loss alpha
start_with_faults alpha power-loss
out=$(ctl alpha rejoin --wait) || fail "3. rejoin failed: $out"
converge "3. primary power loss during a split"
report_plain 3 $((7 * E)) 32
report_plain 3 $((8 * E)) 33

# 4. power loss during the resync after the secondary's return.
both_up 4
plain_put $((9 * E)) $((64 * KiB)) 41
sleep 7
kill_node beta
wait_for 10 sh -c "grep -q 'tracking changes for the peer' '${NODE_LOG[alpha]}'" || die "4. alpha did not notice"
for i in 0 1 2 3; do plain_put $((10 * E + i * MiB)) $((1 * MiB)) 42; done
flushed_put $((11 * E)) $((1 * MiB)) 43
for i in 0 1 2 3; do plain_put $((12 * E + i * MiB)) $((1 * MiB)) 44; done
must_start beta
wait_state alpha resyncing 30 >/dev/null || log "4. no resync state seen"
sleep 1
plain_put $((9 * E + 64 * KiB)) $((64 * KiB)) 45
power_loss alpha
start_with_faults alpha power-loss
converge "4. primary power loss during a resync"

# 5. planned failover right after plain writes, then power losses.
start_with_faults alpha power-loss
start_with_faults beta power-loss
wait_state alpha synchronized 60 >/dev/null || die "5. not synchronized"
plain_put $((13 * E)) $((64 * KiB)) 51
sleep 7
plain_put $((14 * E)) $((64 * KiB)) 52
out=$(ctl alpha demote) || die "5. demote failed: $out"
wait_for 20 sh -c "'$MIRRORCTL' --socket '${NODE_CTL[beta]}' promote >/dev/null 2>&1" || die "5. promote failed"
wait_state beta synchronized 60 >/dev/null || die "5. not synchronized after the failover"
WRITER_NODE=beta
plain_put $((15 * E)) $((64 * KiB)) 53
power_loss alpha          # the old primary, now secondary
start_with_faults alpha power-loss
wait_state beta synchronized 60 >/dev/null || die "5. not synchronized after alpha's power loss"
flushed_put $((15 * E + 128 * KiB)) $((64 * KiB)) 54
plain_put $((15 * E + 256 * KiB)) $((64 * KiB)) 55
sleep 7
plain_put $((14 * E + 128 * KiB)) $((64 * KiB)) 56
power_loss beta           # the new primary
start_with_faults beta power-loss
wait_state beta synchronized 90 >/dev/null || fail "5. the pair did not synchronize"
stop_pair beta alpha
check_identical "5. power losses after a planned failover"
check_flushed "5. power losses after a planned failover"
report_plain 5 $((13 * E)) 51
report_plain 5 $((14 * E)) 52
pair_finish
