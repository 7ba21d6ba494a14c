#include "bitmap.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "bitmap_internal.h"
#include "log.h"

namespace mirror {

namespace {

using bitmap_format::for_words;
using bitmap_format::Geometry;
using bitmap_format::geometry;
using bitmap_format::kBlock;
using bitmap_format::kKindActivity;
using bitmap_format::kKindDirty;
using bitmap_format::kWordsPerBlock;
using bitmap_internal::kIoChunkBlocks;
using bitmap_internal::pwrite_full;

}  // namespace

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

Bitmap::Bitmap(Loop& loop, UniqueFd fd, std::string path, const MetaIdentity& id)
    : loop_(loop), fd_(std::move(fd)), path_(std::move(path)), id_(id) {
  init_maps(id.volume_size);
}

void Bitmap::init_maps(uint64_t size) {
  Geometry g = geometry(size, id_.granularity, id_.al_extent);
  al_ = std::make_unique<Map>();
  dm_ = std::make_unique<Map>();
  *al_ = Map{kKindActivity, id_.al_extent, g.al_bits, g.al_offset(), g.al_blocks, 0};
  const uint32_t dm_base = uint32_t(g.al_blocks);  // in changed_, after the activity blocks
  *dm_ = Map{kKindDirty, id_.granularity, g.dm_bits, g.dm_offset(), g.dm_blocks, dm_base};
  al_->words.assign(g.al_blocks * kWordsPerBlock, 0);
  dm_->words.assign(g.dm_blocks * kWordsPerBlock, 0);
  al_durable_.assign(al_->words.size(), 0);
  changed_.assign(g.al_blocks + g.dm_blocks, 0);
  block_commit_.assign(g.al_blocks + g.dm_blocks, 0);
  changed_list_.clear();
}

// Both maps keep their words: bit n is word n / 64 in any layout, and the
// bits past the old end are zero, so growing is appending zero words. Only
// the dirty map's place in the file moves (behind a longer activity map).
void Bitmap::grow_maps(uint64_t new_size, bool new_area_dirty) {
  const uint64_t old_size = id_.volume_size;
  Geometry g = geometry(new_size, id_.granularity, id_.al_extent);
  al_->nbits = g.al_bits;
  al_->blocks = g.al_blocks;
  al_->words.resize(g.al_blocks * kWordsPerBlock, 0);
  al_durable_.resize(al_->words.size(), 0);
  dm_->nbits = g.dm_bits;
  dm_->blocks = g.dm_blocks;
  dm_->offset = g.dm_offset();
  dm_->change_base = uint32_t(g.al_blocks);
  dm_->words.resize(g.dm_blocks * kWordsPerBlock, 0);
  id_.volume_size = new_size;
  changed_.assign(g.al_blocks + g.dm_blocks, 0);
  block_commit_.assign(g.al_blocks + g.dm_blocks, 0);
  changed_list_.clear();
  // From the region holding old_size: the old short last region now covers
  // new bytes too.
  if (new_area_dirty) set_dirty(old_size, new_size - old_size);
  // Every block is new or at a new place in the file: all go to disk.
  for (uint32_t b = 0; b < changed_.size(); ++b) {
    if (!changed_[b]) changed_list_.push_back(b);
    changed_[b] = 1;
  }
  header_changed_ = true;
}

Bitmap::~Bitmap() {
  if (running_) MLOG_ERROR("metadata %s: destroyed while a commit is running", path_.c_str());
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

void Bitmap::undo_header_change(const Generation& before, uint64_t set_current,
                                uint32_t flags_before, uint32_t flags_after) {
  if (gen_.current == set_current) set_generation(before);
  uint32_t changed = flags_before ^ flags_after;
  set_flags((flags_ & ~changed) | (flags_before & changed));
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
