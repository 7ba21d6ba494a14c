#include "link_conn.h"

#include <algorithm>
#include <cstring>
#include <tuple>

#include "log.h"

namespace mirror {

namespace {
constexpr size_t kInputBuffer = 256 * 1024;
constexpr size_t kMaxIov = 64;
// TLS: a record carries at most 16 KiB; frames smaller than that are
// gathered so a header and a small payload share one record.
constexpr size_t kTlsRecord = 16 * 1024;
// Ciphertext produced ahead of the socket: bounds memory, and keeps frames
// queued (visible to queued()) rather than hidden in the TLS layer.
constexpr size_t kTlsBacklog = 2 << 20;
}  // namespace

LinkConn::LinkConn(Loop& loop, UniqueFd fd, Handler* handler, std::string peer,
                   std::unique_ptr<TlsChannel> tls)
    : loop_(loop), fd_(std::move(fd)), handler_(handler), peer_(std::move(peer)),
      tls_(std::move(tls)) {
  in_.resize(kInputBuffer);
  if (tls_) {
    tls_->set_plaintext_hint(link::kMagic,
                             "the peer speaks the plaintext link protocol (tls is off on its "
                             "side; set tls = true on both nodes)");
    cipher_in_.resize(kInputBuffer);
    cipher_out_.resize(kTlsBacklog);  // allocated once: no zero-fill per send
  }
}

LinkConn::~LinkConn() = default;

void LinkConn::start() {
  if (tls_) return tls_progress();  // the client's hello goes out first
  post_recv();
}

void LinkConn::pause_receive(bool paused) {
  paused_ = paused;
  if (paused_) return;
  if (tls_) return tls_progress();  // plaintext may wait inside the channel
  post_recv();
}

std::pair<uint8_t*, size_t> LinkConn::recv_target() {
  if (have_header_ && in_start_ == in_end_ && payload_have_ < cur_.payload) {
    recv_direct_ = true;
    return {payload_.data() + payload_have_, cur_.payload - payload_have_};
  }
  if (in_start_ == in_end_) {
    in_start_ = in_end_ = 0;
  } else if (in_start_ > 0 && in_end_ > in_.size() / 2) {
    std::memmove(in_.data(), in_.data() + in_start_, in_end_ - in_start_);
    in_end_ -= in_start_;
    in_start_ = 0;
  }
  recv_direct_ = false;
  return {in_.data() + in_end_, in_.size() - in_end_};
}

void LinkConn::received(size_t n) {
  if (recv_direct_) {
    payload_have_ += n;
  } else {
    in_end_ += n;
  }
}

void LinkConn::post_recv() {
  if (recv_posted_ || closing_ || paused_) return;
  uint8_t* target;
  size_t len;
  if (tls_) {
    target = cipher_in_.data();
    len = cipher_in_.size();
  } else {
    std::tie(target, len) = recv_target();
  }
  recv_posted_ = true;
  ++ops_;
  io_uring_prep_recv(loop_.sqe(&recv_c_), fd_.get(), target, len, 0);
}

void LinkConn::on_recv(int res, uint32_t) {
  recv_posted_ = false;
  --ops_;
  if (closing_) return maybe_closed();
  if (res == -EAGAIN || res == -EINTR) return post_recv();
  if (res <= 0) {
    std::string why = res == 0 ? "peer closed the connection"
                               : std::string("receive failed: ") + strerror(-res);
    if (tls_ && !tls_->established()) why = "TLS handshake failed: " + why + " (see its log)";
    close(why);
    return;
  }
  if (tls_) {
    tls_->feed(cipher_in_.data(), size_t(res));
    return tls_progress();
  }
  // A TLS client hello where a frame header belongs: say so, not "bad magic".
  if (in_start_ == 0 && in_end_ == 0 && !recv_direct_ && !have_header_ && res >= 2 &&
      in_[0] == 0x16 && in_[1] == 0x03)
    return close("the peer speaks TLS, but tls is off on this node; set tls = true on both nodes");
  received(size_t(res));
  parse();
  post_recv();
}

void LinkConn::tls_progress() {
  if (closing_ || !tls_failure_.empty()) return;
  if (!tls_->established()) {
    auto done = tls_->handshake();
    if (!done) {
      // Send the alert first: it tells the peer why it was refused.
      tls_failure_ = done.error().message;
      tls_flush();
      if (!send_posted_) close(tls_failure_);
      return;
    }
    if (*done) MLOG_INFO("replication with %s: %s", peer_.c_str(), tls_->describe().c_str());
  }
  if (tls_->established()) {
    while (!closing_ && !paused_) {
      auto [target, len] = recv_target();
      if (len == 0) break;
      auto n = tls_->read(target, len);
      if (!n) return close(n.error().message);
      if (*n == 0) break;
      received(*n);
      parse();
    }
    tls_encrypt();
  }
  tls_flush();
  post_recv();
}

void LinkConn::parse() {
  while (!closing_ && !paused_) {
    if (!have_header_) {
      if (in_end_ - in_start_ < link::kHeaderSize) break;
      auto h = link::decode_header(
          std::span<const uint8_t, link::kHeaderSize>(in_.data() + in_start_, link::kHeaderSize));
      if (!h) return close(h.error().message);
      in_start_ += link::kHeaderSize;
      cur_ = *h;
      have_header_ = true;
      payload_have_ = 0;
      payload_.reserve(std::max<uint32_t>(cur_.payload, 1));
    }
    size_t n = std::min<size_t>(cur_.payload - payload_have_, in_end_ - in_start_);
    std::memcpy(payload_.data() + payload_have_, in_.data() + in_start_, n);
    in_start_ += n;
    payload_have_ += n;
    if (payload_have_ < cur_.payload) break;
    have_header_ = false;
    handler_->on_link_message(this, cur_, payload_);
  }
}

void LinkConn::send(const link::Header& h, const uint8_t* data) {
  if (closing()) return;
  Out& o = queue_.emplace_back();
  link::encode_header(o.hdr, h);
  o.data = data;
  o.len = data ? h.payload : 0;
  kick_send();
}

void LinkConn::send_owned(std::vector<uint8_t> message) {
  if (closing()) return;
  Out& o = queue_.emplace_back();
  o.owned = std::move(message);
  o.data = nullptr;
  o.len = 0;
  kick_send();
}

void LinkConn::kick_send() {
  if (tls_) {
    if (closing_ || !tls_->established()) return;
    tls_encrypt();
    return tls_flush();
  }
  if (send_posted_ || queue_.empty() || closing_) return;
  iov_.clear();
  for (Out& o : queue_) {
    // An entry is (owned) or (hdr, data); skip what was already sent.
    size_t skip = o.done;
    auto add = [&](const void* p, size_t n) {
      if (skip >= n) {
        skip -= n;
        return;
      }
      iov_.push_back({const_cast<uint8_t*>(static_cast<const uint8_t*>(p)) + skip, n - skip});
      skip = 0;
    };
    if (!o.owned.empty()) {
      add(o.owned.data(), o.owned.size());
    } else {
      add(o.hdr, link::kHeaderSize);
      if (o.len) add(o.data, o.len);
    }
    if (iov_.size() >= kMaxIov - 1) break;
  }
  msg_ = msghdr{};
  msg_.msg_iov = iov_.data();
  msg_.msg_iovlen = iov_.size();
  send_posted_ = true;
  ++ops_;
  io_uring_prep_sendmsg(loop_.sqe(&send_c_), fd_.get(), &msg_, MSG_NOSIGNAL);
}

// Encrypts queued frames while the ciphertext backlog is short. A frame
// leaves the queue once encrypted: the channel has copied its bytes.
void LinkConn::tls_encrypt() {
  auto put = [this](const uint8_t* p, size_t n) -> bool {
    // Top the gathered small frames up to a record, then write the rest whole.
    size_t top = std::min(n, kTlsRecord - std::min(kTlsRecord, plain_.size()));
    plain_.insert(plain_.end(), p, p + top);
    p += top, n -= top;
    if (plain_.size() < kTlsRecord && n == 0) return true;
    if (auto st = tls_->write(plain_.data(), plain_.size()); !st) {
      close(st.error().message);
      return false;
    }
    plain_.clear();
    if (n == 0) return true;
    if (auto st = tls_->write(p, n); !st) {
      close(st.error().message);
      return false;
    }
    return true;
  };
  while (!queue_.empty() && !closing_ &&
         tls_->pending_output() + cipher_len_ - cipher_sent_ < kTlsBacklog) {
    Out& o = queue_.front();
    bool ok = o.owned.empty() ? put(o.hdr, link::kHeaderSize) && (!o.len || put(o.data, o.len))
                              : put(o.owned.data(), o.owned.size());
    if (!ok) return;
    queue_.pop_front();
  }
  if (!plain_.empty() && !closing_) {
    if (auto st = tls_->write(plain_.data(), plain_.size()); !st) return close(st.error().message);
    plain_.clear();
  }
}

void LinkConn::tls_flush() {
  if (send_posted_ || closing_) return;
  if (cipher_sent_ == cipher_len_) {
    cipher_sent_ = 0;
    cipher_len_ = tls_->take_output(cipher_out_.data(), cipher_out_.size());
  }
  if (cipher_len_ == 0) return;
  send_posted_ = true;
  ++ops_;
  io_uring_prep_send(loop_.sqe(&send_c_), fd_.get(), cipher_out_.data() + cipher_sent_,
                     cipher_len_ - cipher_sent_, MSG_NOSIGNAL);
}

void LinkConn::on_send(int res, uint32_t) {
  send_posted_ = false;
  --ops_;
  if (closing_) return maybe_closed();
  if (res == -EAGAIN || res == -EINTR) return kick_send();
  if (res < 0) return close(std::string("send failed: ") + strerror(-res));
  if (tls_) {
    cipher_sent_ += size_t(res);
    if (tls_failure_.empty()) {
      // Nothing new to decrypt: only more to encrypt and send.
      if (tls_->established()) tls_encrypt();
      tls_flush();
      if (close_when_sent_ && all_sent()) close(close_reason_);
      return;
    }
    tls_flush();
    if (!send_posted_) close(tls_failure_);
    return;
  }
  size_t left = res;
  while (!queue_.empty() && left > 0) {
    Out& o = queue_.front();
    size_t total = o.owned.empty() ? link::kHeaderSize + o.len : o.owned.size();
    size_t n = std::min(left, total - o.done);
    o.done += n;
    left -= n;
    if (o.done < total) break;
    queue_.pop_front();
  }
  if (close_when_sent_ && queue_.empty()) return close(close_reason_);
  kick_send();
}

bool LinkConn::all_sent() const {
  if (!queue_.empty()) return false;
  return !tls_ || (plain_.empty() && tls_->pending_output() == 0 && cipher_sent_ == cipher_len_ &&
                   !send_posted_);
}

void LinkConn::close_when_sent(const std::string& why) {
  if (all_sent()) return close(why);
  close_when_sent_ = true;
  close_reason_ = why;
}

void LinkConn::close(const std::string& why) {
  if (closing_) return;
  closing_ = true;
  close_reason_ = why;
  ::shutdown(fd_.get(), SHUT_RDWR);  // completes posted operations
  maybe_closed();
}

void LinkConn::maybe_closed() {
  if (!closing_ || ops_ > 0 || closed_notified_) return;
  closed_notified_ = true;
  queue_.clear();
  loop_.defer([this] { handler_->on_link_closed(this, close_reason_); });
}

}  // namespace mirror
