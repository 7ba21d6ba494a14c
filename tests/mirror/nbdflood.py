#!/usr/bin/python3
"""A misbehaving NBD client: writes as fast as the socket takes them and
never reads a reply.

  nbdflood.py UNIX-SOCKET EXPORT OFFSET WINDOW SECONDS SEED [--abort]

Fixed-newstyle handshake (NBD_OPT_GO, simple replies), then WRITE requests of
64 KiB at random 64 KiB-aligned offsets in [OFFSET, OFFSET+WINDOW) with data
derived from SEED, for SECONDS (a send that blocks counts: the server stopped
reading). Prints the requests sent. --abort: exit without closing cleanly
(no NBD_CMD_DISC; the socket is reset by the process exit)."""
import os, random, socket, struct, sys, time

path, name, off, win, secs, seed = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3]), \
    int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
abort = "--abort" in sys.argv
s = socket.socket(socket.AF_UNIX)
s.connect(path)

def recvn(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise SystemExit("server closed during the handshake")
        b += c
    return b

hdr = recvn(18)
assert hdr[:8] == b"NBDMAGIC" and hdr[8:16] == b"IHAVEOPT", hdr
s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
s.sendall(b"IHAVEOPT" + struct.pack(">II", 7, len(data)) + data)
while True:
    magic, opt, typ, ln = struct.unpack(">QIII", recvn(20))
    body = recvn(ln)
    if typ == 1:
        break
    if typ & 0x80000000:
        raise SystemExit(f"NBD_OPT_GO refused: {typ:#x} {body!r}")

rng = random.Random(seed)
blk = 64 << 10
nblk = win // blk
s.settimeout(1.0)
sent = 0
end = time.time() + secs
payload = bytes([seed & 0xFF]) * blk
while time.time() < end:
    o = off + rng.randrange(nblk) * blk
    req = struct.pack(">IHHQQI", 0x25609513, 0, 1, sent, o, blk) + payload
    try:
        s.sendall(req)
        sent += 1
    except socket.timeout:
        pass  # the server is not reading: keep trying until the time is up
    except OSError as e:
        print(f"send failed after {sent} requests: {e}", file=sys.stderr)
        break
print(sent)
sys.stdout.flush()
if abort:
    os._exit(0)
s.close()
