// What replicator.cc (the mirrored-write path), replicator_resync.cc (the
// resync engine) and replicator_link.cc (the link's lifecycle) share: the
// request object each of them creates, queues and completes. Not part of the
// Replicator's interface.
#pragma once

#include <cstdint>
#include <list>
#include <vector>

#include "replicator.h"

namespace mirror {

struct Replicator::Op final : IoDone {
  Replicator* rep = nullptr;
  Kind kind = Kind::kWrite;
  uint64_t off = 0;
  uint32_t len = 0;
  const uint8_t* buf = nullptr;
  uint8_t* out = nullptr;       // read: the client's buffer
  bool repair = false;          // read: the local disk failed it; the peer's copy answers
  bool rewrite = false;         // read: writing the peer's data over the failed range
  bool fua = false;
  ZeroFlags zf;
  IoDone* upper = nullptr;
  int local_err = 0;
  int peer_err = 0;
  bool local_pending = false, peer_pending = false, meta_pending = false;
  bool waiting_al = false;
  bool sent_to_peer = false;
  bool degraded = false;       // dispatched while not mirroring
  bool diskless = false;       // dispatched with no local leg (this disk is detached)
  int disk_err = 0;            // the local leg's error, taken over by a detach
  bool resync_batch = false;   // a flush that ends a resync batch
  bool freeze = false;         // the flush that completes a split
  bool in_running = false;
  std::list<Op*>::iterator it;
  uint64_t peer_id = 0;
  uint64_t sent_ms = 0;
  uint64_t flush_tick = 0;
  Buffer rbuf;                  // resync data
  bool probing = false;         // resync: asking the local copy where holes are
  bool hole = false;            // resync: the whole range is a hole: send ZERO
  std::vector<nbd::Extent> ext;
  std::vector<uint8_t> payload; // small payloads (SYNC_DONE, VERIFY)
  std::vector<link::Digest> digests;  // verify, checksum resync: this copy's, per region
  // Checksum resync (resync-checksums): waiting for the peer's digests of
  // the chunk (a VERIFY), then the parts that differ, sent one at a time.
  bool csum_wait = false;
  std::vector<link::Range> runs;  // resync: the parts to write on the peer
  size_t run = 0;                 // the one in flight
  uint64_t same = 0;              // bytes the peer holds already (not sent)
  uint64_t verify_run = 0;      // verify: the run it belongs to
  // TRIM: a copy whose store cannot punch kept its data (EOPNOTSUPP).
  bool trim_kept_local = false, trim_kept_peer = false;
  bool trim_marked = false;     // punched on one copy only: marked for resync
  // A fast zero (NBD_CMD_FLAG_FAST_ZERO): sent to the peer only once this
  // copy did it; refused here (ENOTSUP: no fast way), it changes neither.
  bool peer_after_local = false;

  struct Meta final : IoDone {
    Op* op = nullptr;
    void io_done(int err) override { op->rep->on_meta(op, err); }
  } meta;
  void io_done(int err) override { rep->on_local(this, err); }
  bool modifies() const { return kind == Kind::kWrite || kind == Kind::kTrim || kind == Kind::kZero; }
};

}  // namespace mirror
