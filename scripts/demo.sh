#!/usr/bin/env bash
# demo.sh - two mirrord daemons on this machine mirroring one volume:   sudo ./scripts/demo.sh
#
# Installs the Debian packages (if missing), builds build/mirrord and build/mirrorctl, writes a
# volume file for a pair on loopback (alpha = primary, beta = secondary, two fresh 256 MiB
# sparse images, replication on two free TCP ports), starts both daemons, then:
#   1. mirrorctl status   the pair is synchronized (a new pair first does its full sync)
#   2. nbdcopy            writes 64 MiB of random data through the primary (TCP, --flush);
#                         both backing images have the same sha256
#   3. mirrorctl split    (with --pre/--post hooks) freezes the secondary at that instant
#   4. qemu-io            writes 8 MiB of pattern 0xa5 at 96 MiB to the primary; the secondary,
#                         read over its own NBD socket with nbdcopy, still holds the pre-split
#                         data, and status says split with 8 MiB out of sync
#   5. mirrorctl rejoin --wait   copies back only what changed (resynced bytes = 8 MiB);
#                         both images identical again
#   6. kill -9 beta       during a write load: the primary keeps serving (degraded), the
#                         writes all succeed; beta restarts, resyncs, both images identical
#   7. mirrorctl verify --wait   compares both copies online (SHA-256 per region): 0 out of sync
#   8. mirrorctl resize   grows the volume online to 320 MiB (size raised in the volume file):
#                         both nodes serve the new size, a write past the old end replicates
#   9. SIGTERM            both daemons stop cleanly (exit 0); the images hold what was written
#
# Environment: MIRRORD and MIRRORCTL (use these binaries, skip the build), KEEP=1 (keep the
# temp dir, with the volume file and both daemons' logs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DISK_SIZE=256M
GROW_SIZE=320M        # the resize step grows the volume to this
DATA_MIB=64
PATTERN_OFFSET_MIB=96
PATTERN_MIB=8
LOAD_OFFSET_MIB=160   # the kill -9 step writes LOAD_MIB x 1 MiB from here
LOAD_MIB=24

TMP=
declare -A PID=()     # node name -> mirrord pid
STEP=0

# ------------------------------------------------------------------------- helpers ----
BOLD=; PLAIN=
if [ -t 1 ]; then BOLD=$'\033[1m'; PLAIN=$'\033[0m'; fi
say()  { printf '\n%s[%d] %s%s\n' "$BOLD" "$STEP" "$*" "$PLAIN"; }
step() { STEP=$((STEP + 1)); say "$@"; }
info() { echo "    $*"; }
die()  {
  echo "demo: FAILED: $*" >&2
  if [ -n "$TMP" ]; then
    for n in alpha beta; do
      [ -s "$TMP/$n.log" ] && { echo "---- last lines of $n.log ----" >&2; tail -n 15 "$TMP/$n.log" >&2; }
    done
  fi
  exit 1
}
show() { echo "    \$ $*"; "$@" 2>&1 | sed 's/^/      /'; return "${PIPESTATUS[0]}"; }

cleanup() {
  local n
  for n in "${!PID[@]}"; do
    if kill -0 "${PID[$n]}" 2>/dev/null; then
      kill -TERM "${PID[$n]}" 2>/dev/null || true
      wait "${PID[$n]}" 2>/dev/null || true
    fi
  done
  if [ -n "$TMP" ]; then
    if [ "${KEEP:-0}" = 1 ]; then echo "demo: kept $TMP"; else rm -rf "$TMP"; fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------- setup stages ----
install_deps() {
  step "Debian packages"
  "$ROOT/scripts/install-deps.sh"
}

build_mirrord() {
  if [ -n "${MIRRORD:-}" ]; then
    step "Using MIRRORD=$MIRRORD"
    [ -x "$MIRRORD" ] || die "$MIRRORD is not executable"
    MIRRORCTL=${MIRRORCTL:-$(dirname "$MIRRORD")/mirrorctl}
    [ -x "$MIRRORCTL" ] || die "$MIRRORCTL is not executable (set MIRRORCTL=)"
    return
  fi
  step "Building build/mirrord and build/mirrorctl (RelWithDebInfo)"
  if [ ! -f "$ROOT/build/build.ninja" ]; then
    cmake -S "$ROOT" -B "$ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  fi
  ninja -C "$ROOT/build" mirrord mirrorctl
  MIRRORD=$ROOT/build/mirrord
  MIRRORCTL=$ROOT/build/mirrorctl
}

# free_ports N: N distinct TCP ports that are free on 127.0.0.1 right now (replication
# addresses cannot be port 0: each node must know where its peer listens).
free_ports() {
  python3 - "$1" <<'PYEOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PYEOF
}

write_volume_file() {  # $TMP/vol.toml: one file, identical for both nodes
  local pa pb
  read -r pa pb <<<"$(free_ports 2)"
  cat >"$TMP/vol.toml" <<EOF
[volume]
name = "db"
size = "$DISK_SIZE"
secret = "demo-secret-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
primary = "alpha"
ack-timeout = "2s"

[[node]]
name = "alpha"
address = "127.0.0.1:$pa"
backing = "$TMP/alpha.img"
metadata = "$TMP/alpha.meta"
nbd-listen = ["127.0.0.1:0", "unix:$TMP/alpha.nbd"]
control = "$TMP/alpha.ctl"

[[node]]
name = "beta"
address = "127.0.0.1:$pb"
backing = "$TMP/beta.img"
metadata = "$TMP/beta.meta"
nbd-listen = ["unix:$TMP/beta.nbd"]
control = "$TMP/beta.ctl"
EOF
  chmod 600 "$TMP/vol.toml"   # it holds an inline secret: mirrord refuses it otherwise
}

# start_node NAME: start mirrord for node NAME of $TMP/vol.toml; returns once it has written
# its ready file. Sets PID[NAME]; for alpha also PORT (its NBD TCP port).
start_node() {
  local name=$1 ready=$TMP/$1.ready
  rm -f "$ready"
  "$MIRRORD" --config "$TMP/vol.toml" --node "$name" --ready-file "$ready" \
    --log-level info >>"$TMP/$name.log" 2>&1 &
  PID[$name]=$!
  local i
  for i in $(seq 200); do   # wait for the readiness signal, not a guess
    [ -s "$ready" ] && break
    kill -0 "${PID[$name]}" 2>/dev/null || { unset "PID[$name]"; die "mirrord ($name) exited at start"; }
    [ "$i" -lt 200 ] || die "mirrord ($name) wrote no ready file in 10 s"
    sleep 0.05
  done
  info "mirrord $name pid ${PID[$name]} is ready; its ready file says:"
  sed 's/^/      /' "$ready"
  if [ "$name" = alpha ]; then
    PORT=$(awk '$1=="tcp"{n=split($2,a,":"); print a[n]; exit}' "$ready")
    [[ $PORT =~ ^[0-9]+$ ]] || die "no tcp line in $ready: $(cat "$ready")"
  fi
}

stop_node() {
  local name=$1 rc=0
  kill -TERM "${PID[$name]}"
  wait "${PID[$name]}" || rc=$?
  unset "PID[$name]"
  [ "$rc" = 0 ] || die "mirrord ($name) exited with status $rc after SIGTERM"
  info "mirrord $name exited with status 0"
}

ctl() { "$MIRRORCTL" --socket "$TMP/$1.ctl" "${@:2}"; }
# status_field NODE KEY: one field of `mirrorctl status --json`
status_field() {
  ctl "$1" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}
# wait_state NODE STATE [SECONDS]
wait_state() {
  local node=$1 want=$2 secs=${3:-60} i s=
  for i in $(seq $((secs * 10))); do
    s=$(status_field "$node" state 2>/dev/null || true)
    [ "$s" = "$want" ] && return 0
    sleep 0.1
  done
  die "$node: state is '$s' after ${secs} s, expected '$want'"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }
mib() { awk -v b="$1" 'BEGIN{printf "%.1f MiB", b/1048576}'; }
size_bytes() { numfmt --from=iec "$1"; }   # 256M -> 268435456
same_images() {  # both backing files hold the same bytes; prints the digest
  local a b
  a=$(sha "$TMP/alpha.img"); b=$(sha "$TMP/beta.img")
  info "alpha.img sha256 $a"
  info "beta.img  sha256 $b"
  [ "$a" = "$b" ] || die "the two copies differ"
  SAME=$a
}

# ------------------------------------------------------------------ demo stages ----
demo_pair() {
  TMP=$(mktemp -d /tmp/mirrord-demo.XXXXXX)
  local src=$TMP/source.bin expected=$TMP/expected.img back=$TMP/secondary-readback.img
  local unix_a="nbd+unix:///db?socket=$TMP/alpha.nbd" unix_b="nbd+unix:///db?socket=$TMP/beta.nbd"
  truncate -s "$DISK_SIZE" "$TMP/alpha.img" "$TMP/beta.img"
  write_volume_file

  step "Starting the pair: beta (secondary) and alpha (primary) on loopback"
  show cat "$TMP/vol.toml"
  start_node beta
  start_node alpha
  local tcp_a="nbd://127.0.0.1:$PORT/db"
  info "waiting for the initial full sync ..."
  wait_state alpha synchronized 120

  step "mirrorctl status: the pair is synchronized"
  show ctl alpha status
  show ctl beta status

  step "nbdcopy: write $DATA_MIB MiB of random data through the primary (TCP)"
  head -c "${DATA_MIB}M" /dev/urandom >"$src"
  info "source sha256 $(sha "$src")"
  show nbdcopy --flush "$src" "$tcp_a" || die "nbdcopy write failed"
  info "the reply to every write came after both copies had it (protocol C):"
  same_images
  local presplit=$SAME
  [ "$(head -c "${DATA_MIB}M" "$TMP/beta.img" | sha256sum | cut -d' ' -f1)" = "$(sha "$src")" ] ||
    die "beta.img does not start with the source data"
  info "beta.img starts with the source data: match"

  # read the resync counter now: while split, status reports it as 0
  local before after
  before=$(status_field alpha resynced_bytes_total)

  step "mirrorctl split: freeze the secondary at this instant (hooks around the quiesce)"
  show ctl alpha split --pre 'echo "pre hook: here an application would flush its state"' \
    --post 'echo "post hook: writes are flowing again"' --timeout 30 || die "split failed"
  show ctl alpha status

  step "qemu-io: write $PATTERN_MIB MiB of pattern 0xa5 at $PATTERN_OFFSET_MIB MiB to the primary after the split"
  local out
  info "\$ qemu-io -f raw -c 'write -P 0xa5 ${PATTERN_OFFSET_MIB}M ${PATTERN_MIB}M' -c flush $unix_a"
  out=$(qemu-io -f raw -c "write -P 0xa5 ${PATTERN_OFFSET_MIB}M ${PATTERN_MIB}M" -c flush \
          "$unix_a" 2>&1) || { echo "$out"; die "qemu-io failed"; }
  printf '      %s\n' "${out//$'\n'/$'\n'      }"
  grep -q "^wrote $((PATTERN_MIB * 1048576))/" <<<"$out" || die "qemu-io did not write the pattern"

  step "The secondary still holds the pre-split image"
  show nbdcopy "$unix_b" "$back" || die "nbdcopy read from the secondary failed"
  info "beta over NBD  sha256 $(sha "$back")"
  info "pre-split      sha256 $presplit"
  [ "$(sha "$back")" = "$presplit" ] || die "the secondary changed after the split"
  info "match: a stable point-in-time image, ready for a backup"
  show ctl alpha status
  local state oos
  state=$(status_field alpha state); oos=$(status_field alpha out_of_sync_bytes)
  [ "$state" = split ] || die "alpha state is '$state', expected split"
  [ "$oos" -ge $((PATTERN_MIB * 1048576)) ] || die "alpha has $oos bytes out of sync, expected >= $PATTERN_MIB MiB"
  info "out of sync: $(mib "$oos") (written after the split: $PATTERN_MIB MiB)"

  step "mirrorctl rejoin --wait: copy back only what changed"
  show ctl alpha rejoin --wait || die "rejoin failed"
  after=$(status_field alpha resynced_bytes_total)
  info "mirrorctl status --json: resynced_bytes_total $before (before the split) -> $after"
  info "resynced $(mib $((after - before))) (written after the split: $PATTERN_MIB MiB, of a $DISK_SIZE volume)"
  if [ $((after - before)) -lt $((PATTERN_MIB * 1048576)) ] ||
     [ $((after - before)) -gt $(((PATTERN_MIB + 4) * 1048576)) ]; then
    die "resynced $((after - before)) bytes, expected about $PATTERN_MIB MiB"
  fi
  [ "$(status_field alpha state)" = synchronized ] || die "not synchronized after rejoin --wait"
  same_images
  # what the volume must hold: the source, zeros, the pattern, zeros
  truncate -s "$DISK_SIZE" "$expected"
  dd if="$src" of="$expected" conv=notrunc status=none
  head -c "${PATTERN_MIB}M" /dev/zero | tr '\0' '\245' |
    dd of="$expected" bs=1M seek="$PATTERN_OFFSET_MIB" conv=notrunc status=none
  [ "$SAME" = "$(sha "$expected")" ] || die "the copies differ from the expected image"
  info "and both equal the expected image (source + pattern): match"

  step "kill -9 the secondary during a write load: the primary keeps serving"
  # LOAD_MIB writes of 1 MiB (pattern = index), each its own qemu-io connection
  (
    for i in $(seq 1 "$LOAD_MIB"); do
      qemu-io -f raw -c "write -P $i $((LOAD_OFFSET_MIB + i - 1))M 1M" -c flush "$unix_a" \
        >/dev/null 2>&1 || { echo "write $i failed" >"$TMP/load.err"; exit 1; }
      echo "$i" >"$TMP/load.progress"
    done
  ) &
  local load=$! i done_at_kill
  for i in $(seq 200); do   # kill once the load is under way
    [ "$(cat "$TMP/load.progress" 2>/dev/null || echo 0)" -ge 3 ] && break
    sleep 0.05
  done
  done_at_kill=$(cat "$TMP/load.progress" 2>/dev/null || echo 0)
  info "\$ kill -9 ${PID[beta]}   (beta, after $done_at_kill of $LOAD_MIB writes)"
  kill -9 "${PID[beta]}"
  wait "${PID[beta]}" 2>/dev/null || true
  unset "PID[beta]"
  wait_state alpha degraded 30
  wait "$load" || die "a write failed while the secondary was down: $(cat "$TMP/load.err" 2>/dev/null)"
  info "all $LOAD_MIB writes succeeded"
  show ctl alpha status
  oos=$(status_field alpha out_of_sync_bytes)
  [ "$oos" -gt 0 ] || die "degraded, yet nothing out of sync"

  step "Restart the secondary: it resyncs the changed regions"
  start_node beta
  wait_state alpha synchronized 120
  show ctl alpha status
  info "resynced_bytes_total now $(mib "$(status_field alpha resynced_bytes_total)")"
  same_images
  for i in $(seq 1 "$LOAD_MIB"); do   # the load's data really is there
    head -c 1M /dev/zero | tr '\0' "\\$(printf '%03o' "$i")" |
      dd of="$expected" bs=1M seek=$((LOAD_OFFSET_MIB + i - 1)) conv=notrunc status=none
  done
  [ "$SAME" = "$(sha "$expected")" ] || die "the copies differ from the expected image"
  info "and both equal the expected image (source + pattern + load): match"

  step "mirrorctl verify --wait: compare both copies online, region by region"
  local vj
  vj=$(ctl alpha verify --wait) || die "verify failed: $vj"
  show ctl alpha status
  local vdone voos
  vdone=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["done_bytes"])' "$vj")
  voos=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["out_of_sync_bytes"])' "$vj")
  info "verify compared $(mib "$vdone") with the peer's copy: $voos bytes out of sync"
  [ "$voos" = 0 ] || die "verify found $voos bytes out of sync"

  step "mirrorctl resize: grow the volume online from $DISK_SIZE to $GROW_SIZE"
  info "\$ sed -i 's/^size = .*/size = \"$GROW_SIZE\"/' vol.toml   (on both hosts; one file here)"
  sed -i "s/^size = .*/size = \"$GROW_SIZE\"/" "$TMP/vol.toml"
  show ctl alpha resize || die "resize failed"
  local grown
  grown=$(size_bytes "$GROW_SIZE")
  for n in alpha beta; do
    [ "$(status_field "$n" size)" = "$grown" ] || die "$n: size $(status_field "$n" size), expected $grown"
  done
  info "both nodes serve $(mib "$grown") now; a new client sees it, and writes past the old end:"
  info "\$ qemu-io -f raw -c 'write -P 0x5a ${DISK_SIZE} 1M' -c flush $unix_a"
  out=$(qemu-io -f raw -c "write -P 0x5a $(size_bytes "$DISK_SIZE") 1M" -c flush "$unix_a" 2>&1) ||
    { echo "$out"; die "qemu-io past the old end failed"; }
  printf '      %s\n' "${out//$'\n'/$'\n'      }"
  wait_state alpha synchronized 60
  same_images

  step "SIGTERM: both daemons stop cleanly"
  stop_node alpha
  stop_node beta
  same_images
  show du -h "$TMP/alpha.img" "$TMP/beta.img"
}

main() {
  [ "$(id -u)" = 0 ] || echo "demo: not root; this works only if every package is installed" >&2
  install_deps
  build_mirrord
  demo_pair
  printf '\n%sdemo: all steps passed%s\n' "$BOLD" "$PLAIN"
}

main "$@"
