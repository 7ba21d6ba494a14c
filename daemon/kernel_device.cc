#include "kernel_device.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>

#include "log.h"
#include "proto.h"
#include "read_line.h"

namespace mirror {

KernelDevice::KernelDevice(Loop& loop, NbdServer& server, Options opts)
    : loop_(loop), server_(server), opts_(std::move(opts)) {}

KernelDevice::~KernelDevice() = default;

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

  knbd::AttachParams p = attach_params(*configured);

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

knbd::AttachParams KernelDevice::attach_params(int index) const {
  knbd::AttachParams p;
  p.index = index;
  p.size_bytes = server_.find(opts_.export_name)->size;
  p.server_flags = server_.kernel_flags(opts_.export_name);
  p.timeout_s = opts_.cfg.timeout_s;
  p.dead_conn_timeout_s = opts_.cfg.dead_conn_timeout_s;
  p.backend_id = opts_.backend_id;
  return p;
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
  stop_listening();  // no more RECONFIGURE on LINK_DEAD
  stop_done_ = std::move(done);
  stop_step();
}

// Each device call that returns comes back here while a stop waits. The
// loop keeps serving the device meanwhile: the calls may wait for requests
// in flight (a close's write-back, a queue freeze), which only it answers.
void KernelDevice::stop_step() {
  if (!stop_done_ || stop_probing_) return;
  std::string dev = path();
  if (cache_call_.running()) {
    // An open and one ioctl: comes back here when it returns, unless it
    // is stuck already (its answer went out at the time limit).
    if (!cache_timed_out_) return;
    MLOG_WARN("kernel nbd: stopping: the cache drop of %s has not returned; leaving it",
              dev.c_str());
    cache_call_.abandon();
    cache_timed_out_ = false;
    for (auto& w : std::exchange(cache_waiters_next_, {})) w();
  }
  if (device_call_.running()) {
    // A role change's in-use check or re-attach: a few seconds at most. Not
    // waiting for it left a re-attach to CONNECT the device, after we were
    // gone, to sockets nobody serves.
    if (!stop_told_device_call_)
      MLOG_INFO("kernel nbd: stopping: waiting for the %s of %s for a role change to finish",
                device_call_what_.c_str(), dev.c_str());
    stop_told_device_call_ = true;
    return;
  }
  if (resize_call_.running()) {
    if (!resize_answered_) {
      if (!stop_told_resize_)
        MLOG_INFO("kernel nbd: stopping: the resize call of %s has not returned (the kernel may "
                  "wait for the requests in flight): serving the device until it does, until "
                  "the resize's %llu s limit at most",
                  dev.c_str(), static_cast<unsigned long long>(opts_.resize_wait_ms / 1000));
      stop_told_resize_ = true;
      return;
    }
    // A DISCONNECT (or the ioctl's) could wait behind that call for as
    // long as it blocks: the device is left as after a crash.
    MLOG_WARN("kernel nbd: stopping: the resize call of %s has not returned within %llu s: "
              "leaving %s attached without waiting for it. I/O waits up to the "
              "dead-connection timeout (%us) for the next mirrord, which re-attaches it and "
              "hands it the new size",
              dev.c_str(), static_cast<unsigned long long>(opts_.resize_wait_ms / 1000),
              dev.c_str(), opts_.cfg.dead_conn_timeout_s);
    resize_call_.abandon();
    return finish_stop();
  }
  // A demote that holds the device (its claim) gives it up: the stop
  // decides about the device now. Comes back here once closed.
  if (claim_.valid()) return release_claim();
  // The ioctl interface has no re-attach: a device left behind would only
  // fail its I/O once we are gone, so it is detached whatever uses it.
  if (!attached_ || ioctl_ || opts_.detach_in_use) {
    detach();
    return finish_stop();
  }
  stop_probing_ = true;
  probe([this](Status in_use) { on_probed(in_use); });
}

void KernelDevice::drop_cache(std::function<void()> done) {
  if (!attached_ || stopping_) return loop_.defer(std::move(done));
  if (cache_call_.running()) {
    cache_waiters_next_.push_back(std::move(done));
    return;
  }
  cache_waiters_.push_back(std::move(done));
  start_cache_drop();
}

void KernelDevice::start_cache_drop() {
  std::string dev = path();
  auto answer = [this] {
    for (auto& w : std::exchange(cache_waiters_, {})) w();
  };
  auto ended = [this, dev](Status result) {
    cache_timed_out_ = false;
    if (!result)
      MLOG_WARN("kernel nbd: cannot drop the cached blocks of %s (%s): a reader that holds "
                "it open may see blocks of the image before",
                dev.c_str(), result.error().to_string().c_str());
    else
      MLOG_DEBUG("kernel nbd: dropped the cached blocks of %s", dev.c_str());
    if (!cache_waiters_next_.empty() && !stopping_) {
      cache_waiters_ = std::exchange(cache_waiters_next_, {});
      start_cache_drop();
    } else {
      for (auto& w : std::exchange(cache_waiters_next_, {})) w();
    }
    stop_step();
  };
  Status st = cache_call_.start(
      [dev] {
        // Not O_EXCL: a read-only mount may hold the device.
        UniqueFd fd(::open(dev.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd.valid()) return Status(errno_error("open " + dev));
        if (::ioctl(fd.get(), BLKFLSBUF, 0) < 0) return Status(errno_error("BLKFLSBUF on " + dev));
        return Status();
      },
      kCacheDropWaitMs,
      [this, answer, ended, dev](Status result) {
        if (!result && result.error().code == ETIMEDOUT && cache_call_.running()) {
          // Answered now; the call's own end comes through `late`.
          MLOG_WARN("kernel nbd: dropping the cached blocks of %s takes longer than %llu ms: "
                    "going on without waiting for it",
                    dev.c_str(), static_cast<unsigned long long>(kCacheDropWaitMs));
          cache_timed_out_ = true;
          answer();
          return stop_step();
        }
        answer();
        ended(result);
      },
      [ended](Status result) { ended(result); });
  if (!st) {
    MLOG_WARN("kernel nbd: cannot drop the cached blocks of %s: %s", dev.c_str(),
              st.error().to_string().c_str());
    loop_.defer([answer] { answer(); });
  }
}

void KernelDevice::finish_stop() {
  auto done = std::move(stop_done_);
  stop_done_ = nullptr;
  done();
}

void KernelDevice::run_device_call(std::string what, std::function<Status()> work,
                                   std::function<void(Status)> done, uint64_t wait_ms) {
  Status st = device_call_.start(
      std::move(work), wait_ms,
      [this, done](Status result) {
        done(result);
        stop_step();
      },
      [this, what](Status result) {
        // Answered at the time limit; a stop waiting for the call goes on now.
        MLOG_INFO("kernel nbd: the %s of %s returned late: %s", what.c_str(), path().c_str(),
                  result ? "ok" : result.error().to_string().c_str());
        stop_step();
      });
  if (st) {
    device_call_what_ = std::move(what);
    return;
  }
  if (st.error().code == EBUSY) st = Error{EAGAIN, "another call is running"};
  // A stop waiting for this call goes on as when one ends.
  loop_.defer([this, done = std::move(done), st] {
    done(st);
    stop_step();
  });
}

namespace {
// O_EXCL on a block device fails EBUSY while a file system is mounted on it,
// a holder (dm, md) claims it, or someone else opened it O_EXCL; held, it
// makes a mount fail with EBUSY in turn.
Result<UniqueFd> open_exclusive(const std::string& dev) {
  UniqueFd fd(::open(dev.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC));
  if (!fd.valid()) return errno_error("open " + dev);
  return fd;
}
}  // namespace

void KernelDevice::probe(std::function<void(Status)> done, uint64_t wait_ms) {
  std::string dev = path();
  run_device_call(
      "in-use check",
      [dev] {
        auto fd = open_exclusive(dev);
        return fd ? Status() : Status(fd.error());
      },
      std::move(done), wait_ms);
}

void KernelDevice::probe_in_use(std::function<void(Status)> done, uint64_t wait_ms) {
  Error stopping{ESHUTDOWN, "mirrord is stopping"};
  if (stopping_) return loop_.defer([done = std::move(done), stopping] { done(stopping); });
  // A stop that came meanwhile decides about the device itself: the
  // caller must not act on the answer (re-attach, demote).
  probe([this, done = std::move(done), stopping](Status in_use) {
    done(stopping_ ? Status(stopping) : in_use);
  }, wait_ms);
}

void KernelDevice::claim(std::function<void(Status)> done) {
  Error stopping{ESHUTDOWN, "mirrord is stopping"};
  if (stopping_) return loop_.defer([done = std::move(done), stopping] { done(stopping); });
  if (claim_.valid()) {
    Error held{EINPROGRESS, "a demote holds " + path() + " already"};
    return loop_.defer([done = std::move(done), held] { done(held); });
  }
  std::string dev = path();
  auto fd = std::make_shared<UniqueFd>();
  run_device_call(
      "in-use check",
      [dev, fd] {
        auto c = open_exclusive(dev);
        if (!c) return Status(c.error());
        *fd = std::move(*c);
        return Status();
      },
      [this, fd, done = std::move(done), stopping](Status st) {
        // Kept even when a stop came meanwhile: stop_step() closes it.
        if (fd->valid()) claim_ = std::move(*fd);
        done(stopping_ ? Status(stopping) : st);
      });
}

void KernelDevice::release_claim() {
  if (!claim_.valid()) return;
  auto fd = std::make_shared<UniqueFd>(std::move(claim_));
  // Closed on a thread: the last close of a block device writes its dirty
  // pages back, through this loop.
  run_device_call(
      "release of the demote's claim", [fd] { fd->reset(); return Status(); },
      [this, fd](Status st) {
        if (!fd->valid()) return;
        // Not run. Another call runs: kept, released after it. No thread to
        // be had at all: a stop closes it here rather than never.
        if (stop_done_ && !st && st.error().code != EAGAIN) {
          MLOG_WARN("kernel nbd: closing the demote's claim on the event loop: %s",
                    st.error().message.c_str());
          fd->reset();
        } else {
          claim_ = std::move(*fd);
        }
      });
}

void KernelDevice::on_probed(Status in_use) {
  stop_probing_ = false;
  if (!in_use && in_use.error().code == EBUSY) {
    MLOG_WARN(
        "kernel nbd: /dev/nbd%d is in use (mounted, held open exclusively or by a holder): "
        "leaving it attached. I/O waits up to the dead-connection timeout (%us) for the "
        "next mirrord, which re-attaches it; unmount it and stop again to detach",
        index_, opts_.cfg.dead_conn_timeout_s);
  } else {
    if (!in_use)
      MLOG_WARN("kernel nbd: cannot tell whether /dev/nbd%d is in use (%s): detaching", index_,
                in_use.error().to_string().c_str());
    detach();
  }
  finish_stop();
}

bool KernelDevice::kernel_read_only() const {
  return read_line(opts_.sysfs_block + "/nbd" + std::to_string(index_) + "/ro") == "1";
}

std::string KernelDevice::path() const {
  return index_ >= 0 ? opts_.dev_dir + "/nbd" + std::to_string(index_) : opts_.cfg.path;
}

void KernelDevice::follow_role(std::function<void(std::string)> done) {
  if (following_) {
    follow_waiters_.push_back(std::move(done));
    return;
  }
  following_ = true;
  follow_role_now([this, done = std::move(done)](const std::string& note) {
    following_ = false;
    auto waiters = std::move(follow_waiters_);
    follow_waiters_.clear();
    done(note);
    // Each again, from the state this one left (most find nothing to do).
    for (auto& w : waiters) follow_role(std::move(w));
  });
}

void KernelDevice::follow_role_now(std::function<void(std::string)> done) {
  bool want_ro = server_.kernel_flags(opts_.export_name) & nbd::kFlagReadOnly;
  std::string dev = path();
  if (!attached_ || kernel_read_only() == want_ro) {
    release_claim();
    return done("");
  }
  if (ioctl_) {
    release_claim();
    return done(dev + " keeps its " + (want_ro ? "writable" : "read-only") +
                " state (the ioctl interface cannot re-attach it): restart mirrord to change it");
  }
  // Claimed since the demote's check: nobody can have mounted it since. A
  // stop meanwhile gives the claim up itself (the probe answers ESHUTDOWN).
  if (claim_.valid() && !stopping_) return reattach(done);
  probe_in_use([this, want_ro, dev, done = std::move(done)](Status in_use) {
    if (!in_use && in_use.error().code == EBUSY) {
      MLOG_WARN("kernel nbd: %s is in use: it stays %s", dev.c_str(),
                want_ro ? "writable (its writes are refused)" : "read-only");
      return done(want_ro ? dev + " is in use, so it stays writable, but its writes are refused"
                          : dev + " is in use (mounted read-only?): it stays read-only; "
                                  "unmount it and run `mirrorctl promote` again to make it "
                                  "writable");
    }
    if (!in_use) {
      // Not known to be free (another device call runs, the open failed):
      // never pulled on a guess.
      MLOG_WARN("kernel nbd: %s: could not check whether it is in use (%s): left as it is",
                dev.c_str(), in_use.error().to_string().c_str());
      return done(dev + " keeps its " + (want_ro ? "writable" : "read-only") +
                  " state: could not check whether it is in use (" +
                  in_use.error().to_string() + "); " +
                  (want_ro ? "restart mirrord to make it read-only"
                           : "run `mirrorctl promote` again to make it writable"));
    }
    reattach(done);
  });
}

void KernelDevice::reattach(std::function<void(std::string)> done) {
  std::string dev = path();
  auto socks = make_sockets();
  if (!socks) {
    release_claim();
    return done(dev + " keeps its old state: " + socks.error().to_string());
  }
  knbd::AttachParams p = attach_params(index_);
  bool ro = p.server_flags & nbd::kFlagReadOnly;
  auto kernel_ends = std::make_shared<std::vector<UniqueFd>>(std::move(*socks));
  p.sock_fds = raw(*kernel_ends);
  attached_ = false;  // from the DISCONNECT on, until the CONNECT succeeded
  uint64_t delay_ms = opts_.call_delay_ms;
  if (delay_ms)
    MLOG_WARN("TEST FAULT: the re-attach of %s pauses %llu ms before its DISCONNECT and again "
              "before its CONNECT", dev.c_str(), static_cast<unsigned long long>(delay_ms));
  // Set by the thread once the DISCONNECT went through: an error after it
  // (the CONNECT's) leaves the device detached whatever its sysfs says (an
  // opener keeps the old size until it closes).
  auto disconnected = std::make_shared<std::atomic<bool>>(false);
  auto held = std::make_shared<UniqueFd>(std::move(claim_));  // a demote's, or none
  run_device_call(
      "re-attach",
      [p, kernel_ends, delay_ms, dev, disconnected, held] {
        auto test_pause = [delay_ms] {
          std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
        };
        test_pause();  // a mount may come here unless the claim is held
        // A netlink socket of this thread's own: the loop's stays the loop's.
        auto t = knbd::NetlinkTransport::open();
        if (!t) return Status(t.error());
        knbd::NetlinkNbd nbd(**t);
        {
          // The check that counts: claimed (here, or since the demote's
          // check) and held through the DISCONNECT, the device is never
          // pulled from a mount. One that came after follow_role's probe
          // makes the claim fail (EBUSY: the device stays as it is); one
          // that comes later fails itself. Released before the CONNECT,
          // which an opener would make EBUSY; a mount in between finds an
          // empty device and fails.
          UniqueFd claim = std::move(*held);
          if (!claim.valid()) {
            auto c = open_exclusive(dev);
            if (!c) return Status(c.error());
            claim = std::move(*c);
          }
          if (auto st = nbd.disconnect(p.index); !st) return st;
          *disconnected = true;
        }
        if (delay_ms)
          MLOG_WARN("TEST FAULT: %s disconnected; the re-attach pauses before its CONNECT",
                    dev.c_str());
        test_pause();
        // The kernel frees the old configuration when its last user is gone;
        // a short-lived opener (udev's probe after the change event) makes
        // CONNECT fail with EBUSY meanwhile.
        for (int attempt = 0;; ++attempt) {
          auto idx = nbd.connect(p);
          if (idx) return Status();
          if (idx.error().code != EBUSY || attempt == 100) return Status(idx.error());
          ::usleep(20000);
        }
      },
      [this, dev, ro, disconnected, held, done = std::move(done)](Status st) {
        // The call never ran (no thread): the demote's claim is still here;
        // kept, to be closed on a thread like every other.
        if (held->valid()) claim_ = std::move(*held);
        if (!st) {
          // A failed claim or DISCONNECT left the device as it was.
          attached_ = !*disconnected;
          if (st.error().code == EBUSY && attached_) {
            MLOG_WARN("kernel nbd: %s was mounted or claimed after the in-use check: it keeps its "
                      "state", dev.c_str());
            return done(dev + " is in use (mounted since the check?): it keeps its " +
                        (ro ? "writable state, but its writes are refused; unmount it and "
                              "restart mirrord to make it read-only"
                            : "read-only state; unmount it and run `mirrorctl promote` again "
                              "to make it writable"));
          }
          MLOG_ERROR("kernel nbd: re-attach %s: %s", dev.c_str(), st.error().to_string().c_str());
          return done(dev + " could not be re-attached (" + st.error().to_string() +
                      "): restart mirrord to attach it");
        }
        attached_ = true;
        dead_ = false;
        MLOG_INFO("kernel nbd: re-attached %s %s for the new role", dev.c_str(),
                  ro ? "read-only" : "read-write");
        done("");
      });
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
  if (stopping_) {
    Error e{ESHUTDOWN, path() + ": mirrord is stopping: the next mirrord gives the device its "
                                "new size"};
    return loop_.defer([done = std::move(done), e] { done(e); });
  }
  if (!attached_ || size_to_set(index_) == 0) {  // detached, or it has the size
    loop_.defer([done = std::move(done)] { done({}); });
    return;
  }
  const std::string dev = path();
  // The call's own descriptor: an abandoned call (stop()) may outlive ioctl_.
  std::shared_ptr<UniqueFd> ioctl;
  if (ioctl_) {
    ioctl = std::make_shared<UniqueFd>(::fcntl(ioctl_->device_fd(), F_DUPFD_CLOEXEC, 0));
    if (!ioctl->valid()) {
      Error e = errno_error(dev + ": resize: dup");
      return loop_.defer([done = std::move(done), e] { done(e); });
    }
  }
  uint64_t delay_ms = opts_.call_delay_ms;
  if (delay_ms)
    MLOG_WARN("TEST FAULT: the resize call of %s pauses %llu ms before the kernel call",
              dev.c_str(), static_cast<unsigned long long>(delay_ms));
  auto call = [size, dev, ioctl, index = index_, id = opts_.backend_id, delay_ms]() -> Status {
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    Status st;
    if (ioctl) {
      st = knbd::IoctlNbd::set_size(ioctl->get(), size);
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
    return st ? st : Status(Error{st.error().code, dev + ": resize: " + st.error().message});
  };
  auto answer = [this, dev, done](Status st) {
    resize_answered_ = true;
    answer_resize(dev, st, done);
    stop_step();
  };
  auto late = [this, dev](Status st) {
    if (st) {
      MLOG_INFO("kernel nbd: %s has the new size (late)", dev.c_str());
    } else {
      MLOG_WARN("kernel nbd: the late resize failed: %s", st.error().to_string().c_str());
    }
    stop_step();
  };
  Status st = resize_call_.start(std::move(call), opts_.resize_wait_ms, answer, late);
  if (st) {
    resize_answered_ = false;
    return;
  }
  if (st.error().code == EBUSY)
    st = Error{EBUSY, dev + ": the kernel has not returned from the last resize call yet; run "
                            "`mirrorctl resize` again once it has (the log says when)"};
  loop_.defer([done = std::move(done), st] { done(st); });
}

void KernelDevice::answer_resize(const std::string& dev, Status st,
                                 const std::function<void(Status)>& done) {
  if (st) {
    MLOG_INFO("kernel nbd: %s has the new size", dev.c_str());
    return done(st);
  }
  if (st.error().code != ETIMEDOUT) return done(st);
  Error e{ETIMEDOUT, dev + ": the kernel has not taken the new size within " +
                         std::to_string(opts_.resize_wait_ms / 1000) +
                         " s (its resize call has not returned: it waits for the requests "
                         "in flight); run `mirrorctl resize` again later, which hands it "
                         "the size again"};
  MLOG_WARN("kernel nbd: %s", e.message.c_str());
  done(e);
}

DeviceStatus KernelDevice::status() const {
  DeviceStatus s;
  s.path = index_ >= 0 ? "/dev/nbd" + std::to_string(index_) : opts_.cfg.path;
  s.api = api_ == knbd::Api::kIoctl ? "ioctl" : "netlink";
  s.connections = opts_.cfg.connections;
  s.state = !attached_ ? "detached" : dead_ ? "dead" : "attached";
  s.reattached = reattached_;
  s.link_dead_events = link_dead_events_;
  // What the kernel enforces, which after a role change can differ from
  // what the export tells new clients (a device in use keeps its state).
  s.read_only = attached_ ? kernel_read_only()
                          : server_.kernel_flags(opts_.export_name) & nbd::kFlagReadOnly;
  return s;
}

}  // namespace mirror
