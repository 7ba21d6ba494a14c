#include "volume.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <csignal>
#include <cstring>

#include "clock.h"
#include "log.h"
#include "volume_internal.h"

namespace mirror {

using volume_internal::kControlIdBit;

namespace {
constexpr uint64_t kHandshakeTimeoutMs = 10000;
constexpr uint32_t kDialTimeoutMs = 3000;
constexpr uint32_t kMaxBackoffMs = 1000;  // a returning peer resyncs within a second
// A refused connection is the peer's host answering with no listener (the
// daemon restarts): one SYN and one RST, nothing worth backing off from, and
// it comes back soonest. Retried this often, on a timer of its own (not the
// 100 ms tick), so a restarted peer's resync starts within ~25 ms of its
// listening. 40 refused connects a second cost both hosts next to nothing.
constexpr uint32_t kRefusedBackoffMs = 25;
// After a disk failed a mirrored write (the secondary's: EIO, ENOSPC) a new
// session fails the same way at once: retry ever more slowly, up to this,
// until the operator fixes the disk or frees space.
constexpr uint32_t kDiskRetryMaxBackoffMs = 10000;
constexpr size_t kMaxHandshakes = 8;
// A peer's retry-after (ERROR's offset) is obeyed up to this long: a wrong
// value from a peer never keeps the link down for good.
constexpr uint64_t kMaxRetryAfterMs = 300000;

// A secondary that heard nothing from its primary (which pings every
// ack-timeout / 3) for this many ack-timeouts takes it for gone.
constexpr uint64_t kPrimarySilenceAcks = 2;

// Every replication socket: no Nagle delay, and TCP keepalive, so a session
// whose peer's host vanished (power off, network cut: no FIN, no RST) ends
// even while idle (a split, both nodes secondary), after about ack-timeout
// + 3 s of unanswered probes. Keepalive only probes an idle connection: it
// never ends one whose peer is alive but slow.
void set_link_socket_options(int fd, uint32_t ack_timeout_ms) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int idle = std::max<int>(1, static_cast<int>(ack_timeout_ms / 1000));
  int interval = 1, count = 3;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}
}  // namespace

struct Volume::Dialer final : Completion {
  Volume* v = nullptr;
  UniqueFd fd;
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  __kernel_timespec timeout{};
  bool busy = false;
  // One dial by the node that does not dial (the operator's rejoin on it):
  // the peer that dials may be holding off for a retry-after it gave.
  bool once = false;
  uint64_t next_ms = 0;
  uint32_t backoff_ms = 100;
  void on_complete(int res, uint32_t) override { v->on_dial(res); }
};

Volume::Volume(Loop& loop, VolumeConfig& cfg, const NodeConfig& self,
               const NodeConfig& peer, Options opts)
    : loop_(loop), cfg_(cfg), self_(self), peer_(peer), opts_(opts), gate_(loop),
      tick_timer_(loop, [this] { tick(); }), dial_timer_(loop, [this] {
        now_ms_ = mono_ms();
        dial();
      }) {}

Volume::~Volume() = default;

Result<std::unique_ptr<Volume>> Volume::open(Loop& loop, VolumeConfig& cfg,
                                             const NodeConfig& self, Options opts) {
  const NodeConfig* peer = cfg.peer_of(self.name);
  if (!peer) return Error{EINVAL, cfg.file + ": node '" + self.name + "' has no peer"};
  if (self.metadata == self.backing)
    return Error{EINVAL, cfg.file + ": node '" + self.name +
                             "': metadata and backing are the same file; the metadata needs a "
                             "file of its own"};
  std::unique_ptr<Volume> v(new Volume(loop, cfg, self, *peer, opts));
  Volume* vp = v.get();
  v->handlers_ = std::make_unique<ResyncHandlers>(
      loop, cfg, self, *peer, [vp](std::function<void(int)> done) {
        // Through the fault injector, if any: its power loss keeps what
        // this flush made durable.
        vp->disk_->flush(FnDone::make(std::move(done)));
      });
  // A before-resync-target that exited 0: the plan it waited for may go
  // ahead now, not when the refusal's retry-after is over (if this node
  // dials; the primary's dialer otherwise comes back as asked).
  v->handlers_->on_ready = [vp] { vp->dial_now(); };
  auto file = FileBackend::open(loop, self.backing, {.size = cfg.size});
  if (!file) return file.error();
  v->file_ = std::move(*file);
  v->disk_ = v->file_.get();
  if (opts.faults && opts.faults->any_data()) {
    v->faults_ = std::make_unique<FaultBackend>(loop, *v->file_, v->file_->fd(), *opts.faults,
                                                opts.power_loss);
    v->disk_ = v->faults_.get();
  }
  if (opts.faults && opts.faults->any())
    MLOG_WARN("volume '%s': TEST FAULTS injected into %s and %s: %s", cfg.name.c_str(),
              self.backing.c_str(), self.metadata.c_str(), opts.faults->to_string().c_str());
  MetaIdentity id{cfg.name, cfg.size, self.name, peer->name, cfg.granularity, cfg.al_extent};
  BitmapOpenReport report;
  auto bm = Bitmap::open(loop, self.metadata, id, &report);
  if (!bm) return bm.error();
  v->bitmap_ = std::move(*bm);
  if (opts.power_loss) v->bitmap_->set_power_loss(opts.power_loss);
  if (opts.faults && opts.faults->meta_eio_after)
    v->bitmap_->set_fail_commits_after(opts.faults->meta_eio_after);
  if (opts.faults && opts.faults->meta_delay_ms)
    v->bitmap_->set_commit_delay_ms(opts.faults->meta_delay_ms);
  if (auto st = v->prepare_metadata(report); !st) return st.error();
  // The map of regions changed since the last backup: a file of its own in
  // the metadata format, opened on both roles (a demote makes a primary a
  // secondary at runtime). New or unreadable, every region counts as
  // changed, so the next incremental backup copies everything.
  BitmapOpenReport changes_report;
  auto changes = Bitmap::open(loop, self.metadata + ".backup", id, &changes_report);
  if (!changes) return changes.error();
  v->changes_ = std::move(*changes);
  if (changes_report.full_resync && !changes_report.created)
    MLOG_WARN("%s: every region counts as changed since the last backup",
              changes_report.reason.c_str());
  v->changes_->clear_active(0, cfg.size);
  // A primary's writes are not tracked in this map: every region counts as
  // changed from the moment a node is primary, so when it is a secondary
  // again (demote) the next incremental backup cannot miss what it wrote.
  if (v->role_ == Role::kPrimary) v->changes_->set_all_dirty();
  if (auto st = v->changes_->flush_sync(); !st) return st.error();
  // Created once: a retired applier may still hold them after a role change.
  v->tracked_ = std::make_unique<ChangeTracker>(*v->disk_, *v->changes_);
  v->local_ = std::make_unique<LocalWriteGate>(loop, *v->tracked_, *v->bitmap_);
  if (v->role_ == Role::kPrimary) {
    v->make_replicator();
  } else {
    v->make_applier();
  }
  return v;
}

void Volume::make_replicator() {
  replicator_ = std::make_unique<Replicator>(loop_, *disk_, *bitmap_, cfg_);
  replicator_->on_link_failure = [this](const std::string& why) {
    if (active_) active_->conn->close(why);
  };
  gate_.set(replicator_.get(), !unconfirmed_);
}

void Volume::make_applier() {
  applier_ = std::make_unique<SecondaryApplier>(loop_, *tracked_, *bitmap_);
  applier_->on_split = [this](uint64_t when, std::function<void()> then) {
    split_unix_ms_ = when;
    MLOG_INFO("volume '%s': split by the primary: this copy is a stable point-in-time image",
              cfg_.name.c_str());
    if (opts_.faults && opts_.faults->stop_after_split) {
      then = [this, then = std::move(then)] {
        then();  // the image's flush issued; its answer goes out once it is done
        MLOG_WARN("volume '%s': MIRRORD_FAULTS=stop-after-split: stopping before the split's "
                  "answer (SIGCONT resumes)",
                  cfg_.name.c_str());
        ::raise(SIGSTOP);
      };
    }
    // The split is answered once a reader of the kernel device sees it.
    if (role_ != Role::kSecondary || !on_image_changed) return then();
    on_image_changed(std::move(then));
  };
  applier_->on_sync_done = [this](bool was_inconsistent) {
    if (role_ == Role::kSecondary && on_image_changed) on_image_changed([] {});
    if (was_inconsistent) handlers_->after_resync();
  };
  local_->set_writable(false);
  gate_.set(local_.get(), false);
}

void Volume::changed_extents(uint64_t offset, uint32_t length, uint32_t max_extents,
                             std::vector<nbd::Extent>* out) const {
  if (role_ != Role::kSecondary) {
    out->push_back({length, 1});
    return;
  }
  mirror::changed_extents(*changes_, offset, length, max_extents, out);
}

Result<std::shared_ptr<TlsContext>> Volume::load_tls(std::string* warning) const {
  auto ctx = TlsContext::create({cfg_.tls_ca, self_.tls_cert, self_.tls_key}, warning);
  if (!ctx)
    return Error{ctx.error().code,
                 cfg_.file + ": node '" + self_.name + "': " + ctx.error().message};
  if (!warning->empty()) MLOG_WARN("volume '%s': %s", cfg_.name.c_str(), warning->c_str());
  return *ctx;
}

Status Volume::start() {
  if (cfg_.tls) {
    std::string warning;
    auto ctx = load_tls(&warning);
    if (!ctx) return ctx.error();
    tls_ = *ctx;
  }
  auto addr = ListenAddr::parse(self_.address);
  if (!addr) return addr.error();
  auto sock = bind_listener(*addr);
  if (!sock) return sock.error();
  acceptor_ = std::make_unique<Acceptor>(loop_, std::move(*sock),
                                         [this](UniqueFd fd) { on_accept(std::move(fd)); });
  acceptor_->start();
  MLOG_INFO("volume '%s': %s on node '%s', replication on %s%s, peer '%s' at %s",
            cfg_.name.c_str(), role_ == Role::kPrimary ? "primary" : "secondary",
            self_.name.c_str(), acceptor_->socket().addr.to_string().c_str(),
            tls_ ? " (TLS 1.3)" : "", peer_.name.c_str(), peer_.address.c_str());

  dialer_ = std::make_unique<Dialer>();
  dialer_->v = this;
  auto paddr = ListenAddr::parse(peer_.address);
  if (!paddr) return paddr.error();
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port = std::to_string(paddr->port);
  if (int r = getaddrinfo(paddr->host.c_str(), port.c_str(), &hints, &res); r != 0)
    return Error{EINVAL, cfg_.file + ": peer address " + peer_.address + ": " + gai_strerror(r)};
  std::memcpy(&dialer_->addr, res->ai_addr, res->ai_addrlen);
  dialer_->addr_len = res->ai_addrlen;
  freeaddrinfo(res);

  now_ms_ = mono_ms();
  tick_timer_.arm(100);
  dial();
  return {};
}

// ------------------------------------------------------------ sessions --

void Volume::on_accept(UniqueFd fd) {
  if (stopping_ || sessions_.size() >= kMaxHandshakes) {
    MLOG_WARN("replication: refusing a connection (%s)",
              stopping_ ? "stopping" : "too many handshakes at once");
    return;
  }
  set_link_socket_options(fd.get(), cfg_.ack_timeout_ms);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "?";
  if (getpeername(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) == 0)
    getnameinfo(reinterpret_cast<sockaddr*>(&ss), len, host, sizeof host, serv, sizeof serv,
                NI_NUMERICHOST | NI_NUMERICSERV);
  new_session(std::move(fd), false, std::string(host) + ":" + serv);
}

void Volume::new_session(UniqueFd fd, bool outbound, std::string peer) {
  auto s = std::make_shared<Session>();
  s->outbound = outbound;
  s->nonce = random_nonce();
  s->started_ms = now_ms_;
  // The dialler is the TLS client; either way the peer must be peer_.
  s->conn = std::make_unique<LinkConn>(
      loop_, std::move(fd), this, std::move(peer),
      tls_ ? std::make_unique<TlsChannel>(tls_, outbound, peer_.name) : nullptr);
  s->conn->context = s.get();
  link::Hello h;
  h.node = self_.name;
  h.volume = cfg_.name;
  h.size = cfg_.size;
  h.nonce = s->nonce;
  // The header's flags say which later messages this daemon understands.
  s->conn->send_owned(link::encode_message({.type = link::Type::kHello, .flags = link::kFeatures},
                                           link::encode_hello(h)));
  s->conn->start();
  MLOG_DEBUG("replication: %s connection with %s", outbound ? "outgoing" : "incoming",
             s->conn->peer().c_str());
  sessions_.push_back(std::move(s));
}

void Volume::session_error(Session* s, const std::string& why, bool log_warn,
                           uint64_t retry_after_ms, uint32_t code) {
  if (log_warn) MLOG_WARN("replication with %s: %s", s->conn->peer().c_str(), why.c_str());
  last_error_ = why;
  // The peer's dialer waits as asked; so does ours if this node dials.
  if (retry_after_ms) hold_off_dial(retry_after_ms);
  refuse_session(s, why, retry_after_ms, code);
}

void Volume::refuse_session(Session* s, const std::string& why, uint64_t retry_after_ms,
                            uint32_t code) {
  s->conn->send_owned(
      link::encode_message({.type = link::Type::kError, .offset = retry_after_ms},
                           link::encode_error({code, why})));
  // Close after what is queued: the STATE this side may have queued in the
  // same loop turn, then the ERROR, so the peer learns why (close() would
  // drop both, and the peer would only see a reset).
  s->conn->close_when_sent(why);
}

void Volume::on_link_message(LinkConn* c, const link::Header& h, Buffer& payload) {
  auto* s = static_cast<Session*>(c->context);
  s->last_rx_ms = now_ms_;
  if (s != active_ || s->phase != Session::Phase::kActive) return session_message(s, h, payload);
  if (h.type == link::Type::kError) {
    auto e = link::decode_error({payload.data(), h.payload});
    last_error_ = "the peer reported: " + (e ? e->message : std::string("a malformed error"));
    MLOG_WARN("replication: %s", last_error_.c_str());
    return c->close(last_error_);
  }
  if (h.type == link::Type::kRelay || h.type == link::Type::kRelayReply)
    return on_relay_message(c, h, payload);
  if (role_ == Role::kPrimary) {
    if (h.type == link::Type::kReply && (h.id & kControlIdBit)) {
      auto it = control_waiters_.find(h.id);
      if (it == control_waiters_.end()) return;
      Done d = std::move(it->second);
      control_waiters_.erase(it);
      return d(int(h.length), h.length ? strerror(int(h.length)) : "");
    }
    if (h.type == link::Type::kReply) return replicator_->on_reply(h);
    if (h.type == link::Type::kVerifyReply) return replicator_->on_verify_reply(h, payload);
    if (h.type == link::Type::kReadReply) return replicator_->on_read_reply(h, payload);
    if (h.type == link::Type::kResizeReply) return on_resize_reply(h, payload);
    return c->close("unexpected message from the secondary");
  }
  // Two secondaries (standby): nothing is mirrored.
  if (peer_state_.role != link::State::kPrimary) return;
  if (h.type == link::Type::kResize) return on_resize_request(c, h);
  if (h.type == link::Type::kDetach && opts_.faults && opts_.faults->stop_on_detach &&
      !std::exchange(stopped_on_detach_, true)) {  // the fault fires once
    MLOG_WARN("volume '%s': MIRRORD_FAULTS=stop-on-detach: stopping (SIGCONT resumes)",
              cfg_.name.c_str());
    ::raise(SIGSTOP);
  }
  applier_->on_message(h, payload);
}

void Volume::session_message(Session* s, const link::Header& h, Buffer& payload) {
  if (s->conn->closing()) return;  // refused: only the queued reply still goes out
  std::span<const uint8_t> p(payload.data(), h.payload);
  if (h.type == link::Type::kError) {
    auto e = link::decode_error(p);
    std::string msg = e ? e->message : "malformed error message";
    // A second session, raced by the other node's one-shot dial: the other
    // one is (or is about to be) the pair's session, nothing to report.
    if (active_ || (e && e->code == EALREADY)) {
      MLOG_DEBUG("replication: a second session refused: %s", msg.c_str());
      return s->conn->close(msg);
    }
    last_error_ = "the peer refused the connection: " + msg;
    // A refusal the dialer meets again at every retry is logged once (the
    // status keeps it as last_error); a new reason is logged again.
    LogLevel level =
        volume_internal::new_reason(refusal_logged_, msg) ? LogLevel::kWarn : LogLevel::kDebug;
    if (h.offset) {
      // It asks not to be dialled again before then (a handler running or
      // failed there): no handshake, so no write held for one, meanwhile.
      uint64_t ms = std::min<uint64_t>(h.offset, kMaxRetryAfterMs);
      logf(level, "replication: %s; next handshake in %llu s, as the peer asked",
           last_error_.c_str(), static_cast<unsigned long long>((ms + 999) / 1000));
      hold_off_dial(ms);
    } else {
      logf(level, "replication: %s", last_error_.c_str());
    }
    if (msg.find("split brain") != std::string::npos) split_brain_ = true;
    if (e && e->code == ECANCELED) {  // it waits for the operator (resync_refusal())
      ++peer_refusal_.count;
      peer_refusal_.why = msg;
    }
    return s->conn->close(last_error_);
  }
  switch (s->phase) {
    case Session::Phase::kHello: {
      if (h.type != link::Type::kHello) return session_error(s, "expected HELLO");
      auto hello = link::decode_hello(p);
      if (!hello) return session_error(s, hello.error().message);
      if (hello->version != link::kVersion)
        return session_error(s, "protocol version " + std::to_string(hello->version) +
                                    " is not supported (this node speaks " +
                                    std::to_string(link::kVersion) + ")");
      if (hello->volume != cfg_.name)
        return session_error(s, "the peer serves volume '" + hello->volume + "', not '" +
                                    cfg_.name + "'");
      // A grow under way (the backing store's sync, a metadata commit)
      // changes cfg_.size once it ends: the size checked now would be stale.
      if (resize_)
        return session_error(s, "node '" + self_.name +
                                    "' is resizing: it takes no new session until that ends");
      if (hello->size != cfg_.size) {
        // After a resize with the link down, or one whose answer was lost:
        // the smaller node has yet to grow.
        const std::string& smaller = hello->size < cfg_.size ? peer_.name : self_.name;
        return session_error(s, "volume size differs: the peer has " +
                                    std::to_string(hello->size) + " bytes, this node " +
                                    std::to_string(cfg_.size) + "; set the same size in both "
                                    "volume files and run `mirrorctl resize` on the smaller "
                                    "node ('" + smaller + "'), or restart it");
      }
      if (hello->node != peer_.name)
        return session_error(s, "the peer calls itself '" + hello->node + "', expected '" +
                                    peer_.name + "'");
      s->hello = *hello;
      s->peer_features = h.flags;  // 0 from a daemon built before feature bits
      Mac mac = link_mac(cfg_.secret, self_.name, peer_.name, cfg_.name, cfg_.size, s->nonce,
                         s->hello.nonce);
      s->conn->send_owned(
          link::encode_message({.type = link::Type::kAuth}, std::span<const uint8_t>(mac)));
      s->phase = Session::Phase::kAuth;
      return;
    }
    case Session::Phase::kAuth: {
      if (h.type != link::Type::kAuth) return session_error(s, "expected AUTH");
      Mac expect = link_mac(cfg_.secret, peer_.name, self_.name, cfg_.name, cfg_.size,
                            s->hello.nonce, s->nonce);
      if (!mac_equal(p, expect)) {
        // Logged without anything secret: who, and that the proof failed.
        return session_error(s, "authentication failed: the peer does not know the shared secret");
      }
      s->conn->send_owned(link::encode_message({.type = link::Type::kState},
                                               link::encode_state(my_state())));
      s->phase = Session::Phase::kState;
      return;
    }
    case Session::Phase::kState: {
      if (h.type != link::Type::kState) return session_error(s, "expected STATE");
      auto st = link::decode_state(p);
      if (!st) return session_error(s, st.error().message);
      return on_peer_state(s, *st);
    }
    case Session::Phase::kPlan:
      if (role_ == Role::kSecondary && h.type == link::Type::kPlan) {
        auto plan = link::decode_plan(p);
        if (!plan) return session_error(s, plan.error().message);
        return on_plan(s, h, *plan);
      }
      if (role_ == Role::kPrimary && h.type == link::Type::kDirtyRanges) {
        auto ranges = link::decode_ranges(p);
        if (!ranges) return session_error(s, ranges.error().message);
        for (const auto& r : *ranges) {
          if (r.offset < cfg_.size) bitmap_->set_dirty(r.offset, std::min(r.length, cfg_.size - r.offset));
        }
        return;
      }
      if (role_ == Role::kPrimary && h.type == link::Type::kReply && h.id == s->plan_id) {
        if (h.length) return session_error(s, "the secondary could not apply the plan");
        return activate(s);
      }
      return session_error(s, "unexpected message during the handshake");
    case Session::Phase::kActive:
      return;
  }
}

void Volume::on_link_closed(LinkConn* c, const std::string& why) {
  auto* s = static_cast<Session*>(c->context);
  s->gone = true;
  end_plan_hold(s);  // the handshake failed after its plan
  if (s == active_ && quiesced_) {
    // Our own stop, after both copies were flushed: nothing to mark. A link
    // that ends before (the peer stopping at the same moment) is a loss
    // like any other: the stop's flush waits for link_lost to answer it.
    active_ = nullptr;
    if (applier_) applier_->detach();
  } else if (s == active_) {
    active_ = nullptr;
    MLOG_WARN("volume '%s': replication link to '%s' lost: %s", cfg_.name.c_str(),
              peer_.name.c_str(), why.c_str());
    if (replicator_) replicator_->link_lost(why);
    if (applier_) applier_->detach();
    for (auto& [id, d] : std::exchange(control_waiters_, {})) d(ECONNRESET, "the link was lost");
    for (auto& [id, w] : std::exchange(relay_waiters_, {}))
      w.done(ECONNRESET, "the link to '" + peer_.name + "' was lost before it answered");
    resize_link_lost(why);
  } else if (why.find("TLS") != std::string::npos) {
    // A refused or failed TLS handshake: who, and why (never key material).
    MLOG_WARN("replication with %s: %s", c->peer().c_str(), why.c_str());
    last_error_ = why;
  } else {
    MLOG_DEBUG("replication: handshake with %s ended: %s", c->peer().c_str(), why.c_str());
  }
  auto it = std::find_if(sessions_.begin(), sessions_.end(),
                         [s](const auto& p) { return p.get() == s; });
  // Destroyed after this callback returns (the LinkConn is on the stack).
  if (it != sessions_.end()) {
    std::shared_ptr<Session> keep = std::move(*it);
    sessions_.erase(it);
    loop_.defer([keep] {});
  }
}

void Volume::reconnect(const std::string& why) {
  if (active_) active_->conn->close(why);
}

std::shared_ptr<Volume::Session> Volume::find_session(Session* s) {
  for (auto& p : sessions_) {
    if (p.get() == s) return p;
  }
  return nullptr;
}

// -------------------------------------------------------------- dialing --

void Volume::dial() {
  // One side dials, whatever the roles (which change with promote and
  // demote): the node whose name sorts first, so two sessions seldom race
  // to become the active one. The other node dials only once when its
  // operator asks (dial_now(true)); if both dial then, the first session to
  // be planned wins and the other is refused (on_peer_state).
  bool designated = self_.name < peer_.name;
  if ((!designated && !dialer_->once) || stopping_ || active_ || dialer_->busy) return;
  if (!sessions_.empty()) return;  // a handshake is under way
  if (now_ms_ < dialer_->next_ms) return;
  dialer_->once = false;
  UniqueFd fd(::socket(dialer_->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return;
  set_link_socket_options(fd.get(), cfg_.ack_timeout_ms);
  dialer_->fd = std::move(fd);
  dialer_->busy = true;
  io_uring_sqe* sqe = loop_.sqe(dialer_.get());
  io_uring_prep_connect(sqe, dialer_->fd.get(), reinterpret_cast<sockaddr*>(&dialer_->addr),
                        dialer_->addr_len);
  sqe->flags |= IOSQE_IO_LINK;
  dialer_->timeout.tv_sec = kDialTimeoutMs / 1000;
  dialer_->timeout.tv_nsec = (kDialTimeoutMs % 1000) * 1000000;
  io_uring_prep_link_timeout(loop_.sqe(nullptr), &dialer_->timeout, 0);
}

void Volume::on_dial(int res) {
  dialer_->busy = false;
  now_ms_ = mono_ms();
  // The next attempt, whatever this one's outcome (a session can fail its
  // handshake): backoff doubling up to a cap that depends on why.
  uint32_t cap = disk_retry()            ? kDiskRetryMaxBackoffMs
                 : res == -ECONNREFUSED ? kRefusedBackoffMs
                                        : kMaxBackoffMs;
  dialer_->backoff_ms = std::min(dialer_->backoff_ms, cap);
  dialer_->next_ms = now_ms_ + dialer_->backoff_ms;
  dialer_->backoff_ms = std::min(dialer_->backoff_ms * 2, cap);
  if (res < 0 || stopping_) {
    MLOG_DEBUG("replication: connecting to %s: %s", peer_.address.c_str(), strerror(-res));
    dialer_->fd.reset();
    // The next attempt when its backoff is over, not at the tick after it:
    // a tick-aligned retry waited up to twice the backoff.
    if (!stopping_) dial_timer_.arm(dialer_->next_ms - now_ms_);
    return;
  }
  new_session(std::move(dialer_->fd), true, peer_.address);
}

void Volume::hold_off_dial(uint64_t ms) {
  dialer_->next_ms = std::max(dialer_->next_ms, mono_ms() + ms);
}

void Volume::dial_now(bool even_if_not_dialer) {
  dialer_->once = even_if_not_dialer;
  dialer_->next_ms = 0;
  dialer_->backoff_ms = 100;
  now_ms_ = mono_ms();
  dial();
  // Now or never: a handshake under way (the peer dialed) makes it moot.
  dialer_->once = false;
}

bool Volume::disk_retry() const {
  return (replicator_ && replicator_->peer_io_error()) ||
         (applier_ && !applier_->last_local_error().empty());
}

void Volume::peer_reached() {
  if (!disk_retry()) dialer_->backoff_ms = 100;
  last_error_.clear();
  peer_refusal_.why.clear();
  refusal_logged_.clear();
}

Volume::ResyncRefusal Volume::resync_refusal() const {
  if (role_ == Role::kPrimary) return peer_refusal_;
  return {handlers_->failures() + split_busy_refusals_,
          handlers_->failure().empty() ? split_busy_why_ : handlers_->failure()};
}

void Volume::reload_tls(Done done) {
  if (!tls_) return done(EINVAL, "tls is off for volume '" + cfg_.name + "': nothing to reload");
  std::string warning;
  auto ctx = load_tls(&warning);
  if (!ctx) {
    MLOG_WARN("volume '%s': reload-tls refused: %s; the files loaded before stay in use",
              cfg_.name.c_str(), ctx.error().message.c_str());
    return done(ctx.error().code,
                ctx.error().message + "; the files loaded before stay in use");
  }
  // Sessions hold their own reference: the one running keeps its context.
  tls_ = *ctx;
  MLOG_INFO("volume '%s': tls-ca, tls-cert and tls-key reloaded; the next link session uses them",
            cfg_.name.c_str());
  done(0, "reloaded tls-ca, tls-cert and tls-key; the next link session uses them" +
              (warning.empty() ? std::string() : " (warning: " + warning + ")"));
}

void Volume::tick() {
  now_ms_ = mono_ms();
  if (replicator_) replicator_->tick(now_ms_);
  handlers_->tick(now_ms_);
  if (stopping_) {
    // The stop waits for its final flush on both copies: a peer that hangs
    // (its process stopped, its host frozen, the TCP connection still open)
    // must still time out as at any other time, or the stop waits for it
    // for good. Nothing else runs any more.
    if (!quiesced_) tick_timer_.arm(100);
    return;
  }
  if (demote_) demote_poll();
  if (discard_) discard_poll();
  if (!relay_waiters_.empty()) expire_relays();
  if (resize_) resize_tick();
  if (!retired_replicators_.empty() || !retired_appliers_.empty()) release_retired();
  if (plan_reply_ && plan_reply_->waiting > 0 && now_ms_ >= plan_reply_->deadline_ms) {
    MLOG_WARN("volume '%s': a client read of this copy is still running %llu ms after a "
              "resync plan: answering the plan anyway",
              cfg_.name.c_str(), static_cast<unsigned long long>(volume_internal::kPlanQuiesceMs));
    plan_reply_->waiting = 0;  // (its callback, when it comes, finds another id or none)
  }
  if (plan_reply_) plan_reply_try();
  if (hold_deadline_ms_ && now_ms_ >= hold_deadline_ms_) {
    // Whoever held the writes is gone or stuck: never block the application.
    hold_deadline_ms_ = 0;
    MLOG_WARN("volume '%s': hold timed out: releasing writes", cfg_.name.c_str());
    replicator_->release();
  }
  for (auto& s : sessions_) {
    if (s->phase != Session::Phase::kActive && !s->conn->closing() &&
        now_ms_ - s->started_ms > kHandshakeTimeoutMs) {
      s->conn->close("handshake timed out");
    }
  }
  if (role_ == Role::kSecondary && active_ && peer_state_.role == link::State::kPrimary &&
      !active_->conn->closing() &&
      now_ms_ - std::max(active_->last_rx_ms, active_->started_ms) >
          kPrimarySilenceAcks * cfg_.ack_timeout_ms) {
    // Its host lost power or its network was cut (no FIN or RST reached
    // us): a session kept up for ever would keep reporting a primary
    // that is gone, and refuse the promote --force meant for this case.
    last_error_ = "the primary '" + peer_.name + "' sent nothing for " +
                  std::to_string(kPrimarySilenceAcks * cfg_.ack_timeout_ms) +
                  " ms (it pings every ack-timeout / 3): taken for gone";
    MLOG_WARN("volume '%s': %s", cfg_.name.c_str(), last_error_.c_str());
    active_->conn->close(last_error_);
  }
  dial();
  tick_timer_.arm(100);
}

// ---------------------------------------------------------------- stop --

void Volume::stop(std::function<void()> done) {
  stopping_ = true;  // tick() goes on only for the replicator's timeouts, until quiesced
  // A demote waiting for standby answers now (not one still flushing).
  if (demote_ && demote_->standby_deadline_ms) demote_poll();
  handlers_->stop();
  dial_timer_.cancel();
  if (acceptor_) acceptor_->stop();
  auto finish = [this, done = std::move(done)](bool synced) {
    quiesced_ = true;
    tick_timer_.cancel();
    if (role_ == Role::kPrimary && !synced && replicator_) replicator_->mark_unflushed_dirty();
    auto close_all = [this, done] {
      for (auto& s : sessions_) s->conn->close("node stopping");
      done();
    };
    auto then_changes = [this, close_all] {
      if (!changes_) return close_all();
      changes_->commit(FnDone::make([this, close_all](int e) {
        if (e) MLOG_ERROR("%s at stop: %s", changes_->path().c_str(), strerror(-e));
        close_all();
      }));
    };
    // Two commits, through the group commit (each waits for one already
    // running): the dirty map first, then the activity log's clear and the
    // clean-shutdown flag. In one commit a crash could persist the clear
    // and the flag without the dirty bits the activity log was covering.
    bitmap_->commit(FnDone::make([this, then_changes](int err) {
      if (err) {
        MLOG_ERROR("metadata at stop: %s: the next start recovers", strerror(-err));
        return then_changes();
      }
      bitmap_->clear_active(0, cfg_.size);
      bitmap_->set_flags(bitmap_->flags() | kFlagCleanShutdown);
      bitmap_->commit(FnDone::make([then_changes](int err2) {
        if (err2) MLOG_ERROR("metadata at stop: %s: the next start recovers", strerror(-err2));
        then_changes();
      }));
    }));
  };
  if (replicator_) {
    replicator_->quiesce(std::move(finish));
  } else {
    finish(true);
  }
}

}  // namespace mirror
