// A node's metadata at start (prepare_metadata): the role, the crash
// recovery of the activity log, what a reset or new file means for this
// copy (docs/bitmap-format.md, "Loading"), and the end of a copy of unknown
// history (confirm_copy). Sessions and plans are in volume.cc and
// volume_plan.cc.
#include "log.h"
#include "volume.h"
#include "volume_internal.h"

namespace mirror {

Status Volume::prepare_metadata(const BitmapOpenReport& report) {
  Bitmap& bm = *bitmap_;
  if (report.full_resync && !report.created) MLOG_WARN("%s", report.reason.c_str());
  for (const auto& w : report.warnings) MLOG_WARN("metadata: %s", w.c_str());
  uint32_t flags = bm.flags();
  Generation g = bm.generation();
  if (report.full_resync && !report.created && report.recorded_primary) {
    // Reset (foreign identity, maps missing), but the superblock said which
    // role this copy had: after a failover the volume file's `primary` names
    // the stale node, and a full sync from it would run the wrong way.
    role_ = *report.recorded_primary ? Role::kPrimary : Role::kSecondary;
    MLOG_INFO("metadata %s reset; this node starts as %s, the role its metadata recorded",
              bm.path().c_str(), role_ == Role::kPrimary ? "primary" : "secondary");
  } else if (report.created || report.full_resync) {
    // New or unreadable metadata: the role recorded in it is unknown, so the
    // volume file's initial primary decides. If that is wrong (after a
    // failover), the peer's STATE shows two primaries and the pair refuses
    // to sync instead of overwriting anything.
    role_ = cfg_.primary == self_.name ? Role::kPrimary : Role::kSecondary;
    MLOG_INFO("metadata %s %s; this node starts as %s (the volume file's primary is '%s')",
              bm.path().c_str(), report.created ? "created" : "reset",
              role_ == Role::kPrimary ? "primary" : "secondary", cfg_.primary.c_str());
  } else {
    role_ = (flags & kFlagPrimary) ? Role::kPrimary : Role::kSecondary;
  }
  if (report.created) flags |= kFlagUnpaired;
  // A reset keeps the recorded role, not the generations. One that recorded
  // "secondary" holds nothing newer than its peer (a secondary's own writes
  // are tracked as disposable), but nothing says the peer's copy is the
  // pair's either (a replaced primary disk): kFlagCopyNotNewer. One that
  // recorded "primary" may be the stale node of a forced failover.
  const bool recorded_secondary = report.recorded_primary && !*report.recorded_primary;
  if ((report.created || report.full_resync) && !opts_.discard_my_data &&
      volume_internal::may_hold_data(file_->fd(), cfg_.size)) {
    // Nothing says whether this copy is older or newer than the peer's.
    flags |= kFlagCopyUnknown;
    if (recorded_secondary && !report.created) {
      flags |= kFlagCopyNotNewer;
      MLOG_WARN("metadata %s was reset, and %s holds data: this copy (a secondary's) takes a "
                "full copy from a primary with a history; from one whose history is unknown "
                "too, only once the operator chooses",
                bm.path().c_str(), self_.backing.c_str());
    } else if (role_ == Role::kSecondary)
      MLOG_WARN("metadata %s %s, and %s holds data: nothing records this copy's history, so a "
                "full sync into it from a primary with a history waits for the operator "
                "(--discard-my-data)",
                bm.path().c_str(), report.created ? "is new" : "was unreadable",
                self_.backing.c_str());
  }
  if (role_ == Role::kPrimary && (flags & kFlagCopyUnknown)) {
    // After a failover this copy may be the stale one: the application
    // must not build on it before the pair agrees a plan (the peer then
    // refuses whatever would overwrite a newer copy) or the operator says
    // it is the current one.
    unconfirmed_ = true;
    MLOG_WARN("volume '%s': this node is primary by the volume file, but nothing records its "
              "copy's history (metadata %s new or lost, and %s holds data: a new pair on a "
              "disk that is not empty, or lost metadata): it serves reads only until '%s' "
              "connects and the pair agrees a plan, or `mirrorctl promote --force` here takes "
              "this copy as the current one",
              cfg_.name.c_str(), bm.path().c_str(), self_.backing.c_str(), peer_.name.c_str());
  }
  if ((flags & kFlagDiskFailed) && !opts_.discard_my_data)
    return Error{EIO, "metadata " + bm.path() + ": this node's disk failed and was detached "
                      "(on-io-error = detach): its copy is outdated and '" + peer_.name +
                      "' holds the only current one. Promote '" + peer_.name +
                      "' (`mirrorctl promote` there; it needs --force only if it never learned "
                      "of this failure), replace this disk, then start this node once with "
                      "--discard-my-data: it becomes secondary and takes a full copy"};
  if ((flags & kFlagPeerDiskFailed) && opts_.discard_my_data)
    return Error{EINVAL, "--discard-my-data refused: metadata " + bm.path() + " records that '" +
                         peer_.name + "''s disk failed and was detached, so this node's copy "
                         "is the only current one: discarding it would leave the volume with "
                         "none. Start this node without --discard-my-data and promote it "
                         "(`mirrorctl promote`); the other node then takes a full copy once "
                         "its disk is replaced (--discard-my-data there)"};
  if (opts_.discard_my_data) {
    // Persisted: a restart before the copy finished still takes the copy.
    role_ = Role::kSecondary;
    flags = volume_internal::discard_my_data_flags(flags);
    MLOG_WARN("volume '%s': --discard-my-data: this node is secondary and its data will be "
              "overwritten by a full copy from '%s'",
              cfg_.name.c_str(), peer_.name.c_str());
  }
  if (report.full_resync && !report.created) open_warning_ = report.reason;
  if (role_ == Role::kPrimary) {
    if (report.created && cfg_.initial_sync == InitialSync::kSkip) {
      bm.clear_all_dirty();
      flags &= ~kFlagFullSyncNeeded;
    }
    if (!report.created && !(flags & kFlagCleanShutdown)) {
      // Writes may have been in flight at the crash: their extents differ.
      uint64_t n = bm.active_to_dirty();
      if (n) MLOG_WARN("unclean shutdown: %llu bytes of recently written regions will be resynced",
                       static_cast<unsigned long long>(n));
      // Durable before the activity log is cleared: one commit is not
      // atomic across blocks (docs/bitmap-format.md).
      if (auto st = bm.flush_sync(); !st) return st.error();
    }
    bm.clear_active(0, cfg_.size);
    if (g.current == 0) g.current = random_id();
    if (opts_.force_full_sync) {
      bm.set_all_dirty();
      flags |= kFlagFullSyncNeeded;
    }
    if (bm.dirty_bytes() > 0 && g.bitmap == 0 && !(flags & kFlagFullSyncNeeded)) {
      g.bitmap = g.current;
      g.current = random_id();
    }
    flags |= kFlagPrimary;
  } else {
    // A secondary whose dirty map holds its own changes (open-rw, or the
    // victim of discard-my-data, a primary until then): after a crash its
    // activity log may cover writes whose dirty bits never became durable
    // (a torn discard commit).
    if ((flags & kFlagDisposableLocalWrites) && !report.created &&
        !(flags & kFlagCleanShutdown)) {
      uint64_t n = bm.active_to_dirty();
      if (n) {
        MLOG_WARN("unclean shutdown: %llu bytes of this node's recently written regions will be "
                  "resynced", static_cast<unsigned long long>(n));
        if (auto st = bm.flush_sync(); !st) return st.error();
      }
    }
    bm.clear_active(0, cfg_.size);
    // A secondary's dirty map records only its own writes during a split
    // (opened read-write); otherwise it means nothing.
    if (!(flags & kFlagDisposableLocalWrites)) bm.clear_all_dirty();
    flags &= ~kFlagPrimary;
  }
  flags &= ~kFlagCleanShutdown;  // until we stop cleanly
  bm.set_generation(g);
  bm.set_flags(flags);
  return bm.flush_sync();
}

void Volume::confirm_copy(const char* why) {
  // (Unpaired too: an operator's word, like a plan, is this copy's history.)
  bitmap_->set_flags(bitmap_->flags() &
                     ~(kFlagsCopyUnknown | kFlagUnpaired | kFlagAssertIdentical));
  if (!unconfirmed_) return;
  unconfirmed_ = false;
  gate_.set_writable(true);
  if (on_export_mode) on_export_mode(false);
  MLOG_INFO("volume '%s': %s: this node's copy is the pair's current one; writable",
            cfg_.name.c_str(), why);
  if (on_copy_confirmed) on_copy_confirmed();
}

}  // namespace mirror
