// Tests of FileBackend's FUA paths: which path a FUA write takes (O_DIRECT
// + RWF_DSYNC, buffered + RWF_DSYNC, or the group-committed fdatasync), that
// every path leaves the right bytes both in the page cache and on disk, and
// the page-cache coherence rule for writes that share a page or a folio span.
#include "file_backend.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "buffer.h"

namespace mirror {
namespace {

constexpr uint64_t kSize = 1 << 20;

std::string make_file(const std::string& dir) {
  std::string tmpl = dir + "/file_backend_test.XXXXXX";
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) return {};
  bool ok = ::ftruncate(fd, kSize) == 0;
  ::close(fd);
  if (!ok) ::unlink(tmpl.c_str());
  return ok ? tmpl : std::string();
}

struct FileBackendFixture : ::testing::Test {
  std::unique_ptr<Loop> loop = Loop::create(64).value();
  std::string path;
  std::unique_ptr<FileBackend> be;
  int pending = 0;

  // A directory on a filesystem with direct I/O (TMPDIR, else /var/tmp).
  static std::string disk_dir() {
    const char* t = std::getenv("TMPDIR");
    return t && *t ? t : "/var/tmp";
  }
  void open_in(const std::string& dir) {
    path = make_file(dir);
    ASSERT_FALSE(path.empty()) << "cannot create a file in " << dir;
    auto r = FileBackend::open(*loop, path, {});
    ASSERT_TRUE(r) << r.error().message;
    be = std::move(r).value();
  }
  void TearDown() override {
    be.reset();
    if (!path.empty()) ::unlink(path.c_str());
  }

  // Starts an operation; run() waits for all started ones.
  void start(const std::function<void(IoDone*)>& op, int* result) {
    ++pending;
    op(FnDone::make([this, result](int err) {
      *result = err;
      if (--pending == 0) loop->stop();
    }));
  }
  void run() {
    if (pending) loop->run();
  }
  int write(uint64_t off, const uint8_t* buf, uint32_t len, bool fua) {
    int res = 1;
    start([&](IoDone* d) { be->write(off, len, buf, fua, d); }, &res);
    run();
    return res;
  }
  int rewrite(uint64_t off, const uint8_t* buf, uint32_t len) {
    int res = 1;
    start([&](IoDone* d) { be->rewrite(off, len, buf, d); }, &res);
    run();
    return res;
  }
  // read_stable into buf; its result.
  int read_stable(uint64_t off, uint32_t len, uint8_t* buf) {
    int res = 1;
    start([&](IoDone* d) { be->read_stable(off, len, buf, d); }, &res);
    run();
    return res;
  }
  int flush() {
    int res = 1;
    start([&](IoDone* d) { be->flush(d); }, &res);
    run();
    return res;
  }
  std::vector<uint8_t> read(uint64_t off, uint32_t len) {
    std::vector<uint8_t> out(len);
    int res = 1;
    start([&](IoDone* d) { be->read(off, len, out.data(), d); }, &res);
    run();
    EXPECT_EQ(res, 0);
    return out;
  }
  // The bytes on disk, bypassing the page cache (when the file allows it).
  std::vector<uint8_t> read_disk(uint64_t off, uint32_t len) {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
    if (fd < 0) fd = ::open(path.c_str(), O_RDONLY);
    uint64_t lo = off / 4096 * 4096, hi = (off + len + 4095) / 4096 * 4096;
    Buffer b(hi - lo);
    EXPECT_EQ(::pread(fd, b.data(), hi - lo, lo), ssize_t(hi - lo));
    ::close(fd);
    return {b.data() + (off - lo), b.data() + (off - lo) + len};
  }
  // n 4 KiB FUA writes, `stride` apart, all in flight at once; all succeed?
  bool fua_writes_at_once(int n, uint64_t stride, const uint8_t* buf) {
    std::vector<int> r(n, 1);
    for (int i = 0; i < n; ++i)
      start([&](IoDone* d) { be->write(uint64_t(i) * stride, 4096, buf, true, d); }, &r[i]);
    run();
    return std::all_of(r.begin(), r.end(), [](int e) { return e == 0; });
  }
  // A buffered write of 0xaa bytes, then a FUA write of 0xff bytes, both in
  // flight at once; true if both succeed.
  bool buffered_then_fua(uint64_t boff, uint32_t blen, uint64_t foff, uint32_t flen) {
    Buffer a = filled(blen, 0xaa), f = filled(flen, 0xff);
    int ra = 1, rf = 1;
    start([&](IoDone* d) { be->write(boff, blen, a.data(), false, d); }, &ra);
    start([&](IoDone* d) { be->write(foff, flen, f.data(), true, d); }, &rf);
    run();
    return ra == 0 && rf == 0;
  }
  // What a read returns, and what is on disk after a flush.
  void expect_read_then_flushed(uint64_t off, const std::vector<uint8_t>& want) {
    uint32_t len = uint32_t(want.size());
    EXPECT_EQ(read(off, len), want);
    EXPECT_EQ(flush(), 0);
    EXPECT_EQ(read_disk(off, len), want);
  }
  static Buffer filled(uint32_t len, uint8_t byte) {
    Buffer b(len + 4096);
    std::memset(b.data(), byte, len + 4096);
    return b;
  }
};

std::vector<uint8_t> bytes(uint32_t len, uint8_t byte) { return std::vector<uint8_t>(len, byte); }
// `first` bytes of a, then b up to `len`.
std::vector<uint8_t> halves(uint32_t first, uint8_t a, uint32_t len, uint8_t b) {
  std::vector<uint8_t> v(first, a);
  v.resize(len, b);
  return v;
}

TEST_F(FileBackendFixture, AlignedFuaWriteIsOneDirectDsyncWrite) {
  open_in(disk_dir());
  if (!be->has_direct_path()) GTEST_SKIP() << disk_dir() << " has no direct I/O";
  Buffer b = filled(4096, 0x5a);
  ASSERT_EQ(write(8192, b.data(), 4096, true), 0);
  EXPECT_EQ(be->fua_stats().direct, 1u);
  EXPECT_EQ(be->fua_stats().dsync + be->fua_stats().group, 0u);
  EXPECT_EQ(read(8192, 4096), bytes(4096, 0x5a));
  EXPECT_EQ(read_disk(8192, 4096), bytes(4096, 0x5a));
}

TEST_F(FileBackendFixture, UnalignedFuaWritesGoBufferedWithDsync) {
  open_in(disk_dir());
  Buffer b = filled(4096, 0x11);
  ASSERT_EQ(write(100, b.data(), 1000, true), 0) << "unaligned offset and length";
  ASSERT_EQ(write(16384, b.data() + 1, 4096, true), 0) << "unaligned buffer";
  EXPECT_EQ(be->fua_stats().direct, 0u);
  EXPECT_EQ(be->fua_stats().dsync, 2u);
  EXPECT_EQ(read(100, 1000), bytes(1000, 0x11));
  EXPECT_EQ(read(16384, 4096), bytes(4096, 0x11));
  EXPECT_EQ(read_disk(100, 1000), bytes(1000, 0x11));
  EXPECT_EQ(read_disk(16384, 4096), bytes(4096, 0x11));
  EXPECT_EQ(read(0, 100), bytes(100, 0)) << "nothing around the range";
  EXPECT_EQ(read(1100, 100), bytes(100, 0));
}

TEST_F(FileBackendFixture, FuaWriteThenBufferedReadSeesNewData) {
  open_in(disk_dir());
  Buffer old = filled(4096, 0x01), fresh = filled(4096, 0x02);
  ASSERT_EQ(write(0, old.data(), 4096, false), 0);
  EXPECT_EQ(read(0, 4096), bytes(4096, 0x01)) << "the old data is now cached";
  ASSERT_EQ(write(0, fresh.data(), 4096, true), 0);
  EXPECT_EQ(read(0, 4096), bytes(4096, 0x02)) << "the cached copy was invalidated";
  EXPECT_EQ(read_disk(0, 4096), bytes(4096, 0x02));
}

TEST_F(FileBackendFixture, RewriteGoesDirectOrNotAtAll) {
  open_in(disk_dir());
  if (!be->has_direct_path()) GTEST_SKIP() << disk_dir() << " has no direct I/O";
  Buffer old = filled(8192, 0x01), fresh = filled(8192, 0x02);
  ASSERT_EQ(write(0, old.data(), 8192, false), 0);
  EXPECT_EQ(read(0, 8192), bytes(8192, 0x01)) << "the old data is now cached";
  ASSERT_EQ(rewrite(0, fresh.data(), 4096), 0) << "aligned: through O_DIRECT";
  EXPECT_EQ(read(0, 4096), bytes(4096, 0x02)) << "the cached copy was invalidated";
  EXPECT_EQ(read_disk(0, 4096), bytes(4096, 0x02));
  // Buffered, its failure would surface at writeback, failing the next
  // fdatasync and every write after it: an unaligned rewrite is refused.
  EXPECT_EQ(rewrite(4096 + 100, fresh.data() + 1, 1000), -EOPNOTSUPP);
  EXPECT_EQ(read(4096, 4096), bytes(4096, 0x01)) << "nothing was written";
  EXPECT_EQ(be->fua_stats().direct + be->fua_stats().dsync + be->fua_stats().group, 0u)
      << "a rewrite is not a FUA write";
}

// A rewrite must go direct, so it waits for a buffered write in flight in its
// folio span; a write that comes after it waits behind it (or it could be
// starved, and it would land over the newer write).
TEST_F(FileBackendFixture, RewriteWaitsForItsSpanAndLaterWritesWaitForIt) {
  open_in(disk_dir());
  if (!be->has_direct_path()) GTEST_SKIP() << disk_dir() << " has no direct I/O";
  Buffer a = filled(2048, 0xaa), r = filled(4096, 0xbb), b = filled(2048, 0xcc);
  int ra = 1, rr = 1, rb = 1;
  start([&](IoDone* d) { be->write(0, 2048, a.data(), false, d); }, &ra);     // buffered, page 0
  start([&](IoDone* d) { be->rewrite(0, 4096, r.data(), d); }, &rr);          // page 0: waits
  start([&](IoDone* d) { be->write(2048, 2048, b.data(), false, d); }, &rb);  // after the rewrite
  run();
  ASSERT_EQ(ra, 0);
  ASSERT_EQ(rr, 0) << "the rewrite went through once the buffered write was done";
  ASSERT_EQ(rb, 0);
  expect_read_then_flushed(0, halves(2048, 0xbb, 4096, 0xcc));
}

TEST_F(FileBackendFixture, FuaWriteSharingAPageWithAWriteInFlightIsNotDirect) {
  open_in(disk_dir());
  if (!be->has_direct_path()) GTEST_SKIP() << disk_dir() << " has no direct I/O";
  // A buffered write of the page's first half, then a FUA write of the
  // other half, aligned for direct I/O but sharing the page.
  ASSERT_TRUE(buffered_then_fua(0, 2048, 2048, 2048));
  EXPECT_EQ(be->fua_stats().direct, 0u);
  EXPECT_EQ(be->fua_stats().dsync, 1u);
  expect_read_then_flushed(0, halves(2048, 0xaa, 4096, 0xff));
}

TEST_F(FileBackendFixture, FuaWriteBesideAWriteInFlightInItsFolioSpanIsNotDirect) {
  open_in(disk_dir());
  if (!be->has_direct_path()) GTEST_SKIP() << disk_dir() << " has no direct I/O";
  if (be->folio_span() <= 4096) GTEST_SKIP() << "no large folios (no THP): the span is a page";
  // A buffered write of the third page, then an aligned FUA write of the
  // first: different pages, but a large folio could hold both.
  ASSERT_TRUE(buffered_then_fua(8192, 4096, 0, 4096));
  EXPECT_EQ(be->fua_stats().direct, 0u);
  EXPECT_EQ(be->fua_stats().dsync, 1u);
  expect_read_then_flushed(0, bytes(4096, 0xff));
  expect_read_then_flushed(8192, bytes(4096, 0xaa));
}

TEST_F(FileBackendFixture, WriteSharingAPageWithADirectWriteWaitsForIt) {
  open_in(disk_dir());
  if (!be->has_direct_path()) GTEST_SKIP() << disk_dir() << " has no direct I/O";
  Buffer f = filled(4096, 0xff), a = filled(4096, 0xaa), z = filled(4096, 0);
  ASSERT_EQ(write(0, z.data(), 4096, false), 0);
  EXPECT_EQ(read(0, 4096), bytes(4096, 0)) << "the page is cached";
  // The direct FUA write of the first half, then buffered writes of the
  // second half and of the next page: neither may leave a stale copy of
  // the first half in the page cache, to be written back over the direct
  // data later.
  int rf = 1, ra = 1, rb = 1;
  start([&](IoDone* d) { be->write(0, 2048, f.data(), true, d); }, &rf);
  start([&](IoDone* d) { be->write(2048, 2048, a.data(), false, d); }, &ra);
  start([&](IoDone* d) { be->write(4096, 4096, a.data(), false, d); }, &rb);
  run();
  ASSERT_EQ(rf + ra + rb, 0);
  EXPECT_EQ(be->fua_stats().direct, 1u);
  expect_read_then_flushed(0, halves(2048, 0xff, 8192, 0xaa));
}

TEST_F(FileBackendFixture, FuaWritesAtDepthShareAGroupSync) {
  open_in(disk_dir());
  Buffer b = filled(4096, 0x33);
  ASSERT_TRUE(fua_writes_at_once(8, 8192, b.data()));
  const auto& s = be->fua_stats();
  EXPECT_EQ(s.direct + s.dsync, 1u) << "only the first write was alone";
  EXPECT_EQ(s.group, 7u);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(read_disk(uint64_t(i) * 8192, 4096), bytes(4096, 0x33));
}

TEST_F(FileBackendFixture, LoneFuaWritesRightAfterDepthStayInTheGroup) {
  open_in(disk_dir());
  Buffer b = filled(4096, 0x44);
  ASSERT_TRUE(fua_writes_at_once(4, 4096, b.data()));
  const auto& s = be->fua_stats();
  uint64_t alone_before = s.direct + s.dsync;
  // A loop at depth that empties for a moment: its next writes, each alone,
  // still share group syncs, until enough lone writes say the depth is gone.
  for (uint32_t i = 0; i < FileBackend::kGroupHold; ++i)
    ASSERT_EQ(write(65536, b.data(), 4096, true), 0);
  EXPECT_EQ(s.direct + s.dsync, alone_before);
  EXPECT_EQ(s.group, 3u + FileBackend::kGroupHold);
  ASSERT_EQ(write(65536, b.data(), 4096, true), 0);
  EXPECT_EQ(s.direct + s.dsync, alone_before + 1) << "alone long enough: RWF_DSYNC again";
  EXPECT_EQ(read_disk(65536, 4096), bytes(4096, 0x44));
}

TEST_F(FileBackendFixture, TmpfsHasNoDirectPath) {
  if (::access("/dev/shm", W_OK) != 0) GTEST_SKIP() << "no /dev/shm";
  open_in("/dev/shm");
  EXPECT_FALSE(be->has_direct_path()) << "tmpfs reports no direct-I/O alignment";
  Buffer b = filled(4096, 0x77);
  ASSERT_EQ(write(4096, b.data(), 4096, true), 0);
  EXPECT_EQ(be->fua_stats().direct, 0u);
  EXPECT_EQ(be->fua_stats().dsync, 1u);
  EXPECT_EQ(read(4096, 4096), bytes(4096, 0x77));
}

// read_stable (verify, checksum resync): through O_DIRECT where the file
// allows it, so it reads what the disk holds; a write still only in the page
// cache is written first, so it reads the same bytes as read().
TEST_F(FileBackendFixture, ReadStableGoesBelowThePageCacheAndSeesUnsyncedWrites) {
  open_in(disk_dir());
  if (!be->has_direct_path()) GTEST_SKIP() << disk_dir() << " has no direct I/O";
  Buffer b = filled(65536, 0x5c);
  ASSERT_EQ(write(8192, b.data(), 65536, false), 0);  // buffered, not synced
  Buffer out(65536);
  ASSERT_EQ(read_stable(8192, 65536, out.data()), 0);
  EXPECT_EQ(std::vector<uint8_t>(out.data(), out.data() + 65536), bytes(65536, 0x5c));
  EXPECT_EQ(be->stable_direct_reads(), 1u);
  // An unaligned buffer: buffered, same bytes.
  std::vector<uint8_t> odd(4097);
  ASSERT_EQ(read_stable(8192, 4096, odd.data() + 1), 0);
  EXPECT_EQ(std::vector<uint8_t>(odd.begin() + 1, odd.end()), bytes(4096, 0x5c));
  EXPECT_EQ(be->stable_direct_reads(), 1u);
}

TEST_F(FileBackendFixture, ReadStableOnTmpfsIsABufferedRead) {
  if (::access("/dev/shm", W_OK) != 0) GTEST_SKIP() << "no /dev/shm";
  open_in("/dev/shm");
  Buffer b = filled(4096, 0x66);
  ASSERT_EQ(write(0, b.data(), 4096, false), 0);
  Buffer out(4096);
  ASSERT_EQ(read_stable(0, 4096, out.data()), 0);
  EXPECT_EQ(std::vector<uint8_t>(out.data(), out.data() + 4096), bytes(4096, 0x66));
  EXPECT_EQ(be->stable_direct_reads(), 0u);
}

TEST_F(FileBackendFixture, ReadOnlyFileHasNoDirectPath) {
  path = make_file(disk_dir());
  ASSERT_FALSE(path.empty());
  auto r = FileBackend::open(*loop, path, {.read_only = true});
  ASSERT_TRUE(r) << r.error().message;
  be = std::move(r).value();
  EXPECT_FALSE(be->has_direct_path());
  EXPECT_EQ(read(0, 4096), bytes(4096, 0));
}

// Online resize (mirrorctl resize): a file served at part of its length,
// then grown past its end.
TEST_F(FileBackendFixture, ExtendGrowsAShortFileSparseAndKnowsItReadsAsZeros) {
  path = make_file(disk_dir());
  ASSERT_FALSE(path.empty());
  auto r = FileBackend::open(*loop, path, {.size = kSize / 2});
  ASSERT_TRUE(r) << r.error().message;
  be = std::move(r).value();
  ASSERT_TRUE(be->check_grow(kSize)) << "within the file: nothing to extend";
  auto z = be->extend(2 * kSize);
  ASSERT_TRUE(z) << z.error().message;
  EXPECT_TRUE(*z) << "no data past the old end: a hole";
  EXPECT_EQ(be->size(), kSize / 2) << "served as before until set_size";
  be->set_size(2 * kSize);
  EXPECT_EQ(be->size(), 2 * kSize);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(uint64_t(st.st_size), 2 * kSize) << "extended to the new size";
  EXPECT_LT(uint64_t(st.st_blocks) * 512, kSize) << "sparse: nothing allocated";
  EXPECT_EQ(read(2 * kSize - 4096, 4096), bytes(4096, 0));
  Buffer b = filled(4096, 0x5a);
  ASSERT_EQ(write(2 * kSize - 4096, b.data(), 4096, false), 0) << "the new area is writable";
  EXPECT_EQ(read(2 * kSize - 4096, 4096), bytes(4096, 0x5a));
}

TEST_F(FileBackendFixture, ExtendOverOldDataIsNotKnownZero) {
  path = make_file(disk_dir());
  ASSERT_FALSE(path.empty());
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "old", 3, kSize - 4096), 3);
  ::close(fd);
  auto r = FileBackend::open(*loop, path, {.size = kSize / 2});
  ASSERT_TRUE(r) << r.error().message;
  be = std::move(r).value();
  auto z = be->extend(kSize);
  ASSERT_TRUE(z) << z.error().message;
  EXPECT_FALSE(*z) << "the file holds data in the new area: it must be copied";
}

TEST_F(FileBackendFixture, GrowRefusesShrinkingEqualAndReadOnly) {
  open_in(disk_dir());
  for (uint64_t bad : {kSize, kSize / 2}) {
    auto st = be->check_grow(bad);
    ASSERT_FALSE(st) << bad;
    EXPECT_EQ(st.error().code, EINVAL);
    EXPECT_FALSE(be->extend(bad));
  }
  EXPECT_EQ(be->size(), kSize) << "nothing changed";
  be.reset();
  auto r = FileBackend::open(*loop, path, {.read_only = true});
  ASSERT_TRUE(r);
  be = std::move(r).value();
  auto st = be->check_grow(2 * kSize);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EROFS);
}

}  // namespace
}  // namespace mirror
