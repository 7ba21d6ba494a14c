// The backend chain. A Backend stores the bytes of one volume; backends wrap
// each other (file, dirty tracking, replication, fault injection), each doing
// one thing. Operations are asynchronous and run on the owner's Loop.
//
// Contract for every operation:
//  - `done->io_done(err)` is called exactly once, with 0 or a negative errno,
//    and never before the call that started the operation has returned.
//  - Buffers and `done` are owned by the caller and must stay valid until
//    io_done runs.
//  - Ranges were validated by the caller (within size(), length > 0).
//  - `-ESHUTDOWN` (kUnanswered) means mirrord is stopping and the request was
//    never carried out: the connection leaves it unanswered, so the client
//    sees the connection end with it outstanding, as after a crash (the
//    kernel resends it to the next mirrord), not an error.
#pragma once

#include <cerrno>
#include <cstdint>
#include <functional>
#include <vector>

#include "codec.h"

namespace mirror {

inline constexpr int kUnanswered = -ESHUTDOWN;

class IoDone {
 public:
  virtual void io_done(int err) = 0;

 protected:
  ~IoDone() = default;
};

// An IoDone that runs a function once and deletes itself. For rare
// operations (control, handshakes); the data path uses embedded IoDones.
class FnDone final : public IoDone {
 public:
  static IoDone* make(std::function<void(int)> fn) { return new FnDone(std::move(fn)); }
  void io_done(int err) override {
    auto fn = std::move(fn_);
    delete this;
    fn(err);
  }

 private:
  explicit FnDone(std::function<void(int)> fn) : fn_(std::move(fn)) {}
  std::function<void(int)> fn_;
};

struct ZeroFlags {
  bool fua = false;
  bool may_trim = true;    // a hole is fine (NBD_CMD_FLAG_NO_HOLE not set)
  bool fast_only = false;  // NBD_CMD_FLAG_FAST_ZERO: fail with -ENOTSUP if slow
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual uint64_t size() const = 0;
  virtual bool read_only() const = 0;
  virtual bool can_trim() const = 0;

  virtual void read(uint64_t offset, uint32_t length, uint8_t* buf, IoDone* done) = 0;
  // fua: durable before done (on every copy this backend maintains).
  virtual void write(uint64_t offset, uint32_t length, const uint8_t* buf, bool fua,
                     IoDone* done) = 0;
  // Every write completed before flush() was called is durable when done.
  virtual void flush(IoDone* done) = 0;
  // -EOPNOTSUPP: the store cannot punch holes and kept the data (advisory
  // for a client, which gets success; a mirror must know it, so the same
  // range is not punched on one copy only).
  virtual void trim(uint64_t offset, uint32_t length, bool fua, IoDone* done) = 0;
  virtual void zero(uint64_t offset, uint32_t length, ZeroFlags flags, IoDone* done) = 0;
  virtual void cache(uint64_t offset, uint32_t length, IoDone* done) = 0;
  // A hint: start writing this range's cached changes to stable storage now,
  // so a later flush() has less left to wait for. Nothing waits for it and
  // it promises nothing (errors surface at that flush); a backend without a
  // write-back cache ignores it.
  virtual void start_writeback(uint64_t /*offset*/, uint32_t /*length*/) {}
  // A read of what the store itself holds, below any cache of this host
  // where it can (verify, checksum resync: a page that failed writeback
  // stays cached as if written, and bit rot hides under a cached page).
  // Dirty cached data in the range is written first, so it reads the same
  // bytes as read() unless the store lost some. By default read().
  virtual void read_stable(uint64_t offset, uint32_t length, uint8_t* buf, IoDone* done) {
    read(offset, length, buf, done);
  }
  // Writes data the store should hold already over a range it failed to
  // read (read-error correction: a disk remaps a bad sector when written).
  // Below any cache of this host where it can, so that done's result is the
  // store's own answer, and a failure is this call's alone: it never fails a
  // later flush() nor other writes. Not durable until a flush. -EOPNOTSUPP:
  // this store cannot write the range that way (nothing was written). By
  // default write() without FUA.
  virtual void rewrite(uint64_t offset, uint32_t length, const uint8_t* buf, IoDone* done) {
    write(offset, length, buf, false, done);
  }
  // Appends at most max_extents extents describing [offset, offset+length)
  // from the start (they may cover less than length).
  virtual void block_status(uint64_t offset, uint32_t length, uint32_t max_extents,
                            std::vector<nbd::Extent>* out, IoDone* done) = 0;
};

}  // namespace mirror
