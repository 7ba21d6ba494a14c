# shellcheck shell=bash
# Helpers for the mirror tests: a pair of real mirrord nodes (alpha, beta)
# serving one volume, started from a volume file in the test's temp dir.
# Built on ../integration/lib.sh (T, pass/fail/check/check_eq/die/skip,
# require, finish), which this file sources.
#
# Usage (from a test script):
#   . "$(dirname "$0")/pairlib.sh"
#   setup_pair                 # ports, images, vol.toml (VOL_* variables below)
#   start_pair                 # both nodes, retried on EADDRINUSE
#   wait_state alpha synchronized 60
#   ... nbd_uri alpha, nbd_unix_uri beta, kill_node beta, start_node beta ...
#   pair_finish                # stops live nodes (asserting exit 0), prints the summary
#
# Status: with mirrorctl (MIRRORCTL, or a mirrorctl beside $MIRRORD) wait_state
# polls `mirrorctl --socket CTL status --json`; without it, it falls back to
# the node's log lines after the last log_mark of that node, so a test marks
# the log before the action whose effect it waits for.
#
# Environment (besides lib.sh's): MIRRORCTL, KEEP_TMP=1, MIRRORD_LOG_LEVEL.

. "$(dirname "${BASH_SOURCE[0]}")/../integration/lib.sh"

MIRROR_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3                 # Debian's python3, which has the nbd module
NBDTOOL=("$PY" "$MIRROR_DIR/nbdtool.py")
KiB=1024
MiB=$((1024 * 1024))
GiB=$((1024 * MiB))
NODES=(alpha beta)

# Volume file contents (write_config reads these; a test may change them).
VOL_NAME=db
VOL_SIZE=256M
VOL_SECRET=0123456789abcdef-secret
VOL_PRIMARY=alpha
VOL_ACK=2s
VOL_EXTRA=""                        # more lines for [volume], e.g. 'initial-sync = "skip"'

declare -A NODE_PID NODE_LOG NODE_READY NODE_CFG NODE_NS NODE_STARTS NODE_MARK
declare -A NODE_TCP NODE_SOCK NODE_ADDR NODE_NBD NODE_IMG NODE_META NODE_CTL NODE_EXIT NODE_EXTRA
BG_PIDS=()          # helper processes (writers, proxies) killed at exit
CLEANUP_HOOKS=()    # commands run at exit after the processes are gone

for _n in "${NODES[@]}"; do
    NODE_IMG[$_n]="$T/$_n.img"
    NODE_META[$_n]="$T/$_n.meta"
    NODE_CTL[$_n]="$T/$_n.ctl"
    NODE_CFG[$_n]="$T/vol.toml"
    NODE_NBD[$_n]="\"127.0.0.1:0\", \"unix:$T/$_n.nbd\""
    NODE_EXTRA[$_n]=""              # more lines for this node's [[node]] table
    NODE_STARTS[$_n]=0
    NODE_MARK[$_n]=0
done
unset _n

# ----------------------------------------------------------- mirrorctl --

MIRRORCTL=${MIRRORCTL:-}
if [ -z "$MIRRORCTL" ] && [ -x "$(dirname "$MIRRORD")/mirrorctl" ]; then
    MIRRORCTL=$(dirname "$MIRRORD")/mirrorctl
fi
have_ctl() { [ -n "$MIRRORCTL" ] && [ -x "$MIRRORCTL" ]; }
# ctl NODE ARGS...: mirrorctl on NODE's control socket, its output on stdout.
ctl() { local n=$1; shift; timeout 120 "$MIRRORCTL" --socket "${NODE_CTL[$n]}" "$@" 2>&1; }
# refused_ctl LABEL NODE ERE CMD...: the command fails (exit 1), says ERE.
refused_ctl() {
    local label=$1 node=$2 re=$3 out rc; shift 3
    out=$(ctl "$node" "$@"); rc=$?
    if [ $rc -eq 1 ] && grep -qE -- "$re" <<<"$out"; then
        pass "$label: refused: $out"
    else
        fail "$label: expected a refusal matching /$re/ (exit 1), got exit $rc: $out"
    fi
}

# node_status NODE: mirrorctl's status JSON (fails without mirrorctl or if
# the node does not answer).
node_status() {
    have_ctl || return 1
    timeout 10 "$MIRRORCTL" --socket "${NODE_CTL[$1]}" status --json 2>/dev/null
}

# status_get NODE JQ-EXPR: one field of the status (raw), e.g. '.state'.
status_get() {
    local j
    j=$(node_status "$1") || return 1
    jq -r "$2" <<<"$j"
}

# --------------------------------------------------------------- logs --

node_log() { echo "${NODE_LOG[$1]:-/dev/null}"; }

# log_mark NODE: later log_since/wait_log/wait_state (log fallback) only
# look at lines logged from now on.
log_mark() {
    local f=${NODE_LOG[$1]:-}
    if [ -n "$f" ] && [ -f "$f" ]; then NODE_MARK[$1]=$(wc -l <"$f"); else NODE_MARK[$1]=0; fi
}

log_since() {
    local f=${NODE_LOG[$1]:-}
    [ -n "$f" ] && [ -f "$f" ] || return 0
    tail -n +$((NODE_MARK[$1] + 1)) "$f"
}

# log_all NODE: every log of NODE in this test (all its starts).
log_all() { cat "$T/$1".*.log 2>/dev/null; }

# link_drops NODE PEER: NODE's log lines since its mark that say it lost the link to PEER.
link_drops() { log_since "$1" | grep -E "replication link to '$2' lost" || true; }

# wait_log NODE ERE TIMEOUT [COUNT]: wait until COUNT (default 1) lines after
# the mark match; prints the last matching line. Fails on timeout.
wait_log() {
    local node=$1 re=$2 timeout=$3 count=${4:-1}
    local deadline=$((SECONDS + timeout)) n
    while :; do
        n=$(log_since "$node" | grep -cE -- "$re")
        if [ "$n" -ge "$count" ]; then
            log_since "$node" | grep -E -- "$re" | tail -n 1
            return 0
        fi
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

# What the log shows, after the mark, for a state (the fallback of wait_state
# until mirrorctl exists). Primary and secondary lines differ.
_state_re() {
    case "$1" in
        synchronized) echo "connected: (in sync|no sync)|resync complete" ;;
        resyncing) echo "resync started|connected: (full sync|bitmap resync)" ;;
        degraded|disconnected) echo "replication link to '[^']*' lost|replication link: " ;;
        split-brain) echo "split brain" ;;
        *) echo "__no_log_line_for_state_$1__" ;;
    esac
}

# wait_state NODE STATE TIMEOUT: STATE is an ERE over mirrorctl's "state"
# ("synchronized", "degraded|disconnected"). Prints the state reached.
wait_state() {
    local node=$1 want=$2 timeout=$3
    local deadline=$((SECONDS + timeout)) got=""
    if have_ctl; then
        while :; do
            got=$(status_get "$node" .state 2>/dev/null)
            if [[ "$got" =~ ^($want)$ ]]; then echo "$got"; return 0; fi
            [ $SECONDS -lt $deadline ] || break
            sleep 0.1
        done
        log "$node: state '$got' after ${timeout}s, wanted '$want'"
        return 1
    fi
    local re="" s
    IFS='|' read -ra _states <<<"$want"
    for s in "${_states[@]}"; do re="${re:+$re|}$(_state_re "$s")"; done
    if wait_log "$node" "$re" "$timeout" >/dev/null; then echo "$want"; return 0; fi
    log "$node: no log line for state '$want' within ${timeout}s (log fallback: no mirrorctl)"
    return 1
}

# plan_of NODE: "KIND BYTES" from the primary's last "peer '...' connected:
# KIND (N bytes to copy)" line after the mark, e.g. "bitmap resync 1048576".
plan_of() {
    log_since "$1" | sed -nE "s/.*peer '[^']*' connected: (.*) \(([0-9]+) bytes to copy\).*/\1 \2/p" | tail -n 1
}

# log_ms "HH:MM:SS.mmm ...": milliseconds since midnight of a log line.
log_ms() {
    local t=${1%% *} h m sec ms
    IFS=':.' read -r h m sec ms <<<"$t"
    echo $(((10#$h * 3600 + 10#$m * 60 + 10#$sec) * 1000 + 10#$ms))
}

# check_resync_rate LABEL NODE BYTES RATE: the last resync logged by NODE
# (after its mark), from "resync started" to "resync complete", copied BYTES
# no faster than RATE bytes/s allows (with one second's worth of burst).
check_resync_rate() {
    local label=$1 node=$2 bytes=$3 rate=$4 s e ms min
    s=$(log_since "$node" | grep 'resync started' | tail -n 1)
    e=$(log_since "$node" | grep 'resync complete' | tail -n 1)
    if [ -z "$s" ] || [ -z "$e" ]; then
        fail "$label: no 'resync started'/'resync complete' lines to time"
        return 1
    fi
    ms=$(($(log_ms "$e") - $(log_ms "$s")))
    min=$(((bytes - rate) * 1000 / rate))
    [ $min -lt 0 ] && min=0
    if [ $ms -ge $((min * 9 / 10)) ]; then
        pass "$label: $bytes bytes resynced in ${ms} ms at resync-rate $rate B/s (at least ${min} ms expected)"
    else
        fail "$label: $bytes bytes resynced in ${ms} ms: $((bytes * 1000 / (ms > 0 ? ms : 1) / MiB)) MiB/s, but resync-rate is $((rate / MiB)) MiB/s (expected >= ${min} ms)"
        return 1
    fi
}

# ----------------------------------------------------------- config --

size_bytes() {
    local s=$1 n=${1%[KMGTkmgt]}
    case "$s" in
        *[Kk]) echo $((n * KiB)) ;; *[Mm]) echo $((n * MiB)) ;;
        *[Gg]) echo $((n * GiB)) ;; *[Tt]) echo $((n * 1024 * GiB)) ;; *) echo "$s" ;;
    esac
}

# pick_ports: two replication ports, derived from the pid, free right now.
pick_ports() {
    local try base
    for try in $(seq 1 50); do
        base=$((20000 + ((($$ * 131) + RANDOM + try * 7919) % 20000) * 2))
        if "$PY" - "$base" <<'EOF'
import socket, sys
b = int(sys.argv[1])
for p in (b, b + 1):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
EOF
        then
            NODE_ADDR[alpha]=127.0.0.1:$base
            NODE_ADDR[beta]=127.0.0.1:$((base + 1))
            return 0
        fi
    done
    die "no free port pair found"
}

# write_config FILE: the volume file from VOL_* and the NODE_* arrays.
# Callers override for one file: VOL_SECRET=other write_config "$T/beta.toml"
write_config() {
    local f=$1 n
    [ "${MIRROR_TLS:-0}" = 1 ] && _tls_pki
    {
        printf '[volume]\nname = "%s"\nsize = "%s"\nsecret = "%s"\nprimary = "%s"\nack-timeout = "%s"\n' \
            "$VOL_NAME" "$VOL_SIZE" "$VOL_SECRET" "$VOL_PRIMARY" "$VOL_ACK"
        [ -n "$VOL_EXTRA" ] && printf '%s\n' "$VOL_EXTRA"
        [ "${MIRROR_TLS:-0}" = 1 ] && printf 'tls = true\ntls-ca = "%s"\n' "$T/tls-pki/ca.pem"
        for n in "${NODES[@]}"; do
            printf '\n[[node]]\nname = "%s"\naddress = "%s"\nbacking = "%s"\nmetadata = "%s"\nnbd-listen = [%s]\ncontrol = "%s"\n' \
                "$n" "${NODE_ADDR[$n]}" "${NODE_IMG[$n]}" "${NODE_META[$n]}" "${NODE_NBD[$n]}" "${NODE_CTL[$n]}"
            [ -n "${NODE_EXTRA[$n]}" ] && printf '%s\n' "${NODE_EXTRA[$n]}"
            [ "${MIRROR_TLS:-0}" = 1 ] &&
                printf 'tls-cert = "%s"\ntls-key = "%s"\n' "$T/tls-pki/$n.pem" "$T/tls-pki/$n.key"
        done
    } >"$f"
    chmod 600 "$f"
}

# MIRROR_TLS=1: every volume file of the test turns the link's TLS on, with
# a CA and one certificate per node made once in $T/tls-pki (a test that
# runs over plain TCP runs over TLS unchanged; not for tests that set TLS
# keys themselves).
_tls_pki() {
    [ -s "$T/tls-pki/ca.pem" ] && return 0
    local PKI=$T/tls-pki n
    mkdir -p "$PKI"
    . "$(dirname "${BASH_SOURCE[0]}")/../integration/pki.sh"
    mkca ca "mirrord test CA"
    for n in "${NODES[@]}"; do mkcert "$n" "$n" ca 2; done
}

# write_configs: (re)writes every node's file. A test that gives a node its
# own file redefines this (it is called again when ports are re-picked).
write_configs() { write_config "$T/vol.toml"; }

# write_proxied_configs: alpha's file names the address in $T/proxy.ready
# (a delayproxy.py in front of beta) as beta's; beta's file its own. A test
# that proxies alpha's dial sets write_configs() { write_proxied_configs; }
# and NODE_CFG[alpha/beta] to $T/alpha.toml and $T/beta.toml.
write_proxied_configs() {
    local real=${NODE_ADDR[beta]}
    NODE_ADDR[beta]=$(cat "$T/proxy.ready")
    write_config "$T/alpha.toml"
    NODE_ADDR[beta]=$real
    write_config "$T/beta.toml"
}

# proxied_beta CONTROL_FILE: alpha (the dialer) reaches beta through a
# delayproxy.py driven by CONTROL_FILE (emptied: no fault yet); call before
# setup_pair. Picks the ports; the proxy is killed at exit.
proxied_beta() {
    write_configs() { write_proxied_configs; }
    NODE_CFG[alpha]=$T/alpha.toml
    NODE_CFG[beta]=$T/beta.toml
    : >"$1"
    pick_ports
    "$PY" "$MIRROR_DIR/delayproxy.py" 127.0.0.1:0 "${NODE_ADDR[beta]}" "$1" \
        "$T/proxy.ready" 2>"$T/proxy.err" &
    CLEANUP_HOOKS+=("kill $!")
    wait_for 10 test -s "$T/proxy.ready" || die "delayproxy did not start: $(cat "$T/proxy.err")"
}

# synchronized_both: both nodes' status says synchronized.
synchronized_both() {
    [ "$(status_get alpha .state)" = synchronized ] && [ "$(status_get beta .state)" = synchronized ]
}

# node_resources NODE: "FDS THREADS RSS_KB" of NODE's mirrord; THREADS
# leaves out the kernel's io_uring workers (iou-wrk-*: started on demand for
# blocking requests, gone once idle).
node_resources() {
    local p=${NODE_PID[$1]}
    echo "$(ls "/proc/$p/fd" | wc -l) $(cat "/proc/$p/task/"*/comm 2>/dev/null | grep -vc '^iou-') $(awk '/^VmRSS/ {print $2}' "/proc/$p/status")"
}

# check_no_leak LABEL NODE BEFORE: NODE's descriptors and threads are what
# node_resources said BEFORE, its RSS grew by less than 64 MiB.
check_no_leak() {
    local label=$1 node=$2 b f t r
    read -r f t r <<<"$3"
    read -r -a b <<<"$(node_resources "$node")"
    log "$label: $node had $f fds, $t threads, $((r / 1024)) MiB; now ${b[0]}, ${b[1]}, $((b[2] / 1024)) MiB"
    check_eq "$label: $node's descriptors" "$f" "${b[0]}"
    check_eq "$label: $node's threads" "$t" "${b[1]}"
    if [ $((b[2] - r)) -lt $((64 * 1024)) ]; then
        pass "$label: $node's memory grew by less than 64 MiB"
    else
        fail "$label: $node's memory grew by $(((b[2] - r) / 1024)) MiB"
    fi
}

# start_status_monitor FILE NODE...: each NODE's `status --json` (with the
# node's name and the time, t) every 0.2 s, one line each, appended to FILE
# until $FILE.stop exists; an unanswered request is a line with ctl_failed.
# Its pid in MONITOR_PID.
start_status_monitor() {
    local f=$1; shift
    rm -f "$f.stop"
    (
        local n j
        while [ ! -f "$f.stop" ]; do
            for n in "$@"; do
                if j=$(timeout 10 "$MIRRORCTL" --socket "${NODE_CTL[$n]}" status --json 2>&1); then
                    jq -c --arg t "$(date +%T.%N)" '. + {t: $t}' <<<"$j" 2>/dev/null
                else
                    jq -nc --arg n "$n" --arg e "$j" '{node: $n, ctl_failed: $e}'
                fi
            done
            sleep 0.2
        done >>"$f"
    ) &
    MONITOR_PID=$!
    BG_PIDS+=("$MONITOR_PID")
}

# check_status_truth LABEL FILE: stop the monitor writing FILE; every sample
# was answered, and none says "synchronized" with the link not connected or
# regions out of sync, or has a negative or impossible byte count.
check_status_truth() {
    local label=$1 f=$2 bad
    touch "$f.stop"
    wait "$MONITOR_PID" 2>/dev/null
    bad=$(jq -c 'select(.ctl_failed == null) | select(
            (.state == "synchronized" and (.link != "connected" or .out_of_sync_bytes != 0))
            or .out_of_sync_bytes < 0 or .resync.done_bytes < 0 or .resync.total_bytes < 0
            or .resync.done_bytes > .resync.total_bytes)
          | {t, node, state, link, out_of_sync_bytes, resync}' "$f" | head -n 5)
    if [ -z "$bad" ]; then
        pass "$label: $(grep -c . "$f") status samples: synchronized only when connected with nothing out of sync, no negative count"
    else
        fail "$label: status samples that are not the truth: $bad"
    fi
    bad=$(jq -c 'select(.ctl_failed != null)' "$f" | head -n 3)
    [ -z "$bad" ] && pass "$label: every status request answered" || fail "$label: unanswered status requests: $bad"
}

# check_no_divergence_logged: neither node's logs report unrelated data or a
# split brain (the generations moved apart).
check_no_divergence_logged() {
    if { log_all alpha; log_all beta; } | grep -qE "unrelated data|split brain"; then
        fail "a log reports unrelated data or a split brain"
    else
        pass "no unrelated data, no split brain"
    fi
}

# setup_pair: ports, sparse images of VOL_SIZE (unless they exist), configs,
# no metadata (a new pair).
setup_pair() {
    local n
    [ -n "${NODE_ADDR[alpha]:-}" ] || pick_ports
    for n in "${NODES[@]}"; do
        [ -e "${NODE_IMG[$n]}" ] || truncate -s "$(size_bytes "$VOL_SIZE")" "${NODE_IMG[$n]}"
    done
    write_configs
}

# netns_pair NS_A NS_B VETH_A VETH_B NET: two network namespaces joined by a
# veth pair, NET.1/24 on NS_A's end and NET.2/24 on NS_B's, both up; removed
# at exit. Skips the test where namespaces or veth are not permitted.
netns_pair() {
    local a=$1 b=$2 va=$3 vb=$4 net=$5 ns
    ip netns add "$a" 2>/dev/null || skip "ip netns add is not permitted here"
    CLEANUP_HOOKS+=("ip netns del $a")
    ip netns add "$b" || die "ip netns add $b"
    CLEANUP_HOOKS+=("ip netns del $b")
    ip link add "$va" netns "$a" type veth peer name "$vb" netns "$b" || skip "cannot create a veth pair"
    ip -n "$a" addr add "$net.1/24" dev "$va"
    ip -n "$b" addr add "$net.2/24" dev "$vb"
    for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
    ip -n "$a" link set "$va" up
    ip -n "$b" link set "$vb" up
}

# netns_nodes PREFIX NET: alpha and beta in namespaces PREFIX-a-PID and
# PREFIX-b-PID (those a killed run of this test left behind are removed first),
# joined by a veth pair: alpha at NET.1:7788, beta at NET.2:7788. Sets NSA,
# NSB, VA (alpha's veth: down is a cut), VB (beta's), IN_A and IN_B
# (command prefixes).
netns_nodes() {
    local prefix=$1 net=$2 ns
    for ns in $(ip netns list 2>/dev/null | grep -oE "^$prefix-[ab]-[0-9]+"); do
        kill -0 "${ns##*-}" 2>/dev/null || ip netns del "$ns" 2>/dev/null
    done
    NSA=$prefix-a-$$ NSB=$prefix-b-$$ VA=${prefix}a$$ VB=${prefix}b$$
    netns_pair "$NSA" "$NSB" "$VA" "$VB" "$net"
    IN_A=(ip netns exec "$NSA")
    IN_B=(ip netns exec "$NSB")
    NODE_NS[alpha]=$NSA
    NODE_NS[beta]=$NSB
    NODE_ADDR[alpha]=$net.1:7788
    NODE_ADDR[beta]=$net.2:7788
}

# netns_cut a|b|both: after netns_nodes, nothing leaves alpha's (a), beta's
# (b) or either veth end: a tbf qdisc that passes nothing (no netem nor
# iptables here). One way only, the other direction still carries packets.
netns_cut() {
    [ "$1" = b ] || ip netns exec "$NSA" tc qdisc replace dev "$VA" root tbf rate 8bit burst 100 limit 100
    [ "$1" = a ] || ip netns exec "$NSB" tc qdisc replace dev "$VB" root tbf rate 8bit burst 100 limit 100
}
# netns_heal: both directions carry packets again (no qdisc on either end).
netns_heal() {
    ip netns exec "$NSA" tc qdisc del dev "$VA" root 2>/dev/null
    ip netns exec "$NSB" tc qdisc del dev "$VB" root 2>/dev/null
    true
}

# ------------------------------------------------------------- nodes --

node_alive() {
    local p=${NODE_PID[$1]:-}
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null && [ "$(ps -o stat= -p "$p" 2>/dev/null | cut -c1)" != Z ]
}

# wait_stopped NODE SECS: NODE's mirrord is stopped (SIGSTOP, or stopped
# itself: MIRRORD_FAULTS=stop-on-resize) within SECS seconds.
wait_stopped() {
    local p=${NODE_PID[$1]:-} deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        [ -n "$p" ] && [ "$(ps -o stat= -p "$p" 2>/dev/null | cut -c1)" = T ] && return 0
        sleep 0.05
    done
    return 1
}

# node_listening NODE: a listener of NODE is open, as NODE's network namespace
# sees it: its replication address, its NBD unix socket or its control socket
# (its NBD TCP port is a new one at every start).
node_listening() {
    local out a
    if [ -n "${NODE_NS[$1]:-}" ]; then
        out=$(ip netns exec "${NODE_NS[$1]}" ss -Hlnxt 2>/dev/null)
    else
        out=$(ss -Hlnxt 2>/dev/null)
    fi
    for a in "${NODE_ADDR[$1]:-}" "${NODE_SOCK[$1]:-}" "${NODE_CTL[$1]:-}"; do
        [ -n "$a" ] && grep -qF " $a " <<<"$out" && return 0
    done
    return 1
}

# listeners_closed NODE: wait (5 s at most) until NODE's dead process's
# listeners are closed. The kernel tears a dead process's io_uring down
# asynchronously, and its listening sockets with it, after the process was
# reaped: a start within those milliseconds would be refused ("another server
# is listening", EADDRINUSE).
listeners_closed() {
    local i
    for i in $(seq 100); do
        node_listening "$1" || return 0
        sleep 0.05
    done
    log "$1: a listener of its previous process is still open after 5 s"
}

# start_node NODE [MIRRORD-ARGS...]: start NODE (in NODE_NS[NODE] if set),
# wait for its ready file, parse it into NODE_TCP (host:port of the first
# tcp listener) and NODE_SOCK (first unix socket). Returns 1 if it exited
# first (status in NODE_EXIT), 2 if that was EADDRINUSE. Never dies. A
# restart (after a crash, a kill or a stop) first waits until the previous
# process's listeners are closed.
start_node() {
    local node=$1; shift
    if [ "${NODE_STARTS[$node]}" -gt 0 ] && ! node_alive "$node"; then listeners_closed "$node"; fi
    local n=$((NODE_STARTS[$node] + 1))
    NODE_STARTS[$node]=$n
    local logf="$T/$node.$n.log" ready="$T/$node.$n.ready"
    NODE_LOG[$node]=$logf
    NODE_READY[$node]=$ready
    NODE_MARK[$node]=0
    NODE_TCP[$node]=""; NODE_SOCK[$node]=""; NODE_EXIT[$node]=""
    local cmd=("$MIRRORD" --config "${NODE_CFG[$node]}" --node "$node" --ready-file "$ready"
               --log-level "${MIRRORD_LOG_LEVEL:-debug}" "$@")
    [ -n "${NODE_NS[$node]:-}" ] && cmd=(ip netns exec "${NODE_NS[$node]}" "${cmd[@]}")
    log "start $node: ${cmd[*]}"
    "${cmd[@]}" >"$logf" 2>&1 </dev/null &
    NODE_PID[$node]=$!
    local deadline=$((SECONDS + ${READY_TIMEOUT:-20}))
    while [ ! -s "$ready" ]; do
        if ! kill -0 "${NODE_PID[$node]}" 2>/dev/null; then
            wait "${NODE_PID[$node]}"; NODE_EXIT[$node]=$?
            NODE_PID[$node]=""
            log "$node exited (status ${NODE_EXIT[$node]}) before it was ready:"
            tail -n 5 "$logf" | sed 's/^/    | /' >&2
            grep -q 'Address already in use' "$logf" && return 2
            return 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            log "$node did not write its ready file within ${READY_TIMEOUT:-20}s"
            return 1
        fi
        sleep 0.05
    done
    local kind addr
    while read -r kind addr; do
        case "$kind" in
            tcp) [ -n "${NODE_TCP[$node]}" ] || NODE_TCP[$node]=$addr ;;
            unix) [ -n "${NODE_SOCK[$node]}" ] || NODE_SOCK[$node]=$addr ;;
        esac
    done <"$ready"
    log "$node pid ${NODE_PID[$node]} ready: tcp=${NODE_TCP[$node]:-none} unix=${NODE_SOCK[$node]:-none}"
}

# start_synced_pair [SECONDS]: a new pair (setup_pair, start_pair), and
# alpha synchronized within SECONDS (default 60), or die.
start_synced_pair() {
    setup_pair
    start_pair
    wait_state alpha synchronized "${1:-60}" >/dev/null || die "the pair did not synchronize"
}

# fresh_pair: both nodes killed, their images and metadata removed, then
# setup_pair (one test, several cases from scratch).
fresh_pair() {
    local n
    for n in "${NODES[@]}"; do kill_node "$n" 2>/dev/null; rm -f "${NODE_IMG[$n]}" "${NODE_META[$n]}"*; done
    setup_pair
}

# new_synced_pair [TIMEOUT]: fresh_pair, then start_pair, and alpha
# synchronized within TIMEOUT (default 60), or die.
new_synced_pair() {
    fresh_pair
    start_pair
    wait_state alpha synchronized "${1:-60}" >/dev/null || die "the pair did not synchronize"
}

# replace_primary_disk: the pair runs (alpha primary: 4M of 0x33 at 0 and
# the acknowledged writes `w` at 16M..20M), both nodes stop, and alpha's
# disk is replaced by a blank one (its metadata goes with it); sets
# beta_sha to beta's image's hash. Nothing is started.
replace_primary_disk() {
    start_synced_pair 60
    check "4M of 0x33 at 0 through alpha" nbd_fill "$(nbd_unix_uri alpha)" 0 $((4 * MiB)) 51
    write_acked w "$(nbd_unix_uri alpha)" $((16 * MiB)) $((4 * MiB)) 200 --seed 3
    stop_pair
    rm -f "${NODE_IMG[alpha]}" "${NODE_META[alpha]}" "${NODE_META[alpha]}.backup"
    truncate -s "$(size_bytes "$VOL_SIZE")" "${NODE_IMG[alpha]}"
    beta_sha=$(sha_of "${NODE_IMG[beta]}")
}

# first_sync_consent [PRIMARY]: a new pair on disks that both hold data:
# the secondary refuses the first sync (nothing records either copy's
# history), and the operator's `promote --force` on PRIMARY (default alpha)
# says its copy is the current one (DRBD's first `primary --force`).
first_sync_consent() {
    local p=${1:-alpha} s out
    [ "$p" = alpha ] && s=beta || s=alpha
    wait_log "$s" "neither node records its copy's history" 30 >/dev/null ||
        die "$s did not refuse a first sync over its data"
    out=$(ctl "$p" promote --force) || die "promote --force on $p: $out"
    log "first sync: promote --force $p: $out"
}

# failover_both_meta_lost WIN: a new synchronized pair, writes w1 through
# alpha at [0, WIN), a forced failover (alpha killed, promote --force on
# beta), writes w2 through beta alone at [WIN, 2*WIN), beta stopped, and both
# nodes' metadata lost (the volume file still names alpha, the stale copy,
# primary). Both nodes are stopped.
failover_both_meta_lost() {
    local win=$1 out n
    new_synced_pair 30
    write_acked w1 "$(nbd_unix_uri alpha)" 0 "$win" 300
    kill_node alpha
    wait_state beta 'disconnected|degraded' 10 >/dev/null
    out=$(ctl beta promote --force) || die "promote --force beta: $out"
    write_acked w2 "$(nbd_unix_uri beta)" "$win" "$win" 500
    stop_node beta
    for n in alpha beta; do rm -f "${NODE_META[$n]}" "${NODE_META[$n]}.backup"; done
}

# planned_failover_alone [LABEL]: a new synchronized pair, 1M of 0x11 at 0
# through alpha, a planned failover (demote alpha, promote beta), alpha
# stopped, and 1M of 0x22 at 0 through beta alone. beta is left running.
planned_failover_alone() {
    local c=${1:+$1 } out
    start_synced_pair 30
    check "${c}1M of 0x11 at 0 through alpha" nbd_fill "$(nbd_unix_uri alpha)" 0 $MiB 17
    out=$(ctl alpha demote) && pass "${c}demote alpha: $out" || die "demote: $out"
    out=$(ctl beta promote) && pass "${c}promote beta: $out" || die "promote: $out"
    stop_node alpha
    check "${c}1M of 0x22 at 0 through beta (alpha down)" nbd_fill "$(nbd_unix_uri beta)" 0 $MiB 34
}

# must_start NODE [ARGS...]: start_node or die.
must_start() {
    start_node "$@" || die "$1 did not start (see its log)"
}

# wait_for TIMEOUT CMD...: CMD succeeds within TIMEOUT seconds (polled).
wait_for() { local d=$((SECONDS + $1)); shift; until "$@"; do [ $SECONDS -lt $d ] || return 1; sleep 0.1; done; }

# start_refused LABEL NODE ERE [ARGS...]: NODE does not start, and its log
# says why (ERE).
start_refused() {
    local label=$1 node=$2 re=$3
    shift 3
    if start_node "$node" "$@"; then
        fail "$label: $node started"
    elif grep -qE -- "$re" "${NODE_LOG[$node]}"; then
        pass "$label"
    else
        fail "$label: $node did not start, but its log does not say /$re/: $(tail -n 2 "${NODE_LOG[$node]}")"
    fi
}

# start_pair [ALPHA-ARGS...]: both nodes; on EADDRINUSE new ports, new
# files, and again (up to 3 times).
start_pair() {
    local try rc
    for try in 1 2 3; do
        start_node alpha "$@"; rc=$?
        if [ $rc -eq 0 ]; then
            start_node beta; rc=$?
            [ $rc -eq 0 ] && return 0
            kill_node alpha
        fi
        [ $rc -eq 2 ] || die "the pair did not start"
        log "address in use: picking new ports"
        pick_ports; write_configs
    done
    die "the pair did not start: addresses in use"
}

# start_synchronized_pair: setup_pair, start_pair, and alpha synchronized
# within 30 s (or the test dies).
start_synchronized_pair() {
    setup_pair
    start_pair
    wait_state alpha synchronized 30 >/dev/null || die "alpha not synchronized"
}

# reap_node NODE SECS: wait up to SECS for NODE's mirrord to exit (it was told
# to), its exit status in NODE_RC; past SECS it is killed (SIGKILL) and
# reap_node fails.
reap_node() {
    local node=$1 p=${NODE_PID[$1]:-} deadline=$((SECONDS + $2))
    NODE_RC=""
    [ -n "$p" ] || return 0
    while node_alive "$node"; do
        if [ $SECONDS -ge $deadline ]; then
            kill -KILL "$p"; wait "$p" 2>/dev/null
            NODE_PID[$node]=""
            return 1
        fi
        sleep 0.05
    done
    wait "$p"; NODE_RC=$?
    NODE_PID[$node]=""
}

# stop_node NODE: SIGTERM, bounded wait, check exit status 0.
stop_node() {
    local node=$1 p=${NODE_PID[$1]:-}
    [ -n "$p" ] || return 0
    if ! node_alive "$node"; then
        wait "$p"; local rc=$?
        NODE_PID[$node]=""
        fail "$node: mirrord died before it was stopped (exit status $rc)"
        dump_node_log "$node"
        return 1
    fi
    kill -TERM "$p"
    if ! reap_node "$node" "${STOP_TIMEOUT:-20}"; then
        fail "$node: mirrord did not exit within ${STOP_TIMEOUT:-20}s of SIGTERM"
        dump_node_log "$node"
        return 1
    fi
    local rc=$NODE_RC
    if [ $rc -eq 0 ]; then
        pass "$node: mirrord exits 0 on SIGTERM"
    else
        fail "$node: mirrord exit status on SIGTERM: expected 0, got $rc"
        dump_node_log "$node"
        return 1
    fi
}

# kill_node NODE: SIGKILL (a crash), and reap it.
kill_node() {
    local p=${NODE_PID[$1]:-}
    [ -n "$p" ] || return 0
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
    NODE_PID[$1]=""
    listeners_closed "$1"
}

# start_with_faults NODE SPEC: start NODE with MIRRORD_FAULTS=SPEC.
start_with_faults() {
    local node=$1 spec=$2 rc
    export MIRRORD_FAULTS=$spec
    start_node "$node"; rc=$?
    unset MIRRORD_FAULTS
    [ $rc -eq 0 ] || die "$node did not start with MIRRORD_FAULTS=$spec"
    grep -q "TEST FAULTS" "${NODE_LOG[$node]}" && pass "$node runs with injected faults: $spec" \
        || fail "$node does not log its injected faults ($spec)"
}

# image_on_tmpfs NODE SIZE: NODE's backing file on a tmpfs of SIZE of its
# own (unmounted at exit), or skip: a store without FALLOC_FL_ZERO_RANGE.
image_on_tmpfs() {
    mkdir -p "$T/fs-$1"
    mount -t tmpfs -o size="$2" tmpfs "$T/fs-$1" 2>/dev/null || skip "cannot mount a tmpfs"
    CLEANUP_HOOKS+=("umount -l $T/fs-$1")
    NODE_IMG[$1]=$T/fs-$1/$1.img
}

# start_synced_pair_faults SPEC: a new pair, alpha with MIRRORD_FAULTS=SPEC,
# synchronized within 60 s, or die.
start_synced_pair_faults() {
    setup_pair
    start_with_faults alpha "$1"
    must_start beta
    wait_state alpha synchronized 60 >/dev/null || die "the pair did not synchronize"
}

# start_diskless_pair BETA_SPEC WIN: a new pair, beta with MIRRORD_FAULTS=
# BETA_SPEC; alpha's disk dies under writer w1 (3000 writes in [0, WIN)) and
# is detached: beta's copy is the only one. Or die.
start_diskless_pair() {
    setup_pair
    start_with_faults beta "$1"
    start_with_faults alpha "dead-after=400"
    wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize"
    write_acked w1 "$(nbd_unix_uri alpha)" 0 "$2" 3000
    wait_state alpha diskless 10 >/dev/null || die "alpha did not detach its disk: $(status_get alpha .state)"
    pass "alpha's disk died and was detached: beta's copy is the only one"
}

# Both nodes stopped cleanly, alpha first unless told otherwise.
stop_pair() {
    local n nodes=("$@")
    [ ${#nodes[@]} -gt 0 ] || nodes=(alpha beta)
    for n in "${nodes[@]}"; do stop_node "$n"; done
}

nbd_uri() { echo "nbd://${NODE_TCP[$1]}/$VOL_NAME"; }
nbd_unix_uri() { echo "nbd+unix:///$VOL_NAME?socket=${NODE_SOCK[$1]}"; }

_DUMPED=""
dump_node_log() {
    local node=$1 f=${NODE_LOG[$1]:-}
    [ -n "$f" ] && [ -f "$f" ] || return 0
    case " $_DUMPED " in *" $f "*) return 0 ;; esac
    _DUMPED="$_DUMPED $f"
    printf '[%s] ---- %s log (%s, last %d lines) ----\n' "$TEST_NAME" "$node" "$f" "${LOG_TAIL:-40}"
    grep -v ' DEBUG ' "$f" | tail -n "${LOG_TAIL:-40}" | sed 's/^/    | /'
    printf '[%s] ---- end of %s log ----\n' "$TEST_NAME" "$node"
}
# lib.sh's die() dumps "the" mirrord log: dump every node's.
dump_mirrord_log() { local n; for n in "${NODES[@]}"; do dump_node_log "$n"; done; }

# ---------------------------------------------------------- checks --

sha_of() { sha256sum <"$1" | cut -d' ' -f1; }

# pattern_sha SEED LENGTH: the sha256 of what `nbdtool pattern URI OFF LENGTH
# SEED` writes (LENGTH up to 1 MiB: it writes longer ones in 1 MiB pieces).
pattern_sha() {
    "$PY" -c 'import hashlib,random,sys
print(hashlib.sha256(random.Random(int(sys.argv[1])).randbytes(int(sys.argv[2]))).hexdigest())' "$1" "$2"
}

# backing_sha NODE OFFSET LENGTH: the sha256 of those bytes of NODE's backing file.
backing_sha() {
    "$PY" -c 'import hashlib,sys
f = open(sys.argv[1], "rb"); f.seek(int(sys.argv[2])); print(hashlib.sha256(f.read(int(sys.argv[3]))).hexdigest())' \
        "${NODE_IMG[$1]}" "$2" "$3"
}

# check_identical LABEL: both backing files hold the same bytes (the first
# VOL_SIZE bytes); on a difference, says which 64 KiB regions differ.
check_identical() {
    local label=$1
    if cmp -s -n "$(size_bytes "$VOL_SIZE")" "${NODE_IMG[alpha]}" "${NODE_IMG[beta]}"; then
        pass "$label: alpha and beta images are identical"
        return 0
    fi
    fail "$label: alpha and beta images differ"
    "$PY" - "${NODE_IMG[alpha]}" "${NODE_IMG[beta]}" "$(size_bytes "$VOL_SIZE")" <<'EOF' | sed 's/^/    | /'
import sys
a, b, size = open(sys.argv[1], "rb"), open(sys.argv[2], "rb"), int(sys.argv[3])
g = 64 << 10
diff = []
for off in range(0, size, g):
    if a.read(g) != b.read(g):
        diff.append(off)
print(f"{len(diff)} of {size // g} 64K regions differ ({len(diff) * g} bytes); first: " +
      ", ".join(f"{o:#x}" for o in diff[:8]))
EOF
    return 1
}

# clean_restart_copies_nothing LABEL: stop both nodes (alpha first), check
# the copies are identical (LABEL), start both: the handshake plans nothing
# to copy.
clean_restart_copies_nothing() {
    local plan
    stop_node alpha
    stop_node beta
    check_identical "$1"
    must_start alpha
    must_start beta
    if wait_log alpha "peer 'beta' connected:" 20 >/dev/null; then
        read -r -a plan <<<"$(plan_of alpha)"
        check_eq "a clean restart copies nothing (${plan[*]:0:${#plan[@]}-1})" 0 "${plan[-1]:-0}"
    else
        fail "alpha and beta did not reconnect within 20s"
    fi
}

# nbd_put URI OFFSET LENGTH BYTE: a plain write (no FLUSH, no FUA): durable
# only once a later flush covers it.
nbd_put() {
    "$PY" - "$@" <<'PYEOF'
import sys
import nbd
uri, off, length, byte = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
h = nbd.NBD()
h.connect_uri(uri)
h.pwrite(bytes([byte]) * length, off)
h.shutdown()
PYEOF
}

# byte_at IMAGE OFFSET: the byte there, in decimal.
byte_at() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }

# power_loss NODE: SIGUSR2 to a node started with MIRRORD_FAULTS=power-loss:
# it drops its unsynced writes and dies (docs/reliability.md).
power_loss() {
    local p=${NODE_PID[$1]}
    kill -USR2 "$p"
    wait "$p" 2>/dev/null
    NODE_PID[$1]=""
    listeners_closed "$1"
    grep -q 'simulated power loss' "${NODE_LOG[$1]}" || die "$1 did not simulate a power loss"
    log "$1: $(grep 'simulated power loss' "${NODE_LOG[$1]}")"
}

# nbd_flush NODE: a client FLUSH through NODE's NBD export.
nbd_flush() { "${NBDTOOL[@]}" flush "$(nbd_unix_uri "$1")"; }

# nbd_fill URI OFFSET LENGTH BYTE: writes LENGTH bytes of value BYTE at
# OFFSET through a libnbd client, then flushes. Fails if the server refuses.
nbd_fill() {
    "$PY" - "$@" <<'PYEOF'
import sys
import nbd
uri, off, length, byte = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
h = nbd.NBD()
h.connect_uri(uri)
pos = 0
while pos < length:
    n = min(1 << 20, length - pos)
    h.pwrite(bytes([byte]) * n, off + pos)
    pos += n
h.flush()
h.shutdown()
PYEOF
}

# fio_json_field OUTFILE PYEXPR: a value from fio's JSON (j = first job).
fio_json_field() {
    "$PY" -c 'import json,sys; t=open(sys.argv[1]).read(); j=json.loads(t[t.index("{"):])["jobs"][0]; print(eval(sys.argv[2]))' "$1" "$2"
}

# ------------------------------------------------------ the writer --

# start_writer NAME URI OFFSET WINDOW [ARGS...] [PREFIX via WRITER_PREFIX]:
# nbdtool.py write in the background; its log is $T/NAME.acks, its JSON
# summary $T/NAME.out, stop it by touching $T/NAME.stop.
start_writer() {
    local name=$1 uri=$2 off=$3 win=$4; shift 4
    rm -f "$T/$name.stop" "$T/$name.acks"
    ${WRITER_PREFIX:-} "${NBDTOOL[@]}" write --uri "$uri" --log "$T/$name.acks" --offset "$off" \
        --window "$win" --stop-file "$T/$name.stop" "$@" >"$T/$name.out" 2>"$T/$name.err" &
    WRITER_PID=$!
    BG_PIDS+=("$WRITER_PID")
}

acks() {
    local n
    n=$(grep -c '^A ' "$T/$1.acks" 2>/dev/null)
    echo "${n:-0}"
}

# wait_acks NAME COUNT TIMEOUT: the writer has COUNT acknowledged writes.
wait_acks() {
    local deadline=$((SECONDS + $3))
    while [ "$(acks "$1")" -lt "$2" ]; do
        [ $SECONDS -lt $deadline ] || return 1
        kill -0 "$WRITER_PID" 2>/dev/null || return 1
        sleep 0.1
    done
}

# stop_writer NAME [TIMEOUT]: stop it and wait (60 s by default); its exit
# status in WRITER_RC.
stop_writer() {
    touch "$T/$1.stop"
    wait_writer "$1" "${2:-60}"
}

# wait_writer NAME TIMEOUT: wait for the writer to end (by itself, when
# started with --duration); its exit status in WRITER_RC (killed after
# TIMEOUT).
wait_writer() {
    local deadline=$((SECONDS + $2))
    while kill -0 "$WRITER_PID" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            fail "writer $1 did not end within $2s (a write is hanging?)"
            kill -KILL "$WRITER_PID"
            break
        fi
        sleep 0.1
    done
    wait "$WRITER_PID"; WRITER_RC=$?
}

writer_field() { jq -r ".$2" "$T/$1.out" 2>/dev/null; }

# finish_writer NAME URI OFFSET WINDOW ACK_MS: stop the writer; what a client
# of the pair must have seen: no failed write, none slower than the
# ack-timeout (ACK_MS) + 3 s; a client FLUSH through alpha works and URI
# holds every acknowledged write.
finish_writer() {
    local name=$1 uri=$2 off=$3 win=$4 ack_ms=$5 lat
    stop_writer "$name"
    check_eq "the writer stopped with no failed write (exit 0)" 0 "$WRITER_RC"
    log "writer: $(cat "$T/$name.out")"
    lat=$(writer_field "$name" max_latency_ms)
    if [ -n "$lat" ] && [ "$lat" -le $((ack_ms + 3000)) ]; then
        pass "no write took longer than the ack-timeout + 3s (worst ${lat} ms)"
    else
        fail "a write took ${lat} ms (ack-timeout ${ack_ms} ms)"
    fi
    check "client FLUSH through alpha" nbd_flush alpha
    verify_writes "alpha's export holds every acknowledged write" "$name" --uri "$uri" "$off" "$win"
}

# cut_acks NAME BEFORE AFTER: the write log of a split instant, in
# $T/NAME.cut.acks: the first BEFORE lines (acknowledged before the split:
# must be there), lines BEFORE+1..AFTER as "U" (acknowledged around it: may
# be there); later writes are absent, so the verifier rejects their data.
cut_acks() {
    {
        head -n "$2" "$T/$1.acks"
        sed -n "$(($2 + 1)),${3}p" "$T/$1.acks" | sed 's/^A /U /'
    } >"$T/$1.cut.acks"
}

# verify_writes LABEL NAME (--image FILE | --uri URI) OFFSET WINDOW
verify_writes() {
    local label=$1 name=$2 how=$3 src=$4 off=$5 win=$6
    check "$label" "${NBDTOOL[@]}" verify "$how" "$src" --log "$T/$name.acks" --offset "$off" --window "$win"
}

# write_acked NAME URI OFFSET WINDOW COUNT [writer options]: a writer that
# gets COUNT writes acknowledged (60 s at most), then stops with no error.
write_acked() {
    local name=$1 uri=$2 off=$3 win=$4 count=$5
    shift 5
    start_writer "$name" "$uri" "$off" "$win" "$@"
    wait_acks "$name" "$count" 60 || die "the writer did not get $count writes acknowledged"
    stop_writer "$name"
    check_eq "the writer saw no error" 0 "$WRITER_RC"
}

# restart_converged LABEL NAME OFFSET WINDOW: both nodes (re)started, the pair
# synchronizes and is stopped; the images are identical and both hold every
# write NAME had acknowledged.
restart_converged() {
    local label=$1 name=$2 off=$3 win=$4 n
    for n in alpha beta; do node_alive "$n" || must_start "$n"; done
    wait_state alpha synchronized 60 >/dev/null || fail "$label: the pair did not synchronize"
    stop_pair
    check_identical "$label"
    verify_writes "alpha's image holds every acknowledged write" "$name" --image "${NODE_IMG[alpha]}" "$off" "$win"
    verify_writes "beta's image holds every acknowledged write" "$name" --image "${NODE_IMG[beta]}" "$off" "$win"
}

# ---------------------------------------------------------- refusals --

START_ARGS=()

# wait_refusals ERE COUNT TIMEOUT: COUNT lines matching ERE in alpha's and
# beta's logs together; prints the first.
wait_refusals() {
    local deadline=$((SECONDS + $3)) n
    while :; do
        n=$( (log_since alpha; log_since beta) | grep -cE -- "$1")
        if [ "$n" -ge "$2" ]; then
            (log_since alpha; log_since beta) | grep -E -- "$1" | head -n 1
            return 0
        fi
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

# refused LABEL ERE [STATE]: start the pair as configured (alpha gets START_ARGS), expect ERE in the logs at
# least 3 times (the primary keeps dialing; every attempt is refused), no
# plan ever agreed, and both images unchanged.
refused() {
    local label=$1 re=$2 state=${3:-} sa sb line
    sa=$(sha_of "${NODE_IMG[alpha]}"); sb=$(sha_of "${NODE_IMG[beta]}")
    start_pair "${START_ARGS[@]}"
    if line=$(wait_refusals "$re" 3 40); then
        pass "[$label] connection refused, logged: ${line#*: }"
    else
        fail "[$label] no log line matching /$re/ (3 attempts) within 40s"
    fi
    if (log_since alpha; log_since beta) | grep -qE "connected: |resync started"; then
        fail "[$label] the nodes agreed on a plan anyway: $( (log_since alpha; log_since beta) | grep -E 'connected: |resync started' | head -n 2)"
    else
        pass "[$label] no plan agreed, no resync started"
    fi
    if have_ctl; then
        check_eq "[$label] alpha's status: link not connected" yes \
            "$(status_get alpha '.link != "connected"' | sed 's/true/yes/')"
        if [ -n "$state" ]; then
            check_eq "[$label] alpha's status: state" "$state" "$(status_get alpha .state)"
            check_eq "[$label] beta's status: state" "$state" "$(status_get beta .state)"
        fi
    fi
    stop_node alpha
    stop_node beta
    check_eq "[$label] alpha's image unchanged" "$sa" "$(sha_of "${NODE_IMG[alpha]}")"
    check_eq "[$label] beta's image unchanged" "$sb" "$(sha_of "${NODE_IMG[beta]}")"
}

# ----------------------------------------------------------- cleanup --

_pair_cleanup() {
    local rc=$? n p h
    for n in "${NODES[@]}"; do
        p=${NODE_PID[$n]:-}
        [ -n "$p" ] && kill -KILL "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    for p in "${BG_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    # Any daemon of this test whose pid was not recorded (started in a
    # subshell) still names this test's directory in its command line.
    [ -n "${T:-}" ] && pkill -KILL -f -- "--config $T/" 2>/dev/null
    for h in "${CLEANUP_HOOKS[@]}"; do eval "$h" >/dev/null 2>&1; done
    if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then dump_mirrord_log; fi
    (exit $rc)
    _cleanup
}
trap _pair_cleanup EXIT

pair_finish() {
    local n
    # A node still meant to run is stopped (exit 0 asserted); one that died
    # on its own is a failure (stop_node says so).
    for n in "${NODES[@]}"; do [ -n "${NODE_PID[$n]:-}" ] && stop_node "$n"; done
    if [ "$N_FAIL" -gt 0 ]; then dump_mirrord_log; fi
    finish
}

require truncate sha256sum cmp jq "$PY"
"$PY" -c 'import nbd' 2>/dev/null || skip "$PY has no nbd module (python3-libnbd)"

# rc_before_handler: $T/before.sh, a before-resync-target that appends the
# time to $T/before.runs and exits with the code in $T/before.rc (0 here;
# a test writes another to make it fail).
rc_before_handler() {
    cat >"$T/before.sh" <<EOF
#!/bin/bash
echo "\$(date +%s.%N)" >>"$T/before.runs"
exit \$(cat "$T/before.rc")
EOF
    chmod 755 "$T/before.sh"
    echo 0 >"$T/before.rc"
}

# logging_before_handler SECS: $T/before.sh, a before-resync-target that
# appends "plan=PLAN bytes=BYTES" to $T/before.env and sleeps SECS.
logging_before_handler() {
    cat >"$T/before.sh" <<EOF
#!/bin/bash
echo "plan=\$MIRROR_PLAN bytes=\$MIRROR_RESYNC_BYTES" >>"$T/before.env"
sleep $1
EOF
    chmod 755 "$T/before.sh"
}
