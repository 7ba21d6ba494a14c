#!/usr/bin/python3
"""A seeded NBD workload that hunts page-cache coherence bugs of FUA writes,
with a byte-exact model of the volume (used by integration/fua-stress.py on
one mirrord and by mirror/fua-stress-pair.sh through a primary).

FileBackend writes a FUA write alone in flight through a second, O_DIRECT
descriptor when it is aligned; everything else goes through the page cache
(docs/nbd-server.md, "FUA writes"). A buffered modification of a page while
a direct write to other bytes of that page is in flight can fill the page
from disk before the direct data lands and later write the stale copy back
over it. The workload never has two requests touching the same BYTES in
flight at once (NBD leaves their order undefined) but very often the same
PAGES. Each round has two phases:
  deep    up to 32 requests in flight: writes (page-aligned, larger aligned,
          512-byte-aligned inside a page, unaligned), with and without FUA,
          trims, write-zeroes, flushes, reads, cache hints;
  hazard  no flush and at most one FUA request in flight, so a FUA write is
          alone and goes direct: buffered writes to other bytes of a page,
          then a sector-aligned FUA write into the rest of that page, then
          more buffered modifications, reads and cache hints beside it; or
          sequential reads up to the page of a lone FUA write in flight
          (read-ahead into large folios) and buffered writes to the pages
          around it.
Reads are checked against the model as they complete.

Command line (run with /usr/bin/python3, which has python3-libnbd):
  fuaworkload.py run --uri URI --state FILE [--seed N] [--rounds N] [--evict IMAGE]...
      the workload through URI (whose current content is the model's start),
      then a flush and the whole volume read back through NBD; the model is
      saved to FILE. Exit 0 if every request succeeded and every read matched.
      --evict: a backing file of the volume, evicted from the page cache
      around the hazard clusters (as memory pressure would).
  fuaworkload.py check-disk --state FILE IMAGE...
      each IMAGE (not in use) fsynced, evicted from the page cache, read with
      O_DIRECT and compared with the model. Exit 0 if all match.
"""

import argparse
import array
import json
import mmap
import os
import pickle
import random
import re
import sys
import time

import nbd

KiB, MiB = 1024, 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")
SECTOR = 512
QD = 32            # requests in flight in the deep phase
HAZARD_QD = 16     # and in the hazard phase
HOT_PAGES = 64     # most requests of a round land in this many pages
DEEP_OPS = 1500    # requests per deep phase
CLUSTERS = 400     # page-sharing clusters per hazard phase


class Op:
    __slots__ = ("id", "kind", "off", "len", "fua", "flags", "buf", "phase")

    def __str__(self):
        f = "+FUA" if self.fua else ""
        return f"#{self.id} {self.kind}{f} {self.off}+{self.len} ({self.phase})"


class Model:
    """What the volume must hold: its initial bytes, every modification
    applied as it is issued (two in flight never overlap), and which bytes a
    failed modification left undefined. Remembers the last modification of
    each sector to explain a mismatch."""

    def __init__(self, init):
        self.init = bytes(init)
        self.size = len(init)
        self.data = bytearray(init)
        self.unknown = bytearray(self.size)  # 1: a failed modification touched it
        self.owner = array.array("I", bytes(4 * ((self.size + SECTOR - 1) // SECTOR)))
        self.ops = {}                        # id -> "description", modifications only

    def modify(self, op, data):
        end = op.off + op.len
        self.data[op.off:end] = data
        self.unknown[op.off:end] = bytes(op.len)
        self.ops[op.id] = str(op)
        for s in range(op.off // SECTOR, (end + SECTOR - 1) // SECTOR):
            self.owner[s] = op.id

    def failed(self, op):
        self.unknown[op.off:op.off + op.len] = b"\1" * op.len

    def mismatch(self, got, base=0, limit=8):
        """None if got (read at base) matches, else the byte runs that differ:
        what they hold and which request last modified them. Bytes left
        undefined by failed modifications are not compared."""
        want = self.data[base:base + len(got)]
        if got == want:
            return None
        if len(got) != len(want):
            return f"{len(got)} bytes read at {base}, the model has {len(want)}"
        runs, nbytes, pages = [], 0, set()
        for p in range(0, len(got), PAGE):
            if got[p:p + PAGE] == want[p:p + PAGE]:
                continue
            i, end = p, min(p + PAGE, len(got))
            while i < end:
                if got[i] == want[i] or self.unknown[base + i]:
                    i += 1
                    continue
                j = i
                while j < end and got[j] != want[j] and not self.unknown[base + j]:
                    j += 1
                nbytes += j - i
                off = base + i
                pages.add(off // PAGE)
                if len(runs) < limit:
                    if got[i:j] == self.init[off:off + j - i]:
                        what = "the initial bytes"
                    elif got[i:j] == bytes(j - i):
                        what = "zeroes"
                    else:
                        what = "other data"
                    last = self.ops.get(self.owner[off // SECTOR], "nothing")
                    runs.append(f"[{off}, {base + j}) (page {off // PAGE}) holds {what}, "
                                f"last modified by {last}")
                i = j
        if not nbytes:
            return None
        return f"{nbytes} bytes in {len(pages)} pages differ: " + "; ".join(runs)

    def save(self, path):
        with open(path, "wb") as f:
            pickle.dump(self.__dict__, f)

    @classmethod
    def load(cls, path):
        m = cls.__new__(cls)
        with open(path, "rb") as f:
            m.__dict__.update(pickle.load(f))
        return m


class Client:
    """Issues requests with libnbd's aio API, never two touching the same
    byte at once (a request waits for the ones it overlaps), and checks
    reads against the model as they complete."""

    def __init__(self, h, model, rng):
        self.h = h
        self.model = model
        self.rng = rng
        self.inflight = {}   # cookie -> Op
        self.fua_inflight = 0
        self.next_id = 1
        self.errors = []
        self.stats = dict.fromkeys(("write", "write_fua", "read", "trim", "zero", "flush",
                                    "cache"), 0)

    def _conflicts(self, op):
        if op.kind in ("flush", "cache"):  # CACHE is a hint: it may overlap anything
            return False
        end = op.off + op.len
        for o in self.inflight.values():
            if o.kind in ("flush", "cache") or (o.kind == "read" and op.kind == "read"):
                continue
            if o.off < end and op.off < o.off + o.len:
                return True
        return False

    def _reap(self):
        while self.inflight:
            c = self.h.aio_peek_command_completed()
            if c <= 0:
                return
            op = self.inflight.pop(c)
            if op.fua:
                self.fua_inflight -= 1
            try:
                self.h.aio_command_completed(c)
            except nbd.Error as e:
                self.errors.append(f"{op} failed: {e}")
                if op.kind in ("write", "trim", "zero"):
                    self.model.failed(op)
                continue
            if op.kind == "read":
                bad = self.model.mismatch(op.buf.to_bytearray(), op.off)
                if bad:
                    self.errors.append(f"{op} read wrong data: {bad}")

    def poll(self):
        self.h.poll(-1)
        self._reap()

    def drain(self):
        while self.inflight:
            self.poll()

    def issue(self, kind, off=0, length=0, fua=False, flags=0, qd=QD, lone_fua=False, phase=""):
        """Send one request once the ones it overlaps are done (and, with
        lone_fua, no other FUA request is in flight)."""
        op = Op()
        op.id, op.kind, op.off, op.len, op.fua, op.flags, op.phase, op.buf = (
            self.next_id, kind, off, length, fua, flags, phase, None)
        self.next_id += 1
        while (len(self.inflight) >= qd or self._conflicts(op) or
               (lone_fua and fua and self.fua_inflight)):
            self.poll()
        f = op.flags | (nbd.CMD_FLAG_FUA if fua else 0)
        if kind == "write":
            data = self.rng.randbytes(length)
            c = self.h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)), off, flags=f)
            self.model.modify(op, data)
            self.stats["write_fua" if fua else "write"] += 1
        elif kind in ("trim", "zero"):
            if kind == "trim":
                c = self.h.aio_trim(length, off, flags=f)
            else:
                c = self.h.aio_zero(length, off, flags=f)
            self.model.modify(op, bytes(length))  # FileBackend punches a hole: zeroes
            self.stats[kind] += 1
        elif kind == "read":
            op.buf = nbd.Buffer(length)
            c = self.h.aio_pread(op.buf, off)
            self.stats["read"] += 1
        elif kind == "cache":
            c = self.h.aio_cache(length, off)
            self.stats["cache"] += 1
        else:
            c = self.h.aio_flush()
            self.stats["flush"] += 1
        self.inflight[c] = op
        if fua:
            self.fua_inflight += 1
        self._reap()
        return op


class Workload:
    """evict(off, length), if given, drops that range of the backing file(s)
    from the page cache (as memory pressure would), so that reads miss and
    the kernel reads ahead, into large folios."""

    def __init__(self, h, model, seed, evict=None):
        self.rng = random.Random(seed)
        self.c = Client(h, model, self.rng)
        self.pages = model.size // PAGE
        self.evict = evict

    def run(self, rounds):
        """rounds of both phases; stops after the round where a request failed."""
        for rnd in range(rounds):
            hot = self.rng.randrange(self.pages - HOT_PAGES)
            self.deep_phase(hot, rnd)
            self.hazard_phase(hot, rnd)
            if self.c.errors:
                break
        self.c.drain()
        return self.c.errors

    def pick_range(self, hot, max_len, align=1):
        """An offset (in the hot pages most of the time) and length, both
        multiples of align, inside the volume."""
        rng = self.rng
        if rng.random() < 0.8:
            lo, hi = hot * PAGE, (hot + HOT_PAGES) * PAGE
        else:
            lo, hi = 0, self.pages * PAGE
        n = rng.randrange(align, max_len + 1, align)
        off = rng.randrange(lo, hi - n + 1)
        return off - off % align, n

    def deep_phase(self, hot, rnd):
        rng, c, pick = self.rng, self.c, self.pick_range
        ph = f"round {rnd} deep"
        for _ in range(DEEP_OPS):
            r = rng.random()
            fua = rng.random() < 0.4
            if r < 0.18:
                c.issue("write", *pick(hot, PAGE, PAGE), fua, phase=ph)            # one page
            elif r < 0.28:
                c.issue("write", *pick(hot, 16 * PAGE, PAGE), fua, phase=ph)       # larger
            elif r < 0.43:
                c.issue("write", *pick(hot, PAGE - SECTOR, SECTOR), fua, phase=ph)  # sectors
            elif r < 0.63:
                c.issue("write", *pick(hot, 6000), fua, phase=ph)                  # unaligned
            elif r < 0.77:
                c.issue("read", *pick(hot, 16 * KiB), phase=ph)
            elif r < 0.80:
                c.issue("cache", *pick(hot, 64 * KiB), phase=ph)
            elif r < 0.86:
                c.issue("trim", *pick(hot, 3 * PAGE), fua, phase=ph)
            elif r < 0.94:
                flags = nbd.CMD_FLAG_NO_HOLE if rng.random() < 0.5 else 0
                c.issue("zero", *pick(hot, 3 * PAGE), fua, flags, phase=ph)
            else:
                c.issue("flush", phase=ph)

    def pieces(self, lo, hi, k):
        """Up to k disjoint, non-empty, randomly placed sub-ranges of [lo, hi)."""
        if hi - lo < 2:
            return [(lo, hi - lo)] if hi > lo else []
        cuts = sorted(self.rng.sample(range(lo, hi + 1), min(2 * k, hi - lo + 1)))
        return [(a, b - a) for a, b in zip(cuts[0::2], cuts[1::2]) if b > a]

    def hazard_phase(self, hot, rnd):
        """Clusters around one page: buffered modifications of some bytes, a
        lone FUA write (sector-aligned: direct) to other bytes of the same
        page, then more buffered modifications, reads and cache hints beside
        it."""
        rng, c = self.rng, self.c
        ph = f"round {rnd} hazard"
        size = self.pages * PAGE

        def buffered(off, n):
            r = rng.random()
            if r < 0.75:
                c.issue("write", off, n, qd=HAZARD_QD, phase=ph)
            elif r < 0.85:
                c.issue("trim", off, n, qd=HAZARD_QD, phase=ph)
            elif r < 0.95:
                c.issue("zero", off, n, flags=rng.choice((0, nbd.CMD_FLAG_NO_HOLE)),
                        qd=HAZARD_QD, phase=ph)
            else:
                c.issue("read", off, n, qd=HAZARD_QD, phase=ph)

        def lone_fua(off, n):
            c.issue("write", off, n, True, qd=HAZARD_QD, lone_fua=True, phase=ph)

        def readahead_cluster(page):
            # Sequential reads ending just before the page of a lone FUA write
            # in flight make the kernel read ahead past them, into large
            # folios that may hold that page (read before the direct data
            # landed) and its neighbours; a buffered write to a neighbour
            # then dirties such a folio. Evicted first, so the reads miss.
            if self.evict:
                lo = max(0, page - 32)
                self.evict(lo * PAGE, (min(self.pages, page + 32) - lo) * PAGE)
            if rng.random() < 0.5:
                s0 = rng.randrange(PAGE // SECTOR)
                s1 = rng.randint(s0 + 1, PAGE // SECTOR)
                lone_fua(page * PAGE + s0 * SECTOR, (s1 - s0) * SECTOR)
                k = 1
            else:  # whole pages: longer in flight
                k = min(rng.randint(1, 16), self.pages - page)
                lone_fua(page * PAGE, k * PAGE)
            n = rng.choice((1, 2, 4, 8))
            for p in range(max(0, page - 3 * n), page, n):
                c.issue("read", p * PAGE, min(n, page - p) * PAGE, qd=HAZARD_QD, phase=ph)
            for _ in range(rng.randint(1, 3)):
                nb = rng.choice((page - 2, page - 1, page + k, page + k + 1, page + k + 2))
                if not 0 <= nb < self.pages:
                    continue
                off = nb * PAGE + rng.randrange(PAGE)
                buffered(off, rng.randint(1, (nb + 1) * PAGE - off))

        for _ in range(CLUSTERS):
            page = hot + rng.randrange(HOT_PAGES)
            base = page * PAGE
            if rng.random() < 0.5:
                readahead_cluster(page)
                continue
            if rng.random() < 0.15:
                # whole pages: the buffered neighbours are on the next pages
                s0, s1 = 0, PAGE // SECTOR * rng.randint(1, 2)
            else:
                s0 = rng.randrange(PAGE // SECTOR)
                s1 = rng.randint(s0 + 1, PAGE // SECTOR)
            f_off, f_len = base + s0 * SECTOR, (s1 - s0) * SECTOR
            # the free bytes on both sides, reaching into the neighbouring pages
            left = (max(0, base - rng.randrange(PAGE)), f_off)
            right = (f_off + f_len, min(size, f_off + f_len + rng.randrange(1, 2 * PAGE)))
            side = self.pieces(*left, 2) + self.pieces(*right, 2)
            rng.shuffle(side)
            k = rng.randint(0, len(side))
            for off, n in side[:k]:
                buffered(off, n)
            lone_fua(f_off, f_len)
            for off, n in side[k:]:
                buffered(off, n)
            r = rng.random()
            if r < 0.1:  # readahead around the page, maybe while the FUA write is in flight
                c.issue("cache", max(0, base - 4 * PAGE), 8 * PAGE, qd=HAZARD_QD, phase=ph)
            elif r < 0.4:
                c.issue("read", base - PAGE if base else base, 3 * PAGE, qd=HAZARD_QD, phase=ph)


def read_nbd(h, size):
    out = bytearray()
    for off in range(0, size, MiB):
        out += h.pread(min(MiB, size - off), off)
    return out


def read_disk(path, size):
    """path's first size bytes as the disk holds them: the file is fsynced
    (a stale dirty page would now be written back over direct data), its
    clean pages evicted, and it is read with O_DIRECT."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        out = bytearray()
        with mmap.mmap(-1, MiB) as buf:  # page-aligned
            while len(out) < size:
                n = os.preadv(fd, [buf], len(out))
                if n <= 0:
                    raise OSError(f"{path}: O_DIRECT read at {len(out)} returned {n}")
                out += buf[:n]
        return out[:size]
    finally:
        os.close(fd)

FUA_STATS = re.compile(r"FUA writes: (\d+) direct\+dsync, (\d+) buffered\+dsync, (\d+) group")


def fua_stats_problems(log, sent=None):
    """What mirrord's log says of its FUA writes: ((direct, dsync, group), problems).

    The test proves nothing unless some FUA write took the O_DIRECT path; with
    sent (the FUA writes the client sent), every one of them must be counted."""
    problems = []
    for bad in ("direct write refused", "no O_DIRECT"):
        problems += [line for line in log.splitlines() if bad in line][:1]
    m = None
    for m in FUA_STATS.finditer(log):
        pass  # the last close
    if not m:
        return (0, 0, 0), problems + ["mirrord logged no FUA statistics at close"]
    direct, dsync, group = map(int, m.groups())
    if direct == 0:
        problems.append("no FUA write took the O_DIRECT path: the test proved nothing; use a "
                        "filesystem with direct I/O (ext4, XFS)")
    if sent is not None and direct + dsync + group != sent:
        problems.append(f"mirrord counted {direct + dsync + group} FUA writes, the client sent {sent}")
    return (direct, dsync, group), problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--uri", required=True)
    r.add_argument("--state", required=True)
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--rounds", type=int, default=4)
    r.add_argument("--evict", action="append", default=[], metavar="IMAGE",
                   help="a backing file to evict from the page cache now and then (repeatable)")
    d = sub.add_parser("check-disk")
    d.add_argument("--state", required=True)
    d.add_argument("images", nargs="+")
    f = sub.add_parser("check-fua-stats", help="mirrord's log on stdin: see fua_stats_problems")
    f.add_argument("--sent", type=int, default=None)
    a = ap.parse_args()

    if a.cmd == "check-fua-stats":
        (direct, dsync, group), problems = fua_stats_problems(sys.stdin.read(), a.sent)
        print(f"FUA writes: {direct} direct+dsync, {dsync} buffered+dsync, {group} group-committed")
        for p in problems:
            print(p)
        return 1 if problems else 0

    if a.cmd == "check-disk":
        model = Model.load(a.state)
        rc = 0
        for img in a.images:
            bad = model.mismatch(read_disk(img, model.size))
            if bad:
                print(f"{img} on disk differs from the model: {bad}")
                rc = 1
            else:
                print(f"{img} on disk matches the model ({model.size} bytes)")
        return rc

    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"fuaworkload: SEED={seed} rounds={a.rounds} (replay with --seed {seed})",
          file=sys.stderr, flush=True)
    h = nbd.NBD()
    h.connect_uri(a.uri)
    size = h.get_size()
    model = Model(read_nbd(h, size))
    fds = [os.open(img, os.O_RDONLY) for img in a.evict]

    def evict(off, n):
        for fd in fds:
            os.posix_fadvise(fd, off, n, os.POSIX_FADV_DONTNEED)

    w = Workload(h, model, seed, evict if fds else None)
    t0 = time.monotonic()
    errors = w.run(a.rounds)
    if not errors:
        h.flush()
        bad = model.mismatch(read_nbd(h, size))
        if bad:
            errors.append(f"after a flush, the volume read through NBD differs: {bad}")
    h.shutdown()
    model.save(a.state)
    print(json.dumps({"seed": seed, "seconds": round(time.monotonic() - t0, 1),
                      "errors": len(errors), **w.c.stats}), flush=True)
    for e in errors[:10]:
        print(e, flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
