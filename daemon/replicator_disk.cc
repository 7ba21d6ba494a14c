// Replicator: this node's disk fails (DRBD's on-io-error = detach). When the
// local leg of a change fails with an error of the disk itself (EIO, or a
// device gone or read-only), while the copies are in sync, the primary stops
// using its disk and the peer's copy serves every request from then on: the
// application sees no error, as with a failed leg of a RAID1.
//
// What makes that safe is the order (rule 6):
//  1. new writes wait (a plan hold), and the failed requests wait;
//  2. this node's metadata records kFlagDiskFailed (durably): restarted, it
//     refuses to serve its outdated copy;
//  3. the peer records (DETACH, answered once durable) that it holds the
//     only current copy: its generation moves on from the one both copies
//     share and it sets kFlagPeerDiskFailed, so no later handshake can take
//     this node's copy for an up-to-date one, and it may be promoted;
//  4. only then do the failed requests complete from the peer's result, and
//     new ones go to the peer alone.
// If a step fails (the metadata cannot be written, the link is lost, the
// peer refuses), nothing was acknowledged from the peer's copy alone: the
// disk stays in use and the failed requests get their errors, as with
// on-io-error = pass-on.
//
// While detached, a lost link fails every request with EIO (there is no
// copy here), and the next session must be with that same peer, unchanged
// (Volume::plan_as_primary). The way back is the operator's: promote the
// peer, replace this disk, start this node with --discard-my-data.
#include <cerrno>
#include <cstring>

#include "log.h"
#include "replicator.h"
#include "replicator_internal.h"

namespace mirror {

namespace {

// Errors that mean the disk (or the device under the file) failed, not the
// request: a full filesystem (ENOSPC) is the operator's to fix, and the
// peer's copy would fill up the same way.
bool disk_failure(int err) {
  err = err < 0 ? -err : err;
  return err == EIO || err == EROFS || err == ENODEV || err == ENXIO;
}

}  // namespace

bool Replicator::can_detach() const {
  return cfg_.on_io_error == OnIoError::kDetach && link_ && !link_->closing() &&
         state_ == LinkState::kSynced && peer_detach_ && peer_reads_ &&
         bitmap_.dirty_bytes() == 0 && !bitmap_.failed();
}

bool Replicator::absorb_disk_error(Op* op, int err) {
  if (!disk_failure(err)) return false;
  if (!op->modifies() && op->kind != Kind::kFlush) return false;
  // The peer's leg must carry the request: sent while mirroring, and not
  // failed there (if it fails later, the detach fails with the link).
  if (op->degraded || !op->sent_to_peer || op->peer_err) return false;
  if (disk_ == DiskState::kOk) {
    if (!can_detach()) return false;
    begin_detach(op, err);
  }
  op->disk_err = err;
  return true;
}

void Replicator::begin_detach(const Op* op, int err) {
  disk_ = DiskState::kDetaching;
  detach_sent_ = false;
  detach_confirmed_ = false;
  const char* what = op->kind == Kind::kFlush  ? "flushing"
                     : op->kind == Kind::kTrim ? "trimming"
                     : op->kind == Kind::kZero ? "zeroing"
                                               : "writing";
  disk_error_ = std::string("local disk: ") + what + " " + std::to_string(op->off) + "+" +
                std::to_string(op->len) + " failed: " + strerror(err < 0 ? -err : err);
  MLOG_ERROR("%s; detaching this disk (on-io-error = detach): the peer's copy will serve "
             "every request",
             disk_error_.c_str());
  if (verify_.running) verify_stop("cancelled: this node's disk failed");
  ++plan_holds_;  // new writes wait until the detach is recorded (or fails)
  Op* d = new_op(Kind::kDetach, 0, 0, nullptr);
  bitmap_.set_flags(bitmap_.flags() | kFlagDiskFailed);
  d->meta_pending = true;
  bitmap_.commit(&d->meta);
}

void Replicator::detach_step(Op* op, int err) {
  if (!op->sent_to_peer) {  // this node's metadata commit
    op->meta_pending = false;
    if (err) return detach_end(op, std::string("cannot record it in the metadata (") +
                                       strerror(-err) + ")");
    // Checked again: the copies must still be in sync, nothing marked the
    // peer lacks, the generation where both copies share it.
    if (!link_ || link_->closing()) return detach_end(op, "the link to the peer was lost");
    if (state_ != LinkState::kSynced || bitmap_.dirty_bytes() != 0 ||
        bitmap_.generation().bitmap != 0)
      return detach_end(op, "the copies are no longer in sync");
    detach_sent_ = true;
    return send_to_peer(op);
  }
  op->peer_pending = false;  // the peer's REPLY
  if (err) return detach_end(op, std::string("the peer could not record it (") +
                                     strerror(err < 0 ? -err : err) + ")");
  detach_end(op, "");
}

void Replicator::detach_end(Op* op, const std::string& failure) {
  free_op(op);
  const bool resend = disk_ == DiskState::kDiskless;
  if (failure.empty()) {
    disk_ = DiskState::kDiskless;
    detach_confirmed_ = true;
    last_error_ = disk_error_ + "; detached: every request is served by the peer's copy";
    MLOG_ERROR("this node's disk is detached (diskless): reads and writes go to the peer's "
               "copy, the only current one. Promote the peer, replace this disk, then start "
               "this node with --discard-my-data");
  } else if (detach_sent_ && !link_) {
    // The peer may have recorded that it holds the only current copy: this
    // disk must never serve again. Nothing was acknowledged from it since
    // the failure (new writes waited), so the peer's copy has everything.
    disk_ = DiskState::kDiskless;
    last_error_ = disk_error_ + "; detached, but " + failure +
                  " before the peer confirmed it: every request fails until the peer is back";
    if (!resend)
      MLOG_ERROR("%s: %s before the peer confirmed the detach: this disk stays detached; "
                 "requests fail until the peer is back",
                 disk_error_.c_str(), failure.c_str());
  } else if (resend) {
    // Writes fail until a session's DETACH is confirmed (diskless_dispatch);
    // a new session tries again.
    MLOG_ERROR("the peer did not record the detach of this node's failed disk (%s): this disk "
               "stays detached; writes fail until the peer records it",
               failure.c_str());
    if (link_) peer_failed("the peer did not record the detach of this node's failed disk");
  } else {
    disk_ = DiskState::kOk;
    MLOG_ERROR("%s: not detached: %s; the client gets this disk's errors", disk_error_.c_str(),
               failure.c_str());
    // Nothing relied on the peer's copy alone: this node's copy is as good
    // as it was (the failed requests fail), and a restart may serve it.
    bitmap_.set_flags(bitmap_.flags() & ~kFlagDiskFailed);
    bitmap_.commit(nullptr);
    // Regions marked while the detach ran (a TRIM one copy kept) were not
    // resynced then: now they are.
    if (bitmap_.dirty_bytes() != 0) resync_again();
  }
  for (Op* w : std::exchange(detach_waiters_, {})) maybe_complete(w);
  end_plan_hold();
}

void Replicator::detach_resend() {
  ++plan_holds_;
  Op* d = new_op(Kind::kDetach, 0, 0, nullptr);
  MLOG_WARN("sending the detach of this node's failed disk to the peer again");
  send_to_peer(d);
}

void Replicator::diskless_dispatch(Op* op) {
  op->diskless = true;
  op->local_pending = false;
  // Reads may come from the peer's copy at once: it holds every
  // acknowledged write. Changes only once the peer confirmed it holds the
  // only current copy.
  if (!mirroring() || (op->kind != Kind::kRead && !detach_confirmed_)) {
    // No copy here, none reachable. Deferred: this may run inside unblock().
    return defer([this, op] {
      op->peer_err = ENOTCONN;
      maybe_complete(op);
    });
  }
  send_to_peer(op);
}

}  // namespace mirror
