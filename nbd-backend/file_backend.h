// FileBackend: a volume stored in a regular file or a block device, all I/O
// through io_uring. Writes go to the page cache; FLUSH is made durable with
// fdatasync, group-committed: flushes that arrive while a sync is running
// share the next one.
//
// A FUA write alone in flight is one WRITE with RWF_DSYNC (durable when it
// completes: no second io_uring hop), through an O_DIRECT descriptor of the
// same file when the buffer, offset and length meet the file's direct-I/O
// alignment and no other modification in flight shares a folio span with it
// (page-cache coherence: see docs/nbd-server.md, "FUA"). A FUA write that
// arrives while other FUA writes or a sync are in flight joins the group
// commit instead, which is cheaper per write at depth (and so do the next
// kGroupHold lone ones: a loop at depth empties now and then).
//
// A failed fdatasync is sticky: after it the kernel may have dropped the
// dirty pages, so every later write and flush fails with EIO until restart
// (see docs/nbd-server.md, "fsync errors"). So is a failed RWF_DSYNC write,
// except ENOSPC/EDQUOT, which fail that write only; RWF_DSYNC writes go
// through descriptors of their own, so a writeback error behind such an
// ENOSPC still fails the next fdatasync (dsync_fd_).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "file_lock.h"
#include "result.h"
#include "uring.h"
#include "unique_fd.h"

namespace mirror {

// The bytes a regular file (its length) or a block device (its size) holds
// now; *blk (if given) says which. EINVAL naming `what` ("backing store",
// "metadata") and the path for anything else.
Result<uint64_t> store_bytes(int fd, const std::string& what, const std::string& path,
                             bool* blk = nullptr);

class FileBackend final : public Backend {
 public:
  struct Options {
    bool read_only = false;
    bool direct = false;  // O_DIRECT (caller buffers must be 4 KiB aligned)
    uint64_t size = 0;    // serve only this many bytes (0: the whole file)
  };
  // Opens and locks (flock LOCK_EX, or LOCK_SH when read-only) the file so
  // two daemons never serve the same backing store.
  static Result<std::unique_ptr<FileBackend>> open(Loop& loop, const std::string& path,
                                                   Options opts);
  ~FileBackend() override;

  uint64_t size() const override { return size_; }
  bool read_only() const override { return opts_.read_only; }
  bool can_trim() const override { return true; }

  void read(uint64_t offset, uint32_t length, uint8_t* buf, IoDone* done) override;
  // Through the O_DIRECT descriptor when the file has one and the buffer,
  // offset and length meet its alignment (the kernel writes dirty cached
  // pages of the range first); else a buffered read (tmpfs).
  void read_stable(uint64_t offset, uint32_t length, uint8_t* buf, IoDone* done) override;
  uint64_t stable_direct_reads() const { return stable_direct_reads_; }  // tests
  void write(uint64_t offset, uint32_t length, const uint8_t* buf, bool fua,
             IoDone* done) override;
  void flush(IoDone* done) override;
  void trim(uint64_t offset, uint32_t length, bool fua, IoDone* done) override;
  // Through the O_DIRECT descriptor (no RWF_DSYNC: its error is the write's
  // own and never sticky), once no other modification shares its folio
  // span; -EOPNOTSUPP without O_DIRECT or when unaligned (never buffered).
  void rewrite(uint64_t offset, uint32_t length, const uint8_t* buf, IoDone* done) override;
  void zero(uint64_t offset, uint32_t length, ZeroFlags flags, IoDone* done) override;
  void cache(uint64_t offset, uint32_t length, IoDone* done) override;
  // sync_file_range(SYNC_FILE_RANGE_WRITE): queues the range's dirty pages
  // for writeback without waiting, and without consuming a writeback error
  // (the next fdatasync still reports it).
  void start_writeback(uint64_t offset, uint32_t length) override;
  void block_status(uint64_t offset, uint32_t length, uint32_t max_extents,
                    std::vector<nbd::Extent>* out, IoDone* done) override;

  // Online resize, in two steps so that a caller whose own part fails
  // (the metadata) leaves the served size as it was. check_grow changes
  // nothing: EINVAL if new_size is not larger than size(), EROFS if
  // read-only, EINVAL naming the device and both sizes if a block device is
  // too small. extend makes the store hold new_size bytes: a regular file
  // that is too short is extended (ftruncate: sparse); size() does not
  // change. The new length survives a crash once a flush() started after
  // extend has completed (fdatasync writes a changed file size: fdatasync(2));
  // that flush runs on the loop like any other, and it writes out the file's
  // dirty pages too, so extend itself never waits for the disk. It says whether the
  // new area [size(), new_size) is known to read as zeros: a regular file
  // where SEEK_DATA finds no data there (a block device never is).
  // set_size then serves new_size bytes (at most what extend made room for).
  // *was_length (if given) gets the file's length before, when extend made
  // it longer; 0 when it did not change the file.
  Status check_grow(uint64_t new_size) const;
  Result<bool> extend(uint64_t new_size, uint64_t* was_length = nullptr);
  // Undoes an extend whose resize did not happen: the regular file back to
  // `length` bytes, never below size() (what is served).
  Status unextend(uint64_t length);
  void set_size(uint64_t new_size) { size_ = new_size; }
  bool is_block_device() const { return is_block_device_; }

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  // Outstanding operations (for a clean stop).
  size_t in_flight() const { return in_flight_; }
  // Writes are refused (a sync or RWF_DSYNC write failed): data acknowledged
  // before the failure may be lost, whatever a later fdatasync returns.
  bool refusing_writes() const { return sticky_error_ != 0; }

  // How FUA writes were made durable (tests, and the log at close).
  struct FuaStats {
    uint64_t direct = 0;  // O_DIRECT + RWF_DSYNC
    uint64_t dsync = 0;   // buffered + RWF_DSYNC
    uint64_t group = 0;   // buffered, then the group-committed fdatasync
  };
  const FuaStats& fua_stats() const { return fua_stats_; }
  // After a FUA write at depth, this many lone ones still join the group.
  static constexpr uint32_t kGroupHold = 64;
  // Whether FUA writes can take the O_DIRECT path at all on this file.
  bool has_direct_path() const { return dio_offset_align_ != 0; }
  // The unit of the page-cache coherence rule (tests).
  uint64_t folio_span() const { return folio_span_; }

 private:
  void start_read(uint64_t offset, uint32_t length, uint8_t* buf, bool stable, IoDone* done);
  struct Op;
  FileBackend(Loop& loop, UniqueFd fd, std::string path, uint64_t size, Options opts);
  Op* get_op(IoDone* done);
  void put_op(Op* op);
  void submit(Op* op);
  void on_op(Op* op, int res);
  void finish(Op* op, int err);
  void complete_later(IoDone* done, int err);
  void start_sync();
  void on_sync(int res, uint32_t flags);
  void set_sticky(int err, const char* what);
  // Modifications (write, zero, trim) and the page-cache coherence rule.
  // write() and rewrite().
  void start_write(uint64_t offset, uint32_t length, const uint8_t* buf, bool fua, bool rewrite,
                   IoDone* done);
  void start_mod(Op* op);
  void end_mod(Op* op);
  bool dio_aligned(const uint8_t* buf, uint64_t offset, uint32_t length) const;
  bool shares_folio(const Op* a, const Op* b) const;

  Loop& loop_;
  FileLock lock_;  // before fd_: released after the data descriptor closes
  UniqueFd fd_;
  std::string path_;
  uint64_t size_;
  Options opts_;
  bool is_block_device_ = false;
  int sticky_error_ = 0;  // EIO after a failed fdatasync or RWF_DSYNC write
  size_t in_flight_ = 0;
  std::vector<std::unique_ptr<Op>> free_ops_;

  // The same file opened again for buffered RWF_DSYNC writes (FUA writes
  // alone in flight that cannot go direct). The kernel reports a writeback
  // error to each open file once, at its first fsync since the error (the
  // sync half of RWF_DSYNC counts). Through fd_, a dsync write failing with
  // ENOSPC (not sticky) would take the error of an earlier write's failed
  // writeback, and the next FLUSH's fdatasync would succeed over lost data.
  // So fd_'s errors are only ever taken by fdatasync. Invalid when read-only.
  UniqueFd dsync_fd_;
  // The O_DIRECT path for FUA writes: the same file opened again (invalid
  // when opts_.direct: fd_ is direct already), and its alignment (0: none).
  UniqueFd direct_fd_;
  bool trim_unsupported_logged_ = false;
  uint32_t dio_mem_align_ = 0;
  uint32_t dio_offset_align_ = 0;
  // The largest folio the page cache may hold this file's data in: a direct
  // write and a buffered modification never run at once within one span.
  uint64_t folio_span_ = 4096;
  std::vector<Op*> mods_;     // modifications whose I/O is in flight
  std::vector<Op*> blocked_;  // wait for a direct write sharing a folio span
  size_t fua_in_flight_ = 0;  // FUA modifications not yet completed
  uint32_t group_hold_ = 0;   // lone FUA writes still to take the group path
  FuaStats fua_stats_;
  uint64_t stable_direct_reads_ = 0;

  // Group commit of fdatasync.
  MemberCompletion<FileBackend, &FileBackend::on_sync> sync_completion_{this};
  bool sync_running_ = false;
  std::vector<IoDone*> sync_waiting_;  // wait for the next sync to start
  std::vector<IoDone*> sync_current_;  // covered by the running sync
};

}  // namespace mirror
