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

}  // namespace mirror
