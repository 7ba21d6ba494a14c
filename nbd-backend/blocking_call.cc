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
  if (thread_.joinable()) thread_.join();  // returned: its wake was handled
  wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
  if (!wake_.valid()) return errno_error("eventfd");
  running_ = true;
  wait_ms_ = wait_ms;
  done_ = std::move(done);
  late_ = std::move(late);
  io_uring_prep_read(loop_.sqe(&wake_completion_), wake_.get(), &wake_value_, sizeof wake_value_,
                     0);
  thread_ = std::thread([this, fn = std::move(fn), wake = wake_.get()] {
    result_ = fn();
    uint64_t one = 1;
    (void)!::write(wake, &one, sizeof one);
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

void BlockingCall::on_wake(int res, uint32_t) {
  running_ = false;
  timer_.cancel();
  if (thread_.joinable()) thread_.join();
  wake_.reset();
  Status st = result_;
  if (res != sizeof wake_value_) st = Error{res < 0 ? -res : EIO, "waiting for the call's thread"};
  auto done = std::move(done_ ? done_ : late_);
  done_ = nullptr;
  late_ = nullptr;
  if (done) done(st);
}

}  // namespace mirror
