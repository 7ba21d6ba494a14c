// The resync plan (docs/replication-protocol.md, "Generations and the
// plan"): once both nodes have sent STATE, the primary compares generations
// and decides what to copy (or refuses: split brain, unrelated data), the
// secondary adopts the plan, and the session becomes the active one.
// Sessions, dialing and the message dispatch that leads here are in
// volume.cc.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "clock.h"
#include "log.h"
#include "volume.h"
#include "volume_internal.h"

namespace mirror {

namespace {
// Why a first sync between two copies of unknown history waits, and what
// the operator does, the same from either side: PRIMARY's copy would
// overwrite SECONDARY's. --identical is offered only when both metadata
// files are new (BOTH_NEW: it needs kFlagUnpaired on both).
std::string first_sync_refusal(const std::string& primary, const std::string& secondary,
                               bool both_new) {
  std::string why =
      "neither node records its copy's history (their metadata is new or was lost) and '" +
      secondary + "''s disk holds data: nothing says which copy is the current one. On the "
      "node whose copy is current, run `mirrorctl promote --force`: if that is '" + primary +
      "', '" + secondary + "' then takes a full copy of it; if it is '" + secondary +
      "', stop '" + primary + "' first, then start '" + primary + "' once with --discard-my-data";
  if (both_new)
    why += ". If both copies are known identical, `mirrorctl promote --force --identical` on '" +
           primary + "' adopts them without a copy";
  return why;
}

link::Generation to_link(const Generation& g) {
  return {g.current, g.bitmap, g.history[0], g.history[1]};
}

const char* plan_name(link::Plan::Kind k) {
  switch (k) {
    case link::Plan::kInSync: return "in sync";
    case link::Plan::kBitmap: return "bitmap resync";
    case link::Plan::kFull: return "full sync";
    case link::Plan::kUnion: return "resync of both sides' changes";
    case link::Plan::kAdopt: return "no sync (initial-sync = skip)";
    case link::Plan::kStandby: return "standby";
  }
  return "?";
}

}  // namespace

link::State Volume::my_state() const {
  link::State st;
  st.role = role_ == Role::kPrimary ? link::State::kPrimary : link::State::kSecondary;
  st.flags = bitmap_->flags();
  st.gen = to_link(bitmap_->generation());
  st.dirty_bytes = bitmap_->dirty_bytes();
  return st;
}

void Volume::on_peer_state(Session* s, const link::State& st) {
  // A second session (both nodes dialed, dial_now(true)): the active one stands.
  // EALREADY: the peer tells it from a refusal of the pair (session_message).
  if (active_) return refuse_session(s, "a replication session is already active", 0, EALREADY);
  // Nor two plans at once: each would move the generation (a FULL plan's
  // fresh base id) under the other.
  for (auto& o : sessions_)
    if (o.get() != s && o->phase >= Session::Phase::kPlan && role_ == Role::kPrimary)
      return refuse_session(s, "another handshake with the peer is being planned", 0, EALREADY);
  peer_state_ = st;
  peer_known_ = true;
  if (role_ == Role::kPrimary) {
    if (st.role == link::State::kPrimary) {
      split_brain_ = true;
      const std::string why = "split brain: both nodes are primary";
      if (volume_internal::new_reason(plan_refusal_why_, why))
        MLOG_ERROR("split brain: both '%s' and '%s' are primary; nothing was overwritten. "
                   "Choose the survivor: run `mirrorctl discard-my-data` on the other node",
                   self_.name.c_str(), peer_.name.c_str());
      return session_error(s, why, false);
    }
    return plan_as_primary(s, st);
  }
  if (st.role != link::State::kPrimary) return enter_standby(s, st);
  s->phase = Session::Phase::kPlan;
}

void Volume::enter_standby(Session* s, const link::State& st) {
  // Neither node is primary (after a demote, before a promote): stay
  // connected so each side knows the other's role and generation, which is
  // what promote checks; nothing is copied.
  active_ = s;
  ++session_serial_;
  s->phase = Session::Phase::kActive;
  peer_reached();
  bool same = st.gen.current == bitmap_->generation().current;
  MLOG_INFO("volume '%s': peer '%s' connected, both secondary (%s)", cfg_.name.c_str(),
            peer_.name.c_str(), same ? "same generation" : "generations differ");
  if (demote_) {
    demote_->standby = true;  // a demote's answer waits for this
    demote_poll();
  }
}

void Volume::plan_as_primary(Session* s, const link::State& st) {
  Generation my = bitmap_->generation();
  uint32_t flags = bitmap_->flags();
  const link::Generation& peer = st.gen;
  bool peer_disposable = st.flags & kFlagDisposableLocalWrites;
  // The peer gave its changes up (discard-my-data, or a resync of a
  // read-write split under way): its copy is to be overwritten whatever
  // the relation, so a relation no resync by regions fits is a full copy,
  // never a refusal that leaves the operator's choice unanswered.
  bool peer_overwritable = peer_disposable && (st.flags & kFlagInconsistent);
  link::Plan::Kind kind = link::Plan::kFull;
  std::string refuse;
  bool peer_sole = st.flags & kFlagPeerDiskFailed;
  if (replicator_->diskless()) {
    // This node detached its disk in this process: only the copy it
    // detached to may serve it, unchanged since (DETACH moved its current on
    // from ours, which it keeps as history[0]), or, if the link was lost before the
    // peer answered DETACH, that copy as it was (the replicator sends DETACH
    // again). Nothing is copied either way.
    bool detached_to = peer_sole && peer.history0 == my.current;
    bool before_detach = !replicator_->detach_confirmed() && !peer_sole &&
                         peer.current == my.current && peer.bitmap == 0;
    if (st.flags & (kFlagInconsistent | kFlagSplit | kFlagFullSyncNeeded))
      refuse = "this node's disk is detached (diskless), and the peer's copy is not consistent: "
               "nothing can serve this volume";
    else if (detached_to || before_detach)
      kind = link::Plan::kInSync;
    else
      refuse = "this node's disk is detached (diskless), and the peer's copy is not the one "
               "it detached to (its generation moved on): nothing can serve this node's "
               "volume; stop it, promote the peer";
  } else if (peer_sole && (flags & kFlagFullSyncNeeded)) {
    // New or reset metadata here (a replaced disk): the peer's copy is the one.
    refuse = "the peer holds the only current copy: this node's disk failed and was detached "
             "(its copy is outdated). Promote '" + peer_.name + "', then start this node once "
             "with --discard-my-data";
  } else if (peer_sole) {
    // This node's metadata records no disk failure, yet the peer says it
    // holds the only current copy: both may have changes of their own.
    refuse = "split brain: the peer says it holds the only current copy (this node's disk "
             "failed), but this node's metadata records no disk failure: both may have "
             "changes the other lacks";
  } else if ((flags & kFlagFullSyncNeeded) || (st.flags & kFlagDiskFailed)) {
    // (A peer whose own disk failed and was detached holds an outdated copy.)
    kind = link::Plan::kFull;
  } else if (peer.current == 0 || (st.flags & kFlagFullSyncNeeded)) {
    // Both new, not just the peer: a primary that ever agreed a plan has a
    // copy with history, and a peer with new metadata (a replaced disk,
    // discard-my-data) takes a full copy of it.
    bool both_new = peer.current == 0 && (flags & kFlagUnpaired) && (st.flags & kFlagUnpaired) &&
                    !peer_disposable && !(st.flags & kFlagInconsistent) && my.bitmap == 0 &&
                    my.history[0] == 0 && bitmap_->dirty_bytes() == 0 &&
                    // Disks that hold data with no record of their history
                    // (a new pair on used disks, or both nodes' metadata lost
                    // after a failover) are known identical only by the
                    // operator's word (promote --force --identical).
                    ((flags & kFlagAssertIdentical) ||
                     (cfg_.initial_sync == InitialSync::kSkip &&
                      !((flags | st.flags) & kFlagCopyUnknown)));
    kind = both_new ? link::Plan::kAdopt : link::Plan::kFull;
  } else if (peer.current == my.current && my.bitmap == 0 && !peer_disposable) {
    kind = link::Plan::kInSync;
  } else if (my.bitmap != 0 && peer.current == my.bitmap) {
    if (peer.bitmap == 0) {
      kind = link::Plan::kBitmap;
    } else if (peer_disposable) {
      kind = link::Plan::kUnion;
    } else {
      refuse = "split brain: both nodes changed the data since they last agreed";
    }
  } else if (my.bitmap != 0 && peer.bitmap == my.bitmap) {
    if (peer_disposable) {
      kind = link::Plan::kUnion;
    } else {
      refuse = "split brain: both nodes changed the data since they last agreed";
    }
  } else if (my.bitmap != 0 && peer.current == my.current && peer.bitmap == 0 &&
             peer.history0 == my.bitmap && !peer_disposable) {
    // The peer adopted this node's `current` at the end of a resync from
    // `bitmap` (SYNC_DONE), and this node died, or lost the link, before it
    // recorded that end. The peer holds `current`; this dirty map, relative
    // to the older base, covers every change since: a bitmap resync, not a
    // full one.
    kind = link::Plan::kBitmap;
  } else if (my.bitmap != 0 && peer.current == my.current && peer.bitmap == 0) {
    // A full sync planned before (the bitmap id is its fresh base) that the
    // peer never adopted: it refused the plan (before-resync-target running
    // there, local writes in flight) and is still at this node's generation
    // of then. Every region is still marked: plan it again.
    kind = link::Plan::kFull;
  } else if (peer_overwritable) {
    kind = link::Plan::kFull;
  } else if (peer.bitmap != 0 && peer.bitmap == my.current) {
    refuse = "split brain: the peer holds changes this primary does not have";
  } else {
    refuse = "the two copies share no generation (unrelated data); "
             "restart the primary with --force-full-sync to overwrite the peer";
  }
  bool first_sync = false;
  if (refuse.empty() && (kind == link::Plan::kFull || kind == link::Plan::kAdopt) &&
      (flags & (kFlagCopyUnknown | kFlagUnpaired)) && (st.flags & kFlagCopyUnknown) &&
      !(flags & kFlagAssertIdentical) && !opts_.force_full_sync) {
    // Neither copy has a known history (the secondary refuses the same from
    // its side; one that runs older code does not): the first sync waits
    // for the operator's word (promote --force, or --identical).
    first_sync = true;
    refuse = first_sync_refusal(self_.name, peer_.name,
                                (flags & st.flags & kFlagUnpaired) != 0);
  }
  if (refuse.empty() && kind == link::Plan::kFull && (flags & kFlagUnpaired) &&
      peer.current != 0 && !opts_.force_full_sync && !(st.flags & kFlagSplit) &&
      !(st.flags & (kFlagUnpaired | kFlagFullSyncNeeded | kFlagDisposableLocalWrites |
                    kFlagInconsistent | kFlagDiskFailed))) {
    // New metadata (a replaced disk, or a lost file), started as primary
    // (the volume file names it), against a peer whose copy has a history:
    // its full sync would copy holes, or a copy nobody knows the age of,
    // over the pair's data. The operator's promote --force clears
    // kFlagUnpaired. (A split peer gets a standby plan, below: nothing
    // copied until the operator's rejoin.)
    if (flags & kFlagCopyUnknown)
      refuse = "this node's metadata is new (a replaced disk, or lost metadata) and nothing "
               "records its copy's history, but '" + peer_.name + "''s copy has one: a full "
               "sync from here could overwrite newer data. If '" + peer_.name + "' holds the "
               "current data, start this node once with --discard-my-data and promote '" +
               peer_.name + "' (`mirrorctl promote`); if this node's copy is the current one, "
               "run `mirrorctl promote --force` here";
    else
      refuse = "this node's metadata is new and its disk is blank, but '" + peer_.name +
               "''s copy has a history: a full sync from here would overwrite it with an empty "
               "disk. If this disk was replaced, start this node once with --discard-my-data and "
               "promote '" + peer_.name + "' (`mirrorctl promote`); to overwrite '" + peer_.name +
               "' with this empty disk anyway, restart this node with --force-full-sync";
  }
  if (!refuse.empty()) {
    bool brain = refuse.starts_with("split brain");
    if (brain) split_brain_ = true;
    // (A warning: on a new pair over used disks this is a setup step.)
    if (first_sync && volume_internal::new_reason(plan_refusal_why_, refuse))
      MLOG_WARN("volume '%s': %s; nothing was overwritten", cfg_.name.c_str(), refuse.c_str());
    else if (volume_internal::new_reason(plan_refusal_why_, refuse)) {
      MLOG_ERROR("volume '%s': %s; nothing was overwritten. %s", cfg_.name.c_str(),
                 refuse.c_str(),
                 brain ? "Choose the survivor: on the node whose data is discarded, run "
                         "`mirrorctl discard-my-data` (or restart it once with --discard-my-data)"
                       : "Choose the survivor: restart the node whose data is discarded once "
                         "with --discard-my-data");
    }
    return session_error(s, refuse, false);
  }
  plan_refusal_why_.clear();
  split_brain_ = false;
  // (A split image opened read-write has a `current` of its own; its split
  // instant is its `bitmap`.)
  const link::Generation mine = to_link(my);
  if ((st.flags & kFlagSplit) && !(st.flags & kFlagInconsistent) && !(flags & kFlagSplit) &&
      kind != link::Plan::kInSync && kind != link::Plan::kAdopt &&
      !volume_internal::holds_id(mine, peer.current) &&
      !volume_internal::holds_id(mine, peer.bitmap) && !rejoin_pending_ &&
      !opts_.force_full_sync) {
    // The peer keeps a split image from a generation this node does not
    // know: this node's metadata was lost or reset while split. The pair
    // stays split (and says so) until the operator's rejoin.
    MLOG_WARN("volume '%s': '%s' keeps a split image this node no longer knows of (its "
              "metadata was lost or reset): the pair stays split until `mirrorctl rejoin`",
              cfg_.name.c_str(), peer_.name.c_str());
    flags |= kFlagSplit;
    bitmap_->set_flags(flags);
  }
  // From here until activate(), new writes wait: one marked dirty after this
  // decision (a kernel device re-attached at start retries its writes at
  // once) would move the generation under a plan already decided, and an
  // "in sync" plan would never copy it to the peer.
  replicator_->begin_plan_hold();
  s->plan_hold = replicator_.get();
  if ((flags & kFlagSplit) && kind != link::Plan::kAdopt) {
    // Split until the operator rejoins: connected, nothing copied (a full
    // sync too: metadata reset while split keeps the split).
    kind = link::Plan::kStandby;
  }
  if (kind == link::Plan::kFull) {
    // The peer becomes a copy of an unknown base: everything is dirty
    // relative to a fresh base id, which the peer adopts now, so an
    // interrupted full sync resumes as a bitmap resync.
    bitmap_->set_all_dirty();
    if (my.bitmap != 0) my.history[0] = my.bitmap;
    my.bitmap = random_id();
    bitmap_->set_generation(my);
    // "needs a full sync" stays until the peer accepted this plan
    // (activate()): a plan it refuses (before-resync-target running there)
    // is planned FULL again from it. Cleared here, a node with new or reset
    // metadata would find the refused plan's base in no generation of the
    // peer's ("unrelated data").
  }
  if (kind == link::Plan::kAdopt) {
    bitmap_->clear_all_dirty();
    bitmap_->set_flags(flags & ~kFlagFullSyncNeeded);
  }
  s->plan = kind;
  s->phase = Session::Phase::kPlan;
  const bool repeat = plan_logged_ == plan_name(kind) && plan_logged_serial_ == session_serial_;
  plan_logged_ = plan_name(kind);
  plan_logged_serial_ = session_serial_;
  logf(repeat ? LogLevel::kDebug : LogLevel::kInfo,
       "volume '%s': peer '%s' connected: %s (%llu bytes to copy)", cfg_.name.c_str(),
       peer_.name.c_str(), plan_name(kind), static_cast<unsigned long long>(bitmap_->dirty_bytes()));
  // The plan goes out once what it implies here is durable.
  std::weak_ptr<Session> weak = find_session(s);
  bitmap_->commit(FnDone::make([this, weak](int err) {
    auto sp = weak.lock();
    if (!sp || sp->gone) return;
    Session* s = sp.get();
    if (err) return session_error(s, "cannot write metadata");
    link::Plan plan;
    plan.kind = s->plan;
    plan.gen = to_link(bitmap_->generation());
    plan.bytes = bitmap_->dirty_bytes();
    s->plan_id = 1;
    // An operator's rejoin since the last PLAN: "go", whatever the
    // secondary's handler retry period says.
    uint16_t pflags = std::exchange(retry_handler_, false) ? link::kFlagRetryNow : 0;
    s->conn->send_owned(link::encode_message(
        {.type = link::Type::kPlan, .flags = pflags, .id = s->plan_id}, link::encode_plan(plan)));
  }));
}

namespace {
// A plan whose resync writes into the secondary's copy.
bool writes_into_copy(link::Plan::Kind kind) {
  return kind == link::Plan::kBitmap || kind == link::Plan::kUnion || kind == link::Plan::kFull;
}
// How soon the primary may ask again while the split image is in use.
constexpr uint64_t kSplitBusyRetryMs = 5000;
// ... and while it cannot tell yet whether it is (a device call running).
constexpr uint64_t kSplitUnknownRetryMs = 2000;
// How soon the primary may ask again for a full sync into a copy whose
// history is unknown (the operator must act; a restart asks at once).
constexpr uint64_t kCopyUnknownRetryMs = 30000;
// How soon the primary may ask again while requests of an earlier session
// are still on their way to this node's disk.
constexpr uint64_t kLandingRetryMs = 1000;
}  // namespace

void Volume::on_plan(Session* s, const link::Header& h, const link::Plan& plan) {
  uint32_t flags = bitmap_->flags();
  bool resync = writes_into_copy(plan.kind);
  // (Reset metadata, kFlagFullSyncNeeded, keeps the split: the image is
  // still what it was.)
  if (resync && split_image_in_use && (flags & kFlagSplit) && !(flags & kFlagInconsistent)) {
    // A rejoin would turn the split image a backup may still be reading
    // into a mix of old and new blocks: a file system mounted on it would
    // fail mid-backup. Like demote, refused while the device is in use;
    // the primary retries, and the rejoin goes ahead once it is unmounted.
    std::weak_ptr<Session> weak = find_session(s);
    split_image_in_use([this, weak, h, plan](const std::string& busy, bool retry_soon) {
      auto sp = weak.lock();
      if (!sp || sp->gone || sp->conn->closing()) return;
      if (busy.empty()) {
        split_busy_why_.clear();
        return on_plan_free(sp.get(), h, plan);
      }
      if (retry_soon) {
        MLOG_INFO("volume '%s': rejoin: %s; asking the primary to come back in %llu s",
                  cfg_.name.c_str(), busy.c_str(),
                  static_cast<unsigned long long>(kSplitUnknownRetryMs / 1000));
        return session_error(sp.get(), "node '" + self_.name + "' " + busy + "; retrying", false,
                             kSplitUnknownRetryMs, EAGAIN);
      }
      std::string why = "the split image on node '" + self_.name + "' is in use: " + busy +
                        "; the rejoin waits until it is unmounted (finish the backup first)";
      // Once per refusal streak, not at every retried handshake.
      if (split_busy_why_.empty()) MLOG_WARN("volume '%s': %s", cfg_.name.c_str(), why.c_str());
      ++split_busy_refusals_;
      split_busy_why_ = why;
      // ECANCELED: `rejoin --wait` returns with it (the operator must act);
      // the primary comes back every few seconds meanwhile, and at once
      // on the operator's next `rejoin`.
      session_error(sp.get(), why, false, kSplitBusyRetryMs, ECANCELED);
    });
    return;
  }
  on_plan_free(s, h, plan);
}

void Volume::on_plan_free(Session* s, const link::Header& h, const link::Plan& plan) {
  if (role_ != Role::kSecondary || !applier_ || active_)
    return session_error(s, "the node changed while the plan waited; retrying", false);
  const uint32_t my_flags = bitmap_->flags();
  // The split instant: `current`, or `bitmap` once the image was opened
  // read-write (open-rw gives this copy a generation of its own).
  const Generation mine = bitmap_->generation();
  bool knows_split = volume_internal::holds_id(peer_state_.gen, mine.current) ||
                     volume_internal::holds_id(peer_state_.gen, mine.bitmap);
  const uint32_t peer_flags = peer_state_.flags;
  if ((my_flags & kFlagCopyUnknown) &&
      ((plan.kind == link::Plan::kFull && (peer_flags & (kFlagCopyUnknown | kFlagUnpaired))) ||
       (plan.kind == link::Plan::kAdopt && !(peer_flags & kFlagAssertIdentical)))) {
    // Neither copy has a known history: a new pair on disks that hold data,
    // or both nodes' metadata lost (after a failover the volume file's
    // `primary` may be the stale node). Nothing says which copy is current:
    // the first sync waits for the operator's word, as DRBD's first
    // `primary --force` does.
    std::string why = first_sync_refusal(peer_.name, self_.name,
                                         (my_flags & peer_flags & kFlagUnpaired) != 0) +
                      "; nothing was overwritten";
    // (A warning: on a new pair over used disks this is a setup step.)
    if (volume_internal::new_reason(copy_refusal_why_, why))
      MLOG_WARN("volume '%s': %s", cfg_.name.c_str(), why.c_str());
    return session_error(s, why, false, kCopyUnknownRetryMs, ECANCELED);
  }
  if (plan.kind == link::Plan::kFull && (my_flags & kFlagCopyUnknown) &&
      !(my_flags & kFlagCopyNotNewer) && !(peer_flags & kFlagFullSyncNeeded)) {
    // This node lost its metadata, the primary did not: the primary's
    // history goes on, this copy's is unknown. After a failover this copy
    // may be the only current one, and the volume file's `primary` the
    // stale node: never overwritten without the operator's word.
    std::string why = "node '" + self_.name + "' has no record of its copy's history (its "
                      "metadata is new or was lost) and its disk holds data: "
                      "nothing says whether that copy is older or newer than '" + peer_.name +
                      "''s (after a failover it may be the only current one), so nothing was "
                      "overwritten. If '" + peer_.name + "' holds the current data, restart '" +
                      self_.name + "' once with --discard-my-data. If '" + self_.name +
                      "' holds it, stop '" + peer_.name + "', run `mirrorctl promote --force` on '" +
                      self_.name + "', then start '" + peer_.name + "' once with --discard-my-data";
    if (volume_internal::new_reason(copy_refusal_why_, why))
      MLOG_ERROR("volume '%s': %s", cfg_.name.c_str(), why.c_str());
    return session_error(s, why, false, kCopyUnknownRetryMs, ECANCELED);
  }
  bool unknown_split = writes_into_copy(plan.kind) && (my_flags & kFlagSplit) &&
                       !(my_flags & kFlagInconsistent) && !knows_split;
  // The operator's rejoin holds for the later handshakes of this resync too
  // (the first is refused while before-resync-target runs).
  if (unknown_split && (h.flags & link::kFlagRetryNow)) split_released_ = true;
  if (unknown_split && !split_released_) {
    // A rejoin comes from a primary whose generations go back to this
    // image's. This one's do not: its metadata was lost while split, so it
    // no longer knows the pair is split. The image stays until the operator
    // says otherwise (rejoin on the primary: its PLAN then says "go").
    std::string why = "the split image on node '" + self_.name + "' is kept: the primary '" +
                      peer_.name + "' no longer knows of the split (its metadata was lost or "
                      "reset). To resync over the image, run `mirrorctl rejoin` on '" + peer_.name +
                      "'";
    if (volume_internal::new_reason(copy_refusal_why_, why))
      MLOG_WARN("volume '%s': %s", cfg_.name.c_str(), why.c_str());
    return session_error(s, why, false, kCopyUnknownRetryMs, ECANCELED);
  }
  if (plan.kind != link::Plan::kStandby && local_->writable()) {
    // The split ends: local clients may no longer change the image the
    // resync is about to overwrite.
    local_->set_writable(false);
    gate_.set_writable(false);
    if (on_export_mode) on_export_mode(true);
    MLOG_INFO("volume '%s': rejoin: the NBD export is read-only again", cfg_.name.c_str());
  }
  if (plan.kind != link::Plan::kStandby && local_->changes_in_flight())
    return session_error(s, "local writes still in flight; retrying the handshake");
  if (plan.kind != link::Plan::kStandby) {
    // Requests of an earlier session still in the disk's queue land before
    // this session's writes (on_plan_apply). Refused until then, with a
    // retry-after: a plan answered only once they land would hold the
    // primary's writes (its plan hold) for the whole handshake timeout, again
    // at every retry, for as long as the disk is stuck; refused, the primary
    // goes on alone, tracking its changes for the resync.
    if (std::string busy = earlier_requests(); !busy.empty()) {
      std::string why = busy + ": the plan with '" + peer_.name +
                        "' is answered once they have landed (refused until then; '" +
                        peer_.name + "' goes on alone meanwhile)";
      if (volume_internal::new_reason(landing_refusal_why_, why))
        MLOG_WARN("volume '%s': %s", cfg_.name.c_str(), why.c_str());
      return session_error(s, why, false, kLandingRetryMs, EAGAIN);
    }
    landing_refusal_why_.clear();
  }
  Generation g = bitmap_->generation();
  uint32_t flags = bitmap_->flags();
  bool resync = writes_into_copy(plan.kind);
  // What the resync may overwrite here: the primary's plan, and for a
  // union this copy's own changes too (sent back as DIRTY_RANGES).
  uint64_t bytes = plan.bytes;
  if (plan.kind == link::Plan::kUnion) bytes += bitmap_->dirty_bytes();
  if (plan.kind == link::Plan::kFull) bytes = cfg_.size;
  if (resync && bytes > 0 && handlers_->has_before() &&
      !(flags & (kFlagInconsistent | kFlagFullSyncNeeded))) {
    // This consistent copy is about to become a mix of old and new blocks:
    // nothing is written to it before before-resync-target (a snapshot)
    // exited 0. Not for a copy inconsistent already (a resync resumed): a
    // snapshot of it now would be of a torn image. Not for a resync of
    // nothing (the plan after a planned failover): nothing is overwritten.
    const char* name = plan.kind == link::Plan::kBitmap  ? "bitmap"
                       : plan.kind == link::Plan::kUnion ? "union"
                                                         : "full";
    uint64_t now = mono_ms();
    std::string wait = handlers_->before_resync(name, bytes, {g.current, g.bitmap, flags}, now,
                                                h.flags & link::kFlagRetryNow);
    // The handler logs its own start and end, not every handshake it
    // refuses; the primary comes back when the refusal may have changed.
    if (!wait.empty()) {
      // ECANCELED: it failed, the operator must act (rejoin --wait says so).
      uint32_t code = handlers_->failure().empty() ? EAGAIN : ECANCELED;
      return session_error(s, wait, false, handlers_->retry_after_ms(now), code);
    }
  }
  if (resync && on_image_changed && !(flags & (kFlagInconsistent | kFlagFullSyncNeeded))) {
    // This copy is about to stop being an image: the kernel device forgets
    // the blocks it cached of it first, while reads still succeed (the
    // drop's open also runs a partition scan the kernel may have pending).
    // Bounded (KernelDevice); the primary holds its writes meanwhile.
    std::weak_ptr<Session> weak = find_session(s);
    on_image_changed([this, weak, h, plan] {
      auto sp = weak.lock();
      if (!sp || sp->gone || sp->conn->closing()) return;
      on_plan_apply(sp.get(), h, plan);
    });
    return;
  }
  on_plan_apply(s, h, plan);
}

void Volume::on_plan_apply(Session* s, const link::Header& h, const link::Plan& plan) {
  // Time may have passed (the cache drop): a role change, another session,
  // a local change started meanwhile.
  if (role_ != Role::kSecondary || !applier_ || active_)
    return session_error(s, "the node changed while the plan waited; retrying", false);
  if (plan.kind != link::Plan::kStandby && local_->changes_in_flight())
    return session_error(s, "local writes still in flight; retrying the handshake");
  const Generation prev_gen = bitmap_->generation();
  const uint32_t prev_flags = bitmap_->flags();
  Generation g = prev_gen;
  uint32_t flags = prev_flags;
  // The primary's plan places this copy in the pair's history again.
  if (plan.kind != link::Plan::kStandby) {
    flags &= ~(kFlagsCopyUnknown | kFlagUnpaired | kFlagAssertIdentical);
    split_released_ = false;
  }
  switch (plan.kind) {
    case link::Plan::kInSync:
      flags &= ~kFlagSplit;
      break;
    case link::Plan::kStandby:
      flags |= kFlagSplit;  // the primary is split: keep our image as it is
      break;
    case link::Plan::kAdopt:
      g.current = plan.gen.current;
      g.bitmap = 0;
      flags &= ~(kFlagFullSyncNeeded | kFlagInconsistent);
      break;
    case link::Plan::kBitmap:
      // A resync of a read-write split interrupted earlier: our changes
      // are still to be copied back.
      send_dirty_ranges(s);
      flags |= kFlagInconsistent;
      flags &= ~kFlagSplit;
      break;
    case link::Plan::kUnion:
      // Our own changes since the split are copied over from the primary.
      // They stay marked here until SYNC_DONE, so an interrupted resync
      // sends them again.
      send_dirty_ranges(s);
      [[fallthrough]];
    case link::Plan::kFull:
      flags &= ~kFlagPeerDiskFailed;  // this copy is being replaced
      if (g.current != 0) g.history[0] = g.current;
      g.current = plan.gen.bitmap;
      g.bitmap = 0;
      flags |= kFlagInconsistent;
      flags &= ~(kFlagFullSyncNeeded | kFlagSplit);
      break;
  }
  bitmap_->set_generation(g);
  bitmap_->set_flags(flags);
  MLOG_INFO("volume '%s': primary '%s' connected: %s", cfg_.name.c_str(), peer_.name.c_str(),
            plan_name(plan.kind));
  uint64_t id = h.id;
  std::weak_ptr<Session> weak = find_session(s);
  // A standby plan writes nothing into this copy: it waits for no earlier
  // request (a later plan that writes, or a promote, is refused until they
  // have landed). Waiting held the primary's writes (a split primary's) for
  // the whole handshake timeout, at every retry, while a read-write split
  // image's own write was stuck in the disk's queue.
  const bool landing = plan.kind != link::Plan::kStandby;
  bitmap_->commit(FnDone::make([this, weak, id, prev_gen, prev_flags, g, flags,
                                landing](int err) {
    if (err) {
      // Not recorded: put back what the plan changed, so the next STATE
      // tells the primary what is on disk. A generation reported but never
      // recorded moves the primary on to a base this copy will not know
      // after a restart ("unrelated data", for a fault on this node).
      bitmap_->undo_header_change(prev_gen, g.current, prev_flags, flags);
    }
    auto sp = weak.lock();
    if (!sp || sp->gone) return;
    Session* s = sp.get();
    link::Header r;
    r.type = link::Type::kReply;
    r.id = id;
    r.length = err ? uint32_t(-err) : 0;
    if (err) return session_error(s, "cannot write metadata");
    auto reply = [this, weak, r] {
      auto sp = weak.lock();
      if (!sp || sp->gone || sp->conn->closing()) return;
      // A role change or another session while the reply waited.
      if (role_ != Role::kSecondary || !applier_ || active_) {
        return session_error(sp.get(), "the node changed while the plan waited; retrying", false);
      }
      Session* s = sp.get();
      active_ = s;
      ++session_serial_;
      s->phase = Session::Phase::kActive;
      // The primary's silence is counted from now: the plan's wait (the
      // in-use check, the cache drop, reads finishing) is not silence.
      s->last_rx_ms = mono_ms();
      handlers_->copy_changed();  // mirrored writes may reach it from now on
      peer_reached();  // a refusal of an earlier handshake is history
      split_brain_ = false;  // the primary's plan resolves it (after discard-my-data)
      applier_->attach(s->conn.get(), s->peer_features);
      s->conn->send(r);
    };
    const bool usable = local_->image_usable();
    if (usable && (!landing || earlier_requests().empty())) return reply();
    // A resync may write into this copy from the reply on: client reads of
    // the image it replaces, issued before the flags changed (new ones
    // fail), finish first. Bounded (tick()): the primary holds its writes.
    // Requests of an earlier session still in the disk's queue land first
    // too, with no bound: the primary sends none that overlap them within
    // a session, but nothing orders them against the next session's (one
    // landing after the resync of its range would undo it).
    if (plan_reply_) {
      auto old = std::exchange(plan_reply_, nullptr);
      if (!old->landing || earlier_requests().empty()) old->send();  // else its session times out
    }
    plan_reply_ = std::make_unique<PlanReply>();
    uint64_t pid = plan_reply_->id = ++plan_reply_ids_;
    plan_reply_->waiting = usable ? 0 : 1;
    plan_reply_->landing = landing;
    plan_reply_->deadline_ms = mono_ms() + volume_internal::kPlanQuiesceMs;
    plan_reply_->send = std::move(reply);
    if (!usable) local_->when_reads_drained([this, pid] { plan_reply_step(pid); });
    plan_reply_try();
  }));
}

void Volume::plan_reply_step(uint64_t id) {
  if (!plan_reply_ || plan_reply_->id != id || --plan_reply_->waiting > 0) return;
  plan_reply_try();
}

void Volume::plan_reply_try() {
  if (!plan_reply_ || plan_reply_->waiting > 0) return;
  if (std::string busy = plan_reply_->landing ? earlier_requests() : ""; !busy.empty()) {
    if (!std::exchange(plan_reply_->logged, true))
      MLOG_WARN("volume '%s': %s: the plan with '%s' is answered once they have landed",
                cfg_.name.c_str(), busy.c_str(), peer_.name.c_str());
    return;
  }
  std::exchange(plan_reply_, nullptr)->send();
}

std::string Volume::earlier_requests() const {
  uint64_t n = applier_ ? applier_->busy() : 0;
  bool others = false;
  for (const auto& a : retired_appliers_) n += a->busy();
  for (const auto& r : retired_replicators_) others = others || r->local_in_flight();
  // A read-write split image's own writes (open-rw).
  const uint64_t own = role_ == Role::kSecondary ? local_->changes_in_flight() : 0;
  if (n == 0 && !others && own == 0) return "";
  if (n == 0 && own != 0)
    return std::to_string(own) + (own == 1 ? " write" : " writes") +
           " of this node's read-write split image (open-rw) still on their way to its disk";
  if (n == 0) return "writes of this node's time as primary are still on their way to its disk";
  return std::to_string(n) + (n == 1 ? " request" : " requests") + " of an earlier session with '" +
         peer_.name + (n == 1 ? "' is still on its way" : "' are still on their way") +
         " to this node's disk (a slow or stuck disk)";
}

void Volume::end_plan_hold(Session* s) {
  if (s->plan_hold == nullptr) return;
  std::exchange(s->plan_hold, nullptr)->end_plan_hold();
}

void Volume::send_dirty_ranges(Session* s) {
  std::vector<link::Range> ranges;
  uint64_t off = 0, len = 0, from = 0;
  auto send = [&] {
    s->conn->send_owned(
        link::encode_message({.type = link::Type::kDirtyRanges}, link::encode_ranges(ranges)));
    ranges.clear();
  };
  while (bitmap_->next_dirty(from, uint64_t(1) << 40, &off, &len)) {
    ranges.push_back({off, len});
    from = off + len;
    if (ranges.size() == 4096) send();
  }
  if (!ranges.empty()) send();
}

void Volume::activate(Session* s) {
  active_ = s;
  ++session_serial_;
  s->phase = Session::Phase::kActive;
  peer_reached();
  if (s->plan == link::Plan::kInSync && bitmap_->dirty_bytes() != 0) {
    // Never claim "synchronized" over regions the peer lacks: a change
    // marked after this plan was decided. Reconnect; the moved generation
    // makes the next plan a resync of exactly those regions.
    end_plan_hold(s);
    active_ = nullptr;
    MLOG_WARN("volume '%s': %llu bytes changed while the handshake with '%s' ran; "
              "reconnecting to resync them",
              cfg_.name.c_str(), static_cast<unsigned long long>(bitmap_->dirty_bytes()),
              peer_.name.c_str());
    return session_error(s, "changes arrived during the handshake; reconnecting to resync them");
  }
  // The peer adopted the full plan's base: an interrupted full sync resumes
  // as a bitmap resync from here on (durable with the resync's next commit;
  // a crash before it plans FULL again, which copies more, never less).
  if (s->plan == link::Plan::kFull)
    bitmap_->set_flags(bitmap_->flags() & ~kFlagFullSyncNeeded);
  if (s->plan != link::Plan::kStandby) {
    const uint32_t before = bitmap_->flags();
    confirm_copy("the pair agreed a plan");
    // Durable at once: a crash before the next commit would bring back
    // kFlagUnpaired (and kFlagAssertIdentical) into a later pairing.
    if (bitmap_->flags() != before) bitmap_->commit(nullptr);
  }
  rejoin_pending_ = false;  // the plan after the rejoin is adopted
  if (s->plan == link::Plan::kStandby) {
    replicator_->attach_split(s->conn.get());
  } else {
    replicator_->attach(s->conn.get(), s->plan, s->peer_features);
  }
  // Only now: released before attach, the held writes would be issued
  // while not mirroring, marked dirty under an "in sync" plan and never
  // copied, with the pair reporting synchronized.
  end_plan_hold(s);
}

}  // namespace mirror
