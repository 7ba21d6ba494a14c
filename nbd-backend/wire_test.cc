// Tests for the big-endian field helpers every wire format here is built on.
// Expected bytes are written out by hand.
#include "wire.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

namespace mirror::wire {
namespace {

std::string Hex(std::span<const uint8_t> b) {
  std::string s;
  char buf[3];
  for (uint8_t x : b) {
    std::snprintf(buf, sizeof buf, "%02x", x);
    s += buf;
  }
  return s;
}

TEST(WireGet, ReadsNetworkByteOrder) {
  const uint8_t b[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
  EXPECT_EQ(get_u16(b), 0x0102);
  EXPECT_EQ(get_u32(b), 0x01020304u);
  EXPECT_EQ(get_u64(b), 0x0102030405060708u);
}

TEST(WireGet, HighBitsDoNotSignExtend) {
  const uint8_t b[] = {0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8};
  EXPECT_EQ(get_u16(b), 0xfffe);
  EXPECT_EQ(get_u32(b), 0xfffefdfcu);
  EXPECT_EQ(get_u64(b), 0xfffefdfcfbfaf9f8u);
}

TEST(WirePut, WritesNetworkByteOrderInPlace) {
  uint8_t b[14] = {};
  put_u16(b, 0x0a0b);
  put_u32(b + 2, 0x8c0d0e0f);
  put_u64(b + 6, 0x1011121314151617);
  EXPECT_EQ(Hex(b), "0a0b8c0d0e0f1011121314151617");
}

TEST(WirePut, RoundTripsThroughGet) {
  uint8_t b[8];
  for (uint64_t v : {uint64_t(0), uint64_t(1), uint64_t(0x8000000000000000),
                     std::numeric_limits<uint64_t>::max(), uint64_t(0x0123456789abcdef)}) {
    put_u64(b, v);
    EXPECT_EQ(get_u64(b), v);
    put_u32(b, uint32_t(v));
    EXPECT_EQ(get_u32(b), uint32_t(v));
    put_u16(b, uint16_t(v));
    EXPECT_EQ(get_u16(b), uint16_t(v));
  }
}

TEST(WireWriter, AppendsFieldsInOrder) {
  std::vector<uint8_t> out = {0xee};
  const uint8_t raw[] = {0xde, 0xad};
  Writer w(out);
  w.u8(0x01).u16(0x0203).u32(0x04050607).u64(0x08090a0b0c0d0e0f).bytes(raw).str("ok").zeroes(3);
  EXPECT_EQ(Hex(out),
            "ee"
            "01"
            "0203"
            "04050607"
            "08090a0b0c0d0e0f"
            "dead"
            "6f6b"
            "000000")
      << "the Writer appends; it never overwrites what is already there";
  EXPECT_EQ(w.size(), out.size());
}

TEST(WireReader, ReadsFieldsInOrder) {
  const uint8_t in[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
                        0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 'h',  'i',  0xaa, 0xbb};
  Reader r(in);
  EXPECT_EQ(r.u8(), 0x01);
  EXPECT_EQ(r.u16(), 0x0203);
  EXPECT_EQ(r.u32(), 0x04050607u);
  EXPECT_EQ(r.u64(), 0x08090a0b0c0d0e0fu);
  EXPECT_EQ(r.str(2), "hi");
  std::span<const uint8_t> rest = r.bytes(2);
  EXPECT_EQ(Hex(rest), "aabb");
  EXPECT_EQ(r.remaining(), 0u);
  EXPECT_FALSE(r.failed()) << "reading exactly to the end is not a failure";
}

TEST(WireReader, ReadPastTheEndFailsReturnsZeroAndStaysFailed) {
  const uint8_t in[] = {0x01, 0x02, 0x03};
  Reader r(in);
  EXPECT_EQ(r.u32(), 0u) << "a short field reads as zero";
  EXPECT_TRUE(r.failed());
  EXPECT_EQ(r.remaining(), 3u) << "a failed read consumes nothing";
  EXPECT_EQ(r.u8(), 0u) << "once failed, every later read fails too, even one that would fit";
  EXPECT_TRUE(r.failed());
}

TEST(WireReader, HugeLengthsFailWithoutOverflow) {
  const uint8_t in[] = {0x61, 0x62};
  Reader r(in);
  r.u8();
  EXPECT_TRUE(r.str(std::numeric_limits<size_t>::max()).empty());
  EXPECT_TRUE(r.failed()) << "pos + n must not wrap around";
  Reader r2(in);
  EXPECT_TRUE(r2.bytes(std::numeric_limits<size_t>::max() - 1).empty());
  EXPECT_TRUE(r2.failed());
}

// A zero-length string at the very end (an empty name or query, or an empty
// option) must not index the span at size(): with an empty span that binds a
// reference to null (UBSan), and _GLIBCXX_ASSERTIONS aborts on any index >= size.
TEST(WireReader, ZeroLengthReadsSucceedEvenAtTheEnd) {
  Reader r(std::span<const uint8_t>{});
  EXPECT_TRUE(r.str(0).empty());
  EXPECT_TRUE(r.bytes(0).empty());
  EXPECT_FALSE(r.failed());
  EXPECT_EQ(r.remaining(), 0u);
  const uint8_t one[] = {0x00};
  Reader r1(one);
  r1.u8();
  EXPECT_TRUE(r1.str(0).empty());
  EXPECT_FALSE(r1.failed());
}

}  // namespace
}  // namespace mirror::wire
