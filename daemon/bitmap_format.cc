#include "bitmap_format.h"

#include <bit>
#include <cstring>

#include "crc32c.h"
#include "wire.h"

namespace mirror::bitmap_format {

namespace {

constexpr char kSuperMagic[8] = {'M', 'I', 'R', 'R', 'B', 'M', 'P', '1'};
constexpr uint32_t kMapMagic = 0x4D4D4150;  // "MMAP"

namespace sb {  // superblock field offsets
constexpr size_t kMagic = 0, kVersion = 8, kCrc = 12, kSequence = 16, kSlot = 24, kFlags = 28,
                 kInstance = 32, kVolumeSize = 40, kGranularity = 48, kAlExtent = 52, kGen = 56,
                 kCursor = 88, kAlOffset = 96, kAlBlocks = 104, kDmOffset = 112, kDmBlocks = 120,
                 kVolume = 128, kNode = 192, kPeer = 256;
}  // namespace sb
namespace mb {  // map block field offsets
constexpr size_t kMagic = 0, kKind = 4, kCrc = 8, kBlockNo = 16, kInstance = 24, kBits = 32;
}  // namespace mb

// CRC of a whole block with its 4-byte CRC field at `at` read as zero.
uint32_t block_crc(const uint8_t* blk, size_t at) {
  static constexpr uint8_t kZero[4] = {};
  uint32_t c = crc32c(blk, at);
  c = crc32c_extend(c, kZero, 4);
  return crc32c_extend(c, blk + at + 4, kBlock - at - 4);
}

}  // namespace

uint64_t div_up(uint64_t a, uint64_t b) {
  return a / b + (a % b != 0);
}

bool valid_unit(uint64_t v) {
  return v >= 4096 && v <= (1ull << 31) && std::has_single_bit(v);
}

Geometry geometry(uint64_t size, uint64_t granularity, uint64_t al_extent) {
  Geometry g{};
  g.al_bits = div_up(size, al_extent);
  g.al_blocks = div_up(g.al_bits, kBitsPerBlock);
  g.dm_bits = div_up(size, granularity);
  g.dm_blocks = div_up(g.dm_bits, kBitsPerBlock);
  return g;
}

const char* map_name(uint8_t kind) {
  return kind == kKindDirty ? "dirty" : "activity";
}

NameField NameField::of(const std::string& name) {
  NameField f;
  std::memcpy(f.raw, name.data(), name.size());
  return f;
}

std::string_view NameField::text() const {
  const auto* c = reinterpret_cast<const char*>(raw);
  return {c, strnlen(c, kNameLen)};
}

bool NameField::is(const std::string& name) const {
  return std::memcmp(raw, of(name).raw, kNameLen) == 0;
}

void encode_superblock(const Superblock& s, uint8_t* blk) {
  std::memset(blk, 0, kBlock);
  std::memcpy(blk + sb::kMagic, kSuperMagic, 8);
  wire::put_u32(blk + sb::kVersion, kVersion);
  wire::put_u64(blk + sb::kSequence, s.sequence);
  wire::put_u32(blk + sb::kSlot, uint32_t(s.sequence % 2));
  wire::put_u32(blk + sb::kFlags, s.flags);
  wire::put_u64(blk + sb::kInstance, s.instance);
  wire::put_u64(blk + sb::kVolumeSize, s.volume_size);
  wire::put_u32(blk + sb::kGranularity, s.granularity);
  wire::put_u32(blk + sb::kAlExtent, s.al_extent);
  wire::put_u64(blk + sb::kGen, s.gen.current);
  wire::put_u64(blk + sb::kGen + 8, s.gen.bitmap);
  wire::put_u64(blk + sb::kGen + 16, s.gen.history[0]);
  wire::put_u64(blk + sb::kGen + 24, s.gen.history[1]);
  wire::put_u64(blk + sb::kCursor, s.cursor);
  wire::put_u64(blk + sb::kAlOffset, s.al_offset);
  wire::put_u64(blk + sb::kAlBlocks, s.al_blocks);
  wire::put_u64(blk + sb::kDmOffset, s.dm_offset);
  wire::put_u64(blk + sb::kDmBlocks, s.dm_blocks);
  std::memcpy(blk + sb::kVolume, s.volume.raw, kNameLen);
  std::memcpy(blk + sb::kNode, s.node.raw, kNameLen);
  std::memcpy(blk + sb::kPeer, s.peer.raw, kNameLen);
  wire::put_u32(blk + sb::kCrc, block_crc(blk, sb::kCrc));
}

std::string decode_superblock(const uint8_t* blk, uint32_t slot, Superblock* out) {
  if (std::memcmp(blk + sb::kMagic, kSuperMagic, 8) != 0) return "wrong magic";
  if (uint32_t v = wire::get_u32(blk + sb::kVersion); v != kVersion)
    return "unsupported format version " + std::to_string(v);
  if (wire::get_u32(blk + sb::kCrc) != block_crc(blk, sb::kCrc))
    return "superblock checksum mismatch";
  uint32_t s = wire::get_u32(blk + sb::kSlot);
  if (s != slot || wire::get_u64(blk + sb::kSequence) % 2 != slot)
    return "superblock of slot " + std::to_string(s) + " (misdirected write)";

  out->sequence = wire::get_u64(blk + sb::kSequence);
  out->flags = wire::get_u32(blk + sb::kFlags);
  out->instance = wire::get_u64(blk + sb::kInstance);
  out->volume_size = wire::get_u64(blk + sb::kVolumeSize);
  out->granularity = wire::get_u32(blk + sb::kGranularity);
  out->al_extent = wire::get_u32(blk + sb::kAlExtent);
  out->gen.current = wire::get_u64(blk + sb::kGen);
  out->gen.bitmap = wire::get_u64(blk + sb::kGen + 8);
  out->gen.history[0] = wire::get_u64(blk + sb::kGen + 16);
  out->gen.history[1] = wire::get_u64(blk + sb::kGen + 24);
  out->cursor = wire::get_u64(blk + sb::kCursor);
  out->al_offset = wire::get_u64(blk + sb::kAlOffset);
  out->al_blocks = wire::get_u64(blk + sb::kAlBlocks);
  out->dm_offset = wire::get_u64(blk + sb::kDmOffset);
  out->dm_blocks = wire::get_u64(blk + sb::kDmBlocks);
  std::memcpy(out->volume.raw, blk + sb::kVolume, kNameLen);
  std::memcpy(out->node.raw, blk + sb::kNode, kNameLen);
  std::memcpy(out->peer.raw, blk + sb::kPeer, kNameLen);
  return "";
}

void encode_map_block(const MapBlockTag& tag, const uint64_t* words, uint8_t* blk) {
  std::memset(blk, 0, kMapHeader);
  wire::put_u32(blk + mb::kMagic, kMapMagic);
  blk[mb::kKind] = tag.kind;
  wire::put_u64(blk + mb::kBlockNo, tag.file_block);
  wire::put_u64(blk + mb::kInstance, tag.instance);
  uint8_t* p = blk + mb::kBits;
  for (uint64_t i = 0; i < kWordsPerBlock; ++i, p += 8) {
    for (int b = 0; b < 8; ++b) p[b] = uint8_t(words[i] >> (8 * b));  // LSB-first bytes
  }
  wire::put_u32(blk + mb::kCrc, block_crc(blk, mb::kCrc));
}

std::string decode_map_block(const uint8_t* blk, const MapBlockTag& want, uint64_t valid_bits,
                             uint64_t* words) {
  if (wire::get_u32(blk + mb::kCrc) != block_crc(blk, mb::kCrc)) return "checksum mismatch";
  if (wire::get_u32(blk + mb::kMagic) != kMapMagic) return "wrong magic";
  if (blk[mb::kKind] != want.kind)
    return "map kind " + std::to_string(blk[mb::kKind]) + " in a " + map_name(want.kind) + " block";
  if (uint64_t n = wire::get_u64(blk + mb::kBlockNo); n != want.file_block)
    return "holds block number " + std::to_string(n) + " (misdirected write)";
  if (wire::get_u64(blk + mb::kInstance) != want.instance)
    return "instance id of another metadata file";
  const uint8_t* p = blk + mb::kBits;
  for (uint64_t i = 0; i < kWordsPerBlock; ++i, p += 8) {
    uint64_t w = 0;
    for (int b = 7; b >= 0; --b) w = w << 8 | p[b];  // bit order: LSB-first bytes
    words[i] = w;
  }
  if (valid_bits >= kBitsPerBlock) return "";
  bool stray = false;  // bits past the end of the map must be zero
  for_words(valid_bits, kBitsPerBlock,
            [&](uint64_t w, uint64_t m) { return !(stray = (words[w] & m) != 0); });
  return stray ? "bits set past the end of the map" : "";
}

}  // namespace mirror::bitmap_format
