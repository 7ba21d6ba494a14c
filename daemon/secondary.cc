#include "secondary.h"

#include <cstdio>
#include <cstring>
#include <utility>

#include "auth.h"
#include "log.h"
#include "verify_digest.h"

namespace mirror {

struct SecondaryApplier::Apply final : IoDone {
  SecondaryApplier* s = nullptr;
  uint64_t id = 0, seq = 0, epoch = 0;
  bool is_flush = false;
  bool is_sync_done = false;
  bool was_inconsistent = false;  // SYNC_DONE: this copy was inconsistent before it
  bool is_detach = false;  // DETACH: answered once the metadata is durable
  Generation prev_gen;     // DETACH, SYNC_DONE: what a failed commit puts back
  uint32_t prev_flags = 0, new_flags = 0;  // SYNC_DONE: the flags before and after
  bool moved = false;      // DETACH: this one moved the generation and set the flag
  uint64_t new_current = 0;  // DETACH: the id it moved to
  bool resync = false;  // a resync copy: its writeback starts once it is applied
  bool sole = false;    // a client's change sent by a diskless primary (sole_copy_)
  int answer_err = 0;   // a failed change, answered once its flag's commit is done
  uint32_t verify_region = 0;  // a VERIFY: read, then answer with digests
  bool read = false;           // a READ: answer with the data
  link::Type type = link::Type::kWrite;
  uint64_t off = 0;
  uint32_t len = 0;
  Buffer buf;
  void io_done(int err) override { s->done(this, err); }
};

SecondaryApplier::SecondaryApplier(Loop& loop, Backend& local, Bitmap& bitmap)
    : loop_(loop), local_(local), bitmap_(bitmap) {}

SecondaryApplier::~SecondaryApplier() = default;

void SecondaryApplier::attach(LinkConn* link, uint16_t peer_features) {
  link_ = link;
  peer_features_ = peer_features;
  ++epoch_;
  // Recorded by a DETACH that has finished (one still being committed
  // decides it when it does).
  sole_copy_ = (bitmap_.flags() & kFlagPeerDiskFailed) && detaches_pending_ == 0;
  failed_in_session_ = false;
}

void SecondaryApplier::detach() {
  link_ = nullptr;
  ++epoch_;
  flushes_.clear();  // their replies have nowhere to go
}

SecondaryApplier::Apply* SecondaryApplier::get() {
  Apply* a;
  ++live_;
  if (free_.empty()) {
    a = new Apply();
    a->s = this;
  } else {
    a = free_.back().release();
    free_.pop_back();
  }
  a->is_flush = a->is_sync_done = a->is_detach = a->resync = a->read = a->sole = false;
  a->answer_err = 0;
  a->verify_region = 0;
  return a;
}

SecondaryApplier::Apply* SecondaryApplier::get_read(const link::Header& h) {
  Apply* a = get();
  a->id = h.id;
  a->epoch = epoch_;
  a->seq = 0;  // no flush waits for a read
  a->off = h.offset;
  a->len = h.length;
  a->buf.reserve(h.length);
  return a;
}

void SecondaryApplier::put(Apply* a) {
  --live_;
  free_.emplace_back(a);
}

void SecondaryApplier::reply(uint64_t epoch, uint64_t id, int err) {
  if (!link_ || epoch != epoch_) return;
  link::Header h;
  h.type = link::Type::kReply;
  h.id = id;
  h.length = uint32_t(err < 0 ? -err : err);
  link_->send(h);
}

void SecondaryApplier::on_message(const link::Header& h, Buffer& payload) {
  uint64_t end = h.offset + h.length;
  bool ranged = h.type == link::Type::kWrite || h.type == link::Type::kTrim ||
                h.type == link::Type::kZero || h.type == link::Type::kVerify ||
                h.type == link::Type::kRead;
  if (ranged && (h.length == 0 || end < h.offset || end > local_.size())) {
    MLOG_WARN("replication: request outside the volume (%llu+%u)",
              static_cast<unsigned long long>(h.offset), h.length);
    return reply(epoch_, h.id, EINVAL);
  }
  switch (h.type) {
    case link::Type::kPing:
      return reply(epoch_, h.id, 0);
    case link::Type::kSplit: {
      // Everything before the split is here; make it durable, note the split.
      bitmap_.set_flags(bitmap_.flags() | kFlagSplit);
      flushes_.push_back({next_seq_++, h.id, epoch_, h.offset, true});
      bitmap_.commit(nullptr);
      return check_flushes();
    }
    case link::Type::kFlush:
      flushes_.push_back({next_seq_++, h.id, epoch_});
      return check_flushes();
    case link::Type::kVerify: {
      // A read of what this copy holds: no flush waits for it, and the
      // primary sends none while a write overlapping it runs.
      auto region = link::decode_verify(h, {payload.data(), h.payload});
      if (!region) {
        MLOG_WARN("replication: %s", region.error().message.c_str());
        return verify_reply(epoch_, h.id, h.offset, EPROTO, {});
      }
      Apply* a = get_read(h);
      a->verify_region = *region;
      // What this copy's disk holds, not its page cache: a page whose
      // writeback failed stays cached as if written (a checksum resync would
      // then skip a region the disk lacks), and verify must see bit rot.
      local_.read_stable(h.offset, h.length, a->buf.data(), a);
      return;
    }
    case link::Type::kRead: {
      // The primary's disk failed a client's read of this range. Like
      // VERIFY, a read of what this copy holds, which the primary sends
      // only while no write overlapping it runs; unlike VERIFY, the page
      // cache is the right answer: it holds every write applied here.
      Apply* a = get_read(h);
      a->read = true;
      local_.read(h.offset, h.length, a->buf.data(), a);
      return;
    }
    case link::Type::kDetach: {
      // The primary's disk failed; it goes on with this copy alone. Before
      // it acknowledges anything from this copy only, record that this
      // copy is the only current one: the generation moves on from the one
      // both shared (which the primary keeps, so no handshake can take its
      // copy for this one; kept here as history[0], not as `bitmap`: this
      // node tracks no changes relative to it, so no bitmap plan may pair
      // the two copies) and kFlagPeerDiskFailed lets promote go ahead.
      // Requests that arrived before are applied in any order with this;
      // the primary sends none after it until the REPLY.
      if (bitmap_.flags() & kFlagInconsistent) {
        MLOG_ERROR("replication: the primary's disk failed, but this copy is not consistent "
                   "(a resync has not finished): refusing to be its only copy");
        return reply(epoch_, h.id, EAGAIN);
      }
      Generation gen = bitmap_.generation();
      Apply* a = get();
      a->id = h.id;
      a->epoch = epoch_;
      a->seq = 0;
      a->is_detach = true;
      a->prev_gen = gen;
      a->moved = !(bitmap_.flags() & kFlagPeerDiskFailed);
      if (a->moved) {  // a DETACH sent again finds it recorded already
        gen.history[1] = gen.history[0];
        gen.history[0] = gen.current;
        gen.current = random_id();
        a->new_current = gen.current;
        bitmap_.set_generation(gen);
        bitmap_.set_flags(bitmap_.flags() | kFlagPeerDiskFailed);
      }
      ++detaches_pending_;
      bitmap_.commit(a);
      return;
    }
    case link::Type::kSyncDone: {
      auto g = link::decode_generation({payload.data(), h.payload});
      if (!g) return reply(epoch_, h.id, EPROTO);
      if (failed_in_session_) {
        // Sent before the primary had this copy's failure (its answer
        // crossed this): the copy lacks that change, it stays inconsistent.
        MLOG_ERROR("replication: the primary ended the resync, but this disk failed a change "
                   "meanwhile: this copy stays inconsistent until the next resync");
        return reply(epoch_, h.id, EIO);
      }
      Generation gen = bitmap_.generation();
      const Generation prev = gen;
      gen.history[1] = gen.history[0];
      gen.history[0] = gen.current;
      gen.current = g->current;
      gen.bitmap = 0;
      bitmap_.set_generation(gen);
      // The image now equals the primary's: our own changes of a read-write
      // split (kept until now, so an interrupted resync still copies them)
      // are gone.
      bitmap_.clear_all_dirty();
      const uint32_t prev_flags = bitmap_.flags();
      bool was_inconsistent = prev_flags & kFlagInconsistent;
      bitmap_.set_flags(prev_flags & ~(kFlagInconsistent | kFlagFullSyncNeeded |
                                       kFlagDisposableLocalWrites | kFlagPeerDiskFailed));
      sole_copy_ = false;
      Apply* a = get();
      a->id = h.id;
      a->epoch = epoch_;
      a->seq = 0;
      a->is_sync_done = true;
      a->was_inconsistent = was_inconsistent;
      a->prev_gen = prev;
      a->new_current = gen.current;
      a->prev_flags = prev_flags;
      a->new_flags = bitmap_.flags();
      bitmap_.commit(a);
      return;
    }
    default:
      break;
  }
  Apply* a = get();
  a->id = h.id;
  a->epoch = epoch_;
  a->seq = next_seq_++;
  a->type = h.type;
  a->off = h.offset;
  a->len = h.length;
  in_flight_.insert(a->seq);
  a->sole = sole_copy_ && !(h.flags & link::kFlagResync);
  bool fua = h.flags & link::kFlagFua;
  switch (h.type) {
    case link::Type::kWrite:
      std::swap(a->buf, payload);  // keep the data, give the link a buffer back
      bytes_applied_ += h.length;
      if (h.flags & link::kFlagResync) {
        resync_bytes_ += h.length;
        a->resync = true;
      }
      local_.write(h.offset, h.length, a->buf.data(), fua, a);
      break;
    case link::Type::kTrim:
      local_.trim(h.offset, h.length, fua, a);
      break;
    case link::Type::kZero: {
      if (h.flags & link::kFlagResync) resync_bytes_ += h.length;
      ZeroFlags z;
      z.fua = fua;
      z.may_trim = !(h.flags & link::kFlagNoHole);
      local_.zero(h.offset, h.length, z, a);
      break;
    }
    default:
      in_flight_.erase(a->seq);
      put(a);
      reply(epoch_, h.id, EPROTO);
      break;
  }
}

void SecondaryApplier::verify_reply(uint64_t epoch, uint64_t id, uint64_t offset, int err,
                                    std::span<const link::Digest> digests) {
  if (!link_ || epoch != epoch_) return;
  link::Header h;
  h.type = link::Type::kVerifyReply;
  h.id = id;
  h.offset = offset;
  h.length = uint32_t(err < 0 ? -err : err);
  link_->send_owned(link::encode_message(h, link::encode_digests(digests)));
}

void SecondaryApplier::done(Apply* a, int err) {
  // The inconsistent flag's commit ended (a failure of it changes nothing:
  // the primary goes on without this copy either way).
  if (a->answer_err) {
    if (!a->is_flush) return finish_change(a, std::exchange(a->answer_err, 0));
    uint64_t epoch = a->epoch, id = a->id;
    err = std::exchange(a->answer_err, 0);
    put(a);
    return reply(epoch, id, err);
  }
  if (a->read) {
    if (err) {
      MLOG_ERROR("replication: reading %llu+%u for the primary (its disk failed it) failed: %s",
                 static_cast<unsigned long long>(a->off), a->len, strerror(-err));
    } else {
      MLOG_DEBUG("replication: the primary's disk failed a read of %llu+%u: this copy answered",
                static_cast<unsigned long long>(a->off), a->len);
    }
    if (link_ && a->epoch == epoch_) {
      link::Header h;
      h.type = link::Type::kReadReply;
      h.id = a->id;
      h.offset = a->off;
      h.length = uint32_t(-err);
      std::span<const uint8_t> data;
      if (!err) data = {a->buf.data(), a->len};
      link_->send_owned(link::encode_message(h, data));
    }
    return put(a);
  }
  if (a->verify_region) {
    uint64_t epoch = a->epoch, id = a->id, off = a->off;
    std::vector<link::Digest> d;
    if (err) {
      MLOG_ERROR("verify: reading %llu+%u locally failed: %s",
                 static_cast<unsigned long long>(a->off), a->len, strerror(-err));
    } else {
      d = region_digests({a->buf.data(), a->len}, a->verify_region);
    }
    put(a);
    return verify_reply(epoch, id, off, err, d);
  }
  if (a->is_sync_done) {
    uint64_t epoch = a->epoch, id = a->id;
    bool was_inconsistent = a->was_inconsistent;
    const Generation prev_gen = a->prev_gen;
    const uint64_t new_current = a->new_current;
    const uint32_t prev_flags = a->prev_flags, new_flags = a->new_flags;
    put(a);
    if (!err) {
      MLOG_INFO("resync complete: this copy is consistent again");
      last_local_error_.clear();
      if (on_sync_done) on_sync_done(was_inconsistent);
    } else {
      // Not recorded: the next handshake must see the state on disk (a
      // generation reported but never recorded moves the primary on to a
      // base this copy will not know after a restart: "unrelated data").
      MLOG_ERROR("replication: cannot record the end of the resync in the metadata: %s",
                 strerror(-err));
      bitmap_.undo_header_change(prev_gen, new_current, prev_flags, new_flags);
    }
    return reply(epoch, id, err);
  }
  if (a->is_detach) {
    uint64_t epoch = a->epoch, id = a->id;
    --detaches_pending_;
    sole_copy_ = !err;
    if (err) {
      // Not recorded: the primary keeps its disk (or, if it may think
      // otherwise, stays detached and writes nothing). This copy claims
      // nothing it could not persist: what DETACH changed is put back, and
      // nothing else (a flag set meanwhile stays).
      MLOG_ERROR("replication: cannot record in the metadata that this copy is the only "
                 "current one: %s", strerror(-err));
      if (a->moved && bitmap_.generation().current == a->new_current) {
        bitmap_.set_generation(a->prev_gen);
        bitmap_.set_flags(bitmap_.flags() & ~kFlagPeerDiskFailed);
      }
    } else {
      MLOG_ERROR("replication: the primary's disk failed and it detached it: this copy is now "
                 "the only current one (the primary serves every request from it)");
    }
    put(a);
    return reply(epoch, id, err);
  }
  if (a->is_flush) {
    if (err) {
      // A failed sync: writes this copy acknowledged since the last one may
      // be gone from its disk (a failed writeback), just as if it had failed
      // them. Flagged like a failed write, durably before the answer.
      local_failed(a, err);
      if (!a->sole) {
        a->answer_err = err;
        return bitmap_.commit(a);
      }
    }
    uint64_t epoch = a->epoch, id = a->id;
    put(a);
    return reply(epoch, id, err);
  }
  if (err == -EOPNOTSUPP && a->type == link::Type::kTrim) {
    trim_kept_ = true;
    // The store cannot punch: this copy kept its data. A primary that knows
    // the answer keeps the copies alike; an older one would take the error
    // for a failed write (and drop the link), so it gets the old "done".
    if (!(peer_features_ & link::kFeatureTrimKept)) err = 0;
  } else if (err) {
    local_failed(a, err);
    if (!a->sole) {
      // Answered once kFlagInconsistent is durable: the primary goes on
      // without this copy from the answer on, and a power loss right after
      // must not bring it back calling itself consistent. (Still in
      // flight meanwhile: a FLUSH after it waits.)
      a->answer_err = err;
      return bitmap_.commit(a);
    }
  }
  finish_change(a, err);
}

void SecondaryApplier::finish_change(Apply* a, int err) {
  // A resync streams the primary's regions here, then flushes them in
  // batches before the primary may clear their bits: written back from now
  // on, while the link carries the next ones, instead of all at that flush.
  if (!err && a->resync) local_.start_writeback(a->off, a->len);
  in_flight_.erase(a->seq);
  uint64_t epoch = a->epoch, id = a->id;
  put(a);
  reply(epoch, id, err);
  check_flushes();
}

void SecondaryApplier::local_failed(const Apply* a, int err) {
  ++local_errors_;
  const char* what = a->is_flush                     ? "flushing"
                     : a->type == link::Type::kWrite ? "writing"
                     : a->type == link::Type::kTrim  ? "trimming"
                                                     : "zeroing";
  // With the primary's disk detached, this copy is the only one and the
  // request fails as it would on a lone disk: the primary passes the error
  // to its client and acknowledges nothing, so no copy lacks an
  // acknowledged write: nothing to flag, the volume goes on.
  const char* then = a->sole ? "this is the only current copy (the primary's disk is "
                               "detached), so the client's request fails"
                     : a->is_flush ? "the primary keeps the regions it wrote since then and "
                                     "resyncs them once this disk works again"
                                   : "the primary keeps that region and resyncs it once this "
                                     "disk works again";
  char buf[320];
  if (a->is_flush) {
    // (A sync has no range: what it lost is the writes since the last one.)
    std::snprintf(buf, sizeof buf,
                  "local disk: %s failed: %s, writes acknowledged since the last flush may be "
                  "lost; %s",
                  what, strerror(-err), then);
  } else {
    std::snprintf(buf, sizeof buf, "local disk: %s %llu+%u failed: %s; %s", what,
                  static_cast<unsigned long long>(a->off), a->len, strerror(-err), then);
  }
  last_local_error_ = buf;
  MLOG_ERROR("replication: %s", buf);
  if (a->sole) return;
  failed_in_session_ = true;
  // This copy now lacks a write the primary acknowledged (it goes on
  // alone): never a usable image, nor promotable, until a resync ends.
  // (Committed by the caller before the answer.)
  bitmap_.set_flags(bitmap_.flags() | kFlagInconsistent);
}

void SecondaryApplier::check_flushes() {
  while (!flushes_.empty()) {
    PendingFlush f = flushes_.front();
    // A flush covers what arrived before it: wait for those to finish.
    if (!in_flight_.empty() && *in_flight_.begin() < f.seq) return;
    flushes_.pop_front();
    Apply* a = get();
    a->id = f.id;
    a->epoch = f.epoch;
    a->is_flush = true;
    a->sole = sole_copy_;  // a failure is the client's alone (a lone disk's)
    // Every write before the split is in the image now: it is final.
    if (f.split && on_split) {
      on_split(f.split_unix_ms, [this, a] { local_.flush(a); });
      continue;
    }
    local_.flush(a);
  }
}

}  // namespace mirror
