#!/bin/bash
# conn-limit: a local user opens as many connections as the server takes
# (512) and says nothing on them. What a user checks:
#   - a real client is still served at once, not after the 30 s handshake
#     timeout: the oldest connection still negotiating makes room;
#   - the log says so in a few lines, not one per connection;
#   - the server survives, and serves normally afterwards.
. "$(dirname "$0")/lib.sh"
require qemu-io
PY=${MIRRORD_IT_PYTHON:-python3}

truncate -s 64M "$T/disk.img"
start_mirrord --listen 127.0.0.1:0 --export disk="$T/disk.img"
URI=$(tcp_uri disk)

mkfifo "$T/idle.in"
# 600 connections that never answer the greeting, held open until
# stdin closes; prints "open N" once they are all connected.
"$PY" -c '
import socket, sys
conns = []
for _ in range(int(sys.argv[3])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
    conns.append(s)
print("open", len(conns), flush=True)
sys.stdin.read()
' "$HOST" "$PORT" 600 <"$T/idle.in" >"$T/idle.out" 2>"$T/idle.err" &
IDLE=$!
exec 7>"$T/idle.in"   # keeps the idlers' stdin open until closed below
wait_for() { local d=$((SECONDS + $1)); shift; until "$@"; do [ $SECONDS -lt $d ] || return 1; sleep 0.1; done; }
wait_for 20 grep -q "^open 600" "$T/idle.out" || fail "the idle connections did not open: $(cat "$T/idle.err")"

t0=$SECONDS
if out=$(timeout 10 qemu-io -f raw "$URI" -c 'write -P 0x5a 0 1M' -c 'flush' -c 'read -P 0x5a 0 1M' 2>&1); then
    pass "a real client wrote and read back in $((SECONDS - t0)) s while 600 idle connections were open (handshake timeout 30 s)"
else
    fail "a real client was not served while 600 idle connections were open: $(tail -n 2 <<<"$out")"
fi
n=$(grep -c "dropping the oldest still negotiating\|refusing connections" "$MIRRORD_LOG")
[ "$n" -ge 1 ] && [ "$n" -le 10 ] && pass "the log says it in $n line(s), not one per connection" \
    || fail "$n log lines about the connection limit (expected 1..10)"
exec 7>&-
wait "$IDLE" 2>/dev/null
mirrord_alive && pass "mirrord survives the idle connections" || die "mirrord died"
check "served normally afterwards" qemu-io -f raw -r "$URI" -c 'read -P 0x5a 0 1M'
stop_mirrord
finish
