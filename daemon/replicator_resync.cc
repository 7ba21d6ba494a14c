// Replicator: the resync engine (docs/replication-protocol.md). Copies the
// dirty regions to the peer in chunks, through the same overlap interlock as
// client writes (rule 4); flushes them on the peer in batches before their
// bits are cleared (rule 5); limits the rate, reports progress, and ends with
// SYNC_DONE. With resync-checksums, each chunk first asks the peer for its
// digests (a VERIFY, as online verify does) and sends only the runs of
// regions that differ. The write path is in replicator.cc.
#include <algorithm>
#include <cstring>

#include "clock.h"
#include "log.h"
#include "replicator.h"
#include "replicator_internal.h"
#include "verify_digest.h"

namespace mirror {

namespace {
constexpr uint32_t kResyncChunk = 1 << 20;       // one resync copy at most
constexpr uint64_t kResyncBatch = 64ull << 20;   // peer flush, then clear bits
// ... or sooner, once the batch's first copy is this old: on a slow link
// (64 MiB take a minute at 8 Mbit/s) a link that drops before the batch is
// full would otherwise keep none of the progress.
constexpr uint64_t kResyncBatchMs = 5000;
// How far past the copies in flight the local copy reads ahead (unlimited
// resync rate only): a few regions' worth keeps its disk queue full.
constexpr uint64_t kResyncReadAhead = 16ull << 20;
// A region this node's disk cannot read stays dirty; the pass that met it
// scans again after this long, not at once (a bad sector fails the same way
// until a write remaps it, and each attempt costs the disk its retries).
constexpr uint64_t kResyncReadRetryMs = 10'000;

}  // namespace

void Replicator::resync_begin() {
  resync_active_ = true;
  resync_rescan();
  resync_total_ = bitmap_.dirty_bytes();
  resync_done_ = 0;
  resync_same_ = 0;
  resync_batch_.clear();
  resync_batch_bytes_ = 0;
  flushing_batch_.clear();
  flushing_bytes_ = 0;
  resync_flushing_ = false;
  rate_window_ms_ = now_ms_;
  rate_window_bytes_ = 0;
  tokens_ = 0;
  tokens_ms_ = coarse_ms();
  resync_read_failures_ = 0;
  resync_retry_ms_ = 0;
  MLOG_INFO("resync started: %llu bytes to copy%s", static_cast<unsigned long long>(resync_total_),
            csums_ ? " (checksums: only regions that differ on the peer are sent)" : "");
}

void Replicator::resync_link_lost() {
  resync_active_ = false;
  resync_flushing_ = false;
  resync_batch_.clear();
  resync_batch_bytes_ = 0;
  flushing_batch_.clear();
  flushing_bytes_ = 0;
}

void Replicator::resync_tick(uint64_t now_ms) {
  if (rate_window_ms_ + 2000 <= now_ms) {
    rate_bps_ = rate_window_bytes_ * 1000 / std::max<uint64_t>(1, now_ms - rate_window_ms_);
    rate_window_ms_ = now_ms;
    rate_window_bytes_ = 0;
  }
  if (resync_retry_ms_ && now_ms >= resync_retry_ms_ && resync_active_) {
    MLOG_INFO("resync: scanning again for the %llu bytes left (a local read failed)",
              static_cast<unsigned long long>(bitmap_.dirty_bytes()));
    resync_retry_ms_ = 0;
    resync_read_failures_ = 0;
    resync_rescan();
  }
  resync_pump();
}

void Replicator::resync_pump() {
  if (!resync_active_ || !mirroring()) return;
  // A full batch is flushed on the peer while the next one is copied.
  bool batch_due = resync_batch_bytes_ >= kResyncBatch ||
                   (resync_batch_bytes_ > 0 && coarse_ms() - resync_batch_ms_ >= kResyncBatchMs);
  if (batch_due && !resync_flushing_) resync_batch_flush();
  while (resync_in_flight_ < cfg_.resync_max_inflight && !resync_scan_done_ &&
         resync_batch_bytes_ < kResyncBatch) {
    uint64_t off, len;
    if (!bitmap_.next_dirty(resync_cursor_, kResyncChunk, &off, &len)) {
      resync_scan_done_ = true;
      break;
    }
    if (!take_tokens(len)) break;  // tick() pumps again
    resync_cursor_ = off + len;
    Op* op = new_op(Kind::kResync, off, uint32_t(len), nullptr);
    ++resync_in_flight_;
    submit(op);
  }
  if (!resync_scan_done_) resync_read_ahead();
  if (resync_in_flight_ > 0 || resync_flushing_) return;
  if (!resync_batch_.empty()) return resync_batch_flush();
  if (!resync_scan_done_) return;
  if (bitmap_.dirty_bytes() > 0) {
    if (resync_read_failures_ > 0) {
      // This pass left regions this disk could not read: retried later
      // (resync_tick), while client writes go on.
      if (resync_retry_ms_ == 0) {
        resync_retry_ms_ = now_ms_ + kResyncReadRetryMs;
        last_error_ = "resync: this node's disk could not read " +
                      std::to_string(resync_read_failures_) +
                      " chunk(s) the peer lacks (" + std::to_string(bitmap_.dirty_bytes()) +
                      " bytes out of sync): retried every " +
                      std::to_string(kResyncReadRetryMs / 1000) +
                      " s; a client write over them (which remaps bad sectors) lets the next "
                      "attempt copy them";
        MLOG_ERROR("%s", last_error_.c_str());
      }
      return;
    }
    // Bits set again behind the cursor (a failed write): scan again.
    resync_rescan();
    defer([this] { resync_pump(); });
    return;
  }
  if (sync_done_sent_) return;
  // Everything copied and flushed: the peer adopts our generation.
  sync_done_sent_ = true;
  Op* op = new_op(Kind::kSyncDone, 0, 0, nullptr);
  auto g = bitmap_.generation();
  op->payload = link::encode_generation({g.current, 0, g.history[0], g.history[1]});
  send_to_peer(op);
}

void Replicator::resync_rescan() {
  resync_cursor_ = 0;
  readahead_cursor_ = 0;
  resync_scan_done_ = false;
  batch_epoch_ = dirty_epoch_;
}

bool Replicator::take_tokens(uint64_t len) {
  if (!cfg_.resync_rate) return true;
  // Token bucket: at most one second (or one chunk) of burst.
  uint64_t now = coarse_ms();
  double rate = double(cfg_.resync_rate);
  double cap = std::max(rate, double(kResyncChunk));
  tokens_ = std::min(cap, tokens_ + rate * double(now - tokens_ms_) / 1000.0);
  tokens_ms_ = now;
  if (tokens_ < double(len)) return false;
  tokens_ -= double(len);
  return true;
}

void Replicator::resync_again() {
  if (state_ != LinkState::kSynced || !link_) return;  // resyncing: the pump rescans
  // A failed disk is never a resync source (the detach needs kSynced).
  if (disk_ != DiskState::kOk) return;
  move_generation();
  bitmap_.commit(nullptr);
  state_ = LinkState::kResyncing;
  sync_done_sent_ = false;
  resync_begin();
  resync_pump();
}

void Replicator::resync_read_ahead() {
  if (cfg_.resync_rate) return;  // a limited resync has time to read on demand
  if (!resync_active_ || readahead_drained_) return;
  readahead_cursor_ = std::max(readahead_cursor_, resync_cursor_);
  // Bounded like the copies: a few hints of up to 4 chunks each.
  while (readahead_in_flight_ < 4 && readahead_cursor_ < resync_cursor_ + kResyncReadAhead) {
    uint64_t off, len;
    if (!bitmap_.next_dirty(readahead_cursor_, 4 * kResyncChunk, &off, &len)) {
      readahead_cursor_ = size_;  // nothing dirty past here
      return;
    }
    readahead_cursor_ = off + len;
    ++readahead_in_flight_;
    local_.cache(off, uint32_t(len), &readahead_done_);
  }
}

void Replicator::resync_local_done(Op* op, int err) {
  if (op->probing) {
    op->probing = false;
    op->hole = !err && !op->ext.empty() && op->ext[0].length >= op->len &&
               (op->ext[0].flags & nbd::kStateZero);
    if (!op->hole) {
      op->local_pending = true;
      op->rbuf.reserve(op->len);
      local_.read(op->off, op->len, op->rbuf.data(), op);
      return;
    }
    err = 0;
  }
  if (err) {
    MLOG_ERROR("resync: reading %llu+%u locally failed: %s",
               static_cast<unsigned long long>(op->off), op->len, strerror(-err));
    ++resync_read_failures_;
    --resync_in_flight_;
    finish(op, err);
    return resync_pump();
  }
  if (!mirroring()) {
    --resync_in_flight_;
    return finish(op, -ENOTCONN);
  }
  if (csums_ && !op->hole) {
    // Ask for the peer's digests first. The chunk stays in the interlock
    // until its last write is acknowledged, so no write changes either
    // copy between the two digests and the copies that follow.
    op->digests = region_digests({op->rbuf.data(), op->len}, bitmap_.granularity());
    op->payload = link::encode_verify(bitmap_.granularity());
    op->csum_wait = true;
    return send_to_peer(op);
  }
  op->runs.assign(1, link::Range{op->off, op->len});
  op->run = 0;
  send_to_peer(op);
}

void Replicator::resync_digests(Op* op, const std::vector<link::Digest>* peer, int err) {
  op->csum_wait = false;
  op->payload.clear();
  if (!peer) {
    MLOG_WARN("resync: the peer could not digest %llu+%u (%s): copying it whole",
              static_cast<unsigned long long>(op->off), op->len, strerror(err));
  }
  op->runs = differing_runs(op->off, op->len, bitmap_.granularity(), op->digests,
                            peer ? std::span<const link::Digest>(*peer)
                                 : std::span<const link::Digest>());
  uint64_t sent = 0;
  for (const link::Range& r : op->runs) sent += r.length;
  op->same = op->len - sent;
  op->run = 0;
  if (!mirroring()) {
    --resync_in_flight_;
    return finish(op, -ENOTCONN);
  }
  // Identical everywhere: nothing to send, but the chunk joins the batch
  // like a copy, its bits cleared only after the peer's flush (its data
  // may be in the peer's page cache only).
  if (op->runs.empty()) return resync_copy_done(op, 0);
  send_to_peer(op);
}

void Replicator::resync_reply(Op* op, int err) {
  switch (op->kind) {
    case Kind::kSyncDone: {
      free_op(op);
      if (err) return peer_failed("peer refused the end of resync");
      auto g = bitmap_.generation();
      g.history[1] = g.history[0];
      g.history[0] = g.bitmap;
      g.bitmap = 0;
      bitmap_.set_generation(g);
      bitmap_.set_flags(bitmap_.flags() & ~kFlagFullSyncNeeded);
      bitmap_.commit(nullptr);
      resync_active_ = false;
      peer_io_error_ = false;
      if (last_error_.starts_with("resync: ")) last_error_.clear();  // resolved
      state_ = LinkState::kSynced;
      MLOG_INFO("resync complete: the peer is up to date: %llu bytes, %llu identical on the peer "
                "(not sent)",
                static_cast<unsigned long long>(resync_done_),
                static_cast<unsigned long long>(resync_same_));
      if (on_synced) on_synced();
      // A verify marked regions after the scan ended: copy them too.
      if (bitmap_.dirty_bytes() > 0) resync_again();
      return;
    }
    case Kind::kResync:
      // A plain REPLY to the chunk's VERIFY: the peer refused it.
      if (op->csum_wait) return resync_digests(op, nullptr, err ? err : EPROTO);
      if (err) {
        MLOG_WARN("resync: the peer failed to write %llu+%u: %s",
                  static_cast<unsigned long long>(op->off), op->len, strerror(err));
        --resync_in_flight_;
        finish(op, -err);
        return peer_failed("the peer failed a resync write");
      }
      if (!op->hole && op->run + 1 < op->runs.size()) {
        ++op->run;  // the next part that differs, still under the interlock
        return send_to_peer(op);
      }
      return resync_copy_done(op, 0);
    default: {  // kFlush: the peer flushed a batch (resync_batch_flush)
      free_op(op);
      resync_flushing_ = false;
      if (err) return peer_failed("the peer failed to flush resynced data");
      // Rule 5: bits are cleared only once the copies are durable, and
      // only if no failure marked anything dirty since the copies began.
      if (batch_epoch_ == dirty_epoch_) {
        for (const link::Range& r : flushing_batch_) bitmap_.clear_dirty(r.offset, r.length);
        resync_done_ += flushing_bytes_;
        bitmap_.commit(nullptr);
      }
      flushing_batch_.clear();
      flushing_bytes_ = 0;
      return resync_pump();
    }
  }
}

void Replicator::resync_copy_done(Op* op, int) {
  uint64_t off = op->off, len = op->len;
  --resync_in_flight_;
  if (resync_batch_.empty()) resync_batch_ms_ = coarse_ms();
  resync_batch_.push_back({off, len});
  resync_batch_bytes_ += len;
  rate_window_bytes_ += len;
  resynced_total_ += len;
  resync_same_ += op->same;
  same_total_ += op->same;
  finish(op, 0);
  resync_pump();
}

void Replicator::resync_batch_flush() {
  resync_flushing_ = true;
  flushing_batch_.swap(resync_batch_);
  flushing_bytes_ = resync_batch_bytes_;
  resync_batch_.clear();
  resync_batch_bytes_ = 0;
  Op* op = new_op(Kind::kFlush, 0, 0, nullptr);
  op->resync_batch = true;
  send_to_peer(op);
}

ResyncProgress Replicator::progress() const {
  ResyncProgress p;
  p.running = state_ == LinkState::kResyncing;
  p.total_bytes = resync_total_;
  p.done_bytes = std::min(resync_done_, resync_total_);
  p.same_bytes = resync_same_;
  p.rate_bps = rate_bps_;
  uint64_t left = bitmap_.dirty_bytes();
  p.eta_seconds = rate_bps_ ? left / rate_bps_ : 0;
  return p;
}

}  // namespace mirror
