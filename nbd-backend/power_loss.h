// PowerLoss: a test-only record of every write that is not yet durable, so
// that a "power loss" can be simulated inside a live process, in the style of
// leveldb's fault-injection Env: before a write is issued its range's old
// contents are saved; a successful sync of the file forgets the writes that
// had completed when the sync was issued; crash() puts back the old contents
// of everything not forgotten (newest first) and kills the process with
// SIGKILL. What stays on the files is what a disk that lost power may hold:
// every synced write and, of the others, only those still in flight in the
// kernel at the crash (they may land or not, as on a real disk). A file
// extended and not synced since gets its old length back, as a file system
// whose journal never committed the new size.
//
// Enabled only by MIRRORD_FAULTS (docs/reliability.md); never in production.
// Thread: the Loop's. Files are identified by their fd, which must stay open
// until crash() or until they are forgotten.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

namespace mirror {

class PowerLoss {
 public:
  // Saves the old contents of [off, off+len) of fd; call before the write is
  // issued. Returns the record's id for write_done().
  uint64_t before_write(int fd, uint64_t off, uint64_t len);
  // The write completed (successfully or not: a failed write may have
  // landed partly, so its record is kept until a sync covers it).
  void write_done(uint64_t id);
  // A sync of fd is issued: it covers the writes completed by now. Returns a
  // token for sync_done().
  uint64_t sync_started(int fd);
  // The sync finished; on success the writes it covered are durable.
  void sync_done(uint64_t token, bool ok);
  // Write `id` alone is durable (FUA): its record goes, and so does the part
  // of every older record under its range (the FUA data supersedes them),
  // and every older extension of its file (the sync that made it durable,
  // an fdatasync, wrote the file's size too).
  void write_durable(uint64_t id);
  // fd was extended (ftruncate) from old_length: until a sync of fd covers
  // it, a crash cuts the file back to old_length.
  void extended(int fd, uint64_t old_length);

  // Restores every unsynced write's old contents, newest first, then kills
  // this process (SIGKILL). Never returns.
  [[noreturn]] void crash(const char* why);
  // For tests: the same restore, without dying. Returns bytes restored.
  uint64_t restore_for_testing();

  size_t unsynced_writes() const { return records_.size(); }
  uint64_t unsynced_bytes() const { return bytes_; }

 private:
  struct Segment {
    uint64_t off;
    std::vector<uint8_t> old;  // the contents before the write
  };
  struct Record {
    int fd;
    uint64_t off, len;          // the write's range
    std::vector<Segment> segs;  // one, until a FUA write cuts a hole
    bool done = false;
    uint64_t sync = 0;  // the sync that covers it (0: none yet)
    bool extension = false;  // an extension: the file's length was `off`
  };
  static uint64_t record_bytes(const Record& r);
  std::map<uint64_t, Record> records_;  // by id: issue order
  uint64_t next_id_ = 1;
  uint64_t next_sync_ = 1;
  uint64_t bytes_ = 0;
};

}  // namespace mirror
