// NbdServer: accepts NBD clients on its listeners and serves its exports,
// all on one io_uring Loop. Owns the connections; does not own backends.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "acceptor.h"
#include "backend.h"
#include "codec.h"
#include "listen_addr.h"
#include "result.h"
#include "tls.h"
#include "unique_fd.h"
#include "uring.h"

namespace mirror {

class Connection;

struct ServerLimits {
  uint32_t max_connections = 512;
  uint32_t max_requests_per_connection = 256;      // in flight, then stop reading
  size_t max_buffered_bytes_per_connection = 64 << 20;  // payloads held, ditto
  uint32_t handshake_timeout_ms = 30000;
};

class NbdServer final : public nbd::ExportCatalog {
 public:
  NbdServer(Loop& loop, ServerLimits limits = {});
  ~NbdServer() override;

  // The first export added is the default one (the empty name selects it).
  void add_export(nbd::ExportInfo info, Backend* backend);
  // A metadata context besides base:allocation (which the Backend answers),
  // answered synchronously from memory by `source`. Add before serving.
  using MetaSource = std::function<void(uint64_t offset, uint32_t length, uint32_t max_extents,
                                        std::vector<nbd::Extent>* out)>;
  void add_meta_context(std::string_view export_name, std::string context, MetaSource source);
  // The source of context `id` (1-based, as negotiated); nullptr for the
  // Backend's base:allocation.
  const MetaSource* meta_source(const nbd::ExportInfo* e, uint32_t id) const;
  // NBD_OPT_STARTTLS (docs/nbd-server.md, "TLS"): `mode` applies to every
  // listener; `ctx` (this server's certificate, and the CA client
  // certificates must chain to, if any) is required unless mode is kOff.
  // Set before serving.
  void set_tls(nbd::TlsMode mode, std::shared_ptr<TlsContext> ctx);
  nbd::TlsMode tls_mode() const { return tls_mode_; }
  const std::shared_ptr<TlsContext>& tls_context() const { return tls_ctx_; }
  // Takes a bound listening socket and starts accepting on it.
  void add_listener(BoundSocket sock);
  // Serves export `name` on `fd`, a connected stream socket whose peer skips
  // the handshake (the kernel's NBD client: see kernel_nbd.h). The peer gets
  // exactly what a network client would: kernel_flags(name) describes it.
  // Not subject to max_connections: the caller chose the count. EINVAL if
  // there is no such export or the server is shutting down.
  Status adopt(UniqueFd fd, std::string_view name, std::string peer);
  // The transmission flags (NBD_FLAG_*) a peer that did not negotiate must be
  // told out of band, e.g. NBD_ATTR_SERVER_FLAGS; 0 if there is no such export.
  uint16_t kernel_flags(std::string_view name) const;

  // Stops accepting, lets every connection finish the requests it has, then
  // closes them and calls `done` (on the loop).
  void shutdown(std::function<void()> done);

  // ExportCatalog.
  std::vector<const nbd::ExportInfo*> list() const override;
  const nbd::ExportInfo* find(std::string_view name) const override;

  Backend* backend_for(const nbd::ExportInfo* e) const;
  // Changes an export's mode at runtime (a mirrored volume changing role).
  // Connections already open keep their negotiated flags, but requests are
  // checked against the live mode: writes to a now read-only export get
  // NBD_EPERM.
  void set_read_only(std::string_view name, bool read_only);
  // An export's size changed (online resize): requests are checked against
  // the live size, and new connections are told it. Clients connected before
  // keep the size they negotiated (NBD has no way to tell them) but may use
  // the new area. No-op for an unknown name.
  void set_size(std::string_view name, uint64_t size);
  Loop& loop() { return loop_; }
  const ServerLimits& limits() const { return limits_; }
  size_t connection_count() const { return connections_.size(); }

  // Called by a Connection once it has no operation outstanding.
  void connection_closed(Connection* c);

 private:
  struct Export {
    nbd::ExportInfo info;
    Backend* backend;
    std::vector<MetaSource> sources;  // per info.meta_contexts; empty: the Backend's
  };
  void on_accept(bool tcp, UniqueFd fd);
  // At max_connections: closes the oldest connection still negotiating, to
  // make room; false if every one is serving (the new one is refused).
  bool make_room();
  void tick();
  void maybe_finish_shutdown();

  Loop& loop_;
  ServerLimits limits_;
  std::vector<std::unique_ptr<Export>> exports_;
  std::vector<std::unique_ptr<Acceptor>> listeners_;
  std::unordered_set<Connection*> connections_;
  Timer tick_timer_;
  // Connections dropped or refused at the limit since the last log line
  // (one line a second at most: a flood must not flood the log too).
  uint64_t limit_dropped_ = 0, limit_refused_ = 0, limit_logged_ms_ = 0;
  bool shutting_down_ = false;
  nbd::TlsMode tls_mode_ = nbd::TlsMode::kOff;
  std::shared_ptr<TlsContext> tls_ctx_;
  std::function<void()> shutdown_done_;
};

}  // namespace mirror
