#!/usr/bin/env bash
# resize-stall.sh: how long `mirrorctl resize` holds a busy writer.
#
# A mirrored pair of sparse FROM-byte backing files, fio QD1 4 KiB random
# writes to the first GiB through the primary (NBD over a Unix socket) for
# RUNTIME seconds and
# `mirrorctl resize` to TO bytes AT seconds in; then the same without a
# resize for reference. Prints one row per run: the resize command's time,
# how long the primary held writes (its log), and fio's write completion
# latency max / p99.9 / p99.
#
#   bench/resize-stall.sh [FROM [TO [RUNS]]]     defaults: 1T 2T 3
#
# Environment: BUILD_DIR (default: build/ of this checkout), WORK_DIR (where
# the temporary directory goes, default /var/tmp: a real disk, whose page
# cache the resize's sync must write out), GRAN (bitmap granularity, 64K),
# RUNTIME (12), AT (4), DAEMON_CPUS / FIO_CPUS (taskset lists, default: no
# pinning), KEEP=1 (keep the directory: the last run's logs),
# REFERENCE=0 (no runs without a resize). Needs fio with its nbd engine, python3.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
B=${BUILD_DIR:-$here/build}
FROM=${1:-1T}; TO=${2:-2T}; RUNS=${3:-3}
GRAN=${GRAN:-64K}; RUNTIME=${RUNTIME:-12}; AT=${AT:-4}
for x in "$B/mirrord" "$B/mirrorctl"; do
    [ -x "$x" ] || { echo "resize-stall: no $x (set BUILD_DIR)" >&2; exit 2; }
done
command -v fio >/dev/null || { echo "resize-stall: fio not found" >&2; exit 2; }

W=$(mktemp -d "${WORK_DIR:-/var/tmp}/resize-stall.XXXXXX")
PIDS=()
stop_pair() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
cleanup() { stop_pair; if [ -n "${KEEP:-}" ]; then echo "# kept $W"; else rm -rf "$W"; fi; }
trap cleanup EXIT
# pin CPUS CMD...: run (exec: started with &, $! is CMD's pid) on CPUS.
pin() { local cpus=$1; shift; if [ -n "$cpus" ]; then exec taskset -c "$cpus" "$@"; else exec "$@"; fi; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

node_toml() {  # NAME LETTER PORT
    printf '[[node]]\nname = "%s"\naddress = "127.0.0.1:%s"\n' "$1" "$3"
    printf 'backing = "%s"\nmetadata = "%s"\n' "$W/$2.img" "$W/$2.meta"
    printf 'nbd-listen = ["unix:%s"]\ncontrol = "%s"\n' "$W/$2.nbd" "$W/$2.ctl"
}

write_config() {  # SIZE PORT-A PORT-B
    {
        printf '[volume]\nname = "rs"\nsize = "%s"\n' "$1"
        printf 'secret = "0123456789abcdef-secret"\nprimary = "alpha"\n'
        printf 'initial-sync = "skip"\nbitmap-granularity = "%s"\n' "$GRAN"
        node_toml alpha a "$2"
        node_toml beta b "$3"
    } >"$W/vol.toml"
    chmod 600 "$W/vol.toml"
}

# one_run TO|none: prints "resize-s held-ms max-ms p99.9-ms p99-ms iops"
one_run() {
    local to=$1 pa pb i t0 t1 rs=- held=-
    rm -f "$W"/*.meta* "$W"/*.log "$W"/*.ready "$W"/fio.json
    # The images are kept from run to run, cut back to FROM: what fio wrote
    # stays, the grown area goes (a hole). Deleting them would free some
    # 50,000 4 KiB extents, minutes on a filesystem mounted with discard.
    truncate -s "$FROM" "$W/a.img" "$W/b.img"
    sync   # each run starts with no dirty pages left by the one before
    pa=$(free_port); pb=$(free_port)
    write_config "$FROM" "$pa" "$pb"
    (pin "${DAEMON_CPUS:-}" "$B/mirrord" --config "$W/vol.toml" --node beta \
        --ready-file "$W/beta.ready" >"$W/beta.log" 2>&1) &
    PIDS+=($!)
    (pin "${DAEMON_CPUS:-}" "$B/mirrord" --config "$W/vol.toml" --node alpha \
        --ready-file "$W/alpha.ready" >"$W/alpha.log" 2>&1) &
    PIDS+=($!)
    for i in $(seq 400); do
        "$B/mirrorctl" --socket "$W/a.ctl" status --json 2>/dev/null | grep -q '"synchronized"' && break
        [ "$i" = 400 ] && { echo "resize-stall: the pair did not synchronize" >&2; exit 1; }
        sleep 0.05
    done
    (pin "${FIO_CPUS:-}" fio --name=w --ioengine=nbd --uri="nbd+unix:///rs?socket=$W/a.nbd" \
        --rw=randwrite --bs=4k --iodepth=1 --size=1g --time_based --runtime="$RUNTIME" \
        --output-format=json --output="$W/fio.json" >/dev/null 2>&1) &
    local fio=$!
    sleep "$AT"
    if [ "$to" != none ]; then
        write_config "$to" "$pa" "$pb"
        t0=$(date +%s.%N)
        "$B/mirrorctl" --socket "$W/a.ctl" resize >"$W/resize.out" 2>&1 \
            || { echo "resize-stall: resize failed: $(cat "$W/resize.out")" >&2; exit 1; }
        t1=$(date +%s.%N)
        rs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
        held=$(sed -n 's/.*writes held for \([0-9]*\) ms.*/\1/p' "$W/alpha.log" | tail -n 1)
        held=${held:--}
    fi
    wait "$fio" || { echo "resize-stall: fio failed" >&2; exit 1; }
    stop_pair
    python3 - "$W/fio.json" "$rs" "$held" <<'EOF'
import json, sys
w = json.load(open(sys.argv[1]))["jobs"][0]["write"]
c = w["clat_ns"]
p = c["percentile"]
print("%8s %8s %9.1f %9.2f %9.2f %7.0f" % (sys.argv[2], sys.argv[3], c["max"] / 1e6,
      p["99.900000"] / 1e6, p["99.000000"] / 1e6, w["iops"]))
EOF
}

echo "# $B/mirrord, $FROM -> $TO, fio QD1 4K randwrite ${RUNTIME}s, resize at ${AT}s, $W"
printf "%-10s %3s %8s %8s %9s %9s %9s %7s\n" case run resize-s held-ms max-ms p99.9-ms p99-ms iops
for r in $(seq "$RUNS"); do
    printf "%-10s %3s " "resize" "$r"; one_run "$TO"
done
[ "${REFERENCE:-1}" = 0 ] && exit 0
for r in $(seq "$RUNS"); do
    printf "%-10s %3s " "no-resize" "$r"; one_run none
done
