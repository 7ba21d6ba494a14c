// Planned failover: demote on the primary, promote on the secondary
// (docs/control-protocol.md, "Failover"). The role is a metadata flag
// (kFlagPrimary), so a restart keeps what the last promote or demote chose.
#include "clock.h"
#include "log.h"
#include "volume.h"
#include "volume_internal.h"

namespace mirror {

using volume_internal::kDisklessHelp;

void Volume::demote(uint32_t timeout_ms, Done done) {
  if (role_ != Role::kPrimary) return done(EALREADY, "already secondary");
  if (demote_) return done(EBUSY, "a demote is already running");
  if (resize_) return done(EBUSY, "a resize is running");
  if (split_brain_)
    return done(EBUSY, "the pair is in split brain: choose the survivor first "
                       "(docs/control-protocol.md, \"Split brain\")");
  if (replicator_->disk_state() != Replicator::DiskState::kOk)
    return done(EIO, kDisklessHelp);
  switch (replicator_->state()) {
    case Replicator::LinkState::kSplit:
      return done(EBUSY, "the mirror is split: the peer holds an older image; "
                         "`mirrorctl rejoin --wait` first");
    case Replicator::LinkState::kDisconnected:
      return done(ENOTCONN, "the peer is not connected: it lacks this node's latest writes, so "
                            "it could not take over; reconnect it first");
    case Replicator::LinkState::kResyncing:
    case Replicator::LinkState::kSynced:
      break;
  }
  demote_ = std::make_unique<Demote>();
  demote_->done = std::move(done);
  demote_->deadline_ms = now_ms_ + timeout_ms;
  // From now on NBD writes fail with EPERM: a client cannot add data that
  // the peer would then have to catch up with.
  gate_.set_writable(false);
  if (on_export_mode) on_export_mode(true);
  MLOG_INFO("volume '%s': demoting: new writes are refused; waiting for '%s' to be in sync",
            cfg_.name.c_str(), peer_.name.c_str());
  demote_poll();
}

// Runs from demote() and every tick until the peer is in sync.
void Volume::demote_poll() {
  if (!demote_) return;
  if (demote_->standby_deadline_ms) {
    if (stop_requested_ || stopping_)
      return demote_finish(0, "secondary; mirrord is stopping (it stays secondary)");
    if (demote_->standby && active_ && peer_known_)
      return demote_finish(0, "secondary; '" + peer_.name + "' is connected: promote it now");
    if (now_ms_ >= demote_->standby_deadline_ms)
      return demote_finish(0, "secondary; '" + peer_.name + "' has not reconnected yet: promote "
                              "it once its `mirrorctl status` shows standby");
    return;
  }
  if (demote_->flushing) return;
  // The disk may have failed (and been detached) since the demote started:
  // a secondary on it would hold an outdated copy.
  if (replicator_->disk_state() != Replicator::DiskState::kOk)
    return demote_finish(EIO, kDisklessHelp);
  auto state = replicator_->state();
  if (state != Replicator::LinkState::kSynced && state != Replicator::LinkState::kResyncing)
    return demote_finish(ECONNRESET, "the link to the peer was lost; still primary");
  if (now_ms_ >= demote_->deadline_ms)
    return demote_finish(ETIMEDOUT, "the peer was not in sync before the timeout (" +
                                        std::to_string(bitmap_->dirty_bytes()) +
                                        " bytes out of sync); still primary");
  if (state != Replicator::LinkState::kSynced || replicator_->writes_in_flight() ||
      bitmap_->dirty_bytes())
    return;  // the next tick looks again
  // A mirrored flush: every acknowledged write is durable on both copies.
  // `flushing` stays set through the role commit below: a tick meanwhile
  // must not start a second flush and commit (that became secondary twice
  // and touched demote_ after demote_finish had reset it).
  demote_->flushing = true;
  replicator_->flush(FnDone::make([this](int err) {
    if (err) return demote_finish(-err, std::string("flush failed: ") + strerror(-err));
    if (replicator_->state() != Replicator::LinkState::kSynced || bitmap_->dirty_bytes() ||
        replicator_->disk_state() != Replicator::DiskState::kOk) {
      demote_->flushing = false;
      return demote_poll();
    }
    bitmap_->set_flags(bitmap_->flags() & ~kFlagPrimary);
    bitmap_->commit(FnDone::make([this](int ce) {
      if (ce) {
        bitmap_->set_flags(bitmap_->flags() | kFlagPrimary);
        return demote_finish(-ce, "cannot record the role in the metadata; still primary");
      }
      become(Role::kSecondary);
      // Answered once the pair is back in standby (enter_standby, tick), so
      // a failover script's promote on the peer right after it is not
      // refused as "the peer is not connected".
      demote_->flushing = false;
      demote_->standby_deadline_ms = mono_ms() + cfg_.ack_timeout_ms;
      demote_poll();
    }));
  }));
}

void Volume::demote_finish(int err, const std::string& why) {
  if (err) {
    MLOG_WARN("volume '%s': demote failed: %s", cfg_.name.c_str(), why.c_str());
    gate_.set_writable(true);
    if (on_export_mode) on_export_mode(false);
  }
  Done d = std::move(demote_->done);
  demote_.reset();
  d(err, why);
}

std::string Volume::behind_reason() const {
  uint32_t f = bitmap_->flags();
  if (split_brain_) return "the pair is in split brain";
  if (f & kFlagCopyUnknown)
    return "nothing records this copy's history (its metadata is new or was lost): it may be "
           "older or newer than the peer's, or torn by a resync whose record was lost";
  if (f & (kFlagInconsistent | kFlagFullSyncNeeded))
    return "this copy is not consistent (a resync has not finished)";
  if (f & kFlagSplit)
    return "the mirror is split: this copy is a point-in-time image, older than the peer's";
  // The primary detached its failed disk onto this copy: the only current one.
  if (f & kFlagPeerDiskFailed) return "";
  if (!active_ || !peer_known_)
    return "the peer is not connected, so nothing shows that this copy has its latest data "
           "(or that it is no longer primary)";
  const link::State& p = peer_state_;
  // A peer that takes a copy (mid-resync into it, or discard-my-data), or
  // has none (new metadata on a blank disk): nothing there is newer. Not
  // a peer whose metadata was lost over data (kFlagCopyUnknown).
  if (!(p.flags & kFlagCopyUnknown) &&
      ((p.flags & kFlagInconsistent) || (p.gen.current == 0 && (p.flags & kFlagFullSyncNeeded))))
    return "";
  if (p.gen.current != bitmap_->generation().current || p.gen.bitmap != 0 || p.dirty_bytes)
    return "the peer's generation differs: it has data this copy lacks";
  return "";
}

void Volume::promote_identical(Done done) {
  const uint32_t flags = bitmap_->flags();
  Generation g = bitmap_->generation();
  // Both metadata files new (created, no plan agreed yet): one reset from
  // an unreadable file, or with a history, is never adopted.
  auto why_not = [](uint32_t f) {
    return (f & kFlagCopyUnknown) ? "was reset (its file was unreadable), not created"
                                  : "records a history";
  };
  if (role_ != Role::kPrimary)
    return done(EINVAL, "--identical is for the primary of a new pair");
  if (!(flags & kFlagUnpaired))
    return done(EINVAL, std::string("--identical needs both nodes' metadata new (created, no "
                                    "plan agreed yet), but this node's ") +
                            why_not(flags) + ": `promote --force` gives '" + peer_.name +
                            "' a full copy of this one");
  if (peer_known_ && !(peer_state_.flags & kFlagUnpaired))
    return done(EINVAL, "--identical needs both nodes' metadata new (created, no plan agreed "
                        "yet), but '" + peer_.name + "''s " + why_not(peer_state_.flags) +
                        ": `promote --force` gives it a full copy of this one; if '" +
                        peer_.name + "''s copy is the current one, start this node once with "
                        "--discard-my-data instead");
  // A read-only copy (unconfirmed_) took no write since the start: what its
  // map and generation hold is initial-sync = "full" and full sync plans the
  // peer refused.
  if (!unconfirmed_ && (bitmap_->dirty_bytes() > 0 || g.bitmap != 0 || g.history[0] != 0))
    return done(EBUSY, "this copy has changes '" + peer_.name + "' lacks (written since the "
                       "start, or all marked by initial-sync = \"full\"): `promote --force` "
                       "without --identical gives it a full copy");
  bitmap_->clear_all_dirty();
  g = Generation{.current = g.current};
  bitmap_->set_generation(g);
  bitmap_->set_flags((flags | kFlagAssertIdentical) & ~kFlagFullSyncNeeded);
  bitmap_->commit(FnDone::make([this, done](int err) {
    if (err) return done(-err, "cannot record it in the metadata");
    MLOG_WARN("volume '%s': promote --force --identical: the operator says both copies are "
              "identical; '%s' adopts this one without a copy",
              cfg_.name.c_str(), peer_.name.c_str());
    done(0, "primary; both copies are taken as identical: '" + peer_.name +
                "' adopts this one without a copy (a wrong word leaves them different)");
    if (!active_) dial_now(/*even_if_not_dialer=*/true);
  }));
}

void Volume::promote(bool force, Done done, bool check_only) {
  // A primary that never agreed a plan with its peer (new or lost metadata)
  // whose peer refused the first sync: the operator's word that this copy is
  // the current one.
  bool first_sync = role_ == Role::kPrimary && force &&
                    (bitmap_->flags() & (kFlagUnpaired | kFlagCopyUnknown));
  if (((role_ == Role::kPrimary && unconfirmed_) || first_sync) && split_brain_)
    // Both primary: the peer's writes go on there. Taking this copy as the
    // current one would make two writable primaries.
    return done(EBUSY, "refused even with --force: '" + peer_.name + "' is primary too (split "
                       "brain): two writable primaries are never allowed. To keep '" +
                       peer_.name + "''s copy, run `mirrorctl discard-my-data` here (or restart "
                       "this node once with --discard-my-data); to keep this one, demote or "
                       "stop '" + peer_.name + "' first");
  if ((role_ == Role::kPrimary && unconfirmed_) || first_sync) {
    if (!force)
      return done(EBUSY, "this node is primary but read-only: nothing records its copy's "
                         "history (its metadata is new or was lost, over a disk that holds "
                         "data), so nothing says its copy is the current one. `promote "
                         "--force` takes it as the current one; otherwise wait until '" +
                         peer_.name + "' connects and the pair agrees a plan");
    // Its relation to the peer's copy is unknown: the peer takes all of it.
    bitmap_->set_all_dirty();
    bitmap_->set_flags(bitmap_->flags() | kFlagFullSyncNeeded);
    confirm_copy("promote --force");
    return bitmap_->commit(FnDone::make([this, done](int err) {
      if (err) return done(-err, "cannot record it in the metadata");
      done(0, "primary (forced: this copy is taken as the current one; '" + peer_.name +
                  "' takes a full copy of it)");
      // The peer may have refused the first sync for want of this word,
      // and asked to be left alone for a while: ask it again now.
      if (!active_) dial_now(/*even_if_not_dialer=*/true);
    }));
  }
  if (role_ == Role::kPrimary) return done(EALREADY, "already primary");
  if (demote_)
    return done(EBUSY, "this node's demote is finishing (waiting for '" + peer_.name +
                           "' to reconnect in standby): promote '" + peer_.name + "' instead");
  if (active_ && peer_known_ && peer_state_.role == link::State::kPrimary)
    return done(EBUSY, "'" + peer_.name + "' is primary: demote it first (`mirrorctl demote` "
                       "there); two primaries are never allowed");
  std::string behind = behind_reason();
  const uint32_t pf = peer_state_.flags;
  if (force && (bitmap_->flags() & kFlagInconsistent) && active_ && peer_known_ &&
      !(pf & (kFlagInconsistent | kFlagDiskFailed)) &&
      !((pf & kFlagFullSyncNeeded) && !(pf & kFlagCopyUnknown)))
    // The peer, connected, was this copy's resync source: its copy is whole
    // (or of unknown history, not blank), this one a mix. --force is for a
    // peer that is lost.
    return done(EBUSY, "refused even with --force: this copy is half-resynced (a resync from '" +
                           peer_.name + "' had not finished) and '" + peer_.name +
                           "' is connected: promote '" + peer_.name + "' instead. To take this "
                           "mixed copy anyway, stop '" + peer_.name + "' first");
  if (!behind.empty() && !force)
    return done(EBUSY, "refused: " + behind +
                           ". Use --force only if the peer is lost: its later writes then "
                           "make a split brain instead of being merged");
  // The old primary's requests still in this disk's queue, or a read-write
  // split image's own writes (open-rw), could land over this node's own
  // writes as primary, or after a full copy of this disk to the peer read
  // their blocks. The image takes no new write from here (a refusal opens
  // it again).
  auto landing = [this] {
    std::string busy = earlier_requests();
    return busy.empty() ? busy
                        : "refused: " + busy + ": this node takes writes of its own only once "
                                               "they have landed; promote again in a moment";
  };
  if (check_only) {
    std::string why = landing();
    return done(why.empty() ? 0 : EBUSY, why);
  }
  const bool was_rw = local_->writable();
  auto reopen = [this, was_rw] {
    if (!was_rw || role_ != Role::kSecondary) return;
    local_->set_writable(true);
    gate_.set_writable(true);
  };
  if (was_rw) {
    local_->set_writable(false);
    gate_.set_writable(false);
  }
  if (std::string why = landing(); !why.empty()) {
    reopen();
    return done(EBUSY, why);
  }
  // A promote that cannot record the role leaves this node as it was. Only
  // undoing kFlagPrimary kept the new `current` in memory (and on disk with
  // the next commit): the peer's next handshake was a split brain although
  // this node never took a write.
  struct Before {
    Generation gen;
    uint32_t flags;
    std::vector<std::pair<uint64_t, uint64_t>> dirty;
  };
  auto before = std::make_shared<Before>(Before{bitmap_->generation(), bitmap_->flags(), {}});
  for (uint64_t off = 0, len = 0; bitmap_->next_dirty(off, ~0ull, &off, &len); off += len)
    before->dirty.emplace_back(off, len);
  auto undo = [this, before, reopen] {
    bitmap_->set_generation(before->gen);
    bitmap_->set_flags(before->flags);
    bitmap_->clear_all_dirty();
    for (auto [off, len] : before->dirty) bitmap_->set_dirty(off, len);
    reopen();
  };
  Generation g = bitmap_->generation();
  uint32_t flags = bitmap_->flags();
  // From here on this node's writes are tracked relative to the generation
  // both copies share; the new current id is one the old primary never had.
  if (g.bitmap == 0) g.bitmap = g.current;
  g.current = random_id();
  bool unsure = flags & (kFlagInconsistent | kFlagFullSyncNeeded | kFlagDisposableLocalWrites |
                         kFlagSplit);
  if (unsure) {
    // Forced onto a copy that may differ anywhere from the peer's: a later
    // sync from here copies everything.
    bitmap_->set_all_dirty();
    flags |= kFlagFullSyncNeeded;
  } else {
    bitmap_->clear_all_dirty();
  }
  // (Forced: the operator takes this copy as the current one.)
  flags &= ~(kFlagInconsistent | kFlagSplit | kFlagDisposableLocalWrites | kFlagPeerDiskFailed |
             kFlagsCopyUnknown | kFlagUnpaired);
  flags |= kFlagPrimary;
  bitmap_->set_generation(g);
  bitmap_->set_flags(flags);
  if (!behind.empty())
    MLOG_WARN("volume '%s': forced promote: %s", cfg_.name.c_str(), behind.c_str());
  // The map of changes since the last backup stops tracking here (a
  // primary's writes are not in it): all changed, durably before the role,
  // so after a later demote an incremental backup copies everything.
  changes_->set_all_dirty();
  auto record_role = [this, done = std::move(done), forced = !behind.empty(), undo](int me) {
    if (me) {
      undo();
      return done(-me, "cannot write " + changes_->path() + "; still secondary");
    }
    bitmap_->commit(FnDone::make([this, done, forced, undo](int err) {
      if (err) {
        undo();
        return done(-err, "cannot record the role in the metadata; still secondary");
      }
      become(Role::kPrimary);
      done(0, forced ? "primary (forced)" : "primary");
    }));
  };
  changes_->commit(FnDone::make(std::move(record_role)));
}

void Volume::release_retired() {
  auto drop_idle = [this](auto& list, const char* what) {
    for (auto it = list.begin(); it != list.end();) {
      if (!(*it)->idle()) {
        ++it;
        continue;
      }
      it = list.erase(it);
      MLOG_DEBUG("volume '%s': released the %s of the previous role", cfg_.name.c_str(), what);
    }
  };
  drop_idle(retired_replicators_, "replicator");
  drop_idle(retired_appliers_, "applier");
}

void Volume::become(Role role) {
  if (role == Role::kSecondary) {
    // A handshake still holding its writes would otherwise release them
    // into a retired replicator later.
    for (auto& s : sessions_)
      if (s->plan_hold == replicator_.get()) end_plan_hold(s.get());
    replicator_->retire();
    retired_replicators_.push_back(std::move(replicator_));
    role_ = Role::kSecondary;
    make_applier();
  } else {
    if (applier_) applier_->detach();
    retired_appliers_.push_back(std::move(applier_));
    role_ = Role::kPrimary;
    make_replicator();
  }
  if (on_export_mode) on_export_mode(role == Role::kSecondary);
  MLOG_INFO("volume '%s': this node is now %s", cfg_.name.c_str(),
            role == Role::kPrimary ? "primary" : "secondary");
  // A fresh handshake under the new roles decides what to copy.
  reconnect(role == Role::kPrimary ? "promoted: reconnecting as primary"
                                   : "demoted: reconnecting as secondary");
}

}  // namespace mirror
