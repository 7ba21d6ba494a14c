#include "uring.h"

#include <cerrno>

#include "log.h"

namespace mirror {

Result<std::unique_ptr<Loop>> Loop::create(unsigned entries) {
  std::unique_ptr<Loop> loop(new Loop());
  io_uring_params p{};
  // One thread submits and reaps; task work runs when we wait. Older kernels
  // reject these flags: fall back to a plain ring.
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL;
  int r = io_uring_queue_init_params(entries, &loop->ring_, &p);
  if (r == -EINVAL) {
    p = io_uring_params{};
    r = io_uring_queue_init_params(entries, &loop->ring_, &p);
  }
  if (r < 0) return errno_error("io_uring_queue_init", -r);
  loop->initialised_ = true;
  return loop;
}

Loop::~Loop() {
  if (initialised_) io_uring_queue_exit(&ring_);
}

io_uring_sqe* Loop::sqe(Completion* c) {
  io_uring_sqe* s = io_uring_get_sqe(&ring_);
  while (!s) {
    io_uring_submit(&ring_);
    s = io_uring_get_sqe(&ring_);
  }
  io_uring_sqe_set_data(s, c);
  return s;
}

void Loop::run_deferred() {
  while (!deferred_.empty()) {
    running_.swap(deferred_);
    for (auto& fn : running_) fn();
    running_.clear();
  }
}

void Loop::run() {
  stopped_ = false;
  while (!stopped_) {
    run_deferred();
    if (stopped_) break;
    int r = io_uring_submit_and_wait(&ring_, 1);
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
      MLOG_ERROR("io_uring_submit_and_wait: %s", strerror(-r));
      stopped_ = true;
      break;
    }
    io_uring_cqe* cqe;
    unsigned head;
    // Each cqe is consumed before its handler runs; handlers may queue new
    // submissions, which go out with the next io_uring_submit_and_wait.
    io_uring_for_each_cqe(&ring_, head, cqe) {
      auto* c = static_cast<Completion*>(io_uring_cqe_get_data(cqe));
      int res = cqe->res;
      uint32_t flags = cqe->flags;
      io_uring_cq_advance(&ring_, 1);
      if (c) c->on_complete(res, flags);
    }
  }
  run_deferred();
}

Timer::~Timer() { cancel(); }

void Timer::submit(uint64_t ms) {
  ts_.tv_sec = ms / 1000;
  ts_.tv_nsec = (ms % 1000) * 1000000;
  armed_ = true;
  io_uring_prep_timeout(loop_.sqe(this), &ts_, 0, 0);
}

void Timer::arm(uint64_t ms) {
  if (cancelling_) {  // the old timeout is still posted: re-arm after it
    rearm_ = true;
    rearm_ms_ = ms;
    return;
  }
  if (armed_) return;
  submit(ms);
}

void Timer::cancel() {
  rearm_ = false;
  if (!armed_ || cancelling_) return;
  cancelling_ = true;
  io_uring_prep_timeout_remove(loop_.sqe(nullptr), reinterpret_cast<uint64_t>(this), 0);
}

void Timer::on_complete(int res, uint32_t) {
  armed_ = false;
  if (cancelling_) {  // fired or removed: either way it was cancelled
    cancelling_ = false;
    if (rearm_) {
      rearm_ = false;
      submit(rearm_ms_);
    }
    return;
  }
  if (res == -ECANCELED) return;
  fn_();
}

}  // namespace mirror
