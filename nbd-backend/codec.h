// The NBD codec: pure functions and a pure state machine. Bytes in, parsed
// messages (or a protocol error) and bytes out. No sockets, no clocks, no
// files: everything here is unit tested from the spec's byte layouts and
// fuzzed (tests/fuzz/fuzz_nbd_codec.cc).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proto.h"

namespace mirror::nbd {

// ---------------------------------------------------------------- exports --

// What the server knows about one export. Owned by the ExportCatalog.
struct ExportInfo {
  std::string name;
  std::string description;
  uint64_t size = 0;
  bool read_only = false;
  bool can_trim = true;        // punching holes is supported by the backend
  uint32_t min_block = 1;
  uint32_t preferred_block = 4096;
  uint32_t max_block = 32 << 20;  // largest payload we accept or send
  // Metadata contexts this export offers; the id of contexts[i] is i + 1.
  std::vector<std::string> meta_contexts{"base:allocation"};

  // Transmission flags, truthful for this export and the negotiated options.
  uint16_t transmission_flags(bool structured_replies) const;
};

// Looks exports up by name during the handshake. Implementations must stay
// valid for the lifetime of every Handshake that uses them.
class ExportCatalog {
 public:
  virtual ~ExportCatalog() = default;
  virtual std::vector<const ExportInfo*> list() const = 0;
  // The empty name selects the default export. nullptr when unknown.
  virtual const ExportInfo* find(std::string_view name) const = 0;
};

// -------------------------------------------------------------- handshake --

// What the handshake agreed on, valid once Handshake::feed returns kDone.
struct Negotiated {
  const ExportInfo* export_info = nullptr;
  bool structured_replies = false;
  bool no_zeroes = false;
  std::vector<uint32_t> meta_context_ids;  // selected by SET_META_CONTEXT
  uint16_t transmission_flags = 0;
};

// The server's TLS mode, in the spec's terms ("TLS support"):
//   kOff      NOTLS: NBD_OPT_STARTTLS is answered NBD_REP_ERR_UNSUP.
//   kOptional SELECTIVETLS with no TLS-only export: STARTTLS is accepted,
//             and every export is served without it too.
//   kRequire  FORCEDTLS: before STARTTLS every option but ABORT is answered
//             NBD_REP_ERR_TLS_REQD, and EXPORT_NAME (which cannot be
//             answered with an error) ends the session.
enum class TlsMode { kOff, kOptional, kRequire };
// "off", "optional", "require": the configuration's spelling.
std::string_view to_string(TlsMode m);
bool parse_tls_mode(std::string_view s, TlsMode* out);

// Server side of fixed-newstyle negotiation as a state machine. The caller
// sends greeting() first, then appends every received byte to its input
// buffer and calls feed(); feed consumes whole messages only and appends the
// server's replies to `out`. No state is kept outside this object.
//
// STARTTLS: feed returns kStartTls right after the NBD_OPT_STARTTLS it
// acknowledged. The caller sends `out` in plaintext, runs the TLS handshake
// on the bytes that follow (they are ciphertext: the consumed count stops at
// the option) and then keeps calling feed with the decrypted stream; option
// haggling restarts, with nothing negotiated before TLS kept.
class Handshake {
 public:
  enum class Status { kNeedMore, kDone, kClose, kStartTls };
  // Options longer than this are skipped and answered NBD_REP_ERR_TOO_BIG;
  // longer than kMaxOptionSkip the connection is dropped as abusive.
  static constexpr uint32_t kMaxOptionLen = 64 * 1024;
  static constexpr uint64_t kMaxOptionSkip = 16 << 20;
  static constexpr int kMaxOptions = 4096;  // per session, then drop

  explicit Handshake(const ExportCatalog& catalog, TlsMode tls = TlsMode::kOff)
      : catalog_(catalog), tls_mode_(tls) {}

  static void greeting(std::vector<uint8_t>& out);

  // Consumes a prefix of `in`; `consumed` says how much. On kDone the
  // transmission phase starts right after the consumed bytes; on kClose the
  // caller sends `out` (if any) and closes, `close_reason()` says why.
  Status feed(std::span<const uint8_t> in, size_t& consumed, std::vector<uint8_t>& out);

  const Negotiated& result() const { return result_; }
  // STARTTLS was acknowledged: everything after it runs over TLS.
  bool tls() const { return tls_; }
  const std::string& close_reason() const { return close_reason_; }

 private:
  enum class Phase { kClientFlags, kOptions, kSkipping, kDone, kClosed };
  Status step(std::span<const uint8_t> in, size_t& used, std::vector<uint8_t>& out);
  Status handle_option(uint32_t opt, std::span<const uint8_t> data, std::vector<uint8_t>& out);
  Status handle_info_go(uint32_t opt, std::span<const uint8_t> data, std::vector<uint8_t>& out);
  Status handle_meta(uint32_t opt, std::span<const uint8_t> data, std::vector<uint8_t>& out);
  Status handle_starttls(std::span<const uint8_t> data, std::vector<uint8_t>& out);
  bool tls_required() const { return tls_mode_ == TlsMode::kRequire && !tls_; }
  Status close(std::string why);
  void finish(const ExportInfo* e);

  const ExportCatalog& catalog_;
  const TlsMode tls_mode_;
  bool tls_ = false;
  bool told_tls_required_ = false;
  Phase phase_ = Phase::kClientFlags;
  bool fixed_newstyle_ = false;
  uint32_t skip_opt_ = 0;
  uint64_t skip_left_ = 0;
  int options_seen_ = 0;
  // Contexts chosen by SET_META_CONTEXT, and for which export.
  std::string meta_export_;
  std::vector<uint32_t> meta_ids_;
  Negotiated result_;
  std::string close_reason_;
};

// Option reply: magic, option, type, length, payload.
void encode_option_reply(std::vector<uint8_t>& out, uint32_t opt, uint32_t type,
                         std::span<const uint8_t> payload = {});
void encode_option_error(std::vector<uint8_t>& out, uint32_t opt, uint32_t type,
                         std::string_view message);

// ----------------------------------------------------------- transmission --

struct Request {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
};

// Decodes a 28-byte request header. Returns false on a wrong magic, which is
// not answerable: the stream cannot be resynchronised, so the caller closes.
bool decode_request(std::span<const uint8_t, kRequestHeaderSize> in, Request* out);
void encode_request(std::vector<uint8_t>& out, const Request& r);  // for tests and clients

// Validation outcome for a decoded request.
struct Verdict {
  uint32_t error = 0;        // NBD error to reply with, 0 when valid
  bool disconnect = false;   // unrecoverable (e.g. a payload too big to skip)
  uint32_t payload = 0;      // bytes of payload that follow the header
  const char* why = "";      // for the log
};

// Checks a request against the export and the negotiated options. Every rule
// says which error goes on the wire; see docs/nbd-server.md.
Verdict validate_request(const Request& r, const Negotiated& n);

// Error values: map an errno to one of the values the spec allows.
uint32_t errno_to_nbd(int err);

// Replies. Headers only: the caller sends payload bytes (read data) after.
void encode_simple_reply(uint8_t out[kSimpleReplySize], uint32_t error, uint64_t cookie);
void encode_chunk_header(uint8_t out[kChunkHeaderSize], uint16_t flags, uint16_t type,
                         uint64_t cookie, uint32_t length);

// One block-status extent as the base:allocation context reports it.
struct Extent {
  uint32_t length;
  uint32_t flags;  // kStateHole | kStateZero
};

// Full structured chunks built in a vector (small ones only).
void encode_error_chunk(std::vector<uint8_t>& out, uint64_t cookie, uint32_t error,
                        std::string_view message, bool done = true);
void encode_none_chunk(std::vector<uint8_t>& out, uint64_t cookie);
void encode_hole_chunk(std::vector<uint8_t>& out, uint64_t cookie, uint64_t offset,
                       uint32_t length, bool done);
void encode_block_status_chunk(std::vector<uint8_t>& out, uint64_t cookie, uint32_t context_id,
                               std::span<const Extent> extents, bool done);

}  // namespace mirror::nbd
