#!/usr/bin/python3
"""Protocol semantics a user of mirrord relies on, checked through libnbd
(the library behind nbdsh, nbdinfo, nbdcopy, fio's nbd engine).

Run with /usr/bin/python3 (python3-libnbd). MIRRORD=path/to/mirrord.
"""

import errno
import hashlib
import os
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from itlib import Harness, expect  # noqa: E402

H = Harness("nbdsh")
nbd = H.require_module("nbd", "python3-libnbd")

KiB = 1024
MiB = 1024 * KiB

DISK_SIZE = 64 * MiB
RO_SIZE = 4 * MiB
ALLOC_SIZE = 32 * MiB

disk_path = H.path("disk.img")
ro_path = H.path("ro.img")
alloc_path = H.path("alloc.img")
for p, size in ((disk_path, DISK_SIZE), (alloc_path, ALLOC_SIZE)):
    with open(p, "wb") as f:
        f.truncate(size)
RO_DATA = os.urandom(RO_SIZE)
with open(ro_path, "wb") as f:
    f.write(RO_DATA)
RO_SHA = hashlib.sha256(RO_DATA).hexdigest()
ODD_SIZE = 1000001           # not a multiple of 512
odd_path = H.path("odd.img")
ODD_DATA = os.urandom(ODD_SIZE)
with open(odd_path, "wb") as f:
    f.write(ODD_DATA)

srv = H.start("--listen", "127.0.0.1:0", "--listen", "unix:" + H.path("sock"),
              "--export", "disk=" + disk_path,
              "--export-ro", "ro=" + ro_path,
              "--export", "alloc=" + alloc_path,
              "--export", "odd=" + odd_path,
              "--description", "disk=Main disk")


# ---------------------------------------------------------------- helpers --

def connect(name="disk", transport="tcp", strict=True, meta=True):
    h = nbd.NBD()
    h.set_handle_name(f"{name}-{transport}")
    if meta:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.set_full_info(True)
    if transport == "tcp":
        h.connect_uri(srv.uri(name, "tcp"))
    else:
        h.connect_uri(srv.uri(name, "unix"))
    if not strict:
        h.set_strict_mode(0)
    return h


def expect_errno(fn, want, what):
    """fn() must fail with nbd.Error whose errno is in want (an int or a set)."""
    want = {want} if isinstance(want, int) else set(want)
    try:
        fn()
    except nbd.Error as e:
        expect(e.errnum in want,
               f"{what}: expected {'/'.join(errno.errorcode[w] for w in sorted(want))}, "
               f"got errno {e.errnum} ({e.errno}): {e.string}")
        return e.errnum
    raise AssertionError(f"{what}: expected {'/'.join(errno.errorcode[w] for w in sorted(want))}, but it succeeded")


def backing(path, off, n):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, off)
    finally:
        os.close(fd)


def allocated_in(path, off, length):
    """Bytes of [off, off+length) that SEEK_DATA/SEEK_HOLE report as data."""
    fd = os.open(path, os.O_RDONLY)
    try:
        total, pos, end = 0, off, off + length
        while pos < end:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            if d >= end:
                break
            hole = os.lseek(fd, d, os.SEEK_HOLE)
            total += min(hole, end) - d
            pos = hole
        return total
    finally:
        os.close(fd)


def st_alloc(path):
    return os.stat(path).st_blocks * 512


def extents(h, count, off, flags=0):
    """base:allocation extents as [(offset, length, flags)]."""
    got = []

    def cb(ctx, offset, entries, err):
        if ctx == nbd.CONTEXT_BASE_ALLOCATION:
            o = offset
            for i in range(0, len(entries), 2):
                got.append((o, entries[i], entries[i + 1]))
                o += entries[i]
        return 0
    h.block_status(count, off, cb, flags)
    return got


def status_of(h, off, length):
    """OR / AND of base:allocation flags over [off, off+length)."""
    ex = []
    pos = off
    while pos < off + length:
        e = extents(h, off + length - pos, pos)
        expect(e and e[0][1] > 0, f"block_status at {pos} returned no progress: {e}")
        for o, l, f in e:
            if o >= off + length:
                break
            ex.append((o, l, f))
        pos = e[-1][0] + e[-1][1]
    return ex


def structured_read(h, count, off, flags=0):
    """pread_structured; returns (data, chunks=[(status, offset, len)])."""
    chunks = []

    def cb(sub, offset, status, err):
        chunks.append((status, offset, len(sub)))
        return 0
    data = h.pread_structured(count, off, cb, flags)
    return data, chunks


def chunk_coverage_ok(chunks, off, count):
    spans = sorted((o, o + n) for s, o, n in chunks if s in (nbd.READ_DATA, nbd.READ_HOLE))
    pos = off
    for a, b in spans:
        if a != pos or b <= a:
            return False
        pos = b
    return pos == off + count


# ------------------------------------------------------------------ cases --

def t_handshake():
    h = connect()
    expect(h.get_protocol() == "newstyle-fixed", f"protocol {h.get_protocol()}")
    expect(h.get_structured_replies_negotiated(), "structured replies not negotiated")
    expect(h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION) is True, "base:allocation not negotiated")
    expect(h.get_size() == DISK_SIZE, f"size {h.get_size()} != {DISK_SIZE}")
    caps = {c: getattr(h, "can_" + c)() for c in
            ("fua", "flush", "trim", "zero", "fast_zero", "cache", "df", "multi_conn")}
    missing = [c for c, v in caps.items() if not v]
    expect(not missing, f"capabilities not advertised: {missing}")
    expect(not h.is_read_only(), "rw export reported read-only")
    expect(h.get_export_description() == "Main disk",
           f"description {h.get_export_description()!r}")
    mn, pref, mx = (h.get_block_size(k) for k in (nbd.SIZE_MINIMUM, nbd.SIZE_PREFERRED, nbd.SIZE_MAXIMUM))
    if mn:
        expect(mn <= pref <= mx and mx >= 64 * KiB, f"block sizes min {mn} pref {pref} max {mx}")
    h.shutdown()


def t_opt_mode():
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri(srv.uri("", "unix"))
    names = {}
    h.opt_list(lambda n, d: names.__setitem__(n, d) or 0)
    expect({"disk", "ro", "alloc", "odd"} <= set(names), f"NBD_OPT_LIST gave {names}")
    expect(names["disk"] == "Main disk", f"LIST description of disk: {names['disk']!r}")
    ctxs = []
    h.opt_list_meta_context(lambda c: ctxs.append(c) or 0)
    expect(nbd.CONTEXT_BASE_ALLOCATION in ctxs, f"LIST_META_CONTEXT gave {ctxs}")
    h.set_export_name("ro")
    h.opt_info()
    expect(h.get_size() == RO_SIZE and h.is_read_only(), "OPT_INFO on ro: wrong size or not read-only")
    h.set_export_name("no-such-export")
    try:
        h.opt_info()
        raise AssertionError("OPT_INFO of a non-existent export succeeded")
    except nbd.Error:
        pass
    # The session is still usable after the error: GO to a real export.
    h.set_export_name("alloc")
    h.opt_go()
    expect(h.get_size() == ALLOC_SIZE, f"after failed INFO, GO alloc size {h.get_size()}")
    expect(h.pread(4096, 0) == bytes(4096), "read after opt_go")
    h.shutdown()


def t_fua_write():
    h = connect()
    data = os.urandom(64 * KiB)
    h.pwrite(data, 0, nbd.CMD_FLAG_FUA)
    expect(backing(disk_path, 0, len(data)) == data, "FUA write not in the backing file when the reply came")
    expect(h.pread(len(data), 0) == data, "FUA write not read back")
    h2 = connect(transport="unix")
    expect(h2.pread(len(data), 0) == data, "FUA write not visible on a second connection")
    h.shutdown(); h2.shutdown()


def t_flush():
    h = connect()
    data = os.urandom(1 * MiB)
    h.pwrite(data, 1 * MiB)
    h.flush()
    expect(backing(disk_path, 1 * MiB, len(data)) == data, "data not in the backing file after flush")
    # Flush with FUA flag set on zero/trim too
    h.zero(64 * KiB, 2 * MiB, nbd.CMD_FLAG_FUA)
    h.trim(64 * KiB, 3 * MiB, nbd.CMD_FLAG_FUA)
    h.flush()
    h.shutdown()


def t_trim():
    h = connect()
    off, n = 4 * MiB, 1 * MiB
    data = os.urandom(n)
    h.pwrite(data, off)
    h.flush()
    st = status_of(h, off, n)
    expect(all(f & nbd.STATE_HOLE == 0 for _, _, f in st), f"written range not reported as data: {st}")
    expect(allocated_in(disk_path, off, n) == n, "written range not allocated in the backing file")
    h.trim(n, off)
    expect(h.pread(n, off) == bytes(n), "trimmed range does not read as zeroes")
    st = status_of(h, off, n)
    expect(all(f & nbd.STATE_HOLE for _, _, f in st), f"trimmed range not reported as a hole: {st}")
    expect(all(f & nbd.STATE_ZERO for _, _, f in st), f"trimmed range not reported as zero: {st}")
    expect(allocated_in(disk_path, off, n) == 0,
           f"TRIM did not punch a hole: {allocated_in(disk_path, off, n)} bytes still allocated")
    # partial trim keeps the neighbours
    h.pwrite(data, off)
    h.trim(256 * KiB, off + 256 * KiB)
    got = h.pread(n, off)
    expect(got[:256 * KiB] == data[:256 * KiB] and got[512 * KiB:] == data[512 * KiB:],
           "partial trim damaged neighbouring data")
    expect(got[256 * KiB:512 * KiB] == bytes(256 * KiB), "partially trimmed range not zero")
    h.shutdown()


def t_zero_punch():
    h = connect("alloc")
    off, n = 0, 4 * MiB
    h.pwrite(os.urandom(n), off)
    h.flush()
    expect(allocated_in(alloc_path, off, n) == n, "setup: written data not allocated")
    before = st_alloc(alloc_path)
    h.zero(2 * MiB, 1 * MiB)
    got = h.pread(n, off)
    expect(got[1 * MiB:3 * MiB] == bytes(2 * MiB), "WRITE_ZEROES range does not read as zeroes")
    expect(got[:1 * MiB] != bytes(1 * MiB) and got[3 * MiB:] != bytes(1 * MiB),
           "WRITE_ZEROES touched data outside its range")
    still = allocated_in(alloc_path, 1 * MiB, 2 * MiB)
    after = st_alloc(alloc_path)
    expect(still == 0 and before - after >= 2 * MiB - 64 * KiB,
           f"WRITE_ZEROES without NO_HOLE did not deallocate: {still} bytes still data per SEEK_DATA, "
           f"st_blocks went {before} -> {after} bytes")
    st = status_of(h, 1 * MiB, 2 * MiB)
    expect(all(f & nbd.STATE_ZERO for _, _, f in st), f"zeroed range not reported as zero: {st}")
    h.shutdown()


def t_zero_no_hole():
    h = connect("alloc")
    off, n = 8 * MiB, 4 * MiB
    h.pwrite(os.urandom(n), off)
    h.flush()
    before = st_alloc(alloc_path)
    h.zero(2 * MiB, off + 1 * MiB, nbd.CMD_FLAG_NO_HOLE)
    h.flush()
    got = h.pread(n, off)
    expect(got[1 * MiB:3 * MiB] == bytes(2 * MiB), "WRITE_ZEROES+NO_HOLE range does not read as zeroes")
    expect(got[:1 * MiB] != bytes(1 * MiB) and got[3 * MiB:] != bytes(1 * MiB),
           "WRITE_ZEROES+NO_HOLE touched data outside its range")
    after = st_alloc(alloc_path)
    expect(after >= before - 64 * KiB,
           f"WRITE_ZEROES with NO_HOLE deallocated storage: st_blocks went {before} -> {after} bytes")
    # And on a region that is a hole, NO_HOLE allocates it.
    before = st_alloc(alloc_path)
    h.zero(1 * MiB, 14 * MiB, nbd.CMD_FLAG_NO_HOLE)
    h.flush()
    after = st_alloc(alloc_path)
    expect(after - before >= 1 * MiB - 64 * KiB,
           f"WRITE_ZEROES with NO_HOLE over a hole did not allocate: st_blocks {before} -> {after} bytes")
    expect(h.pread(1 * MiB, 14 * MiB) == bytes(1 * MiB), "NO_HOLE-zeroed hole does not read as zeroes")
    h.shutdown()


def t_fast_zero():
    h = connect()
    off, n = 8 * MiB, 2 * MiB
    data = os.urandom(n)
    h.pwrite(data, off)
    # FAST_ZERO without NO_HOLE: punching a hole is fast, must succeed.
    h.zero(1 * MiB, off, nbd.CMD_FLAG_FAST_ZERO)
    expect(h.pread(1 * MiB, off) == bytes(1 * MiB), "FAST_ZERO range does not read as zeroes")
    expect(h.pread(1 * MiB, off + 1 * MiB) == data[1 * MiB:], "FAST_ZERO touched the next MiB")
    # FAST_ZERO + NO_HOLE: either done (zeroes) or ENOTSUP with data unchanged.
    try:
        h.zero(1 * MiB, off + 1 * MiB, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
        expect(h.pread(1 * MiB, off + 1 * MiB) == bytes(1 * MiB),
               "FAST_ZERO|NO_HOLE succeeded but range does not read as zeroes")
    except nbd.Error as e:
        expect(e.errnum == errno.ENOTSUP, f"FAST_ZERO|NO_HOLE failed with {e.errno}, spec allows only ENOTSUP")
        expect(h.pread(1 * MiB, off + 1 * MiB) == data[1 * MiB:],
               "FAST_ZERO|NO_HOLE failed with ENOTSUP but modified the data")
    h.shutdown()


def t_cache():
    h = connect()
    h.cache(4 * MiB, 0)
    h.cache(DISK_SIZE, 0)
    h.cache(1, DISK_SIZE - 1)
    expect(h.pread(4096, 0) is not None, "read after cache")
    r = connect("ro")
    r.cache(RO_SIZE, 0)
    expect(r.pread(RO_SIZE, 0) == RO_DATA, "ro data after cache")
    h.shutdown(); r.shutdown()


def t_structured_hole():
    h = connect()
    base = 12 * MiB
    h.trim(4 * MiB, base)
    data = os.urandom(64 * KiB)
    h.pwrite(data, base)              # data at [12M, 12M+64K), hole after it
    h.flush()
    got, chunks = structured_read(h, 1 * MiB, base + 1 * MiB)
    expect(got == bytes(1 * MiB), "structured read of a hole is not all zeroes")
    expect(chunk_coverage_ok(chunks, base + 1 * MiB, 1 * MiB),
           f"chunks do not exactly cover the request without overlap: {chunks}")
    expect(any(s == nbd.READ_HOLE for s, _, _ in chunks),
           f"no NBD_REPLY_TYPE_OFFSET_HOLE chunk for a 1 MiB hole (chunks: {chunks})")
    got, chunks = structured_read(h, 512 * KiB, base)
    expect(got[:64 * KiB] == data and got[64 * KiB:] == bytes(512 * KiB - 64 * KiB),
           "structured read of data followed by a hole returned wrong bytes")
    expect(chunk_coverage_ok(chunks, base, 512 * KiB),
           f"chunks do not exactly cover the request without overlap: {chunks}")
    h.shutdown()


def t_df():
    h = connect()
    base = 12 * MiB
    expect(h.can_df(), "DF not advertised")
    got, chunks = structured_read(h, 512 * KiB, base, nbd.CMD_FLAG_DF)
    expect(len(chunks) == 1, f"DF read (data+hole) was fragmented into {len(chunks)} chunks: {chunks}")
    expect(chunks[0][1:] == (base, 512 * KiB), f"DF chunk does not cover the request: {chunks}")
    expect(got[64 * KiB:] == bytes(512 * KiB - 64 * KiB) and got[:64 * KiB] != bytes(64 * KiB),
           "DF read returned wrong data")
    got, chunks = structured_read(h, 1 * MiB, base + 1 * MiB, nbd.CMD_FLAG_DF)
    expect(len(chunks) == 1 and chunks[0][1:] == (base + 1 * MiB, 1 * MiB),
           f"DF read of a hole: expected exactly one chunk covering it, got {chunks}")
    expect(got == bytes(1 * MiB), "DF read of a hole is not zeroes")
    h.shutdown()


def t_block_status():
    h = connect("alloc")
    # [24M, 28M): hole; write 64K at 25M.
    h.trim(4 * MiB, 24 * MiB)
    h.pwrite(os.urandom(64 * KiB), 25 * MiB)
    h.flush()
    ex = status_of(h, 24 * MiB, 4 * MiB)
    want = [(24 * MiB, 1 * MiB, 3), (25 * MiB, 64 * KiB, 0), (25 * MiB + 64 * KiB, 3 * MiB - 64 * KiB, 3)]
    merged = []
    for o, l, f in ex:
        if merged and merged[-1][2] == f and merged[-1][0] + merged[-1][1] == o:
            merged[-1] = (merged[-1][0], merged[-1][1] + l, f)
        else:
            merged.append((o, l, f))
    if merged and merged[-1][0] + merged[-1][1] > 28 * MiB:
        o, l, f = merged[-1]
        merged[-1] = (o, 28 * MiB - o, f)
    expect(merged == want, f"block_status extents {merged}, expected {want}")
    one = extents(h, 4 * MiB, 24 * MiB, nbd.CMD_FLAG_REQ_ONE)
    expect(len(one) == 1 and one[0][2] == 3, f"REQ_ONE: expected exactly one hole extent, got {one}")
    last = extents(h, 4096, ALLOC_SIZE - 4096)
    expect(last and sum(l for _, l, _ in last) <= 4096 and last[0][0] == ALLOC_SIZE - 4096,
           f"block_status of the last 4k reaches past the end: {last}")
    h.shutdown()


def t_read_only():
    r = connect("ro", strict=False)
    expect(r.is_read_only(), "ro export not flagged read-only")
    expect_errno(lambda: r.pwrite(b"x" * 4096, 0), errno.EPERM, "WRITE on ro export")
    expect_errno(lambda: r.pwrite(b"x" * 4096, 0, nbd.CMD_FLAG_FUA), errno.EPERM, "FUA WRITE on ro export")
    expect_errno(lambda: r.trim(4096, 0), errno.EPERM, "TRIM on ro export")
    expect_errno(lambda: r.zero(4096, 0), errno.EPERM, "WRITE_ZEROES on ro export")
    expect_errno(lambda: r.zero(4096, 0, nbd.CMD_FLAG_NO_HOLE), errno.EPERM, "WRITE_ZEROES+NO_HOLE on ro export")
    expect(r.pread(RO_SIZE, 0) == RO_DATA, "ro export data changed or unreadable after rejected writes")
    r.shutdown()
    with open(ro_path, "rb") as f:
        expect(hashlib.sha256(f.read()).hexdigest() == RO_SHA, "ro backing file was modified")


def t_out_of_range():
    h = connect(strict=False)
    S = DISK_SIZE
    expect(h.pread(1, S - 1) is not None, "read of the last byte failed")
    expect_errno(lambda: h.pread(4096, S), errno.EINVAL, "READ at offset == size")
    expect_errno(lambda: h.pread(8192, S - 4096), errno.EINVAL, "READ straddling the end")
    expect_errno(lambda: h.pread(4096, S + 1 * MiB), errno.EINVAL, "READ past the end")
    expect_errno(lambda: h.pread(8192, 2**64 - 4096), errno.EINVAL, "READ with offset+length overflowing 64 bits")
    expect_errno(lambda: h.pwrite(b"w" * 4096, S), errno.ENOSPC, "WRITE at offset == size")
    expect_errno(lambda: h.pwrite(b"w" * 8192, S - 4096), errno.ENOSPC, "WRITE straddling the end")
    expect_errno(lambda: h.pwrite(b"w" * 8192, 2**64 - 4096), {errno.ENOSPC, errno.EINVAL},
                 "WRITE with offset+length overflowing 64 bits")
    expect_errno(lambda: h.zero(8192, S - 4096), {errno.ENOSPC, errno.EINVAL}, "WRITE_ZEROES straddling the end")
    expect_errno(lambda: h.trim(8192, S - 4096), {errno.EINVAL, errno.ENOSPC}, "TRIM straddling the end")
    expect_errno(lambda: h.cache(8192, S - 4096), errno.EINVAL, "CACHE straddling the end")
    expect_errno(lambda: extents(h, 4096, S), errno.EINVAL, "BLOCK_STATUS at offset == size")
    expect(os.stat(disk_path).st_size == DISK_SIZE,
           f"backing file size changed to {os.stat(disk_path).st_size} by out-of-range requests")
    # the straddling write must not have written the in-range part either
    # (spec: error means nothing guaranteed; but the tail must not be extended)
    data = os.urandom(4096)
    h.pwrite(data, S - 4096)
    expect(h.pread(4096, S - 4096) == data, "connection unusable after out-of-range errors")
    h.shutdown()


def t_aio_many():
    h = connect()
    base, slot = 16 * MiB, 64 * KiB
    n = 256
    sizes = [512, 4096, 8192, 65536, 1000, 4096 * 3]
    datas = [os.urandom(sizes[i % len(sizes)]) for i in range(n)]
    order, errs = [], []

    def done(i):
        def cb(err):
            order.append(i)
            if err.value:
                errs.append((i, err.value))
            return 1
        return cb
    bufs = [nbd.Buffer.from_bytearray(bytearray(d)) for d in datas]
    for i in range(n):
        h.aio_pwrite(bufs[i], base + i * slot, done(i), nbd.CMD_FLAG_FUA if i % 7 == 0 else 0)
    peak = h.aio_in_flight()
    while h.aio_in_flight() > 0:
        h.poll(-1)
    expect(not errs, f"aio writes failed: {errs[:5]}")
    expect(sorted(order) == list(range(n)), "not every write completed exactly once")
    # Reads: a big read first, then many small ones, all in flight together.
    rorder, rerrs = [], []

    def rdone(i):
        def cb(err):
            rorder.append(i)
            if err.value:
                rerrs.append((i, err.value))
            return 1
        return cb
    big = nbd.Buffer(n * slot)
    h.aio_pread(big, base, rdone(-1))
    rbufs = [nbd.Buffer(len(d)) for d in datas]
    for i in range(n):
        h.aio_pread(rbufs[i], base + i * slot, rdone(i))
    # and writes to another area interleaved with the reads
    wb = [nbd.Buffer.from_bytearray(bytearray(os.urandom(4096))) for _ in range(64)]
    for j in range(64):
        h.aio_pwrite(wb[j], base + n * slot + j * 4096, rdone(1000 + j))
    peak = max(peak, h.aio_in_flight())
    while h.aio_in_flight() > 0:
        h.poll(-1)
    expect(not rerrs, f"aio reads failed: {rerrs[:5]}")
    for i in range(n):
        expect(rbufs[i].to_bytearray() == datas[i], f"aio read {i} returned wrong data")
    bigb = big.to_bytearray()
    for i in range(n):
        expect(bigb[i * slot:i * slot + len(datas[i])] == datas[i], f"big read: slot {i} wrong")
    for j in range(64):
        expect(h.pread(4096, base + n * slot + j * 4096) == wb[j].to_bytearray(), f"interleaved write {j} lost")
    ooo = sum(1 for a, b in zip(order, sorted(order)) if a != b) + \
        sum(1 for a, b in zip(rorder, [-1] + list(range(n)) + [1000 + j for j in range(64)]) if a != b)
    H.log(f"aio: peak {peak} requests in flight; {ooo} completions arrived out of submission order")
    h.shutdown()


def t_many_connections():
    hs = [connect(transport="tcp" if i % 2 else "unix") for i in range(16)]
    for h in hs:
        expect(h.can_multi_conn(), "multi-conn not advertised")
    base, region = 32 * MiB, 1 * MiB
    datas = [os.urandom(region) for _ in hs]
    errs = []

    def worker(i):
        try:
            h = hs[i]
            for k in range(0, region, 64 * KiB):
                h.pwrite(datas[i][k:k + 64 * KiB], base + i * region + k)
            h.flush()
        except Exception as e:  # noqa: BLE001
            errs.append((i, repr(e)))
    th = [threading.Thread(target=worker, args=(i,)) for i in range(len(hs))]
    for t in th:
        t.start()
    for t in th:
        t.join(120)
    expect(not errs, f"concurrent writers failed: {errs}")
    # every connection sees every other connection's data
    for j, h in enumerate(hs[:4]):
        for i in range(len(hs)):
            expect(h.pread(region, base + i * region) == datas[i],
                   f"connection {j} does not see connection {i}'s flushed data")
    for h in hs:
        h.shutdown()


def t_cross_connection():
    a, b, c = connect(), connect(transport="unix"), connect()
    off = 50 * MiB
    d1 = os.urandom(256 * KiB)
    a.pwrite(d1, off)
    a.flush()
    expect(b.pread(len(d1), off) == d1, "write+flush on A not visible on B")
    d2 = os.urandom(256 * KiB)
    a.pwrite(d2, off)          # completed on A, flushed via B (multi-conn semantics)
    b.flush()
    expect(c.pread(len(d2), off) == d2, "write on A, flush on B: not visible on C")
    b.trim(128 * KiB, off)
    b.flush()
    expect(a.pread(128 * KiB, off) == bytes(128 * KiB), "trim on B not visible on A")
    c.zero(64 * KiB, off + 128 * KiB)
    c.flush()
    expect(a.pread(256 * KiB, off)[128 * KiB:] == bytes(64 * KiB) + d2[192 * KiB:],
           "zero on C not visible on A")
    for h in (a, b, c):
        h.shutdown()


def t_large_and_unaligned():
    h = connect()
    mx = h.get_block_size(nbd.SIZE_MAXIMUM) or 32 * MiB
    n = min(mx, 32 * MiB)
    data = os.urandom(n)
    h.pwrite(data, 0)
    expect(h.pread(n, 0) == data, f"{n}-byte request (max block size {mx}) round trip failed")
    mn = h.get_block_size(nbd.SIZE_MINIMUM)
    if mn in (0, 1):
        for off, ln in ((1, 3), (4095, 2), (12345, 54321), (DISK_SIZE - 7, 7)):
            d = os.urandom(ln)
            h.pwrite(d, off)
            expect(h.pread(ln, off) == d, f"unaligned write/read at {off}+{ln} round trip failed")
            if off + ln + 1 <= DISK_SIZE:
                expect(h.pread(ln + 2, off - 1)[1:-1] == d, f"unaligned read around {off}+{ln} failed")
    else:
        H.log(f"server minimum block size is {mn}; unaligned round trips skipped")
    h.shutdown()


def t_disconnect_then_use():
    for _ in range(20):
        h = connect()
        h.pwrite(b"q" * 4096, 0)
        h.shutdown()
    h = connect()
    expect(h.pread(4096, 0) == b"q" * 4096, "data after repeated connect/write/disconnect")
    h.shutdown()


def t_unaligned_trim_zero():
    h = connect()
    base = 56 * MiB
    for what, fn in (("TRIM", lambda n, o: h.trim(n, o)),
                     ("WRITE_ZEROES", lambda n, o: h.zero(n, o)),
                     ("WRITE_ZEROES+NO_HOLE", lambda n, o: h.zero(n, o, nbd.CMD_FLAG_NO_HOLE)),
                     ("WRITE_ZEROES+FAST_ZERO", lambda n, o: h.zero(n, o, nbd.CMD_FLAG_FAST_ZERO))):
        for off, n in ((100, 1000), (3000, 5000), (4096 - 512, 4096 + 1024), (1, 65534), (4095, 2)):
            data = os.urandom(64 * KiB)
            h.pwrite(data, base)
            fn(n, base + off)
            got = h.pread(64 * KiB, base)
            expect(got[off:off + n] == bytes(n), f"unaligned {what} {off}+{n}: range not zero")
            expect(got[:off] == data[:off] and got[off + n:] == data[off + n:],
                   f"unaligned {what} {off}+{n}: damaged bytes outside the range (rounded to blocks?)")
    h.shutdown()


def t_odd_size():
    h = connect("odd", strict=False)
    expect(h.get_size() == ODD_SIZE, f"export size {h.get_size()}, file size {ODD_SIZE}")
    expect(h.pread(ODD_SIZE, 0) == ODD_DATA, "full read of a 1000001-byte export differs from the file")
    expect(h.pread(1, ODD_SIZE - 1) == ODD_DATA[-1:], "last byte")
    d = os.urandom(3)
    h.pwrite(d, ODD_SIZE - 3, nbd.CMD_FLAG_FUA)
    expect(h.pread(3, ODD_SIZE - 3) == d, "tail write not read back")
    expect(backing(odd_path, ODD_SIZE - 3, 3) == d, "tail write not in the backing file")
    expect(os.stat(odd_path).st_size == ODD_SIZE, "backing file size changed by a tail write")
    expect_errno(lambda: h.pread(2, ODD_SIZE - 1), errno.EINVAL, "READ straddling an odd end")
    expect_errno(lambda: h.pwrite(b"zz", ODD_SIZE - 1), errno.ENOSPC, "WRITE straddling an odd end")
    ex = extents(h, ODD_SIZE, 0)
    expect(ex and ex[-1][0] + ex[-1][1] <= ODD_SIZE, f"block_status past the odd end: {ex[-3:]}")
    h.shutdown()


def t_sigterm_with_clients():
    """SIGTERM with clients in every phase: exit 0 promptly; acknowledged FUA writes are durable."""
    path = H.path("term.img")
    with open(path, "wb") as f:
        f.truncate(16 * MiB)
    s2 = H.start("--listen", "127.0.0.1:0", "--listen", "unix:" + H.path("sock2"), "--export", "term=" + path)
    idle_opt = nbd.NBD()
    idle_opt.set_opt_mode(True)
    idle_opt.connect_uri(s2.uri("term", "unix"))
    idle = nbd.NBD()
    idle.connect_uri(s2.uri("term", "tcp"))
    busy = nbd.NBD()
    busy.connect_uri(s2.uri("term", "tcp"))
    acked = []
    data = os.urandom(64 * KiB)
    stop = threading.Event()
    errs = []

    def writer():
        i = 0
        try:
            while not stop.is_set() and i < 200:
                busy.pwrite(data, (i % 200) * 64 * KiB, nbd.CMD_FLAG_FUA)
                acked.append((i % 200) * 64 * KiB)
                i += 1
        except nbd.Error as e:
            errs.append(e)
    th = threading.Thread(target=writer)
    th.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    rc = s2.stop(timeout=15)
    dt = time.monotonic() - t0
    stop.set()
    th.join(10)
    expect(rc == 0, f"mirrord exit status on SIGTERM with connected clients: expected 0, got {rc}\n{s2.log_tail()}")
    H.log(f"SIGTERM with 3 clients connected: exit {rc} after {dt:.2f}s; {len(acked)} FUA writes acknowledged")
    for off in acked:
        expect(backing(path, off, len(data)) == data, f"acknowledged FUA write at {off} missing after shutdown")
    for h in (idle_opt, idle, busy):
        try:
            h.shutdown()
        except nbd.Error:
            pass


CASES = [
    ("handshake: newstyle-fixed, structured replies, base:allocation, all capabilities, size, description", t_handshake),
    ("option mode: LIST with descriptions, LIST_META_CONTEXT, INFO, failed INFO then GO", t_opt_mode),
    ("FUA write is in the backing file when acknowledged and visible to others", t_fua_write),
    ("flush makes writes durable in the backing file; zero/trim with FUA", t_flush),
    ("TRIM punches a hole: reads zero, block_status HOLE|ZERO, backing file deallocated", t_trim),
    ("WRITE_ZEROES without NO_HOLE reads zero and deallocates the backing range", t_zero_punch),
    ("WRITE_ZEROES with NO_HOLE reads zero and keeps/creates allocation", t_zero_no_hole),
    ("FAST_ZERO succeeds fast or fails ENOTSUP without side effects", t_fast_zero),
    ("CACHE succeeds on rw and ro exports", t_cache),
    ("structured read of a hole returns zeroes via OFFSET_HOLE, chunks tile the request", t_structured_hole),
    ("DF flag: exactly one chunk covering the request", t_df),
    ("block_status: exact extents, REQ_ONE, no extent past the end", t_block_status),
    ("read-only export rejects WRITE/TRIM/WRITE_ZEROES with EPERM, stays readable", t_read_only),
    ("out-of-range requests: READ/TRIM/CACHE/BLOCK_STATUS EINVAL, WRITE ENOSPC, connection survives", t_out_of_range),
    ("256+ aio requests in flight on one connection, every reply matched to its request", t_aio_many),
    ("16 concurrent connections (TCP+Unix) write disjoint regions, all see all data", t_many_connections),
    ("write on one connection, flush on another, read on a third", t_cross_connection),
    ("max-block-size request and unaligned I/O round trips", t_large_and_unaligned),
    ("repeated connect/write/disconnect", t_disconnect_then_use),
    ("unaligned TRIM / WRITE_ZEROES (plain, NO_HOLE, FAST_ZERO) change exactly their bytes", t_unaligned_trim_zero),
    ("export of odd size (1000001 bytes): exact size, tail I/O, bounds", t_odd_size),
    ("SIGTERM with clients in option phase, idle and busy: exit 0, FUA writes durable", t_sigterm_with_clients),
]

for title, fn in CASES:
    H.case(title, fn)
    if not srv.alive():
        H.fail(f"mirrord died during: {title}")
        break

H.finish()
