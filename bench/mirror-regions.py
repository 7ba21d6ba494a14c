#!/usr/bin/python3
"""Helpers for the resync row of bench/mirror-bench.sh. Needs /usr/bin/python3 (libnbd's
python binding, package python3-libnbd, is installed for the system python only).

The region set: COUNT regions of REGION_MIB MiB, one every STRIDE_MIB MiB from offset 0.

  mirror-regions.py write URI COUNT REGION_MIB STRIDE_MIB SEED
      write the region set through NBD (random bytes from SEED, 1 MiB requests), then FLUSH
  mirror-regions.py copy SRC DST COUNT REGION_MIB STRIDE_MIB
      copy the region set SRC -> DST at the same offsets, O_DIRECT reads and writes of
      4 MiB, one at a time, then fdatasync(DST): what this disk allows for a copy of those
      bytes file to file. Prints JSON {bytes, seconds, mb_s}.
  mirror-regions.py copy-overlapped SRC DST COUNT REGION_MIB STRIDE_MIB
      the same copy with reads and writes overlapped: a reader and a writer thread, four
      4 MiB buffers between them, so both directions of the disk stay busy as in a resync
      (which reads on one side while the other writes). Prints JSON {bytes, seconds, mb_s}.
  mirror-regions.py compare A B COUNT REGION_MIB STRIDE_MIB
      exit 1 if the region set differs between files A and B (and print where)
  mirror-regions.py tcp [MIB]
      loopback TCP stream throughput (one connection, TCP_NODELAY, 1 MiB sends).
      Prints JSON {bytes, seconds, mb_s}.
"""
import json
import mmap
import os
import random
import socket
import sys
import threading
import time

MIB = 1 << 20


def dumps(o):
    return json.dumps(o, separators=(",", ":"))


def regions(count, region_mib, stride_mib):
    for i in range(count):
        yield i * stride_mib * MIB, region_mib * MIB


def cmd_write(uri, count, region_mib, stride_mib, seed):
    import nbd
    rng = random.Random(seed)
    h = nbd.NBD()
    h.connect_uri(uri)
    total = 0
    for off, length in regions(count, region_mib, stride_mib):
        for o in range(off, off + length, MIB):
            h.pwrite(rng.randbytes(MIB), o)
            total += MIB
    h.flush()
    h.shutdown()
    print(dumps({"bytes": total}))


def cmd_copy(src, dst, count, region_mib, stride_mib):
    chunk = 4 * MIB
    buf = mmap.mmap(-1, chunk)  # page aligned, as O_DIRECT needs
    fi = os.open(src, os.O_RDONLY | os.O_DIRECT)
    fo = os.open(dst, os.O_WRONLY | os.O_DIRECT)
    total = 0
    t0 = time.monotonic()
    for off, length in regions(count, region_mib, stride_mib):
        o = off
        while o < off + length:
            n = min(chunk, off + length - o)
            mv = memoryview(buf)[:n]
            got = os.preadv(fi, [mv], o)
            assert got == n, (got, n)
            assert os.pwritev(fo, [mv], o) == n
            o += n
            total += n
    os.fdatasync(fo)
    dt = time.monotonic() - t0
    os.close(fi)
    os.close(fo)
    print(dumps({"bytes": total, "seconds": round(dt, 4), "mb_s": round(total / dt / 1e6, 1)}))


def cmd_copy_overlapped(src, dst, count, region_mib, stride_mib):
    import queue
    chunk, depth = 4 * MIB, 4
    free = queue.Queue()
    for _ in range(depth):
        free.put(mmap.mmap(-1, chunk))  # page aligned, as O_DIRECT needs
    full = queue.Queue()
    fi = os.open(src, os.O_RDONLY | os.O_DIRECT)
    fo = os.open(dst, os.O_WRONLY | os.O_DIRECT)
    errors = []

    def writer():
        try:
            while True:
                item = full.get()
                if item is None:
                    return
                buf, o, n = item
                assert os.pwritev(fo, [memoryview(buf)[:n]], o) == n
                free.put(buf)
        except Exception as e:  # reported after the join
            errors.append(e)
            while full.get() is not None:
                pass

    t0 = time.monotonic()
    w = threading.Thread(target=writer)
    w.start()
    total = 0
    for off, length in regions(count, region_mib, stride_mib):
        o = off
        while o < off + length:
            n = min(chunk, off + length - o)
            buf = free.get()
            got = os.preadv(fi, [memoryview(buf)[:n]], o)
            assert got == n, (got, n)
            full.put((buf, o, n))
            o += n
            total += n
    full.put(None)
    w.join()
    if errors:
        raise errors[0]
    os.fdatasync(fo)
    dt = time.monotonic() - t0
    os.close(fi)
    os.close(fo)
    print(dumps({"bytes": total, "seconds": round(dt, 4), "mb_s": round(total / dt / 1e6, 1)}))


def cmd_compare(a, b, count, region_mib, stride_mib):
    bad = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for off, length in regions(count, region_mib, stride_mib):
            fa.seek(off)
            fb.seek(off)
            if fa.read(length) != fb.read(length):
                print(f"region at {off} differs", file=sys.stderr)
                bad += 1
    print(dumps({"regions_differing": bad}))
    sys.exit(1 if bad else 0)


def cmd_tcp(mib):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    received = [0]

    def recv():
        c, _ = srv.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray(MIB)
        while True:
            n = c.recv_into(buf)
            if not n:
                break
            received[0] += n
        c.close()

    t = threading.Thread(target=recv)
    t.start()
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = os.urandom(MIB)
    t0 = time.monotonic()
    for _ in range(mib):
        s.sendall(data)
    s.close()
    t.join()
    dt = time.monotonic() - t0
    print(dumps({"bytes": received[0], "seconds": round(dt, 4),
                      "mb_s": round(received[0] / dt / 1e6, 1)}))


def main():
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    if a[0] == "write":
        cmd_write(a[1], int(a[2]), int(a[3]), int(a[4]), int(a[5]))
    elif a[0] == "copy":
        cmd_copy(a[1], a[2], int(a[3]), int(a[4]), int(a[5]))
    elif a[0] == "copy-overlapped":
        cmd_copy_overlapped(a[1], a[2], int(a[3]), int(a[4]), int(a[5]))
    elif a[0] == "compare":
        cmd_compare(a[1], a[2], int(a[3]), int(a[4]), int(a[5]))
    elif a[0] == "tcp":
        cmd_tcp(int(a[1]) if len(a) > 1 else 2048)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
