#!/bin/bash
# qemu-io / qemu-img against mirrord: pattern writes and reads, FUA, discard,
# write-zeroes (plain, may-unmap, no-fallback), aio, unaligned I/O, flush; then
# qemu-img compare with a local reference that got the same writes, qemu-img
# map / info, and qemu-img convert in and out.
. "$(dirname "$0")/lib.sh"
require qemu-io qemu-img cmp truncate

MiB=$((1024 * 1024))
SIZE=$((16 * MiB))

for t in tcp unix; do
    truncate -s $SIZE "$T/disk-$t.img" "$T/ref-$t.img" "$T/conv-$t.img"
done
head -c $SIZE /dev/urandom >"$T/src.img"

start_mirrord --listen 127.0.0.1:0 --listen "unix:$T/sock" \
    --export disk-tcp="$T/disk-tcp.img" --export disk-unix="$T/disk-unix.img" \
    --export conv-tcp="$T/conv-tcp.img" --export conv-unix="$T/conv-unix.img"

# qemu_io LABEL TARGET qemu-io-command...: run, pass iff exit 0 and no
# pattern/IO failure in the output.
qemu_io() {
    local label=$1 target=$2; shift 2
    local args=() c
    for c in "$@"; do args+=(-c "$c"); done
    local out rc
    out=$(qemu-io -f raw "${args[@]}" "$target" 2>&1); rc=$?
    if [ $rc -eq 0 ] && ! grep -qiE 'fail|error|not supported|denied' <<<"$out"; then
        pass "$label"
    else
        fail "$label (qemu-io exit $rc; target $target; commands: $*)"
        printf '%s\n' "$out" | grep -iE 'fail|error|not supported|denied' | head -n 10 | sed 's/^/    | /'
        return 1
    fi
}

WRITES=(
    "write -P 0xab 0 1M"
    "write -f -P 0xcd 1M 1M"                 # FUA
    "write -P 0xef 2M 2M"
    "discard 2M 1M"                          # TRIM: reads back zeroes
    "write -P 0x11 4M 3M"
    "write -z 4M 512k"                       # WRITE_ZEROES + NO_HOLE
    "write -z -u 4608k 512k"                 # WRITE_ZEROES, may punch
    "aio_write -P 0x22 8M 64k"
    "aio_write -P 0x23 8256k 64k"
    "aio_write -f -P 0x24 8320k 64k"
    "aio_flush"
    "writev -P 0x33 9M 4k 8k 512"            # vectored, ends unaligned
    "write -P 0x44 10486272 1000"            # unaligned offset and length
    "write -P 0x55 12582911 3"               # straddles a 4k boundary
    "write -P 0x66 16773120 4096"            # last 4k of the export
    "flush"
)
READS=(
    "read -P 0xab 0 1M"
    "read -P 0xcd 1M 1M"
    "read -P 0 2M 1M"
    "read -P 0xef 3M 1M"
    "read -P 0 4M 2M"
    "read -P 0x11 6M 1M"
    "read -P 0 7M 1M"
    "read -P 0x22 8M 64k"
    "read -P 0x23 8256k 64k"
    "read -P 0x24 8320k 64k"
    "read -P 0x33 9M 12800"
    "read -P 0 9449984 1036288"
    "read -P 0x44 10486272 1000"
    "read -P 0 10487272 2095639"
    "read -P 0x55 12582911 3"
    "read -P 0x66 16773120 4096"
    "readv -P 0xab 0 4k 4k 512"
    "aio_read -P 0xcd 1M 4k"
    "aio_read -P 0 2M 4k"
    "aio_flush"
)

for t in tcp unix; do
    if [ $t = tcp ]; then uri=$(tcp_uri disk-$t); curi=$(tcp_uri conv-$t)
    else uri=$(unix_uri disk-$t); curi=$(unix_uri conv-$t); fi
    ref="$T/ref-$t.img"

    qemu_io "[$t] local reference: same writes" "$ref" "${WRITES[@]}"
    qemu_io "[$t] local reference: write -z -u -n" "$ref" "write -z -u -n 5M 1M"
    qemu_io "[$t] local reference: read-back patterns (sanity of the test itself)" "$ref" "${READS[@]}"

    qemu_io "[$t] qemu-io writes (pattern, FUA, discard, write -z, -z -u, aio, writev, unaligned, flush) on $uri" \
        "$uri" "${WRITES[@]}"
    qemu_io "[$t] qemu-io write -z -u -n (WRITE_ZEROES with FAST_ZERO) 5M..6M" "$uri" "write -z -u -n 5M 1M"
    qemu_io "[$t] qemu-io read-back of every pattern and of the discarded/zeroed ranges as zeroes" \
        "$uri" "${READS[@]}"
    # Same connection writes then reads (one qemu-io session, -c chain).
    qemu_io "[$t] write/read/discard/zero chain in one session" "$uri" \
        "write -P 0x77 14M 256k" "read -P 0x77 14M 256k" "discard 14M 128k" "read -P 0 14M 128k" \
        "read -P 0x77 14464k 128k" "write -z 14464k 64k" "read -P 0 14M 192k" "read -P 0x77 14528k 64k" \
        "write -P 0 14M 256k" "flush"
    check "[$t] qemu-img compare export vs local reference" \
        qemu-img compare -f raw -F raw "$uri" "$ref"
    check "[$t] backing file equals the local reference byte for byte" cmp "$T/disk-$t.img" "$ref"

    size=$(qemu-img info --output=json "$uri" 2>&1 | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])' 2>&1)
    check_eq "[$t] qemu-img info virtual-size" "$SIZE" "$size"

    # Block status as qemu sees it: the discarded MiB at 2M reads as zero and
    # is not data.
    if qemu-img map --output=json -f raw "$uri" >"$T/map-$t.json" 2>&1; then
        check "[$t] qemu-img map: discarded range 2M..3M is reported zero and not data" \
            /usr/bin/python3 - "$T/map-$t.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
lo, hi = 2 << 20, 3 << 20
bad = [e for e in m if e["start"] < hi and e["start"] + e["length"] > lo and (not e["zero"] or e["data"])]
cov = sum(min(hi, e["start"] + e["length"]) - max(lo, e["start"]) for e in m
          if e["start"] < hi and e["start"] + e["length"] > lo)
if bad or cov != hi - lo:
    print("bad entries:", bad, "coverage:", cov); sys.exit(1)
data = [e for e in m if e["start"] < (1 << 20) and not e["data"]]
if data:
    print("written range 0..1M not reported as data:", data); sys.exit(1)
EOF
    else
        fail "[$t] qemu-img map $uri failed: $(cat "$T/map-$t.json")"
    fi
    # The discard punched a hole in the backing file (qemu-img map on the
    # local file uses SEEK_DATA/SEEK_HOLE).
    qemu-img map --output=json -f raw "$T/disk-$t.img" >"$T/bmap-$t.json" 2>&1
    check "[$t] backing file: discarded range 2M..3M is a hole" /usr/bin/python3 - "$T/bmap-$t.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
lo, hi = 2 << 20, 3 << 20
bad = [e for e in m if e["start"] < hi and e["start"] + e["length"] > lo and e["data"]]
if bad:
    print("allocated entries in discarded range:", bad); sys.exit(1)
EOF

    # --- convert in and out -------------------------------------------------
    check "[$t] qemu-img convert src.img -> export (-n, 8 coroutines, out-of-order)" \
        qemu-img convert -n -W -m 8 -f raw -O raw "$T/src.img" "$curi"
    check "[$t] backing file of convert target equals src.img" cmp "$T/src.img" "$T/conv-$t.img"
    rm -f "$T/out-$t.img"
    check "[$t] qemu-img convert export -> out.img" \
        qemu-img convert -f raw -O raw "$curi" "$T/out-$t.img"
    check "[$t] converted-out image equals src.img" cmp "$T/src.img" "$T/out-$t.img"
    check "[$t] qemu-img compare export vs src.img" qemu-img compare -f raw -F raw "$curi" "$T/src.img"
    # A mismatch must be detected (guards against a vacuous compare).
    qemu_io "[$t] flip one byte in the export" "$curi" "write -P 0x5a 7340033 1"
    qemu-img compare -q -f raw -F raw "$curi" "$T/src.img"; rc=$?
    check_eq "[$t] qemu-img compare detects a one-byte difference (exit 1)" 1 $rc

    mirrord_alive || die "mirrord died during [$t] checks"
done

stop_mirrord
finish
