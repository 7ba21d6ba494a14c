#!/bin/bash
# Chaos mix: one pair under logged writes while, at seeded random moments, an
# operator's command runs with a failure in its middle: a planned failover
# (demote, then promote on the peer), a split, an online verify, a split with
# open-rw writes on the secondary, an online resize (both volume files grow by
# 16 MiB), the secondary restarted with a write stuck in its disk queue
# (write-stall, 8-20 s), or a `mirrorctl backup`; the failure, drawn from the
# seed: kill -9 of either node, a 0.3-3 s partition of the link (the proxies
# of faultlib.sh), or none.
# After each event the harness restarts what died, promotes a node if none is
# primary, rejoins a split, resizes a node that missed a resize, waits for
# synchronized, and checks the retired writer's acknowledged writes on both
# nodes' exports; at the end both images must be identical.
#
#   MIRRORD=build/mirrord MIRRORCTL=build/mirrorctl tests/faults/mix.sh SEED [EVENTS]
#
# Session 17 (chaos10) ran seeds 101-107, 202-208, 301-304 and 401-405 (12-18
# events each; docs/reliability.md), before the backup event (MIX_KINDS=7
# replays them); session 18 (chaos11) seeds 601 on.
SEED=${1:?usage: mix.sh SEED [EVENTS]}; NEV=${2:-15}
KINDS=${MIX_KINDS:-8}   # 7: session 17's events only (its seeds replay as they ran)
. "$(dirname "$0")/faultlib.sh"
TEST_NAME=mix-$SEED
VOL_SIZE=256M
VOL_ACK=2s
VOL_EXTRA='initial-sync = "skip"
resync-rate = "64M"'
W=0; CUR=""; CURN=""
primary_of() { local n r; for n in alpha beta; do r=$(status_get $n .role 2>/dev/null); [ "$r" = primary ] && echo $n; done; }
other() { [ $1 = alpha ] && echo beta || echo alpha; }
new_writer() { # on NODE
    W=$((W+1)); local off=$(( ((W-1) % 14) * 16 * MiB ))
    if [ $W -gt 14 ]; then qemu-io -f raw "$(nbd_unix_uri $1)" -c "write -z $off $((16*MiB))" -c flush >/dev/null || fail "zeroing window"; fi
    rand bs 0 1; bs=$((4096 << (bs*2)))
    rand f 0 3; fua=""; [ $f = 0 ] && fua=--fua
    add_writer w$W "$(nbd_unix_uri $1)" $off $((16*MiB)) --qd 8 --bs $bs $fua
    CUR=w$W; CURN=$1; CUROFF=$off
    log "writer $CUR on $1 at $off bs $bs $fua"
}
ensure_up() { local n; for n in alpha beta; do node_alive $n && continue
    start_node $n && continue
    if grep -q "grow it first" "${NODE_LOG[$n]}"; then log "growing $n's file (killed before its resize)"; truncate -s $(size_bytes $VOL_SIZE) "${NODE_IMG[$n]}"; fi
    must_start $n; done; }
settle() { # LABEL: both up, a primary, synchronized
    ensure_up
    local p; p=$(primary_of)
    if [ -z "$p" ]; then
        sleep 2; p=$(primary_of)   # (a promote may still be answering)
        if [ -z "$p" ]; then out=$(ctl alpha promote 2>&1); log "promote alpha (none primary): $out"; p=$(primary_of)
            [ -n "$p" ] || { out=$(ctl beta promote 2>&1); log "promote beta: $out"; p=$(primary_of); }
        fi
    fi
    [ "$(wc -w <<<"$p")" -le 1 ] || fail "$1: two primaries: $p"
    if [ "$(status_get $p .state)" = split ]; then out=$(ctl $p rejoin --wait 2>&1); log "rejoin on $p: $out"; fi
    if ! wait_state $p synchronized 20 >/dev/null; then
        local e; e=$(status_get alpha .last_error; status_get beta .last_error)
        if grep -q "size differs" <<<"$e"; then
            for n in alpha beta; do log "resize on $n (sizes differ): $(ctl $n resize 2>&1)"; done
        fi
    fi
    if ! wait_state $p synchronized 120 >/dev/null; then
        fail "$1: not synchronized: alpha $(status_get alpha '.role+" "+.state+" "+.last_error') beta $(status_get beta '.role+" "+.state+" "+.last_error')"
        return 1
    fi
    PRIM=$p
}
check_cur() { # verify the current writer's acks on both copies
    end_writer $CUR
    settle "before checking $CUR" || return
    count_verify "$CUR on alpha" $CUR --uri "$(nbd_unix_uri alpha)" $CUROFF $((16*MiB))
    count_verify "$CUR on beta" $CUR --uri "$(nbd_unix_uri beta)" $CUROFF $((16*MiB))
}
fault() { # a random fault now, in the background-able form
    rand k 0 3
    case $k in
        0) log "FAULT kill alpha"; kill_node alpha ;;
        1) log "FAULT kill beta"; kill_node beta ;;
        2) log "FAULT partition"; link_fault "0 down"; rand_sleep 300 3000; link_fault "" ;;
        3) log "FAULT none" ;;
    esac
}
pick_ports
use_proxies
start_synced_pair
PRIM=alpha
new_writer alpha
for i in $(seq $NEV); do
    rand_sleep 500 2500
    rand ev 0 $((KINDS - 1))
    case $ev in
    0) log "EVENT $i: failover from $PRIM"
       end_writer $CUR
       ( ctl $PRIM demote >$T/d.out 2>&1; echo "rc $?" >>$T/d.out ) & dp=$!
       rand_sleep 0 400; fault; wait $dp; log "demote $PRIM: $(tr '\n' ' ' <$T/d.out)"
       o=$(other $PRIM); ensure_up; sleep 1
       ( ctl $o promote >$T/p.out 2>&1; echo "rc $?" >>$T/p.out ) & pp=$!
       rand_sleep 0 200; fault; wait $pp; log "promote $o: $(tr '\n' ' ' <$T/p.out)" ;;
    1) log "EVENT $i: split on $PRIM"
       ( ctl $PRIM split >$T/s.out 2>&1; echo "rc $?" >>$T/s.out ) & sp=$!
       rand_sleep 0 300; fault; wait $sp; log "split: $(tr '\n' ' ' <$T/s.out)"
       rand_sleep 200 1500 ;;
    2) log "EVENT $i: verify on $PRIM"
       ( ctl $PRIM verify --wait >$T/v.out 2>&1; echo "rc $?" >>$T/v.out ) & vp=$!
       rand_sleep 0 3000; fault; wait $vp; log "verify: $(tr '\n' ' ' <$T/v.out | cut -c1-200)" ;;
    3) log "EVENT $i: fault alone"; fault ;;
    4) log "EVENT $i: rejoin/split cycle with open-rw"
       if ctl $PRIM split >/dev/null 2>&1; then
           o=$(other $PRIM); ctl $o open-rw >/dev/null 2>&1 && qemu-io -f raw "$(nbd_unix_uri $o)" -c "write -P 0x77 $((250*MiB)) 1M" >/dev/null
           fault
       fi ;;
    5) log "EVENT $i: resize on $PRIM"
       VOL_SIZE=$(( $(size_bytes $VOL_SIZE) + 16*MiB )); write_configs
       ( ctl $PRIM resize >$T/r.out 2>&1; echo "rc $?" >>$T/r.out ) & rp=$!
       rand_sleep 0 300; fault; wait $rp; log "resize: $(tr '\n' ' ' <$T/r.out)" ;;
    6) S=$(other $PRIM); rand blk 0 4095; rand ms 8000 20000
       log "EVENT $i: $S restarted with a stuck write at $((CUROFF + blk*4096)) for $ms ms"
       stop_node $S
       export MIRRORD_FAULTS="write-stall=$((CUROFF + blk*4096)):4096:$ms"; start_node $S; unset MIRRORD_FAULTS
       rand_sleep 1000 6000; fault ;;
    7) log "EVENT $i: backup from $PRIM"
       rm -f $T/backup.img
       ( "$MIRRORCTL" --config "$T/$PRIM.toml" --node $PRIM backup --to $T/backup.img >$T/b.out 2>&1
         echo "rc $?" >>$T/b.out ) & bp=$!
       rand_sleep 0 400; fault; wait $bp; log "backup: $(tr '\r' '\n' <$T/b.out | grep -v '%' | tr '\n' ' ' | cut -c1-300)"
       if grep -q "^rc 0" $T/b.out && [ "$(status_get $PRIM .state)" = split ]; then
           fail "event $i: the backup succeeded and left $PRIM split"
       fi ;;
    esac
    # the writer dies with its node or a demote: check it and start another
    if ! kill -0 ${WRITER_OF[$CUR]} 2>/dev/null || [ "$(primary_of)" != "$CURN" ] || ! node_alive $CURN; then
        check_cur
        settle "after event $i" && new_writer $PRIM
    else
        settle "after event $i"
        if [ "$PRIM" != "$CURN" ]; then check_cur; new_writer $PRIM; fi
    fi
done
check_cur
stop_node alpha; stop_node beta
check_identical "the copies at the end" && CONVERGED=yes
log "SUMMARY seed $SEED: checked $CHECKED lost $LOST converged $CONVERGED pass $N_PASS fail $N_FAIL"
pair_finish
