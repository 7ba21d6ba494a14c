#include "blocking_call.h"

#include <sys/eventfd.h>
#include <unistd.h>

namespace mirror {

BlockingCall::~BlockingCall() {
  if (thread_.joinable()) thread_.join();
}

Status BlockingCall::start(std::function<Status()> fn, uint64_t wait_ms,
                           std::function<void(Status)> done, std::function<void(Status)> late) {
  if (running_) return Error{EBUSY, "the last call has not returned yet"};
  if (abandoned_) return Error{ESHUTDOWN, "stopping"};
  if (thread_.joinable()) thread_.join();  // returned: its wake was handled
  auto shared = std::make_shared<Shared>();
  shared->wake = UniqueFd(::eventfd(0, EFD_CLOEXEC));
  if (!shared->wake.valid()) return errno_error("eventfd");
  shared_ = shared;
  running_ = true;
  wait_ms_ = wait_ms;
  done_ = std::move(done);
  late_ = std::move(late);
  io_uring_prep_read(loop_.sqe(&wake_completion_), shared->wake.get(), &shared->wake_value,
                     sizeof shared->wake_value, 0);
  // The thread holds `shared`, never `this`: an abandoned call may return
  // after this object is gone.
  thread_ = std::thread([shared, fn = std::move(fn)] {
    shared->result = fn();
    uint64_t one = 1;
    (void)!::write(shared->wake.get(), &one, sizeof one);
  });
  if (wait_ms) timer_.arm(wait_ms);  // 0: as long as the call takes
  return {};
}

void BlockingCall::on_timeout() {
  if (!done_) return;
  auto done = std::move(done_);
  done_ = nullptr;
  done(Error{ETIMEDOUT, "no answer within " + std::to_string(wait_ms_) + " ms"});
}

void BlockingCall::abandon() {
  if (!running_ || abandoned_) return;
  abandoned_ = true;
  timer_.cancel();
  done_ = nullptr;
  late_ = nullptr;
  // The read's buffer is the thread's too (shared_), but the completion is
  // ours: cancel it so that it never names this object once destroyed.
  io_uring_prep_cancel(loop_.sqe(nullptr), &wake_completion_, 0);
  thread_.detach();
}

void BlockingCall::on_wake(int res, uint32_t) {
  if (abandoned_) return;  // the cancelled read of an abandoned call
  running_ = false;
  timer_.cancel();
  if (thread_.joinable()) thread_.join();
  Status st = shared_->result;
  shared_.reset();
  if (res != sizeof(uint64_t)) st = Error{res < 0 ? -res : EIO, "waiting for the call's thread"};
  auto done = std::move(done_ ? done_ : late_);
  done_ = nullptr;
  late_ = nullptr;
  if (done) done(st);
}

}  // namespace mirror
