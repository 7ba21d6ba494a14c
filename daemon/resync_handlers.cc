#include "resync_handlers.h"

#include <signal.h>

#include <algorithm>
#include <cstring>

#include "clock.h"
#include "log.h"

namespace mirror {

ResyncHandlers::ResyncHandlers(Loop& loop, const VolumeConfig& cfg, const NodeConfig& self,
                               const NodeConfig& peer, FlushCopy flush_copy)
    : loop_(loop), cfg_(cfg), self_(self), peer_(peer), flush_copy_(std::move(flush_copy)) {
  before_.key = "before-resync-target";
  before_.program = cfg.before_resync_target;
  after_.key = "after-resync-target";
  after_.program = cfg.after_resync_target;
}

ResyncHandlers::~ResyncHandlers() = default;

std::vector<std::pair<std::string, std::string>> ResyncHandlers::env(
    const std::string& plan, uint64_t bytes) const {
  std::vector<std::pair<std::string, std::string>> e = {{"MIRROR_VOLUME", cfg_.name},
                                                        {"MIRROR_NODE", self_.name},
                                                        {"MIRROR_PEER", peer_.name},
                                                        {"MIRROR_BACKING", self_.backing}};
  if (!plan.empty()) {
    e.emplace_back("MIRROR_PLAN", plan);
    e.emplace_back("MIRROR_RESYNC_BYTES", std::to_string(bytes));
  }
  return e;
}

bool ResyncHandlers::spawn(Slot& slot, const std::string& plan, uint64_t bytes,
                           std::string* error,
                           std::function<void(const HandlerRun::Outcome&)> done) {
  auto run = HandlerRun::start(loop_, slot.program, env(plan, bytes), std::move(done));
  ++slot.runs;
  slot.timed_out = false;
  slot.started_ms = mono_ms();
  if (!run) {
    *error = run.error().message;
    slot.last_result = *error;
    slot.last_unix_ms = unix_ms();
    MLOG_ERROR("volume '%s': %s: %s", cfg_.name.c_str(), slot.key.c_str(), error->c_str());
    return false;
  }
  slot.run = std::move(*run);
  MLOG_INFO("volume '%s': %s: started %s (pid %d)%s", cfg_.name.c_str(), slot.key.c_str(),
            slot.program.c_str(), int(slot.run->pid()),
            plan.empty() ? "" : (" before a " + plan + " resync into this copy").c_str());
  return true;
}

std::string ResyncHandlers::ended(Slot& slot, const HandlerRun::Outcome& o) {
  std::string how = o.how;
  if (slot.timed_out)
    how = "timed out after " + std::to_string(cfg_.handler_timeout_ms / 1000) + " s (killed)";
  slot.last_result = how;
  slot.last_unix_ms = unix_ms();
  ended_.push_back(std::move(slot.run));
  return how;
}

std::string ResyncHandlers::refusal(uint64_t now_ms) const {
  const std::string& prog = before_.program;
  switch (state_) {
    case Before::kFlushing:
      return "before-resync-target " + prog + " starts once this copy is flushed to stable "
             "storage: no resync into this copy until it exited 0; retrying the handshake";
    case Before::kRunning:
      return "before-resync-target " + prog + " is running (for " +
             std::to_string((now_ms - std::min(now_ms, before_.started_ms)) / 1000) +
             " s): no resync into this copy until it exited 0; retrying the handshake";
    case Before::kFailed:
      if (now_ms < failed_ms_ + kRetryMs)
        return failure_ + "; retried in " +
               std::to_string((failed_ms_ + kRetryMs - now_ms + 999) / 1000) + " s";
      return failure_;
    case Before::kIdle:
    case Before::kSucceeded:
      break;
  }
  return "";
}

std::string ResyncHandlers::before_resync(const std::string& plan, uint64_t bytes,
                                          const CopyMark& mark, uint64_t now_ms,
                                          bool retry_now) {
  switch (state_) {
    case Before::kFlushing:
    case Before::kRunning:
      return refusal(now_ms);
    case Before::kSucceeded:
      // Not for more bytes than the handler was told: a snapshot sized
      // for them (the example's) would overflow and be dropped mid-resync.
      if (mark == mark_ && !changed_ && plan == plan_ && bytes <= plan_bytes_) {
        state_ = Before::kIdle;  // used once: the next resync runs it again
        MLOG_INFO("volume '%s': before-resync-target exited 0: the %s resync starts",
                  cfg_.name.c_str(), plan.c_str());
        return "";
      }
      if (plan != plan_)
        MLOG_INFO("volume '%s': before-resync-target ran for a %s resync, this plan is a %s "
                  "one: running it again", cfg_.name.c_str(), plan_.c_str(), plan.c_str());
      else if (bytes > plan_bytes_)
        MLOG_INFO("volume '%s': before-resync-target ran for %llu bytes to copy, this plan "
                  "copies %llu: running it again",
                  cfg_.name.c_str(), static_cast<unsigned long long>(plan_bytes_),
                  static_cast<unsigned long long>(bytes));
      else
        MLOG_INFO("volume '%s': this copy changed since before-resync-target ran: running it "
                  "again", cfg_.name.c_str());
      break;
    case Before::kFailed:
      if (now_ms < failed_ms_ + kRetryMs && !retry_now) return refusal(now_ms);
      if (retry_now)
        MLOG_INFO("volume '%s': the primary's operator asked for a retry (mirrorctl rejoin): "
                  "running before-resync-target again", cfg_.name.c_str());
      break;
    case Before::kIdle:
      break;
  }
  mark_ = mark;
  changed_ = false;
  plan_ = plan;
  plan_bytes_ = bytes;
  // What this node acknowledged may be in the page cache only: a snapshot
  // of the device under the backing file would miss it. The program starts
  // once the copy is durable (flushed()).
  state_ = Before::kFlushing;
  failure_.clear();
  flush_started_ms_ = mono_ms();
  flush_copy_([this](int err) { flushed(err); });
  return refusal(now_ms);  // the flush may have ended already
}

uint64_t ResyncHandlers::retry_after_ms(uint64_t now_ms) const {
  switch (state_) {
    case Before::kFlushing:
      return 1000;
    case Before::kRunning:
      // (now_ms may predate the start by a millisecond: taken before it.)
      return std::clamp<uint64_t>(now_ms - std::min(now_ms, before_.started_ms), 1000,
                                  kRetryRunningMaxMs);
    case Before::kFailed:
      if (now_ms >= failed_ms_ + kRetryMs) return 1000;
      return std::max<uint64_t>(failed_ms_ + kRetryMs - now_ms, 1000);
    case Before::kIdle:
    case Before::kSucceeded:
      break;
  }
  return 0;
}

void ResyncHandlers::flushed(int err) {
  if (stopped_ || state_ != Before::kFlushing) return;
  uint64_t took = mono_ms() - flush_started_ms_;
  if (err) {
    std::string why = std::string("cannot flush this copy (") + strerror(err < 0 ? -err : err) +
                      ")";
    ++before_.runs;
    before_.last_result = "not started: " + why;
    before_.last_unix_ms = unix_ms();
    state_ = Before::kFailed;
    ++failures_;
    failed_ms_ = mono_ms();
    failure_ = "before-resync-target " + before_.program + " not started: " + why +
               ", so a snapshot could miss writes it acknowledged: no resync into this copy "
               "(its consistent image is kept)";
    MLOG_ERROR("volume '%s': %s; retried in %llu s at the earliest", cfg_.name.c_str(),
               failure_.c_str(), static_cast<unsigned long long>(kRetryMs / 1000));
    return;
  }
  MLOG_INFO("volume '%s': this copy is flushed to stable storage (%llu ms): starting "
            "before-resync-target", cfg_.name.c_str(), static_cast<unsigned long long>(took));
  std::string error;
  if (!spawn(before_, plan_, plan_bytes_, &error,
             [this](const HandlerRun::Outcome& o) { before_done(o); })) {
    state_ = Before::kFailed;
    ++failures_;
    failed_ms_ = mono_ms();
    failure_ = "before-resync-target failed: " + error +
               "; no resync into this copy (its consistent image is kept)";
    return;
  }
  state_ = Before::kRunning;
}

void ResyncHandlers::before_done(const HandlerRun::Outcome& o) {
  uint64_t took = mono_ms() - before_.started_ms;
  bool ok = o.ok && !before_.timed_out;
  std::string how = ended(before_, o);
  if (ok) {
    state_ = Before::kSucceeded;
    failure_.clear();
    MLOG_INFO("volume '%s': before-resync-target %s: exit 0 after %llu ms: the %s resync may "
              "start", cfg_.name.c_str(), before_.program.c_str(),
              static_cast<unsigned long long>(took), plan_.c_str());
    if (on_ready) on_ready();
    return;
  }
  state_ = Before::kFailed;
  ++failures_;
  failed_ms_ = mono_ms();
  failure_ = "before-resync-target " + before_.program + " failed (" + how +
             "): no resync into this copy (its consistent image is kept)";
  MLOG_ERROR("volume '%s': %s; retried in %llu s at the earliest", cfg_.name.c_str(),
             failure_.c_str(), static_cast<unsigned long long>(kRetryMs / 1000));
}

void ResyncHandlers::after_resync() {
  if (after_.program.empty()) return;
  if (after_.run) {
    MLOG_WARN("volume '%s': after-resync-target %s is still running from the last resync: "
              "not started again", cfg_.name.c_str(), after_.program.c_str());
    return;
  }
  std::string error;
  spawn(after_, "", 0, &error, [this](const HandlerRun::Outcome& o) {
    std::string how = ended(after_, o);
    if (o.ok && !after_.timed_out) {
      MLOG_INFO("volume '%s': after-resync-target %s: exit 0", cfg_.name.c_str(),
                after_.program.c_str());
    } else {
      MLOG_ERROR("volume '%s': after-resync-target %s failed (%s)", cfg_.name.c_str(),
                 after_.program.c_str(), how.c_str());
    }
  });
}

void ResyncHandlers::tick(uint64_t now_ms) {
  ended_.clear();
  for (Slot* slot : {&before_, &after_}) {
    if (!slot->run || slot->timed_out || now_ms < slot->started_ms + cfg_.handler_timeout_ms)
      continue;
    slot->timed_out = true;
    MLOG_ERROR("volume '%s': %s %s still running after %u s (handler-timeout): killing it",
               cfg_.name.c_str(), slot->key.c_str(), slot->program.c_str(),
               cfg_.handler_timeout_ms / 1000);
    slot->run->kill(SIGKILL);
  }
}

void ResyncHandlers::stop() {
  stopped_ = true;  // a flush still under way starts nothing
  if (before_.run) {
    MLOG_WARN("volume '%s': stopping: before-resync-target %s (pid %d) still running: SIGTERM "
              "sent, not waited for", cfg_.name.c_str(), before_.program.c_str(),
              int(before_.run->pid()));
    before_.run->abandon(SIGTERM);
  }
  if (after_.run) {
    MLOG_WARN("volume '%s': stopping: after-resync-target %s (pid %d) still running: left to "
              "finish", cfg_.name.c_str(), after_.program.c_str(), int(after_.run->pid()));
    after_.run->abandon(0);
  }
}

HandlerStatus ResyncHandlers::status_of(const Slot& slot) const {
  HandlerStatus st;
  st.program = slot.program;
  st.runs = slot.runs;
  st.running = slot.run != nullptr;
  st.last_result = slot.last_result;
  st.last_unix_ms = slot.last_unix_ms;
  return st;
}

HandlerStatus ResyncHandlers::before_status() const { return status_of(before_); }
HandlerStatus ResyncHandlers::after_status() const { return status_of(after_); }

}  // namespace mirror
