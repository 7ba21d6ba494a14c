#include "crc32c.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace mirror {
namespace {

uint32_t crc_of(const std::vector<uint8_t>& v) {
  return crc32c(v.data(), v.size());
}

TEST(Crc32c, CheckValue) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
}

TEST(Crc32c, Empty) {
  EXPECT_EQ(crc32c("", 0), 0u);
}

// RFC 3720 (iSCSI), appendix B.4.
TEST(Crc32c, Rfc3720Vectors) {
  std::vector<uint8_t> v(32, 0x00);
  EXPECT_EQ(crc_of(v), 0x8A9136AAu);
  std::fill(v.begin(), v.end(), 0xFF);
  EXPECT_EQ(crc_of(v), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) v[i] = uint8_t(i);
  EXPECT_EQ(crc_of(v), 0x46DD794Eu);
  for (int i = 0; i < 32; ++i) v[i] = uint8_t(31 - i);
  EXPECT_EQ(crc_of(v), 0x113FDB5Cu);
}

// Reference: one bit at a time, straight from the definition.
uint32_t bitwise(const uint8_t* p, size_t n) {
  uint32_t c = ~0u;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1) ? 0x82F63B78u : 0);
  }
  return ~c;
}

TEST(Crc32c, MatchesBitwiseAtEveryLengthAndAlignment) {
  std::vector<uint8_t> buf(300);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = uint8_t(i * 131 + 7);
  for (size_t start = 0; start < 9; ++start) {
    for (size_t n = 0; start + n <= buf.size(); n += (n < 40 ? 1 : 37)) {
      ASSERT_EQ(crc32c(buf.data() + start, n), bitwise(buf.data() + start, n))
          << "start " << start << " length " << n;
    }
  }
}

TEST(Crc32c, ExtendEqualsWhole) {
  const char* s = "The quick brown fox jumps over the lazy dog";
  size_t n = std::strlen(s);
  for (size_t cut = 0; cut <= n; ++cut)
    EXPECT_EQ(crc32c_extend(crc32c(s, cut), s + cut, n - cut), crc32c(s, n)) << cut;
  EXPECT_EQ(crc32c(s, n), 0x22620404u);
}

}  // namespace
}  // namespace mirror
