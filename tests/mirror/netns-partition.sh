#!/bin/bash
# netns-partition: the pair on two network namespaces joined by a veth pair
# (10.123.0.1 alpha, 10.123.0.2 beta), the NBD client in alpha's namespace.
#   delay      50 ms more round trip: writes still complete (each one now
#              waits for the peer: protocol C), the pair stays in sync
#   partition  the link goes down under write load: within the ack-timeout
#              the primary goes degraded, the client keeps writing without
#              an error; healed: bitmap resync, synchronized again
#   interrupted resync  a partition during the resync, healed: the resync
#              starts again and completes
# and at the end both copies are identical and hold every acknowledged write.
# Needs root for `ip netns` (skips otherwise). The delay uses netem when the
# kernel has it, else a user-space delaying forwarder on alpha's side.
. "$(dirname "$0")/pairlib.sh"
require ip fio
fio --enghelp 2>/dev/null | grep -qw nbd || skip "this fio has no nbd ioengine"

# Namespaces this test left behind when it was killed (mirr-a-PID of a dead PID).
for ns in $(ip netns list 2>/dev/null | grep -oE '^mirr-[ab]-[0-9]+'); do
    kill -0 "${ns##*-}" 2>/dev/null || ip netns del "$ns" 2>/dev/null
done
NSA=mirr-a-$$ NSB=mirr-b-$$ VA=mva$$ VB=mvb$$
netns_pair "$NSA" "$NSB" "$VA" "$VB" 10.123.0
IN_A=(ip netns exec "$NSA")

VOL_SIZE=1G
VOL_ACK=2s
ACK_MS=2000
# initial-sync skip: both images start as the same zeroes. A resync rate
# limit makes the resync long enough to interrupt (64M at 16M/s: ~4s).
VOL_EXTRA='initial-sync = "skip"
resync-rate = "16M"'
WIN_OFF=$((128 * MiB))
WIN=$((64 * MiB))
NODE_NS[alpha]=$NSA
NODE_NS[beta]=$NSB
NODE_ADDR[alpha]=10.123.0.1:7788
NODE_ADDR[beta]=10.123.0.2:7788

# The delay: netem on alpha's veth if the kernel has it; else every byte
# between alpha and beta goes through delayproxy.py (in alpha's namespace),
# so alpha's file names the proxy as beta's address.
if "${IN_A[@]}" tc qdisc add dev "$VA" root netem delay 1ms 2>/dev/null; then
    "${IN_A[@]}" tc qdisc del dev "$VA" root
    DELAY_MODE=netem
else
    DELAY_MODE=proxy
    echo 0 >"$T/delay_ms"
    "${IN_A[@]}" "$PY" "$MIRROR_DIR/delayproxy.py" 10.123.0.1:7789 10.123.0.2:7788 \
        "$T/delay_ms" "$T/proxy.ready" 2>"$T/proxy.err" &
    BG_PIDS+=($!)
    deadline=$((SECONDS + 10))
    while [ ! -f "$T/proxy.ready" ]; do
        [ $SECONDS -lt $deadline ] || die "delayproxy did not start: $(cat "$T/proxy.err")"
        sleep 0.05
    done
    write_configs() {
        local real=${NODE_ADDR[beta]}
        NODE_ADDR[beta]=10.123.0.1:7789
        write_config "$T/alpha.toml"
        NODE_ADDR[beta]=$real
        write_config "$T/beta.toml"
    }
    NODE_CFG[alpha]=$T/alpha.toml
    NODE_CFG[beta]=$T/beta.toml
fi
log "delay by $DELAY_MODE"
set_delay() { # set_delay RTT-MS (0: none)
    if [ $DELAY_MODE = netem ]; then
        if [ "$1" -gt 0 ]; then
            "${IN_A[@]}" tc qdisc add dev "$VA" root netem delay "${1}ms"
        else
            "${IN_A[@]}" tc qdisc del dev "$VA" root
        fi
    else
        echo $(($1 / 2)) >"$T/delay_ms.tmp" && mv "$T/delay_ms.tmp" "$T/delay_ms"
    fi
}
link_down() { ip -n "$NSA" link set "$VA" down; }
link_up() { ip -n "$NSA" link set "$VA" up; }

setup_pair
start_pair
wait_log alpha "peer 'beta' connected:" 30 >/dev/null || die "alpha never connected to beta across the namespaces"
wait_state alpha synchronized 30 >/dev/null || die "alpha not synchronized"
URI="nbd://${NODE_TCP[alpha]}/$VOL_NAME"   # 127.0.0.1 inside alpha's namespace

# ------------------------------------------------------------ delay --
log_mark alpha
set_delay 50
run_fio "[delay 50ms] randwrite 4k qd32 8M crc32c from alpha's namespace" w "${IN_A[@]}" -- \
    --name=delayed --ioengine=nbd --uri="$URI" --rw=randwrite --bs=4k --iodepth=32 --size=8M \
    --offset=$((512 * MiB)) --verify=crc32c --verify_fatal=1 --randrepeat=1 --randseed=9
clat=$(fio_json_field "$FIO_OUT" 'int(j["write"]["clat_ns"]["mean"] / 1e6)')
if [ -n "$clat" ] && [ "$clat" -ge 40 ]; then
    pass "[delay 50ms] each write waited for the peer (mean completion latency ${clat} ms)"
else
    fail "[delay 50ms] mean write latency ${clat} ms with a 50 ms round trip to the peer: writes not mirrored synchronously?"
fi
set_delay 0
if log_since alpha | grep -qE "replication link|lost"; then
    fail "[delay 50ms] the link was dropped: $(log_since alpha | grep -E 'replication link|lost' | head -n 1)"
else
    pass "[delay 50ms] the link stayed up"
fi
if have_ctl; then
    check_eq "[delay 50ms] alpha still synchronized" synchronized "$(status_get alpha .state)"
fi

# -------------------------------------------------------- partition --
WRITER_PREFIX="${IN_A[*]}" start_writer w "$URI" $WIN_OFF $WIN --qd 16 --seed 5
wait_acks w 1000 60 || die "the writer did not get 1000 writes acknowledged ($(tail -n 2 "$T/w.err"))"

# partition_and_wait LABEL: link down; alpha degraded within the ack-timeout;
# the client keeps writing.
partition_and_wait() {
    local label=$1 t0 st n
    log_mark alpha
    link_down
    t0=$SECONDS
    if st=$(wait_state alpha 'degraded|disconnected' 20); then
        local dt=$((SECONDS - t0))
        if [ $dt -le $((ACK_MS / 1000 + 3)) ]; then
            pass "[$label] alpha goes '$st' ${dt}s after the link went down (ack-timeout ${ACK_MS}ms)"
        else
            fail "[$label] alpha went '$st' only ${dt}s after the link went down (ack-timeout ${ACK_MS}ms)"
        fi
    else
        fail "[$label] alpha not degraded 20s after the link went down"
    fi
    n=$(acks w)
    if wait_acks w $((n + 1000)) 30; then
        pass "[$label] the client keeps writing during the partition ($(($(acks w) - n)) more acknowledged)"
    else
        fail "[$label] writes stopped completing during the partition ($n -> $(acks w))"
    fi
    check_eq "[$label] no write failed" 0 "$(grep -c '^E ' "$T/w.acks")"
}

# heal_and_wait LABEL: link up; a bitmap resync; synchronized.
heal_and_wait() {
    local label=$1 t0
    log_mark alpha
    link_up
    t0=$SECONDS
    if wait_log alpha "peer 'beta' connected:" 60 >/dev/null; then
        pass "[$label] reconnected $((SECONDS - t0))s after the link came back: $(plan_of alpha)"
        check_eq "[$label] the reconnect is a bitmap resync" "bitmap resync" "$(plan_of alpha | sed 's/ [0-9]*$//')"
    else
        fail "[$label] no reconnect within 60s of the link coming back"
        return 1
    fi
}

partition_and_wait "partition"
heal_and_wait "partition healed" &&
    if wait_state alpha synchronized 120 >/dev/null; then
        pass "[partition healed] synchronized again"
        check_resync_rate "[partition healed] resync-rate honoured" alpha \
            "$(plan_of alpha | grep -oE '[0-9]+$')" $((16 * MiB))
    else
        fail "[partition healed] not synchronized 120s after the reconnect"
        log_since alpha | grep -v debug | tail -n 4 | sed 's/^/    | /'
    fi

# ------------------------------------------- resync interrupted --
partition_and_wait "second partition"
heal_and_wait "second partition healed" || true
if wait_log alpha "resync started" 20 >/dev/null; then
    # Let it copy some, then cut the link mid-resync.
    if have_ctl; then
        deadline=$((SECONDS + 10))
        while [ "$(status_get beta .resynced_bytes_total)" -lt $((4 * MiB)) ] && [ $SECONDS -lt $deadline ]; do
            sleep 0.1
        done
    else
        sleep 1   # not readiness: lets the rate-limited resync copy some MiB
    fi
    if log_since alpha | grep -q "resync complete"; then
        fail "[resync interrupted] the resync finished before it could be interrupted (rate limit too high?)"
    fi
    partition_and_wait "partition during the resync"
    heal_and_wait "resync interrupted, healed" || true
    if wait_state alpha synchronized 120 >/dev/null; then
        pass "[resync interrupted, healed] the resync completes: synchronized"
    else
        fail "[resync interrupted, healed] not synchronized 120s after the reconnect"
        log_since alpha | grep -v debug | tail -n 4 | sed 's/^/    | /'
        if have_ctl; then node_status alpha | sed 's/^/    | /'; fi
    fi
else
    fail "[second partition healed] no resync started"
fi

# ------------------------------------------------------------ end --
n=$(acks w)
wait_acks w $((n + 500)) 30 || fail "writes stalled after the partitions"
finish_writer w "$(nbd_unix_uri alpha)" $WIN_OFF $WIN $ACK_MS
if have_ctl; then
    check_eq "alpha's status at the end: synchronized" synchronized "$(status_get alpha .state)"
    check_eq "beta's status at the end: its copy is consistent" true "$(status_get beta .consistent)"
fi
stop_node alpha
stop_node beta
check_identical "after the partitions"
verify_writes "beta's image holds every acknowledged write" w --image "${NODE_IMG[beta]}" $WIN_OFF $WIN

pair_finish
