#!/bin/bash
# read-repair-load: reads answered by the secondary's copy while writes to the
# same blocks keep coming. alpha's disk cannot read 1 MiB in the middle of a
# writer's window (MIRRORD_FAULTS=read-eio: unreadable for good, so every read
# of it goes to beta and rewrites it here). A repair reads beta's copy and
# rewrites alpha's; if a client write could land between the two, the older
# data would overwrite it on alpha only. What a user checks:
#   - the readers (8 in flight, random 4-64 KiB ranges, many across the bad
#     range) never get an error, and the writer none;
#   - every acknowledged write is on alpha's export (read through the repair
#     path) and on beta's image, and the two images are identical;
#   - the link never dropped; status counts the reads beta answered;
#   - a read and a write of the same block sent together, block by block
#     over the unreadable MiB: both images hold every write afterwards (the
#     test fails this way when the repair skips the interlock).
. "$(dirname "$0")/pairlib.sh"

VOL_SIZE=64M
VOL_EXTRA='initial-sync = "skip"'
W=$((8 * MiB)) WIN=$((4 * MiB)) BAD=$((9 * MiB + 512 * 1024))
have_ctl || skip "read-repair-load needs mirrorctl"

setup_pair
must_start beta
start_with_faults alpha "read-eio=$BAD:$MiB"
wait_state alpha synchronized 30 >/dev/null || die "the pair did not synchronize"
log_mark alpha

start_writer w "$(nbd_unix_uri alpha)" $W $WIN --qd 8 --seed 31
wait_acks w 200 30 || die "the writer did not start"
# Readers: 8 requests in flight, random ranges of the window; any error is
# counted and the first few printed.
"$PY" - "$(nbd_unix_uri alpha)" $W $WIN $BAD $MiB >"$T/readers.out" 2>&1 <<'PYEOF' &
import random, sys, time
import nbd
uri, w, win, bad, badlen = sys.argv[1], *map(int, sys.argv[2:])
h = nbd.NBD(); h.connect_uri(uri)
rng = random.Random(7)
errors = reads = across = 0
inflight = []
def done(n, err):
    global errors
    if err.value:
        errors += 1
        if errors <= 3: print("read error", err.value, file=sys.stderr)
    return 1
end = time.time() + 8
while time.time() < end:
    while h.aio_in_flight() < 8:
        n = rng.choice([4096, 16384, 65536])
        off = w + rng.randrange(0, (win - n) // 4096) * 4096
        if off < bad + badlen and bad < off + n: across += 1
        buf = nbd.Buffer(n)
        h.aio_pread(buf, off, completion=lambda err, b=buf: done(b, err))
        reads += 1
    h.poll(-1)
while h.aio_in_flight() > 0: h.poll(-1)
h.shutdown()
print(reads, across, errors)
PYEOF
READERS=$!
wait "$READERS"; rrc=$?
read -r reads across rerrors <"$T/readers.out" || true
check_eq "the readers ran to the end" 0 "$rrc"
[ "${across:-0}" -ge 100 ] && pass "$reads reads, $across of them across alpha's unreadable MiB" \
    || fail "only ${across:-0} reads across the unreadable range: $(cat "$T/readers.out")"
check_eq "no read failed" 0 "${rerrors:-x}"
n=$(status_get alpha .reads_from_peer)
[ "$n" -ge "$across" ] && pass "alpha: $n reads answered by beta's copy" \
    || fail "alpha counted $n reads answered by beta, fewer than the $across across the range"
finish_writer w "$(nbd_unix_uri alpha)" $W $WIN 5000
verify_writes "beta's image holds every acknowledged write" w --image "${NODE_IMG[beta]}" $W $WIN

# The tightest race, block by block: a read of a block of the unreadable MiB
# and a write of new data to it, sent together. The write must not be
# overwritten by the repair's older data: alpha's image and beta's must hold
# the new data of every block afterwards.
"$PY" - "$(nbd_unix_uri alpha)" $BAD $MiB >"$T/pairs.out" 2>&1 <<'PYEOF'
import sys
import nbd
uri, bad, badlen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
h = nbd.NBD(); h.connect_uri(uri)
for i, off in enumerate(range(bad, bad + badlen, 4096)):
    rbuf = nbd.Buffer(4096)
    c1 = h.aio_pread(rbuf, off)
    c2 = h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray([i % 251 + 1]) * 4096), off)
    while h.aio_in_flight() > 0:
        h.poll(-1)
    h.aio_command_completed(c1)  # raises if the command failed
    h.aio_command_completed(c2)
h.flush()
h.shutdown()
print("ok")
PYEOF
check_eq "256 reads each sent together with a write of the same block: no error" ok "$(tail -n1 "$T/pairs.out")"
want=$("$PY" -c 'import hashlib
print(hashlib.sha256(b"".join(bytes([i % 251 + 1]) * 4096 for i in range(256))).hexdigest())')
for n in alpha beta; do
    check_eq "$n's image holds every one of those writes" "$want" \
        "$("$PY" -c 'import hashlib,sys
f = open(sys.argv[1], "rb"); f.seek(int(sys.argv[2])); print(hashlib.sha256(f.read(int(sys.argv[3]))).hexdigest())' \
            "${NODE_IMG[$n]}" $BAD $MiB)"
done
check_identical "after reads repaired under writes"
d=$(link_drops alpha beta)
[ -z "$d" ] && pass "the link stayed up" || fail "the link dropped: $d"
pair_finish
