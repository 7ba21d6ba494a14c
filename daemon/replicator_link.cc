// Replicator: the link's lifecycle as the primary sees it. Attaching a
// session's plan (or a split's link), the holds that keep writes from
// starting, the loss of the link (rule 3), the freeze of a split, the periodic
// tick (ack timeouts, pings, activity-log turnover), retire and quiesce. The
// write path is in replicator.cc.
#include <string>

#include "clock.h"
#include "log.h"
#include "replicator.h"
#include "replicator_internal.h"

namespace mirror {

namespace {
constexpr uint64_t kInternalFlushMs = 5000;      // activity-log turnover
// A peer that answers pings is alive; a request it leaves unanswered for
// this many ack timeouts means its storage is stuck (DRBD's ko-count).
constexpr uint64_t kKoCount = 7;

}  // namespace

// ------------------------------------------------------------ the link --

void Replicator::attach(LinkConn* link, link::Plan::Kind plan, uint16_t peer_features) {
  split_ended_ = false;
  after_split_ = false;
  link_ = link;
  trim_peer_ok_ = true;
  csums_ = cfg_.resync_checksums && (peer_features & link::kFeatureVerify);
  peer_reads_ = peer_features & link::kFeatureRead;
  peer_detach_ = peer_features & link::kFeatureDetach;
  peer_sole_errors_ = peer_features & link::kFeatureSoleErrors;
  if (cfg_.resync_checksums && !csums_)
    MLOG_WARN("resync-checksums: the peer's mirrord cannot digest its copy (no VERIFY): "
              "resyncs send every region whole");
  now_ms_ = coarse_ms();
  last_error_.clear();
  if (disk_ == DiskState::kDiskless)  // still what the operator must see
    last_error_ = disk_error_ + "; detached: every request is served by the peer's copy";
  sync_done_sent_ = false;
  last_ping_ms_ = now_ms_;
  ping_outstanding_ = false;
  if (plan == link::Plan::kInSync || plan == link::Plan::kAdopt) {
    state_ = LinkState::kSynced;
    if (disk_ == DiskState::kDiskless && !detach_confirmed_) detach_resend();
  } else {
    state_ = LinkState::kResyncing;
    resync_begin();
  }
  release_held();
  resync_pump();
}

void Replicator::split_ended() {
  if (state_ != LinkState::kSplit) return;
  if (link_) {
    split_ended_ = true;
  } else {
    state_ = LinkState::kDisconnected;
    after_split_ = true;
  }
}

void Replicator::attach_split(LinkConn* link) {
  split_ended_ = false;
  after_split_ = false;
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

void Replicator::pause_writes(std::function<void()> drained) {
  ++plan_holds_;
  drain_waiters_.push_back(std::move(drained));
  defer([this] { check_drained(); });
}

void Replicator::check_drained() {
  // Every write still in the interlock is one that waits (held_): none is
  // issued, none will be until resume_writes().
  if (drain_waiters_.empty() || running_.size() != held_.size()) return;
  for (auto& w : std::exchange(drain_waiters_, {})) w();
}

void Replicator::grow(uint64_t new_size, bool new_area_dirty) {
  size_ = new_size;
  if (!new_area_dirty) return;
  if (state_ == LinkState::kSynced && link_) return resync_again();
  move_generation();  // a no-op if it moved since the copies last agreed
  bitmap_.commit(nullptr);
}

void Replicator::release_held() {
  if (holding_ || plan_holds_ > 0) return;
  if (fail_stop_holds()) return;
  std::deque<Op*> held;
  held.swap(held_);
  for (Op* op : held) log_then_dispatch(op);
}

void Replicator::diverge() {
  // Diskless: there is no copy here to track differences of (and the
  // generation must stay the one the peer recorded as this node's).
  if (disk_abandoned()) return;
  // Rule 3: whatever the peer had not flushed may be gone; from here on the
  // bitmap records every difference, relative to the generation we share.
  uint64_t marked = mark_unflushed_dirty();
  ++dirty_epoch_;
  // Nothing marked and nothing dirty: both copies hold every change,
  // flushed, and the generation they share still names them both. Moved
  // anyway, a peer lost as a demote records the role (the clean demote's
  // flush left nothing) would find this node's generation changed: each
  // promote refused ("the peer's generation differs"), a forced one a
  // split brain. The first change tracked from here moves it
  // (mark_dirty_and_wait).
  if (marked != 0 || bitmap_.dirty_bytes() != 0) move_generation();
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
  if (disk_abandoned() && last_change_tick_ > flushed_tick_ && !flush_poisoned_) {
    flush_poisoned_ = true;
    MLOG_ERROR("diskless: the link to the peer, the only copy, was lost with acknowledged "
               "changes it had not flushed yet: if it lost power they are gone; the next "
               "FLUSH fails");
  }
  if (state_ == LinkState::kResyncing || state_ == LinkState::kSynced) {
    state_ = LinkState::kDisconnected;
    diverge();
  } else if (state_ == LinkState::kSplit) {
    diverge();  // the split's flush may not have finished
    if (std::exchange(split_ended_, false)) {
      state_ = LinkState::kDisconnected;
      after_split_ = true;
    }
  }
  link_ = nullptr;
  resync_link_lost();
  if (verify_.running) verify_stop("failed: the link was lost (" + why + ")");
  ping_outstanding_ = false;
  // Every request the peer did not answer is covered by the bits diverge()
  // set; acknowledge each once those bits are durable.
  auto pending = std::exchange(outstanding_, {});
  for (auto& [id, op] : pending) {
    op->peer_pending = false;
    op->peer_err = ECONNRESET;
    if (op->diskless && op->kind != Kind::kRead) {  // nothing to mark: it fails
      maybe_complete(op);
      continue;
    }
    switch (op->kind) {
      case Kind::kDetach:
        detach_end(op, "the link to the peer was lost");
        break;
      case Kind::kPing:
      case Kind::kSyncDone:
        free_op(op);
        break;
      case Kind::kResync:
        --resync_in_flight_;
        finish(op, -ECONNRESET);
        break;
      case Kind::kVerify:
        verify_chunk_done(op, ECONNRESET, nullptr);
        break;
      case Kind::kRead:  // the local disk failed it, and the peer is gone
        finish(op, -EIO);
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
  // A split still waiting for its writes to drain (its FLUSH not sent yet)
  // fails too: check_freeze() would otherwise send its SPLIT on a later
  // session, splitting a secondary that is synchronized again.
  abandon_freeze();
  // Lost while stopping: writes held for some other reason (a plan, a hold)
  // now wait for the peer under fail-stop, which the stop does not.
  if (stop_requested_) defer([this] { abandon_held_if_stopping(); });
}

void Replicator::abandon_freeze() {
  if (freeze_flushing_) return;  // its FLUSH's answer (or loss) ends it
  for (auto& w : std::exchange(freeze_waiters_, {})) w(-ECONNRESET);
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
    if (verify_.running) verify_stop("cancelled: the mirror was split");
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

// ------------------------------------------------------------- periodic --

void Replicator::tick(uint64_t now_ms) {
  now_ms_ = now_ms;
  if (link_ && !link_->closing()) {
    for (auto& [id, op] : outstanding_) {
      uint64_t limit = op->kind == Kind::kPing ? cfg_.ack_timeout_ms
                                               : cfg_.ack_timeout_ms * kKoCount;
      // A late ping counts only if the peer answered nothing else meanwhile
      // (DRBD keeps pings off the data stream for the same reason).
      if (op->kind == Kind::kPing && now_ms - std::min(now_ms, last_reply_ms_) <= limit) continue;
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
  verify_tick(now_ms);
}

void Replicator::retire() {
  if (verify_.running) verify_stop("cancelled: the role changed");
  on_link_failure = nullptr;
  on_synced = nullptr;
  // Requests that change nothing on the peer: pings, SYNC_DONE, reads
  // (a client read repair, a verify chunk).
  bool only_reads = true;
  for (const auto& [id, op] : outstanding_)
    only_reads = only_reads && (op->kind == Kind::kPing || op->kind == Kind::kSyncDone ||
                                op->kind == Kind::kRead || op->kind == Kind::kVerify);
  // Unanswered data requests: their regions are marked dirty, as for any
  // lost link (conservative; a clean demote leaves none). Unanswered reads
  // are no reason: moving the generation on here would make the peer's
  // promote refuse (the two generations differ) after a clean demote.
  if (link_ && !only_reads) link_lost("the role changed");
  link_ = nullptr;
  for (auto& [id, op] : std::exchange(outstanding_, {})) {
    op->peer_pending = false;
    if (op->kind == Kind::kRead) {
      finish(op, -EIO);  // a client read the local disk failed: no peer to answer now
    } else if (op->kind == Kind::kVerify) {
      verify_chunk_done(op, ECONNRESET, nullptr);
    } else {
      free_op(op);
    }
  }
  state_ = LinkState::kDisconnected;
  ping_outstanding_ = false;
  resync_active_ = false;
  freeze_flushing_ = false;  // (its FLUSH was freed above)
  abandon_freeze();
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
  quiescing_ = true;
  resync_active_ = false;
  if (verify_.running) verify_stop("cancelled: the daemon is stopping");
  flush(q);
}

}  // namespace mirror
