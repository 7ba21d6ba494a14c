#include "control_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "clock.h"
#include "control_protocol.h"

namespace mirror {

using json = nlohmann::json;

ReplyWait reply_wait(const json& request, int answer_ms) {
  ReplyWait w;
  w.answer_ms = answer_ms;
  std::string command = request.value("command", std::string());
  const json& args = request.contains("args") ? request["args"] : json::object();
  // status (but not the peer's, relayed) and events' first line come from
  // the daemon's own state: nothing makes them wait.
  bool at_once = command == "events" ||
                 (command == "status" && !(args.is_object() && args.value("peer", false)));
  w.probe = !at_once;
  return w;
}

Status ControlClient::connect(const std::string& path, int answer_ms) {
  path_ = path;
  answer_ms_ = answer_ms;
  fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd_.valid()) return errno_error("socket");
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  if (path.size() >= sizeof un.sun_path) return Error{ENAMETOOLONG, "socket path too long"};
  std::memcpy(un.sun_path, path.data(), path.size());
  // A Unix stream connect completes in the listener's backlog, without the
  // daemon's accept, until that backlog is full: then a blocking connect
  // would wait for ever on a hung daemon (a monitoring script fills it
  // quickly), and a non-blocking one fails with EAGAIN until it drains.
  uint64_t deadline = mono_ms() + uint64_t(answer_ms);
  for (;;) {
    if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&un), sizeof un) == 0) return {};
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return errno_error("cannot reach mirrord at " + path);
    if (mono_ms() >= deadline)
      return Error{ETIMEDOUT, path + ": mirrord accepted no connection within " +
                                  std::to_string((answer_ms + 999) / 1000) +
                                  " s (its daemon hung or stopped?)"};
    ::poll(nullptr, 0, 20);
  }
}

Status ControlClient::send(const json& j) {
  std::string s = j.dump() + "\n";
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd_.get(), s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      // A request (at most 64 KiB) fits the socket's buffer: this waits
      // only on a daemon that stopped reading mid-request.
      pollfd p{fd_.get(), POLLOUT, 0};
      if (::poll(&p, 1, answer_ms_) == 0)
        return Error{ETIMEDOUT, path_ + ": mirrord does not read its requests"};
      continue;
    }
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      // The daemon closed first: it may have said why (a refused
      // connection gets one line, then the close). That line is still
      // queued here: let receive() return it.
      int e = errno;
      pollfd p{fd_.get(), POLLIN, 0};
      char c;
      if (::poll(&p, 1, 0) == 1 && ::recv(fd_.get(), &c, 1, MSG_PEEK) == 1) return {};
      errno = e;
    }
    if (n < 0) return errno_error("write to mirrord at " + path_);
    off += size_t(n);
  }
  return {};
}

Error ControlClient::silent(int answer_ms, const std::string& why) const {
  return Error{ETIMEDOUT, path_ + ": mirrord sent no answer within " +
                              std::to_string((answer_ms + 999) / 1000) + " s" + why +
                              " (its daemon hung or stopped?)"};
}

Result<json> ControlClient::receive(const ReplyWait& w) {
  uint64_t deadline = mono_ms() + uint64_t(w.answer_ms);
  for (;;) {
    size_t nl = buf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      json j = json::parse(line, nullptr, false);
      if (j.is_discarded()) return Error{EPROTO, "mirrord sent malformed JSON"};
      return j;
    }
    uint64_t now = mono_ms();
    if (now >= deadline) {
      if (!w.probe) return silent(w.answer_ms, "");
      // Waiting on purpose: go on while the daemon is alive.
      if (auto alive = daemon_answers(path_, w.answer_ms); !alive)
        return silent(w.answer_ms, ", nor to a status request meanwhile");
      deadline = mono_ms() + uint64_t(w.answer_ms);
      continue;
    }
    pollfd p{fd_.get(), POLLIN, 0};
    int r = ::poll(&p, 1, int(deadline - now));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno_error("poll");
    if (r == 0) continue;
    char tmp[65536];
    ssize_t n = ::read(fd_.get(), tmp, sizeof tmp);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return errno_error("read from mirrord at " + path_);
    if (n == 0) return Error{ECONNRESET, "mirrord closed the connection"};
    buf_.append(tmp, size_t(n));
  }
}

Status daemon_answers(const std::string& path, int answer_ms) {
  ControlClient c;
  json request = {{"version", control::kVersion}, {"command", "status"}, {"args", json::object()}};
  if (auto st = c.connect(path, answer_ms); !st) return st;
  if (auto st = c.send(request); !st) return st;
  ReplyWait w;
  w.answer_ms = answer_ms;
  auto reply = c.receive(w);
  if (!reply) return reply.error();
  return {};
}

}  // namespace mirror
