// LinkConn: one TCP connection to the peer, on the io_uring loop. Frames
// link messages (link_codec.h) in both directions; what they mean is up to
// the Handler. Used by both roles.
//
// With a TlsChannel, the bytes on the socket are TLS records: ciphertext is
// received into and sent from buffers of the connection's own (the socket
// I/O stays on io_uring) and the channel turns it into the same frames.
//
// Lifetime: owned by its creator. close() shuts the socket down; once every
// posted operation has completed, Handler::on_link_closed runs exactly once,
// and only then may the owner destroy it. Payload pointers given to send()
// must stay valid until a REPLY for that message arrived or on_link_closed.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "buffer.h"
#include "link_codec.h"
#include "tls.h"
#include "unique_fd.h"
#include "uring.h"

namespace mirror {

class LinkConn {
 public:
  class Handler {
   public:
    // `payload` holds header.payload bytes; the handler may take it (swap).
    virtual void on_link_message(LinkConn* c, const link::Header& h, Buffer& payload) = 0;
    virtual void on_link_closed(LinkConn* c, const std::string& why) = 0;

   protected:
    ~Handler() = default;
  };

  // `tls`: null for a plaintext link.
  LinkConn(Loop& loop, UniqueFd fd, Handler* handler, std::string peer,
           std::unique_ptr<TlsChannel> tls = nullptr);
  ~LinkConn();

  void start();
  // Header is copied; `data` (h.payload bytes) is referenced, see above.
  void send(const link::Header& h, const uint8_t* data = nullptr);
  // A small message that the link owns.
  void send_owned(std::vector<uint8_t> message);
  void close(const std::string& why);
  // Closes once every queued message went out (a reply that must reach the
  // peer before the link ends); close() itself drops the queue.
  void close_when_sent(const std::string& why);

  // Closed, or closing once the queue is sent: nothing more goes out.
  bool closing() const { return closing_ || close_when_sent_; }
  const std::string& peer() const { return peer_; }
  // The TLS session, or null for a plaintext link.
  const TlsChannel* tls() const { return tls_.get(); }
  size_t queued() const { return queue_.size(); }
  // Receiving pauses while the handler says it holds too much (backpressure).
  void pause_receive(bool paused);

  // Per-connection context for the owner (e.g. which session it belongs to).
  void* context = nullptr;

 private:
  struct Out {
    uint8_t hdr[link::kHeaderSize];
    const uint8_t* data;
    uint32_t len;
    std::vector<uint8_t> owned;
    size_t done = 0;  // bytes of (hdr|owned, data) already sent
  };
  void post_recv();
  // Where the next received plaintext goes: the input buffer, or straight
  // into the payload being assembled. Sets recv_direct_.
  std::pair<uint8_t*, size_t> recv_target();
  void received(size_t n);
  void on_recv(int res, uint32_t flags);
  void on_send(int res, uint32_t flags);
  void parse();
  void kick_send();
  void maybe_closed();
  // TLS: handshake, decrypt what arrived, encrypt what is queued, send.
  void tls_progress();
  void tls_encrypt();
  void tls_flush();
  // Everything queued is on the wire: with TLS, also encrypted and sent
  // (a frame leaves queue_ once encrypted, before its ciphertext is sent).
  bool all_sent() const;

  Loop& loop_;
  UniqueFd fd_;
  Handler* handler_;
  std::string peer_;
  std::string close_reason_;
  bool closing_ = false;
  bool closed_notified_ = false;
  bool paused_ = false;
  bool close_when_sent_ = false;
  int ops_ = 0;

  std::vector<uint8_t> in_;
  size_t in_start_ = 0, in_end_ = 0;
  bool have_header_ = false;
  link::Header cur_;
  Buffer payload_;
  uint32_t payload_have_ = 0;
  bool recv_posted_ = false, recv_direct_ = false;

  std::deque<Out> queue_;
  bool send_posted_ = false;
  std::vector<iovec> iov_;

  std::unique_ptr<TlsChannel> tls_;
  std::vector<uint8_t> cipher_in_;   // a received TLS record fragment
  std::vector<uint8_t> cipher_out_;  // TLS records being sent: [cipher_sent_, cipher_len_)
  size_t cipher_len_ = 0, cipher_sent_ = 0;
  std::vector<uint8_t> plain_;       // small frames gathered into one record
  std::string tls_failure_;          // the handshake failed: close once the alert is out
  msghdr msg_{};

  MemberCompletion<LinkConn, &LinkConn::on_recv> recv_c_{this};
  MemberCompletion<LinkConn, &LinkConn::on_send> send_c_{this};
};

}  // namespace mirror
