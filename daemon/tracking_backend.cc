#include "tracking_backend.h"

#include <utility>

#include "log.h"
#include "secondary.h"

namespace mirror {

// ------------------------------------------------------- ChangeTracker --

void ChangeTracker::write(uint64_t offset, uint32_t length, const uint8_t* buf, bool fua,
                          IoDone* done) {
  changes_.set_dirty(offset, length);
  inner_.write(offset, length, buf, fua, done);
}

void ChangeTracker::trim(uint64_t offset, uint32_t length, bool fua, IoDone* done) {
  changes_.set_dirty(offset, length);
  inner_.trim(offset, length, fua, done);
}

void ChangeTracker::zero(uint64_t offset, uint32_t length, ZeroFlags flags, IoDone* done) {
  changes_.set_dirty(offset, length);
  inner_.zero(offset, length, flags, done);
}

void ChangeTracker::flush(IoDone* done) {
  inner_.flush(FnDone::make([this, done](int err) {
    if (err) return done->io_done(err);
    changes_.commit(done);
  }));
}

// ------------------------------------------------------ LocalWriteGate --

template <typename Issue>
void LocalWriteGate::marked(uint64_t offset, uint32_t length, IoDone* done, Issue issue) {
  if (!writable_) {
    // EROFS, never inline (the Backend contract).
    loop_.defer([done] { done->io_done(-EROFS); });
    return;
  }
  ++in_flight_;
  dirty_.set_dirty(offset, length);
  dirty_.commit(FnDone::make([this, done, issue](int err) {
    if (err) {
      --in_flight_;
      return done->io_done(err);
    }
    issue(FnDone::make([this, done](int e) {
      --in_flight_;
      done->io_done(e);
    }));
  }));
}

void LocalWriteGate::write(uint64_t offset, uint32_t length, const uint8_t* buf, bool fua,
                           IoDone* done) {
  marked(offset, length, done,
         [this, offset, length, buf, fua](IoDone* d) { inner_.write(offset, length, buf, fua, d); });
}

void LocalWriteGate::trim(uint64_t offset, uint32_t length, bool fua, IoDone* done) {
  marked(offset, length, done,
         [this, offset, length, fua](IoDone* d) { inner_.trim(offset, length, fua, d); });
}

void LocalWriteGate::zero(uint64_t offset, uint32_t length, ZeroFlags flags, IoDone* done) {
  marked(offset, length, done,
         [this, offset, length, flags](IoDone* d) { inner_.zero(offset, length, flags, d); });
}

bool LocalWriteGate::image_usable() const {
  return !(dirty_.flags() & (kFlagInconsistent | kFlagFullSyncNeeded));
}

bool LocalWriteGate::refuse_unusable(IoDone* done) {
  if (image_usable()) {
    refusing_ = false;
    return false;
  }
  if (!refusing_) {
    refusing_ = true;
    MLOG_WARN("NBD export: refusing reads (EIO) while this copy is not a usable image (a "
              "resync into it has not finished, or it lacks a write the primary acknowledged); "
              "they are served again once the resync completes");
  }
  // EIO, never inline (the Backend contract).
  loop_.defer([done] { done->io_done(-EIO); });
  return true;
}

void LocalWriteGate::read(uint64_t offset, uint32_t length, uint8_t* buf, IoDone* done) {
  if (refuse_unusable(done)) return;
  ++reads_in_flight_;
  inner_.read(offset, length, buf, FnDone::make([this, done](int err) {
    --reads_in_flight_;
    done->io_done(err);
    if (reads_in_flight_ == 0 && !drained_.empty()) {
      auto fns = std::exchange(drained_, {});
      for (auto& fn : fns) fn();
    }
  }));
}

void LocalWriteGate::block_status(uint64_t offset, uint32_t length, uint32_t max_extents,
                                  std::vector<nbd::Extent>* out, IoDone* done) {
  if (refuse_unusable(done)) return;
  inner_.block_status(offset, length, max_extents, out, done);
}

void LocalWriteGate::when_reads_drained(std::function<void()> fn) {
  if (reads_in_flight_ == 0) return fn();
  drained_.push_back(std::move(fn));
}

}  // namespace mirror
