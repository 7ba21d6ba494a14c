#include "power_loss.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "log.h"

namespace mirror {

uint64_t PowerLoss::record_bytes(const Record& r) {
  uint64_t n = 0;
  for (const auto& s : r.segs) n += s.old.size();
  return n;
}

uint64_t PowerLoss::before_write(int fd, uint64_t off, uint64_t len) {
  Record r{fd, off, len, {Segment{off, std::vector<uint8_t>(len)}}};
  uint8_t* old = r.segs[0].old.data();
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::pread(fd, old + got, len - got, off + got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // past the end: the rest was never written (zeroes)
    got += size_t(n);
  }
  uint64_t id = next_id_++;
  bytes_ += len;
  records_.emplace(id, std::move(r));
  return id;
}

void PowerLoss::extended(int fd, uint64_t old_length) {
  Record r{fd, old_length, 0, {}};
  r.done = true;  // the next sync covers it
  r.extension = true;
  records_.emplace(next_id_++, std::move(r));
}

void PowerLoss::write_done(uint64_t id) {
  if (auto it = records_.find(id); it != records_.end()) it->second.done = true;
}

uint64_t PowerLoss::sync_started(int fd) {
  uint64_t token = next_sync_++;
  for (auto& [id, r] : records_) {
    if (r.fd == fd && r.done && r.sync == 0) r.sync = token;
  }
  return token;
}

void PowerLoss::sync_done(uint64_t token, bool ok) {
  for (auto it = records_.begin(); it != records_.end();) {
    Record& r = it->second;
    if (r.sync != token) {
      ++it;
    } else if (ok) {
      bytes_ -= record_bytes(r);
      it = records_.erase(it);
    } else {
      r.sync = 0;  // not durable after all: a later sync may cover it
      ++it;
    }
  }
}

void PowerLoss::write_durable(uint64_t id) {
  auto it = records_.find(id);
  if (it == records_.end()) return;
  int fd = it->second.fd;
  uint64_t lo = it->second.off, hi = lo + it->second.len;
  bytes_ -= record_bytes(it->second);
  for (auto o = records_.begin(); o != it; ++o) {
    Record& r = o->second;
    if (r.fd != fd || r.extension) continue;
    std::vector<Segment> kept;
    for (auto& s : r.segs) {
      uint64_t s_lo = s.off, s_hi = s.off + s.old.size();
      if (s_hi <= lo || hi <= s_lo) {
        kept.push_back(std::move(s));
        continue;
      }
      if (s_lo < lo) kept.push_back({s_lo, {s.old.begin(), s.old.begin() + (lo - s_lo)}});
      if (hi < s_hi) kept.push_back({hi, {s.old.begin() + (hi - s_lo), s.old.end()}});
    }
    bytes_ -= record_bytes(r);
    r.segs = std::move(kept);
    bytes_ += record_bytes(r);
  }
  records_.erase(it);
  for (auto o = records_.begin(); o != records_.end();) {
    bool older_extension = o->first < id && o->second.fd == fd && o->second.extension;
    o = older_extension ? records_.erase(o) : std::next(o);
  }
}

uint64_t PowerLoss::restore_for_testing() {
  uint64_t restored = 0;
  for (auto it = records_.rbegin(); it != records_.rend(); ++it) {
    const Record& r = it->second;
    if (r.extension) {
      // Newer writes past the old end were put back first (as zeroes, which
      // re-extended the file): the cut removes them too.
      if (::ftruncate(r.fd, off_t(r.off)) < 0)
        MLOG_ERROR("power loss: cutting a file back to %llu bytes: %s",
                   static_cast<unsigned long long>(r.off), strerror(errno));
      continue;
    }
    for (const Segment& s : r.segs) {
      size_t put = 0;
      while (put < s.old.size()) {
        ssize_t n = ::pwrite(r.fd, s.old.data() + put, s.old.size() - put, s.off + put);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          MLOG_ERROR("power loss: restoring %zu bytes at %llu: %s", s.old.size(),
                     static_cast<unsigned long long>(s.off), strerror(errno));
          break;
        }
        put += size_t(n);
      }
      restored += put;
    }
  }
  records_.clear();
  bytes_ = 0;
  return restored;
}

void PowerLoss::crash(const char* why) {
  size_t n = records_.size();
  uint64_t restored = restore_for_testing();
  // stderr is the log; the line tells the harness the crash was simulated.
  std::fprintf(stderr, "mirrord: simulated power loss (%s): %zu unsynced writes (%llu bytes) dropped\n",
               why, n, static_cast<unsigned long long>(restored));
  std::fflush(stderr);
  ::kill(::getpid(), SIGKILL);
  ::_exit(137);
}

}  // namespace mirror
