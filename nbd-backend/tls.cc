#include "tls.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "unique_fd.h"

namespace mirror {

namespace {

// The reason of the last OpenSSL error on this thread (never key bytes:
// OpenSSL's reasons are fixed strings), and clears the queue so a later
// failure does not report a stale one.
std::string openssl_reason() {
  unsigned long e = ERR_peek_last_error();
  const char* r = e ? ERR_reason_error_string(e) : nullptr;
  std::string s = r ? r : (e ? "error " + std::to_string(ERR_GET_REASON(e)) : "unknown error");
  ERR_clear_error();
  return s;
}

std::string subject_of(const X509* cert) {
  if (!cert) return "no certificate";
  BIO* b = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB);
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  std::string s(p, size_t(n > 0 ? n : 0));
  BIO_free(b);
  return s.size() > 200 ? s.substr(0, 200) + "..." : s;
}

// OpenSSL keeps no peer certificate when verification fails: remember whose
// certificate it was for the log line.
int verify_callback(int ok, X509_STORE_CTX* store) {
  if (ok) return ok;
  auto* ssl = static_cast<SSL*>(
      X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* subject = ssl ? static_cast<std::string*>(SSL_get_app_data(ssl)) : nullptr;
  if (subject && subject->empty()) *subject = subject_of(X509_STORE_CTX_get0_cert(store));
  return ok;
}

std::string time_text(const ASN1_TIME* t) {
  BIO* b = BIO_new(BIO_s_mem());
  ASN1_TIME_print(b, t);
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  std::string s(p, size_t(n > 0 ? n : 0));
  BIO_free(b);
  return s;
}

// The private key file: a regular file only its owner can read, as the
// shared secret's file must be (docs/configuration.md).
Status check_key_file(const std::string& key_name, const std::string& path) {
  std::string what = key_name + " \"" + path + "\"";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd.valid()) return errno_error(what + ": cannot open");
  struct stat st {};
  if (::fstat(fd.get(), &st) < 0) return errno_error(what + ": cannot stat");
  if (!S_ISREG(st.st_mode)) return Error{EINVAL, what + ": not a regular file"};
  if (st.st_mode & (S_IRGRP | S_IROTH))
    return Error{EPERM, what + " is readable by group or others; run chmod 600 " + path};
  return {};
}

// OpenSSL's reason for a failed handshake or read, in the operator's terms.
std::string explain(const std::string& reason) {
  if (reason.find("alert") != std::string::npos)
    return "the peer refused this node (" + reason + "); the peer's log says why";
  if (reason == "wrong version number" || reason == "packet length too long" ||
      reason == "record layer failure")
    return "the peer does not speak TLS (" + reason + ")";
  return reason;
}

}  // namespace

Result<std::shared_ptr<TlsContext>> TlsContext::create(const TlsFiles& files,
                                                       std::string* warning,
                                                       const TlsOptions& options) {
  const std::string ca_key = options.key_prefix + "-ca";
  const std::string cert_key = options.key_prefix + "-cert";
  const std::string key_key = options.key_prefix + "-key";
  ERR_clear_error();
  SSL_CTX* raw = SSL_CTX_new(TLS_method());
  if (!raw) return Error{ENOMEM, "TLS: cannot create a context: " + openssl_reason()};
  std::shared_ptr<TlsContext> ctx(new TlsContext(raw));
  // Forward secrecy and AEAD ciphers without configuration from 1.3; 1.2
  // only where a protocol asks for it, with OpenSSL's default ciphers.
  SSL_CTX_set_min_proto_version(raw, options.min_version);
  // Long-lived connections: no session resumption to get wrong.
  SSL_CTX_set_num_tickets(raw, 0);
  SSL_CTX_set_session_cache_mode(raw, SSL_SESS_CACHE_OFF);
  if (!files.ca.empty()) {
    // Both sides prove who they are, in both directions.
    SSL_CTX_set_verify(raw, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_callback);
    if (SSL_CTX_load_verify_locations(raw, files.ca.c_str(), nullptr) != 1)
      return Error{EINVAL, ca_key + " \"" + files.ca + "\": cannot load the CA: " + openssl_reason()};
  }
  if (SSL_CTX_use_certificate_chain_file(raw, files.cert.c_str()) != 1)
    return Error{EINVAL, cert_key + " \"" + files.cert +
                             "\": cannot load the certificate: " + openssl_reason()};
  if (auto st = check_key_file(key_key, files.key); !st) return st.error();
  if (SSL_CTX_use_PrivateKey_file(raw, files.key.c_str(), SSL_FILETYPE_PEM) != 1)
    return Error{EINVAL, key_key + " \"" + files.key + "\": cannot load the private key: " +
                             openssl_reason()};
  if (SSL_CTX_check_private_key(raw) != 1)
    return Error{EINVAL, key_key + " \"" + files.key +
                             "\" does not belong to the certificate in \"" + files.cert + "\""};
  X509* own = SSL_CTX_get0_certificate(raw);
  if (own && warning) {
    const std::string which = cert_key + " \"" + files.cert + "\" (" + subject_of(own) + ")";
    if (X509_cmp_current_time(X509_get0_notAfter(own)) < 0) {
      *warning = which + " expired on " + time_text(X509_get0_notAfter(own)) +
                 ": peers will refuse it";
    } else if (X509_cmp_current_time(X509_get0_notBefore(own)) > 0) {
      *warning = which + " is not valid before " + time_text(X509_get0_notBefore(own)) +
                 ": peers will refuse it";
    }
    // No extension: any purpose. With one, OpenSSL's peers check the role.
    // A link certificate without clientAuth works while the other node
    // dials, and is refused the first time this one does (a rejoin, a
    // restart of the other node): say so now.
    uint32_t xku = X509_get_extended_key_usage(own);
    std::string missing;
    if (xku != UINT32_MAX) {
      if (!(xku & XKU_SSL_SERVER)) missing = "serverAuth";
      if (options.dials && !(xku & XKU_SSL_CLIENT))
        missing += std::string(missing.empty() ? "" : " and ") + "clientAuth";
    }
    if (!missing.empty()) {
      if (!warning->empty()) *warning += "; ";
      *warning += which + " has no " + missing + " extended key usage: peers refuse it when "
                  "this node " + (missing == "clientAuth" ? "dials" : "accepts or dials") +
                  " (\"unsuitable certificate purpose\"); issue it with extendedKeyUsage = " +
                  (options.dials ? "serverAuth, clientAuth" : "serverAuth");
    }
  }
  return ctx;
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

TlsChannel::TlsChannel(std::shared_ptr<TlsContext> ctx, bool client, const std::string& peer_name)
    : ctx_(std::move(ctx)), peer_name_(peer_name) {
  ssl_ = SSL_new(ctx_->get());
  if (!ssl_) std::abort();  // only out of memory; nothing sensible to continue with
  rbio_ = BIO_new(BIO_s_mem());
  wbio_ = BIO_new(BIO_s_mem());
  if (!rbio_ || !wbio_) std::abort();
  // An empty memory BIO means "want more", not end of file.
  BIO_set_mem_eof_return(rbio_, -1);
  SSL_set_bio(ssl_, rbio_, wbio_);
  SSL_set_app_data(ssl_, &refused_subject_);
  // The peer's certificate must name the peer node, whichever side dialled.
  if (!peer_name_.empty()) {
    SSL_set_hostflags(ssl_, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    SSL_set1_host(ssl_, peer_name_.c_str());
  }
  if (client) {
    SSL_set_tlsext_host_name(ssl_, peer_name_.c_str());
    SSL_set_connect_state(ssl_);
  } else {
    SSL_set_accept_state(ssl_);
  }
}

TlsChannel::~TlsChannel() { SSL_free(ssl_); }

void TlsChannel::set_plaintext_hint(uint32_t magic, std::string message) {
  plaintext_magic_ = magic;
  plaintext_message_ = std::move(message);
}

void TlsChannel::feed(const uint8_t* p, size_t n) {
  // Kept to recognise a plaintext peer (failure()).
  for (size_t i = 0; first_len_ < sizeof first_bytes_ && i < n; ++i) first_bytes_[first_len_++] = p[i];
  if (n > 0) BIO_write(rbio_, p, int(n));
}

Result<bool> TlsChannel::handshake() {
  if (established_) return true;
  ERR_clear_error();
  int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    established_ = true;
    return true;
  }
  int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return false;
  return Error{EPROTO, failure(r)};
}

// Why the handshake failed, in the operator's terms. Nothing secret: the
// names in certificates are public, OpenSSL's reasons are fixed strings.
std::string TlsChannel::failure(int) {
  uint32_t magic = 0;
  if (first_len_ == sizeof first_bytes_) {
    magic = uint32_t(first_bytes_[0]) << 24 | uint32_t(first_bytes_[1]) << 16 |
            uint32_t(first_bytes_[2]) << 8 | first_bytes_[3];
  }
  if (!plaintext_message_.empty() && magic == plaintext_magic_) {
    ERR_clear_error();
    return "TLS handshake failed: " + plaintext_message_;
  }
  long v = SSL_get_verify_result(ssl_);
  if (v != X509_V_OK) {
    std::string why = v == X509_V_ERR_HOSTNAME_MISMATCH
                          ? "it does not name node '" + peer_name_ + "'"
                          : X509_verify_cert_error_string(v);
    ERR_clear_error();
    return "TLS handshake failed: the peer's certificate (" + refused_subject_ +
           ") was refused: " + why;
  }
  return "TLS handshake failed: " + explain(openssl_reason());
}

Result<size_t> TlsChannel::read(uint8_t* p, size_t n) {
  ERR_clear_error();
  int r = SSL_read(ssl_, p, int(std::min<size_t>(n, INT32_MAX)));
  if (r > 0) return size_t(r);
  int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return size_t(0);
  if (e == SSL_ERROR_ZERO_RETURN) return Error{ECONNRESET, "peer closed the TLS session"};
  // In TLS 1.3 the server checks the client's certificate after the client
  // finished its handshake: a refusal arrives here, as an alert.
  return Error{EPROTO, "TLS: " + explain(openssl_reason())};
}

Status TlsChannel::write(const uint8_t* p, size_t n) {
  while (n > 0) {
    ERR_clear_error();
    int r = SSL_write(ssl_, p, int(std::min<size_t>(n, 1 << 30)));
    if (r <= 0) return Error{EPROTO, "TLS: " + openssl_reason()};
    p += r;
    n -= size_t(r);
  }
  return {};
}

bool TlsChannel::has_buffered_input() const {
  return SSL_pending(ssl_) > 0 || BIO_ctrl_pending(rbio_) > 0;
}

size_t TlsChannel::pending_output() const { return BIO_ctrl_pending(wbio_); }

size_t TlsChannel::take_output(uint8_t* out, size_t max) {
  size_t n = std::min(pending_output(), max);
  if (n == 0) return 0;
  int r = BIO_read(wbio_, out, int(n));
  return r > 0 ? size_t(r) : 0;
}

TlsInfo TlsChannel::info() const {
  return {SSL_get_version(ssl_), SSL_get_cipher_name(ssl_),
          subject_of(SSL_get0_peer_certificate(ssl_))};
}

std::string TlsChannel::describe() const {
  TlsInfo i = info();
  return i.protocol + " " + i.cipher + ", peer " + i.peer_subject;
}

}  // namespace mirror
