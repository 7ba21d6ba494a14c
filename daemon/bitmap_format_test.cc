// The metadata block codec against docs/bitmap-format.md: offsets, values
// and bit order below are the doc's, written out by hand, so a codec that
// drifts from the specification fails here. Bitmap's use of the codec (load,
// repair, commit) is tested in bitmap_test.cc.
#include "bitmap_format.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "crc32c.h"
#include "wire.h"

namespace mirror::bitmap_format {
namespace {

using Block = std::vector<uint8_t>;

// The doc's CRC rule: all 4096 bytes with the CRC field read as zero.
uint32_t doc_crc(const Block& b, size_t crc_at) {
  Block copy = b;
  wire::put_u32(&copy[crc_at], 0);
  return crc32c(copy.data(), copy.size());
}

void seal(Block& b, size_t crc_at) {
  wire::put_u32(&b[crc_at], doc_crc(b, crc_at));
}

Superblock sample_superblock() {
  Superblock s;
  s.sequence = 7;  // slot 1
  s.flags = 0x20002;
  s.instance = 0x1122334455667788;
  s.volume_size = 3 * kBitsPerBlock * 4096;
  s.granularity = 4096;
  s.al_extent = 4 << 20;
  s.gen = {11, 22, {33, 44}};
  s.cursor = 12345;
  s.al_offset = 2, s.al_blocks = 1, s.dm_offset = 3, s.dm_blocks = 3;
  s.volume = NameField::of("vol0");
  s.node = NameField::of("alpha");
  s.peer = NameField::of("beta");
  return s;
}

// A superblock built field by field from the doc's table.
Block hand_built_superblock(uint64_t sequence, uint32_t slot) {
  Block b(kBlock, 0);
  std::memcpy(&b[0], "MIRRBMP1", 8);
  wire::put_u32(&b[8], 1);
  wire::put_u64(&b[16], sequence);
  wire::put_u32(&b[24], slot);
  wire::put_u32(&b[28], 0x9);
  wire::put_u64(&b[32], 0xABCDEF);
  wire::put_u64(&b[40], 1ull << 30);
  wire::put_u32(&b[48], 65536);
  wire::put_u32(&b[52], 8 << 20);
  wire::put_u64(&b[56], 101);
  wire::put_u64(&b[64], 102);
  wire::put_u64(&b[72], 103);
  wire::put_u64(&b[80], 104);
  wire::put_u64(&b[88], 4096 * 5);
  wire::put_u64(&b[96], 2);
  wire::put_u64(&b[104], 1);
  wire::put_u64(&b[112], 3);
  wire::put_u64(&b[120], 1);
  std::memcpy(&b[128], "v", 1);
  std::memcpy(&b[192], "node-a", 6);
  std::memcpy(&b[256], "node-b", 6);
  seal(b, 12);
  return b;
}

TEST(BitmapFormat, GeometryFollowsTheDocsFormulas) {
  EXPECT_EQ(kBitsPerBlock, 32512u);  // B: (4096 - 32) * 8
  Geometry g = geometry(1ull << 30, 65536, 4 << 20);
  EXPECT_EQ(g.dm_bits, 16384u);
  EXPECT_EQ(g.dm_blocks, 1u);
  EXPECT_EQ(g.al_bits, 256u);
  EXPECT_EQ(g.al_blocks, 1u);
  EXPECT_EQ(g.al_offset(), 2u);
  EXPECT_EQ(g.dm_offset(), 3u);
  EXPECT_EQ(g.total_blocks(), 4u);
  // One bit more than a block holds takes a second block; a short last
  // region still gets its bit.
  g = geometry(kBitsPerBlock * 4096 + 1, 4096, 1ull << 31);
  EXPECT_EQ(g.dm_bits, kBitsPerBlock + 1);
  EXPECT_EQ(g.dm_blocks, 2u);
  EXPECT_EQ(g.al_bits, 1u);
  EXPECT_EQ(g.dm_offset(), 3u);
  EXPECT_EQ(g.total_blocks(), 5u);
}

TEST(BitmapFormat, UnitsArePowersOfTwoFrom4KTo2G) {
  EXPECT_TRUE(valid_unit(4096));
  EXPECT_TRUE(valid_unit(1ull << 31));
  EXPECT_FALSE(valid_unit(2048));
  EXPECT_FALSE(valid_unit(1ull << 32));
  EXPECT_FALSE(valid_unit(3 * 4096));
  EXPECT_FALSE(valid_unit(0));
}

TEST(BitmapFormat, SuperblockIsWrittenAsTheDocLaysItOut) {
  Superblock s = sample_superblock();
  Block b(kBlock, 0xEE);  // stale bytes: every reserved byte must come out zero
  encode_superblock(s, b.data());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(&b[0]), 8), "MIRRBMP1");
  EXPECT_EQ(wire::get_u32(&b[8]), 1u);
  EXPECT_EQ(wire::get_u32(&b[12]), doc_crc(b, 12));
  EXPECT_EQ(wire::get_u64(&b[16]), 7u);
  EXPECT_EQ(wire::get_u32(&b[24]), 1u);  // sequence mod 2
  EXPECT_EQ(wire::get_u32(&b[28]), 0x20002u);
  EXPECT_EQ(wire::get_u64(&b[32]), 0x1122334455667788u);
  EXPECT_EQ(b[32], 0x11);  // big-endian
  EXPECT_EQ(wire::get_u64(&b[40]), s.volume_size);
  EXPECT_EQ(wire::get_u32(&b[48]), 4096u);
  EXPECT_EQ(wire::get_u32(&b[52]), 4u << 20);
  EXPECT_EQ(wire::get_u64(&b[56]), 11u);
  EXPECT_EQ(wire::get_u64(&b[64]), 22u);
  EXPECT_EQ(wire::get_u64(&b[72]), 33u);
  EXPECT_EQ(wire::get_u64(&b[80]), 44u);
  EXPECT_EQ(wire::get_u64(&b[88]), 12345u);
  EXPECT_EQ(wire::get_u64(&b[96]), 2u);
  EXPECT_EQ(wire::get_u64(&b[104]), 1u);
  EXPECT_EQ(wire::get_u64(&b[112]), 3u);
  EXPECT_EQ(wire::get_u64(&b[120]), 3u);
  Block name(64, 0);
  std::memcpy(name.data(), "vol0", 4);
  EXPECT_EQ(Block(&b[128], &b[192]), name);
  name.assign(64, 0);
  std::memcpy(name.data(), "alpha", 5);
  EXPECT_EQ(Block(&b[192], &b[256]), name);
  name.assign(64, 0);
  std::memcpy(name.data(), "beta", 4);
  EXPECT_EQ(Block(&b[256], &b[320]), name);
  EXPECT_EQ(Block(b.begin() + 320, b.end()), Block(kBlock - 320, 0));
}

TEST(BitmapFormat, HandBuiltSuperblockDecodes) {
  Block b = hand_built_superblock(42, 0);
  Superblock s;
  ASSERT_EQ(decode_superblock(b.data(), 0, &s), "");
  EXPECT_EQ(s.sequence, 42u);
  EXPECT_EQ(s.flags, 0x9u);
  EXPECT_EQ(s.instance, 0xABCDEFu);
  EXPECT_EQ(s.volume_size, 1ull << 30);
  EXPECT_EQ(s.granularity, 65536u);
  EXPECT_EQ(s.al_extent, 8u << 20);
  EXPECT_EQ(s.gen, (Generation{101, 102, {103, 104}}));
  EXPECT_EQ(s.cursor, 4096u * 5);
  EXPECT_EQ(s.al_offset, 2u);
  EXPECT_EQ(s.al_blocks, 1u);
  EXPECT_EQ(s.dm_offset, 3u);
  EXPECT_EQ(s.dm_blocks, 1u);
  EXPECT_EQ(s.volume.text(), "v");
  EXPECT_TRUE(s.node.is("node-a"));
  EXPECT_TRUE(s.peer.is("node-b"));
}

TEST(BitmapFormat, SuperblockRoundTrips) {
  Superblock s = sample_superblock();
  Block b(kBlock);
  encode_superblock(s, b.data());
  Superblock got;
  ASSERT_EQ(decode_superblock(b.data(), 1, &got), "");
  Block again(kBlock);
  encode_superblock(got, again.data());
  EXPECT_EQ(again, b);
  EXPECT_EQ(got.gen, s.gen);
  EXPECT_TRUE(got.volume.is("vol0"));
}

TEST(BitmapFormat, SuperblockDefectsAreNamed) {
  Superblock s;
  Block b = hand_built_superblock(42, 0);
  b[0] = 'X';
  seal(b, 12);
  EXPECT_EQ(decode_superblock(b.data(), 0, &s), "wrong magic");

  b = hand_built_superblock(42, 0);
  wire::put_u32(&b[8], 2);
  seal(b, 12);
  EXPECT_EQ(decode_superblock(b.data(), 0, &s), "unsupported format version 2");

  b = hand_built_superblock(42, 0);
  b[300] ^= 1;  // a reserved byte is covered too
  EXPECT_EQ(decode_superblock(b.data(), 0, &s), "superblock checksum mismatch");
  b[300] ^= 1;
  b[4095] ^= 0x80;
  EXPECT_EQ(decode_superblock(b.data(), 0, &s), "superblock checksum mismatch");

  // Slot 0's block found in slot 1, and a slot field that disagrees with the
  // sequence: both are writes that went to the wrong place.
  b = hand_built_superblock(42, 0);
  EXPECT_EQ(decode_superblock(b.data(), 1, &s), "superblock of slot 0 (misdirected write)");
  b = hand_built_superblock(43, 0);
  EXPECT_EQ(decode_superblock(b.data(), 0, &s), "superblock of slot 0 (misdirected write)");
  b = hand_built_superblock(43, 1);
  EXPECT_EQ(decode_superblock(b.data(), 1, &s), "");
}

TEST(BitmapFormat, NameFieldIsTheWholeSixtyFourBytes) {
  NameField f = NameField::of("vol0");
  EXPECT_TRUE(f.is("vol0"));
  EXPECT_FALSE(f.is("vol"));
  EXPECT_FALSE(f.is("vol00"));
  // Bytes after the first NUL: shown without them, but never our name.
  f.raw[10] = 'x';
  EXPECT_EQ(f.text(), "vol0");
  EXPECT_FALSE(f.is("vol0"));
  // A name of exactly 64 bytes has no NUL at all.
  std::string longest(64, 'n');
  f = NameField::of(longest);
  EXPECT_EQ(f.text(), longest);
  EXPECT_TRUE(f.is(longest));
}

// A dirty map block that belongs at `file_block` of the file with instance
// id 0x99, bits 0, 9, 71 and 32511 set.
Block hand_built_map_block(uint64_t file_block) {
  Block b(kBlock, 0);
  std::memcpy(&b[0], "MMAP", 4);
  b[4] = 2;
  wire::put_u64(&b[16], file_block);
  wire::put_u64(&b[24], 0x99);
  b[32] = 0x01;          // bit 0
  b[33] = 0x02;          // bit 9
  b[40] = 0x80;          // bit 71
  b[kBlock - 1] = 0x80;  // bit 32511, the last of the block
  seal(b, 8);
  return b;
}

TEST(BitmapFormat, MapBlockBitOrderIsLsbFirstPerByte) {
  std::vector<uint64_t> words(kWordsPerBlock, 0);
  words[0] = 1ull | 1ull << 9;
  words[1] = 1ull << 7;
  words[kWordsPerBlock - 1] = 1ull << 63;
  Block b(kBlock, 0xEE);
  encode_map_block({kKindDirty, 4, 0x99}, words.data(), b.data());
  EXPECT_EQ(b, hand_built_map_block(4));

  std::vector<uint64_t> got(kWordsPerBlock, ~0ull);
  ASSERT_EQ(decode_map_block(b.data(), {kKindDirty, 4, 0x99}, kBitsPerBlock, got.data()), "");
  EXPECT_EQ(got, words);
}

TEST(BitmapFormat, MapBlockDefectsAreNamed) {
  std::vector<uint64_t> w(kWordsPerBlock);
  const MapBlockTag want{kKindDirty, 4, 0x99};
  Block b = hand_built_map_block(4);
  b[2000] ^= 4;
  EXPECT_EQ(decode_map_block(b.data(), want, kBitsPerBlock, w.data()), "checksum mismatch");

  b = hand_built_map_block(4);
  b[0] = 'N';
  seal(b, 8);
  EXPECT_EQ(decode_map_block(b.data(), want, kBitsPerBlock, w.data()), "wrong magic");

  b = hand_built_map_block(4);
  EXPECT_EQ(decode_map_block(b.data(), {kKindActivity, 4, 0x99}, kBitsPerBlock, w.data()),
            "map kind 2 in a activity block");
  EXPECT_EQ(decode_map_block(b.data(), {kKindDirty, 5, 0x99}, kBitsPerBlock, w.data()),
            "holds block number 4 (misdirected write)");
  EXPECT_EQ(decode_map_block(b.data(), {kKindDirty, 4, 0x98}, kBitsPerBlock, w.data()),
            "instance id of another metadata file");
}

TEST(BitmapFormat, BitsPastTheEndOfTheMapMustBeZero) {
  std::vector<uint64_t> w(kWordsPerBlock);
  const MapBlockTag want{kKindDirty, 4, 0x99};
  Block b = hand_built_map_block(4);  // bits 0, 9, 71 and 32511 set
  EXPECT_EQ(decode_map_block(b.data(), want, kBitsPerBlock, w.data()), "");
  EXPECT_EQ(decode_map_block(b.data(), want, 72, w.data()), "bits set past the end of the map");
  b[kBlock - 1] = 0;  // now bit 71 is the last one set
  seal(b, 8);
  EXPECT_EQ(decode_map_block(b.data(), want, 72, w.data()), "");
  EXPECT_EQ(decode_map_block(b.data(), want, 71, w.data()), "bits set past the end of the map");
}

}  // namespace
}  // namespace mirror::bitmap_format
