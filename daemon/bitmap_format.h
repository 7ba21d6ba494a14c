// The bitmap metadata file, format version 1 (docs/bitmap-format.md, its
// specification): block layout, field offsets, and the codecs of the
// superblock and of a map block with their checksums.
//
// Pure functions over 4096-byte blocks held by the caller: no descriptors, no
// state, safe from any thread. Bitmap (bitmap.h) reads and writes the file
// and decides what a defect costs (a bad block: its bits set; no usable
// superblock: a full resync); this file only says what the bytes mean.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mirror {

// The superblock's generation ids; what they mean belongs to the replication
// layer (docs/replication-protocol.md), the file only stores them.
struct Generation {
  uint64_t current = 0, bitmap = 0, history[2] = {0, 0};
  bool operator==(const Generation&) const = default;
};

namespace bitmap_format {

inline constexpr uint64_t kBlock = 4096;
inline constexpr size_t kMapHeader = 32;
inline constexpr uint64_t kWordsPerBlock = (kBlock - kMapHeader) / 8;  // 508
inline constexpr uint64_t kBitsPerBlock = kWordsPerBlock * 64;         // 32512
inline constexpr uint32_t kVersion = 1;
inline constexpr uint8_t kKindActivity = 1;
inline constexpr uint8_t kKindDirty = 2;
inline constexpr size_t kNameLen = 64;
// Both maps together at most (a geometry finer than this is refused).
inline constexpr uint64_t kMaxMapBytes = 4ull << 30;

uint64_t div_up(uint64_t a, uint64_t b);

// granularity and al_extent: powers of two, 4096 .. 2^31.
bool valid_unit(uint64_t v);

// The layout version 1 derives from a geometry (blocks, see "Layout").
struct Geometry {
  uint64_t al_bits, al_blocks, dm_bits, dm_blocks;
  uint64_t al_offset() const { return 2; }
  uint64_t dm_offset() const { return 2 + al_blocks; }
  uint64_t total_blocks() const { return 2 + al_blocks + dm_blocks; }
};
Geometry geometry(uint64_t size, uint64_t granularity, uint64_t al_extent);

// "activity" or "dirty", for messages.
const char* map_name(uint8_t kind);

// A recorded name: raw bytes, NUL padded to 64.
struct NameField {
  uint8_t raw[kNameLen] = {};
  // `name`: at most 64 bytes, no NUL (Bitmap::open checks the identity).
  static NameField of(const std::string& name);
  // The bytes before the first NUL; a recorded field may hold anything.
  std::string_view text() const;
  // True if the field is exactly what of(name) writes: bytes after the first
  // NUL make it differ from every name we would write.
  bool is(const std::string& name) const;
};

// The fields of a superblock (table "Superblock"). The slot it belongs in is
// sequence % 2; magic, version and CRC are the codec's business.
struct Superblock {
  uint64_t sequence = 0;
  uint32_t flags = 0;
  uint64_t instance = 0;
  uint64_t volume_size = 0;
  uint32_t granularity = 0, al_extent = 0;
  Generation gen;
  uint64_t cursor = 0;
  uint64_t al_offset = 0, al_blocks = 0, dm_offset = 0, dm_blocks = 0;
  NameField volume, node, peer;
};

// Writes a whole block (reserved bytes zero, the CRC sealed).
void encode_superblock(const Superblock& s, uint8_t* blk);
// Why the block read from superblock slot `slot` (0 or 1) is unusable, or ""
// when it verifies; then *out holds its fields. Only the envelope is checked
// (magic, version, CRC, slot): whether the contents fit a volume is the
// reader's question.
std::string decode_superblock(const uint8_t* blk, uint32_t slot, Superblock* out);

// What a map block says about itself; a reader compares it with what it expects.
struct MapBlockTag {
  uint8_t kind;         // kKindActivity or kKindDirty
  uint64_t file_block;  // the block's own position in the file
  uint64_t instance;    // the superblock's instance id
};

// Writes a whole block from kWordsPerBlock in-memory words (bit n of the
// block: bit n % 64 of words[n / 64]), the CRC sealed.
void encode_map_block(const MapBlockTag& tag, const uint64_t* words, uint8_t* blk);
// Decodes a block that should carry `want` into kWordsPerBlock words. Only the
// first `valid_bits` bits (1 .. kBitsPerBlock) belong to the map: the rest
// must be zero. Returns "" or what is wrong with the block (then `words` holds
// nothing meaningful).
std::string decode_map_block(const uint8_t* blk, const MapBlockTag& want, uint64_t valid_bits,
                             uint64_t* words);

// Iterates the 64-bit words holding bits [first, end) (end > first): f(word
// index, mask of the bits in range); stops early when f returns false. The
// codec and the in-memory maps share it.
template <typename F>
void for_words(uint64_t first, uint64_t end, F f) {
  uint64_t w0 = first / 64, w1 = (end - 1) / 64;
  for (uint64_t w = w0; w <= w1; ++w) {
    uint64_t mask = ~0ull;
    if (w == w0) mask &= ~0ull << (first % 64);
    if (w == w1) mask &= ~0ull >> (63 - (end - 1) % 64);
    if (!f(w, mask)) return;
  }
}

}  // namespace bitmap_format
}  // namespace mirror
