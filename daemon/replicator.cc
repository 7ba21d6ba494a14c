#include "replicator.h"

#include <time.h>

#include <algorithm>
#include <cstring>

#include "auth.h"
#include "clock.h"
#include "log.h"

namespace mirror {

namespace {
constexpr uint32_t kResyncChunk = 1 << 20;       // one resync copy at most
constexpr uint64_t kResyncBatch = 64ull << 20;   // peer flush, then clear bits
// How far past the copies in flight the local copy reads ahead (unlimited
// resync rate only): a few regions' worth keeps its disk queue full.
constexpr uint64_t kResyncReadAhead = 16ull << 20;
constexpr uint64_t kInternalFlushMs = 5000;      // activity-log turnover
// A peer that answers pings is alive; a request it leaves unanswered for
// this many ack timeouts means its storage is stuck (DRBD's ko-count).
constexpr uint64_t kKoCount = 7;

bool overlap(uint64_t a, uint64_t al, uint64_t b, uint64_t bl) { return a < b + bl && b < a + al; }

}  // namespace

struct Replicator::Op final : IoDone {
  Replicator* rep = nullptr;
  Kind kind = Kind::kWrite;
  uint64_t off = 0;
  uint32_t len = 0;
  const uint8_t* buf = nullptr;
  bool fua = false;
  ZeroFlags zf;
  IoDone* upper = nullptr;
  int local_err = 0;
  int peer_err = 0;
  bool local_pending = false, peer_pending = false, meta_pending = false;
  bool waiting_al = false;
  bool sent_to_peer = false;
  bool degraded = false;       // dispatched while not mirroring
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
  std::vector<uint8_t> payload; // small payloads (SYNC_DONE)

  struct Meta final : IoDone {
    Op* op = nullptr;
    void io_done(int err) override { op->rep->on_meta(op, err); }
  } meta;
  void io_done(int err) override { rep->on_local(this, err); }
  bool modifies() const { return kind == Kind::kWrite || kind == Kind::kTrim || kind == Kind::kZero; }
};

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
  local_.read(offset, length, buf, done);  // reads are served locally
}

void Replicator::cache(uint64_t offset, uint32_t length, IoDone* done) {
  local_.cache(offset, length, done);
}

void Replicator::block_status(uint64_t offset, uint32_t length, uint32_t max_extents,
                              std::vector<nbd::Extent>* out, IoDone* done) {
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
  op->degraded = !mirroring();
  op->local_pending = true;
  local_.flush(op);
  if (mirroring()) send_to_peer(op);
  if (!done) internal_flush_running_ = true;
  last_flush_ms_ = now_ms_;
  writes_since_flush_ = 0;
}

// ------------------------------------------------------------- ordering --

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
        (cfg_.on_peer_loss == OnPeerLoss::kFailStop && state_ == LinkState::kDisconnected)) {
      held_.push_back(op);  // held, or fail-stop waiting for the peer
      return;
    }
    // Rule 1: the activity extent is durable before either copy is written.
    if (!bitmap_.is_active_durable(op->off, op->len)) {
      bitmap_.set_active(op->off, op->len);
      op->waiting_al = true;
      op->meta_pending = true;
      bitmap_.commit(&op->meta);
      return;
    }
  }
  dispatch(op);
}

void Replicator::dispatch(Op* op) {
  if (op->kind == Kind::kResync) {
    // A region that is a hole here becomes a ZERO on the peer: no data to
    // read or send (a full sync of a sparse volume costs almost nothing).
    op->local_pending = true;
    op->probing = true;
    op->ext.clear();
    local_.block_status(op->off, op->len, 1, &op->ext, op);
    return;
  }
  if (plan_holds_ > 0 && op->modifies()) {
    // Started before the plan was decided, its activity-log commit finished
    // after: issued now, it would be marked dirty under a plan that may say
    // "in sync" and never be copied. It waits for attach like new writes.
    MLOG_DEBUG("a write at %llu+%u waits for the handshake's plan to be attached",
               static_cast<unsigned long long>(op->off), op->len);
    held_.push_back(op);
    return;
  }
  ++writes_since_flush_;
  op->local_pending = true;
  op->degraded = !mirroring();
  // The peer's leg (link, its disk, the reply) is the longer one: start it
  // first, so the local write's inline submission (an O_DIRECT FUA write
  // queues its bio right there) does not delay it. The two legs overlap;
  // a write completes after the slower, not after both in turn.
  if (!op->degraded) send_to_peer(op);
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
  switch (op->kind) {
    case Kind::kWrite:
      h.type = link::Type::kWrite;
      h.payload = op->len;
      data = op->buf;
      if (op->fua) h.flags |= link::kFlagFua;
      break;
    case Kind::kResync:
      if (op->hole) {
        h.type = link::Type::kZero;
        h.flags = link::kFlagResync;
      } else {
        h.type = link::Type::kWrite;
        h.flags = link::kFlagResync;
        h.payload = op->len;
        data = op->rbuf.data();
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
    case Kind::kSyncDone:
      h.type = link::Type::kSyncDone;
      h.payload = uint32_t(op->payload.size());
      data = op->payload.data();
      break;
  }
  h.id = next_id_++;
  h.offset = op->off;
  h.length = op->len;
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
  bitmap_.set_dirty(op->off, op->len);
  if (!moves_generation && !bitmap_.failed() && bitmap_.is_active_durable(op->off, op->len)) {
    // Rule 2 without a metadata sync on the write path: the extent is
    // durably active, and crash recovery marks an active extent dirty
    // whole, so the bit is already as good as on disk. It must be durable
    // before the extent leaves the activity log (evict_extents waits for
    // that commit) and at a clean stop (Volume::stop commits it first).
    // Metadata that failed can never persist the bit: then the write waits
    // for the commit, and fails with it, as every untrackable write must.
    uint64_t n = bitmap_.dirty_durable_after(op->off, op->len);
    if (!bitmap_.committed(n)) {
      uint64_t e0 = op->off / bitmap_.al_extent(),
               e1 = (op->off + op->len - 1) / bitmap_.al_extent();
      for (uint64_t e = e0; e <= e1; ++e) {
        Extent& x = extents_[e];
        x.dirty_commit = std::max(x.dirty_commit, n);
      }
      bitmap_.commit(nullptr);
    }
    return;
  }
  op->meta_pending = true;
  bitmap_.commit(&op->meta);
}

// ---------------------------------------------------------- completions --

void Replicator::on_local(Op* op, int err) {
  op->local_pending = false;
  if (err) ++local_errors_;
  // A failed dirty-bit commit (on_meta) may have come first: its error must
  // survive a successful local write, or the write is acknowledged
  // untracked (rule 2). Resync ops run two local steps; the last one counts.
  if (!op->local_err || op->kind == Kind::kResync) op->local_err = err;
  if (op->kind == Kind::kResync) return resync_local_done(op, err);
  maybe_complete(op);
}

void Replicator::on_meta(Op* op, int err) {
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
  auto it = outstanding_.find(h.id);
  if (it == outstanding_.end()) return;  // answered after a timeout: ignore
  Op* op = it->second;
  outstanding_.erase(it);
  op->peer_pending = false;
  int err = int(h.length);
  if (err) peer_io_error_ = true;
  switch (op->kind) {
    case Kind::kPing:
      ping_outstanding_ = false;
      return free_op(op);
    case Kind::kSyncDone:
    case Kind::kResync:
      return resync_reply(op, err);
    case Kind::kFlush:
      if (op->freeze) {
        free_op(op);
        freeze_flushing_ = false;
        for (auto& w : std::exchange(freeze_waiters_, {})) w(err ? -err : 0);
        if (err) peer_failed("the peer failed to flush at the split");
        return;
      }
      if (op->resync_batch) return resync_reply(op, err);
      if (err) {
        op->peer_err = err;
        peer_failed("the peer failed to flush");
      }
      return maybe_complete(op);
    default:
      break;
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
  if (op->kind == Kind::kFlush) {
    bool covered = !op->local_err && ((op->sent_to_peer && !op->peer_err) || op->degraded);
    if (covered) evict_extents(op->flush_tick);
    if (!op->upper) internal_flush_running_ = false;
    return finish(op, op->local_err);
  }
  if (op->local_err && op->modifies() && op->sent_to_peer && !op->peer_err) {
    // Written on the peer only: resync will restore one version on both.
    ++dirty_epoch_;
    bitmap_.set_dirty(op->off, op->len);
    bitmap_.commit(nullptr);
  }
  finish(op, op->local_err);
}

void Replicator::finish(Op* op, int err) {
  if (op->in_running) {
    running_.erase(op->it);
    op->in_running = false;
    if (op->modifies()) {
      uint64_t e0 = op->off / bitmap_.al_extent(),
               e1 = (op->off + op->len - 1) / bitmap_.al_extent();
      uint64_t t = tick_++;
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
}

// ------------------------------------------------------------ the link --

void Replicator::attach(LinkConn* link, link::Plan::Kind plan) {
  link_ = link;
  now_ms_ = coarse_ms();
  last_error_.clear();
  sync_done_sent_ = false;
  last_ping_ms_ = now_ms_;
  ping_outstanding_ = false;
  if (plan == link::Plan::kInSync || plan == link::Plan::kAdopt) {
    state_ = LinkState::kSynced;
  } else {
    state_ = LinkState::kResyncing;
    resync_begin();
  }
  release_held();
  resync_pump();
}

void Replicator::attach_split(LinkConn* link) {
  link_ = link;
  now_ms_ = coarse_ms();
  last_ping_ms_ = now_ms_;
  ping_outstanding_ = false;
  state_ = LinkState::kSplit;
  release_held();
}

void Replicator::hold() { holding_ = true; }

void Replicator::release() {
  holding_ = false;
  release_held();
}

void Replicator::end_plan_hold() {
  if (plan_holds_ > 0) --plan_holds_;
  release_held();
}

void Replicator::release_held() {
  if (holding_ || plan_holds_ > 0) return;
  if (cfg_.on_peer_loss == OnPeerLoss::kFailStop && state_ == LinkState::kDisconnected) return;
  std::deque<Op*> held;
  held.swap(held_);
  for (Op* op : held) {
    if (!bitmap_.is_active_durable(op->off, op->len)) {
      bitmap_.set_active(op->off, op->len);
      op->waiting_al = true;
      op->meta_pending = true;
      bitmap_.commit(&op->meta);
    } else {
      dispatch(op);
    }
  }
}

void Replicator::diverge() {
  // Rule 3: whatever the peer had not flushed may be gone; from here on the
  // bitmap records every difference, relative to the generation we share.
  uint64_t marked = mark_unflushed_dirty();
  ++dirty_epoch_;
  move_generation();
  bitmap_.commit(nullptr);
  MLOG_INFO("tracking changes for the peer (%llu bytes marked: extents written since the "
            "last flush of both copies)",
            static_cast<unsigned long long>(marked));
}

void Replicator::peer_failed(const std::string& why) {
  if (!link_ || state_ == LinkState::kDisconnected) return;
  last_error_ = why;
  MLOG_WARN("replication link: %s", why.c_str());
  if (state_ != LinkState::kSplit) {
    state_ = LinkState::kDisconnected;
    diverge();
  }
  if (on_link_failure) on_link_failure(why);
}

void Replicator::link_lost(const std::string& why) {
  if (!link_) return;
  last_error_ = why;
  if (state_ == LinkState::kResyncing || state_ == LinkState::kSynced) {
    state_ = LinkState::kDisconnected;
    diverge();
  } else if (state_ == LinkState::kSplit) {
    diverge();  // the split's flush may not have finished
  }
  link_ = nullptr;
  resync_link_lost();
  ping_outstanding_ = false;
  // Every request the peer did not answer is covered by the bits diverge()
  // set; acknowledge each once those bits are durable.
  auto pending = std::exchange(outstanding_, {});
  for (auto& [id, op] : pending) {
    op->peer_pending = false;
    op->peer_err = ECONNRESET;
    switch (op->kind) {
      case Kind::kPing:
      case Kind::kSyncDone:
        free_op(op);
        break;
      case Kind::kResync:
        --resync_in_flight_;
        finish(op, -ECONNRESET);
        break;
      case Kind::kFlush:
        if (op->freeze) {
          free_op(op);
          freeze_flushing_ = false;
          for (auto& w : std::exchange(freeze_waiters_, {})) w(-ECONNRESET);
          break;
        }
        if (op->resync_batch) {
          free_op(op);
          break;
        }
        op->meta_pending = true;
        bitmap_.commit(&op->meta);
        break;
      default:
        op->meta_pending = true;
        bitmap_.commit(&op->meta);
        break;
    }
  }
}

void Replicator::freeze(std::function<void(int)> done) {
  if (!link_ || state_ == LinkState::kDisconnected || state_ == LinkState::kResyncing) {
    loop_.defer([done = std::move(done)] { done(-ENOTCONN); });
    return;
  }
  if (state_ != LinkState::kSplit) {
    // From here on new writes are tracked in the bitmap, relative to a
    // generation the peer's image keeps.
    state_ = LinkState::kSplit;
    resync_active_ = false;
    move_generation();
    bitmap_.commit(nullptr);
  }
  freeze_waiters_.push_back(std::move(done));
  check_freeze();
}

void Replicator::check_freeze() {
  if (freeze_waiters_.empty() || freeze_flushing_ || !link_) return;
  for (auto& [id, o] : outstanding_) {
    if (o->modifies() || o->kind == Kind::kResync) return;  // finish() calls us again
  }
  // Every acknowledged write is on the peer; make it durable there.
  freeze_flushing_ = true;
  Op* op = new_op(Kind::kFlush, 0, 0, nullptr);
  op->freeze = true;
  send_to_peer(op);
}

// --------------------------------------------------------------- resync --

void Replicator::resync_begin() {
  resync_active_ = true;
  resync_cursor_ = 0;
  readahead_cursor_ = 0;
  resync_scan_done_ = false;
  resync_total_ = bitmap_.dirty_bytes();
  resync_done_ = 0;
  resync_batch_.clear();
  resync_batch_bytes_ = 0;
  flushing_batch_.clear();
  flushing_bytes_ = 0;
  resync_flushing_ = false;
  batch_epoch_ = dirty_epoch_;
  rate_window_ms_ = now_ms_;
  rate_window_bytes_ = 0;
  tokens_ = 0;
  tokens_ms_ = coarse_ms();
  MLOG_INFO("resync started: %llu bytes to copy", static_cast<unsigned long long>(resync_total_));
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
  resync_pump();
}

void Replicator::resync_pump() {
  if (!resync_active_ || !mirroring()) return;
  // A full batch is flushed on the peer while the next one is copied.
  if (resync_batch_bytes_ >= kResyncBatch && !resync_flushing_) resync_batch_flush();
  while (resync_in_flight_ < cfg_.resync_max_inflight && !resync_scan_done_ &&
         resync_batch_bytes_ < kResyncBatch) {
    uint64_t off, len;
    if (!bitmap_.next_dirty(resync_cursor_, kResyncChunk, &off, &len)) {
      resync_scan_done_ = true;
      break;
    }
    if (cfg_.resync_rate) {
      // Token bucket: at most one second (or one chunk) of burst.
      uint64_t now = coarse_ms();
      double rate = double(cfg_.resync_rate);
      double cap = std::max(rate, double(kResyncChunk));
      tokens_ = std::min(cap, tokens_ + rate * double(now - tokens_ms_) / 1000.0);
      tokens_ms_ = now;
      if (tokens_ < double(len)) break;  // tick() pumps again
      tokens_ -= double(len);
    }
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
    // Bits set again behind the cursor (a failed write): scan again.
    resync_cursor_ = 0;
    readahead_cursor_ = 0;
    resync_scan_done_ = false;
    batch_epoch_ = dirty_epoch_;
    ++deferred_;
    loop_.defer([this] {
      --deferred_;
      resync_pump();
    });
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
    --resync_in_flight_;
    finish(op, err);
    return resync_pump();
  }
  if (!mirroring()) {
    --resync_in_flight_;
    return finish(op, -ENOTCONN);
  }
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
      state_ = LinkState::kSynced;
      MLOG_INFO("resync complete: the peer is up to date");
      if (on_synced) on_synced();
      return;
    }
    case Kind::kResync:
      if (err) {
        MLOG_WARN("resync: the peer failed to write %llu+%u: %s",
                  static_cast<unsigned long long>(op->off), op->len, strerror(err));
        --resync_in_flight_;
        finish(op, -err);
        return peer_failed("the peer failed a resync write");
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
  resync_batch_.push_back({off, len});
  resync_batch_bytes_ += len;
  rate_window_bytes_ += len;
  resynced_total_ += len;
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
  p.rate_bps = rate_bps_;
  uint64_t left = bitmap_.dirty_bytes();
  p.eta_seconds = rate_bps_ ? left / rate_bps_ : 0;
  return p;
}

// ----------------------------------------------------- housekeeping tick --

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
  for (const auto& [e, x] : extents_) {
    if (x.in_flight > 0 || x.last_done >= flushed_tick_)
      bitmap_.set_dirty(e * bitmap_.al_extent(), bitmap_.al_extent());
  }
  return bitmap_.dirty_bytes() - before;
}

void Replicator::start_internal_flush() { flush(nullptr); }

void Replicator::tick(uint64_t now_ms) {
  now_ms_ = now_ms;
  if (link_ && !link_->closing()) {
    for (auto& [id, op] : outstanding_) {
      uint64_t limit = op->kind == Kind::kPing ? cfg_.ack_timeout_ms
                                               : cfg_.ack_timeout_ms * kKoCount;
      if (now_ms - op->sent_ms > limit) {
        peer_failed(op->kind == Kind::kPing
                        ? "the peer did not answer a ping within " +
                              std::to_string(cfg_.ack_timeout_ms) + " ms"
                        : "the peer left a request unanswered for " + std::to_string(limit) +
                              " ms (" + std::to_string(kKoCount) + " x ack-timeout)");
        break;
      }
    }
  }
  if (link_ && !link_->closing() && !ping_outstanding_ &&
      now_ms - last_ping_ms_ > cfg_.ack_timeout_ms / 3) {
    last_ping_ms_ = now_ms;
    ping_outstanding_ = true;
    send_to_peer(new_op(Kind::kPing, 0, 0, nullptr));
  }
  if (writes_since_flush_ > 0 && !internal_flush_running_ &&
      now_ms - last_flush_ms_ > kInternalFlushMs) {
    start_internal_flush();
  }
  resync_tick(now_ms);
}

void Replicator::retire() {
  on_link_failure = nullptr;
  on_synced = nullptr;
  bool only_pings = true;
  for (const auto& [id, op] : outstanding_)
    only_pings = only_pings && (op->kind == Kind::kPing || op->kind == Kind::kSyncDone);
  // Unanswered data requests: their regions are marked dirty, as for any
  // lost link (conservative; a clean demote leaves none).
  if (link_ && !only_pings) link_lost("the role changed");
  for (auto& [id, op] : std::exchange(outstanding_, {})) free_op(op);
  link_ = nullptr;
  state_ = LinkState::kDisconnected;
  ping_outstanding_ = false;
  resync_active_ = false;
}

void Replicator::quiesce(std::function<void(bool clean)> done) {
  // The NBD server has drained: only internal work may still run.
  struct Q final : IoDone {
    Replicator* rep;
    std::function<void(bool)> done;
    void io_done(int err) override {
      bool clean = err == 0 && rep->state_ == LinkState::kSynced && rep->link_ &&
                   rep->running_.empty();
      auto d = std::move(done);
      Replicator* r = rep;
      delete this;
      // The caller may destroy the replicator next: no read-ahead hint may
      // still be due to complete into it.
      if (r->readahead_in_flight_ > 0) {
        r->readahead_drained_ = [d = std::move(d), clean] { d(clean); };
        return;
      }
      d(clean);
    }
  };
  auto* q = new Q();
  q->rep = this;
  q->done = std::move(done);
  resync_active_ = false;
  flush(q);
}

}  // namespace mirror
