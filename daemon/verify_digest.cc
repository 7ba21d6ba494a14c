#include "verify_digest.h"

#include <openssl/sha.h>

#include <algorithm>

namespace mirror {

std::vector<link::Digest> region_digests(std::span<const uint8_t> data, uint32_t region) {
  std::vector<link::Digest> out(link::verify_regions(data.size(), region));
  for (size_t i = 0; i < out.size(); ++i) {
    size_t off = i * size_t(region);
    size_t len = std::min<size_t>(region, data.size() - off);
    SHA256(data.data() + off, len, out[i].data());
  }
  return out;
}

std::vector<link::Range> differing_runs(uint64_t offset, uint64_t length, uint32_t region,
                                        std::span<const link::Digest> ours,
                                        std::span<const link::Digest> theirs) {
  const uint64_t n = link::verify_regions(length, region);
  if (length == 0) return {};
  if (ours.size() != n || theirs.size() != n) return {{offset, length}};
  std::vector<link::Range> runs;
  for (uint64_t i = 0; i < n; ++i) {
    if (ours[i] == theirs[i]) continue;
    uint64_t off = offset + i * region;
    uint64_t len = std::min<uint64_t>(region, offset + length - off);
    if (!runs.empty() && runs.back().offset + runs.back().length == off) {
      runs.back().length += len;
    } else {
      runs.push_back({off, len});
    }
  }
  return runs;
}

}  // namespace mirror
