// The replication link's wire format (docs/replication-protocol.md): pure
// encoding and decoding, no sockets. Every message is a 32-byte header and a
// payload of header.payload bytes:
//
//   magic u32 | type u16 | flags u16 | id u64 | offset u64 | length u32 | payload u32
//
// All integers big-endian. `id` pairs a request with its REPLY.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace mirror::link {

inline constexpr uint32_t kMagic = 0x4d524c31;  // "MRL1"
inline constexpr uint16_t kVersion = 1;
inline constexpr size_t kHeaderSize = 32;
inline constexpr size_t kNonceSize = 32;
inline constexpr size_t kMacSize = 32;            // HMAC-SHA-256
inline constexpr uint32_t kMaxData = 32 << 20;    // largest WRITE payload
inline constexpr uint32_t kMaxControl = 1 << 20;  // largest non-data payload
inline constexpr size_t kMaxName = 255;

enum class Type : uint16_t {
  // Handshake, both directions.
  kHello = 1,
  kAuth = 2,
  kState = 3,
  kPlan = 4,      // primary -> secondary: what happens now
  kError = 5,     // either: a reason, then the sender closes
  // Control relay, either direction, once the session is active: a control
  // command (docs/control-protocol.md) run by the peer's daemon, and its
  // answer, paired by id. Payload: one JSON object, UTF-8, no newline.
  kRelay = 6,
  kRelayReply = 7,
  // Data, primary -> secondary; each is answered by a kReply with its id.
  kWrite = 16,
  kTrim = 17,
  kZero = 18,
  kFlush = 19,    // a barrier: covers every request received before it
  kSyncDone = 20, // resync finished: adopt the generation in the payload
  kPing = 21,
  kSplit = 22,    // the mirror is split; offset = the split's time (Unix ms)
  kVerify = 24,   // digest offset+length per region (payload: u32 region size)
  kResize = 25,   // grow the volume to `offset` bytes (online resize; no payload)
  kRead = 26,     // send back offset+length of this copy (no payload): a read the
                  // primary's disk failed
  kDetach = 27,   // the primary's disk failed and is detached: this copy is the only
                  // current one (no payload; REPLY once that is durable)
  // Secondary -> primary.
  kReply = 32,    // length = 0 or an errno
  kDirtyRanges = 33,  // the secondary's own changed regions (after a split)
  kVerifyReply = 34,  // answers kVerify: length = 0 or an errno; payload = digests
  kResizeReply = 35,  // answers kResize: length = 0 or an errno; payload = why (text)
  kReadReply = 36,    // answers kRead: length = 0 and payload = the data, or an errno
};

// HELLO's header flags: what the sender's daemon understands beyond the
// version's base set. A daemon built before a feature sends 0 there and
// ignores the bits it does not know, so the flags never break a handshake.
inline constexpr uint16_t kFeatureVerify = 1 << 0;  // kVerify / kVerifyReply
inline constexpr uint16_t kFeatureResize = 1 << 1;  // kResize / kResizeReply
// A primary that sends it takes kReply EOPNOTSUPP to a TRIM as "this copy
// kept its data" (its store cannot punch holes), not as a failed write.
inline constexpr uint16_t kFeatureTrimKept = 1 << 2;
// kRead / kReadReply: the secondary serves reads of its copy, which the
// primary asks for when its own disk fails a client's read.
inline constexpr uint16_t kFeatureRead = 1 << 3;
// kDetach: the secondary records that it holds the only current copy, so
// the primary can go on without its failed disk (on-io-error = detach).
inline constexpr uint16_t kFeatureDetach = 1 << 4;
// Once its DETACH is answered, the secondary's copy is the only one: a
// request its disk fails is answered with the error and flags nothing (a
// lone disk's failed write), so the primary passes the error to its client
// and keeps the link. Without it, the primary drops the link.
inline constexpr uint16_t kFeatureSoleErrors = 1 << 5;
inline constexpr uint16_t kFeatures = kFeatureVerify | kFeatureResize | kFeatureTrimKept |
                                      kFeatureRead | kFeatureDetach | kFeatureSoleErrors;

// Online verify: SHA-256 of each region of the range (docs/replication-protocol.md).
inline constexpr size_t kDigestSize = 32;
using Digest = std::array<uint8_t, kDigestSize>;
inline constexpr uint32_t kMaxVerifyLength = 8 << 20;  // per request
inline constexpr uint32_t kMinVerifyRegion = 4096;

// Flags of data messages.
inline constexpr uint16_t kFlagFua = 1 << 0;
inline constexpr uint16_t kFlagNoHole = 1 << 1;
inline constexpr uint16_t kFlagResync = 1 << 2;  // a resync copy, not a client write
// PLAN's flag: the primary's operator asked for a retry now (mirrorctl
// rejoin): a before-resync-target that failed runs again at once.
inline constexpr uint16_t kFlagRetryNow = 1 << 0;

struct Header {
  Type type = Type::kPing;
  uint16_t flags = 0;
  uint64_t id = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
  uint32_t payload = 0;
};

void encode_header(uint8_t out[kHeaderSize], const Header& h);
// Checks magic, type and the payload size each type allows.
Result<Header> decode_header(std::span<const uint8_t, kHeaderSize> in);

struct Generation {
  uint64_t current = 0, bitmap = 0, history0 = 0, history1 = 0;
  bool operator==(const Generation&) const = default;
};

struct Hello {
  uint16_t version = kVersion;
  std::string node;    // sender
  std::string volume;
  uint64_t size = 0;
  std::array<uint8_t, kNonceSize> nonce{};
};

struct State {
  enum Role : uint8_t { kSecondary = 0, kPrimary = 1 };
  Role role = kSecondary;
  uint32_t flags = 0;  // bitmap flags (docs/bitmap-format.md)
  Generation gen;
  uint64_t dirty_bytes = 0;
};

struct Plan {
  enum Kind : uint8_t {
    kInSync = 0,      // nothing to copy
    kBitmap = 1,      // the primary copies its dirty regions
    kFull = 2,        // the primary copies everything
    kUnion = 3,       // the secondary sends its dirty ranges, then as kBitmap
    kAdopt = 4,       // both known identical (initial-sync = skip)
    kStandby = 5,     // neither is primary: stay connected, copy nothing
  };
  Kind kind = kInSync;
  Generation gen;     // the primary's generation
  uint64_t bytes = 0; // to copy, as planned
};

struct ErrorMsg {
  uint32_t code = 0;  // errno-like
  std::string message;
};

struct Range {
  uint64_t offset, length;
};

std::vector<uint8_t> encode_hello(const Hello& h);
Result<Hello> decode_hello(std::span<const uint8_t> p);
std::vector<uint8_t> encode_state(const State& s);
Result<State> decode_state(std::span<const uint8_t> p);
std::vector<uint8_t> encode_plan(const Plan& p);
Result<Plan> decode_plan(std::span<const uint8_t> p);
std::vector<uint8_t> encode_error(const ErrorMsg& e);
Result<ErrorMsg> decode_error(std::span<const uint8_t> p);
std::vector<uint8_t> encode_generation(const Generation& g);
Result<Generation> decode_generation(std::span<const uint8_t> p);
std::vector<uint8_t> encode_ranges(std::span<const Range> r);
// RELAY and RELAY_REPLY: the JSON text as is. Decoding checks only the
// framing rules (not empty, at most kMaxRelay bytes, no NUL or newline); the
// control layer parses the JSON.
inline constexpr size_t kMaxRelay = 64 * 1024;
std::vector<uint8_t> encode_relay(std::string_view json);
Result<std::string> decode_relay(std::span<const uint8_t> p);
Result<std::vector<Range>> decode_ranges(std::span<const uint8_t> p);
// VERIFY's payload: the region size (a power of two, kMinVerifyRegion ..
// 2^31); decoding also checks the request's range (length 1 ..
// kMaxVerifyLength).
std::vector<uint8_t> encode_verify(uint32_t region);
Result<uint32_t> decode_verify(const Header& h, std::span<const uint8_t> p);
// The digests of `length` bytes in regions of `region` bytes (the last one
// may be shorter): how many a VERIFY_REPLY carries.
inline uint64_t verify_regions(uint64_t length, uint32_t region) {
  return (length + region - 1) / region;
}
// VERIFY_REPLY's payload: the digests, in order, back to back.
std::vector<uint8_t> encode_digests(std::span<const Digest> d);
Result<std::vector<Digest>> decode_digests(std::span<const uint8_t> p, uint64_t expected);

// Online resize (docs/replication-protocol.md, "Online resize"). RESIZE
// carries the new size in the header's offset: not 0, a multiple of
// kResizeAlign (the volume file's own rule). Its RESIZE_REPLY: length = 0 or
// an errno, offset = the size the sender serves now, flags kResizeZeroed
// when the sender's new area is known to read as zeros, and, with an errno,
// the reason as text (at most kMaxResizeMessage bytes).
inline constexpr uint64_t kResizeAlign = 4096;
inline constexpr uint16_t kResizeZeroed = 1 << 0;
inline constexpr size_t kMaxResizeMessage = 4096;
struct ResizeReply {
  uint32_t err = 0;
  uint64_t size = 0;
  bool zeroed = false;
  std::string message;
};
std::vector<uint8_t> encode_resize(uint64_t id, uint64_t new_size);
Result<uint64_t> decode_resize(const Header& h);
std::vector<uint8_t> encode_resize_reply(uint64_t id, const ResizeReply& r);
Result<ResizeReply> decode_resize_reply(const Header& h, std::span<const uint8_t> p);

// A full message (header + payload) in one buffer: for small messages.
std::vector<uint8_t> encode_message(Header h, std::span<const uint8_t> payload);

}  // namespace mirror::link
