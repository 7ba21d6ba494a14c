// Connection: one NBD client, from greeting to close, driven entirely by
// io_uring completions on the server's Loop.
//
// Transmission: requests are parsed from a receive buffer (write payloads
// that do not fit are received straight into the request's buffer, and
// after a big write only the next header is, so a run of big writes is never
// copied out of the receive buffer), handed
// to the export's Backend, and replied to in completion order. Replies are
// queued and sent with one sendmsg at a time, batched. Backpressure: when
// too many requests are in flight or too many payload bytes are held (say, a
// client that never reads its replies), the connection stops reading.
//
// TLS: after an acknowledged NBD_OPT_STARTTLS every byte on the socket is
// ciphertext. Received ciphertext is fed to a TlsChannel and the plaintext
// lands in the same input buffer the codec and the request parser read
// (never straight into a write's buffer); replies are encrypted in batches of
// at most kTlsBatch bytes and the ciphertext sent with one send at a time.
// Everything stays on the Loop: a TlsChannel only transforms memory.
//
// Lifetime: owned by NbdServer. close() shuts the socket down; the object is
// destroyed once no io_uring operation and no backend request is pending.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "buffer.h"
#include "codec.h"
#include "tls.h"
#include "uring.h"
#include "unique_fd.h"

namespace mirror {

class NbdServer;

class Connection {
 public:
  Connection(NbdServer& server, UniqueFd fd, std::string peer, uint64_t now_ms);
  ~Connection();

  void start();
  // For a peer that never negotiates (the kernel's NBD client behind a
  // socketpair): serves `info` in the transmission phase straight away, with
  // the flags a network client is told (NbdServer::kernel_flags) and simple
  // replies only.
  void start_transmission(const nbd::ExportInfo* info, Backend* backend);
  // Graceful: stop reading requests, answer those in flight, then close.
  void drain();
  // Hard close (protocol violation, error, client gone).
  void close(const char* why);

  bool in_handshake() const { return phase_ == Phase::kHandshake; }
  uint64_t started_ms() const { return started_ms_; }
  const std::string& peer() const { return peer_; }

 private:
  struct Request;
  enum class Phase { kHandshake, kTransmission, kDraining, kClosing };

  void post_recv();
  void on_recv(int res, uint32_t flags);
  void on_send(int res, uint32_t flags);
  void handshake_input();
  void transmission_input();
  bool can_accept_request() const;
  void start_request(Request* r);
  void request_done(Request* r, int err);
  void reply_error(Request* r, uint32_t nbd_error, const char* msg);
  void build_reply(Request* r, int err);
  void queue_reply(Request* r);
  void kick_send();
  Request* new_request();
  void free_request(Request* r);
  void maybe_destroy();
  void send_handshake();
  void enter_transmission();
  void check_drained();
  void compact_input();
  // TLS.
  void begin_tls();
  void tls_step();
  Status tls_fill_input(size_t* got);
  bool tls_pull_and_dispatch();
  void tls_encrypt(const iovec* iov, size_t n, size_t max_plain);
  void send_cipher();
  void dispatch_input();

  NbdServer& server_;
  UniqueFd fd_;
  std::string peer_;
  uint64_t started_ms_;
  Phase phase_ = Phase::kHandshake;

  // Handshake.
  std::unique_ptr<nbd::Handshake> handshake_;
  std::vector<uint8_t> hs_out_;
  size_t hs_sent_ = 0;
  bool hs_done_after_send_ = false;
  bool hs_close_after_send_ = false;
  bool hs_starttls_after_send_ = false;
  nbd::Negotiated negotiated_;
  Backend* backend_ = nullptr;

  // Input.
  std::vector<uint8_t> in_;
  size_t in_start_ = 0, in_end_ = 0;
  Request* payload_req_ = nullptr;  // a write whose payload is still arriving
  uint32_t payload_have_ = 0;
  bool recv_posted_ = false;
  bool recv_into_payload_ = false;
  bool big_payload_last_ = false;  // the last request carried >= kBigPayload bytes
  bool disc_received_ = false;

  // Output.
  std::deque<Request*> send_q_;
  bool send_posted_ = false;
  std::vector<iovec> send_iov_;
  msghdr send_msg_{};
  bool sending_handshake_ = false;

  // TLS, once STARTTLS was acknowledged.
  std::unique_ptr<TlsChannel> tls_;
  bool tls_handshaking_ = false;
  std::vector<uint8_t> tls_in_;   // ciphertext received
  std::vector<uint8_t> tls_out_;  // ciphertext being sent
  size_t tls_out_sent_ = 0;
  size_t tls_plain_ = 0;          // plaintext bytes tls_out_ carries
  bool sending_tls_only_ = false;  // tls_out_ is TLS's own (handshake, alert)

  // Accounting.
  uint32_t requests_in_flight_ = 0;  // started and not yet replied
  size_t bytes_held_ = 0;
  int uring_ops_ = 0;  // recv/send/cancel submitted and not completed
  bool destroyed_ = false;
  std::vector<std::unique_ptr<Request>> free_requests_;

  MemberCompletion<Connection, &Connection::on_recv> recv_completion_{this};
  MemberCompletion<Connection, &Connection::on_send> send_completion_{this};
};

}  // namespace mirror
