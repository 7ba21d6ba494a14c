#include "control_server.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

#include "log.h"

namespace mirror {

using json = nlohmann::json;

struct ControlServer::Client final : Completion {
  ControlServer* server = nullptr;
  UniqueFd fd;
  ControlPeer peer;
  std::string in;
  std::vector<char> rbuf = std::vector<char>(16 * 1024);
  std::deque<std::string> out;
  size_t out_done = 0;
  bool recv_posted = false, send_posted = false;
  bool busy = false;        // a request is being handled
  bool subscribed = false;  // `events`
  bool closing = false;
  int ops = 0;
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  struct SendDone final : Completion {
    Client* c;
    void on_complete(int res, uint32_t) override { c->on_send(res); }
  } send_done;

  void on_complete(int res, uint32_t) override { on_recv(res); }

  void post_recv() {
    if (recv_posted || closing || busy) return;
    recv_posted = true;
    ++ops;
    io_uring_prep_recv(server->loop_.sqe(this), fd.get(), rbuf.data(), rbuf.size(), 0);
  }

  void on_recv(int res) {
    recv_posted = false;
    --ops;
    if (closing) return maybe_gone();
    if (res <= 0) return close();
    in.append(rbuf.data(), size_t(res));
    process();
  }

  void process() {
    while (!busy && !closing) {
      size_t nl = in.find('\n');
      if (nl == std::string::npos) {
        if (in.size() > control::kMaxMessage) {
          send(control::error_reply(E2BIG, "request too large (limit 64 KiB)"));
          closing_after_send = true;
        }
        break;
      }
      std::string line = in.substr(0, nl);
      in.erase(0, nl + 1);
      if (line.empty()) continue;
      auto req = control::parse_request(line);
      if (!req) {
        send(control::error_reply(req.error().code, req.error().message));
        continue;
      }
      if (req->spec->changes_state && !peer.may_change_state) {
        MLOG_WARN("control: uid %u may not run '%s'", unsigned(peer.uid),
                  req->spec->name.c_str());
        send(control::error_reply(EPERM, "'" + req->spec->name +
                                             "' changes state: only root or the control "
                                             "group may run it"));
        continue;
      }
      if (req->spec->name == "events") subscribed = true;
      busy = true;
      std::weak_ptr<bool> w = alive;
      server->handler_->on_command(*req, peer, [this, w](json reply) {
        if (w.expired()) return;
        busy = false;
        send(reply);
        process();
      });
    }
    post_recv();
  }

  bool closing_after_send = false;

  void send(const json& j) {
    if (closing) return;
    out.push_back(j.dump() + "\n");
    kick();
  }

  void kick() {
    if (send_posted || out.empty() || closing) return;
    send_posted = true;
    ++ops;
    io_uring_prep_send(server->loop_.sqe(&send_done), fd.get(), out.front().data() + out_done,
                       out.front().size() - out_done, MSG_NOSIGNAL);
  }

  void on_send(int res) {
    send_posted = false;
    --ops;
    if (closing) return maybe_gone();
    if (res < 0) return close();
    out_done += size_t(res);
    if (out_done == out.front().size()) {
      out.pop_front();
      out_done = 0;
    }
    if (out.empty() && closing_after_send) return close();
    kick();
  }

  void close() {
    if (closing) return;
    closing = true;
    ::shutdown(fd.get(), SHUT_RDWR);
    maybe_gone();
  }

  void maybe_gone() {
    if (closing && ops == 0) server->client_closed(this);
  }
};

ControlServer::ControlServer(Loop& loop, Handler* handler, std::string control_group)
    : loop_(loop), handler_(handler), group_(std::move(control_group)) {}

ControlServer::~ControlServer() {
  if (!path_.empty()) ::unlink(path_.c_str());
}

Status ControlServer::listen(const std::string& path) {
  std::string dir = path.substr(0, path.rfind('/'));
  if (!dir.empty()) ::mkdir(dir.c_str(), 0755);
  ListenAddr a;
  a.kind = ListenAddr::Kind::kUnix;
  a.path = path;
  auto sock = bind_listener(a, 16);
  if (!sock) return sock.error();
  // Anyone may connect and ask for status; SO_PEERCRED guards the rest.
  ::chmod(path.c_str(), 0666);
  path_ = path;
  acceptor_ = std::make_unique<Acceptor>(loop_, std::move(*sock),
                                         [this](UniqueFd fd) { on_accept(fd.release()); });
  acceptor_->start();
  return {};
}

bool ControlServer::authorised(const ControlPeer& p) const {
  if (p.uid == 0) return true;
  if (group_.empty()) return false;
  group* g = ::getgrnam(group_.c_str());
  if (!g) return false;
  if (p.gid == g->gr_gid) return true;
  // Supplementary groups of the peer process, as the kernel sees them.
  std::ifstream f("/proc/" + std::to_string(p.pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("Groups:", 0) != 0) continue;
    std::istringstream ss(line.substr(7));
    unsigned gid;
    while (ss >> gid) {
      if (gid == g->gr_gid) return true;
    }
  }
  return false;
}

void ControlServer::on_accept(int fd) {
  auto c = std::make_unique<Client>();
  c->server = this;
  c->fd.reset(fd);
  c->send_done.c = c.get();
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || clients_.size() >= 64) {
    return;  // closes fd
  }
  c->peer.uid = cred.uid;
  c->peer.gid = cred.gid;
  c->peer.pid = cred.pid;
  c->peer.may_change_state = authorised(c->peer);
  Client* raw = c.get();
  clients_.push_back(std::move(c));
  raw->post_recv();
}

void ControlServer::client_closed(Client* c) {
  loop_.defer([this, c] {
    auto it = std::find_if(clients_.begin(), clients_.end(),
                           [c](const auto& p) { return p.get() == c; });
    if (it != clients_.end()) clients_.erase(it);
  });
}

void ControlServer::broadcast(const json& event) {
  for (auto& c : clients_) {
    if (c->subscribed && !c->closing) c->send(event);
  }
}

void ControlServer::stop() {
  stopped_ = true;
  if (acceptor_) acceptor_->stop();
  for (auto& c : clients_) c->close();
  if (!path_.empty()) ::unlink(path_.c_str());
  path_.clear();
}

}  // namespace mirror
