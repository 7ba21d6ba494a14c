#include "link_conn.h"

#include <algorithm>
#include <cstring>

#include "log.h"

namespace mirror {

namespace {
constexpr size_t kInputBuffer = 256 * 1024;
constexpr size_t kMaxIov = 64;
}  // namespace

LinkConn::LinkConn(Loop& loop, UniqueFd fd, Handler* handler, std::string peer)
    : loop_(loop), fd_(std::move(fd)), handler_(handler), peer_(std::move(peer)) {
  in_.resize(kInputBuffer);
}

LinkConn::~LinkConn() = default;

void LinkConn::start() { post_recv(); }

void LinkConn::pause_receive(bool paused) {
  paused_ = paused;
  if (!paused_) post_recv();
}

void LinkConn::post_recv() {
  if (recv_posted_ || closing_ || paused_) return;
  void* target;
  size_t len;
  if (have_header_ && in_start_ == in_end_ && payload_have_ < cur_.payload) {
    target = payload_.data() + payload_have_;
    len = cur_.payload - payload_have_;
    recv_direct_ = true;
  } else {
    if (in_start_ == in_end_) {
      in_start_ = in_end_ = 0;
    } else if (in_start_ > 0 && in_end_ > in_.size() / 2) {
      std::memmove(in_.data(), in_.data() + in_start_, in_end_ - in_start_);
      in_end_ -= in_start_;
      in_start_ = 0;
    }
    target = &in_[in_end_];
    len = in_.size() - in_end_;
    recv_direct_ = false;
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
    close(res == 0 ? "peer closed the connection"
                   : std::string("receive failed: ") + strerror(-res));
    return;
  }
  if (recv_direct_) {
    payload_have_ += res;
  } else {
    in_end_ += res;
  }
  parse();
}

void LinkConn::parse() {
  while (!closing_ && !paused_) {
    if (!have_header_) {
      if (in_end_ - in_start_ < link::kHeaderSize) break;
      auto h = link::decode_header(
          std::span<const uint8_t, link::kHeaderSize>(&in_[in_start_], link::kHeaderSize));
      if (!h) return close(h.error().message);
      in_start_ += link::kHeaderSize;
      cur_ = *h;
      have_header_ = true;
      payload_have_ = 0;
      payload_.reserve(std::max<uint32_t>(cur_.payload, 1));
    }
    size_t n = std::min<size_t>(cur_.payload - payload_have_, in_end_ - in_start_);
    std::memcpy(payload_.data() + payload_have_, &in_[in_start_], n);
    in_start_ += n;
    payload_have_ += n;
    if (payload_have_ < cur_.payload) break;
    have_header_ = false;
    handler_->on_link_message(this, cur_, payload_);
  }
  post_recv();
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

void LinkConn::on_send(int res, uint32_t) {
  send_posted_ = false;
  --ops_;
  if (closing_) return maybe_closed();
  if (res == -EAGAIN || res == -EINTR) return kick_send();
  if (res < 0) return close(std::string("send failed: ") + strerror(-res));
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

void LinkConn::close_when_sent(const std::string& why) {
  if (queue_.empty()) return close(why);
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
