// Replicator: client reads. A read is served from the local copy. When the
// local disk fails it (a bad sector: EIO), the peer's copy answers instead,
// as md's RAID1 and DRBD do, and the range is rewritten here from it, which
// makes a disk remap the sector: the client never sees the error.
//
// The peer's copy can answer only where it is known to hold what this copy
// should: the link mirrors (synchronized or resyncing), the range is not
// dirty (a clear bit means every acknowledged write to it is on the peer),
// and no write to the range runs. The last holds because the repair runs
// through the overlap interlock (rule 4) from the moment it asks the peer
// until the rewrite completed: no client write can land between the peer's
// read and the rewrite and be overwritten by older data.
#include <cstring>

#include "clock.h"
#include "log.h"
#include "replicator.h"
#include "replicator_internal.h"

namespace mirror {

namespace {
// Read errors logged one by one in a 10 s window; the rest are counted.
constexpr uint64_t kReadLogWindowMs = 10'000;
constexpr uint32_t kReadLogLimit = 8;
}  // namespace

const char* Replicator::peer_cannot_read(const Op* op) const {
  if (!mirroring()) return "the mirror is not connected";
  if (!peer_reads_) return "the peer's mirrord cannot serve reads (upgrade it)";
  if (op->len > link::kMaxData) return "the read is larger than one link message";
  // Diskless, the peer's copy is the only current one (nothing is marked).
  if (!op->diskless && bitmap_.any_dirty(op->off, op->len))
    return "the peer's copy of the range is out of date";
  return "";
}

bool Replicator::read_log_ok() {
  if (now_ms_ - read_log_window_ms_ >= kReadLogWindowMs) {
    if (read_log_suppressed_)
      MLOG_WARN("local disk: %llu more read errors in the last %llu s (not logged one by one)",
                static_cast<unsigned long long>(read_log_suppressed_),
                static_cast<unsigned long long>(kReadLogWindowMs / 1000));
    read_log_window_ms_ = now_ms_;
    read_log_lines_ = 0;
    read_log_suppressed_ = 0;
  }
  if (read_log_lines_ < kReadLogLimit) {
    ++read_log_lines_;
    return true;
  }
  ++read_log_suppressed_;
  return false;
}

void Replicator::rewrite_done(Op* op, int err) {
  op->rewrite = false;
  if (err == -EOPNOTSUPP) {  // not tried: no error of the disk
    if (read_log_ok())
      MLOG_WARN("local disk: %llu+%u not rewritten: this store takes no direct write of the "
                "range (unaligned, or no O_DIRECT); reads of it keep going to the peer's copy",
                static_cast<unsigned long long>(op->off), op->len);
  } else if (err) {
    ++local_errors_;
    last_error_ = "local disk: rewriting " + std::to_string(op->off) + "+" +
                  std::to_string(op->len) + " from the peer's copy failed: " + strerror(-err) +
                  "; reads of it are answered by the peer's copy while the mirror is connected";
    if (read_log_ok()) MLOG_ERROR("%s", last_error_.c_str());
  } else {
    ++read_repairs_;
    if (read_log_ok())
      MLOG_INFO("local disk: %llu+%u rewritten from the peer's copy (read error corrected)",
                static_cast<unsigned long long>(op->off), op->len);
  }
  if (op->kind == Kind::kVerify) {  // the chunk is settled: repaired, or not compared
    if (verify_.running && op->verify_run == verify_.run)
      (err ? verify_.unreadable_bytes : verify_.repaired_bytes) += op->len;
    return verify_chunk_done(op, 0, nullptr);
  }
  finish(op, 0);  // the client has the peer's data either way
}

void Replicator::read_done(Op* op, int err) {
  if (!err) {  // the common case: no interlock, nothing else to do
    IoDone* upper = op->upper;
    free_op(op);
    return upper->io_done(0);
  }
  ++local_errors_;
  const char* why = peer_cannot_read(op);
  if (*why) {
    if (read_log_ok())
      MLOG_ERROR("local disk: reading %llu+%u failed: %s (the peer's copy cannot answer: %s)",
                 static_cast<unsigned long long>(op->off), op->len, strerror(-err), why);
    return finish(op, err);
  }
  if (read_log_ok())
    MLOG_WARN("local disk: reading %llu+%u failed: %s; reading the peer's copy",
              static_cast<unsigned long long>(op->off), op->len, strerror(-err));
  op->local_err = err;
  op->repair = true;
  submit(op);  // dispatch() calls read_from_peer once no write overlaps it
}

void Replicator::read_from_peer(Op* op) {
  // Checked again: the link or the bitmap may have changed while it waited
  // for an overlapping write (which may also have been the one that made
  // the range dirty).
  if (const char* why = peer_cannot_read(op); *why) {
    if (read_log_ok())
      MLOG_ERROR("%s: the read of %llu+%u fails: the peer's copy cannot answer: %s",
                 op->diskless ? "diskless" : "local disk",
                 static_cast<unsigned long long>(op->off), op->len, why);
    // Deferred: start() may be running this from unblock(), which must not
    // see requests complete (and new ones submitted) under it.
    return defer([this, op] { finish(op, op->local_err); });
  }
  send_to_peer(op);
}

void Replicator::on_read_reply(const link::Header& h, Buffer& payload) {
  last_reply_ms_ = coarse_ms();
  auto it = outstanding_.find(h.id);
  if (it == outstanding_.end()) return;  // answered after a timeout: ignore
  Op* op = it->second;
  if (!op->repair) {
    if (on_link_failure) on_link_failure("the peer answered a request with READ_REPLY");
    return;
  }
  outstanding_.erase(it);
  op->peer_pending = false;
  int err = int(h.length);
  if (!err && h.payload != op->len) err = EPROTO;
  if (err) {
    if (read_log_ok())
      MLOG_ERROR("local disk: the read of %llu+%u fails: the peer's copy failed it too: %s",
                 static_cast<unsigned long long>(op->off), op->len, strerror(err));
    if (op->kind == Kind::kVerify) {  // not compared; the run goes on
      if (verify_.running && op->verify_run == verify_.run) verify_.unreadable_bytes += op->len;
      return verify_chunk_done(op, 0, nullptr);
    }
    return finish(op, op->local_err);
  }
  std::memcpy(op->out, payload.data(), op->len);
  if (op->diskless) return finish(op, 0);  // no disk here to rewrite
  if (op->kind == Kind::kRead) ++reads_from_peer_;
  // Still inside the interlock: no write to the range runs, so the peer's
  // data is what this copy must hold. The rewrite is local only (the peer
  // has it) and outside the activity log: a crash in the middle leaves the
  // range holding that same data or the old unreadable sectors. Backend::
  // rewrite: the disk's own answer (it remapped the sector, or cannot), and
  // a failure that stays this request's: not a page lost at writeback that
  // would fail the client's next FLUSH, not a failed sync that would make
  // the store refuse every later write.
  op->rewrite = true;
  op->local_pending = true;
  local_.rewrite(op->off, op->len, op->out, op);
}

}  // namespace mirror
