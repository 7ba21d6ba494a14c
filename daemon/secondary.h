// SecondaryApplier: the secondary's half of the replication link. Applies
// the primary's writes, trims and zeroes to the local backend as they
// arrive (concurrently: the primary never sends two overlapping requests at
// once) and answers each with a REPLY when it is done. FLUSH is a barrier:
// it waits for every request received before it, then syncs.
//
// Thread: the Loop's. The applier outlives links; a link that closes while
// requests are being applied just gets no replies (the primary has already
// marked those regions dirty).
//
// DETACH (the primary's own disk failed) is answered once this node's
// metadata records, durably, that its copy is the only current one.
//
// A request the local disk fails (EIO, ENOSPC) is answered with that error,
// never acknowledged: the primary then marks the region dirty, drops the
// link and goes on alone (DRBD's on-io-error=detach); this copy is flagged
// inconsistent until a resync completes. A FLUSH the local disk fails is
// treated the same way: the writes it should have made durable may be gone
// (a failed writeback), though each was acknowledged. Once the primary's disk is
// detached, this copy is the only one: the error is its client's, the link
// stays, and nothing is flagged (a lone disk failing a write).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "backend.h"
#include "bitmap.h"
#include "buffer.h"
#include "link_codec.h"
#include "link_conn.h"

namespace mirror {

class SecondaryApplier {
 public:
  SecondaryApplier(Loop& loop, Backend& local, Bitmap& bitmap);
  ~SecondaryApplier();

  // peer_features: the primary's HELLO flags (link::kFeature*).
  void attach(LinkConn* link, uint16_t peer_features);
  void detach();
  bool attached() const { return link_ != nullptr; }
  // A data message (WRITE, TRIM, ZERO, FLUSH, PING, SYNC_DONE), VERIFY
  // (answered with the digests of this copy's regions, VERIFY_REPLY) or READ
  // (answered with this copy's data, READ_REPLY).
  void on_message(const link::Header& h, Buffer& payload);

  // Nothing is being applied (a detached applier may be destroyed).
  bool idle() const { return live_ == 0; }
  uint64_t busy() const { return live_; }  // requests being applied (any session's)
  uint64_t bytes_applied() const { return bytes_applied_; }
  uint64_t resync_bytes_received() const { return resync_bytes_; }
  // Requests the local disk failed since start, and the last one's
  // description ("" once a resync made this copy whole again).
  uint64_t local_errors() const { return local_errors_; }
  // A TRIM found this node's store unable to punch holes (it kept the data).
  bool trim_kept() const { return trim_kept_; }
  const std::string& last_local_error() const { return last_local_error_; }
  // The primary declared us up to date (durably recorded); whether this
  // copy was inconsistent until then (a resync into it ended).
  std::function<void(bool was_inconsistent)> on_sync_done;
  // The primary split the mirror, and every write before the split has been
  // applied: the image is final. The split's flush (and so its reply) is
  // issued once `then` runs.
  std::function<void(uint64_t unix_ms, std::function<void()> then)> on_split;

 private:
  struct Apply;
  void reply(uint64_t epoch, uint64_t id, int err);
  void verify_reply(uint64_t epoch, uint64_t id, uint64_t offset, int err,
                    std::span<const link::Digest> digests);
  void done(Apply* a, int err);
  void local_failed(const Apply* a, int err);
  // A write, trim or zero is done: its REPLY, then the flushes it held.
  void finish_change(Apply* a, int err);
  void check_flushes();
  Apply* get();
  // An Apply for a read of h's range (VERIFY, READ), its buffer sized.
  Apply* get_read(const link::Header& h);
  void put(Apply* a);

  Loop& loop_;
  Backend& local_;
  Bitmap& bitmap_;
  LinkConn* link_ = nullptr;
  uint16_t peer_features_ = 0;
  uint64_t epoch_ = 0;  // bumped per attach; replies go only to their link
  uint64_t next_seq_ = 1;
  std::set<uint64_t> in_flight_;  // sequence numbers being applied
  struct PendingFlush {
    uint64_t seq, id, epoch;
    uint64_t split_unix_ms = 0;
    bool split = false;  // the SPLIT's flush: on_split once it is issued
  };
  std::deque<PendingFlush> flushes_;
  std::vector<std::unique_ptr<Apply>> free_;
  uint64_t live_ = 0;  // handed out by get(), not yet put() back
  uint64_t bytes_applied_ = 0, resync_bytes_ = 0;
  uint64_t local_errors_ = 0;
  // A change of this session failed here (this copy lacks it): a SYNC_DONE
  // the primary sent before it learned of the failure must not make the
  // copy consistent.
  bool failed_in_session_ = false;
  bool trim_kept_ = false;
  std::string last_local_error_;
  // The primary's disk is detached and it knows this copy is the only one
  // (its DETACH was answered): what fails here fails for its client, and
  // leaves no copy behind. Requests that arrived before that answer may
  // still be acknowledged by the primary's disk, so they are judged by
  // what held when they arrived (Apply::sole).
  bool sole_copy_ = false;
  int detaches_pending_ = 0;  // DETACH commits not finished yet
};

}  // namespace mirror
