#include "kernel_device.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

#include "log.h"
#include "proto.h"
#include "read_line.h"

namespace mirror {

KernelDevice::KernelDevice(Loop& loop, NbdServer& server, Options opts)
    : loop_(loop), server_(server), opts_(std::move(opts)) {}

KernelDevice::~KernelDevice() {
  if (probe_.joinable()) probe_.join();
  if (resize_thread_.joinable()) resize_thread_.join();
}

Result<std::vector<UniqueFd>> KernelDevice::make_sockets() {
  std::vector<UniqueFd> kernel_ends;
  for (uint32_t i = 0; i < opts_.cfg.connections; ++i) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
      return errno_error("socketpair for the kernel");
    kernel_ends.emplace_back(sv[1]);
    std::string peer = "kernel:" + std::to_string(next_peer_++);
    if (auto st = server_.adopt(UniqueFd(sv[0]), opts_.export_name, peer); !st) return st.error();
  }
  return kernel_ends;
}

namespace {
std::vector<int> raw(const std::vector<UniqueFd>& fds) {
  std::vector<int> v;
  for (const auto& f : fds) v.push_back(f.get());
  return v;
}
}  // namespace

Status KernelDevice::attach() {
  auto configured = knbd::parse_device(opts_.cfg.path);
  if (!configured) return configured.error();
  std::unique_ptr<knbd::NetlinkTransport> t;
  if (opts_.api == "ioctl") {
    api_ = knbd::Api::kIoctl;
  } else {
    auto opened = knbd::NetlinkTransport::open();
    if (!opened) return opened.error();
    t = std::move(*opened);
    auto api = knbd::choose_api(*t);
    if (!api) return Error{api.error().code, "kernel nbd: " + api.error().message};
    if (*api == knbd::Api::kIoctl && opts_.api == "netlink")
      return Error{ENOENT, "kernel nbd: no \"nbd\" netlink family (is nbd.ko loaded?)"};
    api_ = *api;
  }

  knbd::AttachParams p;
  p.index = *configured;
  p.size_bytes = server_.find(opts_.export_name)->size;
  p.server_flags = server_.kernel_flags(opts_.export_name);
  p.timeout_s = opts_.cfg.timeout_s;
  p.dead_conn_timeout_s = opts_.cfg.dead_conn_timeout_s;
  p.backend_id = opts_.backend_id;

  if (api_ == knbd::Api::kIoctl) {
    if (opts_.api != "ioctl")
      MLOG_WARN("kernel nbd: no \"nbd\" netlink family: using the ioctls (no re-attach after a "
                "restart, no LINK_DEAD)");
    auto socks = make_sockets();
    if (!socks) return socks.error();
    p.sock_fds = raw(*socks);
    ioctl_ = std::make_unique<knbd::IoctlNbd>("/dev", opts_.sysfs_block);
    auto idx = ioctl_->connect(p);
    if (!idx) return idx.error();
    index_ = *idx;
    attached_ = true;
    MLOG_INFO("attached export '%s' as /dev/nbd%d (ioctl, %u connections)",
              opts_.export_name.c_str(), index_, opts_.cfg.connections);
    return {};
  }
  nl_ = std::move(t);

  // Our device survived a previous mirrord: same identifier, fresh sockets.
  int found = knbd::find_by_backend(opts_.sysfs_block, opts_.backend_id);
  if (found >= 0) {
    if (*configured >= 0 && found != *configured)
      MLOG_WARN("kernel nbd: %s carries '%s', not the configured %s: taking it over",
                ("/dev/nbd" + std::to_string(found)).c_str(), opts_.backend_id.c_str(),
                opts_.cfg.path.c_str());
    if (auto st = reconfigure(found); st) {
      reattached_ = true;
      MLOG_INFO("re-attached export '%s' to /dev/nbd%d (RECONFIGURE, %u connections)",
                opts_.export_name.c_str(), index_, opts_.cfg.connections);
      listen_link_dead();
      // A device left attached by a mirrord that crashed around an online
      // resize gets the size served now, off the loop (see resize()).
      if (uint64_t size = size_to_set(index_); size) {
        resize(size, [](Status rs) {
          if (!rs) MLOG_ERROR("kernel nbd: %s", rs.error().to_string().c_str());
        });
      }
      return {};
    } else {
      MLOG_WARN("kernel nbd: /dev/nbd%d: %s; connecting afresh", found,
                st.error().to_string().c_str());
    }
  }
  auto socks = make_sockets();
  if (!socks) return socks.error();
  p.sock_fds = raw(*socks);
  knbd::NetlinkNbd nbd(*nl_);
  auto idx = nbd.connect(p);
  if (!idx) {
    std::string dev = *configured >= 0 ? opts_.cfg.path : "a free /dev/nbdN";
    return Error{idx.error().code, "attach " + dev + ": " + idx.error().message};
  }
  index_ = *idx;
  attached_ = true;
  MLOG_INFO("attached export '%s' as /dev/nbd%d (netlink, %u connections, timeout %us, "
            "dead-connection timeout %us, backend '%s')",
            opts_.export_name.c_str(), index_, opts_.cfg.connections, opts_.cfg.timeout_s,
            opts_.cfg.dead_conn_timeout_s, opts_.backend_id.c_str());
  listen_link_dead();
  return {};
}

Status KernelDevice::reconfigure(int index) {
  auto socks = make_sockets();
  if (!socks) return socks.error();
  knbd::NetlinkNbd nbd(*nl_);
  // Sockets only: a size in the same call is applied before the kernel takes
  // the sockets, and a kernel that freezes the queue to set it would wait for
  // requests that only these sockets can answer (attach() sets it after).
  if (auto st = nbd.reconfigure(index, raw(*socks), opts_.backend_id,
                                opts_.cfg.dead_conn_timeout_s, 0);
      !st)
    return st;
  // The kernel keeps the sockets it took; the ones it did not take (it only
  // replaces dead connections) close here and their server ends see EOF.
  index_ = index;
  attached_ = true;
  dead_ = false;
  return {};
}

void KernelDevice::listen_link_dead() {
  auto l = knbd::LinkDeadListener::open();
  if (!l) {
    MLOG_WARN("kernel nbd: cannot listen for LINK_DEAD: %s", l.error().to_string().c_str());
    return;
  }
  link_dead_ = std::move(*l);
  arm_poll();
}

void KernelDevice::arm_poll() {
  if (!link_dead_ || poll_posted_ || stopping_) return;
  poll_posted_ = true;
  io_uring_prep_poll_add(loop_.sqe(this), link_dead_->fd(), POLLIN);
}

void KernelDevice::on_complete(int res, uint32_t) {
  poll_posted_ = false;
  if (stopping_ || res == -ECANCELED) return;
  if (res < 0) {
    MLOG_WARN("kernel nbd: LINK_DEAD listener: %s", strerror(-res));
    return;
  }
  for (int idx : link_dead_->read_events()) {
    if (idx != index_) continue;
    ++link_dead_events_;
    dead_ = true;
    MLOG_WARN("kernel nbd: /dev/nbd%d reports a dead connection (LINK_DEAD): handing it fresh "
              "sockets", index_);
    if (auto st = reconfigure(index_); !st)
      MLOG_ERROR("kernel nbd: /dev/nbd%d: %s", index_, st.error().to_string().c_str());
    else
      MLOG_INFO("kernel nbd: /dev/nbd%d has live connections again", index_);
  }
  arm_poll();
}

void KernelDevice::stop_listening() {
  stopping_ = true;
  if (poll_posted_) io_uring_prep_poll_remove(loop_.sqe(nullptr),
                              reinterpret_cast<uint64_t>(static_cast<Completion*>(this)));
}

void KernelDevice::detach() {
  stop_listening();
  if (!attached_) return;
  attached_ = false;
  Status st;
  if (ioctl_) {
    st = ioctl_->disconnect();  // NBD_DO_IT returns once the server closed its ends
  } else {
    knbd::NetlinkNbd nbd(*nl_);
    st = nbd.disconnect(index_);
  }
  if (!st)
    MLOG_ERROR("kernel nbd: detach /dev/nbd%d: %s", index_, st.error().to_string().c_str());
  else
    MLOG_INFO("detached /dev/nbd%d", index_);
}

void KernelDevice::stop(std::function<void()> done) {
  // The ioctl interface has no re-attach: a device left behind would only
  // fail its I/O once we are gone, so it is detached whatever uses it.
  if (!attached_ || ioctl_ || opts_.detach_in_use) {
    detach();
    done();
    return;
  }
  stop_listening();  // no more RECONFIGURE on LINK_DEAD
  stop_done_ = std::move(done);
  probe_wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
  if (!probe_wake_.valid()) {
    MLOG_ERROR("kernel nbd: eventfd: %s: leaving /dev/nbd%d attached", strerror(errno), index_);
    loop_.defer(std::move(stop_done_));
    return;
  }
  io_uring_prep_read(loop_.sqe(&probe_done_), probe_wake_.get(), &probe_value_, sizeof probe_value_,
                     0);
  std::string path = opts_.dev_dir + "/nbd" + std::to_string(index_);
  probe_ = std::thread([this, path, wake = probe_wake_.get()] {
    // O_EXCL on a block device fails EBUSY while a file system is mounted
    // on it, a holder (dm, md) claims it, or someone else opened it O_EXCL.
    int fd = ::open(path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
    probe_errno_ = fd < 0 ? errno : 0;
    if (fd >= 0) ::close(fd);
    uint64_t one = 1;
    (void)!::write(wake, &one, sizeof one);
  });
}

void KernelDevice::on_probed(int res, uint32_t) {
  if (probe_.joinable()) probe_.join();
  auto done = std::move(stop_done_);
  if (res != sizeof probe_value_) {
    MLOG_ERROR("kernel nbd: waiting for the in-use probe: %s: leaving /dev/nbd%d attached",
               strerror(res < 0 ? -res : EIO), index_);
  } else if (probe_errno_ == EBUSY) {
    MLOG_WARN(
        "kernel nbd: /dev/nbd%d is in use (mounted, held open exclusively or by a holder): "
        "leaving it attached. I/O waits up to the dead-connection timeout (%us) for the "
        "next mirrord, which re-attaches it; unmount it and stop again to detach",
        index_, opts_.cfg.dead_conn_timeout_s);
  } else {
    if (probe_errno_ != 0)
      MLOG_WARN("kernel nbd: cannot tell whether /dev/nbd%d is in use (open: %s): detaching",
                index_, strerror(probe_errno_));
    detach();
  }
  done();
}

uint64_t KernelDevice::size_to_set(int index) const {
  uint64_t size = server_.find(opts_.export_name)->size;
  std::string sectors =
      read_line(opts_.sysfs_block + "/nbd" + std::to_string(index) + "/size");  // 512-byte units
  if (!sectors.empty() && std::strtoull(sectors.c_str(), nullptr, 10) * 512 == size) return 0;
  MLOG_INFO("kernel nbd: /dev/nbd%d has %s sectors; setting it to %llu bytes", index,
            sectors.empty() ? "?" : sectors.c_str(), static_cast<unsigned long long>(size));
  return size;
}

void KernelDevice::resize(uint64_t size, std::function<void(Status)> done) {
  if (!attached_ || size_to_set(index_) == 0) {  // detached, or it has the size
    loop_.defer([done = std::move(done)] { done({}); });
    return;
  }
  if (resize_done_) {
    loop_.defer([done = std::move(done)] { done(Error{EBUSY, "a resize is running"}); });
    return;
  }
  if (resize_thread_.joinable()) resize_thread_.join();
  resize_wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
  if (!resize_wake_.valid()) {
    Error e = errno_error("eventfd");
    loop_.defer([done = std::move(done), e] { done(e); });
    return;
  }
  resize_done_ = std::move(done);
  io_uring_prep_read(loop_.sqe(&resize_completion_), resize_wake_.get(), &resize_value_,
                     sizeof resize_value_, 0);
  std::string dev = "/dev/nbd" + std::to_string(index_);
  knbd::IoctlNbd* ioctl = ioctl_.get();
  resize_thread_ = std::thread([this, size, dev, ioctl, index = index_,
                                id = opts_.backend_id, wake = resize_wake_.get()] {
    Status st;
    if (ioctl) {
      st = ioctl->resize(size);
    } else {
      // A socket of its own: the loop's stays the loop's.
      auto t = knbd::NetlinkTransport::open();
      if (!t) {
        st = t.error();
      } else {
        knbd::NetlinkNbd nbd(**t);
        st = nbd.reconfigure(index, {}, id, 0, size);
      }
    }
    resize_result_ = st ? st : Status(Error{st.error().code, dev + ": resize: " + st.error().message});
    uint64_t one = 1;
    (void)!::write(wake, &one, sizeof one);
  });
}

void KernelDevice::on_resized(int res, uint32_t) {
  if (resize_thread_.joinable()) resize_thread_.join();
  resize_wake_.reset();
  auto done = std::move(resize_done_);
  resize_done_ = nullptr;
  Status st = resize_result_;
  if (res != sizeof resize_value_) st = Error{res < 0 ? -res : EIO, "waiting for the resize thread"};
  if (st) MLOG_INFO("kernel nbd: /dev/nbd%d has the new size", index_);
  done(st);
}

DeviceStatus KernelDevice::status() const {
  DeviceStatus s;
  s.path = index_ >= 0 ? "/dev/nbd" + std::to_string(index_) : opts_.cfg.path;
  s.api = api_ == knbd::Api::kIoctl ? "ioctl" : "netlink";
  s.connections = opts_.cfg.connections;
  s.state = !attached_ ? "detached" : dead_ ? "dead" : "attached";
  s.reattached = reattached_;
  s.link_dead_events = link_dead_events_;
  s.read_only = server_.kernel_flags(opts_.export_name) & nbd::kFlagReadOnly;
  return s;
}

}  // namespace mirror
