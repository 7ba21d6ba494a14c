# shellcheck shell=bash
# Helpers for the fault harness (tests/faults): a pair of real mirrord nodes
# from ../mirror/pairlib.sh, plus seeded random timing, link faults through
# two user-space proxies, injected disk faults, and counting checks whose
# totals become one row of the fault table.
#
#   . "$(dirname "$0")/faultlib.sh"      (after SEED is set)
#   rand N 100 900                        N = a number in [100, 900] from the seed
#   use_proxies; link_fault "25 loss=5"   traffic alpha<->beta through proxies
#   add_writer w1 URI OFF WIN [ARGS]      a logged writer, verified at the end
#   converge_and_check                    synchronized, stopped, identical,
#                                         every writer's acks on both images
. "$(dirname "${BASH_SOURCE[0]}")/../mirror/pairlib.sh"

FAULTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_RNG=$((SEED * 2654435761 + 1))     # the run's own generator (an LCG), from the seed
CHECKED=0                           # acknowledged writes checked (per copy)
LOST=0                              # acknowledged writes missing (must be 0)
CONVERGED=no
WRITERS=()                          # "NAME OFF WIN" of every writer of the run
PROXY_MODE=""

# rand VAR LO HI: VAR = an integer in [LO, HI] from the run's generator
# (not in a subshell: $(...) would not advance it).
rand() {
    local -n _out=$1
    _RNG=$((_RNG * 6364136223846793005 + 1442695040888963407))
    _out=$(($2 + ((_RNG >> 33) & 0x7fffffff) % ($3 - $2 + 1)))
}
# rand_sleep LO_MS HI_MS: the random timing of a fault (the point of the
# harness, not a wait for readiness).
rand_sleep() {
    local ms
    rand ms "$1" "$2"
    log "waiting ${ms} ms (seeded)"
    sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
}

ctl() { local n=$1; shift; timeout 60 "$MIRRORCTL" --socket "${NODE_CTL[$n]}" "$@"; }

# --------------------------------------------------------------- writers --

# add_writer NAME URI OFF WIN [nbdtool write args]: start_writer, remembered
# for the final check; its data seed comes from the run's seed.
add_writer() {
    local name=$1 uri=$2 off=$3 win=$4; shift 4
    WRITERS+=("$name $off $win")
    start_writer "$name" "$uri" "$off" "$win" --seed $(((SEED + ${#WRITERS[@]}) % 4000000000)) "$@"
    WRITER_OF[$name]=$WRITER_PID
    # Ready when connected: it writes its log's first line then.
    local deadline=$((SECONDS + 20))
    until [ -s "$T/$name.acks" ]; do
        kill -0 "$WRITER_PID" 2>/dev/null || die "writer $name exited at once: $(tail -n 2 "$T/$name.err")"
        [ $SECONDS -lt $deadline ] || die "writer $name did not connect within 20s"
        sleep 0.05
    done
}
declare -A WRITER_OF

# writer_gone NAME TIMEOUT: the writer ended by itself (its server died).
writer_gone() {
    local name=$1 deadline=$((SECONDS + $2)) p=${WRITER_OF[$1]}
    while kill -0 "$p" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
        fail "writer $name still running $2s after its server died"
        kill -KILL "$p"
    fi
    wait "$p" 2>/dev/null
}

# end_writer NAME: stop a running writer (no-op if it already ended).
end_writer() {
    local p=${WRITER_OF[$1]}
    if kill -0 "$p" 2>/dev/null; then
        WRITER_PID=$p
        stop_writer "$1" 90
    fi
}

# count_verify LABEL NAME --image|--uri SRC OFF WIN [VERIFY ARGS]:
# verify_writes, and add the writer's acknowledged writes to CHECKED and its
# bad blocks to LOST.
count_verify() {
    local label=$1 name=$2 how=$3 src=$4 off=$5 win=$6 out rc n bad
    shift 6
    out=$("${NBDTOOL[@]}" verify "$how" "$src" --log "$T/$name.acks" --offset "$off" --window "$win" "$@" 2>&1)
    rc=$?
    n=$(sed -nE 's/.* ([0-9]+) acknowledged writes,.*/\1/p' <<<"$out" | head -n 1)
    bad=$(sed -nE 's/.* ([0-9]+) bad$/\1/p' <<<"$out" | head -n 1)
    CHECKED=$((CHECKED + ${n:-0}))
    if [ $rc -eq 0 ]; then
        pass "$label: ${n:-0} acknowledged writes present"
    else
        LOST=$((LOST + ${bad:-1}))
        fail "$label: ${bad:-?} blocks lost or wrong (verify exit $rc)"
        head -n 6 <<<"$out" | sed 's/^/    | /'
    fi
}

# converge_and_check: the recovery ends; both nodes run. Every writer is
# stopped, the pair synchronizes, both stop cleanly, the images are
# identical and hold every acknowledged write of every writer.
converge_and_check() {
    local w name off win
    for w in "${WRITERS[@]}"; do end_writer "${w%% *}"; done
    if wait_state alpha synchronized 180 >/dev/null; then
        pass "synchronized after recovery"
    else
        fail "not synchronized 180s after recovery (alpha: $(status_get alpha .state), beta: $(status_get beta .state))"
    fi
    nbd_flush alpha || fail "client FLUSH through alpha failed"
    stop_node alpha
    stop_node beta
    check_identical "copies after recovery" && CONVERGED=yes
    for w in "${WRITERS[@]}"; do
        read -r name off win <<<"$w"
        count_verify "alpha's image ($name)" "$name" --image "${NODE_IMG[alpha]}" "$off" "$win"
        count_verify "beta's image ($name)" "$name" --image "${NODE_IMG[beta]}" "$off" "$win"
    done
}

# ----------------------------------------------------------- link faults --

# use_proxies: alpha reaches beta through one proxy and beta reaches alpha
# through another (netem is not in every kernel: docs/reliability.md), each
# controlled by the same file. Call after pick_ports, before start_pair.
use_proxies() {
    [ -n "${NODE_ADDR[alpha]:-}" ] || pick_ports
    LINK_CTL=$T/link.ctl
    : >"$LINK_CTL"
    local n other
    for n in alpha beta; do
        other=$([ $n = alpha ] && echo beta || echo alpha)
        "$PY" "$MIRROR_DIR/delayproxy.py" 127.0.0.1:0 "${NODE_ADDR[$other]}" "$LINK_CTL" \
            "$T/proxy-$n.ready" 2>"$T/proxy-$n.err" &
        BG_PIDS+=($!)
        disown $!   # killed at exit; no job notice
    done
    for n in alpha beta; do
        local deadline=$((SECONDS + 10))
        while [ ! -s "$T/proxy-$n.ready" ]; do
            [ $SECONDS -lt $deadline ] || die "proxy for $n did not start: $(cat "$T/proxy-$n.err")"
            sleep 0.05
        done
    done
    PROXY_TO[beta]=$(cat "$T/proxy-alpha.ready")    # alpha's way to beta
    PROXY_TO[alpha]=$(cat "$T/proxy-beta.ready")    # beta's way to alpha
    NODE_CFG[alpha]=$T/alpha.toml
    NODE_CFG[beta]=$T/beta.toml
    write_configs() {
        local ra=${NODE_ADDR[alpha]} rb=${NODE_ADDR[beta]}
        NODE_ADDR[beta]=${PROXY_TO[beta]}; write_config "$T/alpha.toml"; NODE_ADDR[beta]=$rb
        NODE_ADDR[alpha]=${PROXY_TO[alpha]}; write_config "$T/beta.toml"; NODE_ADDR[alpha]=$ra
    }
    PROXY_MODE=proxy
}
declare -A PROXY_TO

# link_fault "DELAY_MS [loss=P] [down]": what the proxies do from now on
# ("" heals everything). The seed makes the proxies' losses reproducible.
link_fault() {
    echo "$1 seed=$SEED" >"$LINK_CTL.tmp" && mv "$LINK_CTL.tmp" "$LINK_CTL"
    log "link: ${1:-healthy}"
}

# ----------------------------------------------------------- disk faults --


# power_loss NODE: SIGUSR2 (MIRRORD_FAULTS=power-loss): the node drops its
# unsynced writes and dies; waits for it.
power_loss() {
    local node=$1 p=${NODE_PID[$1]}
    kill -USR2 "$p"
    local deadline=$((SECONDS + 20))
    while node_alive "$node" && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
    node_alive "$node" && die "$node survived its simulated power loss"
    wait "$p" 2>/dev/null
    NODE_PID[$node]=""
    wait_dead_log "$node"
}

# wait_dead_log NODE: NODE's log says it simulated a power loss.
wait_dead_log() {
    local line
    if line=$(grep -m1 "simulated power loss" "${NODE_LOG[$1]}"); then
        pass "$1: ${line#mirrord: }"
    else
        fail "$1 died without the power-loss line in its log"
    fi
}

# tmpfs_for NODE MiB: NODE's backing file moves to a tmpfs of that size
# (a full filesystem: ENOSPC). The image stays sparse and VOL_SIZE long.
tmpfs_for() {
    local node=$1 mb=$2 dir=$T/fs-$1
    mkdir -p "$dir"
    mount -t tmpfs -o "size=${mb}m" tmpfs "$dir" 2>/dev/null || skip "cannot mount a tmpfs (needs root)"
    CLEANUP_HOOKS=("umount -l $dir" "${CLEANUP_HOOKS[@]}")
    NODE_IMG[$node]=$dir/$node.img
}

# in_range_count KIND OFF LEN NAME: writer NAME's log lines of KIND (A or E)
# for blocks starting inside [OFF, OFF+LEN).
in_range_count() {
    awk -v k="$1" -v lo="$2" -v hi="$(($2 + $3))" '$1 == k && $3 >= lo && $3 < hi { n++ } END { print n + 0 }' "$T/$4.acks"
}

# log_line_ms LINE: a mirrord log line's time as Unix ms (as the writers'
# acknowledgement times). Lines carry only the local time of day: today's,
# or yesterday's if that would be in the future (a run across midnight).
log_line_ms() {
    local ms day
    ms=$(log_ms "$1")
    day=$(($(date -d "today 00:00" +%s) * 1000))
    [ $((day + ms)) -le $(($(date +%s%3N) + 1000)) ] || day=$((day - 86400000))
    echo $((day + ms))
}
