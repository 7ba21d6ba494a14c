// TLS with OpenSSL driven through memory BIOs, for the replication link
// (docs/replication-protocol.md, "TLS") and the NBD exports (docs/nbd-server.md,
// "TLS"): the socket stays the connection's, read and written by io_uring; a
// TlsChannel only turns ciphertext into plaintext and back, so no thread and
// no blocking call is involved.
//
// Errors are values and safe to log: they never hold key material.
// Thread: one TlsChannel is used by one thread (the Loop's); a TlsContext may
// be shared by the channels of one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "result.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct bio_st BIO;

namespace mirror {

// What an established session uses, for `mirrorctl status`.
struct TlsInfo {
  std::string protocol;      // "TLSv1.3"
  std::string cipher;        // "TLS_AES_256_GCM_SHA384"
  std::string peer_subject;  // the peer certificate's subject, "CN = beta"
};

struct TlsFiles {
  std::string ca;    // PEM: the CA peers' certificates must chain to; empty: peers unverified
  std::string cert;  // PEM: this node's certificate (chain)
  std::string key;   // PEM: its private key; must not be readable by group or others
};

// How a context is used; the defaults are the replication link's.
struct TlsOptions {
  // The configuration keys of TlsFiles' members are KEY_PREFIX-ca, -cert and
  // -key: errors name them so the operator knows which line to fix.
  std::string key_prefix = "tls";
  // Oldest protocol accepted. The link is TLS 1.3 only; NBD clients must be
  // offered TLS 1.2 too (the NBD spec's "TLS versions").
  int min_version = 0x0304;  // TLS1_3_VERSION
  // This side also dials (the replication link: either node connects), so
  // its certificate serves as a client certificate too.
  bool dials = true;
};

class TlsContext {
 public:
  // Loads and checks the files. `warning` gets a line to log when this
  // node's own certificate is expired or not yet valid, or its extended key
  // usage leaves out a role it plays (serverAuth; clientAuth if it dials):
  // that is not fatal (the primary keeps serving its clients), but the peer
  // will refuse it.
  // With `files.ca` set, the peer must present a certificate that chains to
  // it (both directions: mutual TLS); without, the peer is not asked for one.
  static Result<std::shared_ptr<TlsContext>> create(const TlsFiles& files, std::string* warning,
                                                    const TlsOptions& options = {});
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  SSL_CTX* get() const { return ctx_; }

 private:
  explicit TlsContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
};

class TlsChannel {
 public:
  // `client`: this side dialled. `peer_name`: the name the peer's
  // certificate must carry (a DNS subjectAltName, or the CN without one);
  // empty: any certificate the CA signed will do.
  TlsChannel(std::shared_ptr<TlsContext> ctx, bool client, const std::string& peer_name);
  // A peer whose first four bytes are `magic` speaks the plaintext protocol:
  // a failed handshake then says `message` rather than OpenSSL's reason.
  void set_plaintext_hint(uint32_t magic, std::string message);
  ~TlsChannel();
  TlsChannel(const TlsChannel&) = delete;
  TlsChannel& operator=(const TlsChannel&) = delete;

  // Ciphertext received from the socket.
  void feed(const uint8_t* p, size_t n);
  // Advances the handshake: true once it is complete, an error saying why
  // the peer (or its certificate) was refused.
  Result<bool> handshake();
  bool established() const { return established_; }
  // Decrypts into p: the bytes produced, 0 if more ciphertext is needed.
  Result<size_t> read(uint8_t* p, size_t n);
  // Encrypts all of p (memory BIOs never block).
  Status write(const uint8_t* p, size_t n);
  // Received bytes not yet returned by read() (decrypted or not): read()
  // may have more to give without another receive.
  bool has_buffered_input() const;
  // Ciphertext waiting to be sent.
  size_t pending_output() const;
  // Moves up to `max` bytes of it to `out`; returns how many.
  size_t take_output(uint8_t* out, size_t max);
  // Only once established().
  TlsInfo info() const;
  // "TLSv1.3 TLS_AES_256_GCM_SHA384, peer CN = beta": for the log.
  std::string describe() const;

 private:
  std::string failure(int ret);

  std::shared_ptr<TlsContext> ctx_;
  SSL* ssl_ = nullptr;
  BIO* rbio_ = nullptr;  // owned by ssl_
  BIO* wbio_ = nullptr;  // owned by ssl_
  std::string peer_name_;
  std::string refused_subject_;  // set by the verify callback
  bool established_ = false;
  uint8_t first_bytes_[4] = {};
  size_t first_len_ = 0;
  uint32_t plaintext_magic_ = 0;
  std::string plaintext_message_;
};

}  // namespace mirror
