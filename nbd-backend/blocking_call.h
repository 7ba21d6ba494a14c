// BlockingCall: one call that may block for long (a kernel request that
// waits for I/O this very loop serves, e.g. netlink RECONFIGURE of an nbd
// device, which freezes its queue until the requests in flight complete)
// run on a thread of its own, its result delivered on the loop.
//
// The caller is answered within wait_ms either way: with the call's result,
// or with ETIMEDOUT while the call goes on; the result that comes after goes
// to `late` instead. wait_ms 0: no limit, `done` gets the call's result. One call at a time: start() while one runs (answered or
// not) is EBUSY.
//
// Thread: start() and every callback run on the loop's thread; only `fn`
// runs on the call's. Lifetime: the destructor joins the thread (it waits
// for a call that never returns) unless the call was abandoned; destroy it
// after the loop stopped, as with Timer.
#pragma once

#include <functional>
#include <memory>
#include <thread>

#include "result.h"
#include "unique_fd.h"
#include "uring.h"

namespace mirror {

class BlockingCall {
 public:
  explicit BlockingCall(Loop& loop) : loop_(loop) {}
  ~BlockingCall();
  BlockingCall(const BlockingCall&) = delete;
  BlockingCall& operator=(const BlockingCall&) = delete;

  // The thread has not returned yet (even if `done` was answered).
  bool running() const { return running_; }
  // Runs fn() on a thread; then done(its result) on the loop, or
  // done(ETIMEDOUT) after wait_ms and late(its result) once it returns.
  // Neither runs inside start(). Errors (nothing started): EBUSY while a
  // call runs, eventfd's errno.
  Status start(std::function<Status()> fn, uint64_t wait_ms, std::function<void(Status)> done,
               std::function<void(Status)> late);
  // For a daemon that stops while the call still blocks (a kernel call that
  // may never return while nobody serves its requests): neither `done` nor
  // `late` runs, the wake-up read is cancelled, and the destructor does not
  // join the thread, which ends with the call or with the process. `fn`
  // must not use anything it does not own by then. The loop must go on
  // running (or never run again): the cancelled read completes on it. A
  // start() after it is ESHUTDOWN. No-op when not running.
  void abandon();

 private:
  // What the call's thread writes: it outlives this object when abandoned.
  struct Shared {
    Status result;  // written by the thread before it wakes the loop
    UniqueFd wake;
    uint64_t wake_value = 0;
  };
  void on_wake(int res, uint32_t flags);
  void on_timeout();

  Loop& loop_;
  std::thread thread_;
  std::shared_ptr<Shared> shared_;
  bool running_ = false;
  bool abandoned_ = false;
  uint64_t wait_ms_ = 0;
  std::function<void(Status)> done_, late_;
  MemberCompletion<BlockingCall, &BlockingCall::on_wake> wake_completion_{this};
  Timer timer_{loop_, [this] { on_timeout(); }};
};

}  // namespace mirror
