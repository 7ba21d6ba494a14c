#include "acceptor.h"

#include <cstring>

#include "log.h"

namespace mirror {

void Acceptor::start() {
  stopped_ = false;
  armed_ = true;
  io_uring_prep_multishot_accept(loop_.sqe(this), sock_.fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
}

void Acceptor::stop() {
  if (stopped_) return;
  stopped_ = true;
  if (armed_) io_uring_prep_cancel(loop_.sqe(nullptr), this, 0);
}

void Acceptor::on_complete(int res, uint32_t flags) {
  if (!(flags & IORING_CQE_F_MORE)) armed_ = false;
  if (res >= 0) {
    UniqueFd fd(res);
    if (!stopped_) on_accept_(std::move(fd));  // else: closed here
  } else if (res != -ECANCELED) {
    MLOG_WARN("accept on %s: %s", sock_.addr.to_string().c_str(), strerror(-res));
  }
  if (!armed_ && !stopped_) start();
  if (!armed_ && stopped_ && on_stopped_) on_stopped_();
}

}  // namespace mirror
