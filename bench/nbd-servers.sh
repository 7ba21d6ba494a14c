#!/usr/bin/env bash
# Runs the same loads against mirrord and, in the same run, nbdkit's file plugin,
# qemu-nbd and nbd-server, each on a fresh preallocated file of the same kind, all
# pinned the same way, and prints a markdown table of the results and of the ratio
# mirrord / best peer. Raw per-run JSON goes to bench/results/<timestamp>.json.
#
#   bench/nbd-servers.sh                      # RUNS=3 runs of SECONDS=10 s per row
#   SECONDS=2 RUNS=1 bench/nbd-servers.sh     # smoke run
#
# Environment (all optional):
#   SECONDS / BENCH_SECONDS  measured seconds per run (10)    RUNS    runs per row, median (3)
#   WARMUP     unmeasured seconds at the start of every run (2)
#   PIN        same: servers and client on CPU 1 (default); split: servers on CPU 1,
#              client on CPU 0; none: no pinning
#   SCHED      other (default) or fifo: run servers and client as SCHED_FIFO 10
#   TRANSPORT  tcp (default, 127.0.0.1) or unix
#   SERVERS    subset/order of: mirrord nbdkit qemu-nbd nbd-server mirrord-base
#              (mirrord-base: the mirrord binary MIRRORD_BASE, say a build of main,
#              measured in the same run for a before/after; never counted as a peer)
#   ROWS       subset/order of: w4k-qd1 w4k-qd32 r4k-qd1 r4k-qd32 w1m-qd8 fua4k-qd1 fua4k-qd32
#   SIZE       backing file size (1G)     BENCH_DIR  where backing files go (/var/tmp/mirrord-bench)
#   BUILD_DIR  where mirrord and nbdload are (<repo>/build); MIRRORD, NBDLOAD override each
#   NBDKIT_ARGS, QEMU_NBD_ARGS, NBD_SERVER_OPTS, MIRRORD_ARGS  override a server's tuning
#   DROP_CACHES  1 (default): sync and drop the page cache before each server
#   CPU_COST   1: also print what each request costs CPU 1: the server's processes (all
#              threads, children included) and the rest (client, softirq), in us per request,
#              with context switches per request (bench/cpu-cost.sh); 0 (default): off
set -euo pipefail

# SECONDS is bash's own clock: take the caller's value before anything else runs.
RUN_SECONDS=${BENCH_SECONDS:-$(printenv SECONDS || echo 10)}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-2}
PIN=${PIN:-same}
TRANSPORT=${TRANSPORT:-tcp}
SERVERS=${SERVERS:-mirrord nbdkit qemu-nbd nbd-server}
ROWS=${ROWS:-w4k-qd1 w4k-qd32 r4k-qd1 r4k-qd32 w1m-qd8 fua4k-qd1 fua4k-qd32}
SIZE=${SIZE:-1G}
DROP_CACHES=${DROP_CACHES:-1}
SCHED=${SCHED:-other}
CPU_COST=${CPU_COST:-0}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$REPO/build}
NBDLOAD=${NBDLOAD:-$BUILD_DIR/nbdload}
MIRRORD=${MIRRORD:-$BUILD_DIR/mirrord}
MIRRORD_BASE=${MIRRORD_BASE:-}
BENCH_DIR=${BENCH_DIR:-/var/tmp/mirrord-bench}
RESULTS_DIR=$REPO/bench/results

# Each peer's best-performing sane configuration (see docs/benchmarks.md):
# nbdkit: page-cache I/O, 16 threads/connection (defaults); FUA = fdatasync.
NBDKIT_ARGS=${NBDKIT_ARGS:-}
# qemu-nbd: its default page-cache mode (writeback) with io_uring: measured faster here
# than --cache=none (O_DIRECT) with native or io_uring AIO on every row but FUA QD32.
QEMU_NBD_ARGS=${QEMU_NBD_ARGS:---cache=writeback --aio=io_uring}
# nbd-server: flush/fua/trim advertised; its FUA is sync_file_range() on the range.
# (splice = true doubles the 1M row but costs 30-40% on the 4K rows here.)
NBD_SERVER_OPTS=${NBD_SERVER_OPTS:-flush = true|fua = true|trim = true}
MIRRORD_ARGS=${MIRRORD_ARGS:-}

case $PIN in
  same) SRV_PIN=(taskset -c 1); CLI_PIN=(taskset -c 1) ;;
  split) SRV_PIN=(taskset -c 1); CLI_PIN=(taskset -c 0) ;;
  none) SRV_PIN=(); CLI_PIN=() ;;
  *) echo "PIN must be same, split or none" >&2; exit 2 ;;
esac
# SCHED=fifo runs servers and client as SCHED_FIFO 10 (chrt): on a machine that is
# busy with other work (builds, tests) this keeps that work off the benchmark's CPU,
# which plain pinning does not. Same for every server; off by default.
case $SCHED in
  other) ;;
  fifo) SRV_PIN=(chrt -f 10 "${SRV_PIN[@]}"); CLI_PIN=(chrt -f 10 "${CLI_PIN[@]}") ;;
  *) echo "SCHED must be other or fifo" >&2; exit 2 ;;
esac
[[ $TRANSPORT == tcp || $TRANSPORT == unix ]] || { echo "TRANSPORT must be tcp or unix" >&2; exit 2; }
[[ $RUN_SECONDS =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "bad SECONDS: $RUN_SECONDS" >&2; exit 2; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "bad RUNS: $RUNS" >&2; exit 2; }

log() { printf '[bench] %s\n' "$*" >&2; }

# Build what is missing (never rebuilds what is there: run ninja yourself for that).
for bin in "$NBDLOAD" "$MIRRORD"; do
  if [[ ! -x $bin && $bin == "$BUILD_DIR"/* && -f $BUILD_DIR/build.ninja ]]; then
    log "building $(basename "$bin") in $BUILD_DIR"
    ninja -C "$BUILD_DIR" "$(basename "$bin")" >&2 || true
  fi
done
if [[ ! -x $NBDLOAD ]]; then
  echo "no $NBDLOAD: build it (apt-get install libnbd-dev; cmake ...; ninja -C $BUILD_DIR nbdload)" >&2
  exit 2
fi

# --- rows: name | label | unit (iops or mbs) | nbdload arguments ----------------------
row_label() {
  case $1 in
    w4k-qd1) echo "4K rand write QD1" ;;    w4k-qd32) echo "4K rand write QD32" ;;
    r4k-qd1) echo "4K rand read QD1" ;;     r4k-qd32) echo "4K rand read QD32" ;;
    w1m-qd8) echo "1M seq write QD8" ;;
    fua4k-qd1) echo "4K rand write FUA QD1" ;; fua4k-qd32) echo "4K rand write FUA QD32" ;;
    *) return 1 ;;
  esac
}
row_unit() { [[ $1 == w1m-qd8 ]] && echo mbs || echo iops; }
row_args() {
  case $1 in
    w4k-qd1) echo "--op write --bs 4k --qd 1 --pattern rand" ;;
    w4k-qd32) echo "--op write --bs 4k --qd 32 --pattern rand" ;;
    r4k-qd1) echo "--op read --bs 4k --qd 1 --pattern rand" ;;
    r4k-qd32) echo "--op read --bs 4k --qd 32 --pattern rand" ;;
    w1m-qd8) echo "--op write --bs 1M --qd 8 --pattern seq" ;;
    fua4k-qd1) echo "--op write --bs 4k --qd 1 --pattern rand --fua" ;;
    fua4k-qd32) echo "--op write --bs 4k --qd 32 --pattern rand --fua" ;;
  esac
}
for r in $ROWS; do row_label "$r" >/dev/null || { echo "unknown row $r" >&2; exit 2; }; done

# --- server lifecycle ------------------------------------------------------------------
# All servers run side by side, each on its own file; PID/URI/CMD/DISK are per server.
WORK=""
declare -A PID URI CMD DISK

stop_server() {
  local s=$1 pid=${PID[$1]:-}
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$s did not stop on SIGTERM within 10 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
  PID[$s]=""
}

cleanup() {
  local s
  for s in "${!PID[@]}"; do stop_server "$s"; done
  if [[ -n $WORK && -d $WORK ]]; then rm -rf "$WORK"; fi
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 20000))
    [[ -z $(ss -Hltn "sport = :$p") ]] && { echo "$p"; return; }
  done
}

# wait_ready SERVER tcp PORT | unix PATH | file PATH
# Polls (ss, or the ready file) every 10 ms; fails if the server exits or after 30 s.
wait_ready() {
  local s=$1 kind=$2 where=$3 i
  for i in $(seq 3000); do
    if ! kill -0 "${PID[$s]}" 2>/dev/null; then
      log "$s exited during start-up; its log:"; cat "$WORK/$s.log" >&2; return 1
    fi
    case $kind in
      tcp) [[ -n $(ss -Hltn "sport = :$where") ]] && return 0 ;;
      unix) ss -Hlx | grep -qF " $where " && return 0 ;;
      file) [[ -s $where ]] && return 0 ;;
    esac
    sleep 0.01
  done
  log "$s not ready after 30 s"; return 1
}

# start_server NAME: starts it on ${DISK[NAME]}; sets PID, URI and CMD for it.
start_server() {
  local s=$1 port sock=$WORK/$1.sock disk=${DISK[$1]}
  rm -f "$sock"
  port=$(free_port)
  local -a cmd where
  case $s in
    mirrord|mirrord-base)
      local listen="127.0.0.1:0" bin=$MIRRORD; [[ $TRANSPORT == unix ]] && listen="unix:$sock"
      [[ $s == mirrord-base ]] && bin=$MIRRORD_BASE
      rm -f "$WORK/$s.ready"
      # shellcheck disable=SC2206
      cmd=("$bin" --export "bench=$disk" --listen "$listen" --ready-file "$WORK/$s.ready" $MIRRORD_ARGS)
      ;;
    nbdkit)
      where=(-i 127.0.0.1 -p "$port"); [[ $TRANSPORT == unix ]] && where=(-U "$sock")
      # shellcheck disable=SC2206
      cmd=(nbdkit -f --exit-with-parent "${where[@]}" $NBDKIT_ARGS file "$disk")
      ;;
    qemu-nbd)
      where=(-b 127.0.0.1 -p "$port"); [[ $TRANSPORT == unix ]] && where=(-k "$sock")
      # shellcheck disable=SC2206
      cmd=(qemu-nbd -f raw --persistent $QEMU_NBD_ARGS "${where[@]}" -x bench "$disk")
      ;;
    nbd-server)
      {
        echo "[generic]"
        if [[ $TRANSPORT == unix ]]; then echo "unixsock = $sock"; else
          echo "port = $port"; echo "listenaddr = 127.0.0.1"; fi
        echo "[bench]"
        echo "exportname = $disk"
        tr '|' '\n' <<<"$NBD_SERVER_OPTS"
      } >"$WORK/nbd-server.conf"
      # -d: stay in the foreground; it then serves one connection and exits, so
      # it is started again before every run.
      cmd=(nbd-server -C "$WORK/nbd-server.conf" -d)
      ;;
  esac
  CMD[$s]="${SRV_PIN[*]} ${cmd[*]}"
  "${SRV_PIN[@]}" "${cmd[@]}" >>"$WORK/$s.log" 2>&1 </dev/null &
  PID[$s]=$!
  if [[ $s == mirrord* ]]; then
    wait_ready "$s" file "$WORK/$s.ready" || return 1
    local line kind=tcp
    [[ $TRANSPORT == unix ]] && kind=unix
    line=$(grep -m1 "^$kind " "$WORK/$s.ready") ||
      { log "no $kind line in mirrord's ready file"; return 1; }
    if [[ $kind == tcp ]]; then URI[$s]="nbd://${line#tcp }/bench"
    else URI[$s]="nbd+unix:///bench?socket=${line#unix }"; fi
  elif [[ $TRANSPORT == tcp ]]; then
    wait_ready "$s" tcp "$port" || return 1
    URI[$s]="nbd://127.0.0.1:$port/bench"
  else
    wait_ready "$s" unix "$sock" || return 1
    URI[$s]="nbd+unix:///bench?socket=$sock"
  fi
}

ensure_server() {
  local s=$1
  if [[ -n ${PID[$s]:-} ]] && kill -0 "${PID[$s]}" 2>/dev/null; then return 0; fi
  if [[ -n ${PID[$s]:-} ]]; then wait "${PID[$s]}" 2>/dev/null || true; fi
  PID[$s]=""
  start_server "$s"
}

make_disk() {
  # Same kind of backing file for everyone: preallocated on the real disk, and written
  # once so no server pays for unwritten-extent conversion (or reads holes).
  fallocate -l "$SIZE" "$1"
  dd if=/dev/zero of="$1" bs=1M count="$(($(stat -c %s "$1") >> 20))" \
     oflag=direct conv=notrunc,fsync status=none
}

version_of() {
  case $1 in
    mirrord|mirrord-base)
      local bin=$MIRRORD; [[ $1 == mirrord-base ]] && bin=$MIRRORD_BASE
      "$bin" --version 2>/dev/null | head -1 ||
               echo "mirrord $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '(no commit)')" ;;
    nbdkit) nbdkit --version | head -1 ;;
    qemu-nbd) qemu-nbd --version | head -1 ;;
    nbd-server) nbd-server -V 2>&1 | grep -m1 -i version ;;
  esac
}

# --- main --------------------------------------------------------------------------------
mkdir -p "$BENCH_DIR" "$RESULTS_DIR"
WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW=$RESULTS_DIR/$STAMP.json
RES=$WORK/results.tsv   # server row run json
# shellcheck source=bench/cpu-cost.sh
source "$REPO/bench/cpu-cost.sh"
: >"$RES"

active=()
for s in $SERVERS; do
  case $s in
    mirrord)
      if [[ -x $MIRRORD ]]; then active+=("$s"); else log "skipping mirrord: no $MIRRORD"; fi ;;
    mirrord-base)
      if [[ -x $MIRRORD_BASE ]]; then active+=("$s"); else log "skipping mirrord-base: set MIRRORD_BASE"; fi ;;
    nbdkit|qemu-nbd|nbd-server)
      if command -v "$s" >/dev/null; then active+=("$s"); else log "skipping $s: not installed"; fi ;;
    *) echo "unknown server $s" >&2; exit 2 ;;
  esac
done
((${#active[@]} > 0)) || { echo "no server to run" >&2; exit 2; }

CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
KERNEL=$(uname -r)
FS=$(df -T "$BENCH_DIR" | awk 'NR==2 {print $2 " on " $1}')
declare -A VERSIONS PREFILLED
for s in "${active[@]}"; do VERSIONS[$s]=$(version_of "$s"); done

log "fresh $SIZE backing files in $WORK"
for s in "${active[@]}"; do DISK[$s]=$WORK/$s.img; make_disk "${DISK[$s]}"; PREFILLED[$s]=0; done
if [[ $DROP_CACHES == 1 ]]; then
  sync
  if [[ -w /proc/sys/vm/drop_caches ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
fi
for s in "${active[@]}"; do
  start_server "$s"
  log "$s: ${CMD[$s]}  ->  ${URI[$s]} (CPUs: $(taskset -cp "${PID[$s]}" | sed 's/.*: //'))"
done
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk '{exit !($1 > 1.0)}' /proc/loadavg; then
  log "WARNING: load average is $LOAD_START: something else is using the CPUs; figures will be noisy"
fi

# Row by row; within a row the servers take turns run by run (the first server of each
# run rotates), so a slow drift of the machine spreads over every server alike.
n=${#active[@]}
for r in $ROWS; do
  for i in $(seq "$RUNS"); do
    for k in $(seq 0 $((n - 1))); do
      s=${active[$(((k + i - 1) % n))]}
      ensure_server "$s"
      args=$(row_args "$r")
      # Reads need real data under them: the first read run per server pre-fills the file.
      if [[ $args == *"--op read"* ]]; then
        if ((PREFILLED[$s])); then args+=" --no-prefill"; else PREFILLED[$s]=1; fi
      fi
      # shellcheck disable=SC2086
      if measured_run "$s" "$r" "$i" "${PID[$s]}" "${CLI_PIN[@]}" "$NBDLOAD" --uri "${URI[$s]}" \
           $args --seconds "$RUN_SECONDS" --warmup "$WARMUP" --seed "$i"; then
        out=$(<"$WORK/nbdload.out")
      else
        log "nbdload failed on $s / $r: $(cat "$WORK/nbdload.err")"
        out='{"error":true}'
      fi
      printf '%s\t%s\t%s\t%s\n' "$s" "$r" "$i" "$out" >>"$RES"
      log "$r run $i $s: $out"
      if [[ $s == nbd-server ]]; then  # exits by itself after its one connection
        for _ in $(seq 50); do kill -0 "${PID[$s]}" 2>/dev/null || break; sleep 0.1; done
        stop_server "$s"
      fi
    done
  done
done
for s in "${active[@]}"; do stop_server "$s"; done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- raw JSON -------------------------------------------------------------------------------
json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }
{
  printf '{"timestamp":%s,"cpu":%s,"kernel":%s,"nproc":%s,"pin":%s,"sched":%s,"transport":%s,' \
    "$(json_str "$STAMP")" "$(json_str "$CPU_MODEL")" "$(json_str "$KERNEL")" "$(nproc)" \
    "$(json_str "$PIN")" "$(json_str "$SCHED")" "$(json_str "$TRANSPORT")"
  printf '"seconds":%s,"warmup":%s,"runs":%s,"size":%s,"filesystem":%s,"loadavg_start":%s,"loadavg_end":%s,' \
    "$RUN_SECONDS" "$WARMUP" "$RUNS" "$(json_str "$SIZE")" "$(json_str "$FS")" \
    "$(json_str "$LOAD_START")" "$(json_str "$LOAD_END")"
  printf '"servers":{'
  sep=""
  for s in "${active[@]}"; do
    printf '%s%s:{"version":%s,"command":%s}' "$sep" "$(json_str "$s")" \
      "$(json_str "${VERSIONS[$s]}")" "$(json_str "${CMD[$s]:-}")"
    sep=","
  done
  printf '},"results":['
  sep=""
  while IFS=$'\t' read -r s r i out; do
    printf '%s\n{"server":%s,"row":%s,"run":%s,"result":%s}' "$sep" "$(json_str "$s")" \
      "$(json_str "$r")" "$i" "$out"
    sep=","
  done <"$RES"
  printf ']}\n'
} >"$RAW"

# --- table ------------------------------------------------------------------------------------
pin_desc() {
  case $PIN in
    same) printf 'servers and client on CPU 1 (taskset -c 1)' ;;
    split) printf 'servers on CPU 1, client on CPU 0' ;;
    none) printf 'unpinned' ;;
  esac
  [[ $SCHED == fifo ]] && printf ', SCHED_FIFO 10 (chrt -f 10)'
  echo
}
echo "## NBD servers: same load, same backing file kind, $(pin_desc)"
echo
echo "- date: $STAMP; CPU: $CPU_MODEL ($(nproc) CPUs); kernel: $KERNEL; load avg start/end: $LOAD_START / $LOAD_END"
tdesc="TCP loopback (127.0.0.1)"; [[ $TRANSPORT == unix ]] && tdesc="unix socket"
echo "- transport: $tdesc; backing files: one fresh $SIZE preallocated, written file per server, on $FS"
echo "- each cell: median of $RUNS runs of ${RUN_SECONDS} s, each after ${WARMUP} s warm-up, servers taking turns; one connection; client: nbdload (libnbd aio)"
for s in "${active[@]}"; do echo "- $s: ${VERSIONS[$s]}: \`${CMD[$s]:-}\`"; done
echo "- raw results: ${RAW#"$REPO"/}"
echo

row_labels=""
for r in $ROWS; do row_labels+="$r=$(row_label "$r")|"; done
awk -F'\t' -v servers="${active[*]}" -v rows="$ROWS" -v labels="$row_labels" '
  function field(json, key,   m) {
    if (match(json, "\"" key "\":[-0-9.eE+]+")) {
      m = substr(json, RSTART, RLENGTH); sub(/^[^:]*:/, "", m); return m + 0
    }
    return -1
  }
  function fmt(v, unit) {
    if (v < 0) return "error"
    if (unit == "mbs") return sprintf("%.0f MB/s", v)
    return (v >= 1000) ? sprintf("%.1fk", v / 1000) : sprintf("%.0f", v)
  }
  # median of the values in arr[1..n] (lower median for even n); sets med_idx
  function median(arr, n,   i, j, t, idx) {
    for (i = 1; i <= n; i++) idx[i] = i
    for (i = 2; i <= n; i++) for (j = i; j > 1 && arr[idx[j-1]] > arr[idx[j]]; j--) {
      t = idx[j]; idx[j] = idx[j-1]; idx[j-1] = t
    }
    med_idx = idx[int((n + 1) / 2)]
    return arr[med_idx]
  }
  BEGIN {
    ns = split(servers, S, " "); nr = split(rows, R, " ")
    nl = split(labels, L, "|")
    for (i = 1; i <= nl; i++) if (L[i] != "") { k = L[i]; sub(/=.*/, "", k); v = L[i]; sub(/^[^=]*=/, "", v); LBL[k] = v }
  }
  {
    unit = ($2 == "w1m-qd8") ? "mbs" : "iops"
    key = $1 SUBSEP $2; n[key]++
    if ($4 ~ /"error"/) { val[key, n[key]] = -1 } else { val[key, n[key]] = field($4, (unit == "mbs") ? "mb_s" : "iops") }
    p50[key, n[key]] = field($4, "p50_us"); p99[key, n[key]] = field($4, "p99_us")
  }
  END {
    hdr = "| load |"; sep = "|---|"
    for (j = 1; j <= ns; j++) { hdr = hdr " " S[j] " |"; sep = sep "---:|" }
    has_m = 0; for (j = 1; j <= ns; j++) if (S[j] == "mirrord") has_m = 1
    if (has_m) { hdr = hdr " mirrord / best peer |"; sep = sep "---:|" }
    print hdr; print sep
    for (i = 1; i <= nr; i++) {
      r = R[i]; unit = (r == "w1m-qd8") ? "mbs" : "iops"
      line = "| " LBL[r] " (" ((unit == "mbs") ? "MB/s" : "IOPS") ") |"
      best = -1; bestname = ""; mv = -1
      for (j = 1; j <= ns; j++) {
        key = S[j] SUBSEP r; m = n[key]
        if (m == 0) { line = line " – |"; continue }
        delete a; delete b; delete c
        for (k = 1; k <= m; k++) a[k] = val[key, k]
        med = median(a, m)
        lat[S[j], r] = sprintf("%.0f / %.0f", p50[key, med_idx], p99[key, med_idx])
        line = line " " fmt(med, unit) " |"
        if (S[j] == "mirrord") mv = med
        else if (S[j] != "mirrord-base" && med > best) { best = med; bestname = S[j] }
      }
      if (has_m) {
        if (mv > 0 && best > 0) line = line sprintf(" %.2f× (vs %s) |", mv / best, bestname)
        else line = line " – |"
      }
      print line
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
echo
log "raw results: $RAW"
