// What the Bitmap unit tests share (bitmap_test.cc, bitmap_grow_test.cc): a
// temp dir, the file as docs/bitmap-format.md describes it, identities, a
// loop runner, and the two fixtures.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bitmap.h"
#include "crc32c.h"
#include "wire.h"

namespace mirror::bitmap_testing {

// What the tests know about the format comes from docs/bitmap-format.md, not
// from bitmap.cc, so they also check that the code writes what the doc says.
inline constexpr uint64_t kBlock = 4096;
inline constexpr uint64_t kBitsPerBlock = 32512;
inline constexpr uint64_t kKiB = 1024, kMiB = 1024 * kKiB;

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

inline std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

inline void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// Re-seals a block after a test edited it, so only the intended defect shows.
inline void reseal(std::vector<uint8_t>& file, uint64_t block, size_t crc_at) {
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

inline MetaIdentity ident(uint64_t size = 64 * kMiB, uint32_t granularity = 64 * kKiB) {
  MetaIdentity id;
  id.volume = "vol0";
  id.volume_size = size;
  id.node = "alpha";
  id.peer = "beta";
  id.granularity = granularity;
  return id;
}

// Three dirty-map blocks at 4 KiB granularity.
inline MetaIdentity three_block_ident() {
  return ident(3 * kBitsPerBlock * 4096, 4096);
}

inline std::unique_ptr<Loop> make_loop() {
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
inline void run(Loop& loop) {
  Timer watchdog(loop, [&] {
    ADD_FAILURE() << "timed out waiting for the loop to stop";
    loop.stop();
  });
  watchdog.arm(10000);
  loop.run();
}

inline std::unique_ptr<Bitmap> open_ok(Loop& loop, const std::string& path, const MetaIdentity& id,
                                       BitmapOpenReport* report = nullptr) {
  BitmapOpenReport local;
  auto bm = Bitmap::open(loop, path, id, report ? report : &local);
  EXPECT_TRUE(bm.ok()) << bm.error().to_string();
  return bm.ok() ? std::move(bm).value() : nullptr;
}

// A created file starts all dirty; most tests want a clean, durable start.
inline std::unique_ptr<Bitmap> open_clean(Loop& loop, const std::string& path,
                                          const MetaIdentity& id) {
  auto bm = open_ok(loop, path, id);
  bm->clear_all_dirty();
  bm->set_flags(0);
  EXPECT_TRUE(bm->flush_sync().ok());
  return bm;
}

inline std::vector<std::pair<uint64_t, uint64_t>> runs(const Bitmap& bm, uint64_t max_len = ~0ull) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  uint64_t off, len;
  for (uint64_t from = 0; bm.next_dirty(from, max_len, &off, &len); from = off + len)
    out.emplace_back(off, len);
  return out;
}

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

class BitmapTest : public ::testing::Test {
 protected:
  TempDir dir_;
  std::string path_ = dir_.file("vol0.meta");
  std::unique_ptr<Loop> loop_ = make_loop();
};

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
    // SetUp recorded kFlagPrimary: a reset after a readable superblock keeps it.
    EXPECT_EQ(bm->flags(),
              kFlagFullSyncNeeded | (r.recorded_primary.value_or(false) ? kFlagPrimary : 0));
    EXPECT_EQ(bm->generation(), Generation{});
    EXPECT_FALSE(bm->is_active(4 * kMiB, 1));
  }
  MetaIdentity id_ = three_block_ident();
};

}  // namespace mirror::bitmap_testing
