// FileBackend: a volume stored in a regular file or a block device, all I/O
// through io_uring. Writes go to the page cache; FLUSH and FUA are made
// durable with fdatasync, group-committed: writers that arrive while a sync
// is running share the next one.
//
// A failed fdatasync is sticky: after it the kernel may have dropped the
// dirty pages, so every later write and flush fails with EIO until restart
// (see docs/nbd-server.md, "fsync errors").
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
  void write(uint64_t offset, uint32_t length, const uint8_t* buf, bool fua,
             IoDone* done) override;
  void flush(IoDone* done) override;
  void trim(uint64_t offset, uint32_t length, bool fua, IoDone* done) override;
  void zero(uint64_t offset, uint32_t length, ZeroFlags flags, IoDone* done) override;
  void cache(uint64_t offset, uint32_t length, IoDone* done) override;
  void block_status(uint64_t offset, uint32_t length, uint32_t max_extents,
                    std::vector<nbd::Extent>* out, IoDone* done) override;

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  // Outstanding operations (for a clean stop).
  size_t in_flight() const { return in_flight_; }

 private:
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

  Loop& loop_;
  FileLock lock_;  // before fd_: released after the data descriptor closes
  UniqueFd fd_;
  std::string path_;
  uint64_t size_;
  Options opts_;
  bool is_block_device_ = false;
  int sticky_error_ = 0;  // set by a failed fdatasync
  size_t in_flight_ = 0;
  std::vector<std::unique_ptr<Op>> free_ops_;

  // Group commit of fdatasync.
  MemberCompletion<FileBackend, &FileBackend::on_sync> sync_completion_{this};
  bool sync_running_ = false;
  std::vector<IoDone*> sync_waiting_;  // wait for the next sync to start
  std::vector<IoDone*> sync_current_;  // covered by the running sync
};

}  // namespace mirror
