// Tests of LocalWriteGate's read side: the secondary's NBD export serves its
// copy only while the metadata says it is a usable image, and a resync may
// wait for the reads issued before it stopped being one.
#include "tracking_backend.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <vector>

#include "bitmap_test_util.h"
#include "secondary.h"

namespace mirror {
namespace {

using bitmap_testing::ident;
using bitmap_testing::make_loop;
using bitmap_testing::open_clean;
using bitmap_testing::TempDir;

// Holds every read and block status until the test completes it.
class HeldBackend final : public Backend {
 public:
  uint64_t size() const override { return 64 << 20; }
  bool read_only() const override { return false; }
  bool can_trim() const override { return true; }
  void read(uint64_t, uint32_t, uint8_t*, IoDone* done) override { held.push_back(done); }
  void write(uint64_t, uint32_t, const uint8_t*, bool, IoDone* done) override { held.push_back(done); }
  void flush(IoDone* done) override { held.push_back(done); }
  void trim(uint64_t, uint32_t, bool, IoDone* done) override { held.push_back(done); }
  void zero(uint64_t, uint32_t, ZeroFlags, IoDone* done) override { held.push_back(done); }
  void cache(uint64_t, uint32_t, IoDone* done) override { held.push_back(done); }
  void block_status(uint64_t, uint32_t, uint32_t, std::vector<nbd::Extent>*,
                    IoDone* done) override {
    held.push_back(done);
  }
  void complete_all(int err = 0) {
    auto h = std::move(held);
    held.clear();
    for (IoDone* d : h) d->io_done(err);
  }
  std::vector<IoDone*> held;
};

struct Result {
  int calls = 0;
  int err = 1;
};

IoDone* record(Result& r) {
  return FnDone::make([&r](int e) {
    ++r.calls;
    r.err = e;
  });
}

struct ReadGateTest : ::testing::Test {
  TempDir dir;
  std::unique_ptr<Loop> loop = make_loop();
  std::unique_ptr<Bitmap> bm = open_clean(*loop, dir.file("meta"), ident());
  HeldBackend inner;
  LocalWriteGate gate{*loop, inner, *bm};
  uint8_t buf[4096];

  // Runs what the loop has deferred (refusals never complete inline).
  void drain() {
    loop->defer([this] { loop->stop(); });
    bitmap_testing::run(*loop);
  }
};

TEST_F(ReadGateTest, ServesAConsistentCopy) {
  Result r, s;
  gate.read(0, 4096, buf, record(r));
  std::vector<nbd::Extent> ext;
  gate.block_status(0, 4096, 16, &ext, record(s));
  ASSERT_EQ(inner.held.size(), 2u) << "both reach the file";
  inner.complete_all();
  EXPECT_EQ(r.calls, 1);
  EXPECT_EQ(r.err, 0);
  EXPECT_EQ(s.err, 0);
}

TEST_F(ReadGateTest, RefusesAnInconsistentCopyWithEio) {
  for (uint32_t flag : {kFlagInconsistent, kFlagFullSyncNeeded}) {
    bm->set_flags(flag);
    Result r, s;
    gate.read(0, 4096, buf, record(r));
    std::vector<nbd::Extent> ext;
    gate.block_status(0, 4096, 16, &ext, record(s));
    EXPECT_EQ(r.calls, 0) << "never completes inside the call";
    drain();
    EXPECT_TRUE(inner.held.empty()) << "flag " << flag << ": nothing reaches the file";
    EXPECT_EQ(r.err, -EIO);
    EXPECT_EQ(s.err, -EIO);
    EXPECT_FALSE(gate.image_usable());
  }
  // The resync ended (SYNC_DONE cleared the flags): served again.
  bm->set_flags(kFlagSplit);
  EXPECT_TRUE(gate.image_usable());
  Result r;
  gate.read(0, 4096, buf, record(r));
  ASSERT_EQ(inner.held.size(), 1u);
  inner.complete_all();
  EXPECT_EQ(r.err, 0);
}

TEST_F(ReadGateTest, WaitsForReadsIssuedWhileUsable) {
  Result r1, r2;
  gate.read(0, 4096, buf, record(r1));
  gate.read(8192, 4096, buf, record(r2));
  bm->set_flags(kFlagInconsistent);  // a resync plan arrives
  int drained = 0;
  gate.when_reads_drained([&] {
    ++drained;
    EXPECT_EQ(r1.calls + r2.calls, 2) << "after the reads were answered";
  });
  EXPECT_EQ(drained, 0) << "two reads of the old image are still in flight";
  inner.complete_all();
  EXPECT_EQ(drained, 1);
  gate.when_reads_drained([&] { ++drained; });
  EXPECT_EQ(drained, 2) << "nothing in flight: at once";
}

}  // namespace
}  // namespace mirror
