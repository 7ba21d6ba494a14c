// Volume: one mirrored volume on this node. Owns the backing store, the
// metadata (bitmap), the replication listener and dialer, the handshake with
// the peer, and the role-specific half: a Replicator when primary, a
// SecondaryApplier when secondary. Serves the volume through an NbdServer.
//
// The handshake (docs/replication-protocol.md): both sides send HELLO (version,
// volume identity, a nonce), then AUTH (an HMAC proving the shared secret),
// then STATE (role, generation ids, flags). The primary compares generations
// and sends PLAN; the secondary persists what the plan implies, answers, and
// mirroring (with a resync if needed) begins.
//
// Thread: the Loop's.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "acceptor.h"
#include "auth.h"
#include "bitmap.h"
#include "config.h"
#include "fault_backend.h"
#include "file_backend.h"
#include "link_codec.h"
#include "link_conn.h"
#include "listen_addr.h"
#include "replicator.h"
#include "resync_handlers.h"
#include "role_gate.h"
#include "secondary.h"
#include "server.h"
#include "tls.h"
#include "tracking_backend.h"
#include "uring.h"

namespace mirror {

enum class Role { kPrimary, kSecondary };

// The NBD metadata context of the regions changed since the last backup
// point (docs/nbd-server.md).
inline constexpr const char* kChangedContext = "mirrord:dirty-since-backup";

// What `mirrorctl status` shows for a volume.
struct VolumeStatus {
  std::string volume, node, peer;
  nbd::TlsMode nbd_tls = nbd::TlsMode::kOff;  // this node's exports (nbd-tls)
  bool nbd_tls_client_certs = false;          // nbd-tls-ca set: clients must present one
  Role role = Role::kSecondary;
  std::string link;          // connected / connecting / disconnected
  std::string state;         // synchronized, resyncing, degraded, split, split-brain, ...
  bool consistent = true;    // this copy is a usable image
  // This node's metadata was lost while its copy held data (kFlagCopyUnknown):
  // nothing says whether the copy is older or newer than the peer's.
  bool copy_history_unknown = false;
  uint64_t size = 0;
  uint64_t dirty_bytes = 0;  // out of sync with the peer
  ResyncProgress resync;
  VerifyProgress verify;  // primary: the last verify run (run == 0: none)
  uint64_t resynced_bytes_total = 0;  // sent (primary) or received (secondary)
  uint64_t resync_same_bytes_total = 0;  // primary: of those, identical on the peer, not sent
  std::string last_error;
  uint64_t local_io_errors = 0;  // requests this node's disk failed, since start
  // Primary: client reads this disk failed that the peer's copy answered,
  // and of those, the ranges rewritten here from it (since start).
  uint64_t reads_from_peer = 0;
  uint64_t read_repairs = 0;
  // This node's disk: "ok", "detaching" (it failed; being recorded), or
  // "diskless" (detached: the peer's copy serves every request).
  std::string disk = "ok";
  // Secondary: the primary detached its failed disk; this copy is the only
  // current one (kFlagPeerDiskFailed).
  bool peer_disk_failed = false;
  // Whether a client's TRIM changes the copies: "applied", or why not
  // ("local-store-cannot-punch", "peer-store-cannot-punch").
  std::string trim = "applied";
  // The replication link in use (only while connected): encrypted or not,
  // and how the peer proved who it is.
  bool link_up = false;
  bool link_tls = false;  // false: plaintext, authenticated by the HMAC only
  TlsInfo tls;
  uint64_t generation = 0;
  bool split = false;
  uint64_t split_unix_ms = 0;   // when the last split happened
  uint64_t split_drain_us = 0;  // how long its mirrored writes took to drain
  bool holding = false;
  std::string peer_role;  // primary / secondary, as of the last handshake; "" if unknown
  bool demoting = false;  // demote running: NBD writes are refused
  bool discarding = false;  // discard-my-data running: NBD writes are refused
  bool writable = false;              // NBD writes accepted (a split secondary after open-rw)
  // DRBD's before-/after-resync-target handlers (program "": not configured).
  HandlerStatus before_resync_target, after_resync_target;
  uint64_t backup_point = 0;          // id of the last backup point (0: none)
  uint64_t changed_since_backup = 0;  // bytes (secondary)
};

class Volume final : public LinkConn::Handler {
 public:
  struct Options {
    bool force_full_sync = false;  // operator: ignore generations, copy all
    // Operator, resolving a split brain on the node whose changes lose: this
    // node becomes secondary and takes a full copy from the peer.
    bool discard_my_data = false;
    // Tests only (MIRRORD_FAULTS): faults injected under the replication
    // layer, on this node's backing store; both outlive the Volume.
    const FaultSpec* faults = nullptr;
    PowerLoss* power_loss = nullptr;
  };
  // `cfg` outlives the Volume, which updates cfg.size after an online resize.
  static Result<std::unique_ptr<Volume>> open(Loop& loop, VolumeConfig& cfg,
                                              const NodeConfig& self, Options opts);
  ~Volume();

  // Binds the replication address and starts talking to the peer.
  Status start();
  // The backend NBD clients get, for the Volume's lifetime: read-write on the
  // primary, the local copy on the secondary (read-only, unless open-rw
  // while split); it follows role changes (promote, demote).
  Backend* nbd_backend() { return &gate_; }
  bool nbd_read_only() const { return !gate_.writable(); }
  // Called when the NBD export must become read-only (true) or read-write
  // (false): demote refuses writes from its start, promote and open-rw
  // allow them, a rejoin after open-rw refuses them again.
  std::function<void(bool read_only)> on_export_mode;
  // Called when a secondary's image changes behind its NBD export: the
  // split (every write before it applied), a resync about to write into it,
  // the end of a resync. A kernel device drops its cached blocks, then runs
  // `done` (on the loop, never inside the call; bounded in time).
  std::function<void(std::function<void()> done)> on_image_changed;
  // Called when a primary whose copy's history was unknown (its metadata
  // lost) becomes writable: the pair agreed a plan, or the operator's
  // promote --force. A kernel device follows the export's new mode.
  std::function<void()> on_copy_confirmed;
  // Asked before a rejoin's resync overwrites this secondary's split image:
  // `done` gets "" when nothing uses the image, else why it is in use (a
  // file system mounted on the kernel device: a backup not finished), with
  // `retry_soon` when that is not known yet (ask again shortly). On the
  // loop, never inside the call.
  std::function<void(std::function<void(const std::string& busy, bool retry_soon)> done)>
      split_image_in_use;
  // The regions changed since the last backup point, for the NBD metadata
  // context kChangedContext; a primary answers "all changed" (it keeps no
  // such map), which is always safe for a backup tool.
  void changed_extents(uint64_t offset, uint32_t length, uint32_t max_extents,
                       std::vector<nbd::Extent>* out) const;
  // Clean stop, after the NBD server drained: flush, record a clean
  // shutdown in the metadata, close the link.
  void stop(std::function<void()> done);

  // Why writes acknowledged before the stop may be lost, or "" when none
  // may be: this node's disk failed a sync (its backend refuses writes
  // until a restart), or, once the disk is detached (diskless), the peer's
  // copy, the only one, has not flushed every acknowledged write.
  std::string acked_writes_at_risk() const;
  VolumeStatus status() const;
  Role role() const { return role_; }
  // A resync the secondary refused until the operator acts: its
  // before-resync-target failed, or its split image is in use (ECANCELED
  // from the peer on the primary; this node's own on the secondary): how
  // many such refusals so far, and the last one's reason ("" once a session
  // became active or a rejoin asked again).
  struct ResyncRefusal {
    uint64_t count = 0;
    std::string why;
  };
  ResyncRefusal resync_refusal() const;

  // Control (primary). Each calls `done(err, message)` once; err is 0 or a
  // positive errno and the message says what happened or why not.
  using Done = std::function<void(int err, const std::string& message)>;
  // Freezes the mirror at one instant: every write acknowledged before is
  // durable on the secondary, every later one is tracked here.
  void split(Done done);
  // Ends a split: resyncs the regions changed since, then mirrors again.
  void rejoin(Done done);
  // Online verify (primary, link mirroring): compares [offset, offset +
  // length) (length 0: to the end) with the peer's copy and resyncs the
  // regions that differ; `cancel` stops the run. Answered when it started;
  // status().verify follows it.
  void verify(uint64_t offset, uint64_t length, bool cancel, Done done);
  // Consistency groups: hold new writes (released after timeout_ms at the
  // latest, so an application is never blocked by a lost client), release.
  void hold(uint32_t timeout_ms, Done done);
  void release(Done done);
  // mirrord was told to stop (a signal), before the NBD server drains:
  // writes held by `hold` are released (the drain would wait for them until
  // the hold's timeout), and no new hold is taken.
  void stop_requested();
  // Planned failover (volume_failover.cc). demote (primary): refuse new
  // writes, wait until the peer is in sync (at most timeout_ms), flush, and
  // become secondary (persisted). promote (secondary): refused while this
  // copy may be behind the peer, or while the peer is primary, unless
  // `force` (which moves the generation on so the old primary's later
  // writes are a split brain, never merged); becomes primary (persisted).
  void demote(uint32_t timeout_ms, Done done);
  // check_only: every refusal, and done(0, "") where the promote would go
  // on (nothing changed: the promote fence asks the peer only then).
  void promote(bool force, Done done, bool check_only = false);
  // promote --force --identical (a new pair's primary): both copies are
  // identical; the peer adopts this one without a copy (kFlagAssertIdentical).
  void promote_identical(Done done);

  // Control relay over the replication link (RELAY / RELAY_REPLY): relay()
  // sends a control request (JSON text) to the peer's daemon and calls
  // `done(0, reply)` with its JSON reply, or `done(errno, why)` if the link
  // is down or lost first, or ETIMEDOUT if the peer did not answer within
  // relay_timeout_ms() (a stopped or hung daemon: the link may stay up). on_relay handles the peer's requests; it must
  // call `reply` exactly once (the reply is dropped if the link is gone).
  using RelayDone = std::function<void(int err, const std::string& reply_or_why)>;
  void relay(const std::string& request, RelayDone done);
  std::function<void(const std::string& request, std::function<void(const std::string&)> reply)>
      on_relay;
  // The peer is connected and primary (a command needing the primary can
  // be relayed to it).
  bool peer_is_primary() const;
  // The refusal of a command that runs on the primary, on a node that is
  // not: names the primary when there is one, else says why there is none.
  std::string not_primary(const std::string& command) const;
  // The ack timeout (a split relayed to the primary may wait that long for
  // its mirrored writes to drain) plus 10 s for the round trip.
  uint64_t relay_timeout_ms() const { return uint64_t(cfg_.ack_timeout_ms) + 10000; }
  // A session with the peer is active (a command can be relayed to it).
  bool peer_connected() const { return active_ != nullptr; }
  // Both nodes secondary, connected (after a demote): a promote here must
  // agree with the peer first (VolumeControl's promote fence).
  bool standby_with_peer() const {
    return role_ == Role::kSecondary && active_ && peer_known_ &&
           peer_state_.role != link::State::kPrimary;
  }
  const std::string& node_name() const { return self_.name; }
  // Counts the sessions with the peer that became active: a promise made
  // in one (the promote fence) ends with it.
  uint64_t session_serial() const { return session_serial_; }
  const std::string& peer_name() const { return peer_.name; }
  // Resolves a split brain on the node whose changes lose (DRBD's `connect
  // --discard-my-data`), without a restart: refuses new writes, waits for
  // those in flight, records "secondary, full sync needed" in the metadata
  // and becomes secondary; the next handshake copies everything from the
  // peer (which must be primary). Refused (EINVAL) unless in a split brain.
  void discard_my_data(Done done);
  // Split secondary: serve the stable image read-write; every change is
  // tracked and copied back from the primary at rejoin.
  void open_rw(Done done);
  // Reads tls-ca, tls-cert and tls-key again (certificate rotation without a
  // restart); the link session running goes on with the old ones, the next
  // one uses the new. Bad files are refused and the old ones stay in use.
  void reload_tls(Done done);
  // Backup point: the secondary's map of regions changed since the last
  // backup restarts empty, remembering `point` (an id, non-zero). Refused
  // (ESTALE) unless the current point is `expect` (0: any). point == 0 only
  // checks. Runs on the secondary: sent to the primary's daemon, the
  // command is relayed to it (VolumeControl, RELAY).
  // split: the split instant the backup copied (0: not checked); refused
  // when this node knows its split is another one.
  void backup_mark(uint64_t point, uint64_t expect, uint64_t split, Done done);
  // Online resize (volume_resize.cc, DRBD's `drbdadm resize`): grows the
  // volume to the size its volume file (re-read) now says. On a primary
  // whose peer is connected and synchronized, both nodes grow at one point
  // in the write stream (RESIZE); the new area is resynced unless both
  // nodes know it reads as zeros or `assume_clean`. With the link down this
  // node grows alone and its new area is marked out of sync. Shrinking is
  // refused; the same size is a no-op.
  void resize(bool assume_clean, Done done);
  // The size changed (after both the store and the metadata grew): the
  // export follows at once, the kernel device (if any) when `done` runs,
  // with a warning for the operator or "" (main.cc sets it). Called with
  // writes flowing: the kernel may wait for those in flight.
  std::function<void(uint64_t size, std::function<void(const std::string& warning)> done)>
      on_resized;

  // LinkConn::Handler.
  void on_link_message(LinkConn* c, const link::Header& h, Buffer& payload) override;
  void on_link_closed(LinkConn* c, const std::string& why) override;

 private:
  struct Session;
  struct Dialer;
  Volume(Loop& loop, VolumeConfig& cfg, const NodeConfig& self, const NodeConfig& peer,
         Options opts);
  Status prepare_metadata(const BitmapOpenReport& report);
  void on_accept(UniqueFd fd);
  void new_session(UniqueFd fd, bool outbound, std::string peer);
  std::shared_ptr<Session> find_session(Session* s);
  void session_message(Session* s, const link::Header& h, Buffer& payload);
  // Refuses or ends the session with an ERROR. retry_after_ms (0: none)
  // goes in the ERROR's offset: the dialing side waits that long before
  // its next handshake (a refusal that will last: before-resync-target).
  // code: the ERROR's (docs/replication-protocol.md): EPROTO, or for a
  // before-resync-target refusal EAGAIN (running) or ECANCELED (failed).
  void session_error(Session* s, const std::string& why, bool log_warn = true,
                     uint64_t retry_after_ms = 0, uint32_t code = EPROTO);
  // The ERROR and the close alone: not the pair's error (a second session).
  void refuse_session(Session* s, const std::string& why, uint64_t retry_after_ms = 0,
                      uint32_t code = EPROTO);
  // The resync plan, from the peer's STATE to the active session (volume_plan.cc).
  void on_peer_state(Session* s, const link::State& st);
  void plan_as_primary(Session* s, const link::State& st);
  void on_plan(Session* s, const link::Header& h, const link::Plan& plan);
  // After the split image's in-use check: before-resync-target, the cache drop.
  void on_plan_free(Session* s, const link::Header& h, const link::Plan& plan);
  // on_plan's last part, once the kernel device dropped its cache.
  void on_plan_apply(Session* s, const link::Header& h, const link::Plan& plan);
  void end_plan_hold(Session* s);
  void activate(Session* s);
  link::State my_state() const;
  void enter_standby(Session* s, const link::State& st);
  void make_replicator();
  void make_applier();
  void demote_poll();
  void discard_poll();
  void discard_commit();  // discard_poll()'s second step: the flags, the role
  void discard_finish(int err, const std::string& why);
  void demote_finish(int err, const std::string& why);
  std::string behind_reason() const;
  // Requests of an earlier session or role still on their way to this
  // node's disk ("" when there are none): a new session's writes, or this
  // node's own as primary, must not overlap them (the disk may complete
  // them in any order, an old one last).
  std::string earlier_requests() const;
  void become(Role role);
  void reconnect(const std::string& why);
  int apply_backup_mark(uint64_t point, uint64_t expect, uint64_t split,
                        std::function<void(int)> done);
  void send_dirty_ranges(Session* s);
  void dial();
  void on_dial(int res);
  // No handshake before ms from now (if this node is the one that dials).
  void hold_off_dial(uint64_t ms);
  // The next handshake at once, whatever the backoff or a hold-off; by this
  // node even if the peer is the one that dials (even_if_not_dialer: the
  // operator asked, and the peer may be holding off for a retry-after).
  void dial_now(bool even_if_not_dialer = false);
  // A split that failed, before its SPLIT went out or unconfirmed after:
  // this node is not split (committed), writes are tracked for the peer and
  // the next session resyncs it (a SPLIT it applied is undone as by a
  // rejoin); `done` gets err and why, saying no split was made.
  void split_failed(int err, const std::string& why, const Done& done);
  // A rejoin's or a failed split's end (kFlagSplit already cleared): the
  // replicator leaves its split state and the session closes (or the peer
  // is dialled) so that the next plan resyncs the secondary.
  void resync_after_split(const char* why);
  void tick();
  // A disk failed a mirrored write since the last completed resync: the
  // dialer backs off further (kDiskRetryMaxBackoffMs) instead of retrying
  // a doomed session every 100 ms.
  bool disk_retry() const;
  // A session with the peer became active: the dialer's backoff starts over
  // (unless disk_retry()), and the last connection error is history.
  void peer_reached();
  // The TLS context from the configured files (logs a validity warning).
  Result<std::shared_ptr<TlsContext>> load_tls(std::string* warning) const;

  Loop& loop_;
  VolumeConfig& cfg_;  // only size changes (resize)
  const NodeConfig& self_;
  const NodeConfig& peer_;
  Options opts_;
  Role role_ = Role::kSecondary;
  std::unique_ptr<FileBackend> file_;
  std::unique_ptr<FaultBackend> faults_;  // tests only: wraps file_
  Backend* disk_ = nullptr;               // faults_ or file_
  std::unique_ptr<Bitmap> bitmap_;
  std::unique_ptr<Bitmap> changes_;  // changed since the last backup (read on a secondary)
  std::unique_ptr<ChangeTracker> tracked_;
  std::unique_ptr<LocalWriteGate> local_;  // the secondary's NBD path (open-rw)
  std::unique_ptr<Replicator> replicator_;
  std::unique_ptr<SecondaryApplier> applier_;
  std::unique_ptr<ResyncHandlers> handlers_;  // the secondary runs them
  // Halves left behind by a role change, until nothing in flight names
  // them (an apply or a write finishing late): then tick() destroys them.
  std::vector<std::unique_ptr<Replicator>> retired_replicators_;
  std::vector<std::unique_ptr<SecondaryApplier>> retired_appliers_;
  void release_retired();
  // A resync plan's reply on the secondary, once the client reads of the
  // image it replaces have finished, or kPlanQuiesceMs passed (tick()).
  struct PlanReply {
    uint64_t id = 0;
    int waiting = 0;  // client reads still running (bounded: deadline_ms)
    uint64_t deadline_ms = 0;
    bool logged = false;  // the wait for earlier requests is logged once
    bool landing = true;  // waits for earlier requests (not a standby plan)
    std::function<void()> send;
  };
  std::unique_ptr<PlanReply> plan_reply_;
  uint64_t plan_reply_ids_ = 0;
  void plan_reply_step(uint64_t id);
  // Sends the plan's reply once the reads are done and no earlier request
  // is in flight (earlier_requests(): no bound, tick() polls).
  void plan_reply_try();
  RoleGate gate_;
  // The peer's STATE from the last handshake (valid while peer_known_).
  link::State peer_state_;
  bool peer_known_ = false;
  uint64_t session_serial_ = 0;
  struct Demote {
    Done done;
    uint64_t deadline_ms = 0;
    bool flushing = false;
    // Secondary now: the answer waits (until this deadline) for the pair to
    // reconnect in standby, so that a promote on the peer right after it
    // finds the link up.
    uint64_t standby_deadline_ms = 0;
    bool standby = false;  // enter_standby() ran since: the new session is up
  };
  std::unique_ptr<Demote> demote_;
  struct Discard {
    Done done;
    uint64_t deadline_ms = 0;
    uint32_t old_flags = 0;
    bool committing = false;
  };
  std::unique_ptr<Discard> discard_;  // discard-my-data running
  bool stopped_on_detach_ = false;    // MIRRORD_FAULTS=stop-on-detach fired

  std::vector<std::shared_ptr<Session>> sessions_;
  Session* active_ = nullptr;
  std::shared_ptr<TlsContext> tls_;  // null: a plaintext link
  std::unique_ptr<Acceptor> acceptor_;
  std::unique_ptr<Dialer> dialer_;
  Timer tick_timer_;
  Timer dial_timer_;  // the next dial after a failed one (its backoff)
  uint64_t now_ms_ = 0;
  bool stopping_ = false;
  bool quiesced_ = false;  // stopping, and both copies flushed (or the peer gone)
  bool split_brain_ = false;
  // Primary by the volume file, on a copy whose history is unknown
  // (kFlagCopyUnknown): read-only until confirm_copy().
  bool unconfirmed_ = false;
  // The copy's history is known again (a plan agreed, the operator's word):
  // clears kFlagCopyUnknown and kFlagUnpaired (committed by the caller), and
  // makes an unconfirmed primary writable.
  void confirm_copy(const char* why);
  // Plans refused while the split image was in use (resync_refusal()), and
  // the last one's reason: "" once free (then the next refusal is logged).
  uint64_t split_busy_refusals_ = 0;
  std::string split_busy_why_;
  // The last refusal to let a plan overwrite this copy (its history
  // unknown, kFlagCopyUnknown; its split image kept from a primary that no
  // longer knows of the split): logged once, not at every retried handshake.
  std::string copy_refusal_why_;
  // The last refusal of a plan while earlier requests were still on their
  // way to this disk: logged once per streak.
  std::string landing_refusal_why_;
  // The primary's last refusal of a plan (split brain, unrelated data):
  // logged once per reason.
  std::string plan_refusal_why_;
  // The plan last logged at info, and the session count then: a plan the
  // peer keeps refusing (its disk still landing requests: once a second) is
  // logged again only at debug until a session becomes active.
  std::string plan_logged_;
  uint64_t plan_logged_serial_ = ~0ull;
  // The last refusal by the peer logged at warn (again at debug only).
  std::string refusal_logged_;
  bool stop_requested_ = false;     // stop_requested(): no new hold
  uint64_t split_unix_ms_ = 0;
  uint64_t split_drain_us_ = 0;
  uint64_t next_control_id_ = 1;
  std::unordered_map<uint64_t, Done> control_waiters_;  // link replies to our own requests
  struct RelayWaiter {
    RelayDone done;
    uint64_t deadline_ms = 0;
  };
  std::unordered_map<uint64_t, RelayWaiter> relay_waiters_;  // RELAY_REPLY, by id
  void expire_relays();
  // Online resize (volume_resize.cc).
  struct Resize;
  std::unique_ptr<Resize> resize_;
  Result<uint64_t> resize_target() const;
  void resize_flush();
  void resize_flushed(int err);
  void resize_resume_writes();
  void resize_drained();
  void resize_grow_here(bool peer_zeroed);
  void resize_finish(int err, const std::string& message);
  void resize_link_lost(const std::string& why);
  void resize_tick();
  void on_resize_reply(const link::Header& h, Buffer& payload);
  void on_resize_request(LinkConn* c, const link::Header& h);
  // Grows the store, the metadata (changes_ first: if bitmap_ then fails,
  // only the next backup copies more) and every size held but the export's
  // (on_resized), in an order where a failure leaves the served size as it
  // was. `dirty(zeroed)` says whether to mark the new area dirty, given
  // whether it reads as zeros here.
  struct Grown {
    bool zeroed = false, dirty = false;
  };
  Result<Grown> grow_here(uint64_t to, const std::function<bool(bool zeroed)>& dirty);
  // file_->extend, and under MIRRORD_FAULTS=power-loss the extension
  // recorded: a simulated power loss before a sync covers it cuts it back.
  Result<bool> extend_file(uint64_t to, uint64_t* was_length = nullptr);
  // MIRRORD_FAULTS=power-loss-at-resize=STEP: a simulated power loss here
  // when `step` is the one chosen.
  void resize_fault(const char* step);
  // fn() once neither metadata file has a commit running (Bitmap::grow
  // refuses to run beside one).
  void when_metadata_idle(std::function<void()> fn);
  void on_relay_message(LinkConn* c, const link::Header& h, Buffer& payload);
  uint64_t hold_deadline_ms_ = 0;  // 0: not holding
  std::string last_error_;
  ResyncRefusal peer_refusal_;  // the primary's resync_refusal()
  bool retry_handler_ = false;  // the next PLAN carries kFlagRetryNow (rejoin)
  // Primary: the operator's rejoin, until a plan is adopted. The split is
  // not learned back from the peer meanwhile: only the first PLAN carries
  // kFlagRetryNow, and the secondary's before-resync-target always refuses
  // that one once (it runs between handshakes).
  bool rejoin_pending_ = false;
  // Secondary: a PLAN with kFlagRetryNow (the operator's rejoin) released
  // this split image to a primary that no longer knows of the split; the
  // later handshakes of that resync need not carry it. Until the split ends.
  bool split_released_ = false;
  std::string open_warning_;
};

}  // namespace mirror
