#include "file_backend.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "file_lock.h"
#include "read_line.h"
#include "log.h"

namespace mirror {

namespace {
// Source of zeroes for WRITE_ZEROES where fallocate cannot help.
constexpr uint32_t kZeroChunk = 1 << 20;
const uint8_t* zero_chunk() {
  static const uint8_t* const z = [] {
    auto* p = static_cast<uint8_t*>(std::aligned_alloc(4096, kZeroChunk));
    std::memset(p, 0, kZeroChunk);
    return p;
  }();
  return z;
}

// The file's direct-I/O alignment (0 when it has no direct I/O, or the
// kernel cannot tell).
struct DioAlign {
  uint32_t mem = 0, offset = 0;
};
DioAlign dio_alignment(int fd, bool block_device) {
  struct statx stx {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
      (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_mem_align && stx.stx_dio_offset_align)
    return {stx.stx_dio_mem_align, stx.stx_dio_offset_align};
  // Block devices report it only since Linux 6.11: their logical block size
  // is what direct I/O needs (a safe bound for the memory, too).
  int lbs = 0;
  if (block_device && ::ioctl(fd, BLKSSZGET, &lbs) == 0 && lbs > 0)
    return {uint32_t(lbs), uint32_t(lbs)};
  return {};
}

// The largest folio the page cache may keep a file's data in. XFS and recent
// ext4 (seen on Linux 6.18) cache file data in large folios, up to a
// PMD-sized transparent huge page; without THP, folios are single pages.
uint64_t max_folio_bytes(uint64_t page) {
  std::string pmd = read_line("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
  return std::max(page, uint64_t(std::strtoull(pmd.c_str(), nullptr, 10)));
}
}  // namespace

// One operation in flight. Short transfers are re-queued from where they
// stopped; a FUA modification not written with RWF_DSYNC continues with a
// group sync before completing.
struct FileBackend::Op final : Completion {
  enum class Kind { kRead, kWrite, kZeroWrite, kFallocate, kTrim, kFadvise, kWriteback };
  FileBackend* be = nullptr;
  Kind kind = Kind::kRead;
  uint64_t offset = 0;
  uint32_t left = 0;
  uint8_t* buf = nullptr;
  int mode = 0;  // fallocate mode
  bool fua = false;
  bool fast_only = false;
  bool syncing = false;
  bool dsync = false;       // written with RWF_DSYNC: durable on completion
  bool direct = false;      // a direct write: no other write may share its folio span
  bool rewrite = false;     // rewrite(): always direct, never RWF_DSYNC
  bool via_direct = false;  // the last submission went through the O_DIRECT fd
  bool stable = false;      // read_stable: through the O_DIRECT fd while aligned
  bool tracked = false;     // in mods_
  bool fua_counted = false; // in fua_in_flight_
  IoDone* done = nullptr;

  // The sync of a FUA op completes through this adapter.
  struct SyncDone final : IoDone {
    Op* op;
    void io_done(int err) override { op->be->finish(op, err); }
  } sync_done;

  void on_complete(int res, uint32_t) override { be->on_op(this, res); }
};

Result<uint64_t> store_bytes(int fd, const std::string& what, const std::string& path,
                             bool* blk) {
  struct stat st {};
  if (::fstat(fd, &st) < 0) return errno_error("stat " + path);
  uint64_t size = 0;
  bool is_blk = false;
  if (S_ISREG(st.st_mode)) {
    size = st.st_size;
  } else if (S_ISBLK(st.st_mode)) {
    if (::ioctl(fd, BLKGETSIZE64, &size) < 0) return errno_error("BLKGETSIZE64 " + path);
    is_blk = true;
  } else {
    return Error{EINVAL, what + " " + path + " is neither a regular file nor a block device"};
  }
  if (blk) *blk = is_blk;
  return size;
}

Result<std::unique_ptr<FileBackend>> FileBackend::open(Loop& loop, const std::string& path,
                                                       Options opts) {
  int flags = (opts.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  if (opts.direct) flags |= O_DIRECT;
  UniqueFd fd(::open(path.c_str(), flags));
  if (!fd.valid()) return errno_error("open backing file " + path);
  auto lock = FileLock::acquire(path, fd.get(), opts.read_only ? LOCK_SH : LOCK_EX, "backing file");
  if (!lock.ok()) return lock.error();
  bool blk = false;
  auto bytes = store_bytes(fd.get(), "backing store", path, &blk);
  if (!bytes) return bytes.error();
  uint64_t size = *bytes;
  if (size == 0) return Error{EINVAL, "backing store " + path + " has size 0"};
  if (opts.size) {
    if (size < opts.size) {
      // After a raised `size` (a grow while this node was down, or a crash
      // in the middle of `mirrorctl resize`) the store must grow first.
      const std::string want = std::to_string(opts.size);
      return Error{EINVAL, "backing store " + path + " has " + std::to_string(size) +
                               " bytes, less than the volume's " + want + ": grow it first (" +
                               (blk ? "e.g. lvextend" : "truncate -s " + want + " " + path) +
                               "), or put `size` back"};
    }
    size = opts.size;
  }
  std::unique_ptr<FileBackend> be(new FileBackend(loop, std::move(fd), path, size, opts));
  be->is_block_device_ = blk;
  be->lock_ = std::move(lock).value();
  uint64_t page = 4096;
  if (long ps = ::sysconf(_SC_PAGESIZE); ps > 0) page = uint64_t(ps);
  be->folio_span_ = max_folio_bytes(page);
  if (!opts.read_only) {
    // Buffered RWF_DSYNC writes get a descriptor of their own: the kernel
    // reports a writeback error once per open file, so their sync half must
    // not be the one that takes it from fd_ (see dsync_fd_).
    be->dsync_fd_ = UniqueFd(::open(path.c_str(), flags));
    if (!be->dsync_fd_.valid()) return errno_error("open backing file " + path + " again");
    // The O_DIRECT path for FUA writes. No lock on the second descriptor:
    // fd_'s lock covers the file (and a second flock would conflict with it).
    DioAlign a = dio_alignment(be->fd_.get(), blk);
    if (a.offset && !opts.direct) {
      be->direct_fd_ = UniqueFd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_DIRECT));
      if (!be->direct_fd_.valid()) {
        MLOG_INFO("%s: no O_DIRECT (%s): FUA writes go through the page cache", path.c_str(),
                  strerror(errno));
        a = {};
      }
    }
    be->dio_mem_align_ = a.mem;
    be->dio_offset_align_ = a.offset;
  }
  return be;
}

FileBackend::FileBackend(Loop& loop, UniqueFd fd, std::string path, uint64_t size, Options opts)
    : loop_(loop), fd_(std::move(fd)), path_(std::move(path)), size_(size), opts_(opts) {}

Status FileBackend::check_grow(uint64_t new_size) const {
  if (new_size <= size_)
    return Error{EINVAL, "backing store " + path_ + ": " + std::to_string(new_size) +
                             " bytes is not larger than the " + std::to_string(size_) +
                             " served now"};
  if (opts_.read_only) return Error{EROFS, "backing store " + path_ + " is open read-only"};
  bool blk = false;
  auto bytes = store_bytes(fd_.get(), "backing store", path_, &blk);
  if (!bytes) return bytes.error();
  // A file is extended by extend(); a device cannot be.
  if (blk && *bytes < new_size)
    return Error{EINVAL, "backing device " + path_ + " has " + std::to_string(*bytes) +
                             " bytes, less than the new size " + std::to_string(new_size) +
                             ": grow it first (e.g. lvextend)"};
  return {};
}

Result<bool> FileBackend::extend(uint64_t new_size, uint64_t* was_length) {
  if (was_length) *was_length = 0;
  if (auto st = check_grow(new_size); !st) return st.error();
  bool zeroed = false;
  if (!is_block_device_) {
    // No data at or after the old end (a hole, or nothing: the file ends
    // there) reads as zeros; ENXIO means no data past that offset at all.
    off_t data = ::lseek(fd_.get(), off_t(size_), SEEK_DATA);
    zeroed = (data < 0 && errno == ENXIO) || (data >= 0 && uint64_t(data) >= new_size);
    struct stat st {};
    if (::fstat(fd_.get(), &st) < 0) return errno_error("stat " + path_);
    if (uint64_t(st.st_size) < new_size) {
      if (::ftruncate(fd_.get(), off_t(new_size)) < 0)
        return errno_error("extend backing file " + path_ + " to " + std::to_string(new_size) +
                           " bytes");
      MLOG_INFO("%s extended from %llu to %llu bytes (sparse)", path_.c_str(),
                static_cast<unsigned long long>(st.st_size),
                static_cast<unsigned long long>(new_size));
      if (was_length) *was_length = uint64_t(st.st_size);
    }
  }
  return zeroed;
}

Status FileBackend::unextend(uint64_t length) {
  if (is_block_device_ || length < size_)
    return Error{EINVAL, "backing store " + path_ + ": will not cut it to " +
                             std::to_string(length) + " bytes"};
  if (::ftruncate(fd_.get(), off_t(length)) < 0)
    return errno_error("truncate backing file " + path_ + " back to " + std::to_string(length) +
                       " bytes");
  MLOG_INFO("%s back to %llu bytes", path_.c_str(), static_cast<unsigned long long>(length));
  return {};
}

FileBackend::~FileBackend() {
  const FuaStats& f = fua_stats_;
  if (f.direct + f.dsync + f.group) {
    MLOG_INFO("%s: FUA writes: %llu direct+dsync, %llu buffered+dsync, %llu group-committed",
              path_.c_str(), static_cast<unsigned long long>(f.direct),
              static_cast<unsigned long long>(f.dsync), static_cast<unsigned long long>(f.group));
  }
}

FileBackend::Op* FileBackend::get_op(IoDone* done) {
  Op* op;
  if (free_ops_.empty()) {
    op = new Op();
  } else {
    op = free_ops_.back().release();
    free_ops_.pop_back();
  }
  *op = Op();
  op->be = this;
  op->done = done;
  op->sync_done.op = op;
  ++in_flight_;
  return op;
}

void FileBackend::put_op(Op* op) {
  --in_flight_;
  free_ops_.emplace_back(op);
}

void FileBackend::complete_later(IoDone* done, int err) {
  loop_.defer([done, err] { done->io_done(err); });
}

void FileBackend::submit(Op* op) {
  io_uring_sqe* s = loop_.sqe(op);
  switch (op->kind) {
    case Op::Kind::kRead: {
      op->via_direct = op->stable && direct_fd_.valid() && dio_aligned(op->buf, op->offset, op->left);
      io_uring_prep_read(s, op->via_direct ? direct_fd_.get() : fd_.get(), op->buf, op->left,
                         op->offset);
      break;
    }
    case Op::Kind::kWrite: {
      // A direct write whose rest (after a short transfer) lost its
      // alignment goes on buffered; it keeps its span to itself meanwhile.
      op->via_direct = op->direct && dio_aligned(op->buf, op->offset, op->left);
      // RWF_DSYNC never through fd_: only fdatasync takes its errors.
      int fd = fd_.get();
      if (op->via_direct && direct_fd_.valid()) {
        fd = direct_fd_.get();
      } else if (op->dsync) {
        fd = dsync_fd_.get();
      }
      io_uring_prep_write(s, fd, op->buf, op->left, op->offset);
      if (op->dsync) s->rw_flags = RWF_DSYNC;
      break;
    }
    case Op::Kind::kZeroWrite:
      io_uring_prep_write(s, fd_.get(), zero_chunk(), std::min(op->left, kZeroChunk), op->offset);
      break;
    case Op::Kind::kFallocate:
    case Op::Kind::kTrim:
      io_uring_prep_fallocate(s, fd_.get(), op->mode, op->offset, op->left);
      break;
    case Op::Kind::kFadvise:
      io_uring_prep_fadvise(s, fd_.get(), op->offset, op->left, POSIX_FADV_WILLNEED);
      break;
    case Op::Kind::kWriteback:
      io_uring_prep_sync_file_range(s, fd_.get(), op->left, op->offset, SYNC_FILE_RANGE_WRITE);
      break;
  }
}

void FileBackend::on_op(Op* op, int res) {
  if (res == -EAGAIN || res == -EINTR) return submit(op);
  switch (op->kind) {
    case Op::Kind::kRead:
      if (res == -EINVAL && op->via_direct) {
        op->stable = false;  // the filesystem refused what statx promised: buffered
        return submit(op);
      }
      if (res < 0) return finish(op, res);
      if (res == 0) {  // the file shrank under us: the rest reads as zeroes
        std::memset(op->buf, 0, op->left);
        return finish(op, 0);
      }
      op->buf += res;
      op->offset += res;
      op->left -= res;
      if (op->left > 0) return submit(op);
      return finish(op, 0);
    case Op::Kind::kWrite:
    case Op::Kind::kZeroWrite:
      if (res == -EINVAL && op->via_direct) {
        // The filesystem refused a direct write statx promised: buffered
        // from now on (the page lock stays until this op ends).
        MLOG_WARN("%s: direct write refused (EINVAL): FUA writes go through the page cache",
                  path_.c_str());
        dio_offset_align_ = 0;
        return submit(op);
      }
      if (res < 0) {
        // The sync half of RWF_DSYNC may have failed, dropping dirty pages
        // like a failed fdatasync. ENOSPC/EDQUOT may be a full disk refusing
        // the write (nothing dropped), or a writeback that failed with them
        // (thin provisioning, NFS): that error was taken from dsync_fd_ or
        // direct_fd_ only, so fd_'s next fdatasync still reports it.
        if (op->dsync && res != -ENOSPC && res != -EDQUOT)
          set_sticky(-res, "write with RWF_DSYNC");
        return finish(op, res);
      }
      if (res == 0) return finish(op, -EIO);
      if (op->kind == Op::Kind::kWrite) op->buf += res;
      op->offset += res;
      op->left -= res;
      if (op->left > 0) return submit(op);
      break;
    case Op::Kind::kFallocate:
      if (res == -EOPNOTSUPP || res == -ENOTSUP || res == -EINVAL) {
        // No fast way to zero here: the client asked not to be slow, or we
        // write zeroes ourselves.
        if (op->fast_only) return finish(op, -ENOTSUP);
        op->kind = Op::Kind::kZeroWrite;
        return submit(op);
      }
      if (res < 0) return finish(op, res);
      break;
    case Op::Kind::kTrim:
      // A store that cannot punch holes keeps its data. Trim is advisory,
      // but the caller is told: a mirror must not punch one copy only.
      if (res == -EOPNOTSUPP || res == -ENOTSUP) {
        if (!trim_unsupported_logged_) {
          trim_unsupported_logged_ = true;
          MLOG_INFO("%s cannot punch holes: TRIM leaves its data in place", path_.c_str());
        }
        return finish(op, -EOPNOTSUPP);
      }
      if (res < 0) return finish(op, res);
      break;
    case Op::Kind::kFadvise:
    case Op::Kind::kWriteback:
      return finish(op, 0);  // a hint: its failure is no error for the client
  }
  // A completed modification: FUA waits for a sync covering it, unless
  // RWF_DSYNC made it durable already.
  end_mod(op);
  if (op->fua && !op->dsync && !op->syncing) {
    op->syncing = true;
    return flush(&op->sync_done);
  }
  finish(op, 0);
}

void FileBackend::finish(Op* op, int err) {
  if (err < 0 && op->kind != Op::Kind::kRead &&
      !(op->kind == Op::Kind::kTrim && err == -EOPNOTSUPP) &&
      !(op->fast_only && err == -ENOTSUP)) {  // a fast zero refused: no failure
    MLOG_WARN("%s: write at offset %llu failed: %s", path_.c_str(),
              static_cast<unsigned long long>(op->offset), strerror(-err));
  }
  end_mod(op);
  if (op->fua_counted) --fua_in_flight_;
  IoDone* done = op->done;
  put_op(op);
  if (done) done->io_done(err);  // hints (start_writeback) have nobody waiting
}

bool FileBackend::dio_aligned(const uint8_t* buf, uint64_t offset, uint32_t length) const {
  return dio_offset_align_ && reinterpret_cast<uintptr_t>(buf) % dio_mem_align_ == 0 &&
         offset % dio_offset_align_ == 0 && length % dio_offset_align_ == 0;
}

bool FileBackend::shares_folio(const Op* a, const Op* b) const {
  const uint64_t span = folio_span_;
  auto lo = [&](const Op* o) { return o->offset / span * span; };
  auto hi = [&](const Op* o) { return (o->offset + o->left + span - 1) / span * span; };
  return lo(a) < hi(b) && lo(b) < hi(a);
}

// Page-cache coherence: a direct write flushes and invalidates the cached
// folios of its range, before and after the I/O. A buffered modification of
// one of those pages meanwhile can fill the page from disk before the direct
// data lands and later write that stale copy back over it (the kernel warns
// of "stale pagecache"), losing the direct write, even when the two touch
// different bytes of the page. Folios can be larger than a page: a read
// beside the direct write can bring its pages back, stale, in a large folio
// with a neighbouring page, and a buffered write to that neighbour dirties
// the folio, so the invalidation after the I/O fails and the kernel records
// EIO for the file (the direct write and the next fdatasync fail). So a
// direct write starts only when no modification in flight shares a folio
// span with it, and a modification sharing a span with a direct write in
// flight waits for it.
void FileBackend::start_mod(Op* op) {
  if (sticky_error_) {  // it waited, and a sync failed meanwhile
    IoDone* done = op->done;
    put_op(op);
    return complete_later(done, -sticky_error_);
  }
  for (const Op* m : mods_) {
    // A rewrite must go direct, so it waits for every modification in its
    // folio span, not only direct ones.
    if ((m->direct || op->rewrite) && shares_folio(op, m)) {
      blocked_.push_back(op);
      return;
    }
  }
  // ... and those that come meanwhile wait behind it, or a steady stream of
  // writes to its span could keep it waiting for good.
  for (const Op* b : blocked_) {
    if (b->rewrite && b != op && shares_folio(op, b)) {
      blocked_.push_back(op);
      return;
    }
  }
  if (op->kind == Op::Kind::kWrite && op->fua) {
    // Alone, RWF_DSYNC saves the second hop of a separate sync. At depth
    // one group sync covering many writes costs less than a cache flush
    // per write, so a FUA write joins the group when others are in flight.
    // A closed loop at depth empties now and then (a group completes, its
    // clients have not sent the next writes yet): a write arriving then
    // would pay a flush of its own beside the group's, so the group path
    // holds for kGroupHold lone writes after the last write at depth.
    bool alone = fua_in_flight_ == 0 && !sync_running_;
    if (!alone) {
      group_hold_ = kGroupHold;
    } else if (group_hold_ > 0) {
      --group_hold_;
      alone = false;
    }
    if (alone) {
      op->dsync = true;
      op->direct = dio_aligned(op->buf, op->offset, op->left) &&
                   std::none_of(mods_.begin(), mods_.end(),
                                [&](const Op* m) { return shares_folio(op, m); });
      ++(op->direct ? fua_stats_.direct : fua_stats_.dsync);
    } else {
      ++fua_stats_.group;
    }
  }
  if (op->rewrite) op->direct = true;  // rewrite() checked it can; nothing shares its span
  if (op->fua) {
    op->fua_counted = true;
    ++fua_in_flight_;
  }
  op->tracked = true;
  mods_.push_back(op);
  submit(op);
}

void FileBackend::end_mod(Op* op) {
  if (!op->tracked) return;
  op->tracked = false;
  mods_.erase(std::find(mods_.begin(), mods_.end(), op));
  if (blocked_.empty()) return;
  if (!op->direct && std::none_of(blocked_.begin(), blocked_.end(),
                                  [](const Op* b) { return b->rewrite; }))
    return;
  std::vector<Op*> waiting;
  waiting.swap(blocked_);
  for (Op* b : waiting) start_mod(b);  // blocks again behind another direct write
}

void FileBackend::read(uint64_t offset, uint32_t length, uint8_t* buf, IoDone* done) {
  start_read(offset, length, buf, false, done);
}

void FileBackend::read_stable(uint64_t offset, uint32_t length, uint8_t* buf, IoDone* done) {
  if (direct_fd_.valid() && dio_aligned(buf, offset, length)) ++stable_direct_reads_;
  start_read(offset, length, buf, true, done);
}

void FileBackend::start_read(uint64_t offset, uint32_t length, uint8_t* buf, bool stable,
                             IoDone* done) {
  Op* op = get_op(done);
  op->kind = Op::Kind::kRead;
  op->offset = offset;
  op->left = length;
  op->buf = buf;
  op->stable = stable;
  submit(op);
}

void FileBackend::write(uint64_t offset, uint32_t length, const uint8_t* buf, bool fua,
                        IoDone* done) {
  start_write(offset, length, buf, fua, /*rewrite=*/false, done);
}

void FileBackend::rewrite(uint64_t offset, uint32_t length, const uint8_t* buf, IoDone* done) {
  // Only a direct write answers for the disk itself: a buffered one would
  // "succeed" into the page cache and fail at writeback, failing the next
  // fdatasync and so every later write (sticky_error_).
  if (!direct_fd_.valid() || !dio_aligned(buf, offset, length))
    return complete_later(done, -EOPNOTSUPP);
  start_write(offset, length, buf, /*fua=*/false, /*rewrite=*/true, done);
}

void FileBackend::start_write(uint64_t offset, uint32_t length, const uint8_t* buf, bool fua,
                              bool rewrite, IoDone* done) {
  if (sticky_error_) return complete_later(done, -sticky_error_);
  Op* op = get_op(done);
  op->kind = Op::Kind::kWrite;
  op->offset = offset;
  op->left = length;
  op->buf = const_cast<uint8_t*>(buf);  // only read from for a write
  op->fua = fua;
  op->rewrite = rewrite;
  start_mod(op);
}

void FileBackend::trim(uint64_t offset, uint32_t length, bool fua, IoDone* done) {
  if (sticky_error_) return complete_later(done, -sticky_error_);
  Op* op = get_op(done);
  op->kind = Op::Kind::kTrim;
  op->offset = offset;
  op->left = length;
  op->mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  op->fua = fua;
  start_mod(op);
}

void FileBackend::zero(uint64_t offset, uint32_t length, ZeroFlags flags, IoDone* done) {
  if (sticky_error_) return complete_later(done, -sticky_error_);
  Op* op = get_op(done);
  op->kind = Op::Kind::kFallocate;
  op->offset = offset;
  op->left = length;
  // A punched hole reads as zeroes and frees space; NO_HOLE asks for
  // allocated zeroes instead.
  op->mode = (flags.may_trim ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE) | FALLOC_FL_KEEP_SIZE;
  op->fua = flags.fua;
  op->fast_only = flags.fast_only;
  start_mod(op);
}

void FileBackend::cache(uint64_t offset, uint32_t length, IoDone* done) {
  Op* op = get_op(done);
  op->kind = Op::Kind::kFadvise;
  op->offset = offset;
  op->left = length;
  submit(op);
}

void FileBackend::start_writeback(uint64_t offset, uint32_t length) {
  if (sticky_error_ || opts_.read_only) return;
  Op* op = get_op(nullptr);
  op->kind = Op::Kind::kWriteback;
  op->offset = offset;
  op->left = length;
  submit(op);
}

void FileBackend::flush(IoDone* done) {
  if (sticky_error_) return complete_later(done, -sticky_error_);
  sync_waiting_.push_back(done);
  if (!sync_running_) start_sync();
}

void FileBackend::start_sync() {
  sync_current_.swap(sync_waiting_);
  sync_running_ = true;
  ++in_flight_;
  io_uring_prep_fsync(loop_.sqe(&sync_completion_), fd_.get(), IORING_FSYNC_DATASYNC);
}

void FileBackend::set_sticky(int err, const char* what) {
  if (sticky_error_) return;
  // Later requests get EIO whatever the error was: after a failed sync the
  // data may be gone, and ENOSPC would tell a client (qemu's werror=enospc)
  // that freeing space and retrying helps. It does not: only a restart does.
  sticky_error_ = EIO;
  MLOG_ERROR("%s: %s failed: %s; refusing further writes until restart", path_.c_str(), what,
             strerror(err));
}

void FileBackend::on_sync(int res, uint32_t) {
  --in_flight_;
  sync_running_ = false;
  if (res < 0) set_sticky(-res, "fdatasync");
  // The requests this sync covered get its own error; later ones EIO.
  int err = res < 0 ? res : sticky_error_ ? -sticky_error_ : 0;
  std::vector<IoDone*> done;
  done.swap(sync_current_);
  // Writers that arrived while this sync ran need one of their own.
  if (!sync_waiting_.empty()) {
    if (err) {
      for (IoDone* d : sync_waiting_) done.push_back(d);
      sync_waiting_.clear();
    } else {
      start_sync();
    }
  }
  for (IoDone* d : done) d->io_done(err);
}

void FileBackend::block_status(uint64_t offset, uint32_t length, uint32_t max_extents,
                               std::vector<nbd::Extent>* out, IoDone* done) {
  // SEEK_DATA/SEEK_HOLE read only metadata; io_uring has no opcode for them.
  uint64_t end = offset + length;
  uint64_t pos = offset;
  int err = 0;
  if (is_block_device_) {
    out->push_back({length, 0});
    return complete_later(done, 0);
  }
  while (pos < end && out->size() < max_extents) {
    off_t data = ::lseek(fd_.get(), pos, SEEK_DATA);
    if (data < 0 && errno == ENXIO) data = end;  // a hole to the end of file
    if (data < 0) {
      err = -errno;
      break;
    }
    uint64_t d = std::min<uint64_t>(data, end);
    if (d > pos) {
      out->push_back({uint32_t(d - pos), nbd::kStateHole | nbd::kStateZero});
      pos = d;
      continue;
    }
    off_t hole = ::lseek(fd_.get(), pos, SEEK_HOLE);
    if (hole < 0) {
      err = -errno;
      break;
    }
    uint64_t h = std::min<uint64_t>(std::max<uint64_t>(hole, pos + 1), end);
    out->push_back({uint32_t(h - pos), 0});
    pos = h;
  }
  if (err && out->empty()) {
    // The spec allows reporting plain data instead of failing the query.
    out->push_back({length, 0});
    err = 0;
  }
  complete_later(done, err);
}

}  // namespace mirror
