// HandlerRun: one run of an operator's handler program (DRBD's handlers,
// docs/configuration.md "Handlers"), watched from the event loop without
// ever blocking it.
//
// The program is started with posix_spawn in a process group of its own,
// stdin /dev/null, stdout and stderr mirrord's own (its log), no other file
// descriptor, signals at their defaults and unblocked, the environment
// mirrord's plus the given variables. Its exit is seen through a pidfd
// polled on the loop (reaped there: no zombie); kill() sends a signal to
// its whole group (a shell script's children too).
//
// Thread: the Loop's. Lifetime: the object is the poll's Completion, so it
// must live until done() ran, or until the loop stopped (at mirrord's stop:
// see abandon()).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "result.h"
#include "unique_fd.h"
#include "uring.h"

namespace mirror {

class HandlerRun final : public Completion {
 public:
  // How a run ended: ok only for exit status 0. `how` is "exit 3",
  // "killed by signal 9 (Killed)", ...
  struct Outcome {
    bool ok = false;
    std::string how;
  };
  using Done = std::function<void(const Outcome&)>;

  // Spawns `program` (argv: the program alone) with `env` added to the
  // environment. `done` runs on the loop once the program exited.
  static Result<std::unique_ptr<HandlerRun>> start(
      Loop& loop, const std::string& program,
      const std::vector<std::pair<std::string, std::string>>& env, Done done);
  ~HandlerRun() = default;

  pid_t pid() const { return pid_; }
  bool running() const { return running_; }
  // Sends `sig` to the program's process group (while it has not been reaped).
  void kill(int sig);
  // mirrord stops with the program still running: `sig` to its group (0:
  // none), and its exit is no longer awaited. The process, once mirrord
  // exits, is reparented and reaped by init (or systemd, which also stops
  // what is left of the unit's processes).
  void abandon(int sig);

  void on_complete(int res, uint32_t flags) override;

 private:
  HandlerRun(Loop& loop, Done done) : loop_(loop), done_(std::move(done)) {}
  void poll();

  Loop& loop_;
  Done done_;
  pid_t pid_ = -1;
  UniqueFd pidfd_;
  bool running_ = false;
};

}  // namespace mirror
