// Online resize (docs/replication-protocol.md, "Online resize"; DRBD's
// `drbdadm resize`): the operator grows the backing store on both hosts (or
// lets mirrord extend a file), edits `size` in both volume files, and runs
// `mirrorctl resize` on the primary. Each daemon re-reads its own volume file
// and takes only the size from it.
//
// Primary, peer connected and synchronized:
//  1. checks here first (a larger size, a store that can hold it), extends
//     its backing file and flushes both copies (a mirrored FLUSH, again
//     while flushes are slow) while writes go on: the syncs below, inside
//     the pause, then find little to write;
//  2. pauses new writes (queued, not failed) and waits for those running:
//     the point in the write stream where the volume grows;
//  3. sends RESIZE, FIFO after every mirrored write; the secondary checks its
//     own volume file, grows its store (extended, then fdatasync on its
//     loop) and metadata and answers;
//  4. on OK grows here the same way, marks the new area dirty unless both
//     nodes know it reads as zeros (or --assume-clean), updates every size
//     it holds and lets the writes go;
//  5. a refusal changes nothing here; a lost link or no answer is handled as
//     any lost link, and the command says the peer's size is unknown.
// A node whose link is down grows alone, its new area marked out of sync;
// the HELLO size check keeps the pair apart until the peer grew too.
#include <csignal>
#include <cstring>

#include "clock.h"
#include "log.h"
#include "volume.h"
#include "volume_internal.h"

namespace mirror {

// RESIZE's wire rule and the volume file's are one rule, stated in two
// layers that do not include each other.
static_assert(link::kResizeAlign == kVolumeSizeAlign);

using volume_internal::kControlIdBit;
using volume_internal::kSplitBrainHelp;

namespace {
std::string bytes(uint64_t n) {
  return std::to_string(n) + " bytes";
}
}  // namespace

Result<uint64_t> Volume::resize_target() const {
  // As at start: the file's own errors (name, key, what is wrong).
  auto c = load_volume_config(cfg_.file);
  if (!c) return c.error();
  return c->size;
}

void Volume::resize(bool assume_clean, Done done) {
  if (resize_) return done(EBUSY, "a resize is already running");
  auto target = resize_target();
  if (!target) return done(target.error().code, target.error().message);
  const uint64_t from = cfg_.size, to = *target;
  if (to == from) {
    std::string msg = "already " + bytes(to) + " (the size in " + cfg_.file + ")";
    // A kernel device that kept its old size after a failed resize gets it
    // now (a no-op for one that has it).
    if (!on_resized) return done(0, msg);
    return on_resized(to, [done, msg](const std::string& warning) {
      done(0, warning.empty() ? msg : msg + "; " + warning);
    });
  }
  if (to < from)
    return done(EINVAL, "shrinking is not supported: " + cfg_.file + " says " + bytes(to) +
                            ", the volume has " + bytes(from) +
                            " and its end would be cut off; put `size` back");
  if (split_brain_) return done(EBUSY, kSplitBrainHelp);
  if (bitmap_->flags() & kFlagSplit)
    return done(EBUSY, "the mirror is split: rejoin first, then resize");
  if (demote_ || discard_)
    return done(EBUSY, demote_ ? "a demote is running" : "discard-my-data is running");
  if (replicator_ && replicator_->disk_state() != Replicator::DiskState::kOk)
    return done(EIO, volume_internal::kDisklessHelp);
  if (auto st = file_->check_grow(to); !st) return done(st.error().code, st.error().message);
  bool alone = false;
  if (role_ == Role::kPrimary) {
    switch (replicator_->state()) {
      case Replicator::LinkState::kResyncing:
        return done(EBUSY, "a resync is running: resize once the copies are synchronized");
      case Replicator::LinkState::kSplit:
        return done(EBUSY, "the mirror is split: rejoin first, then resize");
      case Replicator::LinkState::kDisconnected:
        alone = true;
        break;
      case Replicator::LinkState::kSynced:
        if (replicator_->verify_progress().running)
          return done(EBUSY, "a verify is running: resize after it (or verify --cancel)");
        if (!active_ || !(active_->peer_features & link::kFeatureResize))
          return done(EOPNOTSUPP, "peer '" + peer_.name +
                                      "' does not support resize (its "
                                      "mirrord predates it): upgrade it first");
        break;
    }
  } else {
    // VolumeControl relays the command to a connected primary.
    if (active_) return done(EINVAL, not_primary("resize"));
    alone = true;
  }
  if (alone && !sessions_.empty())
    return done(EAGAIN, "a handshake with '" + peer_.name +
                            "' is under way: run resize again "
                            "in a moment");
  // A backing file is extended before the peer grows: if this node crashes
  // after the peer grew and before it did, it restarts with the raised size
  // (its metadata grows at open, new area dirty) instead of refusing a file
  // shorter than the volume. grow_here() then finds it long enough; a
  // resize that fails before the peer may have grown puts the length back.
  uint64_t file_was = 0;
  if (auto ext = extend_file(to, &file_was); !ext)
    return done(ext.error().code, ext.error().message);
  resize_fault("extended");
  resize_ = std::make_unique<Resize>();
  resize_->file_was = file_was;
  resize_->done = std::move(done);
  resize_->from = from;
  resize_->to = to;
  resize_->assume_clean = assume_clean;
  resize_->alone = alone;
  MLOG_INFO("volume '%s': resize from %llu to %llu bytes%s: flushing first, writes go on",
            cfg_.name.c_str(), static_cast<unsigned long long>(from),
            static_cast<unsigned long long>(to),
            alone ? (" on this node alone ('" + peer_.name + "' is not connected)").c_str() : "");
  // The extended length must be durable before RESIZE goes out (and before
  // a node grows alone): an fdatasync, which writes out every dirty page of
  // the file too, seconds' worth under a busy writer. It runs here, on the
  // loop, while writes go on; through the replicator it is a mirrored FLUSH,
  // so the secondary's copy is flushed too and the sync it does inside the
  // pause (after extending its own file) finds only the last moments' writes.
  resize_flush();
}

void Volume::resize_flush() {
  ++resize_->flush_rounds;
  resize_->flush_started_ms = mono_ms();
  IoDone* flushed = FnDone::make([this](int err) { resize_flushed(err); });
  if (replicator_) return replicator_->flush(flushed);
  disk_->flush(flushed);
}

void Volume::resize_flushed(int err) {
  if (!resize_) return;
  if (err)
    return resize_finish(-err, "flushing the backing store " + file_->path() +
                                   " failed: " + strerror(-err) + "; nothing changed");
  // A slow flush let the writes made meanwhile pile up, and the sync in the
  // pause would write them all: flush again, as long as flushes stay slow
  // (a few rounds at most: a writer faster than the disk never converges).
  constexpr uint64_t kQuickFlushMs = 100;
  constexpr int kFlushRounds = 3;
  const uint64_t took = mono_ms() - resize_->flush_started_ms;
  if (took > kQuickFlushMs && resize_->flush_rounds < kFlushRounds) {
    MLOG_INFO("volume '%s': resize: flush %d took %llu ms: flushing again", cfg_.name.c_str(),
              resize_->flush_rounds, static_cast<unsigned long long>(took));
    return resize_flush();
  }
  if (!replicator_) return when_metadata_idle([this] { resize_grow_here(false); });
  MLOG_INFO("volume '%s': %s", cfg_.name.c_str(),
            resize_->alone ? "flushed: holding new writes while this node grows"
                           : "flushed: holding new writes until both nodes grew");
  resize_fault("flushed");
  resize_->paused = true;
  resize_->paused_at_ms = mono_ms();
  replicator_->pause_writes([this] { resize_drained(); });
}

void Volume::resize_resume_writes() {
  if (!resize_->paused) return;
  resize_->paused = false;
  replicator_->resume_writes();
  MLOG_INFO("volume '%s': writes held for %llu ms", cfg_.name.c_str(),
            static_cast<unsigned long long>(mono_ms() - resize_->paused_at_ms));
}

void Volume::resize_drained() {
  if (!resize_) return;
  if (resize_->alone) {
    if (active_)
      return resize_finish(EAGAIN, "'" + peer_.name +
                                       "' connected meanwhile; nothing changed: "
                                       "run resize again (it grows both nodes now)");
    return when_metadata_idle([this] { resize_grow_here(false); });
  }
  if (active_ && replicator_->state() == Replicator::LinkState::kResyncing)
    // Regions marked out of sync meanwhile (a TRIM only one copy could
    // apply, a verify's mismatch): the copies must agree before they grow.
    return resize_finish(EBUSY, "a resync started meanwhile (" + bytes(replicator_->progress().total_bytes) +
                                    " to copy); nothing changed: run resize again once "
                                    "synchronized");
  if (!active_ || replicator_->state() != Replicator::LinkState::kSynced)
    return resize_finish(ECONNRESET, "the link to '" + peer_.name +
                                         "' was lost before the "
                                         "resize was sent; nothing changed: run resize again");
  // Every write acknowledged so far has its REPLY: RESIZE follows them all.
  resize_->id = kControlIdBit | next_control_id_++;
  resize_->peer_may_grow = true;
  resize_->deadline_ms = mono_ms() + relay_timeout_ms();
  active_->conn->send_owned(link::encode_resize(resize_->id, resize_->to));
  MLOG_INFO("volume '%s': RESIZE sent to '%s'", cfg_.name.c_str(), peer_.name.c_str());
}

void Volume::on_resize_reply(const link::Header& h, Buffer& payload) {
  if (!resize_ || resize_->id == 0 || h.id != resize_->id) return;  // given up on it
  resize_->id = 0;
  auto r = link::decode_resize_reply(h, {payload.data(), h.payload});
  if (!r) {
    resize_finish(EPROTO, "'" + peer_.name + "' sent a " + r.error().message +
                              ": its size is unknown; the link is reset");
    return reconnect("malformed RESIZE_REPLY");
  }
  if (r->err) {
    resize_->peer_may_grow = false;
    return resize_finish(int(r->err),
                         "'" + peer_.name + "' refused: " + r->message +
                             "; the volume did not grow");
  }
  resize_fault("answered");  // the peer grew, this node not yet
  bool zeroed = r->zeroed;
  when_metadata_idle([this, zeroed] { resize_grow_here(zeroed); });
}

void Volume::resize_grow_here(bool peer_zeroed) {
  if (!resize_) return;
  const bool alone = resize_->alone, assume_clean = resize_->assume_clean;
  const bool primary = role_ == Role::kPrimary;
  // Alone, the peer's new area is unknown: a primary copies its own at the
  // next session. A secondary's dirty map means only its own writes of a
  // split: the primary's decides what is copied.
  auto grown = grow_here(resize_->to, [&](bool zeroed) {
    if (!primary) return false;
    if (alone) return true;
    return !assume_clean && !(zeroed && peer_zeroed);
  });
  const std::string range = "from " + bytes(resize_->from) + " to " + bytes(resize_->to);
  if (!grown) {
    return resize_finish(grown.error().code,
                         (alone ? std::string() : "'" + peer_.name + "' grew, but ") +
                             "this node could not: " + grown.error().message +
                             "; it still serves " + bytes(resize_->from) +
                             ": fix that and run resize again" +
                             (alone ? "" : " (the peer answers that it has the size already)"));
  }
  resize_fault("grown");
  std::string msg = "resized " + range;
  if (alone) {
    msg += " on this node alone ('" + peer_.name + "' is not connected); unless '" + peer_.name +
           "' has this size already, grow it the same way (its volume file, then "
           "`mirrorctl resize` there or a restart)";
    if (primary) msg += "; the new area is copied to it when it connects";
    // A handshake begun before carries the old size: start afresh.
    for (auto& s : std::vector<std::shared_ptr<Session>>(sessions_))
      if (s.get() != active_ && !s->conn->closing()) s->conn->close("resized: reconnecting");
  } else if (grown->dirty) {
    msg += "; the new area is resynced to '" + peer_.name + "'";
  } else {
    msg += assume_clean ? "; --assume-clean: the new area is not copied"
                        : "; the new area reads as zeros on both nodes: nothing to copy";
  }
  // The writes go on before the kernel device learns the size: the kernel
  // may wait for those in flight.
  resize_resume_writes();
  if (!on_resized) return resize_finish(0, msg);
  on_resized(resize_->to, [this, msg](const std::string& warning) {
    resize_finish(0, warning.empty() ? msg : msg + "; " + warning);
  });
}

Result<Volume::Grown> Volume::grow_here(uint64_t to,
                                        const std::function<bool(bool zeroed)>& dirty) {
  const uint64_t from = cfg_.size;
  Grown g;
  auto zeroed = extend_file(to);
  if (!zeroed) return zeroed.error();
  g.zeroed = *zeroed;
  g.dirty = dirty(g.zeroed);
  // Every region of the new area counts as changed since the last backup.
  // It may have grown in an attempt whose next step failed: a retry goes on.
  if (changes_->volume_size() < to) {
    if (auto st = changes_->grow(to, true); !st) return st.error();
  }
  if (auto st = bitmap_->grow(to, g.dirty); !st) return st.error();
  file_->set_size(to);
  cfg_.size = to;
  if (replicator_) replicator_->grow(to, g.dirty);
  MLOG_INFO("volume '%s': resized from %llu to %llu bytes (new area %s%s)", cfg_.name.c_str(),
            static_cast<unsigned long long>(from), static_cast<unsigned long long>(to),
            g.zeroed ? "reads as zeros here" : "may hold data here",
            g.dirty ? ", marked out of sync" : "");
  return g;
}

Result<bool> Volume::extend_file(uint64_t to, uint64_t* was_length) {
  uint64_t was = 0;
  auto zeroed = file_->extend(to, &was);
  if (zeroed && was && opts_.power_loss) opts_.power_loss->extended(file_->fd(), was);
  if (was_length) *was_length = was;
  return zeroed;
}

void Volume::resize_fault(const char* step) {
  if (!opts_.faults || opts_.faults->power_loss_at_resize != step) return;
  MLOG_WARN("volume '%s': MIRRORD_FAULTS=power-loss-at-resize=%s: power lost at this step",
            cfg_.name.c_str(), step);
  opts_.power_loss->crash(step);
}

void Volume::when_metadata_idle(std::function<void()> fn) {
  Bitmap* busy = bitmap_->commit_running()    ? bitmap_.get()
                 : changes_->commit_running() ? changes_.get()
                                              : nullptr;
  if (!busy) return fn();
  busy->commit(FnDone::make([this, fn = std::move(fn)](int) { when_metadata_idle(fn); }));
}

namespace {
constexpr std::string_view kResizeIncomplete = "resize incomplete (run `mirrorctl resize` again): ";
}  // namespace

void Volume::resize_finish(int err, const std::string& message) {
  if (!resize_) return;
  resize_resume_writes();
  std::unique_ptr<Resize> r = std::move(resize_);
  if (err && r->file_was && !r->peer_may_grow && cfg_.size == r->from) {
    if (auto st = file_->unextend(r->file_was); !st)
      MLOG_WARN("volume '%s': %s", cfg_.name.c_str(), st.error().message.c_str());
  }
  if (err) {
    MLOG_WARN("volume '%s': resize failed: %s", cfg_.name.c_str(), message.c_str());
    // The peer may serve the new size while this node does not: status
    // says so until a resize completes (the command's answer may be lost).
    if (r->peer_may_grow) last_error_ = std::string(kResizeIncomplete) + message;
  } else {
    MLOG_INFO("volume '%s': %s", cfg_.name.c_str(), message.c_str());
    if (last_error_.starts_with(kResizeIncomplete)) last_error_.clear();
  }
  if (r->done) r->done(err, message);
}

void Volume::resize_link_lost(const std::string& why) {
  if (!resize_ || resize_->id == 0) return;  // not waiting for the peer
  resize_finish(ECONNRESET,
                "the link to '" + peer_.name + "' was lost (" + why +
                    ") before it answered "
                    "RESIZE: its size is unknown (it may have grown); this node still has " +
                    bytes(resize_->from) + " and writes go on, tracked for '" + peer_.name +
                    "'. Run `mirrorctl resize` again: here now (this node grows alone), and "
                    "on '" +
                    peer_.name +
                    "' if it did not grow (when it reconnects, a size "
                    "difference is refused and names the smaller node)");
}

void Volume::resize_tick() {
  if (resize_->id == 0 || now_ms_ < resize_->deadline_ms) return;
  // Handled as a lost link: the writes held go on, tracked in the bitmap.
  std::string why =
      "no answer to RESIZE within " + std::to_string(relay_timeout_ms() / 1000) + " s";
  if (active_) active_->conn->close(why);
  resize_link_lost(why);
}

// ------------------------------------------------------------ secondary --

void Volume::on_resize_request(LinkConn* c, const link::Header& h) {
  auto* s = static_cast<Session*>(c->context);
  std::weak_ptr<Session> weak = find_session(s);
  uint64_t id = h.id;
  auto reply = [this, weak, id](int err, bool zeroed, const std::string& why) {
    if (err) MLOG_WARN("volume '%s': resize refused: %s", cfg_.name.c_str(), why.c_str());
    auto sp = weak.lock();
    if (!sp || sp->gone) return;
    sp->conn->send_owned(link::encode_resize_reply(
        id, {.err = uint32_t(err), .size = cfg_.size, .zeroed = zeroed, .message = why}));
  };
  auto to = link::decode_resize(h);
  if (!to) return c->close("the primary sent a " + to.error().message);
  if (opts_.faults && opts_.faults->stop_on_resize) {
    MLOG_WARN("volume '%s': MIRRORD_FAULTS=stop-on-resize: stopping (SIGCONT resumes)",
              cfg_.name.c_str());
    ::raise(SIGSTOP);
  }
  const std::string me = "node '" + self_.name + "'";
  if (resize_) return reply(EBUSY, false, me + " is resizing already");
  auto target = resize_target();
  if (!target) return reply(target.error().code, false, me + ": " + target.error().message);
  if (*target != *to)
    return reply(EINVAL, false,
                 me + " config says " + bytes(*target) + ", not " + bytes(*to) +
                     ": set `size` in " + cfg_.file + " on '" + self_.name + "' first");
  if (*to == cfg_.size) return reply(0, false, "");  // grew before (alone): nothing new here
  if (*to < cfg_.size)
    return reply(EINVAL, false, me + " has " + bytes(cfg_.size) + ": shrinking is not supported");
  if (auto st = file_->check_grow(*to); !st)
    return reply(st.error().code, false, me + ": " + st.error().message);
  resize_ = std::make_unique<Resize>();
  resize_->from = cfg_.size;
  resize_->to = *to;
  MLOG_INFO("volume '%s': the primary grows the volume from %llu to %llu bytes", cfg_.name.c_str(),
            static_cast<unsigned long long>(cfg_.size), static_cast<unsigned long long>(*to));
  const uint64_t grow_to = *to;
  // The extended length is made durable before the metadata records the
  // size and before the answer lets the primary grow. The fdatasync runs on
  // the loop (pings, reads and control go on meanwhile); the primary's
  // mirrored flush just before it held its writes left it little to write.
  uint64_t file_was = 0;
  if (auto ext = extend_file(grow_to, &file_was); !ext) {
    resize_.reset();
    return reply(ext.error().code, false, me + " could not grow: " + ext.error().message);
  }
  resize_fault("extended");
  disk_->flush(FnDone::make([this, reply, grow_to, me, file_was](int err) {
    if (err) {
      resize_.reset();
      // Its length back as it was, as far as this backend can still do it.
      if (file_was) (void)file_->unextend(file_was);
      return reply(-err, false,
                   me + " could not grow: flushing its backing store " + file_->path() +
                       " after extending it failed: " + strerror(-err));
    }
    resize_fault("flushed");
    when_metadata_idle([this, reply, grow_to, me, file_was] {
      resize_.reset();
      // This node's dirty map records only its own writes of a split: the
      // primary's decides what is copied.
      auto grown = grow_here(grow_to, [](bool) { return false; });
      if (!grown)
        return reply(grown.error().code, false,
                     me + " could not grow: " + grown.error().message +
                         (file_was ? " (its backing file stays extended, sparse; a retry uses it)"
                                   : ""));
      resize_fault("grown");
      reply(0, grown->zeroed, "");
      if (on_resized) on_resized(grow_to, [](const std::string&) {});  // main.cc logs a failure
    });
  }));
}

}  // namespace mirror
