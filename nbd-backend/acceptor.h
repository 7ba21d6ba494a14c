// Acceptor: accepts connections on a listening socket with io_uring's
// multishot accept, re-arming it whenever the kernel ends the multishot,
// and hands each new fd to a callback. Used by the NBD server, the
// replication listener and the control socket.
//
// Lifetime: stop() cancels the accept; the object must outlive the
// cancellation's completion (owners keep it until their loop stops).
#pragma once

#include <functional>

#include "listen_addr.h"
#include "unique_fd.h"
#include "uring.h"

namespace mirror {

class Acceptor final : public Completion {
 public:
  using OnAccept = std::function<void(UniqueFd fd)>;
  Acceptor(Loop& loop, BoundSocket sock, OnAccept on_accept)
      : loop_(loop), sock_(std::move(sock)), on_accept_(std::move(on_accept)) {}

  void start();
  void stop();
  // Runs once the accept is no longer posted after stop().
  void set_on_stopped(std::function<void()> fn) { on_stopped_ = std::move(fn); }
  // An accept is posted (after stop(): until its cancellation completed).
  bool armed() const { return armed_; }
  const BoundSocket& socket() const { return sock_; }

  void on_complete(int res, uint32_t flags) override;

 private:
  Loop& loop_;
  BoundSocket sock_;
  OnAccept on_accept_;
  std::function<void()> on_stopped_;
  bool armed_ = false;
  bool stopped_ = false;
};

}  // namespace mirror
