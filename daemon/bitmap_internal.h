// What bitmap.cc (the maps, the group commit) and bitmap_load.cc (open,
// load, repair, rewrite) share. Internal to mirror_meta; the file's bytes are
// bitmap_format.h's.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <string>
#include <vector>

#include "bitmap.h"
#include "bitmap_format.h"
#include "result.h"

namespace mirror {
namespace bitmap_internal {

inline constexpr uint64_t kIoChunkBlocks = 256;  // 1 MiB per read or write

// One map's shape, for reading it from the file.
struct MapShape {
  uint8_t kind;
  uint64_t unit;  // bytes per bit
  uint64_t nbits;
  uint64_t offset, blocks;
};

// Writes all n bytes at `off` (EINTR retried); errors name the file.
Status pwrite_full(int fd, const uint8_t* buf, size_t n, uint64_t off, const std::string& path);

}  // namespace bitmap_internal

struct Bitmap::Map {
  uint8_t kind = 0;
  uint64_t unit = 0;  // bytes per bit
  uint64_t nbits = 0;
  uint64_t offset = 0, blocks = 0;  // in the file
  uint32_t change_base = 0;         // index of block 0 in changed_
  uint64_t count = 0;               // set bits
  std::vector<uint64_t> words;      // blocks * kWordsPerBlock; bits past nbits stay 0

  bitmap_internal::MapShape shape() const { return {kind, unit, nbits, offset, blocks}; }
  void recount() {
    count = 0;
    for (uint64_t w : words) count += std::popcount(w);
  }
  // Bits touched by the byte range [off, off+len) of a volume of `size` bytes.
  bool touched(uint64_t size, uint64_t off, uint64_t len, uint64_t* first, uint64_t* end) const {
    if (len == 0 || off >= size) return false;
    uint64_t stop = len > size - off ? size : off + len;
    *first = off / unit;
    *end = (stop - 1) / unit + 1;
    return true;
  }
  // Bits whose whole region lies in the range.
  bool covered(uint64_t size, uint64_t off, uint64_t len, uint64_t* first, uint64_t* end) const {
    if (len == 0 || off >= size) return false;
    uint64_t stop = len > size - off ? size : off + len;
    *first = bitmap_format::div_up(off, unit);
    *end = stop == size ? nbits : stop / unit;
    return *first < *end;
  }
  bool all_set(uint64_t first, uint64_t end, const std::vector<uint64_t>* also) const {
    bool all = true;
    bitmap_format::for_words(first, end, [&](uint64_t w, uint64_t m) {
      uint64_t v = words[w] & (also ? (*also)[w] : ~0ull);
      return all = (v & m) == m;
    });
    return all;
  }
  uint64_t next_set(uint64_t from) const {
    if (from >= nbits) return nbits;
    uint64_t w = from / 64;
    uint64_t v = words[w] & (~0ull << (from % 64));
    while (v == 0) {
      if (++w >= words.size()) return nbits;
      v = words[w];
    }
    return std::min(w * 64 + std::countr_zero(v), nbits);
  }
  uint64_t next_clear(uint64_t from, uint64_t limit) const {
    if (from >= limit) return limit;
    uint64_t w = from / 64;
    uint64_t v = ~words[w] & (~0ull << (from % 64));
    while (v == 0) {
      if (++w >= words.size() || w * 64 >= limit) return limit;
      v = ~words[w];
    }
    return std::min(w * 64 + std::countr_zero(v), limit);
  }
};

}  // namespace mirror
