#include "connection.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <algorithm>
#include <cstring>

#include "log.h"
#include "server.h"
#include "wire.h"

namespace mirror {

namespace {
constexpr size_t kInputBuffer = 256 * 1024;
constexpr uint32_t kHoleScanMin = 64 * 1024;  // reads this big report holes
constexpr uint32_t kMaxExtents = 1024;        // per block-status reply
constexpr size_t kMaxSendIov = 64;
constexpr size_t kKeepBuffer = 2 << 20;  // larger request buffers are freed
constexpr size_t kTlsReceive = 64 * 1024;   // ciphertext per receive
// Plaintext encrypted per send: bounds the ciphertext held, while large
// enough that a 1 MiB read goes out in one send.
constexpr size_t kTlsBatch = (1 << 20) + 4096;
// After a write this big, the next receive asks for one request header only,
// so that a following big payload lands straight in its request's buffer
// instead of filling the input buffer and being copied out of it.
constexpr uint32_t kBigPayload = 64 * 1024;
}  // namespace

struct Connection::Request final : IoDone {
  enum class Stage { kRun, kScanHoles };
  Connection* conn = nullptr;
  nbd::Request req;
  uint32_t pre_error = 0;  // answer with this error without running
  Stage stage = Stage::kRun;
  Buffer buf;
  size_t held = 0;  // bytes of buf counted in bytes_held_
  std::vector<nbd::Extent> extents;
  uint8_t hdr[32];
  std::vector<uint8_t> ctrl;  // structured chunk headers, when several
  std::vector<iovec> iov;     // the reply
  size_t iov_idx = 0, iov_off = 0;

  void io_done(int err) override { conn->request_done(this, err); }
};

Connection::Connection(NbdServer& server, UniqueFd fd, std::string peer, uint64_t now_ms)
    : server_(server), fd_(std::move(fd)), peer_(std::move(peer)), started_ms_(now_ms) {
  in_.resize(kInputBuffer);
}

Connection::~Connection() = default;

void Connection::start() {
  handshake_ = std::make_unique<nbd::Handshake>(server_, server_.tls_mode());
  nbd::Handshake::greeting(hs_out_);
  send_handshake();
}

void Connection::start_transmission(const nbd::ExportInfo* info, Backend* backend) {
  negotiated_ = nbd::Negotiated{};
  negotiated_.export_info = info;
  negotiated_.transmission_flags = info->transmission_flags(false);
  backend_ = backend;
  enter_transmission();
}

// ------------------------------------------------------------ receiving --

void Connection::post_recv() {
  if (recv_posted_ || phase_ == Phase::kClosing || phase_ == Phase::kDraining) return;
  void* target;
  size_t len;
  int flags = 0;
  if (tls_) {
    if (phase_ == Phase::kTransmission && !payload_req_ && !can_accept_request()) return;
    // Bytes already received may hold whole records: use them first.
    if (!tls_handshaking_ && tls_->has_buffered_input() && tls_pull_and_dispatch()) return;
    target = tls_in_.data();
    len = tls_in_.size();
    recv_into_payload_ = false;
  } else if (phase_ == Phase::kTransmission && payload_req_ && in_start_ == in_end_) {
    // The rest of a write payload goes straight into its buffer.
    // MSG_WAITALL: one completion for the whole payload, not one per
    // segment the socket happened to hold.
    target = payload_req_->buf.data() + payload_have_;
    len = payload_req_->req.length - payload_have_;
    recv_into_payload_ = true;
    flags = MSG_WAITALL;
  } else {
    if (phase_ == Phase::kTransmission && !payload_req_ && !can_accept_request()) return;
    compact_input();
    target = &in_[in_end_];
    len = in_.size() - in_end_;
    size_t have = in_end_ - in_start_;
    if (big_payload_last_ && !payload_req_ && have < nbd::kRequestHeaderSize)
      len = nbd::kRequestHeaderSize - have;
    recv_into_payload_ = false;
  }
  recv_posted_ = true;
  ++uring_ops_;
  io_uring_prep_recv(server_.loop().sqe(&recv_completion_), fd_.get(), target, len, flags);
}

void Connection::compact_input() {
  if (in_start_ == in_end_) {
    in_start_ = in_end_ = 0;
  } else if (in_start_ > 0 && in_end_ > in_.size() / 2) {
    std::memmove(in_.data(), in_.data() + in_start_, in_end_ - in_start_);
    in_end_ -= in_start_;
    in_start_ = 0;
  }
}

void Connection::on_recv(int res, uint32_t) {
  recv_posted_ = false;
  --uring_ops_;
  if (phase_ == Phase::kClosing || phase_ == Phase::kDraining) {
    if (payload_req_) {
      free_request(payload_req_);  // never acknowledged: nothing is lost
      payload_req_ = nullptr;
    }
    if (phase_ == Phase::kDraining) return check_drained();
    return maybe_destroy();
  }
  if (res == -EAGAIN || res == -EINTR) return post_recv();
  if (res <= 0) {
    if (res == 0 || res == -ECONNRESET)
      return close(requests_in_flight_ ? "client went away with requests in flight"
                                       : "client disconnected");
    MLOG_WARN("%s: receive failed: %s", peer_.c_str(), strerror(-res));
    return close("receive error");
  }
  if (tls_) {
    tls_->feed(tls_in_.data(), size_t(res));
    if (tls_handshaking_) return tls_step();
    if (!tls_pull_and_dispatch()) post_recv();  // a record is still incomplete
    return;
  }
  if (recv_into_payload_) {
    payload_have_ += res;
  } else {
    in_end_ += res;
  }
  dispatch_input();
}

void Connection::dispatch_input() {
  if (phase_ == Phase::kHandshake) return handshake_input();
  transmission_input();
}

// ------------------------------------------------------------------ TLS --

void Connection::begin_tls() {
  tls_ = std::make_unique<TlsChannel>(server_.tls_context(), false, std::string());
  tls_handshaking_ = true;
  tls_in_.resize(kTlsReceive);
  // Whatever followed STARTTLS is the client's first TLS bytes.
  if (in_end_ > in_start_) tls_->feed(&in_[in_start_], in_end_ - in_start_);
  in_start_ = in_end_ = 0;
  tls_step();
}

// Advances the TLS handshake and sends what it produced; once it is done,
// option haggling resumes over TLS.
void Connection::tls_step() {
  if (tls_handshaking_ && !hs_close_after_send_) {
    auto done = tls_->handshake();
    if (!done) {
      MLOG_INFO("%s: %s", peer_.c_str(), done.error().message.c_str());
      hs_close_after_send_ = true;  // after the alert, if there is one
    } else if (*done) {
      tls_handshaking_ = false;
      MLOG_INFO("%s: NBD over %s", peer_.c_str(), tls_->describe().c_str());
    }
  }
  if (tls_->pending_output() > 0) {
    tls_encrypt(nullptr, 0, 0);
    sending_tls_only_ = true;
    return send_cipher();
  }
  if (hs_close_after_send_) return close("TLS handshake failed");
  if (tls_handshaking_) return post_recv();
  if (!tls_pull_and_dispatch()) post_recv();
}

// Decrypts what the channel holds into the input buffer. `got`: bytes added.
Status Connection::tls_fill_input(size_t* got) {
  *got = 0;
  compact_input();
  while (in_end_ < in_.size()) {
    auto n = tls_->read(&in_[in_end_], in_.size() - in_end_);
    if (!n) return n.error();
    if (*n == 0) break;
    in_end_ += *n;
    *got += *n;
  }
  return {};
}

// Decrypts and, if that produced anything, hands it to the phase's parser
// (which posts the next receive itself). False if there was nothing to hand.
bool Connection::tls_pull_and_dispatch() {
  size_t got = 0;
  if (auto st = tls_fill_input(&got); !st) {
    MLOG_DEBUG("%s: %s", peer_.c_str(), st.error().message.c_str());
    close(st.error().code == ECONNRESET ? "client disconnected" : "TLS error");
    return true;
  }
  if (got == 0) return false;
  dispatch_input();
  return true;
}

// Encrypts up to `max_plain` bytes of `iov` into tls_out_ (with any record
// the channel produced on its own); tls_plain_ says how many went in.
void Connection::tls_encrypt(const iovec* iov, size_t n, size_t max_plain) {
  tls_plain_ = 0;
  for (size_t i = 0; i < n && tls_plain_ < max_plain; ++i) {
    size_t len = std::min(iov[i].iov_len, max_plain - tls_plain_);
    if (auto st = tls_->write(static_cast<const uint8_t*>(iov[i].iov_base), len); !st) {
      // Only out of memory: OpenSSL does not fail writes to a memory BIO.
      MLOG_WARN("%s: %s", peer_.c_str(), st.error().message.c_str());
      break;
    }
    tls_plain_ += len;
  }
  tls_out_.resize(tls_->pending_output());
  tls_out_.resize(tls_->take_output(tls_out_.data(), tls_out_.size()));
  tls_out_sent_ = 0;
}

void Connection::send_cipher() {
  send_posted_ = true;
  ++uring_ops_;
  io_uring_prep_send(server_.loop().sqe(&send_completion_), fd_.get(),
                     tls_out_.data() + tls_out_sent_, tls_out_.size() - tls_out_sent_,
                     MSG_NOSIGNAL);
}

// ------------------------------------------------------------ handshake --

void Connection::handshake_input() {
  size_t consumed = 0;
  auto st = handshake_->feed({&in_[in_start_], in_end_ - in_start_}, consumed, hs_out_);
  in_start_ += consumed;
  if (st == nbd::Handshake::Status::kClose) {
    MLOG_INFO("%s: handshake ended: %s", peer_.c_str(), handshake_->close_reason().c_str());
    hs_close_after_send_ = true;
  } else if (st == nbd::Handshake::Status::kStartTls) {
    hs_starttls_after_send_ = true;  // the ACK goes out in plaintext
  } else if (st == nbd::Handshake::Status::kDone) {
    negotiated_ = handshake_->result();
    backend_ = server_.backend_for(negotiated_.export_info);
    hs_done_after_send_ = true;
  }
  if (!hs_out_.empty()) return send_handshake();
  if (hs_close_after_send_) return close("handshake ended");
  if (hs_done_after_send_) return enter_transmission();
  post_recv();
}

void Connection::send_handshake() {
  sending_handshake_ = true;
  if (tls_) {
    iovec v{hs_out_.data() + hs_sent_, hs_out_.size() - hs_sent_};
    tls_encrypt(&v, 1, v.iov_len);
    return send_cipher();
  }
  send_posted_ = true;
  ++uring_ops_;
  io_uring_prep_send(server_.loop().sqe(&send_completion_), fd_.get(), hs_out_.data() + hs_sent_,
                     hs_out_.size() - hs_sent_, MSG_NOSIGNAL);
}

void Connection::enter_transmission() {
  MLOG_DEBUG("%s: serving export '%s'%s", peer_.c_str(), negotiated_.export_info->name.c_str(),
             negotiated_.structured_replies ? " with structured replies" : "");
  phase_ = Phase::kTransmission;
  handshake_.reset();
  transmission_input();
}

// --------------------------------------------------------- transmission --

bool Connection::can_accept_request() const {
  const ServerLimits& l = server_.limits();
  return requests_in_flight_ < l.max_requests_per_connection &&
         bytes_held_ < l.max_buffered_bytes_per_connection;
}

void Connection::transmission_input() {
  while (phase_ == Phase::kTransmission) {
    if (payload_req_) {
      uint32_t need = payload_req_->req.length - payload_have_;
      size_t n = std::min<size_t>(need, in_end_ - in_start_);
      std::memcpy(payload_req_->buf.data() + payload_have_, &in_[in_start_], n);
      in_start_ += n;
      payload_have_ += n;
      if (payload_have_ < payload_req_->req.length) break;
      Request* r = std::exchange(payload_req_, nullptr);
      start_request(r);
      continue;
    }
    if (in_end_ - in_start_ < nbd::kRequestHeaderSize || !can_accept_request()) break;
    nbd::Request req;
    if (!nbd::decode_request(std::span<const uint8_t, nbd::kRequestHeaderSize>(
                                 &in_[in_start_], nbd::kRequestHeaderSize),
                             &req)) {
      MLOG_WARN("%s: bad request magic, closing", peer_.c_str());
      return close("bad request magic");
    }
    in_start_ += nbd::kRequestHeaderSize;
    nbd::Verdict v = nbd::validate_request(req, negotiated_);
    if (v.disconnect) {
      MLOG_WARN("%s: %s, closing", peer_.c_str(), v.why);
      return close(v.why);
    }
    if (req.type == nbd::kCmdDisc) {
      disc_received_ = true;
      return drain();
    }
    if (v.error) MLOG_DEBUG("%s: request rejected: %s", peer_.c_str(), v.why);
    Request* r = new_request();
    r->req = req;
    r->pre_error = v.error;
    ++requests_in_flight_;
    big_payload_last_ = v.payload >= kBigPayload;
    if (v.payload) {
      r->buf.reserve(v.payload);
      r->held = v.payload;
      bytes_held_ += v.payload;
      payload_req_ = r;
      payload_have_ = 0;
      continue;
    }
    start_request(r);
  }
  post_recv();
}

void Connection::start_request(Request* r) {
  const nbd::Request& q = r->req;
  if (r->pre_error) {
    build_reply(r, -int(r->pre_error));
    return queue_reply(r);
  }
  switch (q.type) {
    case nbd::kCmdRead:
      r->buf.reserve(q.length);
      r->held = q.length;
      bytes_held_ += q.length;
      if (negotiated_.structured_replies && !(q.flags & nbd::kCmdFlagDf) &&
          q.length >= kHoleScanMin) {
        r->stage = Request::Stage::kScanHoles;
        return backend_->block_status(q.offset, q.length, kMaxExtents, &r->extents, r);
      }
      return backend_->read(q.offset, q.length, r->buf.data(), r);
    case nbd::kCmdWrite:
      return backend_->write(q.offset, q.length, r->buf.data(), q.flags & nbd::kCmdFlagFua, r);
    case nbd::kCmdFlush:
      return backend_->flush(r);
    case nbd::kCmdTrim:
      return backend_->trim(q.offset, q.length, q.flags & nbd::kCmdFlagFua, r);
    case nbd::kCmdWriteZeroes: {
      ZeroFlags f;
      f.fua = q.flags & nbd::kCmdFlagFua;
      f.may_trim = !(q.flags & nbd::kCmdFlagNoHole);
      f.fast_only = q.flags & nbd::kCmdFlagFastZero;
      return backend_->zero(q.offset, q.length, f, r);
    }
    case nbd::kCmdCache:
      return backend_->cache(q.offset, q.length, r);
    case nbd::kCmdBlockStatus:
      return backend_->block_status(q.offset, q.length,
                                    (q.flags & nbd::kCmdFlagReqOne) ? 1 : kMaxExtents,
                                    &r->extents, r);
  }
  // validate_request admits no other command.
  build_reply(r, -EINVAL);
  queue_reply(r);
}

void Connection::request_done(Request* r, int err) {
  if (phase_ == Phase::kClosing) {
    free_request(r);
    return maybe_destroy();
  }
  if (r->stage == Request::Stage::kScanHoles) {
    // Holes are an optimisation: without them, the read sends plain data.
    if (err) r->extents.clear();
    r->stage = Request::Stage::kRun;
    return backend_->read(r->req.offset, r->req.length, r->buf.data(), r);
  }
  if (err == kUnanswered) {
    // Never carried out, and mirrord is stopping: no answer, so the client
    // resends it after the connection ends (backend.h).
    MLOG_DEBUG("%s: request at %llu+%u left unanswered: mirrord is stopping", peer_.c_str(),
              static_cast<unsigned long long>(r->req.offset), r->req.length);
    free_request(r);
    if (phase_ == Phase::kDraining) check_drained();
    return;
  }
  // TRIM is advisory (NBD spec): a store that cannot punch kept its data.
  if (r->req.type == nbd::kCmdTrim && err == -EOPNOTSUPP) err = 0;
  build_reply(r, err);
  queue_reply(r);
}

void Connection::build_reply(Request* r, int err) {
  const nbd::Request& q = r->req;
  uint32_t nerr = nbd::errno_to_nbd(err);
  r->iov.clear();
  r->ctrl.clear();
  r->iov_idx = r->iov_off = 0;
  bool sr = negotiated_.structured_replies;
  if (q.type == nbd::kCmdRead && sr) {
    if (nerr) {
      nbd::encode_error_chunk(r->ctrl, q.cookie, nerr, err == -EINVAL ? "invalid request" : "read failed");
      r->iov.push_back({r->ctrl.data(), r->ctrl.size()});
      return;
    }
    // Holes as OFFSET_HOLE chunks, the rest as OFFSET_DATA, then NONE+DONE.
    bool any_hole = std::any_of(r->extents.begin(), r->extents.end(),
                                [](const nbd::Extent& e) { return e.flags & nbd::kStateHole; });
    if (!any_hole) {
      nbd::encode_chunk_header(r->hdr, nbd::kReplyFlagDone, nbd::kReplyTypeOffsetData, q.cookie,
                               q.length + 8);
      wire::put_u64(r->hdr + nbd::kChunkHeaderSize, q.offset);
      r->iov.push_back({r->hdr, nbd::kChunkHeaderSize + 8});
      r->iov.push_back({r->buf.data(), q.length});
      return;
    }
    struct Seg {
      size_t ctrl_start, ctrl_len;
      uint32_t data_off, data_len;
    };
    std::vector<Seg> segs;
    uint32_t pos = 0;
    size_t i = 0;
    while (pos < q.length) {
      bool hole = false;
      uint32_t len = q.length - pos;  // beyond the extents: data
      if (i < r->extents.size()) {
        hole = r->extents[i].flags & nbd::kStateHole;
        len = std::min(len, r->extents[i].length);
        ++i;
        while (i < r->extents.size() && bool(r->extents[i].flags & nbd::kStateHole) == hole &&
               pos + len < q.length) {
          len = std::min<uint32_t>(q.length - pos, len + r->extents[i].length);
          ++i;
        }
      }
      size_t at = r->ctrl.size();
      if (hole) {
        nbd::encode_hole_chunk(r->ctrl, q.cookie, q.offset + pos, len, false);
        segs.push_back({at, r->ctrl.size() - at, 0, 0});
      } else {
        r->ctrl.resize(at + nbd::kChunkHeaderSize + 8);
        nbd::encode_chunk_header(&r->ctrl[at], 0, nbd::kReplyTypeOffsetData, q.cookie, len + 8);
        wire::put_u64(&r->ctrl[at + nbd::kChunkHeaderSize], q.offset + pos);
        segs.push_back({at, nbd::kChunkHeaderSize + 8, pos, len});
      }
      pos += len;
    }
    size_t at = r->ctrl.size();
    nbd::encode_none_chunk(r->ctrl, q.cookie);
    segs.push_back({at, r->ctrl.size() - at, 0, 0});
    for (const Seg& s : segs) {
      r->iov.push_back({r->ctrl.data() + s.ctrl_start, s.ctrl_len});
      if (s.data_len) r->iov.push_back({r->buf.data() + s.data_off, s.data_len});
    }
    return;
  }
  if (q.type == nbd::kCmdBlockStatus && sr && !nerr) {
    const auto& ids = negotiated_.meta_context_ids;
    std::vector<nbd::Extent> other;
    for (size_t k = 0; k < ids.size(); ++k) {
      const NbdServer::MetaSource* src = server_.meta_source(negotiated_.export_info, ids[k]);
      const std::vector<nbd::Extent>* ext = &r->extents;  // base:allocation
      if (src) {
        other.clear();
        (*src)(q.offset, q.length, (q.flags & nbd::kCmdFlagReqOne) ? 1 : kMaxExtents, &other);
        ext = &other;
      }
      nbd::encode_block_status_chunk(r->ctrl, q.cookie, ids[k], *ext, k + 1 == ids.size());
    }
    r->iov.push_back({r->ctrl.data(), r->ctrl.size()});
    return;
  }
  nbd::encode_simple_reply(r->hdr, nerr, q.cookie);
  r->iov.push_back({r->hdr, nbd::kSimpleReplySize});
  if (q.type == nbd::kCmdRead && !nerr) r->iov.push_back({r->buf.data(), q.length});
}

void Connection::queue_reply(Request* r) {
  send_q_.push_back(r);
  kick_send();
}

// -------------------------------------------------------------- sending --

void Connection::kick_send() {
  if (send_posted_ || send_q_.empty() || phase_ == Phase::kClosing) return;
  send_iov_.clear();
  for (Request* r : send_q_) {
    for (size_t i = r->iov_idx; i < r->iov.size() && send_iov_.size() < kMaxSendIov; ++i) {
      iovec v = r->iov[i];
      if (i == r->iov_idx) {
        v.iov_base = static_cast<uint8_t*>(v.iov_base) + r->iov_off;
        v.iov_len -= r->iov_off;
      }
      send_iov_.push_back(v);
    }
    if (send_iov_.size() >= kMaxSendIov) break;
  }
  sending_handshake_ = false;
  if (tls_) {
    tls_encrypt(send_iov_.data(), send_iov_.size(), kTlsBatch);
    return send_cipher();
  }
  send_msg_ = msghdr{};
  send_msg_.msg_iov = send_iov_.data();
  send_msg_.msg_iovlen = send_iov_.size();
  send_posted_ = true;
  ++uring_ops_;
  io_uring_prep_sendmsg(server_.loop().sqe(&send_completion_), fd_.get(), &send_msg_,
                        MSG_NOSIGNAL);
}

void Connection::on_send(int res, uint32_t) {
  send_posted_ = false;
  --uring_ops_;
  if (phase_ == Phase::kClosing) {
    while (!send_q_.empty()) {
      free_request(send_q_.front());
      send_q_.pop_front();
    }
    return maybe_destroy();
  }
  if (res == -EAGAIN || res == -EINTR) {
    if (tls_) return send_cipher();  // the same ciphertext: it is encrypted once
    if (sending_handshake_) return send_handshake();
    return kick_send();
  }
  if (res < 0) {
    MLOG_DEBUG("%s: send failed: %s", peer_.c_str(), strerror(-res));
    return close("send failed");
  }
  if (tls_) {
    tls_out_sent_ += size_t(res);
    if (tls_out_sent_ < tls_out_.size()) return send_cipher();
    tls_out_.clear();
    tls_out_sent_ = 0;
    if (std::exchange(sending_tls_only_, false)) return tls_step();
    res = int(tls_plain_);  // what the plaintext bookkeeping below sent
  }
  if (sending_handshake_) {
    hs_sent_ += res;
    if (hs_sent_ < hs_out_.size()) return send_handshake();
    hs_out_.clear();
    hs_sent_ = 0;
    sending_handshake_ = false;
    if (hs_close_after_send_) return close("handshake ended");
    if (hs_done_after_send_) return enter_transmission();
    if (std::exchange(hs_starttls_after_send_, false)) return begin_tls();
    return handshake_input();
  }
  size_t left = res;
  while (!send_q_.empty()) {
    Request* r = send_q_.front();
    while (r->iov_idx < r->iov.size()) {
      size_t rem = r->iov[r->iov_idx].iov_len - r->iov_off;
      if (left < rem) {
        r->iov_off += left;
        left = 0;
        break;
      }
      left -= rem;
      ++r->iov_idx;
      r->iov_off = 0;
    }
    if (r->iov_idx < r->iov.size()) break;
    send_q_.pop_front();
    free_request(r);
  }
  kick_send();
  if (phase_ == Phase::kDraining) return check_drained();
  // Replies went out: requests held back by backpressure may now run.
  if (!recv_posted_ && phase_ == Phase::kTransmission) transmission_input();
}

// ------------------------------------------------------ closing & draining --

void Connection::drain() {
  if (phase_ == Phase::kHandshake) return close("server shutting down");
  if (phase_ != Phase::kTransmission) return;
  phase_ = Phase::kDraining;
  // A posted receive completes with 0 once the read side is shut down.
  ::shutdown(fd_.get(), SHUT_RD);
  if (payload_req_ && !recv_posted_) {
    free_request(payload_req_);
    payload_req_ = nullptr;
  }
  check_drained();
}

void Connection::check_drained() {
  if (phase_ == Phase::kDraining && requests_in_flight_ == 0 && !send_posted_ && !recv_posted_)
    close(disc_received_ ? "client disconnected" : "server shutting down");
}

void Connection::close(const char* why) {
  if (phase_ == Phase::kClosing) return;
  MLOG_DEBUG("%s: closing: %s", peer_.c_str(), why);
  phase_ = Phase::kClosing;
  ::shutdown(fd_.get(), SHUT_RDWR);  // completes any posted recv/send
  if (!send_posted_) {
    while (!send_q_.empty()) {
      free_request(send_q_.front());
      send_q_.pop_front();
    }
  }
  if (payload_req_ && !recv_posted_) {
    free_request(payload_req_);
    payload_req_ = nullptr;
  }
  maybe_destroy();
}

void Connection::maybe_destroy() {
  if (phase_ != Phase::kClosing || destroyed_ || uring_ops_ > 0 || requests_in_flight_ > 0) return;
  destroyed_ = true;
  server_.connection_closed(this);
}

// ------------------------------------------------------------- requests --

Connection::Request* Connection::new_request() {
  Request* r;
  if (free_requests_.empty()) {
    r = new Request();
    r->conn = this;
  } else {
    r = free_requests_.back().release();
    free_requests_.pop_back();
  }
  r->stage = Request::Stage::kRun;
  r->pre_error = 0;
  r->held = 0;
  r->extents.clear();
  return r;
}

void Connection::free_request(Request* r) {
  --requests_in_flight_;
  bytes_held_ -= r->held;
  r->held = 0;
  if (r->buf.capacity() > kKeepBuffer) r->buf.release();
  free_requests_.emplace_back(r);
}

}  // namespace mirror
