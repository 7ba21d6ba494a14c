#include "clock.h"
#include "backup.h"

#include <fcntl.h>
#include <libnbd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

namespace mirror {
namespace {

constexpr uint64_t kWindow = 64 << 20;  // block status per request
constexpr uint64_t kChunk = 4 << 20;    // pread size
constexpr uint32_t kStateZero = 2;      // base:allocation: reads as zeroes

struct NbdClose {
  void operator()(nbd_handle* h) const {
    nbd_shutdown(h, 0);
    nbd_close(h);
  }
};
using NbdHandle = std::unique_ptr<nbd_handle, NbdClose>;

Error nbd_failure(const std::string& what) {
  int e = nbd_get_errno();
  return Error{e ? e : EIO, what + ": " + (nbd_get_error() ? nbd_get_error() : "libnbd error")};
}

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
  if (nbd_connect_uri(h.get(), o.uri.c_str()) < 0) return nbd_failure("connecting to " + o.uri);
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
      if (nbd_block_status(h.get(), count, pos, cb, 0) < 0)
        return nbd_failure("block status at " + std::to_string(pos));
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
            if (nbd_pread(h.get(), buf.data(), n, off, 0) < 0)
              return nbd_failure("reading " + std::to_string(n) + " bytes at " +
                                 std::to_string(off));
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
