#include "bitmap.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "file_lock.h"
#include "log.h"

namespace mirror {

namespace {

using bitmap_format::div_up;
using bitmap_format::for_words;
using bitmap_format::Geometry;
using bitmap_format::geometry;
using bitmap_format::kBitsPerBlock;
using bitmap_format::kBlock;
using bitmap_format::kKindActivity;
using bitmap_format::kKindDirty;
using bitmap_format::kMaxMapBytes;
using bitmap_format::kNameLen;
using bitmap_format::kWordsPerBlock;
using bitmap_format::map_name;
using bitmap_format::valid_unit;

constexpr uint64_t kIoChunkBlocks = 256;  // 1 MiB per read or write

// Names and other recorded bytes may be garbage: quote them printable.
std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      out += char(c);
    } else {
      char hex[8];
      snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out + "\"";
}

Status pread_full(int fd, uint8_t* buf, size_t n, uint64_t off, const std::string& path) {
  while (n > 0) {
    ssize_t r = ::pread(fd, buf, n, off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno_error("read metadata " + path);
    if (r == 0) return Error{EIO, "read metadata " + path + ": unexpected end of file"};
    buf += r, n -= r, off += r;
  }
  return {};
}

Status pwrite_full(int fd, const uint8_t* buf, size_t n, uint64_t off, const std::string& path) {
  while (n > 0) {
    ssize_t r = ::pwrite(fd, buf, n, off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno_error("write metadata " + path);
    if (r == 0) return Error{EIO, "write metadata " + path + ": no progress"};
    buf += r, n -= r, off += r;
  }
  return {};
}

uint64_t random_instance() {
  uint64_t v = 0;
  if (::getrandom(&v, sizeof v, 0) != sizeof v) {
    v = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()) ^
        (uint64_t(::getpid()) << 32);
  }
  return v ? v : 1;
}

void fill_ones(std::vector<uint64_t>& words, uint64_t first, uint64_t end) {
  if (first < end)
    for_words(first, end, [&](uint64_t w, uint64_t m) { return words[w] |= m, true; });
}

// One map's shape, for reading it from the file.
struct MapShape {
  uint8_t kind;
  uint64_t unit;  // bytes per bit
  uint64_t nbits;
  uint64_t offset, blocks;
};

// Reads a whole map. A block that does not verify gets all its bits set and
// a warning; its index is appended to `bad`.
Status read_map(int fd, const std::string& path, const MapShape& s, uint64_t volume_size,
                uint64_t instance, std::vector<uint64_t>& words, BitmapOpenReport& r,
                std::vector<uint64_t>* bad) {
  words.assign(s.blocks * kWordsPerBlock, 0);
  Buffer buf(std::min(s.blocks, kIoChunkBlocks) * kBlock);
  for (uint64_t i0 = 0; i0 < s.blocks; i0 += kIoChunkBlocks) {
    uint64_t n = std::min(kIoChunkBlocks, s.blocks - i0);
    if (Status st = pread_full(fd, buf.data(), n * kBlock, (s.offset + i0) * kBlock, path); !st)
      return st;
    for (uint64_t i = i0; i < i0 + n; ++i) {
      const uint8_t* blk = buf.data() + (i - i0) * kBlock;
      uint64_t first = i * kBitsPerBlock, end = std::min(first + kBitsPerBlock, s.nbits);
      std::string defect = bitmap_format::decode_map_block(blk, {s.kind, s.offset + i, instance},
                                                           end - first, &words[i * kWordsPerBlock]);
      if (defect.empty()) continue;
      std::fill_n(&words[i * kWordsPerBlock], kWordsPerBlock, 0);
      fill_ones(words, first, end);
      bad->push_back(i);
      r.warnings.push_back("metadata " + path + ": " + map_name(s.kind) + " map block " +
                           std::to_string(i) + " (file block " + std::to_string(s.offset + i) +
                           "): " + defect + ": bytes [" + std::to_string(first * s.unit) + ", " +
                           std::to_string(std::min(end * s.unit, volume_size)) + ") marked " +
                           (s.kind == kKindDirty ? "dirty" : "active"));
    }
  }
  return {};
}

}  // namespace

struct Bitmap::Map {
  uint8_t kind = 0;
  uint64_t unit = 0;  // bytes per bit
  uint64_t nbits = 0;
  uint64_t offset = 0, blocks = 0;  // in the file
  uint32_t change_base = 0;         // index of block 0 in changed_
  uint64_t count = 0;               // set bits
  std::vector<uint64_t> words;      // blocks * kWordsPerBlock; bits past nbits stay 0

  MapShape shape() const { return {kind, unit, nbits, offset, blocks}; }
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
    *first = div_up(off, unit);
    *end = stop == size ? nbits : stop / unit;
    return *first < *end;
  }
  bool all_set(uint64_t first, uint64_t end, const std::vector<uint64_t>* also) const {
    bool all = true;
    for_words(first, end, [&](uint64_t w, uint64_t m) {
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

// A contiguous run of staged blocks written with one request.
struct Bitmap::Run {
  uint64_t file_block;
  uint64_t staged;  // index of the first block in staging_
  uint64_t blocks;
};

struct Bitmap::WriteOp final : Completion {
  Bitmap* bm = nullptr;
  uint64_t off = 0;
  const uint8_t* buf = nullptr;
  size_t left = 0;
  uint64_t power_loss_record = 0;
  void on_complete(int res, uint32_t) override { bm->on_write(this, res); }
};

enum class Bitmap::LoadOutcome : int { kOk, kRewrite, kFullResync };

Bitmap::Bitmap(Loop& loop, UniqueFd fd, std::string path, const MetaIdentity& id)
    : loop_(loop), fd_(std::move(fd)), path_(std::move(path)), id_(id) {
  Geometry g = geometry(id.volume_size, id.granularity, id.al_extent);
  al_ = std::make_unique<Map>();
  dm_ = std::make_unique<Map>();
  *al_ = Map{kKindActivity, id.al_extent, g.al_bits, g.al_offset(), g.al_blocks, 0};
  *dm_ =
      Map{kKindDirty, id.granularity, g.dm_bits, g.dm_offset(), g.dm_blocks, uint32_t(g.al_blocks)};
  al_->words.assign(g.al_blocks * kWordsPerBlock, 0);
  dm_->words.assign(g.dm_blocks * kWordsPerBlock, 0);
  al_durable_.assign(al_->words.size(), 0);
  changed_.assign(g.al_blocks + g.dm_blocks, 0);
  block_commit_.assign(g.al_blocks + g.dm_blocks, 0);
}

Bitmap::~Bitmap() {
  if (running_) MLOG_ERROR("metadata %s: destroyed while a commit is running", path_.c_str());
}

Result<std::unique_ptr<Bitmap>> Bitmap::open(Loop& loop, const std::string& path,
                                             const MetaIdentity& id, BitmapOpenReport* report) {
  auto bad_id = [&](const std::string& what) {
    return Error{EINVAL, "metadata " + path + ": " + what};
  };
  for (const std::string* n : {&id.volume, &id.node, &id.peer}) {
    if (n->size() > kNameLen || n->find('\0') != std::string::npos)
      return bad_id("name " + quoted(*n) + " is longer than 64 bytes or contains NUL");
  }
  if (id.volume_size == 0 || id.volume_size > uint64_t(INT64_MAX))
    return bad_id("invalid volume size " + std::to_string(id.volume_size));
  if (!valid_unit(id.granularity) || !valid_unit(id.al_extent))
    return bad_id("granularity and al_extent must be powers of two from 4096 to 2^31");
  Geometry g = geometry(id.volume_size, id.granularity, id.al_extent);
  if ((g.al_blocks + g.dm_blocks) * kBlock > kMaxMapBytes)
    return bad_id("granularity " + std::to_string(id.granularity) +
                  " is too fine for the volume size (maps over 4 GiB)");

  BitmapOpenReport local;
  BitmapOpenReport& r = report ? *report : local;
  r = BitmapOpenReport{};

  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid() && errno == ENOENT) {
    fd.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    r.created = fd.valid();
  }
  if (!fd.valid()) return errno_error("open metadata " + path);
  auto lock = FileLock::acquire(path, fd.get(), LOCK_EX, "metadata");
  if (!lock.ok()) return lock.error();
  struct stat st {};
  if (::fstat(fd.get(), &st) < 0) return errno_error("stat " + path);
  uint64_t file_size = 0;
  if (S_ISREG(st.st_mode)) {
    file_size = st.st_size;
  } else if (S_ISBLK(st.st_mode)) {
    if (::ioctl(fd.get(), BLKGETSIZE64, &file_size) < 0) return errno_error("BLKGETSIZE64 " + path);
  } else {
    return Error{EINVAL, "metadata " + path + " is neither a regular file nor a block device"};
  }

  std::unique_ptr<Bitmap> bm(new Bitmap(loop, std::move(fd), path, id));
  bm->lock_ = std::move(lock).value();
  uint64_t max_sequence = 0;
  LoadOutcome outcome = LoadOutcome::kFullResync;
  if (r.created) {
    r.reason = "metadata " + path + ": new metadata file: full resync";
  } else {
    auto loaded = bm->load(file_size, r, &max_sequence);
    if (!loaded) return loaded.error();
    outcome = *loaded;
  }
  if (outcome == LoadOutcome::kFullResync) {
    r.full_resync = true;
    bm->reset_fresh();
  }
  if (outcome != LoadOutcome::kOk) {
    if (Status st = bm->rewrite_all(max_sequence + 1, r.created); !st) return st.error();
  }
  return bm;
}

Result<Bitmap::LoadOutcome> Bitmap::load(uint64_t file_size, BitmapOpenReport& r,
                                         uint64_t* max_sequence) {
  const std::string pre = "metadata " + path_ + ": ";
  auto full = [&](const std::string& why) {
    r.reason = pre + why + ": full resync";
    return LoadOutcome::kFullResync;
  };
  if (file_size < 2 * kBlock) {
    return full("file truncated to " + std::to_string(file_size) +
                " bytes, shorter than its two superblocks");
  }
  Buffer sbuf(2 * kBlock);
  if (Status st = pread_full(fd_.get(), sbuf.data(), 2 * kBlock, 0, path_); !st) return st.error();
  bitmap_format::Superblock slot[2];
  std::string defect[2];
  int best = -1;
  for (int i = 0; i < 2; ++i) {
    defect[i] = bitmap_format::decode_superblock(sbuf.data() + i * kBlock, i, &slot[i]);
    if (!defect[i].empty()) continue;
    *max_sequence = std::max(*max_sequence, slot[i].sequence);
    if (best < 0 || slot[i].sequence > slot[best].sequence) best = i;
  }
  if (best < 0) {
    return full(defect[0] == defect[1]
                    ? defect[0] + " in both slots"
                    : "superblock slot 0: " + defect[0] + "; slot 1: " + defect[1]);
  }
  const bitmap_format::Superblock& b = slot[best];
  const uint64_t seq = b.sequence;
  if (!defect[1 - best].empty()) {
    r.warnings.push_back(pre + "superblock slot " + std::to_string(1 - best) + ": " +
                         defect[1 - best] + "; using slot " + std::to_string(best) + " (sequence " +
                         std::to_string(seq) + ")");
    header_changed_ = true;  // the next commit writes the bad slot (sequence + 1)
  }

  // Identity: any difference makes the maps meaningless here.
  auto foreign = [&](const char* field, const std::string& got, const std::string& want) {
    return full(std::string("foreign metadata: ") + field + " is " + got + ", expected " + want);
  };
  if (!b.volume.is(id_.volume))
    return foreign("volume name", quoted(b.volume.text()), quoted(id_.volume));
  const uint64_t size = b.volume_size;
  if (size != id_.volume_size)
    return foreign("volume size", std::to_string(size), std::to_string(id_.volume_size));
  if (!b.node.is(id_.node)) return foreign("node name", quoted(b.node.text()), quoted(id_.node));
  if (!b.peer.is(id_.peer)) return foreign("peer name", quoted(b.peer.text()), quoted(id_.peer));
  const uint32_t gran = b.granularity;
  if (gran != id_.granularity)
    return foreign("granularity", std::to_string(gran), std::to_string(id_.granularity));

  // Geometry and layout (a verified checksum over impossible contents).
  const uint32_t al_extent = b.al_extent;
  if (!valid_unit(al_extent)) return full("invalid al_extent " + std::to_string(al_extent));
  Geometry g = geometry(size, gran, al_extent);
  if (b.al_offset != g.al_offset() || b.al_blocks != g.al_blocks || b.dm_offset != g.dm_offset() ||
      b.dm_blocks != g.dm_blocks) {
    return full("map layout does not match the volume geometry");
  }
  if (file_size < g.total_blocks() * kBlock) {
    return full("file truncated to " + std::to_string(file_size) + " bytes, layout needs " +
                std::to_string(g.total_blocks() * kBlock));
  }

  instance_ = b.instance;
  flags_ = b.flags;
  gen_ = b.gen;
  cursor_ = b.cursor;
  sequence_ = seq;

  std::vector<uint64_t> bad;
  MapShape dshape = dm_->shape();
  dshape.offset = g.dm_offset();
  if (Status st = read_map(fd_.get(), path_, dshape, size, instance_, dm_->words, r, &bad); !st)
    return st.error();
  dm_->recount();
  for (uint64_t i : bad) mark_changed(*dm_, i * kWordsPerBlock);
  bad.clear();

  if (al_extent == id_.al_extent) {
    if (Status st = read_map(fd_.get(), path_, al_->shape(), size, instance_, al_->words, r, &bad);
        !st)
      return st.error();
    al_->recount();
    for (uint64_t i : bad) mark_changed(*al_, i * kWordsPerBlock);
    al_durable_ = al_->words;
    return LoadOutcome::kOk;
  }

  // al_extent changed: recover the old activity map into the dirty map, then
  // the file is rewritten in the new layout.
  MapShape old{kKindActivity, al_extent, g.al_bits, g.al_offset(), g.al_blocks};
  Map old_al;
  old_al.nbits = g.al_bits;
  if (Status st = read_map(fd_.get(), path_, old, size, instance_, old_al.words, r, &bad); !st)
    return st.error();
  uint64_t before = dirty_bytes();
  for (uint64_t e = old_al.next_set(0); e < old_al.nbits; e = old_al.next_set(e + 1))
    set_dirty(e * al_extent, al_extent);
  r.warnings.push_back(pre + "al_extent changed from " + std::to_string(al_extent) + " to " +
                       std::to_string(id_.al_extent) + ": " +
                       std::to_string(dirty_bytes() - before) +
                       " bytes of active extents marked dirty; file rewritten");
  return LoadOutcome::kRewrite;
}

void Bitmap::reset_fresh() {
  gen_ = Generation{};
  flags_ = kFlagFullSyncNeeded;
  cursor_ = 0;
  std::fill(al_->words.begin(), al_->words.end(), 0);
  al_->count = 0;
  std::fill(dm_->words.begin(), dm_->words.end(), 0);
  fill_ones(dm_->words, 0, dm_->nbits);
  dm_->count = dm_->nbits;
}

Status Bitmap::rewrite_all(uint64_t min_sequence, bool created) {
  const int fd = fd_.get();
  const uint64_t need = (2 + al_->blocks + dm_->blocks) * kBlock;
  struct stat st {};
  if (::fstat(fd, &st) < 0) return errno_error("stat " + path_);
  if (S_ISREG(st.st_mode)) {
    if (uint64_t(st.st_size) != need && ::ftruncate(fd, need) < 0)
      return errno_error("resize metadata " + path_);
  } else {
    uint64_t dev_size = 0;
    if (::ioctl(fd, BLKGETSIZE64, &dev_size) < 0) return errno_error("BLKGETSIZE64 " + path_);
    if (dev_size < need)
      return Error{ENOSPC, "metadata device " + path_ + " is smaller than the " +
                               std::to_string(need) + " bytes its maps need"};
  }
  // Maps first, durable before any superblock names the new instance id.
  instance_ = random_instance();
  Buffer buf(kIoChunkBlocks * kBlock);
  for (const Map* m : {al_.get(), dm_.get()}) {
    for (uint64_t i0 = 0; i0 < m->blocks; i0 += kIoChunkBlocks) {
      uint64_t n = std::min(kIoChunkBlocks, m->blocks - i0);
      for (uint64_t i = 0; i < n; ++i) encode_map_block(*m, i0 + i, buf.data() + i * kBlock);
      if (Status s = pwrite_full(fd, buf.data(), n * kBlock, (m->offset + i0) * kBlock, path_); !s)
        return s;
    }
  }
  if (::fsync(fd) < 0) return errno_error("fsync metadata " + path_);
  // Both slots, with sequences above every one in the old file.
  for (uint64_t seq = min_sequence; seq < min_sequence + 2; ++seq)
    encode_superblock(buf.data() + (seq % 2) * kBlock, seq);
  sequence_ = min_sequence + 1;
  if (Status s = pwrite_full(fd, buf.data(), 2 * kBlock, 0, path_); !s) return s;
  if (::fsync(fd) < 0) return errno_error("fsync metadata " + path_);
  if (created) {
    size_t slash = path_.rfind('/');
    std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path_.substr(0, slash);
    UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dfd.valid() || ::fsync(dfd.get()) < 0) return errno_error("fsync directory " + dir);
  }
  for (uint32_t i : changed_list_) changed_[i] = 0;
  changed_list_.clear();
  header_changed_ = false;
  al_durable_ = al_->words;
  stats_.blocks_written += al_->blocks + dm_->blocks;
  stats_.superblocks_written += 2;
  return {};
}

void Bitmap::encode_superblock(uint8_t* blk, uint64_t sequence) const {
  bitmap_format::Superblock s;
  s.sequence = sequence;
  s.flags = flags_;
  s.instance = instance_;
  s.volume_size = id_.volume_size;
  s.granularity = id_.granularity;
  s.al_extent = id_.al_extent;
  s.gen = gen_;
  s.cursor = cursor_;
  s.al_offset = al_->offset;
  s.al_blocks = al_->blocks;
  s.dm_offset = dm_->offset;
  s.dm_blocks = dm_->blocks;
  s.volume = bitmap_format::NameField::of(id_.volume);
  s.node = bitmap_format::NameField::of(id_.node);
  s.peer = bitmap_format::NameField::of(id_.peer);
  bitmap_format::encode_superblock(s, blk);
}

void Bitmap::encode_map_block(const Map& m, uint64_t index, uint8_t* blk) const {
  bitmap_format::encode_map_block({m.kind, m.offset + index, instance_},
                                  &m.words[index * kWordsPerBlock], blk);
}

// ---- bit operations ----

void Bitmap::mark_changed(const Map& m, uint64_t word) {
  uint32_t b = m.change_base + uint32_t(word / kWordsPerBlock);
  if (changed_[b]) return;
  changed_[b] = 1;
  changed_list_.push_back(b);
}

void Bitmap::set_bits(Map& m, uint64_t first, uint64_t end) {
  for_words(first, end, [&](uint64_t w, uint64_t mask) {
    if (uint64_t add = mask & ~m.words[w]) {
      m.words[w] |= add;
      m.count += std::popcount(add);
      mark_changed(m, w);
    }
    return true;
  });
}

void Bitmap::clear_bits(Map& m, uint64_t first, uint64_t end) {
  for_words(first, end, [&](uint64_t w, uint64_t mask) {
    if (uint64_t del = mask & m.words[w]) {
      m.words[w] &= ~del;
      m.count -= std::popcount(del);
      mark_changed(m, w);
    }
    return true;
  });
}

void Bitmap::set_dirty(uint64_t off, uint64_t len) {
  uint64_t first, end;
  if (dm_->touched(id_.volume_size, off, len, &first, &end)) set_bits(*dm_, first, end);
}

void Bitmap::clear_dirty(uint64_t off, uint64_t len) {
  uint64_t first, end;
  if (dm_->covered(id_.volume_size, off, len, &first, &end)) clear_bits(*dm_, first, end);
}

void Bitmap::set_all_dirty() {
  set_bits(*dm_, 0, dm_->nbits);
}
void Bitmap::clear_all_dirty() {
  clear_bits(*dm_, 0, dm_->nbits);
}

bool Bitmap::any_dirty(uint64_t off, uint64_t len) const {
  uint64_t first, end;
  if (!dm_->touched(id_.volume_size, off, len, &first, &end)) return false;
  return dm_->next_set(first) < end;
}

uint64_t Bitmap::dirty_bytes() const {
  uint64_t bytes = dm_->count * dm_->unit;
  // The last region is short when the size is not a multiple of granularity.
  if (dm_->count && dm_->next_set(dm_->nbits - 1) == dm_->nbits - 1)
    bytes -= dm_->nbits * dm_->unit - id_.volume_size;
  return bytes;
}

bool Bitmap::next_dirty(uint64_t from, uint64_t max_len, uint64_t* off, uint64_t* len) const {
  if (from >= id_.volume_size) return false;
  uint64_t start = dm_->next_set(from / dm_->unit);
  if (start >= dm_->nbits) return false;
  uint64_t max_bits = std::max<uint64_t>(1, max_len / dm_->unit);
  uint64_t limit = max_bits >= dm_->nbits - start ? dm_->nbits : start + max_bits;
  uint64_t end = dm_->next_clear(start, limit);
  *off = start * dm_->unit;
  *len = std::min(end * dm_->unit, id_.volume_size) - *off;
  return true;
}

void Bitmap::set_active(uint64_t off, uint64_t len) {
  uint64_t first, end;
  if (al_->touched(id_.volume_size, off, len, &first, &end)) set_bits(*al_, first, end);
}

void Bitmap::clear_active(uint64_t off, uint64_t len) {
  uint64_t first, end;
  if (al_->covered(id_.volume_size, off, len, &first, &end)) clear_bits(*al_, first, end);
}

bool Bitmap::is_active(uint64_t off, uint64_t len) const {
  uint64_t first, end;
  return al_->touched(id_.volume_size, off, len, &first, &end) && al_->all_set(first, end, nullptr);
}

bool Bitmap::is_active_durable(uint64_t off, uint64_t len) const {
  uint64_t first, end;
  return al_->touched(id_.volume_size, off, len, &first, &end) &&
         al_->all_set(first, end, &al_durable_);
}

uint64_t Bitmap::dirty_durable_after(uint64_t off, uint64_t len) const {
  uint64_t first, end, n = 0;
  if (!dm_->touched(id_.volume_size, off, len, &first, &end)) return 0;
  const uint64_t bits_per_block = kWordsPerBlock * 64;
  for (uint64_t i = first / bits_per_block; i <= (end - 1) / bits_per_block; ++i) {
    uint32_t b = dm_->change_base + uint32_t(i);
    // A changed block goes into the next commit to start; an encoded one is
    // on disk once the commit that encoded it completes.
    n = std::max(n, changed_[b] ? stats_.commits_started + 1 : block_commit_[b]);
  }
  return n;
}

uint64_t Bitmap::active_to_dirty() {
  uint64_t before = dirty_bytes();
  for (uint64_t e = al_->next_set(0); e < al_->nbits; e = al_->next_set(e + 1))
    set_dirty(e * al_->unit, al_->unit);
  return dirty_bytes() - before;
}

void Bitmap::set_generation(const Generation& g) {
  if (g == gen_) return;
  gen_ = g;
  header_changed_ = true;
}

void Bitmap::set_flags(uint32_t f) {
  if (f == flags_) return;
  flags_ = f;
  header_changed_ = true;
}

void Bitmap::set_resync_cursor(uint64_t c) {
  if (c == cursor_) return;
  cursor_ = c;
  header_changed_ = true;
}

// ---- commits ----

// Snapshots every change into staging_ and runs_, and narrows the durable
// activity view to what the disk may hold once these writes start.
void Bitmap::encode_changes() {
  std::sort(changed_list_.begin(), changed_list_.end());
  staging_.reserve((changed_list_.size() + 1) * kBlock);
  runs_.clear();
  al_snapshot_.clear();
  al_snapshot_blocks_.clear();
  uint64_t staged = 0;
  auto add = [&](uint64_t file_block) {
    Run* last = runs_.empty() ? nullptr : &runs_.back();
    if (last && last->file_block + last->blocks == file_block && last->blocks < kIoChunkBlocks) {
      ++last->blocks;
    } else {
      runs_.push_back({file_block, staged, 1});
    }
    ++staged;
  };
  if (header_changed_) {
    ++sequence_;
    encode_superblock(staging_.data(), sequence_);
    add(sequence_ % 2);
    header_changed_ = false;
    ++stats_.superblocks_written;
  }
  for (uint32_t idx : changed_list_) {
    changed_[idx] = 0;
    block_commit_[idx] = stats_.commits_started;
    bool activity = idx < dm_->change_base;
    const Map& m = activity ? *al_ : *dm_;
    uint64_t i = idx - m.change_base;
    encode_map_block(m, i, staging_.data() + staged * kBlock);
    add(m.offset + i);
    if (activity) {
      const uint64_t* w = &al_->words[i * kWordsPerBlock];
      uint64_t* d = &al_durable_[i * kWordsPerBlock];
      for (uint64_t k = 0; k < kWordsPerBlock; ++k) d[k] &= w[k];
      al_snapshot_.insert(al_snapshot_.end(), w, w + kWordsPerBlock);
      al_snapshot_blocks_.push_back(uint32_t(i));
    }
  }
  stats_.blocks_written += changed_list_.size();
  changed_list_.clear();
}

void Bitmap::apply_durable_snapshot() {
  for (size_t k = 0; k < al_snapshot_blocks_.size(); ++k) {
    std::copy_n(&al_snapshot_[k * kWordsPerBlock], kWordsPerBlock,
                &al_durable_[al_snapshot_blocks_[k] * kWordsPerBlock]);
  }
  al_snapshot_.clear();
  al_snapshot_blocks_.clear();
}

void Bitmap::commit(IoDone* waiter) {
  if (sticky_error_) {
    if (waiter) loop_.defer([waiter, err = -sticky_error_] { waiter->io_done(err); });
    return;
  }
  if (running_) {
    if (waiter) {
      waiting_.push_back(waiter);
    } else {
      background_ = true;
    }
    return;
  }
  if (!has_changes()) {
    // Everything is already durable: the last commit completed.
    if (waiter) loop_.defer([waiter] { waiter->io_done(0); });
    return;
  }
  if (waiter) waiting_.push_back(waiter);
  start_commit();
}

void Bitmap::start_commit() {
  running_ = true;
  background_ = false;
  commit_error_ = 0;
  ++stats_.commits_started;
  current_.swap(waiting_);
  encode_changes();
  if (fail_commits_after_ && stats_.commits_started > fail_commits_after_) {
    // Injected fault (MIRRORD_FAULTS=meta-eio-after): the disk refuses.
    loop_.defer([this] { finish_commit(-EIO); });
    return;
  }
  while (ops_.size() < runs_.size()) {
    ops_.push_back(std::make_unique<WriteOp>());
    ops_.back()->bm = this;
  }
  pending_writes_ = runs_.size();
  for (size_t i = 0; i < runs_.size(); ++i) {
    WriteOp* op = ops_[i].get();
    op->off = runs_[i].file_block * kBlock;
    op->buf = staging_.data() + runs_[i].staged * kBlock;
    op->left = runs_[i].blocks * kBlock;
    if (power_loss_) op->power_loss_record = power_loss_->before_write(fd_.get(), op->off, op->left);
    submit_write(op);
  }
}

void Bitmap::submit_write(WriteOp* op) {
  io_uring_prep_write(loop_.sqe(op), fd_.get(), op->buf, unsigned(op->left), op->off);
}

void Bitmap::on_write(WriteOp* op, int res) {
  if (res == -EAGAIN || res == -EINTR) return submit_write(op);
  if (res > 0 && size_t(res) < op->left) {  // short write: the rest again
    op->buf += res;
    op->off += res;
    op->left -= res;
    return submit_write(op);
  }
  if (res <= 0 && !commit_error_) commit_error_ = res < 0 ? -res : EIO;
  if (power_loss_) power_loss_->write_done(op->power_loss_record);
  if (--pending_writes_ > 0) return;
  if (commit_error_) return finish_commit(-commit_error_);
  if (power_loss_) power_loss_sync_ = power_loss_->sync_started(fd_.get());
  io_uring_prep_fsync(loop_.sqe(&sync_completion_), fd_.get(), IORING_FSYNC_DATASYNC);
}

void Bitmap::on_sync(int res, uint32_t) {
  if (power_loss_) power_loss_->sync_done(power_loss_sync_, res >= 0);
  if (delay_timer_) {
    delayed_result_ = res < 0 ? res : 0;
    return delay_timer_->arm(commit_delay_ms_);
  }
  finish_commit(res < 0 ? res : 0);
}

void Bitmap::set_commit_delay_ms(uint64_t ms) {
  commit_delay_ms_ = ms;
  if (ms == 0) {
    delay_timer_.reset();
  } else if (!delay_timer_) {
    delay_timer_ = std::make_unique<Timer>(loop_, [this] { finish_commit(delayed_result_); });
  }
}

void Bitmap::set_sticky(int err, const char* what) {
  if (sticky_error_) return;
  sticky_error_ = err;
  MLOG_ERROR("metadata %s: %s failed: %s; every later commit fails", path_.c_str(), what,
             strerror(err));
}

void Bitmap::finish_commit(int err) {
  if (err < 0) {
    set_sticky(-err, "write or fdatasync");
  } else {
    apply_durable_snapshot();
    ++stats_.commits_completed;
  }
  running_ = false;
  std::vector<IoDone*> done;
  done.swap(current_);
  // Later waiters get their own commit, unless nothing changed since this
  // one's snapshot (then this commit covered them) or it failed.
  if (!sticky_error_ && (!waiting_.empty() || background_) && has_changes()) {
    start_commit();
  } else {
    done.insert(done.end(), waiting_.begin(), waiting_.end());
    waiting_.clear();
    background_ = false;
  }
  int res = sticky_error_ ? -sticky_error_ : 0;
  for (IoDone* d : done) d->io_done(res);
}

Status Bitmap::flush_sync() {
  if (sticky_error_)
    return Error{sticky_error_, "metadata " + path_ + ": an earlier metadata write failed"};
  if (running_) return Error{EBUSY, "metadata " + path_ + ": a commit is running"};
  encode_changes();
  for (const Run& run : runs_) {
    Status st = pwrite_full(fd_.get(), staging_.data() + run.staged * kBlock, run.blocks * kBlock,
                            run.file_block * kBlock, path_);
    if (!st) {
      set_sticky(st.error().code, "write");
      return st;
    }
  }
  if (::fdatasync(fd_.get()) < 0) {
    Error e = errno_error("fdatasync metadata " + path_);
    set_sticky(e.code, "fdatasync");
    return e;
  }
  // Synchronous, so no simulated crash falls between the writes and the
  // sync; but earlier completed commits' records are covered too.
  if (power_loss_) power_loss_->sync_done(power_loss_->sync_started(fd_.get()), true);
  apply_durable_snapshot();
  return {};
}

// ----------------------------------------------------- changed_extents --

void changed_extents(const Bitmap& map, uint64_t offset, uint32_t length, uint32_t max_extents,
                     std::vector<nbd::Extent>* out) {
  const uint64_t end = std::min(offset + length, map.volume_size());
  auto push = [&](uint64_t len, uint32_t flags) {
    if (!out->empty() && out->back().flags == flags) {
      out->back().length += uint32_t(len);
    } else {
      out->push_back({uint32_t(len), flags});
    }
  };
  size_t first = out->size();
  uint64_t pos = offset;
  while (pos < end) {
    uint64_t doff = 0, dlen = 0;
    bool any = map.next_dirty(pos, end - pos, &doff, &dlen);
    uint64_t clean_end = any ? std::max(doff, pos) : end;
    clean_end = std::min(clean_end, end);
    if (clean_end > pos) {
      push(clean_end - pos, 0);
      pos = clean_end;
    }
    if (!any || pos >= end) break;
    // next_dirty's run starts at a region boundary at or before `pos`.
    uint64_t dirty_end = std::min(doff + dlen, end);
    if (dirty_end > pos) {
      push(dirty_end - pos, 1);
      pos = dirty_end;
    }
    if (out->size() - first >= max_extents) break;
  }
  if (out->size() - first > max_extents) out->resize(first + max_extents);
}

}  // namespace mirror
