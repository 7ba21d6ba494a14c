#!/usr/bin/python3
"""NBD client helpers for the mirror tests (libnbd; run with /usr/bin/python3).

  nbdtool.py write   --uri URI --log LOG --offset O --window W [--bs 4096] [--qd 16]
                     [--seed S] [--stop-file F] [--duration SEC] [--fua]
  nbdtool.py verify  (--image PATH | --uri URI) --log LOG --offset O --window W [--bs 4096]
                     [--seed S] [--acked-before UNIX_MS]
  nbdtool.py flush   URI
  nbdtool.py ro-check URI          the export is read-only and refuses writes
  nbdtool.py sha     URI           sha256 of the whole export
  nbdtool.py pattern URI OFFSET LENGTH SEED   write a known pattern (then flush)

The writer issues writes of one block each at random blocks of the window,
never two at once to the same block, each block's data self-describing (a
header with seed, sequence number and offset, and a body derived from it), so
the verifier can tell which write a block holds. It records in LOG:

  S SEED BS          first line: the data pattern's seed, the block size
  A SEQ OFF MS       the server acknowledged write SEQ (one line per write,
                     flushed as it happens); MS: when the writer saw it (Unix
                     time in ms, wall clock; absent in older logs)
  E SEQ OFF ERRNO    the server failed write SEQ, or the connection broke
                     while it was in flight (it may or may not have landed)
  U SEQ OFF          still in flight when the writer gave up
  X REASON           the writer stopped: "stopped" (stop file / duration)
                     or "lost: MESSAGE" (the connection died)

The verifier then checks that every block holds the last acknowledged write
to it, or a later write that was never acknowledged (E or U); a block never
acknowledged holds zeroes or such a write. Nothing else is acceptable.
With --acked-before T, writes acknowledged at T or later only may be there
(as if unacknowledged): the copy is checked for what was acknowledged before
T, e.g. a secondary for what its primary acknowledged before it went on alone.

write exits 0 when it stopped on request with no failed write, 1 if any write
failed, 2 if the connection was lost (nothing failed before). A JSON summary
goes to stdout: acked, failed, max_latency_ms, max_stall_ms (longest time
with writes in flight and none completing).
"""

import argparse
import errno
import hashlib
import json
import os
import random
import struct
import sys
import time

import nbd

MAGIC = b"MIRW"
HDR = struct.Struct(">4sIQQ")  # magic, seed, seq, offset


def block_data(seed, seq, off, bs):
    hdr = HDR.pack(MAGIC, seed, seq, off)
    body = hashlib.sha256(hdr).digest()
    data = hdr + body * ((bs - len(hdr)) // len(body) + 1)
    return data[:bs]


def classify(buf, seed, off, bs):
    """0 for zeroes, the seq of a valid write for this offset, or None."""
    if buf == bytes(bs):
        return 0
    if len(buf) < HDR.size:
        return None
    magic, s, seq, o = HDR.unpack_from(buf)
    if magic != MAGIC or s != seed or o != off or seq == 0:
        return None
    return seq if buf == block_data(seed, seq, off, bs) else None


def errname(e):
    """libnbd's Error.errno is a name ("EPERM") in some versions, a number in others."""
    if isinstance(e.errno, int):
        return errno.errorcode.get(e.errno, str(e.errno))
    return e.errno or ""


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def cmd_write(a):
    h = connect(a.uri)
    log = open(a.log, "w", buffering=1)
    log.write(f"S {a.seed} {a.bs}\n")
    rng = random.Random(a.seed)
    nblocks = a.window // a.bs
    busy = set()              # block offsets with a write in flight
    inflight = {}             # cookie -> (seq, off, issued_at)
    seq = 0
    acked = failed = 0
    max_lat = max_stall = 0.0
    last_progress = time.monotonic()
    t_end = time.monotonic() + a.duration if a.duration else None
    flags = nbd.CMD_FLAG_FUA if a.fua else 0
    reason = "stopped"
    lost = None

    def stopping():
        if a.stop_file and os.path.exists(a.stop_file):
            return True
        return t_end is not None and time.monotonic() >= t_end

    while True:
        stop = stopping() or lost is not None
        while not stop and len(inflight) < a.qd:
            off = a.offset + rng.randrange(nblocks) * a.bs
            if off in busy:
                continue
            seq += 1
            buf = nbd.Buffer.from_bytearray(bytearray(block_data(a.seed, seq, off, a.bs)))
            try:
                c = h.aio_pwrite(buf, off, flags=flags)
            except nbd.Error as e:
                lost = str(e)
                log.write(f"E {seq} {off} {errname(e) or 0}\n")
                break
            busy.add(off)
            inflight[c] = (seq, off, time.monotonic())
        if not inflight:
            break
        try:
            h.poll(200)
        except nbd.Error as e:
            lost = lost or str(e)
        now = time.monotonic()
        for c in list(inflight):
            s, off, t0 = inflight[c]
            try:
                done = h.aio_command_completed(c)
            except nbd.Error as e:
                # Either the server failed the write or the connection died.
                del inflight[c]
                busy.discard(off)
                log.write(f"E {s} {off} {errname(e) or 0}\n")
                if h.aio_is_dead() or h.aio_is_closed():
                    lost = lost or str(e)
                else:
                    failed += 1
                    print(f"write {s} at {off} failed: {e}", file=sys.stderr)
                last_progress = now
                continue
            if done:
                del inflight[c]
                busy.discard(off)
                acked += 1
                max_lat = max(max_lat, now - t0)
                log.write(f"A {s} {off} {int(time.time() * 1000)}\n")
                last_progress = now
        if inflight:
            max_stall = max(max_stall, now - last_progress)
        else:
            last_progress = now
        if lost is not None and (h.aio_is_dead() or h.aio_is_closed()):
            for c, (s, off, _) in inflight.items():
                log.write(f"U {s} {off}\n")
            inflight.clear()
            break
    if lost is None:
        try:
            t0 = time.monotonic()
            h.flush()
            max_lat = max(max_lat, time.monotonic() - t0)
            h.shutdown()
        except nbd.Error as e:
            lost = str(e)
    if lost is not None:
        reason = "lost: " + lost.replace("\n", " ")
    log.write(f"X {reason}\n")
    log.close()
    print(json.dumps({"acked": acked, "failed": failed, "issued": seq,
                      "max_latency_ms": int(max_lat * 1000),
                      "max_stall_ms": int(max_stall * 1000), "reason": reason}))
    if failed:
        return 1
    return 2 if lost is not None else 0


def load_log(path, acked_before=None):
    last_ack = {}      # off -> highest acknowledged seq
    maybe = {}         # off -> set of seqs that may or may not have landed
    n_ack = n_late = 0
    seed_bs = None
    with open(path) as f:
        for line in f:
            p = line.split()
            if not p or p[0] == "X":
                continue
            if p[0] == "S":
                seed_bs = int(p[1]), int(p[2])
                continue
            seq, off = int(p[1]), int(p[2])
            late = (acked_before is not None and p[0] == "A" and len(p) > 3
                    and int(p[3]) >= acked_before)
            if late:
                n_late += 1
                maybe.setdefault(off, set()).add(seq)
            elif p[0] == "A":
                n_ack += 1
                last_ack[off] = max(last_ack.get(off, 0), seq)
            elif p[0] in ("E", "U"):
                maybe.setdefault(off, set()).add(seq)
    return last_ack, maybe, n_ack, n_late, seed_bs


def cmd_verify(a):
    last_ack, maybe, n_ack, n_late, seed_bs = load_log(a.log, a.acked_before)
    if seed_bs:
        a.seed, a.bs = seed_bs
    if a.image:
        f = open(a.image, "rb")

        def read(off, n):
            f.seek(off)
            b = f.read(n)
            return b + bytes(n - len(b))
    else:
        h = connect(a.uri)

        def read(off, n):
            return h.pread(n, off)
    bad = []
    chunk = max(a.bs, 1 << 20)
    n_blocks = n_holding = 0
    for base in range(a.offset, a.offset + a.window, chunk):
        n = min(chunk, a.offset + a.window - base)
        data = read(base, n)
        for i in range(0, n, a.bs):
            off = base + i
            n_blocks += 1
            got = classify(data[i:i + a.bs], a.seed, off, a.bs)
            want = last_ack.get(off, 0)
            ok_later = {s for s in maybe.get(off, ()) if s > want}
            if got is not None and (got == want or got in ok_later):
                if want:
                    n_holding += 1
                continue
            what = "foreign data" if got is None else ("zeroes" if got == 0 else f"write {got}")
            exp = f"write {want}" if want else "zeroes"
            if ok_later:
                exp += " or one of unacknowledged writes " + ",".join(map(str, sorted(ok_later)))
            bad.append(f"block at {off}: holds {what}, expected {exp}")
    src = a.image or a.uri
    print(f"{src}: {n_blocks} blocks checked, {n_ack} acknowledged writes, "
          f"{len(last_ack)} blocks acknowledged, {n_holding} hold their last acknowledged write, "
          f"{len(bad)} bad")
    if a.acked_before is not None:
        print(f"  {n_late} writes acknowledged at or after {a.acked_before} not required")
    for b in bad[:10]:
        print("  " + b)
    return 1 if bad else 0


def cmd_flush(a):
    h = connect(a.uri)
    h.flush()
    h.shutdown()
    return 0


def cmd_ro_check(a):
    h = connect(a.uri)
    problems = []
    if not h.is_read_only():
        problems.append("export not flagged read-only in the handshake")
    # Bypass libnbd's own check so the server has to refuse it.
    h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_COMMANDS)
    for name, fn in (("WRITE", lambda: h.pwrite(b"x" * 4096, 0)),
                     ("WRITE+FUA", lambda: h.pwrite(b"x" * 4096, 4096, nbd.CMD_FLAG_FUA)),
                     ("TRIM", lambda: h.trim(4096, 0)),
                     ("WRITE_ZEROES", lambda: h.zero(4096, 0))):
        try:
            fn()
            problems.append(f"{name} succeeded")
        except nbd.Error as e:
            if errname(e) not in ("EPERM", "EROFS"):
                problems.append(f"{name} failed with errno {e.errno} ({e}), expected EPERM")
    try:
        h.pread(4096, 0)
    except nbd.Error as e:
        problems.append(f"READ after the refused writes failed: {e}")
    for p in problems:
        print(p)
    return 1 if problems else 0


def cmd_sha(a):
    h = connect(a.uri)
    size = h.get_size()
    d = hashlib.sha256()
    for off in range(0, size, 4 << 20):
        d.update(h.pread(min(4 << 20, size - off), off))
    print(d.hexdigest())
    return 0


def cmd_probe(a):
    """Prints what READ and BLOCK_STATUS of [offset, +length) give: OK (with
    the data's SHA-256) or the errno's name. Exit 0 unless the handshake fails."""
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(a.uri)
    try:
        data = h.pread(a.length, a.offset)
        print("read OK " + hashlib.sha256(data).hexdigest())
    except nbd.Error as e:
        print("read " + errname(e))
    if h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
        try:
            h.block_status(a.length, a.offset, lambda *args: 0)
            print("block_status OK")
        except nbd.Error as e:
            print("block_status " + errname(e))
    h.shutdown()
    return 0


def cmd_pattern(a):
    h = connect(a.uri)
    rng = random.Random(a.seed)
    for off in range(a.offset, a.offset + a.length, 1 << 20):
        n = min(1 << 20, a.offset + a.length - off)
        h.pwrite(rng.randbytes(n), off)
    h.flush()
    h.shutdown()
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("--uri", required=True)
    v = sub.add_parser("verify")
    src = v.add_mutually_exclusive_group(required=True)
    src.add_argument("--image")
    src.add_argument("--uri")
    for q in (w, v):
        q.add_argument("--log", required=True)
        q.add_argument("--offset", type=int, required=True)
        q.add_argument("--window", type=int, required=True)
        q.add_argument("--bs", type=int, default=4096)
        q.add_argument("--seed", type=int, default=1)
    v.add_argument("--acked-before", type=int)
    w.add_argument("--qd", type=int, default=16)
    w.add_argument("--stop-file")
    w.add_argument("--duration", type=float, default=0)
    w.add_argument("--fua", action="store_true")
    for name in ("flush", "ro-check", "sha"):
        sub.add_parser(name).add_argument("uri")
    pr = sub.add_parser("probe")
    pr.add_argument("uri")
    pr.add_argument("offset", type=int)
    pr.add_argument("length", type=int)
    pt = sub.add_parser("pattern")
    pt.add_argument("uri")
    pt.add_argument("offset", type=int)
    pt.add_argument("length", type=int)
    pt.add_argument("seed", type=int)
    a = p.parse_args()
    fn = {"write": cmd_write, "verify": cmd_verify, "flush": cmd_flush, "ro-check": cmd_ro_check,
          "sha": cmd_sha, "pattern": cmd_pattern, "probe": cmd_probe}[a.cmd]
    try:
        return fn(a)
    except nbd.Error as e:
        print(f"nbdtool {a.cmd}: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
