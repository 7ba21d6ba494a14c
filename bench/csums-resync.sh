#!/usr/bin/env bash
# Checksum-based resync (resync-checksums, DRBD's csums-alg) against plain
# copies, over a rate-limited link. A new pair with initial-sync = "full"
# (a full resync of the whole volume) on two network namespaces joined by a
# veth pair shaped by tbf to RATE each way. The two images start as copies of
# one random image (fully allocated: no holes to skip), beta's with PCT percent
# of its 64K regions changed; then, for reference, with every region different
# (the worst case for checksums: it reads both copies and still sends it all).
# Prints one row per case: the resync's seconds (from the primary's
# "resync started" to "resync complete" log lines), the resync bytes the
# secondary received (its status), the bytes alpha's end of the link sent
# (veth counters: data, headers, TCP) and the bytes found identical.
#
#   bench/csums-resync.sh                        # SIZE=512M PCT=1 RATE=100mbit
#   SIZE=256M RATE=50mbit bench/csums-resync.sh
#
# Needs root (ip netns, tc). Runs the daemons on CPU_LIST (0). The images stay
# in the page cache (they are written just before): the disks are not what is
# measured, the link is. Environment: SIZE, PCT, RATE, CPU_LIST,
# BENCH_DIR (/var/tmp/csums-resync), BUILD_DIR / MIRRORD / MIRRORCTL.
set -euo pipefail

SIZE=${SIZE:-512M}
PCT=${PCT:-1}
RATE=${RATE:-100mbit}
CPU_LIST=${CPU_LIST:-0}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$REPO/build}
MIRRORD=${MIRRORD:-$BUILD_DIR/mirrord}
MIRRORCTL=${MIRRORCTL:-$BUILD_DIR/mirrorctl}
BENCH_DIR=${BENCH_DIR:-/var/tmp/csums-resync}
PY=/usr/bin/python3

for b in "$MIRRORD" "$MIRRORCTL"; do
  [ -x "$b" ] || { echo "csums-resync: $b is missing (build it first)" >&2; exit 2; }
done
mkdir -p "$BENCH_DIR"
D=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
NSA=csums-a-$$ NSB=csums-b-$$ VA=csa$$ VB=csb$$
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$NSA" 2>/dev/null || true
  ip netns del "$NSB" 2>/dev/null || true
  rm -f "$D"/*.img
}
trap cleanup EXIT

ip netns add "$NSA"
ip netns add "$NSB"
ip link add "$VA" netns "$NSA" type veth peer name "$VB" netns "$NSB"
ip -n "$NSA" addr add 10.213.0.1/24 dev "$VA"
ip -n "$NSB" addr add 10.213.0.2/24 dev "$VB"
for ns in "$NSA" "$NSB"; do ip -n "$ns" link set lo up; done
ip -n "$NSA" link set "$VA" up
ip -n "$NSB" link set "$VB" up
ip netns exec "$NSA" tc qdisc add dev "$VA" root tbf rate "$RATE" burst 64kb latency 100ms
ip netns exec "$NSB" tc qdisc add dev "$VB" root tbf rate "$RATE" burst 64kb latency 100ms

BYTES=$("$PY" -c 'import sys; s=sys.argv[1]; m={"K":1<<10,"M":1<<20,"G":1<<30}; print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))' "$SIZE")

# images MODE: alpha random; beta a copy with PCT% of its regions changed
# (MODE=some) or another random image (MODE=all).
images() {
  "$PY" - "$D" "$BYTES" "$PCT" "$1" <<'EOF'
import os, random, sys
d, size, pct, mode = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
g = 64 << 10
r = random.Random(11)
with open(f"{d}/alpha.img", "wb") as a, open(f"{d}/beta.img", "wb") as b:
    for _ in range(size >> 20):
        blk = r.randbytes(1 << 20)
        a.write(blk)
        b.write(blk if mode == "some" else os.urandom(1 << 20))
if mode == "some":
    regions = r.sample(range(size // g), max(1, int(size // g * pct / 100)))
    with open(f"{d}/beta.img", "r+b") as b:
        for i in regions:
            b.seek(i * g + 4096)
            b.write(os.urandom(4096))
    print(len(regions) * g)
else:
    print(size)
EOF
}

config() {  # config CHECKSUMS
  {
    printf '[volume]\nname = "bench"\nsize = "%s"\nsecret = "csums-resync-bench-secret"\n' "$SIZE"
    printf 'primary = "alpha"\ninitial-sync = "full"\nbitmap-granularity = "64K"\nresync-checksums = %s\n' "$1"
    local n ip
    for n in alpha beta; do
      ip=10.213.0.1; [ $n = beta ] && ip=10.213.0.2
      printf '\n[[node]]\nname = "%s"\naddress = "%s:7788"\nbacking = "%s/%s.img"\n' "$n" "$ip" "$D" "$n"
      printf 'metadata = "%s/%s.meta"\nnbd-listen = ["unix:%s/%s.nbd"]\ncontrol = "%s/%s.ctl"\n' \
        "$D" "$n" "$D" "$n" "$D" "$n"
    done
  } >"$D/vol.toml"
  chmod 600 "$D/vol.toml"
}

field() {  # field NODE JQ-PATH
  "$MIRRORCTL" --socket "$D/$1.ctl" status --json 2>/dev/null | jq -r "$2"
}
tx_bytes() {  # tx_bytes NS DEV
  ip -n "$1" -s -j link show dev "$2" | jq '.[0].stats64.tx.bytes'
}

# run LABEL MODE CHECKSUMS: one full resync; prints the table's row.
run() {
  local label=$1 mode=$2 csums=$3 differ a0 a1 b0 b1 i n
  differ=$(images "$mode")
  rm -f "$D"/*.meta "$D"/*.log
  config "$csums"
  PIDS=()
  for n in alpha beta; do
    local ns=$NSA; [ $n = beta ] && ns=$NSB
    ip netns exec "$ns" taskset -c "$CPU_LIST" "$MIRRORD" --config "$D/vol.toml" --node $n \
      --log-level info >"$D/$n.log" 2>&1 &
    PIDS+=($!)
  done
  a0=$(tx_bytes "$NSA" "$VA") b0=$(tx_bytes "$NSB" "$VB")
  for i in $(seq 1 36000); do
    [ "$(field alpha .state)" = synchronized ] && break
    sleep 0.1
  done
  [ "$(field alpha .state)" = synchronized ] || { echo "csums-resync: $label did not finish" >&2; exit 1; }
  a1=$(tx_bytes "$NSA" "$VA") b1=$(tx_bytes "$NSB" "$VB")
  local recv same secs
  recv=$(field beta .resynced_bytes_total)
  same=$(field alpha .resync_same_bytes_total)
  secs=$("$PY" - "$D/alpha.log" <<'EOF'
import re, sys
t = {}
for line in open(sys.argv[1]):
    for k in ("resync started", "resync complete"):
        if k in line:
            h, m, s = line.split()[0].split(":")
            t[k] = int(h) * 3600 + int(m) * 60 + float(s)
print(f"{t['resync complete'] - t['resync started']:.1f}")
EOF
)
  for i in "${PIDS[@]}"; do kill -TERM "$i"; done
  for i in "${PIDS[@]}"; do wait "$i" || true; done
  PIDS=()
  cmp -s "$D/alpha.img" "$D/beta.img" || { echo "csums-resync: $label: the images differ after the resync" >&2; exit 1; }
  printf '| %-24s | %-9s | %9s | %7s | %11s | %11s | %11s | %11s |\n' "$label" "$csums" \
    "$((differ >> 10))K" "$secs" "$recv" "$((a1 - a0))" "$((b1 - b0))" "$same"
}

echo "full resync of $SIZE over a $RATE link (tbf both ways), daemons on CPU $CPU_LIST"
printf '| %-24s | %-9s | %9s | %7s | %11s | %11s | %11s | %11s |\n' "target" "checksums" "differs" \
  "seconds" "resync recv" "link a->b" "link b->a" "identical"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..26})" "-----------" "-----------" \
  "---------" "-------------" "-------------" "-------------" "-------------"
run "${PCT}% of regions differ" some false
run "${PCT}% of regions differ" some true
run "every region differs" all false
run "every region differs" all true
echo "(run directory: $D; logs kept)"
