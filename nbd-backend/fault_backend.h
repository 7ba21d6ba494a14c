// FaultBackend: a test-only Backend that wraps another one and injects
// faults on the data path, as nbdkit's error filter does: EIO or ENOSPC for
// chosen byte ranges or after a number of writes, and a simulated power loss
// (PowerLoss: unsynced writes are dropped, then the process dies) on a signal
// or after a number of writes. Every other operation (cache, block status,
// the writeback hint) passes through unchanged (ForwardingBackend), so a
// fault run differs from production only by the faults it injects.
//
// Enabled only by the MIRRORD_FAULTS environment variable (FaultSpec::parse,
// docs/reliability.md lists the syntax); mirrord logs a warning when it is on.
//
// Thread: the Loop's. The inner backend and the PowerLoss (if any) must
// outlive this object.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "forwarding_backend.h"
#include "power_loss.h"
#include "result.h"
#include "uring.h"

namespace mirror {

struct FaultSpec {
  struct Range {
    uint64_t off = 0, len = 0;
    bool touches(uint64_t o, uint64_t l) const { return o < off + len && off < o + l; }
  };
  std::vector<Range> write_eio, write_enospc, read_eio;
  // Unreadable until written: reads touching one fail with EIO until a
  // write, zero or trim covering it whole succeeds (a disk remaps a bad
  // sector when it is written).
  std::vector<Range> bad_sector;
  // A lost write: the first write (without FUA) touching one reaches the page
  // cache only, and its writeback fails: the next flush fails with EIO and
  // the write's range holds its old bytes again (a disk that lost it). Then
  // the range is forgotten (one-shot).
  std::vector<Range> writeback_eio;
  uint64_t eio_after = 0;     // writes after the first N fail with EIO (0: never)
  uint64_t enospc_after = 0;  // ... with ENOSPC
  uint64_t dead_after = 0;    // after N writes the disk is gone: every request fails with EIO
  bool power_loss = false;    // track unsynced writes; SIGUSR2 crashes
  uint64_t crash_after = 0;   // simulate a power loss at write N+1 (implies power_loss)
  uint64_t meta_eio_after = 0;  // metadata commits after the first N fail (daemon only)
  uint64_t meta_delay_ms = 0;   // each metadata commit completes this much later (daemon only)
  uint64_t read_delay_ms = 0;   // each read() completes this much later (a slow disk)
  // A write stuck in the disk's queue: the first WRITE touching the range
  // reaches the inner backend `ms` late, while later requests go through at
  // once (a disk completes queued requests in any order); then the range is
  // forgotten (one-shot).
  struct Stall {
    Range range;
    uint64_t ms = 0;
  };
  std::vector<Stall> write_stall;
  bool trim_unsupported = false;  // TRIM fails EOPNOTSUPP, as on a store that cannot punch holes
  // A secondary stops itself (SIGSTOP) when a RESIZE arrives, before handling
  // it: a hung peer exactly after the primary's pre-resize flush and with
  // RESIZE sent; the test resumes it with SIGCONT (daemon only).
  bool stop_on_resize = false;
  // A secondary stops itself (SIGSTOP) when the primary's first DETACH arrives,
  // before handling it: the primary's detach then ends with its link lost
  // before the answer (daemon only).
  bool stop_on_detach = false;
  // A secondary stops itself (SIGSTOP) each time it has applied a SPLIT (its
  // split flag set, the image's flush issued), before its answer goes out:
  // the primary's split then ends with its link lost and no answer (daemon
  // only).
  bool stop_after_split = false;
  // The kernel device's calls made on a thread of their own (the re-attach
  // of a role change, before its DISCONNECT and again before its CONNECT;
  // the online resize, before its call) pause this long, as a kernel that
  // waits for the requests in flight would (daemon only).
  uint64_t device_call_delay_ms = 0;
  // A simulated power loss at one step of an online resize (implies
  // power_loss; daemon only): "extended" (the backing file extended, not yet
  // synced), "flushed" (its sync done; the primary's: the mirrored flush,
  // before the pause), "answered" (the primary got the peer's OK: the peer
  // grew, this node not yet), "grown" (this node's store and metadata grew;
  // before the answer or before writes resume).
  std::string power_loss_at_resize;
  static constexpr const char* kResizeSteps[] = {"extended", "flushed", "answered", "grown"};

  bool any() const;
  bool any_data() const;  // a fault on the data path (FaultBackend's part)
  // "write-eio=OFF:LEN,read-eio=OFF:LEN,write-enospc=OFF:LEN,bad-sector=OFF:LEN,eio-after=N,
  // enospc-after=N,dead-after=N,power-loss,crash-after=N,meta-eio-after=N,meta-delay-ms=N,
  // trim-unsupported,stop-on-resize,stop-on-detach,device-call-delay-ms=N,power-loss-at-resize=STEP,
  // read-delay-ms=N,write-stall=OFF:LEN:MS,writeback-eio=OFF:LEN";
  // numbers take
  // K, M, G suffixes.
  static Result<FaultSpec> parse(const std::string& text);
  std::string to_string() const;
};

class FaultBackend final : public ForwardingBackend {
 public:
  // fd: the inner backend's file (read for PowerLoss's undo records).
  // power_loss: nullptr unless spec.power_loss.
  FaultBackend(Loop& loop, Backend& inner, int fd, const FaultSpec& spec, PowerLoss* power_loss);
  ~FaultBackend() override;

  void read(uint64_t offset, uint32_t length, uint8_t* buf, IoDone* done) override;
  void read_stable(uint64_t offset, uint32_t length, uint8_t* buf, IoDone* done) override;
  void write(uint64_t offset, uint32_t length, const uint8_t* buf, bool fua,
             IoDone* done) override;
  void flush(IoDone* done) override;
  void trim(uint64_t offset, uint32_t length, bool fua, IoDone* done) override;
  void rewrite(uint64_t offset, uint32_t length, const uint8_t* buf, IoDone* done) override;
  void zero(uint64_t offset, uint32_t length, ZeroFlags flags, IoDone* done) override;

  uint64_t writes_seen() const { return writes_; }
  uint64_t faults_injected() const { return injected_; }

 private:
  struct Op;
  // The error a modification of [off, off+len) gets, or 0 (counts it).
  int modification_fault(uint64_t off, uint64_t len);
  bool unreadable(uint64_t off, uint64_t len) const;  // read-eio or a bad sector
  bool dead() const { return spec_.dead_after && writes_ > spec_.dead_after; }  // dead-after
  // A modification's Op, its undo record taken when power loss is tracked
  // (then a FUA modification gets its sync as a separate flush). nullptr:
  // it failed (done will be told).
  Op* begin(uint64_t off, uint64_t len, bool fua, IoDone* done);
  void fail_later(IoDone* done, int err);
  void on_done(Op* op, int err);
  // read-delay-ms: `done` gets `err` that much later; each timer is freed
  // once it fired.
  void complete_later(IoDone* done, int err);
  // Runs `fn` `ms` later on the loop (read-delay-ms, write-stall).
  void later(uint64_t ms, std::function<void()> fn);
  std::list<std::unique_ptr<Timer>> delays_;
  // writeback-eio: a write whose writeback will fail, with the bytes it
  // replaced; `landed` once it completed (a later flush covers it).
  struct LostWrite {
    uint64_t id = 0, off = 0;
    std::vector<uint8_t> old;
    bool landed = false;
  };
  std::vector<LostWrite> lost_;
  uint64_t next_lost_ = 1;
  // The write that lands in the page cache only, if `offset` is one
  // (writeback-eio): its id, or 0.
  uint64_t maybe_lose(uint64_t offset, uint32_t length, bool fua);

  Loop& loop_;
  int fd_;
  FaultSpec spec_;
  PowerLoss* pl_;
  uint64_t writes_ = 0;
  uint64_t injected_ = 0;
  size_t in_flight_ = 0;
};

}  // namespace mirror
