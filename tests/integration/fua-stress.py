#!/usr/bin/python3
"""Randomized page-cache coherence stress of FUA writes (FileBackend) on one
mirrord serving a file.

A lone aligned FUA write goes to disk through a second, O_DIRECT descriptor;
everything else goes through the page cache. FileBackend's page rule keeps a
buffered modification of a page away from a direct write in flight to that
page (docs/nbd-server.md, "FUA writes"); this test hunts for a hole in it
with the seeded workload of fuaworkload.py (many requests in flight, never
two on the same bytes, often on the same page; phases where a FUA write is
alone in flight beside buffered writes to the rest of its page, or beside
reads that read ahead into large folios and writes to neighbouring pages,
the test evicting the file's pages first), reads checked against a
byte-exact model as they complete. At the end the volume
is read through NBD (the page cache); then mirrord stops, the file is
fsynced (writing back any stale dirty page over the direct data), evicted,
read with O_DIRECT (the disk) and compared with the model. mirrord's log
must show direct FUA writes, or the test proved nothing.

Run with /usr/bin/python3 (python3-libnbd). MIRRORD=path/to/mirrord.
SEED=N replays a run (the seed is printed); ROUNDS=N (default 20) scales it.
"""

import os
import random
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from itlib import Harness, expect  # noqa: E402

H = Harness("fua-stress")
nbd = H.require_module("nbd", "python3-libnbd")
from fuaworkload import Model, Workload, fua_stats_problems, read_disk, read_nbd  # noqa: E402

DISK_SIZE = 8 * 1024 * 1024  # small: requests share pages often
SEED = int(os.environ.get("SEED") or random.SystemRandom().randrange(1 << 32))
ROUNDS = int(os.environ.get("ROUNDS") or 20)
H.log(f"SEED={SEED} ROUNDS={ROUNDS} (replay with SEED={SEED})")

disk_path = H.path("disk.img")


def fs_type(path):
    for cmd in (["findmnt", "-n", "-o", "FSTYPE", "-T", path], ["stat", "-f", "-c", "%T", path]):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        except OSError:
            continue
        if out:
            return out
    return "unknown"


# Nonzero everywhere, from the seed: a stale page differs from new data.
model = Model(random.Random(SEED ^ 0x5EED).randbytes(DISK_SIZE))
with open(disk_path, "wb") as f:
    f.write(model.init)
    f.flush()
    os.fsync(f.fileno())
    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
FS = fs_type(disk_path)
H.log(f"backing file {disk_path} on {FS}")

srv = H.start("--listen", "unix:" + H.path("sock"), "--export", "disk=" + disk_path)
t0 = time.monotonic()
h = nbd.NBD()
h.connect_uri(srv.uri("disk", "unix"))
evict_fd = os.open(disk_path, os.O_RDONLY)
work = Workload(h, model, SEED,
                lambda off, n: os.posix_fadvise(evict_fd, off, n, os.POSIX_FADV_DONTNEED))


def t_caps():
    expect(h.get_size() == DISK_SIZE, f"export size {h.get_size()}, expected {DISK_SIZE}")
    for what, ok in (("FUA", h.can_fua()), ("FLUSH", h.can_flush()), ("TRIM", h.can_trim()),
                     ("WRITE_ZEROES", h.can_zero()), ("CACHE", h.can_cache())):
        expect(ok, f"mirrord does not advertise {what}")


def t_workload():
    errors = work.run(ROUNDS)
    H.log(f"workload done in {time.monotonic() - t0:.1f}s: {work.c.stats}")
    expect(not errors, "; ".join(errors[:10]))


def t_nbd_view():
    h.flush()
    bad = model.mismatch(read_nbd(h, DISK_SIZE))
    expect(not bad, f"the volume read through NBD (page cache) differs from the model: {bad}")


def t_direct_path_taken():
    with open(srv.log_path, errors="replace") as f:
        log = f.read()
    sent = work.c.stats["write_fua"]
    (direct, dsync, group), problems = fua_stats_problems(log, None if work.c.errors else sent)
    H.log(f"FUA writes: {direct} direct+dsync, {dsync} buffered+dsync, {group} group-committed "
          f"(client sent {sent}; backing file on {FS}, TMPDIR={H.tmp})")
    expect(not problems, "; ".join(problems))


def t_disk_view():
    bad = model.mismatch(read_disk(disk_path, DISK_SIZE))
    expect(not bad, f"the file on disk (fsync, evict, O_DIRECT read) differs from the model: {bad}")
    with open(disk_path, "rb") as f:
        bad = model.mismatch(bytearray(f.read()))
    expect(not bad, f"the file read through the page cache after eviction differs: {bad}")


H.case("mirrord advertises FUA, FLUSH, TRIM, WRITE_ZEROES and CACHE", t_caps)
ok = H.case(f"{ROUNDS} rounds of deep and lone-FUA phases: every request succeeds, "
            "every read matches the model", t_workload)
if ok:
    H.case("after a flush, the whole volume read through NBD matches the model", t_nbd_view)
try:
    h.shutdown()
except nbd.Error as e:
    H.fail(f"NBD disconnect: {e}")
H.stop_all()
H.case("FUA writes took the O_DIRECT path (mirrord's statistics at close)", t_direct_path_taken)
H.case("after mirrord stops: the file on disk (fsync, evict, O_DIRECT read) matches the model",
       t_disk_view)
H.log(f"total {time.monotonic() - t0:.1f}s")
H.finish()
