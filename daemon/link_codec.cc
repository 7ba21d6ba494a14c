#include "link_codec.h"

#include <cstring>

#include "wire.h"

namespace mirror::link {

using wire::Reader;
using wire::Writer;

void encode_header(uint8_t out[kHeaderSize], const Header& h) {
  wire::put_u32(out, kMagic);
  wire::put_u16(out + 4, static_cast<uint16_t>(h.type));
  wire::put_u16(out + 6, h.flags);
  wire::put_u64(out + 8, h.id);
  wire::put_u64(out + 16, h.offset);
  wire::put_u32(out + 24, h.length);
  wire::put_u32(out + 28, h.payload);
}

Result<Header> decode_header(std::span<const uint8_t, kHeaderSize> in) {
  if (wire::get_u32(in.data()) != kMagic) return Error{EPROTO, "bad link message magic"};
  Header h;
  uint16_t type = wire::get_u16(&in[4]);
  h.flags = wire::get_u16(&in[6]);
  h.id = wire::get_u64(&in[8]);
  h.offset = wire::get_u64(&in[16]);
  h.length = wire::get_u32(&in[24]);
  h.payload = wire::get_u32(&in[28]);
  h.type = static_cast<Type>(type);
  uint32_t max_payload = kMaxControl;
  switch (h.type) {
    case Type::kWrite:
      if (h.payload != h.length) return Error{EPROTO, "WRITE payload differs from its length"};
      max_payload = kMaxData;
      break;
    case Type::kTrim:
    case Type::kZero:
    case Type::kFlush:
    case Type::kPing:
    case Type::kSplit:
    case Type::kReply:
    case Type::kResize:
    case Type::kRead:
    case Type::kDetach:
      max_payload = 0;
      break;
    case Type::kHello:
    case Type::kAuth:
    case Type::kState:
    case Type::kPlan:
    case Type::kError:
    case Type::kSyncDone:
    case Type::kDirtyRanges:
    case Type::kVerify:
    case Type::kVerifyReply:
      break;
    case Type::kResizeReply:
      max_payload = kMaxResizeMessage;
      break;
    case Type::kReadReply:
      max_payload = kMaxData;
      break;
    case Type::kRelay:
    case Type::kRelayReply:
      max_payload = kMaxRelay;
      break;
    default:
      return Error{EPROTO, "unknown link message type " + std::to_string(type)};
  }
  if (h.payload > max_payload) return Error{EPROTO, "link message payload too large"};
  return h;
}

namespace {
void put_str(Writer& w, std::string_view s) { w.u16(uint16_t(s.size())).str(s); }
bool get_str(Reader& r, std::string* s) {
  uint16_t n = r.u16();
  if (n > kMaxName) return false;
  *s = std::string(r.str(n));
  return !r.failed();
}
void put_gen(Writer& w, const Generation& g) {
  w.u64(g.current).u64(g.bitmap).u64(g.history0).u64(g.history1);
}
Generation get_gen(Reader& r) {
  Generation g;
  g.current = r.u64();
  g.bitmap = r.u64();
  g.history0 = r.u64();
  g.history1 = r.u64();
  return g;
}
Error malformed(const char* what) { return Error{EPROTO, std::string("malformed ") + what}; }
}  // namespace

std::vector<uint8_t> encode_hello(const Hello& h) {
  std::vector<uint8_t> out;
  Writer w(out);
  w.u16(h.version);
  put_str(w, h.node);
  put_str(w, h.volume);
  w.u64(h.size).bytes(h.nonce);
  return out;
}

Result<Hello> decode_hello(std::span<const uint8_t> p) {
  Reader r(p);
  Hello h;
  h.version = r.u16();
  if (!get_str(r, &h.node) || !get_str(r, &h.volume)) return malformed("HELLO");
  h.size = r.u64();
  auto n = r.bytes(kNonceSize);
  if (r.failed() || r.remaining() != 0 || n.size() != kNonceSize) return malformed("HELLO");
  std::memcpy(h.nonce.data(), n.data(), kNonceSize);
  return h;
}

std::vector<uint8_t> encode_state(const State& s) {
  std::vector<uint8_t> out;
  Writer w(out);
  w.u8(s.role).u32(s.flags);
  put_gen(w, s.gen);
  w.u64(s.dirty_bytes);
  return out;
}

Result<State> decode_state(std::span<const uint8_t> p) {
  Reader r(p);
  State s;
  uint8_t role = r.u8();
  s.flags = r.u32();
  s.gen = get_gen(r);
  s.dirty_bytes = r.u64();
  if (r.failed() || r.remaining() != 0 || role > State::kPrimary) return malformed("STATE");
  s.role = static_cast<State::Role>(role);
  return s;
}

std::vector<uint8_t> encode_plan(const Plan& p) {
  std::vector<uint8_t> out;
  Writer w(out);
  w.u8(p.kind);
  put_gen(w, p.gen);
  w.u64(p.bytes);
  return out;
}

Result<Plan> decode_plan(std::span<const uint8_t> in) {
  Reader r(in);
  Plan p;
  uint8_t kind = r.u8();
  p.gen = get_gen(r);
  p.bytes = r.u64();
  if (r.failed() || r.remaining() != 0 || kind > Plan::kStandby) return malformed("PLAN");
  p.kind = static_cast<Plan::Kind>(kind);
  return p;
}

std::vector<uint8_t> encode_error(const ErrorMsg& e) {
  std::vector<uint8_t> out;
  Writer w(out);
  std::string_view m(e.message);
  w.u32(e.code).u16(uint16_t(std::min<size_t>(m.size(), 4096))).str(m.substr(0, 4096));
  return out;
}

Result<ErrorMsg> decode_error(std::span<const uint8_t> p) {
  Reader r(p);
  ErrorMsg e;
  e.code = r.u32();
  uint16_t n = r.u16();
  e.message = std::string(r.str(n));
  if (r.failed() || r.remaining() != 0 || n > 4096) return malformed("ERROR");
  return e;
}

std::vector<uint8_t> encode_relay(std::string_view json) {
  return std::vector<uint8_t>(json.begin(), json.end());
}

Result<std::string> decode_relay(std::span<const uint8_t> p) {
  if (p.empty() || p.size() > kMaxRelay) return malformed("RELAY");
  for (uint8_t c : p) {
    if (c == 0 || c == '\n') return malformed("RELAY");
  }
  return std::string(p.begin(), p.end());
}

std::vector<uint8_t> encode_generation(const Generation& g) {
  std::vector<uint8_t> out;
  Writer w(out);
  put_gen(w, g);
  return out;
}

Result<Generation> decode_generation(std::span<const uint8_t> p) {
  Reader r(p);
  Generation g = get_gen(r);
  if (r.failed() || r.remaining() != 0) return malformed("generation");
  return g;
}

std::vector<uint8_t> encode_ranges(std::span<const Range> ranges) {
  std::vector<uint8_t> out;
  Writer w(out);
  w.u32(uint32_t(ranges.size()));
  for (const Range& x : ranges) w.u64(x.offset).u64(x.length);
  return out;
}

Result<std::vector<Range>> decode_ranges(std::span<const uint8_t> p) {
  Reader r(p);
  uint32_t n = r.u32();
  if (r.failed() || uint64_t(n) * 16 != r.remaining()) return malformed("DIRTY_RANGES");
  std::vector<Range> v;
  v.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    Range x;
    x.offset = r.u64();
    x.length = r.u64();
    v.push_back(x);
  }
  return v;
}

std::vector<uint8_t> encode_verify(uint32_t region) {
  std::vector<uint8_t> out;
  Writer w(out);
  w.u32(region);
  return out;
}

Result<uint32_t> decode_verify(const Header& h, std::span<const uint8_t> p) {
  Reader r(p);
  uint32_t region = r.u32();
  if (r.failed() || r.remaining() != 0) return malformed("VERIFY");
  if (region < kMinVerifyRegion || (region & (region - 1)) != 0)
    return Error{EPROTO, "VERIFY: region size " + std::to_string(region) +
                             " is not a power of two >= " + std::to_string(kMinVerifyRegion)};
  if (h.length == 0 || h.length > kMaxVerifyLength)
    return Error{EPROTO, "VERIFY: length " + std::to_string(h.length) + " is not 1.." +
                             std::to_string(kMaxVerifyLength)};
  return region;
}

std::vector<uint8_t> encode_digests(std::span<const Digest> d) {
  std::vector<uint8_t> out;
  out.reserve(d.size() * kDigestSize);
  for (const Digest& x : d) out.insert(out.end(), x.begin(), x.end());
  return out;
}

Result<std::vector<Digest>> decode_digests(std::span<const uint8_t> p, uint64_t expected) {
  if (p.size() != expected * kDigestSize)
    return Error{EPROTO, "VERIFY_REPLY: " + std::to_string(p.size()) + " bytes of digests, " +
                             "expected " + std::to_string(expected * kDigestSize)};
  std::vector<Digest> v(expected);
  for (uint64_t i = 0; i < expected; ++i)
    std::memcpy(v[i].data(), p.data() + i * kDigestSize, kDigestSize);
  return v;
}

std::vector<uint8_t> encode_resize(uint64_t id, uint64_t new_size) {
  return encode_message({.type = Type::kResize, .id = id, .offset = new_size}, {});
}

Result<uint64_t> decode_resize(const Header& h) {
  if (h.offset == 0 || h.offset % kResizeAlign != 0 || h.length != 0 || h.flags != 0)
    return Error{EPROTO, "RESIZE: size " + std::to_string(h.offset) +
                             " is not a positive multiple of " + std::to_string(kResizeAlign)};
  return h.offset;
}

std::vector<uint8_t> encode_resize_reply(uint64_t id, const ResizeReply& r) {
  Header h{.type = Type::kResizeReply, .id = id, .offset = r.size, .length = r.err};
  if (r.zeroed) h.flags = kResizeZeroed;
  std::string_view m(r.message);
  m = m.substr(0, kMaxResizeMessage);
  return encode_message(h, {reinterpret_cast<const uint8_t*>(m.data()), m.size()});
}

Result<ResizeReply> decode_resize_reply(const Header& h, std::span<const uint8_t> p) {
  if ((h.flags & ~kResizeZeroed) != 0) return malformed("RESIZE_REPLY (unknown flags)");
  if (p.size() > kMaxResizeMessage) return malformed("RESIZE_REPLY (message too long)");
  ResizeReply r;
  r.err = h.length;
  r.size = h.offset;
  r.zeroed = h.flags & kResizeZeroed;
  r.message.assign(p.begin(), p.end());
  return r;
}

std::vector<uint8_t> encode_message(Header h, std::span<const uint8_t> payload) {
  h.payload = uint32_t(payload.size());
  std::vector<uint8_t> out(kHeaderSize);
  encode_header(out.data(), h);
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

}  // namespace mirror::link
