// Fuzzes the replication link codec (daemon/link_codec.h): a stream of
// headers and payloads as a peer could send them. Invariants: decoding never
// crashes; a decoded header respects the size limits of its type; whatever
// decodes re-encodes to the same bytes (differential round trip).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "link_codec.h"

using namespace mirror::link;

namespace {
void check(bool ok) {
  if (!ok) std::abort();
}

void payload_round_trip(const Header& hdr, std::span<const uint8_t> p) {
  switch (hdr.type) {
    case Type::kHello:
      if (auto h = decode_hello(p)) {
        auto again = encode_hello(*h);
        check(again.size() == p.size() && std::memcmp(again.data(), p.data(), p.size()) == 0);
      }
      break;
    case Type::kState:
      if (auto s = decode_state(p)) check(encode_state(*s) == std::vector<uint8_t>(p.begin(), p.end()));
      break;
    case Type::kPlan:
      if (auto x = decode_plan(p)) check(encode_plan(*x) == std::vector<uint8_t>(p.begin(), p.end()));
      break;
    case Type::kError:
      if (auto e = decode_error(p)) check(encode_error(*e) == std::vector<uint8_t>(p.begin(), p.end()));
      break;
    case Type::kSyncDone:
      if (auto g = decode_generation(p))
        check(encode_generation(*g) == std::vector<uint8_t>(p.begin(), p.end()));
      break;
    case Type::kDirtyRanges:
      if (auto r = decode_ranges(p)) check(encode_ranges(*r) == std::vector<uint8_t>(p.begin(), p.end()));
      break;
    case Type::kVerify:
      if (auto r = decode_verify(hdr, p)) {
        check(*r >= kMinVerifyRegion && (*r & (*r - 1)) == 0);
        check(hdr.length > 0 && hdr.length <= kMaxVerifyLength);
        check(encode_verify(*r) == std::vector<uint8_t>(p.begin(), p.end()));
      }
      break;
    case Type::kVerifyReply:
      if (auto d = decode_digests(p, p.size() / kDigestSize))
        check(encode_digests(*d) == std::vector<uint8_t>(p.begin(), p.end()));
      break;
    case Type::kResize:
      if (auto n = decode_resize(hdr)) check(*n > 0 && *n % kResizeAlign == 0);
      break;
    case Type::kResizeReply:
      if (auto r = decode_resize_reply(hdr, p)) {
        auto again = encode_resize_reply(hdr.id, *r);
        check(std::vector<uint8_t>(again.begin() + kHeaderSize, again.end()) ==
              std::vector<uint8_t>(p.begin(), p.end()));
        check(again[7] == (r->zeroed ? kResizeZeroed : 0));
      }
      break;
    case Type::kRelay:
    case Type::kRelayReply:
      if (auto j = decode_relay(p)) {
        check(j->size() <= kMaxRelay && j->find('\n') == std::string::npos);
        check(encode_relay(*j) == std::vector<uint8_t>(p.begin(), p.end()));
      }
      break;
    default:
      break;
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  size_t pos = 0;
  while (size - pos >= kHeaderSize) {
    auto h = decode_header(std::span<const uint8_t, kHeaderSize>(data + pos, kHeaderSize));
    if (!h) return 0;  // the connection would be closed here
    check(h->payload <= kMaxData);
    if (h->type == Type::kWrite) check(h->payload == h->length);
    // Data travels in WRITE and READ_REPLY (the peer's copy of a range the
    // primary's disk could not read); everything else is small.
    if (h->type != Type::kWrite && h->type != Type::kReadReply) check(h->payload <= kMaxControl);
    if (h->type == Type::kRead || h->type == Type::kDetach) check(h->payload == 0);
    uint8_t again[kHeaderSize];
    encode_header(again, *h);
    check(std::memcmp(again, data + pos, kHeaderSize) == 0);
    pos += kHeaderSize;
    size_t n = std::min<size_t>(h->payload, size - pos);
    if (n < h->payload) return 0;  // the rest has not arrived
    payload_round_trip(*h, {data + pos, n});
    pos += n;
  }
  return 0;
}
