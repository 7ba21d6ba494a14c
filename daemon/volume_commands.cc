// The operator's commands on a Volume (docs/control-protocol.md): split,
// rejoin, hold, release, open-rw, backup-mark, discard-my-data, verify. Planned failover (promote,
// demote) is in volume_failover.cc; the handshake and sessions in volume.cc,
// the resync plan in volume_plan.cc.
#include <cstring>

#include "clock.h"
#include "log.h"
#include "volume.h"
#include "volume_internal.h"

namespace mirror {

using volume_internal::kControlIdBit;
using volume_internal::kDisklessHelp;
using volume_internal::kSplitBrainHelp;

namespace {
// How long discard-my-data waits for the writes already running here.
constexpr uint64_t kDiscardDrainMs = 30000;
}  // namespace

// --------------------------------------------------------------- control --

void Volume::split(Done done) {
  if (role_ != Role::kPrimary)
    return done(EINVAL, not_primary("split"));
  if (split_brain_) return done(EBUSY, kSplitBrainHelp);
  if (resize_) return done(EBUSY, "a resize is running: split after it");
  if (replicator_->disk_state() != Replicator::DiskState::kOk) return done(EIO, kDisklessHelp);
  switch (replicator_->state()) {
    case Replicator::LinkState::kSplit:
      return done(EALREADY, "already split");
    case Replicator::LinkState::kDisconnected:
      return done(ENOTCONN,
                  "the peer is not connected: its copy is already behind, a split now "
                  "would not be a point in time");
    case Replicator::LinkState::kResyncing:
      return done(EBUSY, "a resync is running: the secondary is not consistent yet");
    case Replicator::LinkState::kSynced:
      break;
  }
  uint64_t t0 = mono_us();
  // The split's instant; status shows it (last_split) once the split is
  // made: a failed one made none.
  uint64_t when = unix_ms();
  rejoin_pending_ = false;
  bitmap_->set_flags(bitmap_->flags() | kFlagSplit);
  MLOG_INFO("volume '%s': splitting the mirror", cfg_.name.c_str());
  replicator_->freeze([this, t0, when, done = std::move(done)](int err) {
    uint64_t drain_us = mono_us() - t0;
    if (err || !active_) {
      // The SPLIT never went out: the secondary is not split, and neither is
      // this node. Left set, the flag made the next session a split one: the
      // pair stayed split, unmirrored, after a split that failed (under
      // `mirrorctl backup`, which then had nothing to rejoin). (A rejoin from
      // another shell, which closes the link too, cleared it already.)
      std::string why = err && err != -ECONNRESET
                            ? std::string("the peer failed during the split (") +
                                  strerror(-err) + ")"
                            : "the link to the peer was lost during the split";
      return split_failed(err ? -err : ECONNRESET, why, done);
    }
    uint64_t id = kControlIdBit | next_control_id_++;
    control_waiters_[id] = [this, done, when, drain_us](int e, const std::string& m) {
      // Sent, never confirmed (the link lost, the secondary stopped or
      // killed once it applied it, or it failed the split's flush): whether
      // it applied it is unknown here. This node decides what the pair is,
      // at the next handshake: not split, as after any failed split (split,
      // the next session was a split one, and a failed backup left the pair
      // unmirrored). A split image the secondary made is resynced then.
      if (e)
        return split_failed(e, "'" + peer_.name + "' did not confirm the split (" + m +
                                   "; it may have applied it, and says split until the "
                                   "next session)",
                            done);
      // (From here on the pair is split: the secondary confirmed it.)
      split_unix_ms_ = when;
      split_drain_us_ = drain_us;
      bitmap_->commit(FnDone::make([this, done](int ce) {
        if (ce) return done(-ce, "cannot record the split in the metadata");
        MLOG_INFO("volume '%s': split; mirrored writes drained in %llu us", cfg_.name.c_str(),
                  static_cast<unsigned long long>(split_drain_us_));
        done(0, "split");
      }));
    };
    link::Header h;
    h.type = link::Type::kSplit;
    h.id = id;
    h.offset = when;
    active_->conn->send(h);
  });
}

void Volume::split_failed(int err, const std::string& why, const Done& done) {
  bitmap_->set_flags(bitmap_->flags() & ~kFlagSplit);
  bitmap_->commit(nullptr);
  // A SPLIT the secondary applied unconfirmed is ended as a rejoin ends one.
  rejoin_pending_ = true;
  resync_after_split("the split failed: reconnecting to resync");
  MLOG_WARN("volume '%s': split failed: %s; no split was made", cfg_.name.c_str(), why.c_str());
  done(err, why + ": no split was made; the pair resyncs what the secondary missed once the "
                  "link is back");
}

void Volume::rejoin(Done done) {
  if (split_brain_)
    return done(EBUSY, std::string(kSplitBrainHelp));
  if (role_ != Role::kPrimary)
    return done(EINVAL, not_primary("rejoin"));
  // The operator says "go": a before-resync-target that failed on the
  // secondary runs again at the next handshake, not when its 30 s are over.
  retry_handler_ = true;
  if (!(bitmap_->flags() & kFlagSplit)) {
    if (peer_refusal_.why.empty()) {
      retry_handler_ = false;
      return done(EALREADY, "not split");
    }
    rejoin_pending_ = true;
    // (It refused: its before-resync-target failed, or it keeps a split
    // image for a primary that no longer knows of the split.)
    MLOG_INFO("volume '%s': rejoin: asking '%s' again now (it refused: %s)", cfg_.name.c_str(),
              peer_.name.c_str(), peer_refusal_.why.c_str());
    peer_refusal_.why.clear();  // rejoin --wait waits for this rejoin's answer
    done(0, "retrying now: '" + peer_.name + "' is asked again (its before-resync-target runs "
            "again; a split image it kept is resynced)");
    // Even if the secondary is the node that dials: it holds off for the
    // retry-after it gave, and would not ask again before then.
    return dial_now(/*even_if_not_dialer=*/true);
  }
  peer_refusal_.why.clear();  // rejoin --wait waits for this rejoin's answer
  rejoin_pending_ = true;
  bitmap_->set_flags(bitmap_->flags() & ~kFlagSplit);
  bitmap_->commit(FnDone::make([this, done = std::move(done)](int err) {
    if (err) return done(-err, "cannot write the metadata");
    MLOG_INFO("volume '%s': rejoin: resyncing %llu bytes changed since the split",
              cfg_.name.c_str(), static_cast<unsigned long long>(bitmap_->dirty_bytes()));
    // Answered first: a rejoin relayed from the secondary gets its reply
    // out before the link closes. A fresh handshake computes the plan from
    // both sides' current state (the secondary may have changes of its own).
    done(0, "rejoining");
    resync_after_split("rejoin: reconnecting to resync");
  }));
}

void Volume::resync_after_split(const char* why) {
  // Writes since the freeze are tracked for the peer already; this node
  // says degraded, not split, until the next session, whose plan resyncs
  // them (and any split image the secondary made or kept).
  replicator_->split_ended();
  if (active_)
    active_->conn->close_when_sent(why);
  else  // a refused plan (split image in use) may hold the peer's dialer off
    dial_now(/*even_if_not_dialer=*/true);
}

void Volume::verify(uint64_t offset, uint64_t length, bool cancel, Done done) {
  if (role_ != Role::kPrimary)
    return done(EINVAL, not_primary("verify"));
  if (cancel) {
    if (!replicator_->verify_progress().running) return done(EALREADY, "no verify is running");
    replicator_->verify_stop("cancelled");
    return done(0, "verify cancelled");
  }
  if (split_brain_) return done(EBUSY, kSplitBrainHelp);
  if (resize_) return done(EBUSY, "a resize is running: verify after it");
  if (replicator_->disk_state() != Replicator::DiskState::kOk) return done(EIO, kDisklessHelp);
  switch (replicator_->state()) {
    case Replicator::LinkState::kSplit:
      return done(EBUSY, "the mirror is split: the copies differ on purpose; rejoin, then verify");
    case Replicator::LinkState::kDisconnected:
      return done(ENOTCONN, "the peer is not connected: verify compares both copies over the link");
    case Replicator::LinkState::kResyncing:
    case Replicator::LinkState::kSynced:
      break;
  }
  if (!active_ || !(active_->peer_features & link::kFeatureVerify))
    return done(EOPNOTSUPP, "peer '" + peer_.name + "' does not support verify (its mirrord "
                            "predates it): upgrade it first");
  if (auto st = replicator_->verify_start(offset, length); !st)
    return done(st.error().code, st.error().message);
  const VerifyProgress& v = replicator_->verify_progress();
  done(0, "verify " + std::to_string(v.run) + " started: " + std::to_string(v.total_bytes) +
              " bytes from offset " + std::to_string(v.offset));
}

void Volume::hold(uint32_t timeout_ms, Done done) {
  if (role_ != Role::kPrimary) return done(EINVAL, not_primary("hold"));
  if (stop_requested_ || stopping_) return done(ESHUTDOWN, "mirrord is stopping: no hold");
  replicator_->hold();
  hold_deadline_ms_ = mono_ms() + timeout_ms;
  done(0, "holding new writes");
}

void Volume::release(Done done) {
  if (role_ != Role::kPrimary) return done(EINVAL, not_primary("release"));
  hold_deadline_ms_ = 0;
  replicator_->release();
  done(0, "released");
}

void Volume::stop_requested() {
  stop_requested_ = true;
  if (role_ == Role::kPrimary && replicator_) replicator_->stop_requested();
  // A demote waiting for standby answers now (not one still flushing).
  if (demote_ && demote_->standby_deadline_ms) demote_poll();
  if (role_ != Role::kPrimary || !replicator_ || hold_deadline_ms_ == 0) return;
  hold_deadline_ms_ = 0;
  MLOG_WARN("volume '%s': stopping: releasing the writes held by 'hold' (a stop does not wait "
            "for a hold's timeout)",
            cfg_.name.c_str());
  replicator_->release();
}

void Volume::open_rw(Done done) {
  if (role_ != Role::kSecondary)
    return done(EINVAL, "open-rw runs on the secondary ('" + peer_.name + "'); the primary "
                        "is read-write already");
  if (!(bitmap_->flags() & kFlagSplit))
    return done(EBUSY, "not split: the secondary's image is mirrored; split first");
  if (local_->writable()) return done(EALREADY, "already read-write");
  // From here on this copy diverges from the split instant: a generation of
  // its own, the shared one kept as the base both sides' changes count from.
  Generation g = bitmap_->generation();
  if (g.bitmap == 0) {
    g.bitmap = g.current;
    g.current = random_id();
    bitmap_->set_generation(g);
  }
  bitmap_->set_flags(bitmap_->flags() | kFlagDisposableLocalWrites);
  handlers_->copy_changed();  // a snapshot taken before no longer matches it
  bitmap_->commit(FnDone::make([this, done = std::move(done)](int err) {
    if (err) return done(-err, "cannot write the metadata");
    if (role_ != Role::kSecondary) return done(EBUSY, "promoted meanwhile");
    // A rejoin's plan that arrived during the commit resyncs this image
    // from the primary: it is mirrored again, never to be written here.
    if (!(bitmap_->flags() & kFlagSplit))
      return done(EBUSY, "rejoined meanwhile: the secondary's image is mirrored again");
    local_->set_writable(true);
    gate_.set_writable(true);
    if (on_export_mode) on_export_mode(false);
    MLOG_INFO("volume '%s': the split image is read-write; its changes are undone at rejoin",
              cfg_.name.c_str());
    done(0, "read-write until rejoin (changes are tracked and replaced by the primary's data "
            "at rejoin)");
  }));
}

int Volume::apply_backup_mark(uint64_t point, uint64_t expect, uint64_t split,
                              std::function<void(int)> done) {
  if (!(bitmap_->flags() & kFlagSplit)) return EBUSY;
  // A rejoin and a new split during the copy: the image the backup read
  // mixes two instants. (Unknown after a restart: 0; the primary's check
  // in mirrorctl covers that.)
  if (split != 0 && split_unix_ms_ != 0 && split != split_unix_ms_) return ECANCELED;
  uint64_t current = changes_->generation().current;
  if (expect != 0 && current != expect) return ESTALE;
  if (point == 0) {
    loop_.defer([done] { done(0); });
    return 0;
  }
  // The image is the split instant's (only local read-write changes differ,
  // and rejoin rewrites those, marking them again): the map restarts empty.
  changes_->clear_all_dirty();
  Generation g = changes_->generation();
  g.current = point;
  changes_->set_generation(g);
  changes_->set_flags(changes_->flags() & ~kFlagFullSyncNeeded);
  changes_->commit(FnDone::make([this, point, done](int err) {
    if (!err)
      MLOG_INFO("volume '%s': backup point %llu: tracking changes from here", cfg_.name.c_str(),
                static_cast<unsigned long long>(point));
    done(err < 0 ? -err : err);
  }));
  return 0;
}

void Volume::backup_mark(uint64_t point, uint64_t expect, uint64_t split, Done done) {
  auto say = [this, point, expect, split, done](int err) {
    switch (err) {
      case 0: return done(0, point ? "backup point " + std::to_string(point) : "checked");
      case EBUSY: return done(EBUSY, "not split: a backup point is the split instant");
      case ECANCELED:
        return done(ECANCELED, "this copy is split at " + std::to_string(split_unix_ms_) +
                                   ", not at " + std::to_string(split) +
                                   ": the split the backup copied ended during the copy");
      case ESTALE:
        return done(ESTALE, "the secondary's last backup point is not " +
                                std::to_string(expect) + ": take a full backup");
      default: return done(err, std::string("the secondary failed: ") + strerror(err));
    }
  };
  // The primary keeps no such map: VolumeControl relays the command to the
  // secondary; reaching here, the primary has no secondary to ask.
  if (role_ != Role::kSecondary)
    return done(ENOTCONN, "the changed-regions map is the secondary's, and '" + peer_.name +
                              "' is not connected");
  if (int err = apply_backup_mark(point, expect, split, say)) say(err);
}

void Volume::discard_my_data(Done done) {
  // Its failed disk would become a secondary's export until the full copy
  // ends: a restart with --discard-my-data (after the disk is replaced).
  if (replicator_ && replicator_->disk_state() != Replicator::DiskState::kOk)
    return done(EIO, kDisklessHelp);
  if (!split_brain_)
    return done(EINVAL, "not in a split brain: discard-my-data would throw this copy away for "
                        "nothing (to recopy a healthy pair, restart the primary with "
                        "--force-full-sync)");
  if (discard_) return done(EBUSY, "discard-my-data is already running");
  if (resize_) return done(EBUSY, "a resize is running");
  if (demote_) return done(EBUSY, "a demote is running");
  discard_ = std::make_unique<Discard>();
  discard_->done = std::move(done);
  discard_->deadline_ms = now_ms_ + kDiscardDrainMs;
  discard_->old_flags = bitmap_->flags();
  // From here the export refuses writes: this copy's data is about to be
  // replaced by the survivor's, and nothing written now may land after the
  // copy started. A hold would keep writes from ever finishing: let them go.
  gate_.set_writable(false);
  local_->set_writable(false);
  if (on_export_mode) on_export_mode(true);
  if (replicator_) {
    hold_deadline_ms_ = 0;
    replicator_->release();
  }
  MLOG_WARN("volume '%s': discard-my-data: new writes are refused; this node becomes secondary "
            "and takes its data from '%s'",
            cfg_.name.c_str(), peer_.name.c_str());
  discard_poll();
}

// Runs from discard_my_data() and every tick until the writes already
// running here have finished: none of them may land on the copy the
// survivor is about to send.
void Volume::discard_poll() {
  if (!discard_ || discard_->committing) return;
  uint64_t busy = replicator_ ? replicator_->writes_in_flight() : local_->changes_in_flight();
  if (busy) {
    if (now_ms_ < discard_->deadline_ms) return;
    return discard_finish(ETIMEDOUT, std::to_string(busy) + " writes still in flight after " +
                                         std::to_string(kDiscardDrainMs / 1000) +
                                         " s (on-peer-loss = fail-stop holds them); nothing "
                                         "changed");
  }
  discard_->committing = true;
  // This copy first, as at a demote: the resync copies back only the
  // regions either side changed since they diverged; everywhere else this
  // copy must already equal the survivor's, durably. A primary's writes
  // since its last flush are covered by the activity log, which only a
  // primary's crash recovery turns into dirty bits: as a secondary, a power
  // loss would silently take them back.
  Backend& copy = replicator_ ? static_cast<Backend&>(*replicator_) : *disk_;
  copy.flush(FnDone::make([this](int fe) {
    if (fe) return discard_finish(-fe, std::string("flushing this copy failed (") +
                                           strerror(-fe) + "); nothing changed");
    // The dirty bits of the writes just drained (some only in the activity
    // log until now) are durable before the flags that make this node a
    // secondary whose resync follows them: one commit is not atomic across
    // blocks (docs/bitmap-format.md), as at a stop.
    bitmap_->commit(FnDone::make([this](int me) {
      if (me) return discard_finish(-me, "cannot write the metadata; nothing changed");
      discard_commit();
    }));
  }));
}

void Volume::discard_commit() {
  bool by_regions =
      volume_internal::discard_by_regions(bitmap_->flags(), bitmap_->generation().bitmap);
  bitmap_->set_flags(by_regions ? volume_internal::discard_changes_flags(bitmap_->flags())
                                : volume_internal::discard_my_data_flags(bitmap_->flags()));
  // Every region will be rewritten by the copy: the next incremental backup
  // must copy everything. Durable before the role, as in promote.
  changes_->set_all_dirty();
  changes_->commit(FnDone::make([this, by_regions](int ce) {
    if (ce) return discard_finish(-ce, "cannot write " + changes_->path() + "; nothing changed");
    bitmap_->commit(FnDone::make([this, by_regions](int err) {
      if (err) return discard_finish(-err, "cannot record it in the metadata; nothing changed");
      split_brain_ = false;
      last_error_.clear();
      if (role_ == Role::kPrimary) {
        become(Role::kSecondary);  // also answers the export's mode
      } else if (on_export_mode) {
        on_export_mode(true);
      }
      // A handshake under way still carries the old STATE: start afresh.
      for (auto& s : std::vector<std::shared_ptr<Session>>(sessions_))
        if (!s->conn->closing()) s->conn->close("discard-my-data: reconnecting");
      if (by_regions) {
        discard_finish(0, "secondary; this node's changes are discarded: when '" + peer_.name +
                              "' connects it copies back the " +
                              std::to_string(bitmap_->dirty_bytes()) +
                              " bytes of regions this node changed since they diverged, and "
                              "those it changed itself");
      } else {
        discard_finish(0, "secondary; this node's changes are discarded and a full copy from '" +
                              peer_.name + "' starts when it connects");
      }
    }));
  }));
}

void Volume::discard_finish(int err, const std::string& why) {
  if (err) {
    MLOG_WARN("volume '%s': discard-my-data failed: %s", cfg_.name.c_str(), why.c_str());
    bitmap_->set_flags(discard_->old_flags);
    if (role_ == Role::kPrimary) {
      gate_.set_writable(true);
      if (on_export_mode) on_export_mode(false);
    }
  } else {
    MLOG_INFO("volume '%s': discard-my-data: %s", cfg_.name.c_str(), why.c_str());
  }
  Done d = std::move(discard_->done);
  discard_.reset();
  d(err, why);
}

}  // namespace mirror
