// Bitmap::open: the metadata file from disk into memory (docs/bitmap-format.md,
// "Loading"): identity checks, the newer valid superblock, both maps with
// every bad block marked, recovery of an old activity map, and the rewrite of
// a file that is new, unusable or in an old layout.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "bitmap.h"
#include "bitmap_internal.h"
#include "file_backend.h"  // store_bytes
#include "file_lock.h"

namespace mirror {

namespace {

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
using bitmap_internal::kIoChunkBlocks;
using bitmap_internal::MapShape;
using bitmap_internal::pwrite_full;

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

// What open() requires of an identity, and grow() of the grown one: EINVAL
// naming the file and the rule.
Status check_identity(const std::string& path, const MetaIdentity& id) {
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
  return {};
}

}  // namespace

namespace bitmap_internal {

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

}  // namespace bitmap_internal

enum class Bitmap::LoadOutcome : int { kOk, kRewrite, kFullResync };

Result<std::unique_ptr<Bitmap>> Bitmap::open(Loop& loop, const std::string& path,
                                             const MetaIdentity& id, BitmapOpenReport* report) {
  if (Status st = check_identity(path, id); !st) return st.error();

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
  auto bytes = store_bytes(fd.get(), "metadata", path);
  if (!bytes) return bytes.error();
  const uint64_t file_size = *bytes;

  std::unique_ptr<Bitmap> bm(new Bitmap(loop, std::move(fd), path, id));
  bm->lock_ = std::move(lock).value();
  uint64_t max_sequence = 0;
  LoadOutcome outcome = LoadOutcome::kFullResync;
  uint32_t kept_flags = 0;  // what a reset keeps of a readable superblock
  if (r.created) {
    r.reason = "metadata " + path + ": new metadata file: full resync";
  } else {
    auto loaded = bm->load(file_size, r, &max_sequence, &kept_flags);
    if (!loaded) return loaded.error();
    outcome = *loaded;
  }
  if (outcome == LoadOutcome::kFullResync) {
    r.full_resync = true;
    bm->reset_fresh(kept_flags);
  }
  if (outcome != LoadOutcome::kOk) {
    if (Status st = bm->rewrite_all(max_sequence + 1, r.created); !st) return st.error();
  }
  return bm;
}

Result<Bitmap::LoadOutcome> Bitmap::load(uint64_t file_size, BitmapOpenReport& r,
                                         uint64_t* max_sequence, uint32_t* kept_flags) {
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

  r.recorded_primary = (b.flags & kFlagPrimary) != 0;
  *kept_flags = b.flags & kFlagsKeptOnReset;

  // Identity: any difference makes the maps meaningless here.
  auto foreign = [&](const char* field, const std::string& got, const std::string& want) {
    return full(std::string("foreign metadata: ") + field + " is " + got + ", expected " + want);
  };
  if (!b.volume.is(id_.volume))
    return foreign("volume name", quoted(b.volume.text()), quoted(id_.volume));
  // A larger configured size is a grown volume (below); a smaller one would
  // leave bits of the cut-off bytes nowhere.
  const uint64_t size = b.volume_size;
  if (size > id_.volume_size) {
    return foreign("volume size", std::to_string(size),
                   std::to_string(id_.volume_size) + " (shrinking is not supported)");
  }
  if (size == 0 || size > uint64_t(INT64_MAX))
    return full("invalid volume size " + std::to_string(size));
  // Not a reset: almost always a daemon started with the wrong --node (or on
  // the wrong host), whose reset would cost its own node a full resync, or,
  // split, its image.
  if (!b.node.is(id_.node)) {
    return Error{EINVAL, pre + "it belongs to node " + quoted(b.node.text()) +
                             ", but this daemon runs as node " + quoted(id_.node) +
                             " (--node or the host name): nothing was changed. A wrong --node? "
                             "If the node was renamed in the volume file, move this file away "
                             "(the node then needs --discard-my-data once: a full copy from its "
                             "peer)"};
  }
  if (!b.peer.is(id_.peer)) return foreign("peer name", quoted(b.peer.text()), quoted(id_.peer));
  // A changed granularity is the operator's edit of the volume file: the
  // map is read in the recorded one and every dirty byte marked in the new
  // one (below). The role, generations and flags stay: a reset here would
  // take the role from the volume file, which after a failover names the
  // stale node, and its full sync would run the wrong way.
  const uint32_t gran = b.granularity;
  if (!valid_unit(gran)) return full("invalid granularity " + std::to_string(gran));

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

  // Grown: load in the recorded geometry, grow to the configured size at the
  // end. From here on load returns no full resync, which would need maps of
  // the configured size.
  const uint64_t grown_size = id_.volume_size;
  if (size != grown_size) {
    id_.volume_size = size;
    init_maps(size);
  }
  instance_ = b.instance;
  flags_ = b.flags;
  gen_ = b.gen;
  cursor_ = b.cursor;
  sequence_ = seq;

  std::vector<uint64_t> bad;
  // A map recorded in another shape (granularity or al_extent changed):
  // every byte its set bits cover is marked dirty in the current map.
  auto mark_recorded = [&](const MapShape& old, uint64_t* set_bits) -> Status {
    Map m;
    m.nbits = old.nbits;
    if (Status st = read_map(fd_.get(), path_, old, size, instance_, m.words, r, &bad); !st)
      return st;
    for (uint64_t e = m.next_set(0); e < m.nbits; e = m.next_set(e + 1), ++*set_bits)
      set_dirty(e * old.unit, old.unit);
    return {};
  };
  LoadOutcome outcome = LoadOutcome::kOk;
  if (gran == id_.granularity) {
    MapShape dshape = dm_->shape();
    dshape.offset = g.dm_offset();
    if (Status st = read_map(fd_.get(), path_, dshape, size, instance_, dm_->words, r, &bad); !st)
      return st.error();
    dm_->recount();
    for (uint64_t i : bad) mark_changed(*dm_, i * kWordsPerBlock);
  } else {
    uint64_t regions = 0;
    if (Status st = mark_recorded({kKindDirty, gran, g.dm_bits, g.dm_offset(), g.dm_blocks},
                                  &regions);
        !st)
      return st.error();
    r.warnings.push_back(pre + "bitmap granularity changed from " + std::to_string(gran) + " to " +
                         std::to_string(id_.granularity) + ": the " + std::to_string(regions) +
                         " dirty regions recorded are " + std::to_string(dirty_bytes()) +
                         " dirty bytes now; role and generations kept; file rewritten");
    outcome = LoadOutcome::kRewrite;
  }
  bad.clear();
  if (al_extent == id_.al_extent) {
    if (Status st = read_map(fd_.get(), path_, al_->shape(), size, instance_, al_->words, r, &bad);
        !st)
      return st.error();
    al_->recount();
    for (uint64_t i : bad) mark_changed(*al_, i * kWordsPerBlock);
    al_durable_ = al_->words;
  } else {
    // al_extent changed: recover the old activity map into the dirty map,
    // then the file is rewritten in the new layout.
    uint64_t before = dirty_bytes(), extents = 0;
    if (Status st = mark_recorded(
            {kKindActivity, al_extent, g.al_bits, g.al_offset(), g.al_blocks}, &extents);
        !st)
      return st.error();
    r.warnings.push_back(pre + "al_extent changed from " + std::to_string(al_extent) + " to " +
                         std::to_string(id_.al_extent) + ": " +
                         std::to_string(dirty_bytes() - before) +
                         " bytes of active extents marked dirty; file rewritten");
    outcome = LoadOutcome::kRewrite;
  }

  if (size != grown_size) {
    // The operator grew the volume while the daemon was down: nothing is
    // known about the new bytes on either copy.
    grow_maps(grown_size, true);
    r.warnings.push_back(pre + "volume grew from " + std::to_string(size) + " to " +
                         std::to_string(grown_size) + " bytes: the " +
                         std::to_string(grown_size - size) +
                         " new bytes are marked dirty; file rewritten");
    outcome = LoadOutcome::kRewrite;
  }
  return outcome;
}

Status Bitmap::grow(uint64_t new_size, bool new_area_dirty) {
  const std::string pre = "metadata " + path_ + ": ";
  if (sticky_error_) return Error{sticky_error_, pre + "an earlier metadata write failed"};
  if (running_) return Error{EBUSY, pre + "a commit is running"};
  if (new_size <= id_.volume_size) {
    return Error{EINVAL, pre + "cannot grow the volume from " + std::to_string(id_.volume_size) +
                             " to " + std::to_string(new_size) +
                             " bytes: the new size must be larger (shrinking is not supported)"};
  }
  MetaIdentity grown = id_;
  grown.volume_size = new_size;
  if (Status st = check_identity(path_, grown); !st) return st;

  // Everything grow_maps and rewrite_all change, put back if the rewrite
  // fails (the file then still loads under its old superblocks: see
  // docs/bitmap-format.md, "Growing").
  const MetaIdentity old_id = id_;
  Map old_al = *al_, old_dm = *dm_;
  std::vector<uint64_t> old_durable = al_durable_, old_commit = block_commit_;
  std::vector<uint8_t> old_changed = changed_;
  std::vector<uint32_t> old_list = changed_list_;
  const bool old_header = header_changed_;
  const uint64_t old_instance = instance_;

  grow_maps(new_size, new_area_dirty);
  const uint64_t need = (2 + al_->blocks + dm_->blocks) * kBlock;
  Status st = rewrite_all(sequence_ + 1, false);
  if (st) return st;
  id_ = old_id;
  *al_ = std::move(old_al);
  *dm_ = std::move(old_dm);
  al_durable_ = std::move(old_durable);
  block_commit_ = std::move(old_commit);
  changed_ = std::move(old_changed);
  changed_list_ = std::move(old_list);
  header_changed_ = old_header;
  instance_ = old_instance;
  // A full filesystem (a bare "write metadata PATH" said nothing of it):
  // what ran out, where, and what to do. The old maps still load. (A
  // device too small says so already.)
  const int code = st.error().code;
  bool blk = false;
  if ((code == ENOSPC || code == EDQUOT) && store_bytes(fd_.get(), "metadata", path_, &blk) &&
      !blk)
    return Error{code, pre + (code == ENOSPC ? "no space left" : "disk quota exceeded") +
                           " on its filesystem: the grown maps need " + std::to_string(need) +
                           " bytes; free space there, or move the metadata file to a larger "
                           "filesystem"};
  return st;
}

void Bitmap::reset_fresh(uint32_t keep) {
  gen_ = Generation{};
  flags_ = kFlagFullSyncNeeded | keep;
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
  bool blk = false;
  auto have = store_bytes(fd, "metadata", path_, &blk);
  if (!have) return have.error();
  if (!blk) {
    if (*have != need && ::ftruncate(fd, need) < 0) return errno_error("resize metadata " + path_);
  } else if (*have < need) {
    return Error{ENOSPC, "metadata device " + path_ + " is smaller than the " +
                             std::to_string(need) + " bytes its maps need"};
  }
  // Maps first, durable before any superblock names the new instance id. It
  // differs from the old one, so under the old superblocks every block
  // already rewritten fails verification and reads as all ones.
  const uint64_t old_instance = instance_;
  do {
    instance_ = random_instance();
  } while (instance_ == old_instance);
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
  if (rewrite_hook_) {
    if (Status s = rewrite_hook_(); !s) return s;
  }
  // Both slots, with sequences above every one in the old file. Once this
  // write starts, the disk may name either layout: nothing more may be
  // written in the old one, so a failure is sticky. (fd_ again: the test
  // hook may have replaced it.)
  for (uint64_t seq = min_sequence; seq < min_sequence + 2; ++seq)
    encode_superblock(buf.data() + (seq % 2) * kBlock, seq);
  sequence_ = min_sequence + 1;
  if (Status s = pwrite_full(fd_.get(), buf.data(), 2 * kBlock, 0, path_); !s) {
    set_sticky(s.error().code, "superblock write");
    return s;
  }
  if (::fsync(fd_.get()) < 0) {
    Error e = errno_error("fsync metadata " + path_);
    set_sticky(e.code, "fsync");
    return e;
  }
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
  // Synchronous, like flush_sync: earlier commits' records are covered too.
  if (power_loss_) power_loss_->sync_done(power_loss_->sync_started(fd_.get()), true);
  return {};
}

}  // namespace mirror
