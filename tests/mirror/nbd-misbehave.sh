#!/bin/bash
# nbd-misbehave: NBD clients that misbehave while the pair mirrors over a
# slow link (two namespaces, a tbf rate limit on alpha's veth):
#   flood      a client writes as fast as the socket takes it and never
#              reads a reply, then vanishes without NBD_CMD_DISC; meanwhile
#              a well-behaved logged writer must keep getting its writes
#              acknowledged, and the daemon's memory and descriptors stay
#              bounded and come back once the client is gone;
#   overlap    four clients (fio) write the same blocks at once, with two
#              flooders on the same blocks, while a rejoin's resync copies
#              them;
# and at the end: synchronized, `verify --wait` finds nothing, both images
# identical, every acknowledged write on both.
. "$(dirname "$0")/pairlib.sh"
require ip tc fio
fio --enghelp 2>/dev/null | grep -qw nbd || skip "this fio has no nbd ioengine"
have_ctl || skip "no mirrorctl"
netns_nodes mmb 10.125.0
VOL_SIZE=256M
VOL_ACK=2s
ACK_MS=2000
VOL_EXTRA='initial-sync = "skip"
resync-rate = "8M"'
WIN_OFF=$((128 * MiB))
WIN=$((32 * MiB))
OVL_OFF=$((32 * MiB))
OVL=$((32 * MiB))
FLOOD=("$PY" "$MIRROR_DIR/nbdflood.py")

start_synced_pair 30
slow_link() { ip netns exec "$NSA" tc qdisc replace dev "$VA" root tbf rate "$1" burst 64kb latency 500ms; }
fast_link() { ip netns exec "$NSA" tc qdisc del dev "$VA" root 2>/dev/null; true; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$(pgrep -P "${NODE_PID[alpha]}" -x mirrord || echo "${NODE_PID[alpha]}")/status"; }
daemon_pid() { pgrep -P "${NODE_PID[alpha]}" -x mirrord || echo "${NODE_PID[alpha]}"; }
nfds() { ls "/proc/$(daemon_pid)/fd" | wc -l; }

start_writer w "$(nbd_unix_uri alpha)" $WIN_OFF $WIN --qd 4 --seed 31
wait_acks w 200 60 || die "the writer did not start"
rss0=$(rss_kb); fd0=$(nfds)
log "alpha: RSS ${rss0} kB, ${fd0} fds before the flood"

# ------------------------------------------------------------ flood --
slow_link 20mbit
n=$(acks w)
"${FLOOD[@]}" "${NODE_SOCK[alpha]}" "$VOL_NAME" "$OVL_OFF" "$OVL" 15 7 --abort >"$T/flood1.out" 2>"$T/flood1.err" &
FP=$!
BG_PIDS+=($FP)
sleep 5
rss1=$(rss_kb); fd1=$(nfds)
wait $FP
log "flood: $(cat "$T/flood1.out") requests sent ($(cat "$T/flood1.err")); alpha RSS ${rss1} kB mid-flood"
if wait_acks w $((n + 100)) 30; then
    pass "[flood] the well-behaved writer kept getting acks ($n -> $(acks w))"
else
    fail "[flood] the well-behaved writer stalled during the flood ($n -> $(acks w))"
fi
fast_link
wait_state alpha synchronized 120 >/dev/null || fail "[flood] not synchronized after the flood: $(node_status alpha | jq -c '{state,link,out_of_sync_bytes,resync}')"
sleep 2
rss2=$(rss_kb); fd2=$(nfds)
log "alpha after the flood: RSS ${rss2} kB, ${fd2} fds"
check_eq "[flood] alpha's descriptors back to where they were" "$fd0" "$fd2"
if [ $((rss1 - rss0)) -lt $((256 * 1024)) ]; then
    pass "[flood] alpha's memory stays bounded under a client that never reads (+$(((rss1 - rss0) / 1024)) MiB)"
else
    fail "[flood] alpha grew by $(((rss1 - rss0) / 1024)) MiB for one client that never reads its replies"
fi
check_eq "[flood] alpha still answers status" synchronized "$(status_get alpha .state)"

# ---------------------------------------------------------- overlap --
out=$(ctl alpha split) || die "split: $out"
check "[overlap] 32M of 0x5a over the overlap window while split" nbd_fill "$(nbd_unix_uri alpha)" "$OVL_OFF" "$OVL" 90
slow_link 40mbit
out=$(ctl alpha rejoin) || fail "rejoin: $out"
wait_state alpha resyncing 10 >/dev/null || fail "[overlap] no resync after the rejoin"
FIO_PIDS=()
for i in 1 2 3 4; do
    fio --name=ovl$i --ioengine=nbd --uri="$(nbd_unix_uri alpha)" --rw=randwrite --bs=$((4 << i))k \
        --iodepth=8 --offset="$OVL_OFF" --size="$OVL" --time_based --runtime=12 \
        --randseed=$i --output="$T/fio$i.out" >/dev/null 2>&1 &
    FIO_PIDS+=($!)
done
"${FLOOD[@]}" "${NODE_SOCK[alpha]}" "$VOL_NAME" "$OVL_OFF" "$OVL" 6 8 --abort >"$T/flood2.out" 2>&1 &
FIO_PIDS+=($!)
"${FLOOD[@]}" "${NODE_SOCK[alpha]}" "$VOL_NAME" "$OVL_OFF" "$OVL" 10 9 >"$T/flood3.out" 2>&1 &
FIO_PIDS+=($!)
bad=0
for p in "${FIO_PIDS[@]}"; do wait "$p" || bad=$((bad + 1)); done
for i in 1 2 3 4; do grep -q 'err= 0' "$T/fio$i.out" || bad=$((bad + 1)); done
check_eq "[overlap] the four fio clients saw no error" 0 "$bad"
fast_link
if wait_state alpha synchronized 120 >/dev/null; then
    pass "[overlap] synchronized after the rejoin under overlapping writers"
else
    fail "[overlap] not synchronized: $(node_status alpha | jq -c '{state,link,out_of_sync_bytes,resync}')"
fi

# Not finish_writer: four QD8 clients and two flooders over a 40 Mbit/s link
# hold the logged writer's writes for seconds (the link is the bottleneck).
stop_writer w
check_eq "the writer stopped with no failed write (exit 0)" 0 "$WRITER_RC"
log "writer: $(cat "$T/w.out")"
check "client FLUSH through alpha" nbd_flush alpha
out=$(ctl alpha verify --wait) && pass "verify: $out" || fail "verify: $out"
check_eq "verify finds no region that differs" 0 "$(status_get alpha .verify.out_of_sync_bytes)"
stop_pair
check_identical "after the misbehaving clients"
verify_writes "beta's image holds every acknowledged write" w --image "${NODE_IMG[beta]}" $WIN_OFF $WIN
pair_finish
