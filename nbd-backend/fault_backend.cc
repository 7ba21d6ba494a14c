#include "fault_backend.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "log.h"

namespace mirror {

namespace {

Result<uint64_t> parse_size(const std::string& key, const std::string& s) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (s.empty() || end == s.c_str() || errno || s[0] == '-')
    return Error{EINVAL, "MIRRORD_FAULTS: " + key + ": '" + s + "' is not a number"};
  uint64_t mul = 1;
  std::string suffix(end);
  if (suffix == "K") mul = 1ull << 10;
  else if (suffix == "M") mul = 1ull << 20;
  else if (suffix == "G") mul = 1ull << 30;
  else if (!suffix.empty())
    return Error{EINVAL, "MIRRORD_FAULTS: " + key + ": bad suffix in '" + s + "' (K, M or G)"};
  return uint64_t(v) * mul;
}

}  // namespace

bool FaultSpec::any_data() const {
  return !write_eio.empty() || !write_enospc.empty() || !read_eio.empty() ||
         !bad_sector.empty() || !writeback_eio.empty() || eio_after || dead_after ||
         enospc_after || power_loss || crash_after || trim_unsupported || read_delay_ms ||
         !write_stall.empty();
}

bool FaultSpec::any() const { return any_data() || meta_eio_after || meta_delay_ms || stop_on_resize || stop_on_detach ||
         stop_after_split ||
         device_call_delay_ms;
}

Result<FaultSpec> FaultSpec::parse(const std::string& text) {
  FaultSpec spec;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) continue;
    size_t eq = item.find('=');
    std::string key = item.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (key == "trim-unsupported" && eq == std::string::npos) {
      spec.trim_unsupported = true;
      continue;
    }
    if (key == "power-loss" && eq == std::string::npos) {
      spec.power_loss = true;
      continue;
    }
    if (key == "stop-on-resize" && eq == std::string::npos) {
      spec.stop_on_resize = true;
      continue;
    }
    if (key == "stop-on-detach" && eq == std::string::npos) {
      spec.stop_on_detach = true;
      continue;
    }
    if (key == "stop-after-split" && eq == std::string::npos) {
      spec.stop_after_split = true;
      continue;
    }
    if (eq == std::string::npos)
      return Error{EINVAL, "MIRRORD_FAULTS: '" + item + "': expected KEY=VALUE"};
    if (key == "write-eio" || key == "read-eio" || key == "write-enospc" ||
        key == "bad-sector" || key == "writeback-eio") {
      size_t colon = value.find(':');
      if (colon == std::string::npos)
        return Error{EINVAL, "MIRRORD_FAULTS: " + key + ": expected OFFSET:LENGTH, got '" + value + "'"};
      auto off = parse_size(key, value.substr(0, colon));
      if (!off) return off.error();
      auto len = parse_size(key, value.substr(colon + 1));
      if (!len) return len.error();
      if (*len == 0) return Error{EINVAL, "MIRRORD_FAULTS: " + key + ": empty range"};
      auto& v = key == "write-eio"       ? spec.write_eio
                : key == "read-eio"      ? spec.read_eio
                : key == "bad-sector"    ? spec.bad_sector
                : key == "writeback-eio" ? spec.writeback_eio
                                         : spec.write_enospc;
      v.push_back({*off, *len});
      continue;
    }
    if (key == "write-stall") {
      size_t c1 = value.find(':');
      size_t c2 = c1 == std::string::npos ? c1 : value.find(':', c1 + 1);
      if (c2 == std::string::npos)
        return Error{EINVAL, "MIRRORD_FAULTS: " + key + ": expected OFFSET:LENGTH:MS, got '" + value + "'"};
      auto off = parse_size(key, value.substr(0, c1));
      if (!off) return off.error();
      auto len = parse_size(key, value.substr(c1 + 1, c2 - c1 - 1));
      if (!len) return len.error();
      auto ms = parse_size(key, value.substr(c2 + 1));
      if (!ms) return ms.error();
      if (*len == 0 || *ms == 0)
        return Error{EINVAL, "MIRRORD_FAULTS: " + key + ": empty range or no delay"};
      spec.write_stall.push_back({{*off, *len}, *ms});
      continue;
    }
    if (key == "power-loss-at-resize") {
      bool known = false;
      for (const char* step : kResizeSteps) known = known || value == step;
      if (!known)
        return Error{EINVAL, "MIRRORD_FAULTS: " + key + ": unknown step '" + value +
                                 "' (extended, flushed, answered, grown)"};
      spec.power_loss_at_resize = value;
      spec.power_loss = true;
      continue;
    }
    if (key == "meta-delay-ms" || key == "device-call-delay-ms" || key == "read-delay-ms") {
      auto n = parse_size(key, value);
      if (!n) return n.error();
      if (*n == 0) return Error{EINVAL, "MIRRORD_FAULTS: " + key + ": must be at least 1"};
      (key == "meta-delay-ms"   ? spec.meta_delay_ms
       : key == "read-delay-ms" ? spec.read_delay_ms
                                : spec.device_call_delay_ms) = *n;
      continue;
    }
    if (key == "eio-after" || key == "enospc-after" || key == "crash-after" ||
        key == "meta-eio-after" || key == "dead-after") {
      auto n = parse_size(key, value);
      if (!n) return n.error();
      if (*n == 0) return Error{EINVAL, "MIRRORD_FAULTS: " + key + ": must be at least 1"};
      (key == "eio-after"      ? spec.eio_after
       : key == "enospc-after" ? spec.enospc_after
       : key == "crash-after"  ? spec.crash_after
       : key == "dead-after"   ? spec.dead_after
                               : spec.meta_eio_after) = *n;
      if (key == "crash-after") spec.power_loss = true;
      continue;
    }
    return Error{EINVAL, "MIRRORD_FAULTS: unknown fault '" + key +
                             "' (write-eio, read-eio, write-enospc, bad-sector, eio-after, enospc-after, "
                             "dead-after, power-loss, crash-after, meta-eio-after, meta-delay-ms, "
                             "trim-unsupported, stop-on-resize, stop-on-detach, device-call-delay-ms, "
                             "power-loss-at-resize, read-delay-ms, write-stall, writeback-eio)"};
  }
  return spec;
}

std::string FaultSpec::to_string() const {
  std::string s;
  auto add = [&](const std::string& item) { s += (s.empty() ? "" : ",") + item; };
  auto ranges = [&](const char* key, const std::vector<Range>& v) {
    for (const auto& r : v) add(std::string(key) + "=" + std::to_string(r.off) + ":" + std::to_string(r.len));
  };
  ranges("write-eio", write_eio);
  ranges("read-eio", read_eio);
  ranges("write-enospc", write_enospc);
  ranges("bad-sector", bad_sector);
  ranges("writeback-eio", writeback_eio);
  if (eio_after) add("eio-after=" + std::to_string(eio_after));
  if (enospc_after) add("enospc-after=" + std::to_string(enospc_after));
  if (dead_after) add("dead-after=" + std::to_string(dead_after));
  if (crash_after) add("crash-after=" + std::to_string(crash_after));
  if (!power_loss_at_resize.empty()) add("power-loss-at-resize=" + power_loss_at_resize);
  if (power_loss && !crash_after && power_loss_at_resize.empty()) add("power-loss");
  if (meta_eio_after) add("meta-eio-after=" + std::to_string(meta_eio_after));
  if (meta_delay_ms) add("meta-delay-ms=" + std::to_string(meta_delay_ms));
  if (read_delay_ms) add("read-delay-ms=" + std::to_string(read_delay_ms));
  for (const auto& w : write_stall)
    add("write-stall=" + std::to_string(w.range.off) + ":" + std::to_string(w.range.len) + ":" +
        std::to_string(w.ms));
  if (trim_unsupported) add("trim-unsupported");
  if (stop_on_resize) add("stop-on-resize");
  if (stop_on_detach) add("stop-on-detach");
  if (stop_after_split) add("stop-after-split");
  if (device_call_delay_ms) add("device-call-delay-ms=" + std::to_string(device_call_delay_ms));
  return s;
}

// One operation passed to the inner backend.
struct FaultBackend::Op final : IoDone {
  FaultBackend* fb = nullptr;
  IoDone* upper = nullptr;
  uint64_t record = 0;  // PowerLoss undo record of a modification
  uint64_t sync = 0;    // PowerLoss token of a running sync
  uint64_t off = 0, len = 0;  // a modification's range (bad sectors it remaps)
  uint64_t lost = 0;    // writeback-eio: the LostWrite it is
  bool fua = false;     // a sync follows the modification
  uint64_t fua_record = 0;  // ... which makes this record durable
  void io_done(int err) override { fb->on_done(this, err); }
};

FaultBackend::FaultBackend(Loop& loop, Backend& inner, int fd, const FaultSpec& spec,
                           PowerLoss* power_loss)
    : ForwardingBackend(inner), loop_(loop), fd_(fd), spec_(spec), pl_(power_loss) {}

FaultBackend::~FaultBackend() = default;

void FaultBackend::fail_later(IoDone* done, int err) {
  ++injected_;
  loop_.defer([done, err] { done->io_done(err); });
}

int FaultBackend::modification_fault(uint64_t off, uint64_t len) {
  uint64_t n = ++writes_;
  if (spec_.crash_after && n > spec_.crash_after) pl_->crash("crash-after");
  for (const auto& r : spec_.write_eio)
    if (r.touches(off, len)) return -EIO;
  for (const auto& r : spec_.write_enospc)
    if (r.touches(off, len)) return -ENOSPC;
  if (spec_.eio_after && n > spec_.eio_after) return -EIO;
  if (spec_.dead_after && n > spec_.dead_after) return -EIO;
  if (spec_.enospc_after && n > spec_.enospc_after) return -ENOSPC;
  return 0;
}

FaultBackend::Op* FaultBackend::begin(uint64_t off, uint64_t len, bool fua, IoDone* done) {
  if (int err = modification_fault(off, len)) {
    fail_later(done, err);
    return nullptr;
  }
  Op* op = new Op();
  op->fb = this;
  op->upper = done;
  op->off = off;
  op->len = len;
  ++in_flight_;
  if (pl_) {
    op->record = pl_->before_write(fd_, off, len);
    op->fua = fua;
  }
  return op;
}

void FaultBackend::on_done(Op* op, int err) {
  if (uint64_t id = std::exchange(op->lost, 0)) {
    for (auto& l : lost_)
      if (l.id == id) l.landed = !err;
  }
  if (!err && op->len) {  // a bad sector the modification covers whole is remapped
    std::erase_if(spec_.bad_sector, [op](const FaultSpec::Range& r) {
      return op->off <= r.off && r.off + r.len <= op->off + op->len;
    });
  }
  if (op->record) {
    pl_->write_done(op->record);
    if (!err && op->fua) {
      // The inner sync covers more, but FUA promises only this write:
      // only it is kept at a power loss.
      op->fua_record = op->record;
      op->record = 0;
      return inner_.flush(op);
    }
    op->record = 0;
  } else if (op->fua_record) {
    if (!err) pl_->write_durable(op->fua_record);
  } else if (op->sync) {
    pl_->sync_done(op->sync, err == 0);
  }
  IoDone* upper = op->upper;
  --in_flight_;
  delete op;
  upper->io_done(err);
}

bool FaultBackend::unreadable(uint64_t off, uint64_t len) const {
  if (dead()) return true;
  for (const auto& r : spec_.read_eio)
    if (r.touches(off, len)) return true;
  for (const auto& r : spec_.bad_sector)
    if (r.touches(off, len)) return true;
  return false;
}

void FaultBackend::read(uint64_t offset, uint32_t length, uint8_t* buf, IoDone* done) {
  if (unreadable(offset, length)) return fail_later(done, -EIO);
  if (spec_.read_delay_ms) {
    return inner_.read(offset, length, buf,
                       FnDone::make([this, done](int err) { complete_later(done, err); }));
  }
  inner_.read(offset, length, buf, done);
}

void FaultBackend::complete_later(IoDone* done, int err) {
  later(spec_.read_delay_ms, [done, err] { done->io_done(err); });
}

void FaultBackend::later(uint64_t ms, std::function<void()> fn) {
  delays_.emplace_back();
  auto it = std::prev(delays_.end());
  *it = std::make_unique<Timer>(loop_, [this, it, fn = std::move(fn)] {
    fn();
    // Freed after this callback returns (a Timer outlives its completion).
    loop_.defer([this, it] { delays_.erase(it); });
  });
  (*it)->arm(ms);
}

void FaultBackend::read_stable(uint64_t offset, uint32_t length, uint8_t* buf, IoDone* done) {
  if (unreadable(offset, length)) return fail_later(done, -EIO);
  inner_.read_stable(offset, length, buf, done);
}

void FaultBackend::write(uint64_t offset, uint32_t length, const uint8_t* buf, bool fua,
                         IoDone* done) {
  Op* op = begin(offset, length, fua, done);
  if (!op) return;
  bool inner_fua = fua && !pl_;
  auto stall = std::find_if(spec_.write_stall.begin(), spec_.write_stall.end(),
                            [&](const FaultSpec::Stall& s) { return s.range.touches(offset, length); });
  if (stall != spec_.write_stall.end()) {
    uint64_t ms = stall->ms;
    spec_.write_stall.erase(stall);
    ++injected_;
    MLOG_WARN("TEST FAULT write-stall: the write at %llu+%u reaches the disk %llu ms late",
              static_cast<unsigned long long>(offset), length, static_cast<unsigned long long>(ms));
    return later(ms, [this, offset, length, buf, inner_fua, op] {
      MLOG_WARN("TEST FAULT write-stall: the write at %llu+%u goes to the disk now",
                static_cast<unsigned long long>(offset), length);
      inner_.write(offset, length, buf, inner_fua, op);
    });
  }
  op->lost = maybe_lose(offset, length, fua);
  inner_.write(offset, length, buf, inner_fua, op);
}

uint64_t FaultBackend::maybe_lose(uint64_t offset, uint32_t length, bool fua) {
  if (fua) return 0;
  auto r = std::find_if(spec_.writeback_eio.begin(), spec_.writeback_eio.end(),
                        [&](const FaultSpec::Range& x) { return x.touches(offset, length); });
  if (r == spec_.writeback_eio.end()) return 0;
  spec_.writeback_eio.erase(r);
  LostWrite l;
  l.id = next_lost_++;
  l.off = offset;
  l.old.resize(length);
  ssize_t n = ::pread(fd_, l.old.data(), length, off_t(offset));
  if (n < 0) n = 0;
  std::memset(l.old.data() + n, 0, length - size_t(n));  // past the end: zeros
  MLOG_WARN("TEST FAULT writeback-eio: the write at %llu+%u will be lost at writeback",
            static_cast<unsigned long long>(offset), length);
  lost_.push_back(std::move(l));
  return lost_.back().id;
}

void FaultBackend::rewrite(uint64_t offset, uint32_t length, const uint8_t* buf,
                           IoDone* done) {
  if (Op* op = begin(offset, length, false, done)) inner_.rewrite(offset, length, buf, op);
}

void FaultBackend::trim(uint64_t offset, uint32_t length, bool fua, IoDone* done) {
  // What FileBackend reports on a filesystem or device that cannot punch.
  if (spec_.trim_unsupported) return fail_later(done, -EOPNOTSUPP);
  if (Op* op = begin(offset, length, fua, done)) inner_.trim(offset, length, fua && !pl_, op);
}

void FaultBackend::zero(uint64_t offset, uint32_t length, ZeroFlags flags, IoDone* done) {
  bool fua = flags.fua;
  if (pl_) flags.fua = false;
  if (Op* op = begin(offset, length, fua, done)) inner_.zero(offset, length, flags, op);
}

void FaultBackend::flush(IoDone* done) {
  if (dead()) return fail_later(done, -EIO);
  bool lost = false;
  for (auto it = lost_.begin(); it != lost_.end();) {
    if (!it->landed) {
      ++it;
      continue;
    }
    // Its writeback failed: the disk has the old bytes, the sync says so.
    if (::pwrite(fd_, it->old.data(), it->old.size(), off_t(it->off)) < 0)
      MLOG_ERROR("TEST FAULT writeback-eio: restoring %llu failed: %s",
                 static_cast<unsigned long long>(it->off), strerror(errno));
    MLOG_WARN("TEST FAULT writeback-eio: the write at %llu+%zu was lost: this flush fails",
              static_cast<unsigned long long>(it->off), it->old.size());
    it = lost_.erase(it);
    lost = true;
  }
  if (lost) return fail_later(done, -EIO);
  if (!pl_) return inner_.flush(done);
  Op* op = new Op();
  op->fb = this;
  op->upper = done;
  op->sync = pl_->sync_started(fd_);
  ++in_flight_;
  inner_.flush(op);
}

}  // namespace mirror
