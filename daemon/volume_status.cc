// What a volume reports about itself: `mirrorctl status` (status()) and the
// stop's exit status (acked_writes_at_risk()). Sessions, the link and the
// stop are in volume.cc.
#include "log.h"
#include "volume.h"
#include "volume_internal.h"

namespace mirror {

std::string Volume::acked_writes_at_risk() const {
  // A detached disk (on-io-error = detach) is not where acknowledged writes
  // live: they are on the peer's copy (the requests this disk failed
  // completed from the peer's answer, later ones went to it alone), and
  // this copy is never served again (kFlagDiskFailed: a restart refuses
  // it). What may be lost is what that copy had not flushed when this node
  // last reached it (the stop's own flush goes there first).
  if (bitmap_->flags() & kFlagDiskFailed) {
    if (replicator_ && replicator_->only_copy_unflushed())
      return "diskless: the peer's copy, the only one, has not confirmed a flush of every "
             "acknowledged write (the link was lost first): they are gone if it lost power";
    return "";
  }
  if (file_ && file_->refusing_writes())
    return "after a failed sync: acknowledged writes may be lost";
  return "";
}

VolumeStatus Volume::status() const {
  VolumeStatus st;
  st.volume = cfg_.name;
  st.node = self_.name;
  st.peer = peer_.name;
  st.nbd_tls = self_.nbd_tls;
  st.nbd_tls_client_certs = !self_.nbd_tls_ca.empty();
  st.role = role_;
  st.size = cfg_.size;
  st.dirty_bytes = bitmap_->dirty_bytes();
  st.generation = bitmap_->generation().current;
  // (A copy of unknown history, kFlagCopyUnknown, may be untouched or torn
  // by a resync whose record was lost: not known consistent. The table
  // and promote say "unknown", not "inconsistent".)
  st.consistent = !(bitmap_->flags() & (kFlagInconsistent | kFlagFullSyncNeeded)) ||
                  role_ == Role::kPrimary;
  st.link = active_ ? "connected" : (sessions_.empty() ? "disconnected" : "connecting");
  if (active_) {
    st.link_up = true;
    const TlsChannel* tls = active_->conn->tls();
    st.link_tls = tls && tls->established();
    if (st.link_tls) st.tls = tls->info();
  }
  st.last_error = last_error_;
  st.copy_history_unknown = bitmap_->flags() & kFlagCopyUnknown;
  st.split = bitmap_->flags() & kFlagSplit;
  st.split_unix_ms = split_unix_ms_;
  st.split_drain_us = split_drain_us_;
  st.holding = replicator_ && replicator_->held();
  st.demoting = demote_ != nullptr;
  st.discarding = discard_ != nullptr;
  if (active_ && peer_known_)
    st.peer_role = peer_state_.role == link::State::kPrimary ? "primary" : "secondary";
  st.writable = gate_.writable();
  st.before_resync_target = handlers_->before_status();
  st.after_resync_target = handlers_->after_status();
  st.backup_point = changes_->generation().current;
  st.changed_since_backup = changes_->dirty_bytes();
  if (replicator_) {
    st.resync = replicator_->progress();
    st.verify = replicator_->verify_progress();
    st.resynced_bytes_total = replicator_->resynced_bytes_total();
    st.resync_same_bytes_total = replicator_->resync_same_bytes_total();
    st.local_io_errors = replicator_->local_errors();
    st.reads_from_peer = replicator_->reads_from_peer();
    st.read_repairs = replicator_->read_repairs();
    st.trim = replicator_->trim_state();
    switch (replicator_->disk_state()) {
      case Replicator::DiskState::kOk: break;
      case Replicator::DiskState::kDetaching: st.disk = "detaching"; break;
      case Replicator::DiskState::kDiskless: st.disk = "diskless"; break;
    }
  } else {
    st.peer_disk_failed = bitmap_->flags() & kFlagPeerDiskFailed;
    if (applier_->trim_kept()) st.trim = "local-store-cannot-punch";
    st.resynced_bytes_total = applier_->resync_bytes_received();
    st.local_io_errors = applier_->local_errors();
    // Until a resync heals it, the failing disk is what the operator must see.
    if (!applier_->last_local_error().empty()) st.last_error = applier_->last_local_error();
    // A failed before-resync-target holds the resync back until it succeeds.
    else if (!handlers_->failure().empty()) st.last_error = handlers_->failure();
  }
  if (split_brain_) {
    st.state = "split-brain";
  } else if (st.split) {
    st.state = "split";
  } else if (role_ == Role::kPrimary) {
    switch (replicator_->state()) {
      case Replicator::LinkState::kSynced:
        st.state = replicator_->diskless() ? "diskless" : "synchronized";
        break;
      case Replicator::LinkState::kResyncing: st.state = "resyncing"; break;
      case Replicator::LinkState::kSplit: st.state = "split"; break;
      case Replicator::LinkState::kDisconnected:
        st.state = st.dirty_bytes ? "degraded" : "disconnected";
        break;
    }
    if (!replicator_->last_error().empty() && st.last_error.empty())
      st.last_error = replicator_->last_error();
  } else {
    if (!active_) {
      st.state = "disconnected";
    } else if (peer_state_.role != link::State::kPrimary) {
      st.state = "standby";  // both secondary: nothing is mirrored
    } else {
      st.state = st.consistent ? "synchronized" : "resyncing";
    }
  }
  return st;
}

}  // namespace mirror
