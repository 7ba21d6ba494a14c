// Unit tests of the digests that online verify and checksum-based resync
// compare (docs/replication-protocol.md, "Checksum-based resync"): which
// parts of a chunk a resync still sends.
#include "verify_digest.h"

#include <gtest/gtest.h>

#include <vector>

namespace mirror {
namespace {

constexpr uint32_t kRegion = 4096;

std::vector<uint8_t> pattern(size_t len, uint8_t seed) {
  std::vector<uint8_t> b(len);
  for (size_t i = 0; i < len; ++i) b[i] = uint8_t(seed + i * 7);
  return b;
}

std::vector<std::pair<uint64_t, uint64_t>> runs_of(const std::vector<link::Range>& r) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& x : r) out.emplace_back(x.offset, x.length);
  return out;
}

using Runs = std::vector<std::pair<uint64_t, uint64_t>>;

TEST(DifferingRuns, IdenticalCopiesSendNothing) {
  auto a = pattern(16 * kRegion, 1);
  auto d = region_digests(a, kRegion);
  EXPECT_TRUE(differing_runs(1 << 20, a.size(), kRegion, d, d).empty());
}

TEST(DifferingRuns, OneChangedByteSendsItsRegionOnly) {
  auto a = pattern(16 * kRegion, 1);
  auto b = a;
  b[5 * kRegion + 100] ^= 1;
  auto r = differing_runs(1 << 20, a.size(), kRegion, region_digests(a, kRegion),
                          region_digests(b, kRegion));
  EXPECT_EQ(runs_of(r), (Runs{{(1 << 20) + 5 * kRegion, kRegion}}));
}

TEST(DifferingRuns, AdjacentRegionsMergeIntoOneWriteAndGapsSplit) {
  auto a = pattern(16 * kRegion, 1);
  auto b = a;
  for (int i : {0, 1, 2, 7, 9, 10}) b[i * kRegion] ^= 0xff;
  auto r = differing_runs(0, a.size(), kRegion, region_digests(a, kRegion),
                          region_digests(b, kRegion));
  EXPECT_EQ(runs_of(r),
            (Runs{{0, 3 * kRegion}, {7 * kRegion, kRegion}, {9 * kRegion, 2 * kRegion}}));
}

TEST(DifferingRuns, AShortLastRegionEndsAtTheChunksEnd) {
  auto a = pattern(3 * kRegion + 512, 1);
  auto b = a;
  b.back() ^= 1;
  auto r = differing_runs(8192, a.size(), kRegion, region_digests(a, kRegion),
                          region_digests(b, kRegion));
  EXPECT_EQ(runs_of(r), (Runs{{8192 + 3 * kRegion, 512}}));
}

TEST(DifferingRuns, EverythingDifferentIsOneWholeChunk) {
  auto a = pattern(8 * kRegion, 1), b = pattern(8 * kRegion, 2);
  auto r = differing_runs(0, a.size(), kRegion, region_digests(a, kRegion),
                          region_digests(b, kRegion));
  EXPECT_EQ(runs_of(r), (Runs{{0, 8 * kRegion}}));
}

TEST(DifferingRuns, AMissingOrShortAnswerCopiesTheWholeChunk) {
  auto a = pattern(8 * kRegion, 1);
  auto d = region_digests(a, kRegion);
  EXPECT_EQ(runs_of(differing_runs(4096, a.size(), kRegion, d, {})), (Runs{{4096, a.size()}}));
  std::vector<link::Digest> shorter(d.begin(), d.end() - 1);
  EXPECT_EQ(runs_of(differing_runs(4096, a.size(), kRegion, d, shorter)),
            (Runs{{4096, a.size()}}));
}

}  // namespace
}  // namespace mirror
