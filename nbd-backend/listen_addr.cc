#include "listen_addr.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <charconv>
#include <chrono>
#include <cstring>
#include <thread>

namespace mirror {

Result<ListenAddr> ListenAddr::parse(const std::string& text) {
  ListenAddr a;
  if (text.starts_with("unix:")) {
    a.kind = Kind::kUnix;
    a.path = text.substr(5);
    if (a.path.empty() || a.path.size() >= sizeof(sockaddr_un::sun_path))
      return Error{EINVAL, "bad unix socket path in '" + text + "'"};
    return a;
  }
  size_t colon;
  if (text.starts_with("[")) {
    size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return Error{EINVAL, "bad address '" + text + "': expected [IPv6]:PORT"};
    a.host = text.substr(1, close - 1);
    colon = close + 1;
  } else {
    colon = text.rfind(':');
    if (colon == std::string::npos)
      return Error{EINVAL, "bad address '" + text + "': expected HOST:PORT or unix:PATH"};
    a.host = text.substr(0, colon);
  }
  std::string port = text.substr(colon + 1);
  unsigned v = 0;
  auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
  if (ec != std::errc() || p != port.data() + port.size() || v > 65535)
    return Error{EINVAL, "bad port in '" + text + "'"};
  a.port = uint16_t(v);
  if (a.host.empty()) return Error{EINVAL, "missing host in '" + text + "'"};
  return a;
}

std::string ListenAddr::to_string() const {
  if (kind == Kind::kUnix) return "unix:" + path;
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

namespace {

Result<sockaddr_storage> resolve(const ListenAddr& a, socklen_t* len) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port = std::to_string(a.port);
  int r = getaddrinfo(a.host.c_str(), port.c_str(), &hints, &res);
  if (r != 0) return Error{EINVAL, "cannot resolve '" + a.host + "': " + gai_strerror(r)};
  sockaddr_storage ss{};
  std::memcpy(&ss, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo(res);
  return ss;
}

sockaddr_un unix_addr(const std::string& path) {
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  std::memcpy(un.sun_path, path.data(), path.size());
  return un;
}

}  // namespace

Result<BoundSocket> bind_listener(const ListenAddr& addr, int backlog) {
  BoundSocket b;
  b.addr = addr;
  if (addr.kind == ListenAddr::Kind::kUnix) {
    sockaddr_un un = unix_addr(addr.path);
    struct stat st {};
    if (::lstat(addr.path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode))
        return Error{EEXIST, addr.path + " exists and is not a socket"};
      // A server that was just killed may still accept for a moment: its
      // io_uring's pending accept keeps the socket alive until the ring's
      // teardown, which the kernel runs later (seconds under load). Like
      // FileLock, wait a little before calling it another server.
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
      for (;;) {
        UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&un), sizeof un) != 0) break;
        if (std::chrono::steady_clock::now() >= deadline)
          return Error{EADDRINUSE, "another server is listening on " + addr.path};
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      ::unlink(addr.path.c_str());
    }
    b.fd.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!b.fd.valid()) return errno_error("socket");
    if (::bind(b.fd.get(), reinterpret_cast<sockaddr*>(&un), sizeof un) < 0)
      return errno_error("bind " + addr.path);
  } else {
    socklen_t len = 0;
    auto ss = resolve(addr, &len);
    if (!ss) return ss.error();
    b.fd.reset(::socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!b.fd.valid()) return errno_error("socket");
    int one = 1;
    ::setsockopt(b.fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(b.fd.get(), reinterpret_cast<sockaddr*>(&*ss), len) < 0)
      return errno_error("bind " + addr.to_string());
    sockaddr_storage got{};
    socklen_t glen = sizeof got;
    ::getsockname(b.fd.get(), reinterpret_cast<sockaddr*>(&got), &glen);
    b.addr.port = ntohs(got.ss_family == AF_INET6
                            ? reinterpret_cast<sockaddr_in6*>(&got)->sin6_port
                            : reinterpret_cast<sockaddr_in*>(&got)->sin_port);
    b.is_tcp = true;
  }
  if (::listen(b.fd.get(), backlog) < 0) return errno_error("listen " + addr.to_string());
  return b;
}

Result<UniqueFd> connect_to(const ListenAddr& addr) {
  if (addr.kind == ListenAddr::Kind::kUnix) {
    sockaddr_un un = unix_addr(addr.path);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&un), sizeof un) < 0)
      return errno_error("connect " + addr.path);
    return fd;
  }
  socklen_t len = 0;
  auto ss = resolve(addr, &len);
  if (!ss) return ss.error();
  UniqueFd fd(::socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&*ss), len) < 0)
    return errno_error("connect " + addr.to_string());
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

}  // namespace mirror
