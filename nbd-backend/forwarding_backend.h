// ForwardingBackend: passes every operation through to the backend it
// wraps. The base of the decorators (the fault layer, the change trackers),
// so each overrides only what it changes and every other operation, hints
// included, reaches the backend underneath as it would without it.
//
// Thread: the Loop's. The inner backend must outlive it.
#pragma once

#include <cstdint>
#include <vector>

#include "backend.h"

namespace mirror {

class ForwardingBackend : public Backend {
 public:
  explicit ForwardingBackend(Backend& inner) : inner_(inner) {}
  uint64_t size() const override { return inner_.size(); }
  bool read_only() const override { return inner_.read_only(); }
  bool can_trim() const override { return inner_.can_trim(); }
  void read(uint64_t offset, uint32_t length, uint8_t* buf, IoDone* done) override {
    inner_.read(offset, length, buf, done);
  }
  void read_stable(uint64_t offset, uint32_t length, uint8_t* buf, IoDone* done) override {
    inner_.read_stable(offset, length, buf, done);
  }
  void write(uint64_t offset, uint32_t length, const uint8_t* buf, bool fua,
             IoDone* done) override {
    inner_.write(offset, length, buf, fua, done);
  }
  void flush(IoDone* done) override { inner_.flush(done); }
  void trim(uint64_t offset, uint32_t length, bool fua, IoDone* done) override {
    inner_.trim(offset, length, fua, done);
  }
  void zero(uint64_t offset, uint32_t length, ZeroFlags flags, IoDone* done) override {
    inner_.zero(offset, length, flags, done);
  }
  void cache(uint64_t offset, uint32_t length, IoDone* done) override {
    inner_.cache(offset, length, done);
  }
  void rewrite(uint64_t offset, uint32_t length, const uint8_t* buf, IoDone* done) override {
    inner_.rewrite(offset, length, buf, done);
  }
  void start_writeback(uint64_t offset, uint32_t length) override {
    inner_.start_writeback(offset, length);
  }
  void block_status(uint64_t offset, uint32_t length, uint32_t max_extents,
                    std::vector<nbd::Extent>* out, IoDone* done) override {
    inner_.block_status(offset, length, max_extents, out, done);
  }

 protected:
  Backend& inner_;
};

}  // namespace mirror
