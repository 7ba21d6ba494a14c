// fuzz-bitmap-load: Bitmap::open on arbitrary metadata file contents
// (docs/bitmap-format.md).
//
// Input: byte 0 is a control byte, the rest is the file. Control bit 0
// re-seals the CRCs of both superblock slots, bit 1 those of every later
// full block, so the fuzzer also reaches the checks behind the checksums.
// Bit 2 opens with a larger volume size (a dirty map block and an activity
// bit more), so a file written for the base size takes the grow path.
//
// Invariants, for every input:
//  - open succeeds (bad metadata is a full resync, never an error);
//  - full_resync comes with a reason, kFlagFullSyncNeeded, every region
//    dirty, no activity and zero generations; otherwise there is no reason;
//  - dirty_bytes() equals the sum of the runs next_dirty() reports (an
//    independent walk over the map) and never exceeds the volume size;
//  - after flush_sync() a second open finds the same state with no
//    complaint: whatever open decided is persistent.
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bitmap.h"
#include "crc32c.h"
#include "log.h"
#include "wire.h"

namespace {

using mirror::Bitmap;
using mirror::BitmapOpenReport;

constexpr size_t kBlock = 4096;

// 300 MiB + 12345 bytes at 4 KiB: 76804 dirty bits in 3 blocks, a short last
// region, 76 activity bits in 1 block; a 24 KiB file.
mirror::MetaIdentity fuzz_identity() {
  mirror::MetaIdentity id;
  id.volume = "fuzzvol";
  id.volume_size = 300ull * 1024 * 1024 + 12345;
  id.node = "alpha";
  id.peer = "beta";
  id.granularity = 4096;
  id.al_extent = 4 << 20;
  return id;
}

[[noreturn]] void fail(const char* what, const BitmapOpenReport& r) {
  std::fprintf(stderr, "invariant violated: %s\nreason: %s\n", what, r.reason.c_str());
  for (const auto& w : r.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  std::abort();
}

void reseal(std::vector<uint8_t>& f, size_t block, size_t crc_at) {
  uint8_t* b = &f[block * kBlock];
  mirror::wire::put_u32(b + crc_at, 0);
  mirror::wire::put_u32(b + crc_at, mirror::crc32c(b, kBlock));
}

struct State {
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  std::vector<bool> active;
  mirror::Generation gen;
  uint32_t flags;
  uint64_t cursor;
  uint32_t al_extent;
  bool operator==(const State&) const = default;
};

State capture(const Bitmap& bm, const BitmapOpenReport& r) {
  State s{};
  uint64_t off, len, sum = 0;
  for (uint64_t from = 0; bm.next_dirty(from, ~0ull, &off, &len); from = off + len) {
    if (len == 0 || off < from || off + len > bm.volume_size()) fail("bad next_dirty run", r);
    s.runs.emplace_back(off, len);
    sum += len;
  }
  if (sum != bm.dirty_bytes()) fail("dirty_bytes() disagrees with next_dirty()", r);
  for (uint64_t e = 0; e < bm.volume_size(); e += bm.al_extent())
    s.active.push_back(bm.is_active(e, 1));
  s.gen = bm.generation();
  s.flags = bm.flags();
  s.cursor = bm.resync_cursor();
  s.al_extent = bm.al_extent();
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // One ring for the process; open() does not submit to it.
  static mirror::Loop* loop = [] {
    mirror::set_log_level(mirror::LogLevel::kError);
    auto l = mirror::Loop::create(8);
    if (!l.ok()) std::abort();
    return std::move(l).value().release();
  }();
  if (size == 0) return 0;
  const uint8_t control = data[0];
  std::vector<uint8_t> file(data + 1, data + size);
  for (size_t b = 0; (b + 1) * kBlock <= file.size(); ++b) {
    if (b < 2 && (control & 1)) reseal(file, b, 12);
    if (b >= 2 && (control & 2)) reseal(file, b, 8);
  }

  int fd = ::memfd_create("fuzz-bitmap-load", MFD_CLOEXEC);
  if (fd < 0) std::abort();
  if (!file.empty() && ::pwrite(fd, file.data(), file.size(), 0) != ssize_t(file.size()))
    std::abort();
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  mirror::MetaIdentity id = fuzz_identity();
  if (control & 4) id.volume_size += 32512ull * 4096 + 777;

  BitmapOpenReport r;
  State first;
  {
    auto bm = Bitmap::open(*loop, path, id, &r);
    if (!bm.ok()) {
      // The one refusal by design: a readable superblock of another node
      // (a wrong --node), left as it is. Anything else unusable loads.
      if (bm.error().code == EINVAL &&
          bm.error().message.find("it belongs to node") != std::string::npos) {
        ::close(fd);
        return 0;
      }
      std::fprintf(stderr, "open failed: %s\n", bm.error().to_string().c_str());
      std::abort();
    }
    const Bitmap& b = **bm;
    if (b.dirty_bytes() > id.volume_size) fail("dirty_bytes() above the volume size", r);
    if (r.full_resync) {
      if (r.reason.empty()) fail("full resync without a reason", r);
      if (!(b.flags() & mirror::kFlagFullSyncNeeded)) fail("full resync without the flag", r);
      if (b.dirty_bytes() != id.volume_size) fail("full resync with clean regions", r);
      if (b.is_active(0, id.volume_size) || !(b.generation() == mirror::Generation{}))
        fail("full resync kept activity or generations", r);
    } else if (!r.reason.empty()) {
      fail("a reason without a full resync", r);
    }
    first = capture(b, r);
    if (auto st = (*bm)->flush_sync(); !st.ok()) fail("flush_sync failed", r);
  }
  {
    BitmapOpenReport again;
    auto bm = Bitmap::open(*loop, path, id, &again);
    if (!bm.ok()) fail("second open failed", r);
    if (again.full_resync || !again.warnings.empty()) fail("second open complained", again);
    if (!(capture(**bm, again) == first)) fail("second open found another state", r);
  }
  ::close(fd);
  return 0;
}
