#!/bin/bash
# backup-rejoin-race: `mirrorctl backup` copies the secondary's split image;
# meanwhile another shell runs `rejoin` (and, in the second case, `split`
# again). The secondary then serves newer data to the copy still running:
# the file is no longer the split instant's image. The backup must not end
# with that file at PATH as if it were one: it must fail, name the reason,
# and leave no PATH (or an image of one instant).
#   rejoin        rejoin during the copy, writes at both ends of the volume
#   rejoin+split  the same, then split again before the copy goes on: the
#                 backup point check (backup-mark) sees a split again
# The copy reads beta through delayproxy.py (TCP), paused while the other
# shell acts, so the race is the same at every run.
. "$(dirname "$0")/pairlib.sh"
have_ctl || skip "no mirrorctl"
VOL_SIZE=256M
VOL_EXTRA='initial-sync = "skip"'
NODE_NBD[beta]="\"127.0.0.1:0\""
start_synced_pair 30
check "256M of 0x11 through alpha" nbd_fill "$(nbd_unix_uri alpha)" 0 $((256 * MiB)) 17

echo "" >"$T/proxy.ctl"
"$PY" "$MIRROR_DIR/delayproxy.py" 127.0.0.1:0 "${NODE_TCP[beta]}" "$T/proxy.ctl" "$T/proxy.addr" 2>"$T/proxy.err" &
BG_PIDS+=($!)
wait_for 10 test -s "$T/proxy.addr" || die "delayproxy did not start"
FROM="nbd://$(cat "$T/proxy.addr")/$VOL_NAME"

race() {
    local label=$1 resplit=$2 bk=$T/bk-$1.img rc out
    echo "" >"$T/proxy.ctl"
    timeout 120 "$MIRRORCTL" --socket "${NODE_CTL[alpha]}" backup --to "$bk" --from "$FROM" \
        >"$T/bk-$label.out" 2>"$T/bk-$label.err" &
    local bp=$!
    wait_for 30 grep -q 'backup: [1-9][0-9]%' "$T/bk-$label.err" || die "[$label] the copy did not start: $(cat "$T/bk-$label.err")"
    echo "0 down" >"$T/proxy.ctl"      # the copy waits (it gives up only after 30 s)
    log "[$label] copy paused at $(grep -o 'backup: [0-9]*%' "$T/bk-$label.err" | tail -n 1)"
    local first; first=$(status_get alpha .last_split.unix_ms)
    out=$(ctl beta rejoin) || fail "[$label] rejoin from beta's host: $out"
    wait_state alpha synchronized 30 >/dev/null || fail "[$label] not synchronized after the rejoin"
    check "[$label] 16M of 0x77 at 0 (copied already)" nbd_fill "$(nbd_unix_uri alpha)" 0 $((16 * MiB)) 119
    check "[$label] 16M of 0x77 at 240M (not copied yet)" nbd_fill "$(nbd_unix_uri alpha)" $((240 * MiB)) $((16 * MiB)) 119
    if [ "$resplit" = 1 ]; then
        out=$(ctl alpha split) && log "[$label] split again: $out" || fail "[$label] second split: $out"
        # The secondary, asked to mark a backup of the first split, refuses too.
        refused_ctl "[$label] backup-mark of the first split's copy" alpha \
            "beta.*split at [0-9]+, not at $first.*ended during the copy" \
            backup-mark --point "$first" --split "$first"
    fi
    echo "" >"$T/proxy.ctl"
    wait $bp; rc=$?
    log "[$label] backup exit $rc: $(tr '\n' ' ' <"$T/bk-$label.out") $(grep -v '^backup: [0-9]*%' "$T/bk-$label.err" | tr '\n' ' ')"
    if [ -e "$bk" ]; then
        local head tail
        head=$(byte_at "$bk" 0); tail=$(byte_at "$bk" $((250 * MiB)))
        if [ "$head" = "$tail" ]; then
            pass "[$label] $bk (exit $rc) is an image of one instant (0x$(printf %x "$head") at both ends)"
        else
            fail "[$label] $bk (exit $rc) is torn: byte at 0 is 0x$(printf %x "$head") (the split's), at 250M 0x$(printf %x "$tail") (written after the rejoin)"
        fi
    else
        check_eq "[$label] no image left at PATH; the backup failed" 1 "$rc"
        check "[$label] the backup says the split ended during the copy" \
            grep -q "the split ended during the copy.*the image mixes two instants" "$T/bk-$label.err"
    fi
    if [ "$resplit" = 1 ]; then
        check_eq "[$label] the other shell's split is left alone (not rejoined)" split \
            "$(status_get alpha .state)"
    fi
    ctl alpha rejoin >/dev/null
    wait_state alpha synchronized 30 >/dev/null || fail "[$label] not synchronized after the case"
    check "[$label] back to 0x11 at both ends" nbd_fill "$(nbd_unix_uri alpha)" 0 $((16 * MiB)) 17
    nbd_fill "$(nbd_unix_uri alpha)" $((240 * MiB)) $((16 * MiB)) 17
}
race rejoin 0
race rejoin-split 1
stop_pair
check_identical "at the end"
pair_finish
