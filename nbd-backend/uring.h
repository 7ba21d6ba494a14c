// The io_uring event loop. One Loop per thread; every file and socket
// operation on the data path is submitted here. A submission's user_data is
// the Completion that handles its result, which must stay alive until its
// completion has run (owners count their outstanding operations).
#pragma once

#include <liburing.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "result.h"

namespace mirror {

class Completion {
 public:
  // res is the cqe's result (bytes, or a negative errno); flags its flags.
  virtual void on_complete(int res, uint32_t flags) = 0;

 protected:
  ~Completion() = default;
};

// Routes a completion to a member function, without an allocation.
template <typename T, void (T::*Method)(int, uint32_t)>
class MemberCompletion final : public Completion {
 public:
  explicit MemberCompletion(T* owner) : owner_(owner) {}
  void on_complete(int res, uint32_t flags) override { (owner_->*Method)(res, flags); }

 private:
  T* owner_;
};

class Loop {
 public:
  static Result<std::unique_ptr<Loop>> create(unsigned entries = 1024);
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // A free submission slot bound to `c` (nullptr: the result is ignored).
  // Never fails: a full submission queue is submitted to make room.
  io_uring_sqe* sqe(Completion* c);

  // Runs `fn` after the current batch of completions. Used so that an
  // operation never completes inside the call that started it.
  void defer(std::function<void()> fn) { deferred_.push_back(std::move(fn)); }

  // Processes completions until stop() is called.
  void run();
  void stop() { stopped_ = true; }
  bool stopped() const { return stopped_; }

 private:
  Loop() = default;
  void run_deferred();

  io_uring ring_{};
  bool initialised_ = false;
  bool stopped_ = false;
  std::vector<std::function<void()>> deferred_;
  std::vector<std::function<void()>> running_;
};

// A one-shot timer on the loop. arm() while pending keeps the pending shot;
// arm() after cancel() takes effect once the cancelled timeout has
// completed. It must outlive its pending completion: destroy it only after
// it fired or after the loop stopped.
class Timer final : public Completion {
 public:
  Timer(Loop& loop, std::function<void()> fn) : loop_(loop), fn_(std::move(fn)) {}
  ~Timer();
  void arm(uint64_t ms);
  void cancel();
  bool armed() const { return (armed_ && !cancelling_) || rearm_; }
  void on_complete(int res, uint32_t flags) override;

 private:
  void submit(uint64_t ms);

  Loop& loop_;
  std::function<void()> fn_;
  __kernel_timespec ts_{};
  bool armed_ = false;       // a timeout is posted
  bool cancelling_ = false;  // ... and its removal was requested
  bool rearm_ = false;       // arm() came while cancelling
  uint64_t rearm_ms_ = 0;
};

}  // namespace mirror
