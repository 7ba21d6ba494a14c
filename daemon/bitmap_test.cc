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

#include "bitmap_test_util.h"
#include "crc32c.h"
#include "wire.h"

namespace mirror::bitmap_testing {
namespace {

using ::testing::ElementsAre;

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

// ---- damage ----

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
  EXPECT_EQ(r.recorded_primary, std::optional<bool>(true));  // the superblocks were there
  std::filesystem::resize_file(path_, 100);
  reopen(&r).reset();
  expect_full_resync(r, "file truncated to 100 bytes");
  EXPECT_EQ(r.recorded_primary, std::nullopt);  // no superblock left to say
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
      {"peer name", [](MetaIdentity& i) { i.peer = "gamma"; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    SetUp();  // a fresh file with our identity
    MetaIdentity other = id_;
    c.change(other);
    BitmapOpenReport r;
    reopen(&r, &other).reset();
    EXPECT_TRUE(contains(r.reason, "foreign metadata")) << r.reason;
    // The superblock was readable: the role it recorded is reported.
    EXPECT_EQ(r.recorded_primary, std::optional<bool>(true));
    expect_full_resync(r, c.field, &other);
  }
}

TEST_F(BitmapDamageTest, AnotherNodesMetadataIsRefusedAndKeptAsItIs) {
  // A daemon started with the wrong --node (or on the wrong host): a reset
  // would cost the node whose file it is a full resync, or its split image.
  std::vector<uint8_t> before = read_file(path_);
  MetaIdentity other = id_;
  other.node = "gamma";
  auto bm = Bitmap::open(*loop_, path_, other, nullptr);
  ASSERT_FALSE(bm);
  EXPECT_EQ(bm.error().code, EINVAL);
  EXPECT_TRUE(contains(bm.error().message, "belongs to node \"" + id_.node + "\"") &&
              contains(bm.error().message, "runs as node \"gamma\"") &&
              contains(bm.error().message, "wrong --node"))
      << bm.error().message;
  EXPECT_EQ(read_file(path_), before);
  BitmapOpenReport r;
  reopen(&r).reset();
  EXPECT_FALSE(r.full_resync) << r.reason;
}

TEST_F(BitmapDamageTest, ResetKeepsTheRecordedRoleAndDiskFailures) {
  // Facts about this node's copy, not about the maps: a reset (here a
  // renamed volume) must not forget them, and the rewritten file must still
  // say them (a daemon that refuses to start, or crashes, after the reset
  // reads that file next). The primary whose disk failed and was detached
  // holds an outdated copy; forgotten, it starts as primary and full-syncs
  // it over the peer's, the only current one.
  // A split, too (a reset that forgot it resynced over the split image
  // without a rejoin), an unfinished resync into this copy (forgotten, the
  // half-written copy passes for an image), and a copy of unknown history.
  const uint32_t facts[] = {kFlagPrimary | kFlagDiskFailed, kFlagPeerDiskFailed,
                            kFlagPrimary | kFlagSplit, kFlagSplit | kFlagInconsistent,
                            kFlagCopyUnknown};
  for (uint32_t f : facts) {
    SCOPED_TRACE(f);
    SetUp();
    {
      auto bm = reopen(nullptr);
      bm->set_flags(f | kFlagCleanShutdown);
      ASSERT_TRUE(bm->flush_sync().ok());
    }
    MetaIdentity renamed = id_;
    renamed.volume = "vol1";
    BitmapOpenReport r;
    auto bm = reopen(&r, &renamed);
    EXPECT_TRUE(r.full_resync) << r.reason;
    EXPECT_EQ(bm->flags(), kFlagFullSyncNeeded | f);
    EXPECT_EQ(bm->dirty_bytes(), bm->volume_size());
    bm.reset();
    bm = reopen(&r, &renamed);
    EXPECT_FALSE(r.full_resync) << r.reason;
    EXPECT_EQ(bm->flags(), kFlagFullSyncNeeded | f);
  }
}

TEST_F(BitmapTest, UndoHeaderChangePutsBackOnlyWhatTheChangeTouched) {
  auto bm = open_clean(*loop_, path_, three_block_ident());
  Generation before;
  before.current = 1;
  bm->set_generation(before);
  bm->set_flags(kFlagFullSyncNeeded);
  Generation after = before;
  after.history[0] = 1;
  after.current = 2;
  bm->set_generation(after);
  bm->set_flags(0);                // the change cleared kFlagFullSyncNeeded
  bm->set_flags(kFlagDisposableLocalWrites);       // another flag set meanwhile
  bm->undo_header_change(before, 2, kFlagFullSyncNeeded, 0);
  EXPECT_EQ(bm->generation(), before);
  EXPECT_EQ(bm->flags(), kFlagFullSyncNeeded | kFlagDisposableLocalWrites);
  // A generation moved on since (not the one the change set) stays.
  Generation later = before;
  later.current = 3;
  bm->set_generation(later);
  bm->undo_header_change(before, 2, kFlagFullSyncNeeded, 0);
  EXPECT_EQ(bm->generation(), later);
}

TEST_F(BitmapDamageTest, ChangedGranularityKeepsDirtyRegionsRoleAndGenerations) {
  Generation g;
  g.current = 0x1111;
  g.bitmap = 0x2222;
  {
    auto bm = reopen(nullptr);
    bm->set_generation(g);
    ASSERT_TRUE(bm->flush_sync().ok());
  }
  // Coarser: region 5 (bytes [20480, 24576)) lies in 16 KiB region 1.
  MetaIdentity coarse = id_;
  coarse.granularity = 16384;
  BitmapOpenReport r;
  auto bm = reopen(&r, &coarse);
  EXPECT_FALSE(r.full_resync) << r.reason;
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_TRUE(contains(r.warnings[0], "bitmap granularity changed from 4096 to 16384"))
      << r.warnings[0];
  EXPECT_EQ(runs(*bm), (std::vector<std::pair<uint64_t, uint64_t>>{{16384, 16384}}));
  EXPECT_EQ(bm->flags(), kFlagPrimary);
  EXPECT_EQ(bm->generation(), g);
  EXPECT_TRUE(bm->is_active(4 * kMiB, 1));  // the activity map is kept too
  EXPECT_EQ(bm->granularity(), 16384u);
  bm.reset();
  bm = reopen(&r, &coarse);  // rewritten in the new layout: loads as is
  EXPECT_TRUE(r.warnings.empty());
  EXPECT_FALSE(r.full_resync);
  EXPECT_EQ(bm->dirty_bytes(), 16384u);
  bm.reset();
  // Finer again: the 16 KiB region becomes four 4 KiB ones, nothing lost.
  bm = reopen(&r);
  EXPECT_FALSE(r.full_resync) << r.reason;
  EXPECT_EQ(runs(*bm), (std::vector<std::pair<uint64_t, uint64_t>>{{16384, 16384}}));
  EXPECT_EQ(bm->generation(), g);
  EXPECT_EQ(bm->flags(), kFlagPrimary);
}

TEST_F(BitmapDamageTest, ChangedGranularityWithAlExtentGrowAndBadBlockLosesNoDirtyByte) {
  // Every edit at once, with a damaged dirty block: each source of dirty
  // bytes must reach the converted map (rounded out to 16 KiB).
  auto f = read_file(path_);
  f[4 * kBlock + 100] ^= 0xFF;  // dirty map block 1
  write_file(path_, f);
  MetaIdentity edited = id_;
  edited.granularity = 16384;
  edited.al_extent = 8 * kMiB;
  edited.volume_size += kMiB;
  BitmapOpenReport r;
  auto bm = reopen(&r, &edited);
  EXPECT_FALSE(r.full_resync) << r.reason;
  const uint64_t old_size = id_.volume_size, blk = kBitsPerBlock * 4096;
  EXPECT_EQ(runs(*bm), (std::vector<std::pair<uint64_t, uint64_t>>{
                           {16384, 16384},        // region 5, rounded out
                           {4 * kMiB, 4 * kMiB},  // the old active extent 1
                           {blk, blk},            // the damaged block
                           {old_size, kMiB}}));   // the grown area
  EXPECT_EQ(bm->flags(), kFlagPrimary);
  bm.reset();
  bm = reopen(&r, &edited);  // rewritten: loads as is
  EXPECT_TRUE(r.warnings.empty());
  EXPECT_EQ(bm->dirty_bytes(), 16384 + 4 * kMiB + blk + kMiB);
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
}  // namespace mirror::bitmap_testing
