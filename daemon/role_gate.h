// RoleGate: the one Backend the NBD server is given for a mirrored volume.
// It forwards to whatever serves the current role (the Replicator on the
// primary, the local file on the secondary), so a role change at runtime
// (promote, demote) never leaves a connection holding a stale pointer.
// While not writable, writes, trims and zeroes fail with EROFS (NBD_EPERM
// on the wire) without reaching any copy.
//
// Thread: the Loop's. Does not own its target.
#pragma once

#include <cerrno>

#include "backend.h"
#include "uring.h"

namespace mirror {

class RoleGate final : public Backend {
 public:
  explicit RoleGate(Loop& loop) : loop_(loop) {}
  void set(Backend* target, bool writable) {
    target_ = target;
    writable_ = writable;
  }
  void set_writable(bool w) { writable_ = w; }
  bool writable() const { return writable_; }

  uint64_t size() const override { return target_->size(); }
  bool read_only() const override { return false; }  // the export's mode follows the role
  bool can_trim() const override { return target_->can_trim(); }
  void read(uint64_t off, uint32_t len, uint8_t* buf, IoDone* done) override {
    target_->read(off, len, buf, done);
  }
  void write(uint64_t off, uint32_t len, const uint8_t* buf, bool fua, IoDone* done) override {
    if (!writable_) return refuse(done);
    target_->write(off, len, buf, fua, done);
  }
  void flush(IoDone* done) override { target_->flush(done); }
  void trim(uint64_t off, uint32_t len, bool fua, IoDone* done) override {
    if (!writable_) return refuse(done);
    target_->trim(off, len, fua, done);
  }
  void zero(uint64_t off, uint32_t len, ZeroFlags f, IoDone* done) override {
    if (!writable_) return refuse(done);
    target_->zero(off, len, f, done);
  }
  void cache(uint64_t off, uint32_t len, IoDone* done) override {
    target_->cache(off, len, done);
  }
  void block_status(uint64_t off, uint32_t len, uint32_t max_extents,
                    std::vector<nbd::Extent>* out, IoDone* done) override {
    target_->block_status(off, len, max_extents, out, done);
  }

 private:
  // Never completes inside the call (the Backend contract).
  void refuse(IoDone* done) {
    loop_.defer([done] { done->io_done(-EROFS); });
  }

  Loop& loop_;
  Backend* target_ = nullptr;
  bool writable_ = false;
};

}  // namespace mirror
