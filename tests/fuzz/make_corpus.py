#!/usr/bin/python3
"""Writes the seed corpus for fuzz-nbd-codec (tests/fuzz/fuzz_nbd_codec.cc),
and the seeds of fuzz-link-codec (tests/fuzz/fuzz_link_codec.cc) built here.

Each seed is one byte choosing how the fuzzer splits the input into reads
(0 = all at once, 1 = one byte at a time, see Splitter in the target), then
the bytes an NBD client sends: client flags, options, and requests.
The fuzz target's catalog has exports "disk" (read-write, 1 MiB, contexts
base:allocation and x-mirror:dirty) and "golden" (read-only, 64 KiB).

A link-codec seed is a stream of replication link messages
(docs/replication-protocol.md): a 32-byte header
(magic, type, flags, id, offset, length, payload), then the payload.
The older link-codec seeds were written by hand; those below are generated.

Usage: tests/fuzz/make_corpus.py [OUTDIR [LINK-OUTDIR]]
       (default: corpus/nbd-codec and corpus/link-codec beside this file)
The output is deterministic; commit the generated files with this script.
"""
import os
import struct
import sys

IHAVEOPT = 0x49484156454F5054
REQUEST_MAGIC = 0x25609513
MAX_OPTION_LEN = 64 * 1024  # Handshake::kMaxOptionLen

(OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_PEEK, OPT_STARTTLS, OPT_INFO, OPT_GO,
 OPT_STRUCTURED_REPLY, OPT_LIST_META, OPT_SET_META, OPT_EXTENDED_HEADERS) = range(1, 12)
INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = 1, 2, 3
(CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE, CMD_WRITE_ZEROES,
 CMD_BLOCK_STATUS) = range(8)
FLAG_FUA, FLAG_NO_HOLE, FLAG_DF, FLAG_REQ_ONE, FLAG_FAST_ZERO = 1, 2, 4, 8, 16

FIXED = struct.pack(">I", 1)
FIXED_NO_ZEROES = struct.pack(">I", 3)
PLAIN = struct.pack(">I", 0)


def opt(code, data=b""):
    return struct.pack(">QII", IHAVEOPT, code, len(data)) + data


def name(s):
    b = s.encode()
    return struct.pack(">I", len(b)) + b


def info(export, *infos):
    return name(export) + struct.pack(">H", len(infos)) + b"".join(struct.pack(">H", i) for i in infos)


def meta(export, *queries):
    return name(export) + struct.pack(">I", len(queries)) + b"".join(name(q) for q in queries)


def req(cmd, offset=0, length=0, flags=0, cookie=1, payload=None):
    hdr = struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, cookie, offset, length)
    if cmd == CMD_WRITE:
        hdr += payload if payload is not None else bytes((i * 7) & 0xFF for i in range(length))
    return hdr


def seeds():
    io_mix = b"".join([
        req(CMD_READ, 0, 4096, cookie=1),
        req(CMD_WRITE, 4096, 512, FLAG_FUA, cookie=2),
        req(CMD_BLOCK_STATUS, 0, 65536, FLAG_REQ_ONE, cookie=3),
        req(CMD_FLUSH, cookie=4),
        req(CMD_TRIM, 8192, 4096, cookie=5),
        req(CMD_WRITE_ZEROES, 16384, 4096, FLAG_NO_HOLE | FLAG_FAST_ZERO, cookie=6),
        req(CMD_CACHE, 0, 65536, cookie=7),
        req(CMD_READ, 0, 512, FLAG_DF, cookie=8),
        req(CMD_DISC, cookie=9),
    ])
    go_session = b"".join([
        FIXED_NO_ZEROES,
        opt(OPT_STRUCTURED_REPLY),
        opt(OPT_SET_META, meta("disk", "base:allocation")),
        opt(OPT_GO, info("disk", INFO_BLOCK_SIZE, INFO_NAME)),
        io_mix,
    ])
    yield "go-structured-meta-io", b"\x00" + go_session
    yield "go-structured-meta-io-bytewise", b"\x01" + go_session
    yield "list-session", b"\x05" + b"".join([
        FIXED, opt(OPT_LIST), opt(OPT_LIST, b"x"), opt(OPT_LIST), opt(OPT_ABORT)])
    yield "export-name-readonly-no-zeroes", b"\x00" + b"".join([
        FIXED_NO_ZEROES, opt(OPT_EXPORT_NAME, b"golden"),
        req(CMD_READ, 0, 512), req(CMD_WRITE, 0, 16, FLAG_FUA), req(CMD_TRIM, 0, 512),
        req(CMD_DISC)])
    yield "export-name-default-zeroes", b"\x43" + b"".join([
        FIXED, opt(OPT_EXPORT_NAME), req(CMD_WRITE, 1048064, 512), req(CMD_FLUSH),
        req(CMD_READ, 1048064, 1024)])
    yield "meta-context-session", b"\x10" + b"".join([
        FIXED,
        opt(OPT_LIST_META, meta("disk")),
        opt(OPT_SET_META, meta("disk", "base:allocation")),  # before structured replies
        opt(OPT_STRUCTURED_REPLY),
        opt(OPT_LIST_META, meta("disk", "base:")),
        opt(OPT_LIST_META, meta("disk", "x-mirror:dirty", "qemu:dirty-bitmap:b0")),
        opt(OPT_SET_META, meta("golden", "base:allocation")),
        opt(OPT_SET_META, meta("nosuch", "base:allocation")),
        opt(OPT_SET_META, meta("disk", "base:allocation", "x-mirror:dirty")),
        opt(OPT_INFO, info("disk", INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE, 0x99)),
        opt(OPT_GO, info("disk")),
        req(CMD_BLOCK_STATUS, 0, 1 << 20), req(CMD_BLOCK_STATUS, 4096, 1, FLAG_REQ_ONE),
        req(CMD_DISC)])
    yield "option-errors-then-go", b"\x3f" + b"".join([
        FIXED,
        opt(OPT_INFO, info("nosuch")),
        opt(OPT_INFO, name("disk") + b"\x00\x02\x00\x01"),      # count > list
        opt(OPT_GO, b"\xff\xff\xff\xff\x00\x00"),               # absurd name length
        opt(OPT_STARTTLS),
        opt(OPT_PEEK),
        opt(OPT_EXTENDED_HEADERS),
        opt(0x1234, b"junk"),
        opt(OPT_STRUCTURED_REPLY, b"\x00"),
        opt(OPT_GO, info("golden")),
        req(CMD_READ, 0, 512, FLAG_DF), req(CMD_WRITE_ZEROES, 0, 512), req(0x99, 0, 512),
        req(CMD_READ, 0, 512, 0x8000), req(CMD_BLOCK_STATUS, 0, 512)])
    yield "oversized-option-skipped", b"\x00" + b"".join([
        FIXED, struct.pack(">QII", IHAVEOPT, 0x42, MAX_OPTION_LEN + 1),
        bytes(MAX_OPTION_LEN + 1), opt(OPT_GO, info("disk")), req(CMD_READ, 0, 512)])
    yield "transmission-edges", b"\x00" + b"".join([
        FIXED_NO_ZEROES, opt(OPT_GO, info("disk")),
        req(CMD_READ, 1 << 20, 1), req(CMD_READ, 0xFFFFFFFFFFFFFFFF, 1024),
        req(CMD_WRITE, 0, 0), req(CMD_WRITE, (1 << 20) - 8, 16),
        req(CMD_FLUSH, 512, 0), req(CMD_TRIM, 0, 0), req(CMD_READ, 0, 512, FLAG_FUA),
        req(CMD_WRITE, 0, (32 << 20) + 1, payload=b""),  # too big: disconnect
    ])
    yield "non-fixed-newstyle", b"\x02" + PLAIN + opt(OPT_EXPORT_NAME, b"disk") + req(CMD_READ, 0, 512)
    yield "non-fixed-newstyle-list", b"\x00" + PLAIN + opt(OPT_LIST)
    yield "junk-bad-magic", b"\x07" + FIXED + b"NBDMAGIC" + struct.pack(">II", 3, 0) + b"GET / HTTP/1.1\r\n\r\n"
    yield "junk-unknown-client-flags", b"\x00" + struct.pack(">I", 0x80000001) + opt(OPT_LIST)
    yield "absurd-option-length", b"\x00" + FIXED + struct.pack(">QII", IHAVEOPT, OPT_INFO, 0xFFFFFFFF)


LINK_MAGIC = 0x4D524C31  # "MRL1"
LINK_RESIZE, LINK_RESIZE_REPLY = 25, 35
LINK_RESIZE_ZEROED = 1


def link_msg(typ, flags=0, msg_id=0, offset=0, length=0, payload=b""):
    return struct.pack(">IHHQQII", LINK_MAGIC, typ, flags, msg_id, offset, length,
                       len(payload)) + payload


def link_seeds():
    yield "resize", b"".join([
        link_msg(LINK_RESIZE, msg_id=1 << 63 | 1, offset=512 << 20),
        link_msg(LINK_RESIZE_REPLY, LINK_RESIZE_ZEROED, 1 << 63 | 1, 512 << 20),
        link_msg(LINK_RESIZE, msg_id=1 << 63 | 2, offset=(1 << 30) + 512),  # unaligned
        link_msg(LINK_RESIZE_REPLY, 0, 1 << 63 | 2, 256 << 20, 22,
                 b"node 'beta' config says 268435456 bytes"),
        link_msg(LINK_RESIZE_REPLY, 0x8000, 3, 0, 0),  # unknown flag
        link_msg(LINK_RESIZE, msg_id=4, offset=0),
    ])


def write_seeds(outdir, items):
    os.makedirs(outdir, exist_ok=True)
    for label, data in items:
        with open(os.path.join(outdir, label), "wb") as f:
            f.write(data)
        print(f"{len(data):7d}  {label}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "nbd-codec")
    link_outdir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "corpus", "link-codec")
    write_seeds(outdir, seeds())
    write_seeds(link_outdir, link_seeds())


if __name__ == "__main__":
    main()
