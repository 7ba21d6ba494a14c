// ControlServer: the daemon's control socket. Clients send one JSON request
// per line (control_protocol.h) and get one reply line each; `events`
// turns the connection into a stream of state changes.
//
// Authorisation comes from the kernel (SO_PEERCRED), not from file modes:
// any local user may ask for status, only root or members of the configured
// group may change state. Requests are size-bounded; malformed ones get an
// error reply and the daemon carries on.
//
// One local user must not take the socket from root (control_limits.h):
// connections are capped per uid and in total (root is always admitted),
// idle ones are closed, and a client's requests are not read while its
// unread replies exceed a bound.
//
// Thread: the Loop's. Handler calls may reply later (asynchronously).
#pragma once

#include <sys/types.h>

#include <deque>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "acceptor.h"
#include "control_limits.h"
#include "control_protocol.h"
#include "listen_addr.h"
#include "unique_fd.h"
#include "uring.h"

namespace mirror {

struct ControlPeer {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
  bool may_change_state = false;
};

class ControlServer {
 public:
  using Respond = std::function<void(nlohmann::json reply)>;
  class Handler {
   public:
    virtual void on_command(const control::Request& req, const ControlPeer& peer,
                            Respond respond) = 0;

   protected:
    ~Handler() = default;
  };

  ControlServer(Loop& loop, Handler* handler, std::string control_group,
                control::ClientLimits limits = {});
  ~ControlServer();

  void set_handler(Handler* h) { handler_ = h; }
  // Binds the Unix socket (replacing a stale one) and starts accepting.
  Status listen(const std::string& path);
  // Sends `event` to every client that ran `events`.
  void broadcast(const nlohmann::json& event);
  void stop();

 private:
  struct Client;
  void on_accept(int fd);
  void client_closed(Client* c);
  void close_idle();
  uint64_t idle_check_ms() const;
  bool authorised(const ControlPeer& p) const;

  Loop& loop_;
  Handler* handler_;
  std::string group_;
  std::string path_;
  std::unique_ptr<Acceptor> acceptor_;
  std::vector<std::unique_ptr<Client>> clients_;  // in the order they were accepted
  control::ClientLimits limits_;
  control::LogRateLimit perm_log_;    // EPERM refusals, per uid
  control::LogRateLimit limits_log_;  // connections refused or closed, per uid
  Timer idle_timer_;
  bool stopped_ = false;
};

}  // namespace mirror
