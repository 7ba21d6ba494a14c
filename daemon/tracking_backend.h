// Backend decorators that record which regions of the volume change, for
// rejoin and for incremental backups (docs/nbd-server.md, "Changed regions
// since the last backup"; docs/control-protocol.md, "open-rw").
//
//   NBD clients -> LocalWriteGate -> ChangeTracker -> FileBackend
//   link (SecondaryApplier)     \-> ChangeTracker
//
// Thread: the Loop's. Each decorator borrows the backend and the Bitmap it
// is given; both must outlive it.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "backend.h"
#include "bitmap.h"
#include "forwarding_backend.h"
#include "uring.h"

namespace mirror {

// Marks every region written, trimmed or zeroed in `changes`' dirty map: the
// regions changed since the last backup point. A flush makes the marks
// durable after the data (the inner flush, then a metadata commit), so a
// flushed change is never missing from the map after a crash; a change not
// yet flushed when the node crashed is resynced by the primary (its activity
// log) and marked then.
class ChangeTracker final : public ForwardingBackend {
 public:
  ChangeTracker(Backend& inner, Bitmap& changes) : ForwardingBackend(inner), changes_(changes) {}
  void write(uint64_t offset, uint32_t length, const uint8_t* buf, bool fua,
             IoDone* done) override;
  void flush(IoDone* done) override;
  void trim(uint64_t offset, uint32_t length, bool fua, IoDone* done) override;
  void zero(uint64_t offset, uint32_t length, ZeroFlags flags, IoDone* done) override;

 private:
  Bitmap& changes_;
};

// The secondary's NBD backend: read-only until opened for writing while
// split (a test restore, fsck, a journal replay). Then each change marks its
// regions in the volume's dirty map durably before it is issued, so rejoin
// copies them back from the primary even after a crash. Closed again,
// changes fail with EROFS.
//
// It serves only a usable image: while the metadata says the copy is not
// one (a resync into it is under way, or it lost a write the primary
// acknowledged: kFlagInconsistent, kFlagFullSyncNeeded), reads and block
// status fail with EIO, so a backup tool or a read-only mount never takes
// a mix of old and new blocks for an image. Reads already issued when the
// copy stops being one are waited for (when_reads_drained) before a resync
// may write into it.
class LocalWriteGate final : public ForwardingBackend {
 public:
  LocalWriteGate(Loop& loop, Backend& inner, Bitmap& dirty)
      : ForwardingBackend(inner), loop_(loop), dirty_(dirty) {}
  void set_writable(bool w) { writable_ = w; }
  bool writable() const { return writable_; }
  // Changes marked but not finished: a resync must not start under them.
  uint64_t changes_in_flight() const { return in_flight_; }
  // Whether the copy is a usable image (from the metadata's flags).
  bool image_usable() const;
  // Runs `fn` once no client read is in flight (at once, if none is).
  void when_reads_drained(std::function<void()> fn);

  bool read_only() const override { return !writable_; }
  void read(uint64_t offset, uint32_t length, uint8_t* buf, IoDone* done) override;
  void block_status(uint64_t offset, uint32_t length, uint32_t max_extents,
                    std::vector<nbd::Extent>* out, IoDone* done) override;
  void write(uint64_t offset, uint32_t length, const uint8_t* buf, bool fua,
             IoDone* done) override;
  void trim(uint64_t offset, uint32_t length, bool fua, IoDone* done) override;
  void zero(uint64_t offset, uint32_t length, ZeroFlags flags, IoDone* done) override;

 private:
  // Marks [offset, offset+length) durably, then runs `issue(wrapped done)`.
  template <typename Issue>
  void marked(uint64_t offset, uint32_t length, IoDone* done, Issue issue);

  Loop& loop_;
  Bitmap& dirty_;
  bool writable_ = false;
  uint64_t in_flight_ = 0;
  uint64_t reads_in_flight_ = 0;
  std::vector<std::function<void()>> drained_;
  bool refusing_ = false;  // logged once per spell of refusals
  bool refuse_unusable(IoDone* done);
};

}  // namespace mirror
