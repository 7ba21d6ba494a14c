// Bitmap::grow and the growth at open (docs/bitmap-format.md, "Growing" and
// "Loading"): bits kept, the new area, refusals, failures, crash states.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <ostream>

#include "bitmap.h"
#include "bitmap_test_util.h"
#include "wire.h"

namespace mirror::bitmap_testing {
namespace {

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

// ---- growing at open ----

// The damage fixture's file (three dirty blocks, region 5 dirty, extent 1
// active, kFlagPrimary), opened with a larger size.
class BitmapGrowAtOpenTest : public BitmapDamageTest {
 protected:
  // Opens with a larger identity: no full resync, a warning containing
  // `defect` (found on the way), then the growth's.
  std::unique_ptr<Bitmap> reopen_grown(const MetaIdentity& bigger, const std::string& defect) {
    BitmapOpenReport r;
    auto bm = reopen(&r, &bigger);
    EXPECT_FALSE(r.full_resync) << r.reason;
    EXPECT_EQ(r.warnings.size(), 2u);
    if (r.warnings.size() == 2) {
      EXPECT_TRUE(contains(r.warnings[0], defect)) << r.warnings[0];
      EXPECT_TRUE(contains(r.warnings[1], "volume grew")) << r.warnings[1];
    }
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
};

// The operator stopped the daemon, grew the volume and its configured size.
TEST_F(BitmapGrowAtOpenTest, LargerSizeAtOpenGrowsAndMarksTheNewAreaDirty) {
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

TEST_F(BitmapGrowAtOpenTest, LargerSizeAndChangedAlExtentAtOpen) {
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

TEST_F(BitmapGrowAtOpenTest, LargerSizeAtOpenWithACorruptMapBlock) {
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
TEST_F(BitmapGrowAtOpenTest, RecordedSizeZeroIsAFullResync) {
  auto f = read_file(path_);
  const int slot = DiskView(path_).newest();
  wire::put_u64(&f[slot * kBlock + 40], 0);
  reseal(f, slot, 12);
  write_file(path_, f);
  BitmapOpenReport r;
  reopen(&r).reset();
  expect_full_resync(r, "invalid volume size 0");
}

}  // namespace
}  // namespace mirror::bitmap_testing
