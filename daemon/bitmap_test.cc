#include "bitmap.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <utility>

#include "crc32c.h"
#include "wire.h"

namespace mirror {
namespace {

using ::testing::ElementsAre;

// What the tests know about the format comes from docs/bitmap-format.md, not
// from bitmap.cc, so they also check that the code writes what the doc says.
constexpr uint64_t kBlock = 4096;
constexpr uint64_t kBitsPerBlock = 32512;
constexpr uint64_t kKiB = 1024, kMiB = 1024 * kKiB;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "bitmap_test.XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data()) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// Re-seals a block after a test edited it, so only the intended defect shows.
void reseal(std::vector<uint8_t>& file, uint64_t block, size_t crc_at) {
  uint8_t* b = &file[block * kBlock];
  wire::put_u32(b + crc_at, 0);
  wire::put_u32(b + crc_at, crc32c(b, kBlock));
}

// The file as the doc describes it.
struct DiskView {
  std::vector<uint8_t> bytes;
  explicit DiskView(const std::string& path) : bytes(read_file(path)) {}
  uint64_t seq(int slot) const { return wire::get_u64(&bytes[slot * kBlock + 16]); }
  int newest() const { return seq(1) > seq(0) ? 1 : 0; }
  const uint8_t* sb() const { return &bytes[newest() * kBlock]; }
  bool bit(uint64_t map_offset, uint64_t n) const {
    uint64_t at = (map_offset + n / kBitsPerBlock) * kBlock + 32 + (n % kBitsPerBlock) / 8;
    return bytes.at(at) & (1u << (n % 8));
  }
  bool dirty(uint64_t n) const { return bit(wire::get_u64(sb() + 112), n); }
  bool active(uint64_t n) const { return bit(wire::get_u64(sb() + 96), n); }
};

MetaIdentity ident(uint64_t size = 64 * kMiB, uint32_t granularity = 64 * kKiB) {
  MetaIdentity id;
  id.volume = "vol0";
  id.volume_size = size;
  id.node = "alpha";
  id.peer = "beta";
  id.granularity = granularity;
  return id;
}

// Three dirty-map blocks at 4 KiB granularity.
MetaIdentity three_block_ident() {
  return ident(3 * kBitsPerBlock * 4096, 4096);
}

std::unique_ptr<Loop> make_loop() {
  auto loop = Loop::create(64);
  EXPECT_TRUE(loop.ok()) << loop.error().to_string();
  return std::move(loop).value();
}

struct Waiter final : IoDone {
  int calls = 0;
  int err = 1;
  std::function<void(int)> fn;
  Waiter() = default;
  explicit Waiter(std::function<void(int)> f) : fn(std::move(f)) {}
  void io_done(int e) override {
    ++calls;
    err = e;
    if (fn) fn(e);
  }
};

// Loop::run() until a waiter calls loop.stop(); fails the test after 10 s.
void run(Loop& loop) {
  Timer watchdog(loop, [&] {
    ADD_FAILURE() << "timed out waiting for the loop to stop";
    loop.stop();
  });
  watchdog.arm(10000);
  loop.run();
}

std::unique_ptr<Bitmap> open_ok(Loop& loop, const std::string& path, const MetaIdentity& id,
                                BitmapOpenReport* report = nullptr) {
  BitmapOpenReport local;
  auto bm = Bitmap::open(loop, path, id, report ? report : &local);
  EXPECT_TRUE(bm.ok()) << bm.error().to_string();
  return bm.ok() ? std::move(bm).value() : nullptr;
}

// A created file starts all dirty; most tests want a clean, durable start.
std::unique_ptr<Bitmap> open_clean(Loop& loop, const std::string& path, const MetaIdentity& id) {
  auto bm = open_ok(loop, path, id);
  bm->clear_all_dirty();
  bm->set_flags(0);
  EXPECT_TRUE(bm->flush_sync().ok());
  return bm;
}

std::vector<std::pair<uint64_t, uint64_t>> runs(const Bitmap& bm, uint64_t max_len = ~0ull) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  uint64_t off, len;
  for (uint64_t from = 0; bm.next_dirty(from, max_len, &off, &len); from = off + len)
    out.emplace_back(off, len);
  return out;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

class BitmapTest : public ::testing::Test {
 protected:
  TempDir dir_;
  std::string path_ = dir_.file("vol0.meta");
  std::unique_ptr<Loop> loop_ = make_loop();
};

// ---- open, create, identity ----

TEST_F(BitmapTest, MissingFileIsCreatedAllDirty) {
  BitmapOpenReport r;
  auto bm = open_ok(*loop_, path_, ident(), &r);
  EXPECT_TRUE(r.created);
  EXPECT_TRUE(r.full_resync);
  EXPECT_TRUE(contains(r.reason, "new metadata file")) << r.reason;
  EXPECT_EQ(bm->dirty_bytes(), 64 * kMiB);
  EXPECT_TRUE(bm->flags() & kFlagFullSyncNeeded);
  EXPECT_EQ(bm->generation(), Generation{});
  // 64 MiB: 16 activity bits and 1024 dirty bits, one block each.
  EXPECT_EQ(std::filesystem::file_size(path_), 4 * kBlock);
  bm.reset();

  auto again = open_ok(*loop_, path_, ident(), &r);
  EXPECT_FALSE(r.created);
  EXPECT_FALSE(r.full_resync);
  EXPECT_TRUE(r.warnings.empty());
  EXPECT_EQ(again->dirty_bytes(), 64 * kMiB);
  EXPECT_TRUE(again->flags() & kFlagFullSyncNeeded);
}

TEST_F(BitmapTest, InvalidIdentityIsRejected) {
  auto id = ident();
  id.granularity = 3000;
  EXPECT_EQ(Bitmap::open(*loop_, path_, id, nullptr).error().code, EINVAL);
  id = ident();
  id.granularity = 2048;
  EXPECT_EQ(Bitmap::open(*loop_, path_, id, nullptr).error().code, EINVAL);
  id = ident();
  id.volume = std::string(65, 'v');
  EXPECT_EQ(Bitmap::open(*loop_, path_, id, nullptr).error().code, EINVAL);
  id = ident();
  id.volume_size = 0;
  EXPECT_EQ(Bitmap::open(*loop_, path_, id, nullptr).error().code, EINVAL);
  EXPECT_FALSE(std::filesystem::exists(path_));
}

TEST_F(BitmapTest, SecondOpenIsBusy) {
  auto bm = open_ok(*loop_, path_, ident());
  auto second = Bitmap::open(*loop_, path_, ident(), nullptr);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, EBUSY);
}

// The layout and bit order documented in docs/bitmap-format.md.
TEST_F(BitmapTest, OnDiskFormatMatchesTheDoc) {
  auto id = three_block_ident();
  auto bm = open_clean(*loop_, path_, id);
  bm->set_dirty(0, 1);                              // bit 0
  bm->set_dirty(9 * 4096, 1);                       // bit 9: byte 1, mask 0x02
  bm->set_dirty((kBitsPerBlock + 3) * 4096, 4096);  // block 1, bit 3
  bm->set_active(4 * kMiB, 1);                      // activity bit 1
  bm->set_generation({11, 22, {33, 44}});
  bm->set_resync_cursor(12345);
  ASSERT_TRUE(bm->flush_sync().ok());

  DiskView d(path_);
  ASSERT_EQ(d.bytes.size(), (2 + 1 + 3) * kBlock);
  const uint8_t* s = d.sb();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(s), 8), "MIRRBMP1");
  EXPECT_EQ(wire::get_u32(s + 8), 1u);
  std::vector<uint8_t> copy(s, s + kBlock);
  wire::put_u32(copy.data() + 12, 0);
  EXPECT_EQ(wire::get_u32(s + 12), crc32c(copy.data(), kBlock));
  EXPECT_EQ(wire::get_u32(s + 24), uint32_t(d.newest()));
  EXPECT_EQ(wire::get_u64(s + 16) % 2, uint64_t(d.newest()));
  EXPECT_EQ(wire::get_u64(s + 40), id.volume_size);
  EXPECT_EQ(wire::get_u32(s + 48), 4096u);
  EXPECT_EQ(wire::get_u32(s + 52), 4 * kMiB);
  EXPECT_EQ(wire::get_u64(s + 56), 11u);
  EXPECT_EQ(wire::get_u64(s + 64), 22u);
  EXPECT_EQ(wire::get_u64(s + 72), 33u);
  EXPECT_EQ(wire::get_u64(s + 80), 44u);
  EXPECT_EQ(wire::get_u64(s + 88), 12345u);
  EXPECT_EQ(wire::get_u64(s + 96), 2u);   // al_offset
  EXPECT_EQ(wire::get_u64(s + 104), 1u);  // al_blocks
  EXPECT_EQ(wire::get_u64(s + 112), 3u);  // dm_offset
  EXPECT_EQ(wire::get_u64(s + 120), 3u);  // dm_blocks
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(s + 128)), "vol0");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(s + 192)), "alpha");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(s + 256)), "beta");

  const uint8_t* m = &d.bytes[3 * kBlock];  // dirty map block 0
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(m), 4), "MMAP");
  EXPECT_EQ(m[4], 2);
  EXPECT_EQ(wire::get_u64(m + 16), 3u);
  EXPECT_EQ(wire::get_u64(m + 24), wire::get_u64(s + 32));  // instance id
  EXPECT_EQ(m[32], 0x01);
  EXPECT_EQ(m[33], 0x02);
  EXPECT_EQ(d.bytes[4 * kBlock + 32], 0x08);  // dirty block 1, bit 3
  EXPECT_EQ(d.bytes[2 * kBlock + 32], 0x02);  // activity bit 1
  EXPECT_EQ(d.bytes[2 * kBlock + 4], 1);
}

// ---- dirty map semantics ----

TEST_F(BitmapTest, RoundTripThroughCommit) {
  auto id = ident(10 * 1024 * kMiB);
  auto bm = open_clean(*loop_, path_, id);
  bm->set_dirty(0, 1);
  bm->set_dirty(5 * kMiB + 100, 200 * kKiB);
  bm->set_dirty(id.volume_size - 1, 1);
  bm->set_active(8 * kMiB, 1);
  bm->set_generation({1, 2, {3, 4}});
  bm->set_flags(kFlagPrimary);
  bm->set_resync_cursor(777);
  auto before = runs(*bm);
  Waiter w([&](int) { loop_->stop(); });
  bm->commit(&w);
  EXPECT_EQ(w.calls, 0);  // never inline
  run(*loop_);
  ASSERT_EQ(w.calls, 1);
  EXPECT_EQ(w.err, 0);
  bm.reset();

  BitmapOpenReport r;
  auto again = open_ok(*loop_, path_, id, &r);
  EXPECT_FALSE(r.full_resync);
  EXPECT_TRUE(r.warnings.empty());
  EXPECT_EQ(runs(*again), before);
  EXPECT_EQ(again->generation(), (Generation{1, 2, {3, 4}}));
  EXPECT_EQ(again->flags(), kFlagPrimary);
  EXPECT_EQ(again->resync_cursor(), 777u);
  EXPECT_TRUE(again->is_active(8 * kMiB, 4 * kMiB));
  EXPECT_TRUE(again->is_active_durable(8 * kMiB, 4 * kMiB));
  EXPECT_FALSE(again->is_active(0, 1));
}

TEST_F(BitmapTest, PartialLastRegion) {
  const uint64_t g = 64 * kKiB, size = 10 * g + 1000;
  auto bm = open_clean(*loop_, path_, ident(size));
  bm->set_dirty(size - 1, 1);
  EXPECT_EQ(bm->dirty_bytes(), 1000u);
  uint64_t off, len;
  ASSERT_TRUE(bm->next_dirty(0, ~0ull, &off, &len));
  EXPECT_EQ(off, 10 * g);
  EXPECT_EQ(len, 1000u);
  bm->clear_dirty(10 * g, 999);  // does not reach the end: stays dirty
  EXPECT_TRUE(bm->any_dirty(size - 1, 1));
  bm->clear_dirty(10 * g, 1000);  // the whole (short) region
  EXPECT_EQ(bm->dirty_bytes(), 0u);
  bm->set_dirty(size - 10, 1ull << 40);  // clipped to the volume
  EXPECT_EQ(bm->dirty_bytes(), 1000u);
  bm->set_all_dirty();
  EXPECT_EQ(bm->dirty_bytes(), size);
  bm->clear_dirty(9 * g, ~0ull);  // to the end, overflow-safe
  EXPECT_EQ(bm->dirty_bytes(), 9 * g);
}

// ---- the dirty map as NBD extents (mirrord:dirty-since-backup) ----

std::vector<std::pair<uint32_t, uint32_t>> extents(const Bitmap& bm, uint64_t off, uint32_t len,
                                                   uint32_t max = 1024) {
  std::vector<nbd::Extent> e;
  changed_extents(bm, off, len, max, &e);
  std::vector<std::pair<uint32_t, uint32_t>> out;
  for (const auto& x : e) out.emplace_back(x.length, x.flags);
  return out;
}

TEST_F(BitmapTest, ChangedExtentsMergeRunsAndClipToTheRequest) {
  const uint32_t g = 64 * kKiB;
  auto bm = open_clean(*loop_, path_, ident());
  using P = std::pair<uint32_t, uint32_t>;
  EXPECT_THAT(extents(*bm, 0, 4 * g), ElementsAre(P{4 * g, 0})) << "clean: one extent, flag 0";
  bm->set_dirty(g, 1);          // region 1
  bm->set_dirty(2 * g + 5, g);  // regions 2 and 3
  bm->set_dirty(6 * g, g);      // region 6
  EXPECT_THAT(extents(*bm, 0, 8 * g),
              ElementsAre(P{g, 0}, P{3 * g, 1}, P{2 * g, 0}, P{g, 1}, P{g, 0}));
  // Unaligned request: the first and last extents are clipped to it.
  EXPECT_THAT(extents(*bm, g + 100, 2 * g), ElementsAre(P{2 * g, 1}));
  EXPECT_THAT(extents(*bm, 100, g), ElementsAre(P{g - 100, 0}, P{100, 1}));
  // NBD_CMD_FLAG_REQ_ONE: one extent, from the start of the request.
  EXPECT_THAT(extents(*bm, 0, 8 * g, 1), ElementsAre(P{g, 0}));
  EXPECT_THAT(extents(*bm, g, 8 * g, 2), ElementsAre(P{3 * g, 1}, P{2 * g, 0}));
}

TEST_F(BitmapTest, ChangedExtentsStopAtTheEndOfTheVolume) {
  const uint64_t g = 64 * kKiB, size = 4 * g + 1000;
  auto bm = open_clean(*loop_, path_, ident(size));
  bm->set_dirty(size - 1, 1);
  using P = std::pair<uint32_t, uint32_t>;
  EXPECT_THAT(extents(*bm, 0, uint32_t(size)), ElementsAre(P{4 * g, 0}, P{1000, 1}));
  bm->set_all_dirty();
  EXPECT_THAT(extents(*bm, 0, uint32_t(size)), ElementsAre(P{uint32_t(size), 1}));
}

TEST_F(BitmapTest, RangesSpanningManyWords) {
  const uint64_t g = 64 * kKiB;
  auto bm = open_clean(*loop_, path_, ident(1024 * kMiB));
  bm->set_dirty(100 * g + 5, 300 * g);  // touches regions 100..400
  EXPECT_EQ(bm->dirty_bytes(), 301 * g);
  EXPECT_FALSE(bm->any_dirty(0, 100 * g));
  EXPECT_TRUE(bm->any_dirty(0, 100 * g + 1));
  EXPECT_TRUE(bm->any_dirty(400 * g, g));
  EXPECT_FALSE(bm->any_dirty(401 * g, 1000 * g));
  bm->clear_dirty(100 * g + 1, 300 * g);  // wholly covers 101..399 only
  EXPECT_EQ(bm->dirty_bytes(), 2 * g);
  EXPECT_EQ(runs(*bm), (std::vector<std::pair<uint64_t, uint64_t>>{{100 * g, g}, {400 * g, g}}));
  bm->set_dirty(0, 0);  // empty ranges and ranges past the end change nothing
  bm->set_dirty(1024 * kMiB, 1);
  bm->clear_dirty(100 * g, g - 1);
  EXPECT_EQ(bm->dirty_bytes(), 2 * g);
  EXPECT_FALSE(bm->any_dirty(0, 0));
}

TEST_F(BitmapTest, NextDirtyRuns) {
  auto id = three_block_ident();
  const uint64_t g = 4096;
  auto bm = open_clean(*loop_, path_, id);
  bm->set_dirty(3 * g, 3 * g);                    // 3..5
  bm->set_dirty(70 * g, 2 * g);                   // 70..71
  bm->set_dirty(200 * g, 130 * g);                // 200..329
  bm->set_dirty((kBitsPerBlock - 1) * g, 2 * g);  // across the block boundary
  uint64_t off, len;
  ASSERT_TRUE(bm->next_dirty(0, ~0ull, &off, &len));
  EXPECT_EQ(off, 3 * g);
  EXPECT_EQ(len, 3 * g);
  ASSERT_TRUE(bm->next_dirty(3 * g + 7, ~0ull, &off, &len));  // unaligned: region start
  EXPECT_EQ(off, 3 * g);
  ASSERT_TRUE(bm->next_dirty(6 * g, ~0ull, &off, &len));
  EXPECT_EQ(off, 70 * g);
  EXPECT_EQ(len, 2 * g);
  ASSERT_TRUE(bm->next_dirty(72 * g, 64 * g + 5, &off, &len));  // capped, whole regions
  EXPECT_EQ(off, 200 * g);
  EXPECT_EQ(len, 64 * g);
  ASSERT_TRUE(bm->next_dirty(72 * g, 1, &off, &len));  // at least one region
  EXPECT_EQ(len, g);
  ASSERT_TRUE(bm->next_dirty(330 * g, ~0ull, &off, &len));
  EXPECT_EQ(off, (kBitsPerBlock - 1) * g);
  EXPECT_EQ(len, 2 * g);
  EXPECT_FALSE(bm->next_dirty(off + len, ~0ull, &off, &len));
  EXPECT_FALSE(bm->next_dirty(id.volume_size, ~0ull, &off, &len));
  EXPECT_EQ(runs(*bm, 100 * g).size(), 5u);  // 200..329 split at 100 regions
}

TEST_F(BitmapTest, DirtyBytesCountsEachRegionOnce) {
  const uint64_t g = 64 * kKiB;
  auto bm = open_clean(*loop_, path_, ident());
  bm->set_dirty(0, 2 * g);
  bm->set_dirty(g, 2 * g);
  EXPECT_EQ(bm->dirty_bytes(), 3 * g);
  bm->clear_dirty(0, g);
  EXPECT_EQ(bm->dirty_bytes(), 2 * g);
  bm->clear_dirty(0, g);
  EXPECT_EQ(bm->dirty_bytes(), 2 * g);
  bm->set_all_dirty();
  EXPECT_EQ(bm->dirty_bytes(), 64 * kMiB);
  bm->clear_all_dirty();
  EXPECT_EQ(bm->dirty_bytes(), 0u);
}

TEST_F(BitmapTest, SettingSetBitsChangesNothing) {
  auto bm = open_clean(*loop_, path_, ident());
  bm->set_dirty(0, kMiB);
  bm->set_active(0, 1);
  ASSERT_TRUE(bm->flush_sync().ok());
  bm->set_dirty(0, kMiB);
  bm->set_active(0, 1);
  bm->set_flags(bm->flags());
  bm->clear_dirty(kMiB, kMiB);  // already clear
  uint64_t started = bm->stats().commits_started;
  Waiter w([&](int) { loop_->stop(); });
  bm->commit(&w);
  EXPECT_FALSE(bm->commit_running());
  EXPECT_EQ(w.calls, 0);
  run(*loop_);
  EXPECT_EQ(w.calls, 1);
  EXPECT_EQ(w.err, 0);
  EXPECT_EQ(bm->stats().commits_started, started);
}

TEST_F(BitmapTest, ActiveToDirty) {
  const uint64_t al = 4 * kMiB, size = 64 * kMiB + 100 * kKiB;
  auto bm = open_clean(*loop_, path_, ident(size));
  bm->set_active(al + 5, 1);
  bm->set_active(size - 1, 1);  // the short last extent: 100 KiB
  EXPECT_TRUE(bm->is_active(al, al));
  EXPECT_FALSE(bm->is_active(0, 2 * al));  // every extent must be set
  bm->set_dirty(al, 64 * kKiB);            // already dirty: not counted again
  EXPECT_EQ(bm->active_to_dirty(), al - 64 * kKiB + 100 * kKiB);
  EXPECT_EQ(bm->active_to_dirty(), 0u);
  EXPECT_EQ(bm->dirty_bytes(), al + 100 * kKiB);
  bm->clear_active(al + 1, al);  // partial extent: stays
  EXPECT_TRUE(bm->is_active(al, 1));
  bm->clear_active(al, al);
  EXPECT_FALSE(bm->is_active(al, 1));
}

// ---- commits ----

TEST_F(BitmapTest, GroupCommitServesEveryWaiterOnceAfterItsDataIsDurable) {
  auto id = three_block_ident();
  const uint64_t g = 4096;
  auto bm = open_clean(*loop_, path_, id);
  uint64_t completed0 = bm->stats().commits_completed;
  constexpr int kWaiters = 100;
  std::vector<std::unique_ptr<Waiter>> waiters;
  int fired = 0;
  for (int i = 0; i < kWaiters; ++i) {
    uint64_t bit = uint64_t(i) * 977;  // spread over the three blocks
    waiters.push_back(std::make_unique<Waiter>([&, bit, i](int err) {
      EXPECT_EQ(err, 0);
      // Durable: a sync completed after this waiter's bit was written.
      EXPECT_GE(bm->stats().commits_completed, completed0 + (i == 0 ? 1 : 2));
      EXPECT_TRUE(DiskView(path_).dirty(bit)) << "waiter " << i;
      if (++fired == kWaiters) loop_->stop();
    }));
    bm->set_dirty(bit * g, 1);
    bm->commit(waiters.back().get());
    EXPECT_TRUE(bm->commit_running());
  }
  run(*loop_);
  EXPECT_EQ(fired, kWaiters);
  for (auto& w : waiters) EXPECT_EQ(w->calls, 1);
  EXPECT_EQ(bm->stats().commits_completed - completed0, 2u);
  EXPECT_LT(bm->stats().commits_started, uint64_t(kWaiters));
}

TEST_F(BitmapTest, ChangesDuringACommitGoIntoTheNext) {
  auto bm = open_clean(*loop_, path_, ident());
  const uint64_t g = 64 * kKiB;
  Waiter second([&](int err) {
    EXPECT_EQ(err, 0);
    DiskView d(path_);
    EXPECT_FALSE(d.dirty(1));
    EXPECT_TRUE(d.dirty(2));
    loop_->stop();
  });
  Waiter first([&](int err) {
    EXPECT_EQ(err, 0);
    DiskView d(path_);
    EXPECT_TRUE(d.dirty(1));   // in the snapshot
    EXPECT_FALSE(d.dirty(2));  // set after it
    EXPECT_EQ(second.calls, 0);
  });
  bm->set_dirty(1 * g, 1);
  bm->commit(&first);
  bm->set_dirty(2 * g, 1);
  bm->clear_dirty(1 * g, g);
  bm->commit(&second);
  run(*loop_);
  EXPECT_EQ(first.calls, 1);
  EXPECT_EQ(second.calls, 1);
  EXPECT_EQ(bm->stats().commits_completed, 2u);
}

// A write acknowledged before its dirty bit is durable (covered by an active
// extent) needs to know which commit makes the bit durable, so the extent
// leaves the activity log only after it.
TEST_F(BitmapTest, DirtyDurableAfterNamesTheCommitThatPersistsTheBit) {
  auto bm = open_clean(*loop_, path_, ident());
  const uint64_t g = 64 * kKiB;
  EXPECT_TRUE(bm->committed(bm->dirty_durable_after(0, g))) << "a clean start is durable";
  bm->set_dirty(1 * g, 1);
  const uint64_t first = bm->dirty_durable_after(1 * g, 1);
  EXPECT_FALSE(bm->committed(first));
  bool checked = false;
  Waiter second([&](int err) {
    EXPECT_EQ(err, 0);
    loop_->stop();
  });
  Waiter w([&](int err) {
    EXPECT_EQ(err, 0);
    EXPECT_TRUE(bm->committed(first));
    DiskView d(path_);
    EXPECT_TRUE(d.dirty(1));
    checked = true;
  });
  bm->commit(&w);
  // While that commit runs: the bit is in its snapshot, but the block is not
  // durable until it completes; a bit set now needs the next commit.
  EXPECT_EQ(bm->dirty_durable_after(1 * g, 1), first);
  EXPECT_FALSE(bm->committed(first));
  bm->set_dirty(2 * g, 1);  // same map block
  const uint64_t next = bm->dirty_durable_after(2 * g, 1);
  EXPECT_GT(next, first);
  EXPECT_EQ(bm->dirty_durable_after(1 * g, 1), next) << "its block changed again";
  bm->commit(&second);
  run(*loop_);
  EXPECT_TRUE(checked);
  EXPECT_TRUE(bm->committed(next));
  DiskView d(path_);
  EXPECT_TRUE(d.dirty(2));
  // Setting a bit that is already durable changes nothing and needs nothing.
  bm->set_dirty(2 * g, 1);
  EXPECT_TRUE(bm->committed(bm->dirty_durable_after(2 * g, 1)));
}

TEST_F(BitmapTest, BackgroundCommitPersists) {
  auto bm = open_clean(*loop_, path_, ident());
  bm->set_dirty(0, 1);
  bm->commit(nullptr);
  bm->set_dirty(64 * kKiB, 1);
  bm->commit(nullptr);  // while running: becomes the next commit
  Waiter w([&](int) { loop_->stop(); });
  loop_->defer([&] { bm->commit(&w); });
  run(*loop_);
  EXPECT_EQ(w.err, 0);
  DiskView d(path_);
  EXPECT_TRUE(d.dirty(0));
  EXPECT_TRUE(d.dirty(1));
}

TEST_F(BitmapTest, ActivityIsDurableOnlyAfterItsCommit) {
  const uint64_t al = 4 * kMiB;
  auto bm = open_clean(*loop_, path_, ident());
  Waiter w3([&](int err) {
    EXPECT_EQ(err, 0);
    EXPECT_TRUE(bm->is_active_durable(0, 1));
    loop_->stop();
  });
  Waiter w2([&](int err) {
    EXPECT_EQ(err, 0);
    EXPECT_FALSE(bm->is_active_durable(0, 1));  // this commit wrote the clear
    EXPECT_TRUE(bm->is_active(0, 1));
  });
  Waiter w1([&](int err) {
    EXPECT_EQ(err, 0);
    EXPECT_TRUE(bm->is_active_durable(0, 1));
    EXPECT_TRUE(DiskView(path_).active(0));
    bm->clear_active(0, al);
    bm->commit(&w2);
    // The clear may reach the disk at any moment now.
    EXPECT_FALSE(bm->is_active_durable(0, 1));
    bm->set_active(0, 1);
    EXPECT_TRUE(bm->is_active(0, 1));
    EXPECT_FALSE(bm->is_active_durable(0, 1));
    bm->commit(&w3);
  });
  bm->set_active(0, 1);
  EXPECT_TRUE(bm->is_active(0, 1));
  EXPECT_FALSE(bm->is_active_durable(0, 1));
  bm->commit(&w1);
  EXPECT_FALSE(bm->is_active_durable(0, 1));
  run(*loop_);
  EXPECT_EQ(w1.calls + w2.calls + w3.calls, 3);
}

// Commits region 0 dirty, then (once that finished) region 1; the two
// waiters hold the results.
void two_commits(Loop& loop, Bitmap& bm, Waiter& first, Waiter& second) {
  second.fn = [&](int) { loop.stop(); };
  first.fn = [&](int) {
    bm.set_dirty(64 * kKiB, 1);
    bm.commit(&second);
  };
  bm.set_dirty(0, 1);
  bm.commit(&first);
  run(loop);
}

TEST_F(BitmapTest, FailedWriteIsSticky) {
  auto bm = open_clean(*loop_, path_, ident());
  bm->replace_fd_for_testing(UniqueFd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC)));
  Waiter first, second;
  two_commits(*loop_, *bm, first, second);
  EXPECT_EQ(first.calls, 1);
  EXPECT_EQ(first.err, -EBADF);
  EXPECT_EQ(second.calls, 1);
  EXPECT_EQ(second.err, -EBADF);
  Status st = bm->flush_sync();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, EBADF);
}

// MIRRORD_FAULTS=meta-eio-after=1: the first commit reaches the disk, the
// second fails with EIO without touching it, and the error sticks.
TEST_F(BitmapTest, InjectedCommitFailureAfterN) {
  auto bm = open_clean(*loop_, path_, ident());
  bm->set_fail_commits_after(1);
  Waiter first, second;
  two_commits(*loop_, *bm, first, second);
  EXPECT_EQ(first.err, 0);
  EXPECT_EQ(second.err, -EIO);
  EXPECT_TRUE(DiskView(path_).dirty(0)) << "the first commit is on disk";
  EXPECT_FALSE(DiskView(path_).dirty(1)) << "the failed commit wrote nothing";
  EXPECT_EQ(bm->flush_sync().error().code, EIO);
}

TEST_F(BitmapTest, FlushSyncWhileCommitRunningIsBusy) {
  auto bm = open_clean(*loop_, path_, ident());
  bm->set_dirty(0, 1);
  Waiter w([&](int) { loop_->stop(); });
  bm->commit(&w);
  EXPECT_EQ(bm->flush_sync().error().code, EBUSY);
  run(*loop_);
  EXPECT_TRUE(bm->flush_sync().ok());
}

// ---- growing ----

// What a user of the map sees: its dirty runs, its active extents, its header.
struct Seen {
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  std::vector<uint64_t> active;  // extent numbers
  Generation gen;
  uint32_t flags = 0;
  uint64_t cursor = 0;
  bool operator==(const Seen&) const = default;
};

std::ostream& operator<<(std::ostream& o, const Seen& s) {
  o << "runs";
  for (auto [off, len] : s.runs) o << " [" << off << ", +" << len << ")";
  o << "; active";
  for (uint64_t e : s.active) o << " " << e;
  return o << "; flags " << s.flags << ", cursor " << s.cursor << ", generation " << s.gen.current;
}

Seen seen(const Bitmap& bm) {
  Seen s{runs(bm), {}, bm.generation(), bm.flags(), bm.resync_cursor()};
  for (uint64_t e = 0; e * bm.al_extent() < bm.volume_size(); ++e)
    if (bm.is_active(e * bm.al_extent(), 1)) s.active.push_back(e);
  return s;
}

// Every bit set in `before` is still set in `bm` (more may be).
void expect_keeps(const Bitmap& bm, const Seen& before) {
  for (auto [off, len] : before.runs) {
    uint64_t o, l;
    ASSERT_TRUE(bm.next_dirty(off, ~0ull, &o, &l)) << off;
    EXPECT_LE(o, off);
    EXPECT_GE(o + l, off + len) << "dirty run [" << off << ", +" << len << ") lost";
  }
  for (uint64_t e : before.active)
    EXPECT_TRUE(bm.is_active(e * bm.al_extent(), bm.al_extent())) << "active extent " << e;
}

class BitmapGrowTest : public BitmapTest {
 protected:
  // 4 KiB regions and extents. Old: both maps 2 blocks (file blocks 2-3 and
  // 4-5), a 1000-byte last region. New: both 3 blocks (2-4 and 5-7), a
  // 500-byte last region: the activity map grows over the old dirty map,
  // whose block 0 place becomes an activity block.
  static constexpr uint64_t kG = 4096;
  static constexpr uint64_t kOldSize = (kBitsPerBlock + 100) * kG + 1000;
  static constexpr uint64_t kNewSize = (2 * kBitsPerBlock + 50) * kG + 500;
  static MetaIdentity id_of(uint64_t size) {
    MetaIdentity id = ident(size, kG);
    id.al_extent = kG;
    return id;
  }
  // Dirty and active bits on both sides of the block boundary, in the short
  // last region, and a header.
  void SetUp() override {
    bm_ = open_clean(*loop_, path_, old_id_);
    for (uint64_t n : {uint64_t(0), kBitsPerBlock - 1, kBitsPerBlock, kBitsPerBlock + 100})
      bm_->set_dirty(n * kG, 1);
    bm_->set_dirty(70 * kG, 3 * kG);
    bm_->set_active(kG, 1);
    bm_->set_active((kBitsPerBlock + 3) * kG, 1);
    bm_->set_generation({5, 6, {7, 8}});
    bm_->set_flags(kFlagPrimary);
    bm_->set_resync_cursor(4242);
    ASSERT_TRUE(bm_->flush_sync().ok());
    before_ = seen(*bm_);
  }
  const uint64_t old_bytes_ = 6 * kG + 1000;  // dirty_bytes() of SetUp's state
  MetaIdentity old_id_ = id_of(kOldSize), new_id_ = id_of(kNewSize);
  std::unique_ptr<Bitmap> bm_;
  Seen before_;
};

TEST_F(BitmapGrowTest, KeepsEveryBitAndMovesTheDirtyMap) {
  ASSERT_EQ(bm_->dirty_bytes(), old_bytes_);
  ASSERT_TRUE(bm_->grow(kNewSize, false).ok());
  EXPECT_EQ(bm_->volume_size(), kNewSize);
  // The old 1000-byte last region is now a whole one: its set bit covers
  // 4096 bytes. Nothing in the new area is dirty.
  Seen expect = before_;
  ASSERT_EQ(expect.runs.back(), std::make_pair(kOldSize - 1000, uint64_t(1000)));
  expect.runs.back().second = kG;
  EXPECT_EQ(seen(*bm_), expect);
  EXPECT_EQ(bm_->dirty_bytes(), old_bytes_ - 1000 + kG);
  EXPECT_FALSE(bm_->any_dirty(kOldSize, kNewSize - kOldSize) &&
               bm_->any_dirty((kBitsPerBlock + 101) * kG, kNewSize));
  EXPECT_TRUE(bm_->is_active_durable(kG, 1));
  EXPECT_TRUE(bm_->committed(bm_->dirty_durable_after(0, kNewSize)));

  // The file is in the new layout, as the doc describes it.
  DiskView d(path_);
  ASSERT_EQ(d.bytes.size(), (2 + 3 + 3) * kBlock);
  EXPECT_EQ(wire::get_u64(d.sb() + 40), kNewSize);
  EXPECT_EQ(wire::get_u64(d.sb() + 104), 3u);  // al_blocks
  EXPECT_EQ(wire::get_u64(d.sb() + 112), 5u);  // dm_offset
  EXPECT_EQ(wire::get_u64(d.sb() + 120), 3u);  // dm_blocks
  EXPECT_TRUE(d.dirty(kBitsPerBlock) && d.dirty(kBitsPerBlock + 100) &&
              !d.dirty(kBitsPerBlock + 101));
  EXPECT_TRUE(d.active(kBitsPerBlock + 3));

  // Commits write the new layout, the new last map blocks too.
  bm_->set_dirty(kNewSize - 1, 1);  // dirty block 2: the 500-byte last region
  bm_->clear_dirty(70 * kG, kG);
  Waiter w([&](int) { loop_->stop(); });
  bm_->commit(&w);
  run(*loop_);
  ASSERT_EQ(w.err, 0);
  Seen now = seen(*bm_);
  EXPECT_EQ(bm_->dirty_bytes(), old_bytes_ - 1000 + kG - kG + 500);
  bm_.reset();

  BitmapOpenReport r;
  auto again = open_ok(*loop_, path_, new_id_, &r);
  EXPECT_FALSE(r.full_resync) << r.reason;
  EXPECT_TRUE(r.warnings.empty()) << r.warnings[0];
  EXPECT_EQ(seen(*again), now);
  EXPECT_EQ(again->dirty_bytes(), old_bytes_ - 1000 + kG - kG + 500);
  again.reset();

  // The old size is a shrink now: a full resync, never stale bits.
  auto old = open_ok(*loop_, path_, old_id_, &r);
  EXPECT_TRUE(r.full_resync);
  EXPECT_TRUE(contains(r.reason, "volume size is " + std::to_string(kNewSize) + ", expected " +
                                     std::to_string(kOldSize) + " (shrinking is not supported)"))
      << r.reason;
  EXPECT_EQ(old->dirty_bytes(), kOldSize);
}

TEST_F(BitmapGrowTest, MarksTheNewAreaDirtyFromTheOldLastRegion) {
  bm_->clear_dirty(kOldSize - 1000, 1000);  // the old short last region: clean
  const uint64_t clean_before = bm_->dirty_bytes();
  ASSERT_EQ(clean_before, old_bytes_ - 1000);
  ASSERT_TRUE(bm_->grow(kNewSize, true).ok());
  // Its 1000 old bytes are dirty again: its bit now covers new bytes too.
  EXPECT_EQ(bm_->dirty_bytes(), clean_before + 1000 + (kNewSize - kOldSize));
  auto r = runs(*bm_);
  ASSERT_FALSE(r.empty());
  EXPECT_EQ(r.back(), std::make_pair(kOldSize - 1000, kNewSize - (kOldSize - 1000)));
  bm_.reset();
  BitmapOpenReport rep;
  auto again = open_ok(*loop_, path_, new_id_, &rep);
  EXPECT_TRUE(rep.warnings.empty());
  EXPECT_EQ(runs(*again), r);
  expect_keeps(*again, before_);
}

TEST_F(BitmapGrowTest, RefusesBadSizesAndARunningCommit) {
  for (uint64_t size : {kOldSize, kOldSize - 1, uint64_t(0), uint64_t(INT64_MAX) + 1}) {
    Status st = bm_->grow(size, true);
    ASSERT_FALSE(st.ok()) << size;
    EXPECT_EQ(st.error().code, EINVAL) << size;
  }
  EXPECT_TRUE(contains(bm_->grow(kOldSize, true).error().message, "shrinking is not supported"));
  // 2^50 bytes in 4 KiB regions: 32 GiB of maps, open would refuse it too.
  Status huge = bm_->grow(1ull << 50, true);
  EXPECT_EQ(huge.error().code, EINVAL);
  EXPECT_TRUE(contains(huge.error().message, "too fine")) << huge.error().message;

  bm_->set_dirty(200 * kG, 1);
  Waiter w([&](int) { loop_->stop(); });
  bm_->commit(&w);
  EXPECT_EQ(bm_->grow(kNewSize, true).error().code, EBUSY);
  run(*loop_);
  EXPECT_EQ(bm_->volume_size(), kOldSize);
  EXPECT_TRUE(bm_->grow(kNewSize, true).ok()) << "after the commit";
}

TEST_F(BitmapGrowTest, RefusesAfterAFailedCommit) {
  bm_->replace_fd_for_testing(UniqueFd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC)));
  Waiter w([&](int) { loop_->stop(); });
  bm_->set_dirty(200 * kG, 1);
  bm_->commit(&w);
  run(*loop_);
  ASSERT_EQ(w.err, -EBADF);
  bm_->replace_fd_for_testing(UniqueFd(::open(path_.c_str(), O_RDWR | O_CLOEXEC)));
  EXPECT_EQ(bm_->grow(kNewSize, true).error().code, EBADF) << "the error is sticky";
  EXPECT_EQ(bm_->volume_size(), kOldSize);
}

// A grow that fails keeps the old size in memory, and the metadata keeps
// working in the old layout.
TEST_F(BitmapGrowTest, FailedGrowKeepsTheOldState) {
  bm_->set_dirty(300 * kG, 1);  // uncommitted: must survive and reach the disk later
  Seen mem = seen(*bm_);
  bm_->replace_fd_for_testing(UniqueFd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC)));
  Status st = bm_->grow(kNewSize, true);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(contains(st.error().message, path_)) << st.error().message;
  EXPECT_EQ(bm_->volume_size(), kOldSize);
  EXPECT_EQ(seen(*bm_), mem);
  EXPECT_EQ(bm_->dirty_bytes(), old_bytes_ + kG);
  EXPECT_FALSE(bm_->failed()) << "nothing was written";

  // Fails after the maps were written (the hook), before the superblocks.
  bm_->replace_fd_for_testing(UniqueFd(::open(path_.c_str(), O_RDWR | O_CLOEXEC)));
  bm_->set_rewrite_hook_for_testing([] { return Status(Error{EIO, "injected"}); });
  st = bm_->grow(kNewSize, true);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, EIO);
  EXPECT_EQ(bm_->volume_size(), kOldSize);
  EXPECT_EQ(seen(*bm_), mem);
  EXPECT_FALSE(bm_->any_dirty(kOldSize - 1000 - kG, kG));

  // Commits still work, in the old layout.
  bm_->set_rewrite_hook_for_testing(nullptr);
  bm_->set_dirty(400 * kG, 1);
  bm_->set_active(500 * kG, 1);
  ASSERT_TRUE(bm_->flush_sync().ok());
  mem = seen(*bm_);
  bm_.reset();
  BitmapOpenReport r;
  auto again = open_ok(*loop_, path_, old_id_, &r);
  EXPECT_FALSE(r.full_resync) << r.reason;
  expect_keeps(*again, mem);
  EXPECT_EQ(again->generation(), mem.gen);

  // And a later grow succeeds.
  ASSERT_TRUE(again->grow(kNewSize, true).ok());
  expect_keeps(*again, mem);
}

// A failed superblock write: the disk may name either layout, so nothing
// more is written (sticky); the file still loads every bit, at either size.
TEST_F(BitmapGrowTest, FailedSuperblockWriteIsSticky) {
  bm_->set_rewrite_hook_for_testing([&] {
    bm_->replace_fd_for_testing(UniqueFd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC)));
    return Status{};
  });
  Status st = bm_->grow(kNewSize, true);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, EBADF);
  EXPECT_TRUE(bm_->failed());
  EXPECT_EQ(bm_->volume_size(), kOldSize);
  EXPECT_EQ(seen(*bm_), before_);
  EXPECT_EQ(bm_->flush_sync().error().code, EBADF);
  EXPECT_EQ(bm_->grow(kNewSize, true).error().code, EBADF);
  bm_.reset();
  for (const MetaIdentity* id : {&old_id_, &new_id_}) {
    BitmapOpenReport r;
    auto bm = open_ok(*loop_, path_, *id, &r);
    EXPECT_FALSE(r.full_resync) << r.reason;
    expect_keeps(*bm, before_);
  }
}

// A crash in the middle of grow's rewrite: the disk may hold any subset of
// the new map blocks (written together, then one fsync) under the old
// superblocks; once the maps are durable, either new superblock slot. Every
// state must load with every bit set before the grow still set.
TEST_F(BitmapGrowTest, CrashDuringTheRewriteLosesNoBit) {
  const std::vector<uint8_t> old_file = read_file(path_);
  ASSERT_EQ(old_file.size(), 6 * kBlock);
  std::vector<uint8_t> maps_written;  // new maps, old superblocks
  bm_->set_rewrite_hook_for_testing([&] {
    maps_written = read_file(path_);
    return Status{};
  });
  ASSERT_TRUE(bm_->grow(kNewSize, true).ok());
  const Seen grown = seen(*bm_);
  bm_.reset();
  const std::vector<uint8_t> new_file = read_file(path_);
  ASSERT_EQ(maps_written.size(), 8 * kBlock);
  ASSERT_EQ(new_file.size(), 8 * kBlock);
  ASSERT_TRUE(std::equal(old_file.begin(), old_file.begin() + 2 * kBlock, maps_written.begin()));

  for (unsigned subset = 0; subset < 64; ++subset) {  // new map blocks 2..7
    SCOPED_TRACE("new map blocks mask " + std::to_string(subset));
    std::vector<uint8_t> f = old_file;
    f.resize(8 * kBlock, 0);  // grow's ftruncate
    for (uint64_t b = 2; b < 8; ++b) {
      if (subset & (1u << (b - 2))) std::copy_n(&maps_written[b * kBlock], kBlock, &f[b * kBlock]);
    }
    write_file(path_, f);
    BitmapOpenReport r;
    auto bm = open_ok(*loop_, path_, old_id_, &r);
    ASSERT_TRUE(bm);
    EXPECT_FALSE(r.full_resync) << r.reason;
    expect_keeps(*bm, before_);
    EXPECT_EQ(bm->generation(), before_.gen);
    EXPECT_EQ(bm->flags(), before_.flags);
    // Every rewritten block that was an old map block fails under the old
    // superblock (new instance id), and nothing else does.
    EXPECT_EQ(r.warnings.size(), size_t(std::popcount(subset & 0xF))) << subset;
    bm.reset();
    // Restarted with the new size (the operator's next step): the offline grow.
    write_file(path_, f);
    bm = open_ok(*loop_, path_, new_id_, &r);
    EXPECT_FALSE(r.full_resync) << r.reason;
    expect_keeps(*bm, before_);
    EXPECT_TRUE(bm->any_dirty(kOldSize, kNewSize - kOldSize));
  }
  for (int slot = 0; slot < 2; ++slot) {  // the maps are durable, one slot lands
    SCOPED_TRACE("new superblock slot " + std::to_string(slot));
    std::vector<uint8_t> f = maps_written;
    std::copy_n(&new_file[slot * kBlock], kBlock, &f[slot * kBlock]);
    write_file(path_, f);
    BitmapOpenReport r;
    auto bm = open_ok(*loop_, path_, new_id_, &r);
    EXPECT_FALSE(r.full_resync) << r.reason;
    EXPECT_TRUE(r.warnings.empty());
    EXPECT_EQ(seen(*bm), grown);
  }
}

// ---- damage ----

class BitmapDamageTest : public BitmapTest {
 protected:
  // A clean three-block file with region 5 dirty and extent 1 active.
  void SetUp() override {
    auto bm = open_clean(*loop_, path_, id_);
    bm->set_dirty(5 * 4096, 1);
    bm->set_active(4 * kMiB, 1);
    bm->set_flags(kFlagPrimary);
    ASSERT_TRUE(bm->flush_sync().ok());
  }
  std::unique_ptr<Bitmap> reopen(BitmapOpenReport* r, const MetaIdentity* id = nullptr) {
    return open_ok(*loop_, path_, id ? *id : id_, r);
  }
  void expect_full_resync(const BitmapOpenReport& r, const std::string& why,
                          const MetaIdentity* id = nullptr) {
    EXPECT_TRUE(r.full_resync);
    EXPECT_TRUE(contains(r.reason, "metadata " + path_ + ": ")) << r.reason;
    EXPECT_TRUE(contains(r.reason, why)) << r.reason;
    EXPECT_TRUE(contains(r.reason, "full resync")) << r.reason;
    // The state is persistent: the next open loads it without complaint.
    BitmapOpenReport again;
    auto bm = reopen(&again, id);
    EXPECT_FALSE(again.full_resync) << again.reason;
    EXPECT_TRUE(again.warnings.empty());
    EXPECT_EQ(bm->dirty_bytes(), bm->volume_size());
    EXPECT_EQ(bm->flags(), kFlagFullSyncNeeded);
    EXPECT_EQ(bm->generation(), Generation{});
    EXPECT_FALSE(bm->is_active(4 * kMiB, 1));
  }
  // Opens with a larger identity: no full resync, and the warnings `first`
  // (a defect found on the way, or "" for none) and then the growth.
  std::unique_ptr<Bitmap> reopen_grown(const MetaIdentity& bigger, const std::string& first) {
    BitmapOpenReport r;
    auto bm = reopen(&r, &bigger);
    EXPECT_FALSE(r.full_resync) << r.reason;
    EXPECT_EQ(r.warnings.size(), first.empty() ? 1u : 2u);
    if (r.warnings.empty()) return bm;
    if (!first.empty()) {
      EXPECT_TRUE(contains(r.warnings.front(), first)) << r.warnings.front();
    }
    EXPECT_TRUE(contains(r.warnings.back(), "volume grew")) << r.warnings.back();
    return bm;
  }
  // The grown file reloads without complaint, with `dirty` bytes dirty.
  std::unique_ptr<Bitmap> expect_reloads(const MetaIdentity& bigger, uint64_t dirty) {
    BitmapOpenReport r;
    auto bm = reopen(&r, &bigger);
    EXPECT_FALSE(r.full_resync) << r.reason;
    EXPECT_TRUE(r.warnings.empty());
    EXPECT_EQ(bm->dirty_bytes(), dirty);
    return bm;
  }
  MetaIdentity id_ = three_block_ident();
};

TEST_F(BitmapDamageTest, FlippedByteInAMapBlockDirtiesThatBlock) {
  auto f = read_file(path_);
  f[4 * kBlock + 1000] ^= 0x10;  // dirty map block 1 (file block 4)
  write_file(path_, f);
  BitmapOpenReport r;
  auto bm = reopen(&r);
  EXPECT_FALSE(r.full_resync);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_TRUE(contains(r.warnings[0], "dirty map block 1 (file block 4)")) << r.warnings[0];
  EXPECT_TRUE(contains(r.warnings[0], "checksum mismatch")) << r.warnings[0];
  const uint64_t blk = kBitsPerBlock * 4096;
  EXPECT_EQ(bm->dirty_bytes(), blk + 4096);  // block 1, plus region 5
  uint64_t off, len;
  ASSERT_TRUE(bm->next_dirty(6 * 4096, ~0ull, &off, &len));
  EXPECT_EQ(off, blk);
  EXPECT_EQ(len, blk);
  EXPECT_EQ(bm->flags(), kFlagPrimary);
  // The next write repairs the block.
  ASSERT_TRUE(bm->flush_sync().ok());
  bm.reset();
  auto again = reopen(&r);
  EXPECT_TRUE(r.warnings.empty());
  EXPECT_EQ(again->dirty_bytes(), blk + 4096);
}

TEST_F(BitmapDamageTest, MisdirectedMapBlockIsDetected) {
  auto f = read_file(path_);
  std::copy_n(&f[3 * kBlock], kBlock, &f[5 * kBlock]);  // block 0's content at block 2
  write_file(path_, f);
  BitmapOpenReport r;
  auto bm = reopen(&r);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_TRUE(contains(r.warnings[0], "dirty map block 2")) << r.warnings[0];
  EXPECT_TRUE(contains(r.warnings[0], "misdirected")) << r.warnings[0];
  EXPECT_EQ(bm->dirty_bytes(), kBitsPerBlock * 4096 + 4096);
}

TEST_F(BitmapDamageTest, CorruptActivityBlockMarksEveryExtentActive) {
  auto f = read_file(path_);
  f[2 * kBlock + 40] ^= 1;
  write_file(path_, f);
  BitmapOpenReport r;
  auto bm = reopen(&r);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_TRUE(contains(r.warnings[0], "activity map block 0")) << r.warnings[0];
  EXPECT_TRUE(bm->is_active(0, bm->volume_size()));
  EXPECT_EQ(bm->dirty_bytes(), 4096u);
  EXPECT_EQ(bm->active_to_dirty(), bm->volume_size() - 4096);
}

TEST_F(BitmapDamageTest, CorruptSlot0LoadsSlot1) {
  {  // make both slots hold distinct, valid headers
    auto bm = reopen(nullptr);
    bm->set_resync_cursor(4242);
    ASSERT_TRUE(bm->flush_sync().ok());
  }
  auto f = read_file(path_);
  DiskView d(path_);
  uint64_t seq1 = d.seq(1);
  f[100] ^= 0xFF;  // slot 0
  write_file(path_, f);
  BitmapOpenReport r;
  auto bm = reopen(&r);
  EXPECT_FALSE(r.full_resync) << r.reason;
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_TRUE(contains(r.warnings[0], "slot 0: superblock checksum mismatch; using slot 1"))
      << r.warnings[0];
  EXPECT_EQ(bm->flags(), kFlagPrimary);
  EXPECT_EQ(bm->dirty_bytes(), 4096u);
  EXPECT_EQ(bm->resync_cursor(), d.seq(1) > d.seq(0) ? 4242u : 0u);
  // The next commit rewrites the superblock into the damaged slot, even
  // without a header change.
  ASSERT_TRUE(bm->flush_sync().ok());
  bm.reset();
  EXPECT_EQ(DiskView(path_).seq(0), seq1 + 1);
  auto again = reopen(&r);
  EXPECT_TRUE(r.warnings.empty());
  EXPECT_EQ(again->resync_cursor(), 4242u);
}

TEST_F(BitmapDamageTest, TornNewestSuperblockFallsBackToThePrevious) {
  auto bm = reopen(nullptr);
  bm->set_resync_cursor(99);
  ASSERT_TRUE(bm->flush_sync().ok());
  bm.reset();
  auto f = read_file(path_);
  int newest = DiskView(path_).newest();
  // Every field lies in the first 512-byte sector; garbage there from a
  // write that went wrong.
  std::fill_n(&f[newest * kBlock + 100], 200, 0xAB);
  write_file(path_, f);
  BitmapOpenReport r;
  bm = reopen(&r);
  EXPECT_FALSE(r.full_resync);
  EXPECT_EQ(r.warnings.size(), 1u);
  EXPECT_EQ(bm->resync_cursor(), 0u);  // the previous header
  EXPECT_EQ(bm->flags(), kFlagPrimary);
}

TEST_F(BitmapDamageTest, BothSlotsCorruptMeansFullResync) {
  auto f = read_file(path_);
  f[200] ^= 1;
  f[kBlock + 200] ^= 1;
  write_file(path_, f);
  BitmapOpenReport r;
  auto bm = reopen(&r);
  EXPECT_EQ(r.reason,
            "metadata " + path_ + ": superblock checksum mismatch in both slots: full resync");
  EXPECT_EQ(bm->dirty_bytes(), id_.volume_size);
  EXPECT_TRUE(bm->flags() & kFlagFullSyncNeeded);
  bm.reset();
  expect_full_resync(r, "both slots");
}

TEST_F(BitmapDamageTest, WrongMagicOrVersion) {
  auto f = read_file(path_);
  f[0] = 'X';
  wire::put_u32(&f[kBlock + 8], 2);
  write_file(path_, f);
  BitmapOpenReport r;
  reopen(&r).reset();
  expect_full_resync(r, "slot 0: wrong magic; slot 1: unsupported format version 2");
}

TEST_F(BitmapDamageTest, TruncatedFile) {
  std::filesystem::resize_file(path_, 5 * kBlock);  // loses dirty block 2
  BitmapOpenReport r;
  reopen(&r).reset();
  EXPECT_EQ(std::filesystem::file_size(path_), 6 * kBlock);
  expect_full_resync(r, "truncated");
  std::filesystem::resize_file(path_, 100);
  reopen(&r).reset();
  expect_full_resync(r, "file truncated to 100 bytes");
}

TEST_F(BitmapDamageTest, ForeignIdentity) {
  struct Case {
    const char* field;
    std::function<void(MetaIdentity&)> change;
  };
  std::vector<Case> cases = {
      {"volume name is \"vol0\", expected \"vol1\"", [](MetaIdentity& i) { i.volume = "vol1"; }},
      {"volume size is 399507456, expected 399503360 (shrinking is not supported)",
       [](MetaIdentity& i) { i.volume_size -= 4096; }},
      {"node name", [](MetaIdentity& i) { i.node = "gamma"; }},
      {"peer name", [](MetaIdentity& i) { i.peer = "gamma"; }},
      {"granularity is 4096, expected 8192", [](MetaIdentity& i) { i.granularity = 8192; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    SetUp();  // a fresh file with our identity
    MetaIdentity other = id_;
    c.change(other);
    BitmapOpenReport r;
    reopen(&r, &other).reset();
    EXPECT_TRUE(contains(r.reason, "foreign metadata")) << r.reason;
    expect_full_resync(r, c.field, &other);
  }
}

TEST_F(BitmapDamageTest, ChangedAlExtentKeepsTheMapAndRecoversActivity) {
  MetaIdentity bigger = id_;
  bigger.al_extent = 8 * kMiB;
  BitmapOpenReport r;
  auto bm = reopen(&r, &bigger);
  EXPECT_FALSE(r.full_resync) << r.reason;
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_TRUE(contains(r.warnings[0], "al_extent changed from 4194304 to 8388608"));
  EXPECT_EQ(bm->flags(), kFlagPrimary);
  EXPECT_TRUE(bm->any_dirty(5 * 4096, 1));
  EXPECT_EQ(bm->dirty_bytes(), 4 * kMiB + 4096);  // old extent 1 + region 5
  EXPECT_FALSE(bm->is_active(0, bm->volume_size()) || bm->is_active(4 * kMiB, 1));
  bm.reset();
  bm = reopen(&r, &bigger);
  EXPECT_TRUE(r.warnings.empty());
  EXPECT_FALSE(r.full_resync);
  EXPECT_EQ(bm->dirty_bytes(), 4 * kMiB + 4096);
  EXPECT_EQ(bm->al_extent(), 8 * kMiB);
}

// The operator stopped the daemon, grew the volume and its configured size.
TEST_F(BitmapDamageTest, LargerSizeAtOpenGrowsAndMarksTheNewAreaDirty) {
  MetaIdentity bigger = id_;
  // A fourth dirty block, a short last region.
  const uint64_t added = kBitsPerBlock / 2 * 4096 + 12345;
  bigger.volume_size += added;
  BitmapOpenReport r;
  auto bm = reopen(&r, &bigger);
  EXPECT_FALSE(r.full_resync) << r.reason;
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_EQ(r.warnings[0],
            "metadata " + path_ + ": volume grew from " + std::to_string(id_.volume_size) + " to " +
                std::to_string(bigger.volume_size) + " bytes: the " + std::to_string(added) +
                " new bytes are marked dirty; file rewritten");
  EXPECT_EQ(bm->volume_size(), bigger.volume_size);
  EXPECT_EQ(bm->flags(), kFlagPrimary);
  EXPECT_EQ(bm->dirty_bytes(), 4096 + added);
  EXPECT_TRUE(bm->any_dirty(5 * 4096, 1));
  EXPECT_FALSE(bm->any_dirty(6 * 4096, id_.volume_size - 6 * 4096));
  EXPECT_TRUE(bm->is_active(4 * kMiB, 1));
  EXPECT_FALSE(bm->is_active(0, 1));
  bm.reset();
  DiskView d(path_);
  EXPECT_EQ(d.bytes.size(), (2 + 1 + 4) * kBlock);  // rewritten in the new layout
  EXPECT_EQ(wire::get_u64(d.sb() + 40), bigger.volume_size);

  EXPECT_TRUE(expect_reloads(bigger, 4096 + added)->is_active(4 * kMiB, 1));
}

TEST_F(BitmapDamageTest, LargerSizeAndChangedAlExtentAtOpen) {
  MetaIdentity bigger = id_;
  bigger.volume_size += 10 * kMiB;
  bigger.al_extent = 4096;  // 3 activity blocks: the dirty map moves
  auto bm = reopen_grown(bigger, "al_extent changed from 4194304 to 4096");
  // Old extent 1 (recovered), region 5, the new area.
  EXPECT_EQ(bm->dirty_bytes(), 4 * kMiB + 4096 + 10 * kMiB);
  EXPECT_TRUE(bm->any_dirty(4 * kMiB, 4 * kMiB));
  EXPECT_FALSE(bm->is_active(0, bm->volume_size()));
  bm.reset();
  EXPECT_EQ(wire::get_u64(DiskView(path_).sb() + 112), 2u + 4u);  // dm_offset
  EXPECT_EQ(expect_reloads(bigger, 4 * kMiB + 4096 + 10 * kMiB)->al_extent(), 4096u);
}

TEST_F(BitmapDamageTest, LargerSizeAtOpenWithACorruptMapBlock) {
  auto f = read_file(path_);
  f[4 * kBlock + 1000] ^= 0x10;  // dirty map block 1
  write_file(path_, f);
  MetaIdentity bigger = id_;
  bigger.volume_size += 4096;
  auto bm = reopen_grown(bigger, "dirty map block 1 (file block 4)");
  const uint64_t blk = kBitsPerBlock * 4096;
  EXPECT_EQ(bm->dirty_bytes(), blk + 4096 + 4096);  // block 1, region 5, the new region
  bm.reset();
  expect_reloads(bigger, blk + 4096 + 4096);
}

// A sealed superblock recording size 0 is impossible, not a volume that grew.
TEST_F(BitmapDamageTest, RecordedSizeZeroIsAFullResync) {
  auto f = read_file(path_);
  const int slot = DiskView(path_).newest();
  wire::put_u64(&f[slot * kBlock + 40], 0);
  reseal(f, slot, 12);
  write_file(path_, f);
  BitmapOpenReport r;
  reopen(&r).reset();
  expect_full_resync(r, "invalid volume size 0");
}

TEST_F(BitmapDamageTest, ValidChecksumOverForeignInstanceIsRejected) {
  auto f = read_file(path_);
  wire::put_u64(&f[3 * kBlock + 24], 12345);  // instance id of another file
  reseal(f, 3, 8);
  write_file(path_, f);
  BitmapOpenReport r;
  auto bm = reopen(&r);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_TRUE(contains(r.warnings[0], "another metadata file")) << r.warnings[0];
  EXPECT_EQ(bm->dirty_bytes(), kBitsPerBlock * 4096);  // block 0 (holds region 5)
}

}  // namespace
}  // namespace mirror
