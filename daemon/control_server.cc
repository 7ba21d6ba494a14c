#include "control_server.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>

#include "clock.h"
#include "log.h"

namespace mirror {

using json = nlohmann::json;

namespace {

// " (N more since the last line)" after a rate-limited log line, or "".
std::string left_out_note(uint64_t n) {
  return n ? " (" + std::to_string(n) + " more since the last line)" : "";
}

}  // namespace

struct ControlServer::Client final : Completion {
  ControlServer* server = nullptr;
  UniqueFd fd;
  ControlPeer peer;
  std::string in;
  std::vector<char> rbuf = std::vector<char>(16 * 1024);
  std::deque<std::string> out;
  size_t out_done = 0;
  size_t out_bytes = 0;  // in `out`, sent or not
  bool recv_posted = false, send_posted = false;
  bool busy = false;         // a request is being handled
  bool dispatching = false;  // inside on_command: a reply given at once needs no process()
  bool subscribed = false;   // `events`
  bool closing = false;
  bool closing_after_send = false;
  uint64_t last_active_ms = mono_ms();  // a byte read or sent, a reply given
  int ops = 0;
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  struct SendDone final : Completion {
    Client* c;
    void on_complete(int res, uint32_t) override { c->on_send(res); }
  } send_done;

  void on_complete(int res, uint32_t) override { on_recv(res); }

  // Nothing in progress and no stream: what idle closes and root evicts.
  bool idle() const { return !busy && !subscribed; }
  size_t unsent() const { return out_bytes - out_done; }
  // Too many replies wait for the client to read them: its next requests
  // stay unread (in the socket, then in its own send buffer) until it does.
  bool backlogged() const { return unsent() >= server->limits_.max_unsent; }

  void post_recv() {
    if (recv_posted || closing || closing_after_send || busy || backlogged()) return;
    recv_posted = true;
    ++ops;
    io_uring_prep_recv(server->loop_.sqe(this), fd.get(), rbuf.data(), rbuf.size(), 0);
  }

  void on_recv(int res) {
    recv_posted = false;
    --ops;
    if (closing) return maybe_gone();
    if (res <= 0) return close();
    last_active_ms = mono_ms();
    in.append(rbuf.data(), size_t(res));
    process();
  }

  void process() {
    while (!busy && !closing && !closing_after_send && !backlogged()) {
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
        uint64_t left_out = 0;
        if (server->perm_log_.allow(peer.uid, mono_ms(), &left_out)) {
          MLOG_WARN("control: uid %u may not run '%s'%s", unsigned(peer.uid),
                    req->spec->name.c_str(), left_out_note(left_out).c_str());
        }
        send(control::error_reply(EPERM, "'" + req->spec->name +
                                             "' changes state: only root or the control "
                                             "group may run it"));
        continue;
      }
      if (req->spec->name == "events") subscribed = true;
      busy = true;
      std::weak_ptr<bool> w = alive;
      dispatching = true;
      server->handler_->on_command(*req, peer, [this, w](json reply) {
        if (w.expired()) return;
        busy = false;
        last_active_ms = mono_ms();
        send(reply);
        if (!dispatching) process();  // else the loop above goes on
      });
      dispatching = false;
    }
    post_recv();
  }

  void send(const json& j) {
    if (closing) return;
    out.push_back(j.dump() + "\n");
    out_bytes += out.back().size();
    kick();
  }

  // Tells the client why before closing, when its replies are all out (a
  // client that reads none would never get the line: it is closed at once,
  // as is one that left its last line unread).
  void close_with(const json& why) {
    if (closing) return;
    if (!out.empty() || closing_after_send) return close();
    send(why);
    closing_after_send = true;
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
    last_active_ms = mono_ms();
    out_done += size_t(res);
    if (out_done == out.front().size()) {
      out_bytes -= out.front().size();
      out.pop_front();
      out_done = 0;
    }
    if (out.empty() && closing_after_send) return close();
    kick();
    if (!busy) process();  // reads requests again once the backlog drained
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

ControlServer::ControlServer(Loop& loop, Handler* handler, std::string control_group,
                             control::ClientLimits limits)
    : loop_(loop),
      handler_(handler),
      group_(std::move(control_group)),
      limits_(limits),
      idle_timer_(loop, [this] { close_idle(); }) {}

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
  idle_timer_.arm(idle_check_ms());
  return {};
}

uint64_t ControlServer::idle_check_ms() const { return std::max<uint64_t>(limits_.idle_ms / 4, 1); }

void ControlServer::close_idle() {
  if (stopped_) return;
  uint64_t now = mono_ms();
  for (auto& c : clients_) {
    if (c->closing || !c->idle() || now - c->last_active_ms < limits_.idle_ms) continue;
    uint64_t left_out = 0;
    if (limits_log_.allow(c->peer.uid, now, &left_out)) {
      MLOG_INFO("control: closing an idle connection of uid %u (pid %d)%s", unsigned(c->peer.uid),
                int(c->peer.pid), left_out_note(left_out).c_str());
    }
    c->close_with(control::error_reply(
        ETIMEDOUT, "no request for " + std::to_string(limits_.idle_ms / 1000) +
                       " s: closing the connection"));
  }
  idle_timer_.arm(idle_check_ms());
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
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
    MLOG_WARN("control: SO_PEERCRED: %s: connection closed", std::strerror(errno));
    return;  // closes fd
  }
  std::vector<Client*> open;
  std::vector<control::ConnectionView> views;
  for (auto& o : clients_) {
    if (o->closing || o->closing_after_send) continue;
    open.push_back(o.get());
    views.push_back({o->peer.uid, o->idle()});
  }
  control::Admission a = control::admit(views, cred.uid, limits_);
  uint64_t left_out = 0;
  if (!a.admit) {
    if (limits_log_.allow(cred.uid, mono_ms(), &left_out)) {
      MLOG_WARN("control: refused a connection from uid %u (pid %d): %s%s", unsigned(cred.uid),
                int(cred.pid), a.reason.c_str(), left_out_note(left_out).c_str());
    }
    // One line, then the close. A fresh socket's send buffer takes it whole
    // at once, so this never blocks the loop; if not, the close alone says it.
    std::string line = control::error_reply(EAGAIN, a.reason).dump() + "\n";
    (void)!::send(fd, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    return;  // closes fd
  }
  if (a.evict) {
    Client* v = open[*a.evict];
    if (limits_log_.allow(v->peer.uid, mono_ms(), &left_out)) {
      MLOG_WARN("control: %zu connections: closing an idle one of uid %u (pid %d) for root%s",
                views.size(), unsigned(v->peer.uid), int(v->peer.pid),
                left_out_note(left_out).c_str());
    }
    v->close_with(control::error_reply(
        EAGAIN, "closed to make room for root (" + std::to_string(limits_.total) +
                    " control connections open)"));
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
    if (!c->subscribed || c->closing || c->closing_after_send) continue;
    if (c->unsent() >= limits_.max_unsent) {
      // A stream its client does not read: dropping events silently would
      // leave it with a wrong picture, queueing them would grow without end.
      uint64_t left_out = 0;
      if (limits_log_.allow(c->peer.uid, mono_ms(), &left_out)) {
        MLOG_WARN("control: uid %u (pid %d) reads none of its events (%zu bytes unsent): "
                  "closing its stream%s",
                  unsigned(c->peer.uid), int(c->peer.pid), c->unsent(),
                  left_out_note(left_out).c_str());
      }
      c->close();
      continue;
    }
    c->send(event);
  }
}

void ControlServer::stop() {
  stopped_ = true;
  idle_timer_.cancel();
  if (acceptor_) acceptor_->stop();
  for (auto& c : clients_) c->close();
  if (!path_.empty()) ::unlink(path_.c_str());
  path_.clear();
}

}  // namespace mirror
