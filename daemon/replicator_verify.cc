// Replicator: online verify (mirrorctl verify; DRBD's `drbdadm verify`).
// Walks a range in chunks, each through the overlap interlock like a resync
// copy (rule 4): it reads this copy's chunk, then asks the peer for the
// digests of the same chunk (VERIFY). No write to the chunk runs from the
// moment it is admitted until both answers are in, and the link is FIFO,
// so both copies are digested with the same writes applied: a difference
// is real, never a write in flight. Every region that differs (and is not
// dirty already) is marked dirty and the resync engine copies this node's
// data to the peer: verify cannot tell which copy is right, and the
// primary's is the one clients read (as DRBD does).
#include <algorithm>
#include <cstring>

#include "clock.h"
#include "log.h"
#include "replicator.h"
#include "replicator_internal.h"
#include "verify_digest.h"

namespace mirror {

namespace {
// One VERIFY at most: the longest a write to it may wait behind verify is
// reading this much on both copies plus a link round trip.
constexpr uint32_t kVerifyChunk = 1 << 20;
// Mismatches logged one by one per run; the rest are counted.
constexpr uint64_t kVerifyLogLimit = 16;
}  // namespace

Status Replicator::verify_start(uint64_t offset, uint64_t length) {
  if (verify_.running) {
    return Error{EALREADY, "a verify is running (" + std::to_string(verify_.done_bytes) + " of " +
                               std::to_string(verify_.total_bytes) +
                               " bytes compared); stop it with verify --cancel"};
  }
  if (!mirroring())
    return Error{ENOTCONN, "verify needs the mirror connected (synchronized or resyncing)"};
  const uint64_t g = bitmap_.granularity();
  if (offset >= size_ || length > size_ - offset)
    return Error{EINVAL, "verify: range " + std::to_string(offset) + "+" + std::to_string(length) +
                             " is outside the volume (" + std::to_string(size_) + " bytes)"};
  if (length == 0) length = size_ - offset;
  // Whole regions: the range grows to the regions it touches.
  uint64_t begin = offset / g * g;
  uint64_t end = std::min(size_, (offset + length + g - 1) / g * g);
  verify_ = VerifyProgress{};
  verify_.run = ++verify_runs_;
  verify_.running = true;
  verify_.offset = begin;
  verify_.total_bytes = end - begin;
  verify_.started_unix_ms = unix_ms();
  verify_.result = "running";
  verify_cursor_ = begin;
  verify_end_ = end;
  verify_logged_ = 0;
  verify_window_ms_ = coarse_ms();
  verify_window_bytes_ = 0;
  MLOG_INFO("verify started: %llu+%llu against the peer's copy",
            static_cast<unsigned long long>(begin), static_cast<unsigned long long>(end - begin));
  verify_pump();
  return {};
}

void Replicator::verify_stop(const std::string& result) {
  if (!verify_.running) return;
  verify_.running = false;
  verify_.result = result;
  verify_.finished_unix_ms = unix_ms();
  auto level = result == "completed" ? LogLevel::kInfo : LogLevel::kWarn;
  logf(level,
       "verify %s: %llu of %llu bytes compared, %llu bytes in %llu regions out of sync%s",
       result.c_str(), static_cast<unsigned long long>(verify_.done_bytes),
       static_cast<unsigned long long>(verify_.total_bytes),
       static_cast<unsigned long long>(verify_.out_of_sync_bytes),
       static_cast<unsigned long long>(verify_.out_of_sync_regions),
       verify_.out_of_sync_regions ? " (marked: resync copies them from this node)" : "");
}

void Replicator::verify_tick(uint64_t now_ms) {
  if (verify_window_ms_ + 2000 <= now_ms) {
    verify_.rate_bps =
        verify_window_bytes_ * 1000 / std::max<uint64_t>(1, now_ms - verify_window_ms_);
    verify_window_ms_ = now_ms;
    verify_window_bytes_ = 0;
  }
  verify_pump();
}

void Replicator::verify_pump() {
  if (!verify_.running || !mirroring()) return;
  while (verify_in_flight_ < cfg_.resync_max_inflight && verify_cursor_ < verify_end_) {
    uint64_t len = std::min<uint64_t>(kVerifyChunk, verify_end_ - verify_cursor_);
    if (!take_tokens(len)) break;  // tick() pumps again
    Op* op = new_op(Kind::kVerify, verify_cursor_, uint32_t(len), nullptr);
    op->verify_run = verify_.run;
    verify_cursor_ += len;
    ++verify_in_flight_;
    submit(op);
  }
  verify_maybe_end();
}

// Chunks of a cancelled run may still be in flight when the next starts:
// they count against its bound and it ends after them, but their results
// are ignored (verify_run).
void Replicator::verify_maybe_end() {
  if (verify_.running && verify_in_flight_ == 0 && verify_cursor_ >= verify_end_)
    verify_stop("completed");
}

void Replicator::verify_local_done(Op* op, int err) {
  const bool ours = mirroring() && op->verify_run == verify_.run && verify_.running;
  if (err && ours) return verify_local_failed(op, err);
  if (err || !ours) {
    if (err) {
      MLOG_ERROR("verify: reading %llu+%u locally failed: %s",
                 static_cast<unsigned long long>(op->off), op->len, strerror(-err));
    }
    return verify_chunk_done(op, err ? -err : ECANCELED, nullptr);
  }
  op->digests = region_digests({op->rbuf.data(), op->len}, bitmap_.granularity());
  op->payload = link::encode_verify(bitmap_.granularity());
  send_to_peer(op);
}

void Replicator::verify_local_failed(Op* op, int err) {
  // Inside the interlock since it was admitted: as for a client's read
  // (replicator_read.cc), the peer's copy answers if it is known to be ours.
  if (const char* why = peer_cannot_read(op); *why) {
    MLOG_ERROR("verify: reading %llu+%u locally failed: %s; not compared (the peer's copy cannot "
               "answer: %s)",
               static_cast<unsigned long long>(op->off), op->len, strerror(-err), why);
    verify_.unreadable_bytes += op->len;
    return verify_chunk_done(op, 0, nullptr);
  }
  MLOG_WARN("verify: reading %llu+%u locally failed: %s; reading the peer's copy",
            static_cast<unsigned long long>(op->off), op->len, strerror(-err));
  op->repair = true;
  op->out = op->rbuf.data();
  send_to_peer(op);
}

void Replicator::verify_peer_failed(Op* op, int err) {
  // Its copy of the chunk is unreadable there: this node's is the one to
  // keep, and a write remaps a bad sector. Regions dirty already are copied
  // anyway.
  const uint64_t g = bitmap_.granularity();
  uint64_t marked = 0;
  for (uint64_t off = op->off; off < op->off + op->len; off += g) {
    uint64_t len = std::min<uint64_t>(g, op->off + op->len - off);
    if (bitmap_.any_dirty(off, len)) continue;
    if (move_generation()) MLOG_INFO("verify: the peer lacks data: the generation moves on");
    mark_dirty(off, len);
    marked += len;
  }
  MLOG_WARN("verify: the peer's disk could not read %llu+%u (%s): marked out of sync, the resync "
            "rewrites it there from this node",
            static_cast<unsigned long long>(op->off), op->len, strerror(err));
  verify_.peer_unreadable_bytes += op->len;
  verify_chunk_end(op, marked);
}

void Replicator::verify_chunk_end(Op* op, uint64_t marked) {
  verify_.done_bytes += op->len;
  verify_window_bytes_ += op->len;
  if (marked) {
    bitmap_.commit(nullptr);
    if (state_ == LinkState::kResyncing) resync_total_ += marked;
  }
  finish(op, 0);
  if (marked) resync_again();
  verify_pump();
}

void Replicator::on_verify_reply(const link::Header& h, Buffer& payload) {
  last_reply_ms_ = coarse_ms();
  auto it = outstanding_.find(h.id);
  if (it == outstanding_.end()) return;
  Op* op = it->second;
  const bool resync = op->kind == Kind::kResync && op->csum_wait;
  if (op->kind != Kind::kVerify && !resync) return;
  outstanding_.erase(it);
  op->peer_pending = false;
  int err = int(h.length);
  std::vector<link::Digest> peer;
  if (!err) {
    auto d = link::decode_digests({payload.data(), h.payload}, op->digests.size());
    if (d) {
      peer = *d;
    } else {
      MLOG_WARN("%s: %s", resync ? "resync" : "verify", d.error().message.c_str());
      err = EPROTO;
    }
  }
  if (resync) return resync_digests(op, err ? nullptr : &peer, err);
  verify_chunk_done(op, err, err ? nullptr : &peer);
}

void Replicator::verify_chunk_done(Op* op, int err, const std::vector<link::Digest>* peer) {
  --verify_in_flight_;
  const bool ours = verify_.running && op->verify_run == verify_.run;
  if (ours && err == EIO && mirroring()) return verify_peer_failed(op, err);
  // A chunk ended by a read error (repaired or counted).
  if (ours && !err && !peer) return verify_chunk_end(op, 0);
  if (ours && err) {
    std::string why = err == ECONNRESET ? std::string("the link was lost")
                                        : "comparing " + std::to_string(op->off) + "+" +
                                              std::to_string(op->len) + ": " + strerror(err);
    verify_stop("failed: " + why);
  } else if (ours && peer) {
    const uint64_t g = bitmap_.granularity();
    uint64_t marked = 0;
    for (size_t i = 0; i < peer->size(); ++i) {
      if ((*peer)[i] == op->digests[i]) continue;
      uint64_t off = op->off + i * g;
      uint64_t len = std::min<uint64_t>(g, op->off + op->len - off);
      if (bitmap_.any_dirty(off, len)) continue;  // resync copies it anyway
      ++verify_.out_of_sync_regions;
      verify_.out_of_sync_bytes += len;
      marked += len;
      if (verify_logged_++ < kVerifyLogLimit) {
        MLOG_WARN(
            "verify: %llu+%llu differs from the peer's copy: marked out of sync, resync "
            "copies this node's data there%s",
            static_cast<unsigned long long>(off), static_cast<unsigned long long>(len),
            verify_logged_ == kVerifyLogLimit ? " (further mismatches: counted only)" : "");
      }
      if (move_generation()) MLOG_INFO("verify: the peer lacks data: the generation moves on");
      mark_dirty(off, len);
    }
    return verify_chunk_end(op, marked);
  }
  finish(op, 0);
  verify_pump();
}

}  // namespace mirror
