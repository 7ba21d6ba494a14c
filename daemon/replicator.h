// Replicator: the primary's Backend. Every modification goes to the local
// backend and, in parallel, to the peer over the link; the caller's io_done
// runs only when both copies have it (DRBD's protocol C) or, when the peer
// cannot take it, once the region is marked dirty on stable storage.
//
// Rules this file keeps (docs/replication-protocol.md has the argument):
//  1. Activity log: before a write is issued to either copy, its activity
//     extent is on stable storage. A primary that crashes marks every active
//     extent dirty at restart, so writes in flight are resynced.
//  2. Dirty bits: while the peer is not mirroring (disconnected, split), a
//     write's dirty bit is durable before the write is acknowledged.
//  3. Link loss: every active extent is marked dirty (writes the peer had
//     acknowledged but not yet flushed may be lost if it crashed too), and
//     the generation moves on, before any failed write is acknowledged.
//  4. Overlapping requests never run at once, so both copies apply them in
//     the same order; resync copies take part in the same interlock, so a
//     resync never overwrites newer mirrored data.
//  5. Dirty bits are cleared only after the resynced data was flushed on the
//     peer.
//
//  6. Diskless (on-io-error = detach): when this node's disk fails a change
//     while the copies are in sync, the failure and this node's outdated
//     copy are recorded on both nodes' metadata before any request relies
//     on the peer's copy alone; from then on every request goes to the peer.
//
// Code: replicator.cc (the mirrored-write path), replicator_resync.cc (the
// resync engine), replicator_link.cc (attach, link loss, split, the tick),
// replicator_read.cc (reads and their repair), replicator_disk.cc (detaching
// a failed disk).
//
// Thread: everything runs on the Loop's thread.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backend.h"
#include "bitmap.h"
#include "buffer.h"
#include "config.h"
#include "link_codec.h"
#include "link_conn.h"
#include "uring.h"

namespace mirror {

struct ResyncProgress {
  bool running = false;
  uint64_t total_bytes = 0;   // dirty when this resync started
  uint64_t done_bytes = 0;    // copied and flushed on the peer
  uint64_t same_bytes = 0;    // found identical on the peer so far, not sent
  uint64_t rate_bps = 0;      // recent copy rate
  uint64_t eta_seconds = 0;
};

// Online verify (mirrorctl verify): the last run, or the one running.
struct VerifyProgress {
  uint64_t run = 0;  // 0: none since this process started
  bool running = false;
  uint64_t offset = 0, total_bytes = 0;  // the range verified
  uint64_t done_bytes = 0;               // compared so far
  uint64_t rate_bps = 0;                 // recent rate
  uint64_t out_of_sync_bytes = 0, out_of_sync_regions = 0;  // found, marked dirty
  // Read errors met (verify is also a scrub, as md's "repair"): chunks this
  // disk could not read that were rewritten from the peer's copy; that could
  // not be (part of them out of sync: their bytes were not compared); and
  // that the peer's disk could not read, marked dirty so that the resync
  // rewrites them there.
  uint64_t repaired_bytes = 0, unreadable_bytes = 0, peer_unreadable_bytes = 0;
  uint64_t started_unix_ms = 0, finished_unix_ms = 0;
  // "running", "completed", "cancelled", or "failed: why" (the link was lost).
  std::string result;
};

class Replicator final : public Backend {
 public:
  enum class LinkState { kDisconnected, kResyncing, kSynced, kSplit };
  // This node's disk (replicator_disk.cc): in use; failed, and its failure
  // being recorded on both nodes (new writes wait); or detached: the peer's
  // copy serves every request (DRBD's Diskless).
  enum class DiskState { kOk, kDetaching, kDiskless };

  Replicator(Loop& loop, Backend& local, Bitmap& bitmap, const VolumeConfig& cfg);
  ~Replicator() override;

  // Backend.
  uint64_t size() const override { return size_; }
  bool read_only() const override { return false; }
  bool can_trim() const override { return local_.can_trim(); }
  void read(uint64_t offset, uint32_t length, uint8_t* buf, IoDone* done) override;
  void write(uint64_t offset, uint32_t length, const uint8_t* buf, bool fua,
             IoDone* done) override;
  void flush(IoDone* done) override;
  void trim(uint64_t offset, uint32_t length, bool fua, IoDone* done) override;
  void zero(uint64_t offset, uint32_t length, ZeroFlags flags, IoDone* done) override;
  void cache(uint64_t offset, uint32_t length, IoDone* done) override;
  void block_status(uint64_t offset, uint32_t length, uint32_t max_extents,
                    std::vector<nbd::Extent>* out, IoDone* done) override;

  // The link: attach() once the handshake agreed on `plan` (the bitmap has
  // been prepared for it; `peer_features` are the peer's HELLO flags); the
  // Volume routes REPLY messages to on_reply and tells link_lost() when the
  // attached link closed (after it quiesced).
  void attach(LinkConn* link, link::Plan::Kind plan, uint16_t peer_features);
  void on_reply(const link::Header& h);
  void link_lost(const std::string& why);
  // Stop mirroring without losing the link's session (split). Writes from
  // now on are tracked in the bitmap. `done(0)` runs once every mirrored
  // write in flight has completed and the peer flushed: everything
  // acknowledged before is durable on the peer, nothing after is there.
  void freeze(std::function<void(int err)> done);

  // Rejoined or reconnected while split: the link is up but nothing is
  // mirrored until rejoin (attach with a resync plan).
  void attach_split(LinkConn* link);
  // The operator rejoined: once the split's session is gone (now, or when
  // it closes), the peer is away like any lost peer (kDisconnected: the
  // status says degraded, on-peer-loss applies) until a session attaches.
  void split_ended();
  // Consistency groups: while held, new writes wait (they are not issued);
  // release() lets them go. Requests already running are not affected.
  void hold();
  void release();
  // mirrord is stopping. Under fail-stop with the peer gone, the writes held
  // for it (and those that arrive meanwhile) end unanswered instead of
  // waiting for a peer the stop will not wait for: never acknowledged, they
  // are resent by the kernel to the next mirrord.
  void stop_requested();
  bool held() const { return holding_; }
  // From the moment a handshake decides its plan until attach: writes not
  // yet issued (new ones, and those still waiting for their activity-log
  // commit) wait, so that none is marked in the bitmap (moving the
  // generation) after the plan was decided. Counted: every begin is ended
  // once, after attach (so the held writes are mirrored) or when that
  // handshake fails.
  void begin_plan_hold() { ++plan_holds_; }
  void end_plan_hold();
  // Online resize (volume_resize.cc): new writes wait as during a plan hold
  // (queued, never failed; reads go on), and `drained()` runs once no write
  // is running any more: every write acknowledged before is on both copies
  // or marked dirty, none after has started. Ended by resume_writes(). Not
  // called inline.
  void pause_writes(std::function<void()> drained);
  void resume_writes() { end_plan_hold(); }
  // The volume is new_size bytes from now on (the bitmap grew already). With
  // new_area_dirty (the bitmap marked the new area dirty) the peer lacks
  // it: the generation moves on and, while synchronized, a resync copies it.
  void grow(uint64_t new_size, bool new_area_dirty);

  // Online verify (replicator_verify.cc): compares each region of
  // [offset, offset+length) with the peer's copy (VERIFY), chunk by chunk
  // through the overlap interlock, and marks every region that differs
  // dirty, so the resync engine copies this node's data over the peer's.
  // Regions already dirty are skipped. Needs a mirroring link (synchronized
  // or resyncing) whose peer understands VERIFY; one run at a time (EALREADY).
  Status verify_start(uint64_t offset, uint64_t length);
  // Stops the run (no more chunks; those in flight are ignored).
  void verify_stop(const std::string& result);
  const VerifyProgress& verify_progress() const { return verify_; }
  // The peer's VERIFY_REPLY (the Volume routes it here).
  void on_verify_reply(const link::Header& h, Buffer& payload);
  // The peer's READ_REPLY: its copy of a range this node's disk failed to
  // read (the Volume routes it here).
  void on_read_reply(const link::Header& h, Buffer& payload);

  LinkState state() const { return state_; }
  DiskState disk_state() const { return disk_; }
  // What failed on this disk ("" while it works).
  const std::string& disk_error() const { return disk_error_; }
  // This node's disk was detached in an earlier session of this process:
  // the peer that connects must be the one holding the only current copy
  // (its STATE shows kFlagPeerDiskFailed and this node's generation as its
  // base), and nothing is copied.
  bool diskless() const { return disk_ == DiskState::kDiskless; }
  // The peer answered this node's DETACH (in this process).
  bool detach_confirmed() const { return detach_confirmed_; }
  // This disk is given up and the peer, the only copy, has not flushed
  // every change acknowledged since (or the link was lost before it did):
  // they are gone if it loses power.
  bool only_copy_unflushed() const {
    return disk_abandoned() && (flush_poisoned_ || last_change_tick_ > flushed_tick_);
  }
  ResyncProgress progress() const;
  uint64_t dirty_bytes() const { return bitmap_.dirty_bytes(); }
  const std::string& last_error() const { return last_error_; }
  uint64_t writes_in_flight() const { return running_.size(); }
  // A change in the interlock is on its way to this node's disk (a write,
  // a trim, a zeroing, a read repair's rewrite; held ones are not issued
  // yet, and reads change nothing).
  bool local_in_flight() const;
  // Bytes copied by resyncs since this process started.
  uint64_t resynced_bytes_total() const { return resynced_total_; }
  // Of those, found identical on the peer and not sent (resync-checksums).
  uint64_t resync_same_bytes_total() const { return same_total_; }
  // The peer answered a request with an error (its disk failed) since the
  // last completed resync: a new session would likely fail the same way.
  bool peer_io_error() const { return peer_io_error_; }
  // Client requests and resync reads the local disk failed, since start.
  uint64_t local_errors() const { return local_errors_; }
  // Client reads the local disk failed that the peer's copy answered, and of
  // those, the ones whose range was rewritten here from it (md's corrected
  // read errors), since start.
  uint64_t reads_from_peer() const { return reads_from_peer_; }
  uint64_t read_repairs() const { return read_repairs_; }
  // status "trim": whether a client's TRIM changes the copies now.
  const char* trim_state() const {
    return !trim_local_ok_                 ? "local-store-cannot-punch"
           : mirroring() && !trim_peer_ok_ ? "peer-store-cannot-punch"
                                           : "applied";
  }

  // Periodic work (timeouts, rate limiting, activity-log eviction): call
  // every ~100 ms.
  void tick(uint64_t now_ms);
  // The role changed (demote, discard-my-data): no new request comes, and
  // the Volume closes the link. Forgets the link (so a late completion never
  // touches it) and the pings waiting on it, and calls back no more; what
  // still runs finishes on the local copy. Requests the peer never answered
  // (none after a clean demote) are handled as on a lost link.
  void retire();
  // Nothing of this replicator is in flight (no I/O, metadata commit or peer
  // request names it): a retired one may be destroyed.
  bool idle() const { return live_ops_ == 0 && deferred_ == 0 && readahead_in_flight_ == 0; }
  // Clean stop: flush both copies; `done(ok)` once finished.
  void quiesce(std::function<void(bool clean)> done);
  // Marks dirty every extent written since both copies last flushed (what
  // the peer may lack if it lost power); returns the bytes newly marked.
  uint64_t mark_unflushed_dirty();
  // Extents the activity log holds now (they are marked dirty whole if this
  // node crashes).
  size_t active_extents() const { return extents_.size(); }
  // Called when the resync finished and the peer adopted our generation.
  std::function<void()> on_synced;
  // Called when the replicator wants the link closed (timeout, peer error).
  std::function<void(const std::string&)> on_link_failure;

 private:
  struct Op;
  enum class Kind {
    kWrite, kTrim, kZero, kFlush, kResync, kPing, kSyncDone, kVerify, kRead, kDetach
  };

  // The mirrored-write path (replicator.cc).
  Op* new_op(Kind kind, uint64_t off, uint32_t len, IoDone* upper);
  void free_op(Op* op);
  void submit(Op* op);
  bool conflicts(const Op* op) const;
  void start(Op* op);
  void dispatch(Op* op);
  // A change's activity extent made durable first (rule 1), then dispatch.
  void log_then_dispatch(Op* op);
  void send_to_peer(Op* op);
  // Before the first change the peer lacks: the generation both copies
  // share becomes the bitmap's base and this node's data gets a new one (not
  // yet committed). Returns false, and changes nothing, if that happened
  // since the copies last agreed.
  bool move_generation();
  void mark_dirty_and_wait(Op* op);
  // Sets the range's dirty bits; an active extent keeps its activity bit
  // until the commit that writes them has completed (evict_extents): the
  // clear must never share a commit with them (a commit is not atomic
  // across blocks). Commits nothing itself.
  void mark_dirty(uint64_t off, uint64_t len);
  void on_local(Op* op, int err);
  void on_meta(Op* op, int err);
  void maybe_complete(Op* op);
  // fail-stop: a change in flight when the link was lost waits, with the
  // writes held since, to be written again on both copies.
  void requeue_held(Op* op);
  // Stopping under fail-stop with the peer gone: the held writes will never
  // go out; they end unanswered (kUnanswered), as in a crash.
  void abandon_held_if_stopping();
  void finish(Op* op, int err);
  void unblock();
  void evict_extents(uint64_t flush_tick);
  void start_internal_flush();
  // The link's lifecycle (replicator_link.cc).
  void peer_failed(const std::string& why);
  void diverge();
  void check_freeze();
  // The link is gone: a split waiting for its writes to drain fails.
  void abandon_freeze();
  void check_drained();
  void release_held();
  // The resync engine (replicator_resync.cc). resync_local_done and
  // resync_reply take a resync copy's local step and the peer's answer to a
  // copy, to the flush that ends a batch, or to SYNC_DONE.
  void resync_begin();
  void resync_link_lost();
  void resync_tick(uint64_t now_ms);
  void resync_pump();
  void resync_local_done(Op* op, int err);
  void resync_reply(Op* op, int err);
  void resync_copy_done(Op* op, int err);
  // Checksum resync: the peer's digests of a chunk (nullptr: it could not
  // give them; the chunk is copied whole).
  void resync_digests(Op* op, const std::vector<link::Digest>* peer, int err);
  void resync_batch_flush();
  void resync_read_ahead();
  // The pass starts again from the volume's start (bits left or set again).
  void resync_rescan();
  // Regions found different while synchronized: resync them (the
  // generation moves on, as for any change the peer lacks).
  void resync_again();
  // A TRIM's copy (this node's or the peer's) kept its data: its store
  // cannot punch holes. Records it on the op; the first time, TRIM stops
  // being applied (trim_local_ok_ / trim_peer_ok_) and says so.
  void trim_kept(Op* op, bool peer);
  // The resync rate limit's token bucket, shared by resync and verify:
  // takes `len` bytes' worth, or returns false (tick() pumps again).
  bool take_tokens(uint64_t len);
  // Online verify (replicator_verify.cc).
  void verify_pump();
  void verify_tick(uint64_t now_ms);
  void verify_local_done(Op* op, int err);
  void verify_chunk_done(Op* op, int err, const std::vector<link::Digest>* peer);
  void verify_maybe_end();
  // A chunk this disk could not read: rewritten from the peer's copy when it
  // can be, else counted; the run goes on either way.
  void verify_local_failed(Op* op, int err);
  // The peer's disk could not read a chunk: marked dirty (resync rewrites it).
  void verify_peer_failed(Op* op, int err);
  // A chunk compared (or repaired): counts it, commits and resyncs the
  // `marked` bytes it marked dirty, ends it and starts the next.
  void verify_chunk_end(Op* op, uint64_t marked);
  // Reads (replicator_read.cc): a client read the local disk failed is
  // answered from the peer's copy when that copy is known to be the same,
  // and the range rewritten here (a disk remaps a bad sector on write).
  void read_done(Op* op, int err);
  // A repair's rewrite of the local copy (a client read's or a verify
  // chunk's) finished: counted and logged once here, then the request goes on.
  void rewrite_done(Op* op, int err);
  void read_from_peer(Op* op);
  // Why the peer's copy of op's range cannot answer for this one now ("" if
  // it can).
  const char* peer_cannot_read(const Op* op) const;
  // Whether one more read-error line may be logged in this window.
  bool read_log_ok();
  // Detaching a failed disk (replicator_disk.cc). absorb_disk_error: a
  // change op's local leg failed with err; true if a detach takes the error
  // over (the op then completes from the peer's result alone, once the
  // detach is recorded on both nodes).
  bool absorb_disk_error(Op* op, int err);
  bool can_detach() const;
  void begin_detach(const Op* op, int err);
  // The detach op's metadata commit here, then the peer's REPLY.
  void detach_step(Op* op, int err);
  // failure "": detached, the peer confirmed. Otherwise why not: before
  // DETACH was sent, or refused by the peer, the disk stays in use and the
  // ops waiting get their local errors; sent but unanswered (the link was
  // lost), the peer may have recorded it, so this disk is never used again:
  // diskless, unconfirmed (the next session sends DETACH again).
  void detach_end(Op* op, const std::string& failure);
  // Sends DETACH (again) on a new session of an unconfirmed detach; new
  // writes wait for the answer.
  void detach_resend();
  // A request while diskless: to the peer, or EIO when it is not connected.
  void diskless_dispatch(Op* op);
  // This disk will not be used again: detached, or DETACH sent (the peer may
  // have recorded it). A change the peer did not take fails from then on,
  // whatever this disk answered.
  bool disk_abandoned() const {
    return disk_ == DiskState::kDiskless || (disk_ == DiskState::kDetaching && detach_sent_);
  }
  bool mirroring() const {
    return link_ && (state_ == LinkState::kResyncing || state_ == LinkState::kSynced);
  }

  Loop& loop_;
  Backend& local_;
  Bitmap& bitmap_;
  const VolumeConfig& cfg_;
  uint64_t size_;
  LinkState state_ = LinkState::kDisconnected;
  bool split_ended_ = false;  // rejoined: link_lost() leaves kSplit
  // Disconnected since a rejoin, the peer not attached again yet: its
  // writes were tracked through the split, and on-peer-loss = fail-stop
  // holds them only once the peer has been back (a backup whose secondary
  // died mid-copy, a before-resync-target that fails, never freeze the
  // application's writes).
  bool after_split_ = false;
  bool fail_stop_holds() const {
    return cfg_.on_peer_loss == OnPeerLoss::kFailStop && state_ == LinkState::kDisconnected &&
           !after_split_;
  }
  LinkConn* link_ = nullptr;
  std::string last_error_;
  uint64_t local_errors_ = 0;
  uint64_t reads_from_peer_ = 0, read_repairs_ = 0;
  bool peer_reads_ = false;  // the peer answers READ (link::kFeatureRead)
  bool peer_detach_ = false;  // the peer takes DETACH (link::kFeatureDetach)
  bool peer_sole_errors_ = false;  // link::kFeatureSoleErrors
  DiskState disk_ = DiskState::kOk;
  bool detach_sent_ = false;       // DETACH went out: the peer may have recorded it
  bool detach_confirmed_ = false;  // the peer answered it
  // Diskless: the link was lost with changes acknowledged since the peer's
  // last flush. The peer (the only copy) may have lost them (a power loss):
  // the next FLUSH fails, as a disk's would after losing its cache.
  bool flush_poisoned_ = false;
  uint64_t last_change_tick_ = 0;  // tick of the last change that finished
  std::string disk_error_;
  std::vector<Op*> detach_waiters_;  // failed locally, waiting for the detach
  uint64_t read_log_window_ms_ = 0;
  uint32_t read_log_lines_ = 0;
  uint64_t read_log_suppressed_ = 0;
  bool peer_io_error_ = false;
  // Whether each store punches holes for TRIM (EOPNOTSUPP: it keeps the
  // data). While either cannot, TRIM changes neither copy. The peer's is
  // learnt again in every session (its store may have changed).
  bool trim_local_ok_ = true;
  bool trim_peer_ok_ = true;
  uint64_t now_ms_;

  // Requests with a range that are running (for the overlap interlock), and
  // those waiting for an overlapping one to finish, in arrival order.
  std::list<Op*> running_;
  std::deque<Op*> blocked_;
  std::unordered_map<uint64_t, Op*> outstanding_;  // sent to the peer, by id
  uint64_t next_id_ = 1;
  std::vector<std::unique_ptr<Op>> free_ops_;
  uint64_t live_ops_ = 0;  // handed out by new_op, not yet back in free_ops_
  uint32_t deferred_ = 0;  // Loop::defer callbacks that name this replicator
  // Loop::defer, counted in deferred_ (idle() waits until none is pending).
  void defer(std::function<void()> fn) {
    ++deferred_;
    loop_.defer([this, fn = std::move(fn)] {
      --deferred_;
      fn();
    });
  }

  // Activity log bookkeeping: per active extent, writes in flight and the
  // tick of the last completion; a flush started at tick T covers every
  // completion before T.
  struct Extent {
    uint32_t in_flight = 0;
    uint64_t last_done = 0;
    // Dirty bits set here are durable once this bitmap commit completed;
    // until then the extent's activity bit covers them and must stay.
    uint64_t dirty_commit = 0;
  };
  std::unordered_map<uint64_t, Extent> extents_;
  uint64_t tick_ = 1;
  // Writes that finished before this tick are on stable storage on both
  // copies, or tracked by dirty bits (the last covering flush's tick).
  uint64_t flushed_tick_ = 0;
  bool internal_flush_running_ = false;
  // quiesce() ran: the node is stopping, no resync starts (the stop marks
  // what was not flushed on both copies instead).
  bool quiescing_ = false;
  // When the peer last answered anything: a ping queued behind megabytes of
  // writes on a slow link is late, but a peer that answers is alive.
  uint64_t last_reply_ms_ = 0;
  uint64_t last_flush_ms_ = 0;
  uint64_t writes_since_flush_ = 0;

  // Freeze (split) waiting for mirrored writes to drain.
  std::vector<std::function<void(int)>> freeze_waiters_;
  bool freeze_flushing_ = false;
  // pause_writes() waiting for the writes already running.
  std::vector<std::function<void()>> drain_waiters_;

  // Resync.
  bool resync_active_ = false;
  uint64_t resync_cursor_ = 0;
  uint32_t resync_in_flight_ = 0;
  uint64_t resync_total_ = 0, resync_done_ = 0, resync_batch_bytes_ = 0;
  uint64_t resync_batch_ms_ = 0;  // when the batch's first copy completed
  std::vector<link::Range> resync_batch_;     // copied, not yet flushed on the peer
  std::vector<link::Range> flushing_batch_;   // covered by the peer flush running now
  uint64_t flushing_bytes_ = 0;
  bool resync_flushing_ = false;
  bool resync_scan_done_ = false;
  // Chunks this pass could not read locally, and when to scan again (0: not
  // waiting).
  uint64_t resync_read_failures_ = 0;
  uint64_t resync_retry_ms_ = 0;
  double tokens_ = 0;
  uint64_t tokens_ms_ = 0;
  uint64_t rate_window_ms_ = 0, rate_window_bytes_ = 0, rate_bps_ = 0;
  std::vector<Buffer> resync_buffers_;
  // Read-ahead of the dirty runs past the copies in flight (a hint to the
  // local copy's page cache, so its disk reads the next regions while the
  // link and the peer's disk take the current ones).
  uint64_t readahead_cursor_ = 0;
  uint32_t readahead_in_flight_ = 0;
  std::function<void()> readahead_drained_;  // quiesce waits for the hints too
  struct ReadAheadDone final : IoDone {
    Replicator* rep = nullptr;
    void io_done(int) override {
      if (--rep->readahead_in_flight_ == 0 && rep->readahead_drained_)
        std::exchange(rep->readahead_drained_, nullptr)();
    }
  } readahead_done_;
  uint64_t resynced_total_ = 0;
  // Checksum resync: on for this link (resync-checksums and a peer that
  // answers VERIFY); bytes found identical this resync and since start.
  bool csums_ = false;
  uint64_t resync_same_ = 0, same_total_ = 0;
  uint64_t dirty_epoch_ = 0;  // bumped when a failure sets dirty bits
  uint64_t batch_epoch_ = 0;
  std::deque<Op*> held_;  // fail-stop or hold(): writes waiting to start
  bool holding_ = false;
  bool stop_requested_ = false;  // stop_requested(): held writes are abandoned
  int plan_holds_ = 0;
  bool sync_done_sent_ = false;
  uint64_t last_ping_ms_ = 0;
  bool ping_outstanding_ = false;

  // Online verify.
  VerifyProgress verify_;
  uint64_t verify_cursor_ = 0, verify_end_ = 0;
  uint32_t verify_in_flight_ = 0;
  uint64_t verify_runs_ = 0;
  uint64_t verify_logged_ = 0;  // mismatches logged this run (rate limit)
  uint64_t verify_window_ms_ = 0, verify_window_bytes_ = 0;
};

}  // namespace mirror
