#!/usr/bin/env bash
# Mirrored mirrord (a primary/secondary pair on loopback, protocol C) against unmirrored
# mirrord and against QEMU's active mirror (qemu-storage-daemon blockdev-mirror
# copy-mode=write-blocking to a qemu-nbd peer), same run, same client (build/nbdload), same
# pinning; then a resync row: stop the secondary, write a region set through the primary,
# restart the secondary and time the resync against a raw file-to-file copy of the same
# bytes on this disk and against loopback TCP throughput.
#
#   bench/mirror-bench.sh                         # RUNS=3 runs of SECONDS=10 s per row
#   SECONDS=5 RUNS=1 bench/mirror-bench.sh        # first pass
#
# Environment (all optional):
#   SECONDS / BENCH_SECONDS  measured seconds per run (10)   RUNS  runs per row, median (3)
#   WARMUP     unmeasured seconds at the start of every run (2)
#   PIN        same: every server process and the client on CPU 1 (default); pair: the
#              peer copy (beta, qemu-nbd) on CPU 0, the rest on CPU 1, as two hosts; none
#   SCHED      other (default) or fifo: servers, client and helpers as SCHED_FIFO 10
#   SERVERS    subset/order of: mirrored unmirrored qemu-mirror
#   ROWS       subset/order of: w4k-qd1 w4k-qd32 r4k-qd32 w1m-qd8 fua4k-qd1 fua4k-qd32
#   RESYNC     1 (default) run the resync row, 0 skip it
#   RESYNC_REGIONS / RESYNC_REGION_MIB / RESYNC_STRIDE_MIB   region set (64 x 4 MiB every 16 MiB)
#   SIZE       volume size (1G)        BENCH_DIR  where files go (/var/tmp/mirror-bench)
#   PREWRITE   1 (default): write every backing file once (dd oflag=direct) after fallocate,
#              so nobody pays for unwritten-extent conversion; 0: fallocate only
#   QEMU_PEER_CACHE  cache mode of the qemu-nbd peer: none (default; --aio=native) or writeback
#   QEMU_SRC_CACHE   cache mode of the mirror's local copy: none (default: cache.direct=on,
#              aio=native) or writeback (page cache, aio=threads)
#   DROP_CACHES 1 (default): sync + drop the page cache before the servers start and before
#              each resync / raw copy
#   CPU_COST   1: also measure what each request costs the CPU: the servers' processes (every
#              thread, io-wq workers included: /proc/PID/stat) and the rest of CPU 1 (the client,
#              softirq), in us per request, with context switches per request and CPU 1's idle
#              share over the measured seconds; printed as a second table. 0 (default): off
#   LINK_TLS   1: the mirrored pair's replication link runs over TLS 1.3 (certificates made
#              in BENCH_DIR with openssl); 0 (default): plaintext. Compare two runs:
#              LINK_TLS=0 SERVERS=mirrored ... and LINK_TLS=1 SERVERS=mirrored ...
#   BUILD_DIR, MIRRORD, MIRRORCTL, NBDLOAD   binaries (<repo>/build/...)
set -euo pipefail

RUN_SECONDS=${BENCH_SECONDS:-$(printenv SECONDS || echo 10)}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-2}
PIN=${PIN:-same}
SCHED=${SCHED:-other}
SERVERS=${SERVERS:-mirrored unmirrored qemu-mirror}
ROWS=${ROWS:-w4k-qd1 w4k-qd32 r4k-qd32 w1m-qd8 fua4k-qd1 fua4k-qd32}
RESYNC=${RESYNC:-1}
RESYNC_REGIONS=${RESYNC_REGIONS:-64}
RESYNC_REGION_MIB=${RESYNC_REGION_MIB:-4}
RESYNC_STRIDE_MIB=${RESYNC_STRIDE_MIB:-16}
SIZE=${SIZE:-1G}
PREWRITE=${PREWRITE:-1}
QEMU_PEER_CACHE=${QEMU_PEER_CACHE:-none}
QEMU_SRC_CACHE=${QEMU_SRC_CACHE:-none}
DROP_CACHES=${DROP_CACHES:-1}
LINK_TLS=${LINK_TLS:-0}
CPU_COST=${CPU_COST:-0}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$REPO/build}
NBDLOAD=${NBDLOAD:-$BUILD_DIR/nbdload}
MIRRORD=${MIRRORD:-$BUILD_DIR/mirrord}
MIRRORCTL=${MIRRORCTL:-$BUILD_DIR/mirrorctl}
BENCH_DIR=${BENCH_DIR:-/var/tmp/mirror-bench}
RESULTS_DIR=$REPO/bench/results
QMP_PY=$REPO/bench/mirror-qmp.py
REGIONS_PY=$REPO/bench/mirror-regions.py
PY=/usr/bin/python3   # the system python has libnbd's binding (python3-libnbd)

case $PIN in
  same) PINC=(taskset -c 1); PEERC=(taskset -c 1) ;;
  pair) PINC=(taskset -c 1); PEERC=(taskset -c 0) ;;
  none) PINC=(); PEERC=() ;;
  *) echo "PIN must be same, pair or none" >&2; exit 2 ;;
esac
case $SCHED in
  other) ;;
  fifo) PINC=(chrt -f 10 "${PINC[@]}"); PEERC=(chrt -f 10 "${PEERC[@]}") ;;
  *) echo "SCHED must be other or fifo" >&2; exit 2 ;;
esac
case $QEMU_PEER_CACHE in
  none) QEMU_PEER_ARGS=(--cache=none --aio=native) ;;
  writeback) QEMU_PEER_ARGS=(--cache=writeback --aio=threads) ;;
  *) echo "QEMU_PEER_CACHE must be none or writeback" >&2; exit 2 ;;
esac
case $QEMU_SRC_CACHE in
  none) QEMU_SRC_OPTS=cache.direct=on,aio=native ;;
  writeback) QEMU_SRC_OPTS=cache.direct=off,aio=threads ;;
  *) echo "QEMU_SRC_CACHE must be none or writeback" >&2; exit 2 ;;
esac
[[ $RUN_SECONDS =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "bad SECONDS: $RUN_SECONDS" >&2; exit 2; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "bad RUNS: $RUNS" >&2; exit 2; }
for b in "$NBDLOAD" "$MIRRORD" "$MIRRORCTL"; do
  [[ -x $b ]] || { echo "no $b: ninja -C $BUILD_DIR mirrord mirrorctl nbdload" >&2; exit 2; }
done

log() { printf '[mirror-bench] %s\n' "$*" >&2; }

row_label() {
  case $1 in
    w4k-qd1) echo "4K rand write QD1" ;;    w4k-qd32) echo "4K rand write QD32" ;;
    r4k-qd32) echo "4K rand read QD32" ;;   w1m-qd8) echo "1M seq write QD8" ;;
    fua4k-qd1) echo "4K rand write FUA QD1" ;; fua4k-qd32) echo "4K rand write FUA QD32" ;;
    *) return 1 ;;
  esac
}
row_args() {
  case $1 in
    w4k-qd1) echo "--op write --bs 4k --qd 1 --pattern rand" ;;
    w4k-qd32) echo "--op write --bs 4k --qd 32 --pattern rand" ;;
    r4k-qd32) echo "--op read --bs 4k --qd 32 --pattern rand" ;;
    w1m-qd8) echo "--op write --bs 1M --qd 8 --pattern seq" ;;
    fua4k-qd1) echo "--op write --bs 4k --qd 1 --pattern rand --fua" ;;
    fua4k-qd32) echo "--op write --bs 4k --qd 32 --pattern rand --fua" ;;
  esac
}
for r in $ROWS; do row_label "$r" >/dev/null || { echo "unknown row $r" >&2; exit 2; }; done
for s in $SERVERS; do
  case $s in mirrored|unmirrored|qemu-mirror) ;; *) echo "unknown server $s" >&2; exit 2 ;; esac
done

# --- processes ------------------------------------------------------------------------------
WORK=""
declare -A PID URI CMD
started=()   # every process id this script started, for cleanup

stop_pid() {
  local pid=$1 name=$2
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then log "$name did not stop on SIGTERM: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local p
  for p in "${started[@]}"; do stop_pid "$p" "pid $p"; done
  if [[ -n $WORK && -d $WORK && ${KEEP:-0} != 1 ]]; then rm -rf "$WORK"; fi
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 20000))
    [[ -z $(ss -Hltan "sport = :$p") ]] && { echo "$p"; return; }
  done
}

# spawn NAME CMD...: start CMD pinned, in the background, log to $WORK/NAME.log; sets PID[NAME]
spawn() {
  local name=$1; shift
  local -a pin=("${PINC[@]}")
  # PIN=pair: the peer copy's process stands for the other host, on the other CPU
  [[ $name == beta || $name == qemu-peer ]] && pin=("${PEERC[@]}")
  CMD[$name]="${pin[*]} $*"
  "${pin[@]}" "$@" >>"$WORK/$name.log" 2>&1 </dev/null &
  PID[$name]=$!
  started+=("$!")
}

# wait_for NAME TIMEOUT_S TEST...: poll TEST every 20 ms while process NAME lives
wait_for() {
  local name=$1 t=$2; shift 2
  local i
  for i in $(seq $((t * 50))); do
    "$@" && return 0
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      log "$name exited; its log:"; cat "$WORK/$name.log" >&2; return 1
    fi
    sleep 0.02
  done
  log "$name: not ready after $t s; its log:"; cat "$WORK/$name.log" >&2; return 1
}

status_field() {  # status_field CTL FIELD -> value (resync.X allowed)
  "$MIRRORCTL" --socket "$1" status --json 2>/dev/null |
    $PY -c 'import json,sys; d=json.load(sys.stdin)
for k in sys.argv[1].split("."): d=d[k]
print(d)' "$2"
}
# clock_diff A B: seconds from wall-clock time of day A to B (HH:MM:SS.fff, as in the logs)
clock_diff() {
  awk -v a="$1" -v b="$2" 'BEGIN{split(a,x,":"); split(b,y,":"); d=(y[1]*3600+y[2]*60+y[3])-(x[1]*3600+x[2]*60+x[3]); if (d < 0) d += 86400; printf "%.3f", d}'
}
is_state() { [[ $(status_field "$1" state 2>/dev/null) == "$2" ]]; }

make_disk() {
  fallocate -l "$SIZE" "$1"
  if [[ $PREWRITE == 1 ]]; then
    dd if=/dev/zero of="$1" bs=4M count="$(($(stat -c %s "$1") >> 22))" \
       oflag=direct conv=notrunc,fsync status=none
  fi
}
drop_caches() {
  [[ $DROP_CACHES == 1 ]] || return 0
  sync
  if [[ -w /proc/sys/vm/drop_caches ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

# make_certs: a CA and a certificate per node (named after it) in $WORK/pki.
make_certs() {
  local d=$WORK/pki n
  mkdir -p "$d"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$d/ca.key" -out "$d/ca.pem" -subj "/CN=bench CA" -days 2 2>/dev/null
  for n in alpha beta; do
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/$n.key" 2>/dev/null
    chmod 600 "$d/$n.key"
    openssl req -new -key "$d/$n.key" -out "$d/$n.csr" -subj "/CN=$n" 2>/dev/null
    printf 'subjectAltName=DNS:%s\n' "$n" >"$d/$n.ext"
    openssl x509 -req -in "$d/$n.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
      -out "$d/$n.pem" -days 2 -extfile "$d/$n.ext" 2>/dev/null
  done
}

# The [volume] and per-node lines that turn TLS on (LINK_TLS=1), else nothing.
tls_volume_keys() { [[ $LINK_TLS == 1 ]] && printf 'tls = true\ntls-ca = "%s"\n' "$WORK/pki/ca.pem"; true; }
tls_node_keys() {
  [[ $LINK_TLS == 1 ]] && printf 'tls-cert = "%s"\ntls-key = "%s"\n' "$WORK/pki/$1.pem" "$WORK/pki/$1.key"
  true
}

write_volume_file() {
  local pa pb
  pa=$(free_port); pb=$(free_port)
  while [[ $pb == "$pa" ]]; do pb=$(free_port); done
  [[ $LINK_TLS == 1 && ! -s $WORK/pki/beta.pem ]] && make_certs
  cat >"$WORK/vol.toml" <<EOF
[volume]
name = "bench"
size = "$SIZE"
secret = "0123456789abcdef-secret"
primary = "alpha"
initial-sync = "skip"      # both images fresh (zeroed alike): no initial full sync
$(tls_volume_keys)

[[node]]
name = "alpha"
address = "127.0.0.1:$pa"
backing = "$WORK/m-a.img"
metadata = "$WORK/m-a.meta"
nbd-listen = ["127.0.0.1:0"]
control = "$WORK/a.ctl"
$(tls_node_keys alpha)

[[node]]
name = "beta"
address = "127.0.0.1:$pb"
backing = "$WORK/m-b.img"
metadata = "$WORK/m-b.meta"
nbd-listen = ["unix:$WORK/b.nbd"]
control = "$WORK/b.ctl"
$(tls_node_keys beta)
EOF
  chmod 600 "$WORK/vol.toml"
}

start_beta() {
  spawn beta "$MIRRORD" --config "$WORK/vol.toml" --node beta
  wait_for beta 30 test -S "$WORK/b.ctl"
}

start_mirrored() {
  rm -f "$WORK"/m-*.meta "$WORK/alpha.ready"
  write_volume_file
  start_beta
  spawn alpha "$MIRRORD" --config "$WORK/vol.toml" --node alpha --ready-file "$WORK/alpha.ready"
  wait_for alpha 60 test -s "$WORK/alpha.ready"
  # Images that hold data (PREWRITE) and new metadata on both: beta refuses to adopt a copy
  # nothing records the history of, until the operator's word that both are identical
  # (zeroed alike), which replaces a full initial sync.
  local i
  for i in $(seq 30); do is_state "$WORK/a.ctl" synchronized && break; sleep 0.1; done
  if ! is_state "$WORK/a.ctl" synchronized; then
    log "alpha: $("$MIRRORCTL" --socket "$WORK/a.ctl" promote --force --identical 2>&1)"
  fi
  wait_for alpha 60 is_state "$WORK/a.ctl" synchronized
  URI[mirrored]="nbd://$(sed -n 's/^tcp //p' "$WORK/alpha.ready" | head -1)/bench"
  CMD[mirrored]="${CMD[beta]}; ${CMD[alpha]}"
}

start_unmirrored() {
  rm -f "$WORK/u.ready"
  spawn unmirrored "$MIRRORD" --export "bench=$WORK/u.img" --listen 127.0.0.1:0 --ready-file "$WORK/u.ready"
  wait_for unmirrored 30 test -s "$WORK/u.ready"
  URI[unmirrored]="nbd://$(sed -n 's/^tcp //p' "$WORK/u.ready" | head -1)/bench"
}

start_qemu_mirror() {
  local port; port=$(free_port)
  rm -f "$WORK/peer.sock" "$WORK/qmp.sock"
  spawn qemu-peer qemu-nbd -f raw "${QEMU_PEER_ARGS[@]}" --persistent -k "$WORK/peer.sock" -x peer "$WORK/q-b.img"
  wait_for qemu-peer 30 test -S "$WORK/peer.sock"
  spawn qemu-mirror qemu-storage-daemon \
    --blockdev "file,filename=$WORK/q-a.img,node-name=src-file,$QEMU_SRC_OPTS" \
    --blockdev raw,file=src-file,node-name=src \
    --blockdev "nbd,server.type=unix,server.path=$WORK/peer.sock,export=peer,node-name=tgt" \
    --nbd-server "addr.type=inet,addr.host=127.0.0.1,addr.port=$port" \
    --export nbd,id=e,node-name=src,writable=on,name=bench \
    --chardev "socket,path=$WORK/qmp.sock,server=on,wait=off,id=qmp" --monitor chardev=qmp
  wait_for qemu-mirror 30 test -S "$WORK/qmp.sock"
  wait_for qemu-mirror 30 eval '[[ -n $(ss -Hltn "sport = :'"$port"'") ]]'
  # The job inserts its mirror_top filter above "src"; the export's BlockBackend is moved
  # onto the filter with every other parent of "src", so exported writes pass through it.
  QEMU_JOB=$("${PINC[@]}" "$PY" "$QMP_PY" "$WORK/qmp.sock" start-mirror m0 src tgt 600)
  log "qemu mirror job: $QEMU_JOB"
  QEMU_NODES=$("$PY" "$QMP_PY" "$WORK/qmp.sock" nodes)
  URI[qemu-mirror]="nbd://127.0.0.1:$port/bench"
  CMD[qemu-mirror]="${CMD[qemu-peer]}; ${CMD[qemu-mirror]}; QMP blockdev-mirror job-id=m0 device=src target=tgt sync=full copy-mode=write-blocking"
}

server_alive() {
  case $1 in
    mirrored) kill -0 "${PID[alpha]}" 2>/dev/null && kill -0 "${PID[beta]}" 2>/dev/null ;;
    unmirrored) kill -0 "${PID[unmirrored]}" 2>/dev/null ;;
    qemu-mirror) kill -0 "${PID[qemu-mirror]}" 2>/dev/null && kill -0 "${PID[qemu-peer]}" 2>/dev/null ;;
  esac
}

# --- CPU cost (CPU_COST=1) --------------------------------------------------------------------
# server_pids NAME: the processes that make up server NAME
server_pids() {
  case $1 in
    mirrored) echo "${PID[alpha]} ${PID[beta]}" ;;
    unmirrored) echo "${PID[unmirrored]}" ;;
    qemu-mirror) echo "${PID[qemu-mirror]} ${PID[qemu-peer]}" ;;
  esac
}

# --- main -------------------------------------------------------------------------------------
mkdir -p "$BENCH_DIR" "$RESULTS_DIR"
WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW=$RESULTS_DIR/mirror-$STAMP.json
RES=$WORK/results.tsv
# shellcheck source=bench/cpu-cost.sh
source "$REPO/bench/cpu-cost.sh"
: >"$RES"
read -r -a active <<<"$SERVERS"
CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
KERNEL=$(uname -r)
FS=$(df -T "$BENCH_DIR" | awk 'NR==2 {print $2 " on " $1}')
MIRRORD_VER=$("$MIRRORD" --version 2>/dev/null | head -1 || true)
[[ -n $MIRRORD_VER ]] || MIRRORD_VER="mirrord $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')"
QEMU_VER=$(qemu-storage-daemon --version | head -1)

log "fresh $SIZE backing files in $WORK (prewrite=$PREWRITE)"
for f in m-a m-b u q-a q-b; do make_disk "$WORK/$f.img"; done
drop_caches
declare -A PREFILLED
for s in "${active[@]}"; do
  case $s in
    mirrored) start_mirrored ;; unmirrored) start_unmirrored ;; qemu-mirror) start_qemu_mirror ;;
  esac
  PREFILLED[$s]=0
  log "$s: ${CMD[$s]} -> ${URI[$s]}"
done
for p in "${started[@]}"; do log "pid $p: CPUs $(taskset -cp "$p" | sed 's/.*: //')"; done
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
awk '{exit !($1 > 1.0)}' /proc/loadavg && log "WARNING: load average $LOAD_START: other work on the CPUs, figures will be noisy"

n=${#active[@]}
for r in $ROWS; do
  for i in $(seq "$RUNS"); do
    for k in $(seq 0 $((n - 1))); do
      s=${active[$(((k + i - 1) % n))]}
      server_alive "$s" || { log "$s died; its logs:"; tail -n 20 "$WORK"/*.log >&2; exit 1; }
      args=$(row_args "$r")
      if [[ $args == *"--op read"* ]]; then
        if ((PREFILLED[$s])); then args+=" --no-prefill"; else PREFILLED[$s]=1; fi
      fi
      # shellcheck disable=SC2086
      if measured_run "$s" "$r" "$i" "$(server_pids "$s")" "${PINC[@]}" "$NBDLOAD" --uri "${URI[$s]}" \
           $args --seconds "$RUN_SECONDS" --warmup "$WARMUP" --seed "$i"; then
        out=$(<"$WORK/nbdload.out")
      else
        log "nbdload failed on $s / $r: $(cat "$WORK/nbdload.err")"; out='{"error":true}'
      fi
      printf '%s\t%s\t%s\t%s\n' "$s" "$r" "$i" "$out" >>"$RES"
      log "$r run $i $s: $out"
    done
  done
done
if [[ -n ${PID[qemu-mirror]:-} ]]; then
  QEMU_JOB_END=$("$PY" "$QMP_PY" "$WORK/qmp.sock" query-jobs)
  log "qemu mirror job at the end: $QEMU_JOB_END"
fi
for s in unmirrored qemu-mirror qemu-peer; do [[ -n ${PID[$s]:-} ]] && stop_pid "${PID[$s]}" "$s"; done

# --- resync row -----------------------------------------------------------------------------
RS=$WORK/resync.tsv   # kind run json
: >"$RS"
if [[ $RESYNC == 1 && " ${active[*]} " == *" mirrored "* ]]; then
  RG=("$RESYNC_REGIONS" "$RESYNC_REGION_MIB" "$RESYNC_STRIDE_MIB")
  for i in $(seq "$RUNS"); do
    stop_pid "${PID[beta]}" beta
    wait_for alpha 30 eval '[[ $(status_field "$WORK/a.ctl" link) != connected ]]'
    w=$("${PINC[@]}" "$PY" "$REGIONS_PY" write "${URI[mirrored]}" "${RG[@]}" "$i")
    oos=$(status_field "$WORK/a.ctl" out_of_sync_bytes)
    before=$(status_field "$WORK/a.ctl" resynced_bytes_total)
    drop_caches
    t0=$(date +%s.%N)
    t0_clock=$(date +%T.%N)
    start_beta
    # Poll the primary until it is synchronized (tc: first time the link reads connected; unused).
    tc=""; t1=""
    for _ in $(seq 30000); do
      st=$("$MIRRORCTL" --socket "$WORK/a.ctl" status --json 2>/dev/null |
           $PY -c 'import json,sys; d=json.load(sys.stdin); print(d["link"], d["state"])' || true)
      now=$(date +%s.%N)
      [[ -z $tc && $st == connected* ]] && tc=$now
      [[ $st == *" synchronized" ]] && { t1=$now; [[ -n $tc ]] || tc=$now; break; }
      sleep 0.01
    done
    [[ -n $t1 ]] || { log "resync did not finish"; exit 1; }
    after=$(status_field "$WORK/a.ctl" resynced_bytes_total)
    sync
    if "$PY" "$REGIONS_PY" compare "$WORK/m-a.img" "$WORK/m-b.img" "${RG[@]}" >/dev/null; then same=true; else same=false; fi
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b - a}')
    # The copy phase alone, from the primary's own log lines (ms resolution): "resync
    # started" to "resync complete" (copy + peer flushes; no process start, no handshake).
    ls_=$(grep 'resync started' "$WORK/alpha.log" | tail -1 | cut -d' ' -f1)
    le_=$(grep 'resync complete' "$WORK/alpha.log" | tail -1 | cut -d' ' -f1)
    csecs=$(clock_diff "$ls_" "$le_")
    # The same end from the secondary's start (t0, wall clock like the log): what a user
    # waits for. "seconds" above also holds the poll loop's own lag (a mirrorctl and a
    # python per poll); the phases split it: start to "replication on" (process start,
    # metadata open), to "resync started" (the primary's dial, handshake, plan commits),
    # then the copy phase.
    lr_=$(grep 'replication on' "$WORK/beta.log" | tail -1 | cut -d' ' -f1)
    dsecs=$(clock_diff "$t0_clock" "$le_")
    ssecs=$(clock_diff "$t0_clock" "$lr_")
    hsecs=$(clock_diff "$lr_" "$ls_")
    bytes=$((after - before))
    mbs=$(awk -v b="$bytes" -v s="$dsecs" 'BEGIN{printf "%.1f", b / s / 1e6}')
    cmbs=$(awk -v b="$bytes" -v s="$csecs" 'BEGIN{printf "%.1f", (s > 0) ? b / s / 1e6 : 0}')
    j="{\"written\":$w,\"out_of_sync_bytes\":$oos,\"resynced_bytes\":$bytes,\"seconds\":$dsecs,\"seconds_polled\":$secs,\"seconds_process_start\":$ssecs,\"seconds_connect\":$hsecs,\"seconds_copy_phase\":$csecs,\"mb_s\":$mbs,\"mb_s_copy_phase\":$cmbs,\"copies_equal\":$same}"
    printf 'resync\t%s\t%s\n' "$i" "$j" >>"$RS"
    log "resync run $i: $j"
    # The raw capability, same bytes, same disk: O_DIRECT file-to-file copy, then TCP.
    drop_caches
    c=$("${PINC[@]}" "$PY" "$REGIONS_PY" copy "$WORK/m-a.img" "$WORK/u.img" "${RG[@]}")
    printf 'copy\t%s\t%s\n' "$i" "$c" >>"$RS"
    log "raw copy run $i: $c"
    drop_caches
    c=$("${PINC[@]}" "$PY" "$REGIONS_PY" copy-overlapped "$WORK/m-a.img" "$WORK/u.img" "${RG[@]}")
    printf 'copy2\t%s\t%s\n' "$i" "$c" >>"$RS"
    log "raw overlapped copy run $i: $c"
    t=$("${PINC[@]}" "$PY" "$REGIONS_PY" tcp 2048)
    printf 'tcp\t%s\t%s\n' "$i" "$t" >>"$RS"
    log "loopback tcp run $i: $t"
  done
fi
stop_pid "${PID[alpha]:-}" alpha; stop_pid "${PID[beta]:-}" beta
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- raw JSON ---------------------------------------------------------------------------------
json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }
{
  printf '{"timestamp":%s,"cpu":%s,"kernel":%s,"nproc":%s,"pin":%s,"sched":%s,"link_tls":%s,' \
    "$(json_str "$STAMP")" "$(json_str "$CPU_MODEL")" "$(json_str "$KERNEL")" "$(nproc)" \
    "$(json_str "$PIN")" "$(json_str "$SCHED")" "$LINK_TLS"
  printf '"seconds":%s,"warmup":%s,"runs":%s,"size":%s,"prewrite":%s,"filesystem":%s,"loadavg_start":%s,"loadavg_end":%s,' \
    "$RUN_SECONDS" "$WARMUP" "$RUNS" "$(json_str "$SIZE")" "$PREWRITE" "$(json_str "$FS")" \
    "$(json_str "$LOAD_START")" "$(json_str "$LOAD_END")"
  printf '"versions":{"mirrord":%s,"qemu":%s},"commands":{' "$(json_str "$MIRRORD_VER")" "$(json_str "$QEMU_VER")"
  sep=""
  for s in "${active[@]}"; do printf '%s%s:%s' "$sep" "$(json_str "$s")" "$(json_str "${CMD[$s]:-}")"; sep=","; done
  printf '},"qemu_job":%s,"qemu_job_end":%s,"qemu_nodes":%s,"results":[' "${QEMU_JOB:-null}" "${QEMU_JOB_END:-null}" "${QEMU_NODES:-null}"
  sep=""
  while IFS=$'\t' read -r s r i out; do
    printf '%s\n{"server":%s,"row":%s,"run":%s,"result":%s}' "$sep" "$(json_str "$s")" "$(json_str "$r")" "$i" "$out"; sep=","
  done <"$RES"
  printf '],"resync":['
  sep=""
  while IFS=$'\t' read -r k i out; do
    printf '%s\n{"kind":%s,"run":%s,"result":%s}' "$sep" "$(json_str "$k")" "$i" "$out"; sep=","
  done <"$RS"
  printf ']}\n'
} >"$RAW"

# --- table ------------------------------------------------------------------------------------
pin_desc="every server process and the client on CPU 1 (taskset -c 1)"
[[ $PIN == none ]] && pin_desc="unpinned"
[[ $PIN == pair ]] && pin_desc="the peer copy's process (beta, qemu-nbd) on CPU 0, every other server process and the client on CPU 1"
[[ $SCHED == fifo ]] && pin_desc+=", SCHED_FIFO 10 (chrt -f 10)"
echo "## Mirrored mirrord vs unmirrored mirrord vs QEMU active mirror, $pin_desc$([[ $LINK_TLS == 1 ]] && echo ", replication link over TLS 1.3")"
echo
echo "- date: $STAMP; CPU: $CPU_MODEL ($(nproc) CPUs); kernel: $KERNEL; load avg start/end: $LOAD_START / $LOAD_END"
echo "- one fresh $SIZE file per copy on $FS (fallocate$([[ $PREWRITE == 1 ]] && echo ' + written once with dd oflag=direct')); the QEMU mirror's local copy is cache=$QEMU_SRC_CACHE, its peer qemu-nbd --cache=$QEMU_PEER_CACHE"
echo "- each cell: median of $RUNS runs of ${RUN_SECONDS} s after ${WARMUP} s warm-up, servers taking turns; one TCP loopback connection; client: build/nbdload"
echo "- $MIRRORD_VER; $QEMU_VER"
for s in "${active[@]}"; do echo "- $s: \`${CMD[$s]:-}\`"; done
echo "- raw results: ${RAW#"$REPO"/}"
echo
row_labels=""
for r in $ROWS; do row_labels+="$r=$(row_label "$r")|"; done
awk -F'\t' -v servers="${active[*]}" -v rows="$ROWS" -v labels="$row_labels" '
  function field(json, key,   m) {
    if (match(json, "\"" key "\":[-0-9.eE+]+")) { m = substr(json, RSTART, RLENGTH); sub(/^[^:]*:/, "", m); return m + 0 }
    return -1
  }
  function fmt(v, unit) {
    if (v < 0) return "error"
    if (unit == "mbs") return sprintf("%.0f MB/s", v)
    return (v >= 1000) ? sprintf("%.1fk", v / 1000) : sprintf("%.0f", v)
  }
  function median(arr, n,   i, j, t, idx) {
    for (i = 1; i <= n; i++) idx[i] = i
    for (i = 2; i <= n; i++) for (j = i; j > 1 && arr[idx[j-1]] > arr[idx[j]]; j--) { t = idx[j]; idx[j] = idx[j-1]; idx[j-1] = t }
    med_idx = idx[int((n + 1) / 2)]
    return arr[med_idx]
  }
  BEGIN {
    ns = split(servers, S, " "); nr = split(rows, R, " "); nl = split(labels, L, "|")
    for (i = 1; i <= nl; i++) if (L[i] != "") { k = L[i]; sub(/=.*/, "", k); v = L[i]; sub(/^[^=]*=/, "", v); LBL[k] = v }
    goal["w4k-qd1"] = 4; goal["w4k-qd32"] = 3; goal["w1m-qd8"] = 2; goal["fua4k-qd1"] = 1.5; goal["fua4k-qd32"] = 1.5
  }
  {
    unit = ($2 == "w1m-qd8") ? "mbs" : "iops"
    key = $1 SUBSEP $2; n[key]++
    val[key, n[key]] = ($4 ~ /"error"/) ? -1 : field($4, (unit == "mbs") ? "mb_s" : "iops")
    p50[key, n[key]] = field($4, "p50_us"); p99[key, n[key]] = field($4, "p99_us")
  }
  END {
    hdr = "| load |"; sep = "|---|"
    for (j = 1; j <= ns; j++) { hdr = hdr " " S[j] " |"; sep = sep "---:|" }
    hdr = hdr " mirrored / qemu-mirror | goal |"; sep = sep "---:|---:|"
    print hdr; print sep
    for (i = 1; i <= nr; i++) {
      r = R[i]; unit = (r == "w1m-qd8") ? "mbs" : "iops"
      line = "| " LBL[r] " (" ((unit == "mbs") ? "MB/s" : "IOPS") ") |"
      mv = -1; qv = -1
      for (j = 1; j <= ns; j++) {
        key = S[j] SUBSEP r; m = n[key]
        if (m == 0) { line = line " – |"; continue }
        delete a
        for (k = 1; k <= m; k++) a[k] = val[key, k]
        med = median(a, m)
        lat[S[j], r] = sprintf("%.0f / %.0f", p50[key, med_idx], p99[key, med_idx])
        line = line " " fmt(med, unit) " |"
        if (S[j] == "mirrored") mv = med
        if (S[j] == "qemu-mirror") qv = med
      }
      ratio = (mv > 0 && qv > 0) ? sprintf("%.2f×", mv / qv) : "–"
      g = (r in goal) ? sprintf("≥ %g× %s", goal[r], (mv > 0 && qv > 0) ? ((mv / qv >= goal[r]) ? "met" : "**missed**") : "") : "–"
      print line " " ratio " | " g " |"
    }
    print ""
    print "Latency of the median run, p50 / p99 in µs:"
    print ""
    hdr = "| load |"; sep = "|---|"
    for (j = 1; j <= ns; j++) { hdr = hdr " " S[j] " |"; sep = sep "---:|" }
    print hdr; print sep
    for (i = 1; i <= nr; i++) {
      r = R[i]; line = "| " LBL[r] " |"
      for (j = 1; j <= ns; j++) line = line " " (((S[j], r) in lat) ? lat[S[j], r] : "–") " |"
      print line
    }
  }' "$RES"
cpu_cost_table
if [[ -s $RS ]]; then
  echo
  echo "Resync of a region set ($RESYNC_REGIONS regions of $RESYNC_REGION_MIB MiB, one every $RESYNC_STRIDE_MIB MiB), median of $RUNS:"
  echo
  awk -F'\t' '
    function field(json, key,   m) {
      if (match(json, "\"" key "\":[-0-9.eE+a-z]+")) { m = substr(json, RSTART, RLENGTH); sub(/^[^:]*:/, "", m); return m }
      return -1
    }
    function median(arr, n,   i, j, t) {
      for (i = 2; i <= n; i++) for (j = i; j > 1 && arr[j-1] > arr[j]; j--) { t = arr[j]; arr[j] = arr[j-1]; arr[j-1] = t }
      return arr[int((n + 1) / 2)]
    }
    $1 == "resync" { nr++; R[nr] = field($3, "mb_s") + 0; RC[nr] = field($3, "mb_s_copy_phase") + 0; SC[nr] = field($3, "seconds_copy_phase") + 0; B = field($3, "resynced_bytes"); S[nr] = field($3, "seconds") + 0; SP[nr] = field($3, "seconds_process_start") + 0; SH[nr] = field($3, "seconds_connect") + 0; SQ[nr] = field($3, "seconds_polled") + 0; if (field($3, "copies_equal") != "true") bad++ }
    $1 == "copy" { nc++; C[nc] = field($3, "mb_s") + 0 }
    $1 == "copy2" { no++; O[no] = field($3, "mb_s") + 0 }
    $1 == "tcp" { nt++; T[nt] = field($3, "mb_s") + 0 }
    END {
      r = median(R, nr); rc = median(RC, nr); sc = median(SC, nr); c = median(C, nc); o = (no ? median(O, no) : 0); t = median(T, nt)
      disk = (o > c) ? o : c; lim = (disk < t) ? disk : t
      print "| resync (bytes; s from secondary start / copy phase) | mirrord resync (from start / copy phase) | raw O_DIRECT file copy, same bytes (serial / reads and writes overlapped) | loopback TCP | resync / min(best copy, TCP) (from start / copy phase) | goal |"
      print "|---|---:|---:|---:|---:|---:|"
      printf "| %.0f MiB; %.2f s / %.2f s | %.0f / %.0f MB/s | %.0f / %.0f MB/s | %.0f MB/s | %.0f%% / %.0f%% | ≥ 80%% %s |\n", B / 1048576, median(S, nr), sc, r, rc, c, o, t, 100 * r / lim, 100 * rc / lim, (r / lim >= 0.8) ? "met" : "**missed**"
      printf "\nFrom the secondary'"'"'s start to the primary'"'"'s \"resync complete\" (medians): process start to listening %.2f s, to \"resync started\" (dial, handshake) %.2f s, copy phase %.2f s; the status poll saw synchronized after %.2f s.\n", median(SP, nr), median(SH, nr), sc, median(SQ, nr)
      if (bad) print "\n**copies differ after resync in " bad " run(s)**"
      else print "\nAfter every resync the region set is byte-identical on both copies."
    }' "$RS"
fi
echo
log "raw results: $RAW"
