// Replicator: the mirrored-write path. Client requests, the overlap
// interlock, the activity log, issuing each change to both copies (or marking
// it dirty), and completing it from the local result and the peer's reply.
// The resync engine is in replicator_resync.cc, the link's lifecycle (attach,
// loss, split, the periodic tick) in replicator_link.cc.
#include "replicator.h"

#include <time.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "auth.h"
#include "clock.h"
#include "log.h"
#include "replicator_internal.h"

namespace mirror {

namespace {

bool overlap(uint64_t a, uint64_t al, uint64_t b, uint64_t bl) { return a < b + bl && b < a + al; }

}  // namespace

Replicator::Replicator(Loop& loop, Backend& local, Bitmap& bitmap, const VolumeConfig& cfg)
    : loop_(loop), local_(local), bitmap_(bitmap), cfg_(cfg), size_(cfg.size),
      now_ms_(coarse_ms()) {
  readahead_done_.rep = this;
}

Replicator::~Replicator() = default;

// ------------------------------------------------------------------ ops --

Replicator::Op* Replicator::new_op(Kind kind, uint64_t off, uint32_t len, IoDone* upper) {
  Op* op;
  ++live_ops_;
  if (free_ops_.empty()) {
    op = new Op();
  } else {
    op = free_ops_.back().release();
    free_ops_.pop_back();
  }
  Buffer keep = std::move(op->rbuf);
  *op = Op();
  op->rbuf = std::move(keep);
  op->rep = this;
  op->meta.op = op;
  op->kind = kind;
  op->off = off;
  op->len = len;
  op->upper = upper;
  return op;
}

void Replicator::free_op(Op* op) {
  --live_ops_;
  op->payload.clear();
  free_ops_.emplace_back(op);
}

// ------------------------------------------------------- client requests --

void Replicator::read(uint64_t offset, uint32_t length, uint8_t* buf, IoDone* done) {
  // Served locally; replicator_read.cc has what happens when that fails.
  Op* op = new_op(Kind::kRead, offset, length, done);
  op->out = buf;
  if (disk_ == DiskState::kDiskless) {  // the peer's copy answers, through the interlock
    op->diskless = true;
    op->repair = true;
    op->local_err = -EIO;
    return submit(op);
  }
  op->local_pending = true;
  local_.read(offset, length, buf, op);
}

void Replicator::cache(uint64_t offset, uint32_t length, IoDone* done) {
  if (disk_ == DiskState::kDiskless) return defer([done] { done->io_done(0); });
  local_.cache(offset, length, done);
}

void Replicator::block_status(uint64_t offset, uint32_t length, uint32_t max_extents,
                              std::vector<nbd::Extent>* out, IoDone* done) {
  if (disk_ == DiskState::kDiskless) {  // no map of the peer's holes here: all data
    out->push_back({length, 0});
    return defer([done] { done->io_done(0); });
  }
  local_.block_status(offset, length, max_extents, out, done);
}

void Replicator::write(uint64_t offset, uint32_t length, const uint8_t* buf, bool fua,
                       IoDone* done) {
  Op* op = new_op(Kind::kWrite, offset, length, done);
  op->buf = buf;
  op->fua = fua;
  submit(op);
}

void Replicator::trim(uint64_t offset, uint32_t length, bool fua, IoDone* done) {
  // TRIM is advisory, and punched on one copy only it would leave the copies
  // different: while either store cannot punch holes, it changes neither.
  if ((!trim_local_ok_ && disk_ != DiskState::kDiskless) || (mirroring() && !trim_peer_ok_)) {
    defer([done] { done->io_done(0); });
    return;
  }
  Op* op = new_op(Kind::kTrim, offset, length, done);
  op->fua = fua;
  submit(op);
}

void Replicator::zero(uint64_t offset, uint32_t length, ZeroFlags flags, IoDone* done) {
  Op* op = new_op(Kind::kZero, offset, length, done);
  op->zf = flags;
  op->fua = flags.fua;
  submit(op);
}

void Replicator::flush(IoDone* done) {
  Op* op = new_op(Kind::kFlush, 0, 0, done);
  op->flush_tick = tick_++;
  if (!done) internal_flush_running_ = true;
  last_flush_ms_ = now_ms_;
  writes_since_flush_ = 0;
  if (disk_ == DiskState::kDiskless && flush_poisoned_) {
    flush_poisoned_ = false;
    MLOG_ERROR("diskless: this FLUSH fails: the link to the peer, the only copy, was lost with "
               "acknowledged changes it had not flushed (lost if it lost power)");
    op->diskless = true;
    op->peer_err = EIO;
    defer([this, op] { maybe_complete(op); });
    return;
  }
  if (disk_ == DiskState::kDiskless) return diskless_dispatch(op);
  op->degraded = !mirroring();
  op->local_pending = true;
  local_.flush(op);
  if (mirroring()) send_to_peer(op);
}

// ------------------------------------------------------------- ordering --

bool Replicator::local_in_flight() const {
  for (const Op* o : running_)
    if (o->local_pending && (o->modifies() || o->rewrite)) return true;
  return false;
}

bool Replicator::conflicts(const Op* op) const {
  for (const Op* o : running_) {
    if (overlap(op->off, op->len, o->off, o->len)) return true;
  }
  for (const Op* o : blocked_) {
    if (o != op && overlap(op->off, op->len, o->off, o->len)) return true;
  }
  return false;
}

void Replicator::submit(Op* op) {
  if (conflicts(op)) {
    blocked_.push_back(op);
    return;
  }
  start(op);
}

void Replicator::unblock() {
  if (blocked_.empty()) return;
  std::deque<Op*> still;
  auto clash = [&](const Op* op) {
    for (const Op* o : running_)
      if (overlap(op->off, op->len, o->off, o->len)) return true;
    for (const Op* o : still)
      if (overlap(op->off, op->len, o->off, o->len)) return true;
    return false;
  };
  std::deque<Op*> pending;
  pending.swap(blocked_);
  for (Op* op : pending) {
    if (clash(op)) {
      still.push_back(op);
    } else {
      start(op);
    }
  }
  // start() never blocks, so nothing was added to blocked_ meanwhile.
  blocked_.swap(still);
}

void Replicator::start(Op* op) {
  op->in_running = true;
  op->it = running_.insert(running_.end(), op);
  if (op->modifies()) {
    uint64_t e0 = op->off / bitmap_.al_extent(), e1 = (op->off + op->len - 1) / bitmap_.al_extent();
    for (uint64_t e = e0; e <= e1; ++e) ++extents_[e].in_flight;
    if (holding_ || plan_holds_ > 0 ||
        fail_stop_holds()) {
      held_.push_back(op);  // held, or fail-stop waiting for the peer
      if (stop_requested_) defer([this] { abandon_held_if_stopping(); });
      return;
    }
    return log_then_dispatch(op);
  }
  dispatch(op);
}

void Replicator::log_then_dispatch(Op* op) {
  // Rule 1: the activity extent is durable before either copy is written
  // (diskless: there is no copy here to resync after a crash).
  if (disk_ != DiskState::kDiskless && !bitmap_.is_active_durable(op->off, op->len)) {
    bitmap_.set_active(op->off, op->len);
    op->waiting_al = true;
    op->meta_pending = true;
    return bitmap_.commit(&op->meta);
  }
  dispatch(op);
}

void Replicator::dispatch(Op* op) {
  if (op->kind == Kind::kRead) return read_from_peer(op);
  if (op->kind == Kind::kResync) {
    // A region that is a hole here becomes a ZERO on the peer: no data to
    // read or send (a full sync of a sparse volume costs almost nothing).
    op->local_pending = true;
    op->probing = true;
    op->ext.clear();
    local_.block_status(op->off, op->len, 1, &op->ext, op);
    return;
  }
  if (op->kind == Kind::kVerify) {
    // This copy first, then the peer's: the interlock keeps every write to
    // the chunk out until both were read, and the link is FIFO, so both
    // digests see the same writes.
    op->local_pending = true;
    op->rbuf.reserve(op->len);
    local_.read(op->off, op->len, op->rbuf.data(), op);
    return;
  }
  if (plan_holds_ > 0 && op->modifies()) {
    // Started before the plan was decided, its activity-log commit finished
    // after: issued now, it would be marked dirty under a plan that may say
    // "in sync" and never be copied. It waits for attach like new writes
    // (or, paused for a resize, until both copies grew).
    // (The log line's words are what tests/mirror/plan-race.sh looks for.)
    MLOG_DEBUG("a write at %llu+%u waits for the handshake's plan to be attached (or a resize)",
               static_cast<unsigned long long>(op->off), op->len);
    held_.push_back(op);
    // A resize's pause may be waiting for exactly this: every write held or
    // done (check_drained runs otherwise only when an op finishes).
    if (!drain_waiters_.empty()) {
      defer([this] { check_drained(); });
    }
    return;
  }
  ++writes_since_flush_;  // (diskless too: the periodic flush makes the peer's copy durable)
  if (disk_ == DiskState::kDiskless) return diskless_dispatch(op);
  op->local_pending = true;
  op->degraded = !mirroring();
  // The peer's leg (link, its disk, the reply) is the longer one: start it
  // first, so the local write's inline submission (an O_DIRECT FUA write
  // queues its bio right there) does not delay it. The two legs overlap;
  // a write completes after the slower, not after both in turn.
  if (!op->degraded) {
    // (A fast zero goes to the peer once this copy did it: the peer, which
    // the link does not tell it must be fast, would zero what the client
    // is told was not.)
    if (op->kind == Kind::kZero && op->zf.fast_only) {
      op->peer_after_local = true;
    } else {
      send_to_peer(op);
    }
  }
  switch (op->kind) {
    case Kind::kWrite:
      local_.write(op->off, op->len, op->buf, op->fua, op);
      break;
    case Kind::kTrim:
      local_.trim(op->off, op->len, op->fua, op);
      break;
    case Kind::kZero:
      local_.zero(op->off, op->len, op->zf, op);
      break;
    default:
      break;
  }
  if (op->degraded) mark_dirty_and_wait(op);  // Rule 2
}

void Replicator::send_to_peer(Op* op) {
  link::Header h;
  const uint8_t* data = nullptr;
  uint64_t off = op->off;
  uint32_t len = op->len;
  switch (op->repair ? Kind::kRead : op->kind) {  // a verify chunk's repair is a READ
    case Kind::kWrite:
      h.type = link::Type::kWrite;
      h.payload = op->len;
      data = op->buf;
      if (op->fua) h.flags |= link::kFlagFua;
      break;
    case Kind::kResync:
      if (op->csum_wait) {  // the peer's digests of the chunk first
        h.type = link::Type::kVerify;
        h.payload = uint32_t(op->payload.size());
        data = op->payload.data();
      } else if (op->hole) {
        h.type = link::Type::kZero;
        h.flags = link::kFlagResync;
      } else {  // the whole chunk, or one run of it that differs
        off = op->runs[op->run].offset;
        len = uint32_t(op->runs[op->run].length);
        h.type = link::Type::kWrite;
        h.flags = link::kFlagResync;
        h.payload = len;
        data = op->rbuf.data() + (off - op->off);
      }
      break;
    case Kind::kTrim:
      h.type = link::Type::kTrim;
      if (op->fua) h.flags |= link::kFlagFua;
      break;
    case Kind::kZero:
      h.type = link::Type::kZero;
      if (op->fua) h.flags |= link::kFlagFua;
      if (!op->zf.may_trim) h.flags |= link::kFlagNoHole;
      break;
    case Kind::kFlush:
      h.type = link::Type::kFlush;
      break;
    case Kind::kPing:
      h.type = link::Type::kPing;
      break;
    case Kind::kRead:
      h.type = link::Type::kRead;
      break;
    case Kind::kDetach:
      h.type = link::Type::kDetach;
      break;
    case Kind::kSyncDone:
    case Kind::kVerify:
      h.type = op->kind == Kind::kVerify ? link::Type::kVerify : link::Type::kSyncDone;
      h.payload = uint32_t(op->payload.size());
      data = op->payload.data();
      break;
  }
  h.id = next_id_++;
  h.offset = off;
  h.length = len;
  op->peer_id = h.id;
  op->peer_pending = true;
  op->sent_to_peer = true;
  op->sent_ms = coarse_ms();
  outstanding_[h.id] = op;
  link_->send(h, data);
}

bool Replicator::move_generation() {
  auto g = bitmap_.generation();
  if (g.bitmap != 0) return false;  // already tracking since a shared generation
  g.bitmap = g.current;
  g.current = random_id();
  bitmap_.set_generation(g);
  return true;
}

void Replicator::mark_dirty_and_wait(Op* op) {
  // The first change the peer lacks moves the generation on (committed with
  // its dirty bit), or the next handshake would find both generations equal
  // and plan "in sync" without copying it: a primary that started while its
  // peer was down never went through diverge().
  const bool moves_generation = move_generation();
  mark_dirty(op->off, op->len);
  if (!moves_generation && !bitmap_.failed() && bitmap_.is_active_durable(op->off, op->len)) {
    // Rule 2 without a metadata sync on the write path: the extent is
    // durably active, and crash recovery marks an active extent dirty
    // whole, so the bit is already as good as on disk. It must be durable
    // before the extent leaves the activity log (evict_extents waits for
    // that commit) and at a clean stop (Volume::stop commits it first).
    // Metadata that failed can never persist the bit: then the write waits
    // for the commit, and fails with it, as every untrackable write must.
    if (!bitmap_.committed(bitmap_.dirty_durable_after(op->off, op->len))) bitmap_.commit(nullptr);
    return;
  }
  op->meta_pending = true;
  bitmap_.commit(&op->meta);
}

void Replicator::mark_dirty(uint64_t off, uint64_t len) {
  bitmap_.set_dirty(off, len);
  const uint64_t n = bitmap_.dirty_durable_after(off, len);
  if (bitmap_.committed(n) || extents_.empty()) return;
  const uint64_t al = bitmap_.al_extent(), e0 = off / al, e1 = (off + len - 1) / al;
  auto raise = [n](Extent& x) { x.dirty_commit = std::max(x.dirty_commit, n); };
  if (e1 - e0 >= extents_.size()) {  // a wide range (verify): walk the active ones
    for (auto& [e, x] : extents_)
      if (e >= e0 && e <= e1) raise(x);
    return;
  }
  for (uint64_t e = e0; e <= e1; ++e)
    if (auto it = extents_.find(e); it != extents_.end()) raise(it->second);
}

// ---------------------------------------------------------- completions --

void Replicator::on_local(Op* op, int err) {
  op->local_pending = false;
  if (op->rewrite) return rewrite_done(op, err);
  if (op->kind == Kind::kRead) return read_done(op, err);
  if (op->kind == Kind::kTrim && err == -EOPNOTSUPP) {
    err = 0;
    trim_kept(op, /*peer=*/false);
  }
  if (std::exchange(op->peer_after_local, false) && !err) {
    if (mirroring()) return send_to_peer(op);  // on_reply completes it
    op->degraded = true;  // the link went (or a split began) meanwhile
    mark_dirty_and_wait(op);
  }
  if (err && absorb_disk_error(op, err)) {  // a detach takes it over
    ++local_errors_;
    err = 0;
  }
  if (err) ++local_errors_;
  // A failed dirty-bit commit (on_meta) may have come first: its error must
  // survive a successful local write, or the write is acknowledged
  // untracked (rule 2). Resync ops run two local steps; the last one counts.
  if (!op->local_err || op->kind == Kind::kResync) op->local_err = err;
  if (op->kind == Kind::kResync) return resync_local_done(op, err);
  if (op->kind == Kind::kVerify) return verify_local_done(op, err);
  maybe_complete(op);
}

void Replicator::trim_kept(Op* op, bool peer) {
  (peer ? op->trim_kept_peer : op->trim_kept_local) = true;
  bool& ok = peer ? trim_peer_ok_ : trim_local_ok_;
  if (!ok) return;
  ok = false;
  MLOG_WARN("%s backing store cannot punch holes: TRIM changes neither copy %s (punched on one "
            "copy only, it would leave them different)",
            peer ? "the peer's" : "this node's", peer ? "while it is connected" : "from now on");
}

void Replicator::on_meta(Op* op, int err) {
  if (op->kind == Kind::kDetach) return detach_step(op, err);
  op->meta_pending = false;
  if (op->waiting_al) {
    op->waiting_al = false;
    if (err) return finish(op, err);  // untracked writes are never issued
    return dispatch(op);  // dispatch() holds it if a handshake's plan is pending
  }
  if (err && !op->local_err) op->local_err = err;  // cannot promise the peer will catch up
  maybe_complete(op);
}

void Replicator::on_reply(const link::Header& h) {
  last_reply_ms_ = coarse_ms();
  auto it = outstanding_.find(h.id);
  if (it == outstanding_.end()) return;  // answered after a timeout: ignore
  Op* op = it->second;
  outstanding_.erase(it);
  op->peer_pending = false;
  int err = int(h.length);
  if (op->kind == Kind::kTrim && err == EOPNOTSUPP) {
    err = 0;
    trim_kept(op, /*peer=*/true);
  }
  // (A lone copy's failed request is not the link's trouble: below.)
  if (err && !(op->diskless && peer_sole_errors_)) peer_io_error_ = true;
  switch (op->kind) {
    case Kind::kPing:
      ping_outstanding_ = false;
      return free_op(op);
    case Kind::kSyncDone:
    case Kind::kResync:
      return resync_reply(op, err);
    case Kind::kVerify:  // a plain REPLY: the peer could not take the VERIFY
      return verify_chunk_done(op, err ? err : EPROTO, nullptr);
    case Kind::kDetach:
      return detach_step(op, err);
    case Kind::kFlush:
      if (op->freeze) {
        free_op(op);
        freeze_flushing_ = false;
        for (auto& w : std::exchange(freeze_waiters_, {})) w(err ? -err : 0);
        if (err) peer_failed("the peer failed to flush at the split");
        return;
      }
      if (op->resync_batch) return resync_reply(op, err);
      if (err && op->diskless && peer_sole_errors_) {
        // The only copy's disk failed it: the client's FLUSH fails, as on
        // a lone disk, and the link stays (as for a failed write, below).
        op->peer_err = err;
        MLOG_ERROR("diskless: the peer's disk, the only copy, failed a flush: %s; that "
                   "request fails", strerror(err));
      } else if (err) {
        op->peer_err = err;
        peer_failed("the peer failed to flush");
      }
      return maybe_complete(op);
    default:
      break;
  }
  if (err && op->diskless && peer_sole_errors_) {
    // The peer's copy is the only one, confirmed, and its disk failed this
    // request: the client gets the error, as from a lone disk. The peer
    // flagged nothing (link::kFeatureSoleErrors) and the link stays: every
    // other request is still served.
    op->peer_err = err;
    MLOG_ERROR("diskless: the peer's disk, the only copy, failed %s at %llu+%u: %s; that "
               "request fails",
               op->kind == Kind::kWrite ? "a write" : op->kind == Kind::kTrim ? "a trim" : "a zeroing",
               static_cast<unsigned long long>(op->off), op->len, strerror(err));
    return maybe_complete(op);
  }
  if (err && (op->diskless || disk_abandoned())) {  // the only copy failed it
    op->peer_err = err;
    MLOG_ERROR("the peer failed a write at %llu+%u (this node's disk is given up): %s",
               static_cast<unsigned long long>(op->off), op->len, strerror(err));
    peer_failed("the peer failed a write");
    return maybe_complete(op);
  }
  if (err) {
    // The peer could not apply a client write: the copies differ here.
    op->peer_err = err;
    MLOG_WARN("the peer failed a write at %llu+%u: %s", static_cast<unsigned long long>(op->off),
              op->len, strerror(err));
    ++dirty_epoch_;
    mark_dirty_and_wait(op);
    peer_failed("the peer failed a write");
  }
  maybe_complete(op);
}

void Replicator::maybe_complete(Op* op) {
  if (op->local_pending || op->peer_pending || op->meta_pending) return;
  const bool change = op->modifies() || op->kind == Kind::kFlush;
  if (op->diskless) {
    // The peer's copy is the only one: its result is the request's (a
    // full disk is told as such; anything else is an I/O error).
    const int e = op->peer_err;
    op->local_err = !e ? 0 : (e == ENOSPC || e == EDQUOT) ? -ENOSPC : -EIO;
  } else if (op->disk_err || (change && op->sent_to_peer && op->peer_err && disk_abandoned())) {
    // This disk failed it (a detach took the error over), or the peer did
    // not take it while this disk is being given up: decided once the
    // detach is.
    if (disk_ == DiskState::kDetaching) {
      detach_waiters_.push_back(op);  // detach_end completes it
      return;
    }
    if (disk_ == DiskState::kDiskless) {
      // On the peer, recorded as the only current copy: done. Not on the
      // peer, or not confirmed there: never acknowledged from one copy.
      op->local_err = op->peer_err || !detach_confirmed_ ? -EIO : 0;
      op->disk_err = 0;
    } else {
      op->local_err = std::exchange(op->disk_err, 0);  // not detached: the disk's error
    }
  }
  if (op->modifies() && op->sent_to_peer && op->peer_err == ECONNRESET && !op->local_err &&
      !disk_abandoned() && fail_stop_holds()) {
    // on-peer-loss = fail-stop: in flight when the link was lost, the peer
    // may lack it. Acknowledged from this copy alone, it was lost with this
    // node after a failover: the promise is that the copies never diverge.
    // It waits with the writes held since, and goes out again, to both
    // copies (the same bytes: overlapping writes wait behind it), once the
    // peer is back.
    requeue_held(op);
    return;
  }
  if (op->kind == Kind::kFlush) {
    bool covered = !op->local_err && ((op->sent_to_peer && !op->peer_err) || op->degraded);
    if (covered) evict_extents(op->flush_tick);
    if (op->local_err && op->sent_to_peer && !op->peer_err && !disk_abandoned() &&
        !quiescing_) {
      // This disk's sync failed, the peer's did not: writes since the last
      // flush of both copies may be on the peer's disk only (a failed
      // writeback). The client gets the error; resync gives the peer this
      // copy's version of them, so both hold the same one. Synchronized
      // until now, the resync starts here (no reconnect would come).
      ++dirty_epoch_;
      if (mark_unflushed_dirty() > 0) {
        MLOG_WARN("this node's disk failed a flush the peer's did not: resyncing the extents "
                  "written since the last flush of both copies");
        bitmap_.commit(nullptr);
        resync_again();
      }
    }
    if (!op->upper) internal_flush_running_ = false;
    return finish(op, op->local_err);
  }
  if (op->kind == Kind::kTrim && !disk_abandoned() && !op->trim_marked && !op->local_err &&
      op->sent_to_peer && !op->peer_err && op->trim_kept_local != op->trim_kept_peer) {
    // One copy punched, the other kept its data (the first TRIM to find a
    // store that cannot punch): resync gives the peer this copy's bytes.
    MLOG_INFO("TRIM %llu+%u was applied on %s copy only: resyncing it",
              static_cast<unsigned long long>(op->off), op->len,
              op->trim_kept_local ? "the peer's" : "this");
    op->trim_marked = true;
    ++dirty_epoch_;
    mark_dirty_and_wait(op);
    resync_again();
    if (op->meta_pending) return;  // on_meta completes it
  }
  if (op->local_err && op->modifies() && op->sent_to_peer && !op->peer_err && !disk_abandoned()) {
    // Written on the peer only: resync will restore one version on both.
    // Synchronized until now, it starts here (and moves the generation):
    // no reconnect would come to copy the range while the link stays up.
    ++dirty_epoch_;
    mark_dirty(op->off, op->len);
    bitmap_.commit(nullptr);
    resync_again();
  }
  finish(op, op->local_err);
}

void Replicator::requeue_held(Op* op) {
  op->peer_err = 0;
  op->sent_to_peer = false;
  op->degraded = false;
  op->waiting_al = false;
  op->peer_after_local = false;
  op->trim_kept_local = op->trim_kept_peer = op->trim_marked = false;
  held_.push_back(op);
  if (!drain_waiters_.empty()) defer([this] { check_drained(); });
  if (stop_requested_) defer([this] { abandon_held_if_stopping(); });
}

void Replicator::stop_requested() {
  stop_requested_ = true;
  abandon_held_if_stopping();
}

void Replicator::abandon_held_if_stopping() {
  if (!stop_requested_ || !fail_stop_holds() || held_.empty()) return;
  MLOG_WARN("stopping with the peer gone (on-peer-loss = fail-stop): %zu held writes are left "
            "unanswered (never acknowledged; the kernel resends them to the next mirrord)",
            held_.size());
  std::deque<Op*> held;
  held.swap(held_);
  for (Op* op : held) finish(op, kUnanswered);
}

void Replicator::finish(Op* op, int err) {
  if (op->in_running) {
    running_.erase(op->it);
    op->in_running = false;
    if (op->modifies()) {
      uint64_t e0 = op->off / bitmap_.al_extent(),
               e1 = (op->off + op->len - 1) / bitmap_.al_extent();
      uint64_t t = tick_++;
      if (!op->fua) last_change_tick_ = t;  // a FUA change is durable once acknowledged
      for (uint64_t e = e0; e <= e1; ++e) {
        Extent& x = extents_[e];
        --x.in_flight;
        x.last_done = t;
      }
    }
  }
  IoDone* upper = op->upper;
  free_op(op);
  if (upper) upper->io_done(err);
  unblock();
  check_freeze();
  check_drained();
}

// --------------------------------------------------------- activity log --

void Replicator::evict_extents(uint64_t flush_tick) {
  flushed_tick_ = std::max(flushed_tick_, flush_tick);
  // The activity log keeps up to al_extents extents active, like DRBD's:
  // a write to an active extent needs no metadata sync, mirrored or not
  // (after a split, that is the difference between a stall and none). Past
  // that, the least recently written extents leave first, once idle, flushed
  // on both copies, and with their dirty bits durable: the clear goes into a
  // later commit than those bits, never the same one (a commit is not
  // atomic across blocks).
  if (extents_.size() <= cfg_.al_extents) return;
  std::vector<std::pair<uint64_t, uint64_t>> idle;  // (last_done, extent)
  for (const auto& [e, x] : extents_) {
    if (x.in_flight == 0 && x.last_done < flush_tick && bitmap_.committed(x.dirty_commit))
      idle.emplace_back(x.last_done, e);
  }
  size_t n = std::min(idle.size(), extents_.size() - cfg_.al_extents);
  if (n == 0) return;
  std::nth_element(idle.begin(), idle.begin() + (n - 1), idle.end());
  for (size_t i = 0; i < n; ++i) {
    bitmap_.clear_active(idle[i].second * bitmap_.al_extent(), bitmap_.al_extent());
    extents_.erase(idle[i].second);
  }
  bitmap_.commit(nullptr);
}

uint64_t Replicator::mark_unflushed_dirty() {
  uint64_t before = bitmap_.dirty_bytes();
  std::vector<uint64_t> unflushed;
  for (const auto& [e, x] : extents_)
    if (x.in_flight > 0 || x.last_done >= flushed_tick_) unflushed.push_back(e);
  for (uint64_t e : unflushed) mark_dirty(e * bitmap_.al_extent(), bitmap_.al_extent());
  return bitmap_.dirty_bytes() - before;
}

void Replicator::start_internal_flush() { flush(nullptr); }

}  // namespace mirror
