#include "server.h"

#include <utility>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>

#include "clock.h"
#include "connection.h"
#include "log.h"

namespace mirror {

namespace {
std::string peer_name(int fd, bool tcp) {
  if (!tcp) return "unix:" + std::to_string(fd);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return "?";
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
  }
  return std::string(host) + ":" + std::to_string(port);
}
}  // namespace

NbdServer::NbdServer(Loop& loop, ServerLimits limits)
    : loop_(loop), limits_(limits), tick_timer_(loop, [this] { tick(); }) {}

NbdServer::~NbdServer() {
  for (Connection* c : connections_) delete c;
}

void NbdServer::add_export(nbd::ExportInfo info, Backend* backend) {
  info.size = backend->size();
  info.read_only = info.read_only || backend->read_only();
  info.can_trim = backend->can_trim();
  exports_.push_back(std::make_unique<Export>(Export{std::move(info), backend}));
}

void NbdServer::set_tls(nbd::TlsMode mode, std::shared_ptr<TlsContext> ctx) {
  tls_mode_ = ctx ? mode : nbd::TlsMode::kOff;
  tls_ctx_ = std::move(ctx);
}

void NbdServer::add_meta_context(std::string_view export_name, std::string context,
                                 MetaSource source) {
  for (auto& e : exports_) {
    if (e->info.name != export_name) continue;
    e->info.meta_contexts.push_back(std::move(context));
    e->sources.resize(e->info.meta_contexts.size());
    e->sources.back() = std::move(source);
  }
}

const NbdServer::MetaSource* NbdServer::meta_source(const nbd::ExportInfo* info,
                                                    uint32_t id) const {
  for (const auto& e : exports_) {
    if (&e->info != info) continue;
    if (id == 0 || id > e->sources.size() || !e->sources[id - 1]) return nullptr;
    return &e->sources[id - 1];
  }
  return nullptr;
}

std::vector<const nbd::ExportInfo*> NbdServer::list() const {
  std::vector<const nbd::ExportInfo*> v;
  for (const auto& e : exports_) v.push_back(&e->info);
  return v;
}

const nbd::ExportInfo* NbdServer::find(std::string_view name) const {
  if (exports_.empty()) return nullptr;
  if (name.empty()) return &exports_.front()->info;
  for (const auto& e : exports_) {
    if (e->info.name == name) return &e->info;
  }
  return nullptr;
}

void NbdServer::set_read_only(std::string_view name, bool read_only) {
  for (auto& e : exports_) {
    if (e->info.name == name) e->info.read_only = read_only;
  }
}

void NbdServer::set_size(std::string_view name, uint64_t size) {
  for (auto& e : exports_) {
    if (e->info.name == name) e->info.size = size;
  }
}

Backend* NbdServer::backend_for(const nbd::ExportInfo* info) const {
  for (const auto& e : exports_) {
    if (&e->info == info) return e->backend;
  }
  return nullptr;
}

void NbdServer::add_listener(BoundSocket sock) {
  bool tcp = sock.is_tcp;
  auto a = std::make_unique<Acceptor>(loop_, std::move(sock),
                                      [this, tcp](UniqueFd fd) { on_accept(tcp, std::move(fd)); });
  a->set_on_stopped([this] { maybe_finish_shutdown(); });
  a->start();
  listeners_.push_back(std::move(a));
  tick_timer_.arm(1000);
}

void NbdServer::on_accept(bool tcp, UniqueFd fd) {
  if (shutting_down_) return;  // fd closes here
  if (connections_.size() >= limits_.max_connections && !make_room()) {
    ++limit_refused_;
    if (uint64_t now = mono_ms(); now - limit_logged_ms_ >= 1000) {
      limit_logged_ms_ = now;
      MLOG_WARN("refusing connections: %u already, every one serving (%llu refused since the "
                "last such line)", limits_.max_connections,
                static_cast<unsigned long long>(std::exchange(limit_refused_, 0)));
    }
    return;
  }
  if (tcp) {
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  std::string peer = peer_name(fd.get(), tcp);
  auto* c = new Connection(*this, std::move(fd), std::move(peer), mono_ms());
  connections_.insert(c);
  c->start();
}

Status NbdServer::adopt(UniqueFd fd, std::string_view name, std::string peer) {
  const nbd::ExportInfo* info = find(name);
  if (info == nullptr) return Error{EINVAL, "no export named '" + std::string(name) + "'"};
  if (shutting_down_) return Error{EINVAL, "the NBD server is shutting down"};
  auto* c = new Connection(*this, std::move(fd), std::move(peer), mono_ms());
  connections_.insert(c);
  c->start_transmission(info, backend_for(info));
  return {};
}

uint16_t NbdServer::kernel_flags(std::string_view name) const {
  const nbd::ExportInfo* info = find(name);
  return info ? info->transmission_flags(false) : 0;
}

bool NbdServer::make_room() {
  // Connections that opened and never finished their handshake (a local
  // user's idle sockets) would otherwise lock every real client out until
  // they time out; a real client negotiates in milliseconds. The oldest
  // goes first (closing ones, not yet reaped, are not negotiating).
  Connection* oldest = nullptr;
  for (Connection* c : connections_)
    if (c->in_handshake() && (!oldest || c->started_ms() < oldest->started_ms())) oldest = c;
  if (!oldest) return false;
  ++limit_dropped_;
  if (uint64_t now = mono_ms(); now - limit_logged_ms_ >= 1000) {
    limit_logged_ms_ = now;
    MLOG_WARN("%u connections: dropping the oldest still negotiating to make room (%s, %llu ms "
              "old; %llu dropped since the last such line)",
              limits_.max_connections, oldest->peer().c_str(),
              static_cast<unsigned long long>(now - oldest->started_ms()),
              static_cast<unsigned long long>(std::exchange(limit_dropped_, 0)));
  }
  oldest->close("dropped at the connection limit: still negotiating");
  return true;
}

void NbdServer::tick() {
  uint64_t now = mono_ms();
  std::vector<Connection*> stale;
  for (Connection* c : connections_) {
    if (c->in_handshake() && now - c->started_ms() > limits_.handshake_timeout_ms)
      stale.push_back(c);
  }
  for (Connection* c : stale) {
    MLOG_INFO("%s: handshake timed out", c->peer().c_str());
    c->close("handshake timeout");
  }
  if (!shutting_down_) tick_timer_.arm(1000);
}

void NbdServer::connection_closed(Connection* c) {
  // Destroy outside the connection's own call stack.
  loop_.defer([this, c] {
    connections_.erase(c);
    delete c;
    maybe_finish_shutdown();
  });
}

void NbdServer::shutdown(std::function<void()> done) {
  shutting_down_ = true;
  shutdown_done_ = std::move(done);
  tick_timer_.cancel();
  for (auto& l : listeners_) {
    // Cancels the multishot accept; the socket closes with the listener.
    l->stop();
    if (l->socket().addr.kind == ListenAddr::Kind::kUnix) ::unlink(l->socket().addr.path.c_str());
  }
  std::vector<Connection*> all(connections_.begin(), connections_.end());
  for (Connection* c : all) c->drain();
  maybe_finish_shutdown();
}

void NbdServer::maybe_finish_shutdown() {
  if (!shutting_down_ || !connections_.empty() || !shutdown_done_) return;
  for (auto& l : listeners_) {
    if (l->armed()) return;
  }
  auto done = std::move(shutdown_done_);
  shutdown_done_ = nullptr;
  done();
}

}  // namespace mirror
