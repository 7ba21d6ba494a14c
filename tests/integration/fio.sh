#!/bin/bash
# fio's NBD engine (libnbd) against mirrord: random 4k writes at queue depth 32
# with crc32c verification, then a separate read-only verify pass, over TCP and
# a Unix socket; plus a mixed random read/write verify job with several jobs
# (connections) in parallel. fio must report zero errors.
. "$(dirname "$0")/lib.sh"
require fio /usr/bin/python3 truncate

MiB=$((1024 * 1024))
SIZE=$((64 * MiB))
fio --enghelp 2>/dev/null | grep -qw nbd || skip "this fio has no nbd ioengine"

truncate -s $SIZE "$T/tcp.img" "$T/unix.img"
truncate -s $((4 * SIZE)) "$T/mixed.img"
start_mirrord --listen 127.0.0.1:0 --listen "unix:$T/sock" \
    --export tcp="$T/tcp.img" --export unix="$T/unix.img" --export mixed="$T/mixed.img"

COMMON=(--bs=4k --iodepth=32 "--size=$SIZE" --verify=crc32c
        --verify_fatal=1 --randrepeat=1 --randseed=1234 --group_reporting)

for t in tcp unix; do
    if [ $t = tcp ]; then uri=$(tcp_uri $t); else uri=$(unix_uri $t); fi
    run_fio "[$t] randwrite 4k qd32 64M with crc32c verify" rw -- \
        --name=randwrite-$t --ioengine=nbd --uri="$uri" --rw=randwrite "${COMMON[@]}"
    # (engine options such as --uri must follow --ioengine on the command line.)
    # Separate read pass from a fresh connection: re-verify everything that
    # was written (same seed -> same offsets and verify headers).
    run_fio "[$t] read-only verify pass of the randwrite data" r -- \
        --name=randwrite-$t --ioengine=nbd --uri="$uri" --rw=randwrite --verify_only=1 "${COMMON[@]}"
    mirrord_alive || die "mirrord died during fio [$t]"
done

# The data also landed in the backing files (fio's verify headers carry the
# offset, so a correct 64 MiB file has no all-zero 4k block left).
check "[tcp] backing file fully written (no all-zero 4k blocks left)" /usr/bin/python3 - "$T/tcp.img" <<'EOF'
import sys
z = bytes(4096); n = 0
with open(sys.argv[1], "rb") as f:
    while (b := f.read(4096)):
        n += b == z
print(f"{n} all-zero 4k blocks")
sys.exit(1 if n else 0)
EOF

# Mixed read/write with 4 jobs, each its own connection and region, mixed
# block sizes: exercises multi-conn and concurrent I/O.
run_fio "[tcp] 4 jobs (4 connections) randrw bs 512..64k qd16 with verify" rw -- \
    --name=mixed --ioengine=nbd --uri="$(tcp_uri mixed)" --rw=randrw --rwmixread=30 \
    --bsrange=512-64k --bs_unaligned=0 --iodepth=16 --numjobs=4 --size=$SIZE \
    --offset_increment=$SIZE --verify=crc32c --verify_fatal=1 --verify_backlog=256 \
    --group_reporting
run_fio "[unix] 2 jobs sequential write 1M qd8 with md5 verify" rw -- \
    --name=seq --ioengine=nbd --uri="$(unix_uri mixed)" --rw=write --bs=1M --iodepth=8 \
    --numjobs=2 --size=$((32 * MiB)) --offset_increment=$((32 * MiB)) --verify=md5 \
    --verify_fatal=1 --group_reporting

mirrord_alive || die "mirrord died during fio"
stop_mirrord
finish
