#!/bin/bash
# nbdcopy against mirrord: round-trip a 64 MiB random image (single and
# multi-connection, TCP and Unix socket) and check sparse copies stay sparse.
. "$(dirname "$0")/lib.sh"
require nbdcopy sha256sum truncate dd du

MiB=$((1024 * 1024))
SIZE=$((64 * MiB))

head -c $SIZE /dev/urandom >"$T/src.img"
SRC_SUM=$(sha256sum <"$T/src.img" | cut -d' ' -f1)

# Mostly-zero source: fully allocated (written zeroes, not holes, so nbdcopy
# must detect zeroes itself) with 3 MiB of random data in three places.
dd if=/dev/zero of="$T/sparse-src.img" bs=1M count=64 status=none
for off in 0 20 63; do
    dd if=/dev/urandom of="$T/sparse-src.img" bs=1M count=1 seek=$off conv=notrunc status=none
done
SPARSE_SUM=$(sha256sum <"$T/sparse-src.img" | cut -d' ' -f1)

truncate -s $SIZE "$T/a.img" "$T/b.img" "$T/sparse.img"
# A destination that starts full of non-zero data: zeroed areas must really
# be zeroed, not skipped.
head -c $SIZE /dev/urandom >"$T/dirty.img"

start_mirrord --listen 127.0.0.1:0 --listen "unix:$T/sock" \
    --export a="$T/a.img" --export b="$T/b.img" \
    --export sparse="$T/sparse.img" --export dirty="$T/dirty.img"

roundtrip() { # roundtrip LABEL URI EXTRA-NBDCOPY-ARGS...
    local label=$1 uri=$2; shift 2
    rm -f "$T/out.img"
    if ! check "[$label] nbdcopy src.img -> $uri $*" nbdcopy "$@" "$T/src.img" "$uri"; then return; fi
    if ! check "[$label] nbdcopy $uri -> out.img $*" nbdcopy "$@" "$uri" "$T/out.img"; then return; fi
    check_eq "[$label] sha256 of data copied out equals the source" "$SRC_SUM" "$(sha256sum <"$T/out.img" | cut -d' ' -f1)"
    check_eq "[$label] size of data copied out" "$SIZE" "$(stat -c %s "$T/out.img")"
}

roundtrip "tcp, 1 conn" "$(tcp_uri a)" --connections 1
check_eq "[tcp] backing file a.img has the source content" "$SRC_SUM" "$(sha256sum <"$T/a.img" | cut -d' ' -f1)"
roundtrip "unix, 1 conn" "$(unix_uri b)" --connections 1
check_eq "[unix] backing file b.img has the source content" "$SRC_SUM" "$(sha256sum <"$T/b.img" | cut -d' ' -f1)"

# Overwrite a with something else first so the multi-conn run must change it.
truncate -s $SIZE "$T/zero.img"
check "overwrite export a with zeroes (nbdcopy from an empty sparse file)" nbdcopy "$T/zero.img" "$(tcp_uri a)"
check_eq "export a is all zeroes after copying from an empty file" \
    "$(sha256sum <"$T/zero.img" | cut -d' ' -f1)" "$(sha256sum <"$T/a.img" | cut -d' ' -f1)"
roundtrip "tcp, 4 conns" "$(tcp_uri a)" --connections 4 --requests 32
check_eq "[tcp, 4 conns] backing file a.img has the source content" "$SRC_SUM" "$(sha256sum <"$T/a.img" | cut -d' ' -f1)"
roundtrip "unix, 4 conns" "$(unix_uri b)" --connections 4 --requests 32

# Export to export copy (two NBD endpoints, both on mirrord).
check "nbdcopy export a -> export dirty (nbd to nbd, 4 conns)" \
    nbdcopy --connections 4 "$(tcp_uri a)" "$(unix_uri dirty)"
check_eq "dirty.img now equals the source" "$SRC_SUM" "$(sha256sum <"$T/dirty.img" | cut -d' ' -f1)"

# --- sparseness -------------------------------------------------------------
check "[sparse] nbdcopy mostly-zero source -> export sparse" \
    nbdcopy --connections 4 "$T/sparse-src.img" "$(tcp_uri sparse)"
check_eq "[sparse] backing file content equals the source" "$SPARSE_SUM" "$(sha256sum <"$T/sparse.img" | cut -d' ' -f1)"
alloc=$(alloc_bytes "$T/sparse.img")
if [ "$alloc" -le $((8 * MiB)) ]; then
    pass "[sparse] backing file stays sparse: $alloc bytes allocated for 3 MiB of data (du: $(du -h "$T/sparse.img" | cut -f1))"
else
    fail "[sparse] backing file not sparse: $alloc bytes allocated (du $(du -h "$T/sparse.img" | cut -f1)) for 3 MiB of data in a 64 MiB image; expected <= 8 MiB"
fi

# Copy the mostly-zero source over an export full of random data: the zero
# areas must read back as zeroes, and (WRITE_ZEROES may punch holes) the file
# should become sparse too.
check "[sparse] nbdcopy mostly-zero source -> export dirty (full of random data)" \
    nbdcopy --connections 2 "$T/sparse-src.img" "$(unix_uri dirty)"
check_eq "[sparse] dirty.img content equals the mostly-zero source" "$SPARSE_SUM" "$(sha256sum <"$T/dirty.img" | cut -d' ' -f1)"
alloc=$(alloc_bytes "$T/dirty.img")
if [ "$alloc" -le $((8 * MiB)) ]; then
    pass "[sparse] previously fully allocated dirty.img became sparse: $alloc bytes allocated"
else
    fail "[sparse] zeroing via nbdcopy did not deallocate dirty.img: $alloc bytes allocated for 3 MiB of data; expected <= 8 MiB"
fi
rm -f "$T/out.img"
check "[sparse] nbdcopy export sparse -> out.img" nbdcopy "$(tcp_uri sparse)" "$T/out.img"
check_eq "[sparse] data copied out equals the source" "$SPARSE_SUM" "$(sha256sum <"$T/out.img" | cut -d' ' -f1)"

mirrord_alive || die "mirrord died"
stop_mirrord
finish
