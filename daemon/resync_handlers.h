// ResyncHandlers: the secondary's half of DRBD's before-resync-target and
// after-resync-target handlers (docs/configuration.md, "Handlers";
// docs/replication-protocol.md, "Handlers around a resync").
//
// before-resync-target runs when a plan would make this node's consistent
// copy inconsistent (a bitmap, union or full resync into it): typically it
// snapshots the backing device, so a consistent image exists while the
// resync runs. Nothing is written to the copy before it exited 0: the first
// plan that needs it flushes the copy (what this node acknowledged may
// still be in the page cache only, which a block-level snapshot would miss),
// starts it once the flush succeeded, and is refused (the primary retries
// the handshake); a later plan goes ahead once it exited 0 with the copy
// unchanged since. A failed flush counts as a failed run (not started). A
// run that failed (non-zero exit, a signal, the timeout) keeps refusing
// resyncs and is retried no more often than every kRetryMs, or at once when
// the primary's operator asks (mirrorctl rejoin). after-resync-target runs
// once SYNC_DONE made the copy consistent again; nobody waits for it, its
// failure is logged.
//
// Thread: the Loop's. Owned by the Volume; tick() drives the timeouts.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config.h"
#include "handler_run.h"
#include "uring.h"

namespace mirror {

// What `mirrorctl status` shows of one handler.
struct HandlerStatus {
  std::string program;      // "" : not configured
  uint64_t runs = 0;        // started since mirrord started
  bool running = false;
  std::string last_result;  // "exit 0", "exit 3", "timed out after 60 s (killed)", ...
  uint64_t last_unix_ms = 0;  // when the last run ended (0: none yet)
};

class ResyncHandlers {
 public:
  static constexpr uint64_t kRetryMs = 30000;

  // What a before-resync-target's success vouches for: the copy as it was
  // when the handler started (its generation and flags).
  struct CopyMark {
    uint64_t current = 0, bitmap = 0;
    uint32_t flags = 0;
    bool operator==(const CopyMark&) const = default;
  };

  // Makes this node's copy durable (a flush of its backing, on the loop),
  // then calls its argument with 0 or a negative errno (possibly at once).
  using FlushCopy = std::function<void(std::function<void(int)>)>;

  // All references outlive this object, and so does whatever flush_copy
  // uses.
  ResyncHandlers(Loop& loop, const VolumeConfig& cfg, const NodeConfig& self,
                 const NodeConfig& peer, FlushCopy flush_copy);
  ~ResyncHandlers();

  bool has_before() const { return !cfg_.before_resync_target.empty(); }
  // A plan `plan` ("bitmap", "union", "full") that overwrites up to `bytes`
  // of it would make this consistent copy inconsistent. Returns "" when it
  // may go ahead (before-resync-target exited 0 for this plan kind and the
  // copy as `mark` says it is, and nothing changed it since), else why not:
  // the handshake is refused with that message. A success for another kind
  // vouches for nothing: the handler sizes its snapshot from the plan (a
  // bitmap one would overflow in a full resync), so it runs again.
  // retry_now: the primary's operator asked for it (mirrorctl rejoin): a
  // failed run is retried at once, not kRetryMs after it failed.
  std::string before_resync(const std::string& plan, uint64_t bytes, const CopyMark& mark,
                            uint64_t now_ms, bool retry_now);
  // After a refusal by before_resync(): how long the primary should wait
  // before its next handshake. Running: as long as it ran so far, from 1 s
  // up to kRetryRunningMaxMs (a quick handler is waited for a little, a long
  // one is not asked about every second); failed: until its retry is due.
  uint64_t retry_after_ms(uint64_t now_ms) const;
  static constexpr uint64_t kRetryRunningMaxMs = 10000;
  // Called when before-resync-target exited 0 (the next plan may go ahead).
  std::function<void()> on_ready;
  // The copy may have changed (a session became active and may mirror
  // into it; open-rw): a run that started before no longer vouches for it.
  void copy_changed() { changed_ = true; }
  // SYNC_DONE made the copy consistent again: start after-resync-target.
  void after_resync();
  // Kills a handler past its timeout.
  void tick(uint64_t now_ms);
  // mirrord stops: a running before-resync-target gets SIGTERM (its result
  // would be used by nobody; the next start runs it again), a running
  // after-resync-target is left to finish. Neither is waited for.
  void stop();

  // The last before-resync-target failed and still blocks resyncs: why ("").
  const std::string& failure() const { return failure_; }
  // Runs that failed (or could not start) since mirrord started.
  uint64_t failures() const { return failures_; }
  HandlerStatus before_status() const;
  HandlerStatus after_status() const;

 private:
  struct Slot {
    std::string key;  // "before-resync-target"
    std::string program;
    std::unique_ptr<HandlerRun> run;
    uint64_t started_ms = 0;
    uint64_t runs = 0;
    bool timed_out = false;
    std::string last_result;
    uint64_t last_unix_ms = 0;
  };
  // kFlushing: the copy's flush before a run is under way.
  enum class Before { kIdle, kFlushing, kRunning, kSucceeded, kFailed };

  std::vector<std::pair<std::string, std::string>> env(const std::string& plan,
                                                       uint64_t bytes) const;
  // Starts the slot's program; false (and `error` set) if it could not be.
  bool spawn(Slot& slot, const std::string& plan, uint64_t bytes, std::string* error,
             std::function<void(const HandlerRun::Outcome&)> done);
  // A run ended: what it was, for the status and the log.
  std::string ended(Slot& slot, const HandlerRun::Outcome& o);
  // The flush before a run ended: starts the run, or fails it.
  void flushed(int err);
  // The handshake's refusal while a run is pending, running or failed.
  std::string refusal(uint64_t now_ms) const;
  void before_done(const HandlerRun::Outcome& o);
  HandlerStatus status_of(const Slot& slot) const;

  Loop& loop_;
  const VolumeConfig& cfg_;
  const NodeConfig& self_;
  const NodeConfig& peer_;
  FlushCopy flush_copy_;
  bool stopped_ = false;
  uint64_t flush_started_ms_ = 0;
  Slot before_, after_;
  Before state_ = Before::kIdle;
  CopyMark mark_;          // the copy when the last before-resync-target started
  bool changed_ = false;   // ... and it may have changed since
  uint64_t failed_ms_ = 0;  // monotonic: when the last run failed
  std::string failure_;
  uint64_t failures_ = 0;
  std::string plan_;       // the plan the running or last run was for
  uint64_t plan_bytes_ = 0;  // ... and the bytes it overwrites
  // Runs that ended, destroyed at the next tick (never inside their own
  // completion).
  std::vector<std::unique_ptr<HandlerRun>> ended_;
};

}  // namespace mirror
