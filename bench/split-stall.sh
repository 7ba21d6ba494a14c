#!/usr/bin/env bash
# The split's write stall at QD32 (issue 4: goal < 10 ms). A mirrored pair on
# loopback takes a 4K random write load at QD32 (build/nbdload, every request
# traced with its wall-clock start and latency); meanwhile the mirror is split
# and rejoined SPLITS times. Prints, per class of request, the count, p99 and
# max latency:
#   split   - in flight at any moment of a `mirrorctl split` call
#   rejoin  - in flight between a rejoin and the return to synchronized
#   steady  - every other request
# and the daemon's own split_drain_us (status .last_split.drain_us: from the
# split request to every mirrored write acknowledged and flushed on the peer).
#
#   bench/split-stall.sh                 # SPLITS=10
#   SPLITS=20 GAP=1 bench/split-stall.sh
#
# Environment: SPLITS (10), GAP seconds between steps (0.5), SIZE (1G),
# REGION written by the load (64M: each rejoin then resyncs at most that),
# LOAD_SECONDS (40; the splits stop early if the load ends first),
# BENCH_DIR (/var/tmp/split-stall), BUILD_DIR / MIRRORD / MIRRORCTL / NBDLOAD.
set -euo pipefail

SPLITS=${SPLITS:-10}
GAP=${GAP:-0.5}
SIZE=${SIZE:-1G}
REGION=${REGION:-64M}
LOAD_SECONDS=${LOAD_SECONDS:-40}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$REPO/build}
MIRRORD=${MIRRORD:-$BUILD_DIR/mirrord}
MIRRORCTL=${MIRRORCTL:-$BUILD_DIR/mirrorctl}
NBDLOAD=${NBDLOAD:-$BUILD_DIR/nbdload}
BENCH_DIR=${BENCH_DIR:-/var/tmp/split-stall}
PY=/usr/bin/python3

for b in "$MIRRORD" "$MIRRORCTL" "$NBDLOAD"; do
  [ -x "$b" ] || { echo "split-stall: $b is missing (build it first)" >&2; exit 2; }
done
mkdir -p "$BENCH_DIR"
D=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -f "$D"/*.img
}
trap cleanup EXIT

# Two free loopback ports for the replication link.
read -r PA PB < <("$PY" -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
for n in alpha beta; do fallocate -l "$SIZE" "$D/$n.img"; done
{
  printf '[volume]\nname = "bench"\nsize = "%s"\nsecret = "split-stall-bench-secret"\n' "$SIZE"
  printf 'primary = "alpha"\ninitial-sync = "skip"\n'
  for n in alpha beta; do
    port=$PA; [ $n = beta ] && port=$PB
    printf '\n[[node]]\nname = "%s"\naddress = "127.0.0.1:%s"\nbacking = "%s/%s.img"\n' "$n" "$port" "$D" "$n"
    printf 'metadata = "%s/%s.meta"\nnbd-listen = ["unix:%s/%s.nbd"]\ncontrol = "%s/%s.ctl"\n' \
      "$D" "$n" "$D" "$n" "$D" "$n"
  done
} >"$D/vol.toml"
chmod 600 "$D/vol.toml"

for n in alpha beta; do
  "$MIRRORD" --config "$D/vol.toml" --node $n --ready-file "$D/$n.ready" --log-level info \
    >"$D/$n.log" 2>&1 &
  PIDS+=($!)
done
ctl() { "$MIRRORCTL" --socket "$D/alpha.ctl" "$@"; }
state() { ctl status --json 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null || true; }
wait_state() {
  local i
  for i in $(seq 1 600); do [ "$(state)" = "$1" ] && return 0; sleep 0.1; done
  echo "split-stall: alpha never reached '$1' (now '$(state)')" >&2; exit 1
}
wait_state synchronized
now_us() { date +%s%6N; }

"$NBDLOAD" --uri "nbd+unix:///bench?socket=$D/alpha.nbd" --op write --bs 4k --qd 32 \
  --pattern rand --size-limit "$REGION" --warmup 1 --seconds "$LOAD_SECONDS" --trace "$D/trace.txt" >"$D/load.json" &
LOAD=$!
sleep 2
: >"$D/events.txt"
for i in $(seq 1 "$SPLITS"); do
  kill -0 $LOAD 2>/dev/null || { echo "split-stall: the load ended after $((i - 1)) splits (raise LOAD_SECONDS)" >&2; break; }
  t0=$(now_us); ctl split >/dev/null; t1=$(now_us)
  drain=$(ctl status --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["last_split"]["drain_us"])')
  echo "split $t0 $t1 $drain" >>"$D/events.txt"
  sleep "$GAP"
  t0=$(now_us); ctl rejoin --wait >/dev/null; t1=$(now_us)
  echo "rejoin $t0 $t1 0" >>"$D/events.txt"
  sleep "$GAP"
done
wait $LOAD

"$PY" - "$D/trace.txt" "$D/events.txt" "$D/load.json" <<'EOF'
import json, sys
trace = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
events = [l.split() for l in open(sys.argv[2])]
load = json.loads(open(sys.argv[3]).read())
win = {"split": [], "rejoin": []}
drains = []
for kind, t0, t1, d in events:
    win[kind].append((int(t0), int(t1)))
    if kind == "split":
        drains.append(int(d))
classes = {"split": [], "rejoin": [], "steady": []}
for start, lat in trace:
    end = start + lat
    for kind in ("split", "rejoin"):
        if any(start <= t1 and end >= t0 for t0, t1 in win[kind]):
            classes[kind].append(lat)
            break
    else:
        classes["steady"].append(lat)
def pct(v, p):
    return v[min(len(v) - 1, int(p * len(v)))] if v else 0.0
print(f"load: {load['iops']:.0f} IOPS 4K random writes at QD32, mean {load['mean_us']:.0f} us, "
      f"{len(drains)} splits")
print(f"{'class':8} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
for k, v in classes.items():
    v.sort()
    print(f"{k:8} {len(v):9d} {pct(v, .5) / 1000:8.2f} {pct(v, .99) / 1000:8.2f} "
          f"{(v[-1] if v else 0) / 1000:8.2f}")
drains.sort()
if drains:
    print(f"split_drain_us: min {drains[0]}, median {pct(drains, .5)}, max {drains[-1]}")
EOF
echo "(run directory: $D; logs, trace.txt and events.txt kept)"
