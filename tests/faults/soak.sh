#!/bin/bash
# Soak: a mirrored pair under continuous logged writes for a bounded time
# (10 minutes by default) while, at seeded random times, the mirror is split
# and rejoined, each node is crashed (SIGKILL) or stopped and restarted, and
# the link is partitioned, delayed, lossy or flapping (the proxies of
# faultlib.sh). After every event the pair must synchronize again; every
# writer's acknowledged writes are checked on both copies when it is
# retired, and at the end the images must be identical.
#
#   MIRRORD=build/mirrord MIRRORCTL=build/mirrorctl tests/faults/soak.sh \
#       [--minutes N] [--seed S] [--out FILE]
#
# Prints the figures (and writes them to FILE); exit 0 only with zero lost
# acknowledged writes and identical copies.
MINUTES=10
SEED=$(( $(date +%s%N) % 1000000000 ))
OUT=""
while [ $# -gt 0 ]; do
    case $1 in
        --minutes) MINUTES=$2; shift 2 ;;
        --seed) SEED=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        *) echo "soak.sh: unknown argument '$1' (--minutes --seed --out)" >&2; exit 2 ;;
    esac
done
[[ "$MINUTES" =~ ^[1-9][0-9]*$ ]] || { echo "soak.sh: --minutes takes a positive number" >&2; exit 2; }
. "$(dirname "$0")/faultlib.sh"
have_ctl || die "the soak needs mirrorctl"
require qemu-io
OUT=${OUT:-${TMPDIR:-/tmp}/mirrord-soak-$SEED.txt}
log "soak: $MINUTES minutes, seed $SEED (repeat with --seed $SEED)"

VOL_SIZE=1G
VOL_ACK=2s
VOL_EXTRA='initial-sync = "skip"
resync-rate = "32M"'
# Writer windows: a new one for each writer (a reused window would still
# hold the previous writer's data, which the next one's log cannot explain,
# so a reused window is zeroed first).
SLOT0=$((32 * MiB)) SLOT=$((8 * MiB)) SLOTS=124
declare -A EVENTS
N_WRITERS=0 RESYNC_FAILS=0
CUR=""

# new_writer: the next writer, on the next window slot, with a random block
# size and FUA or not (mixed I/O).
new_writer() {
    local slot=$((N_WRITERS % SLOTS)) bs fua=""
    N_WRITERS=$((N_WRITERS + 1))
    rand bs 0 2; bs=$((4096 << (bs * 2)))
    rand f 0 3; [ "$f" = 0 ] && fua=--fua
    CUR=w$N_WRITERS
    CUR_OFF=$((SLOT0 + slot * SLOT))
    if [ $N_WRITERS -gt $SLOTS ]; then
        qemu-io -f raw "$(nbd_unix_uri alpha)" -c "write -z $CUR_OFF $SLOT" -c flush >/dev/null \
            || fail "zeroing the reused window $CUR_OFF failed"
    fi
    add_writer "$CUR" "$(nbd_uri alpha)" $CUR_OFF $SLOT --bs $bs --qd 8 $fua
    log "writer $CUR: window $CUR_OFF+$SLOT, bs $bs ${fua:-(no FUA)}"
}

# synced LABEL: the pair synchronizes again after an event.
synced() {
    if wait_state alpha synchronized 180 >/dev/null; then
        log_mark alpha   # link losses from now on are counted at a crash
        return 0
    fi
    RESYNC_FAILS=$((RESYNC_FAILS + 1))
    fail "$1: not synchronized within 180s (alpha $(status_get alpha .state), beta $(status_get beta .state))"
    return 1
}

# retire_writer: stop the current writer; check its writes on both copies
# (both exports, once synchronized).
retire_writer() {
    end_writer "$CUR"
    synced "before checking $CUR"
    count_verify "$CUR on alpha" "$CUR" --uri "$(nbd_unix_uri alpha)" $CUR_OFF $SLOT
    count_verify "$CUR on beta" "$CUR" --uri "$(nbd_unix_uri beta)" $CUR_OFF $SLOT
}

pick_ports
use_proxies
start_synced_pair
new_writer
t_end=$((SECONDS + MINUTES * 60))
while [ $SECONDS -lt $t_end ]; do
    rand_sleep 2000 8000
    rand ev 0 7
    case $ev in
        0) EVENTS[split-rejoin]=$((${EVENTS[split-rejoin]:-0} + 1))
           ctl alpha split >/dev/null || fail "split failed"
           rand_sleep 500 5000
           ctl alpha rejoin --wait >/dev/null || fail "rejoin failed" ;;
        1) EVENTS[secondary-restart]=$((${EVENTS[secondary-restart]:-0} + 1))
           rand k 0 1
           if [ "$k" = 0 ]; then kill_node beta; else stop_node beta; fi
           rand_sleep 500 4000
           must_start beta ;;
        2) EVENTS[primary-crash]=$((${EVENTS[primary-crash]:-0} + 1))
           # What the secondary may lack depends on this: say it.
           log "before the crash: alpha $(status_get alpha .state), $(log_since alpha | grep -c "replication link to 'beta' lost") link losses since the last synchronized state"
           kill_node alpha
           # Its log is complete now: did it acknowledge writes without beta
           # (peer timeout or link loss: diverge) between the status above and
           # its death? Then the check below may ask too much of beta; if not,
           # a block missing on beta breaks protocol C.
           log "alpha's log up to its death: $(log_since alpha | grep -c "tracking changes for the peer") times it went on without beta since the last synchronized state"
           writer_gone "$CUR" 30
           # Degraded acknowledgements: if alpha went on without beta (its
           # last "tracking changes" line) and no resync completed after
           # that, writes acknowledged from then on may be on alpha only:
           # beta is checked for what was acknowledged before (protocol C:
           # all of it), alpha for everything once restarted. A resync that
           # completed copied the degraded writes to beta: nothing excused.
           cutoff=()
           went=$(log_since alpha | awk '/tracking changes for the peer/ { w = $0 }
                                         /resync complete: the peer is up to date/ { w = "" }
                                         END { print w }')
           if [ -n "$went" ]; then
               cutoff=(--acked-before "$(log_line_ms "$went")")
               EVENTS[primary-crash-degraded]=$((${EVENTS[primary-crash-degraded]:-0} + 1))
               log "alpha went on alone at ${went%% *} and never resynced: writes acknowledged from then on are checked on alpha only"
           fi
           mid_resync=""
           if [ "$(status_get beta .consistent)" = false ]; then
               mid_resync=1
               # Killed in the middle of a resync into beta: beta's copy is a
               # mix until it ends, so its export fails reads by design.
               EVENTS[primary-crash-mid-resync]=$((${EVENTS[primary-crash-mid-resync]:-0} + 1))
               log "beta is inconsistent (alpha died during a resync into it; its reads fail until the resync ends): $CUR is checked on both once the restarted alpha resynced it"
           else
               count_verify "$CUR on beta after the primary's crash" "$CUR" --uri "$(nbd_unix_uri beta)" $CUR_OFF $SLOT "${cutoff[@]}"
           fi
           must_start alpha
           synced "after the primary's restart"
           count_verify "$CUR on the restarted alpha" "$CUR" --uri "$(nbd_unix_uri alpha)" $CUR_OFF $SLOT
           [ -z "$mid_resync" ] ||
               count_verify "$CUR on beta, resynced after the primary's restart" "$CUR" --uri "$(nbd_unix_uri beta)" $CUR_OFF $SLOT
           new_writer ;;
        3) EVENTS[partition]=$((${EVENTS[partition]:-0} + 1))
           link_fault "0 down"; rand_sleep 1000 6000; link_fault "" ;;
        4) EVENTS[delay-50ms]=$((${EVENTS[delay-50ms]:-0} + 1))
           link_fault "25"; rand_sleep 2000 6000; link_fault "" ;;
        5) EVENTS[loss-5%]=$((${EVENTS[loss-5%]:-0} + 1))
           link_fault "1 loss=5"; rand_sleep 2000 6000; link_fault "" ;;
        6) EVENTS[flap]=$((${EVENTS[flap]:-0} + 1))
           rand flaps 2 4
           for _ in $(seq "$flaps"); do
               link_fault "0 down"; rand_sleep 200 2000; link_fault ""; rand_sleep 200 2000
           done ;;
        7) EVENTS[writer-rotation]=$((${EVENTS[writer-rotation]:-0} + 1))
           retire_writer
           new_writer ;;
    esac
    synced "after event $ev"
done
retire_writer
stop_node alpha
stop_node beta
check_identical "the copies at the end of the soak" && CONVERGED=yes
acked_total=$(cat "$T"/w*.acks | grep -c '^A ')

{
    echo "mirrord soak, seed $SEED, $MINUTES min, $(date -u '+%Y-%m-%d %H:%M UTC')"
    printf '  %-22s %s\n' "duration" "$((SECONDS)) s"
    for e in "${!EVENTS[@]}"; do printf '  %-22s %s\n' "event $e" "${EVENTS[$e]}"; done | sort
    printf '  %-22s %s\n' "writers" "$N_WRITERS" "acknowledged writes" "$acked_total" \
        "writes checked" "$CHECKED (each on both copies)" "lost" "$LOST" \
        "resync timeouts" "$RESYNC_FAILS" "copies identical" "$CONVERGED" \
        "alpha starts" "${NODE_STARTS[alpha]}" "beta starts" "${NODE_STARTS[beta]}" \
        "checks" "$N_PASS passed, $N_FAIL failed"
} | tee "$OUT"
pair_finish
