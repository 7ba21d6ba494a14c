#include "clock.h"
#include "backup.h"

#include <fcntl.h>
#include <libnbd.h>
#include <poll.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

namespace mirror {
namespace {

constexpr uint64_t kWindow = 64 << 20;  // block status per request
constexpr uint64_t kChunk = 4 << 20;    // pread size
constexpr uint32_t kStateZero = 2;      // base:allocation: reads as zeroes

// nbd_close drops the connection without waiting for the server (the
// polite disconnect is Nbd::disconnect, bounded like every other wait).
struct NbdClose {
  void operator()(nbd_handle* h) const { nbd_close(h); }
};
using NbdHandle = std::unique_ptr<nbd_handle, NbdClose>;

Error nbd_failure(const std::string& what) {
  int e = nbd_get_errno();
  return Error{e ? e : EIO, what + ": " + (nbd_get_error() ? nbd_get_error() : "libnbd error")};
}

// libnbd's state machine run on our own poll(), so that no step waits on the
// server for longer than the I/O timeout (libnbd's synchronous calls wait
// without end: a hung secondary kept its socket open and the backup with
// it), and the cancel descriptor (a signal arrived) stops any wait at once.
class Nbd {
 public:
  Nbd(nbd_handle* h, const CopyOptions& o) : h_(h), o_(o) {}

  // Runs the state machine until done() says 1 (finished) or -1 (failed).
  Status run(const char* what, const std::function<int()>& done) {
    uint64_t deadline = mono_ms() + uint64_t(o_.io_timeout_ms);
    for (;;) {
      int d = done();
      if (d < 0) return nbd_failure(what);
      if (d > 0) return {};
      pollfd p[2] = {{nbd_aio_get_fd(h_), 0, 0}, {o_.cancel_fd, POLLIN, 0}};
      unsigned dir = nbd_aio_get_direction(h_);
      if (dir & LIBNBD_AIO_DIRECTION_READ) p[0].events |= POLLIN;
      if (dir & LIBNBD_AIO_DIRECTION_WRITE) p[0].events |= POLLOUT;
      if (p[0].fd < 0) return nbd_failure(what);
      uint64_t now = mono_ms();
      if (now >= deadline)
        return Error{ETIMEDOUT, std::string(what) + ": " + o_.uri + " did not answer within " +
                                    std::to_string(o_.io_timeout_ms / 1000) +
                                    " s (the secondary's daemon hung or stopped?)"};
      int r = ::poll(p, o_.cancel_fd >= 0 ? 2 : 1, int(deadline - now));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return errno_error("poll");
      if (p[1].revents) return Error{ECANCELED, std::string(what) + ": interrupted"};
      int rc = 0;
      if (p[0].revents & (POLLIN | POLLHUP | POLLERR))
        rc = nbd_aio_notify_read(h_);
      else if (p[0].revents & POLLOUT)
        rc = nbd_aio_notify_write(h_);
      if (rc < 0) return nbd_failure(what);
    }
  }

  Status connect() {
    if (nbd_aio_connect_uri(h_, o_.uri.c_str()) < 0) return nbd_failure("connecting to " + o_.uri);
    std::string what = "connecting to " + o_.uri;
    return run(what.c_str(), [this] {
      if (nbd_aio_is_ready(h_)) return 1;
      return nbd_aio_is_connecting(h_) ? 0 : -1;
    });
  }

  // Waits for the command `cookie` (-1: issuing it failed).
  Status wait(int64_t cookie, const std::string& what) {
    if (cookie < 0) return nbd_failure(what);
    return run(what.c_str(), [&] { return nbd_aio_command_completed(h_, cookie); });
  }

  // Tells the server we are done, and waits (bounded) for it to close.
  void disconnect() {
    if (nbd_aio_disconnect(h_, 0) < 0) return;
    (void)run("disconnecting", [this] { return nbd_aio_is_closed(h_) || nbd_aio_is_dead(h_); });
  }

 private:
  nbd_handle* h_;
  const CopyOptions& o_;
};

// Extents of one context over a window: (end offset, flags), in order.
struct Run {
  uint64_t end;
  uint32_t flags;
};
struct Window {
  uint64_t start = 0;
  std::vector<Run> alloc, changed;
};

int on_extents(void* user, const char* context, uint64_t offset, uint32_t* entries, size_t n,
               int*) {
  auto* w = static_cast<Window*>(user);
  std::vector<Run>* runs = nullptr;
  if (std::strcmp(context, "base:allocation") == 0) runs = &w->alloc;
  if (std::strcmp(context, kChangedContext) == 0) runs = &w->changed;
  if (!runs) return 0;
  uint64_t pos = offset;
  for (size_t i = 0; i + 1 < n; i += 2) {
    pos += entries[i];
    runs->push_back({pos, entries[i + 1]});
  }
  return 0;
}

class Progress {
 public:
  Progress(uint64_t total, bool bar) : total_(total), bar_(bar), t0_((double(mono_us()) / 1e6)) {}
  void update(uint64_t pos, uint64_t copied) {
    int pct = total_ ? int(pos * 100 / total_) : 100;
    if (bar_) {
      double now = (double(mono_us()) / 1e6);
      if (pos < total_ && now - last_ < 0.1) return;
      last_ = now;
      int filled = pct * 30 / 100;
      std::fprintf(stderr, "\rbackup [%.*s%*s] %3d%%  %llu MiB copied", filled,
                   "##############################", 30 - filled, "", pct,
                   static_cast<unsigned long long>(copied >> 20));
      if (pos >= total_) std::fputc('\n', stderr);
    } else if (pct / 10 > last_decile_ || (pos >= total_ && last_decile_ < 10)) {
      last_decile_ = pct / 10;
      std::fprintf(stderr, "backup: %d%% (%llu of %llu bytes scanned, %llu copied, %.1f s)\n",
                   pct, static_cast<unsigned long long>(pos),
                   static_cast<unsigned long long>(total_),
                   static_cast<unsigned long long>(copied), (double(mono_us()) / 1e6) - t0_);
    }
    std::fflush(stderr);
  }

 private:
  uint64_t total_;
  bool bar_;
  double t0_, last_ = 0;
  int last_decile_ = -1;
};

bool all_zero(const uint8_t* p, size_t n) {
  return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

Status punch(int fd, uint64_t off, uint64_t len) {
  if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(off), off_t(len)) == 0)
    return {};
  // No hole punching here: write zeroes, the bytes are what matter.
  std::vector<uint8_t> zeroes(std::min<uint64_t>(len, kChunk), 0);
  for (uint64_t done = 0; done < len;) {
    size_t n = size_t(std::min<uint64_t>(len - done, zeroes.size()));
    ssize_t w = ::pwrite(fd, zeroes.data(), n, off_t(off + done));
    if (w <= 0) return errno_error("writing the backup image");
    done += uint64_t(w);
  }
  return {};
}

Status write_all(int fd, const uint8_t* p, uint64_t len, uint64_t off) {
  for (uint64_t done = 0; done < len;) {
    ssize_t w = ::pwrite(fd, p + done, size_t(len - done), off_t(off + done));
    if (w <= 0) return errno_error("writing the backup image");
    done += uint64_t(w);
  }
  return {};
}

}  // namespace

Result<CopyStats> copy_image(const CopyOptions& o) {
  CopyStats st;
  double t0 = (double(mono_us()) / 1e6);
  NbdHandle h(nbd_create());
  if (!h) return nbd_failure("libnbd");
  if (nbd_add_meta_context(h.get(), "base:allocation") < 0 ||
      (o.incremental && nbd_add_meta_context(h.get(), kChangedContext) < 0))
    return nbd_failure("libnbd");
  Nbd nbd(h.get(), o);
  if (auto c = nbd.connect(); !c) return c.error();
  if (o.incremental && nbd_can_meta_context(h.get(), kChangedContext) != 1)
    return Error{ENOTSUP, o.uri + " does not publish " + kChangedContext +
                              " (not a mirrord secondary?): take a full backup"};
  bool have_alloc = nbd_can_meta_context(h.get(), "base:allocation") == 1;
  int64_t size = nbd_get_size(h.get());
  if (size < 0) return nbd_failure("export size");
  st.size = uint64_t(size);
  struct stat sb;
  if (::fstat(o.fd, &sb) < 0) return errno_error("the backup image");
  if (uint64_t(sb.st_size) != st.size) {
    if (o.incremental)
      return Error{EINVAL, "the image has " + std::to_string(sb.st_size) +
                               " bytes, the volume " + std::to_string(st.size)};
    if (::ftruncate(o.fd, off_t(st.size)) < 0) return errno_error("sizing the backup image");
  }

  Progress progress(st.size, o.bar);
  std::vector<uint8_t> buf(kChunk);
  uint64_t pos = 0;
  while (pos < st.size) {
    Window w;
    w.start = pos;
    uint64_t count = std::min(kWindow, st.size - pos);
    if (have_alloc || o.incremental) {
      nbd_extent_callback cb{on_extents, &w, nullptr};
      int64_t cookie = nbd_aio_block_status(h.get(), count, pos, cb, nbd_completion_callback{}, 0);
      if (auto s = nbd.wait(cookie, "block status at " + std::to_string(pos)); !s)
        return s.error();
    }
    if (!have_alloc) w.alloc.push_back({pos + count, 0});
    if (!o.incremental) w.changed.push_back({pos + count, 1});
    if (w.alloc.empty() || w.changed.empty())
      return Error{EPROTO, "the server answered block status without extents"};
    uint64_t end = std::min({w.alloc.back().end, w.changed.back().end, pos + count});
    if (end <= pos) return Error{EPROTO, "the server's extents do not advance"};
    size_t ia = 0, ic = 0;
    while (pos < end) {
      while (w.alloc[ia].end <= pos) ++ia;
      while (w.changed[ic].end <= pos) ++ic;
      uint64_t seg_end = std::min({w.alloc[ia].end, w.changed[ic].end, end});
      uint64_t len = seg_end - pos;
      if (w.changed[ic].flags & 1) {
        st.changed_bytes += len;
        if (w.alloc[ia].flags & kStateZero) {
          st.zero_bytes += len;
          if (o.incremental)
            if (auto s = punch(o.fd, pos, len); !s) return s.error();
        } else {
          for (uint64_t off = pos; off < seg_end;) {
            size_t n = size_t(std::min<uint64_t>(kChunk, seg_end - off));
            int64_t cookie =
                nbd_aio_pread(h.get(), buf.data(), n, off, nbd_completion_callback{}, 0);
            std::string what = "reading " + std::to_string(n) + " bytes at " + std::to_string(off);
            if (auto s = nbd.wait(cookie, what); !s) return s.error();
            if (all_zero(buf.data(), n)) {
              st.zero_bytes += n;
              if (o.incremental)
                if (auto s = punch(o.fd, off, n); !s) return s.error();
            } else {
              if (auto s = write_all(o.fd, buf.data(), n, off); !s) return s.error();
              st.data_bytes += n;
            }
            off += n;
            progress.update(off, st.data_bytes);
          }
        }
      }
      pos = seg_end;
      progress.update(pos, st.data_bytes);
    }
  }
  progress.update(st.size, st.data_bytes);
  nbd.disconnect();
  if (::fsync(o.fd) < 0) return errno_error("syncing the backup image");
  st.seconds = (double(mono_us()) / 1e6) - t0;
  return st;
}

// ------------------------------------------------------------- sidecar --

std::string record_path(const std::string& image) { return image + ".mirrord.json"; }

Result<BackupRecord> read_record(const std::string& image) {
  std::ifstream in(record_path(image));
  if (!in)
    return Error{ENOENT, "no backup record " + record_path(image) +
                             ": take a full backup to " + image + " first"};
  auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("point") ||
      !j["point"].is_number_unsigned() || !j.contains("volume") || !j["volume"].is_string() ||
      !j.contains("size") || !j["size"].is_number_unsigned())
    return Error{EINVAL, record_path(image) + " is malformed: take a full backup"};
  return BackupRecord{j["volume"], j["size"], j["point"]};
}

Status write_record(const std::string& image, const BackupRecord& r) {
  std::string path = record_path(image), tmp = path + ".tmp";
  std::string text =
      nlohmann::json{{"volume", r.volume}, {"size", r.size}, {"point", r.point}}.dump(2) + "\n";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return errno_error(tmp);
  bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size()) && ::fsync(fd) == 0;
  int saved = errno;
  ::close(fd);
  if (!ok) return Error{saved, "writing " + tmp};
  if (::rename(tmp.c_str(), path.c_str()) < 0) return errno_error("renaming " + tmp);
  return {};
}

}  // namespace mirror
