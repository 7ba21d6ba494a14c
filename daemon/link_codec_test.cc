// Unit tests of the replication link codec's RELAY messages, from hand-built
// bytes (docs/replication-protocol.md, "Messages").
#include "link_codec.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace mirror::link {
namespace {

std::vector<uint8_t> header_bytes(uint16_t type, uint64_t id, uint32_t payload) {
  std::vector<uint8_t> b = {0x4d, 0x52, 0x4c, 0x31,  // "MRL1"
                            uint8_t(type >> 8), uint8_t(type), 0, 0};
  for (int i = 7; i >= 0; --i) b.push_back(uint8_t(id >> (8 * i)));
  for (int i = 0; i < 8; ++i) b.push_back(0);  // offset
  for (int i = 0; i < 4; ++i) b.push_back(0);  // length
  for (int i = 3; i >= 0; --i) b.push_back(uint8_t(payload >> (8 * i)));
  return b;
}

Result<Header> decode(const std::vector<uint8_t>& b) {
  return decode_header(std::span<const uint8_t, kHeaderSize>(b.data(), kHeaderSize));
}

TEST(LinkRelay, HeaderTypesSixAndSevenCarryAJsonPayload) {
  std::string req = R"({"version":1,"command":"split","args":{}})";
  auto h = decode(header_bytes(6, 42, uint32_t(req.size())));
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->type, Type::kRelay);
  EXPECT_EQ(h->id, 42u);
  EXPECT_EQ(h->payload, req.size());
  auto r = decode(header_bytes(7, 42, 20));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->type, Type::kRelayReply);
}

TEST(LinkRelay, EncodeMessageIsHeaderThenTheTextAsIs) {
  std::string req = R"({"ok":true,"result":"split"})";
  Header h;
  h.type = Type::kRelayReply;
  h.id = 9;
  h.payload = uint32_t(req.size());
  auto msg = encode_message(h, encode_relay(req));
  std::vector<uint8_t> want = header_bytes(7, 9, uint32_t(req.size()));
  want.insert(want.end(), req.begin(), req.end());
  EXPECT_EQ(msg, want);
  auto back = decode_relay(std::span<const uint8_t>(msg).subspan(kHeaderSize));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, req);
}

TEST(LinkRelay, PayloadLargerThan64KiBEndsTheConnection) {
  auto ok = decode(header_bytes(6, 1, uint32_t(kMaxRelay)));
  EXPECT_TRUE(ok);
  auto h = decode(header_bytes(6, 1, uint32_t(kMaxRelay + 1)));
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().code, EPROTO);
  EXPECT_FALSE(decode(header_bytes(7, 1, 1u << 20)));
}

TEST(LinkRelay, EmptyNulOrNewlinePayloadIsMalformed) {
  std::vector<uint8_t> empty;
  EXPECT_FALSE(decode_relay(empty));
  std::string nl = "{\"a\":1}\n{\"b\":2}";
  auto r = decode_relay(std::vector<uint8_t>(nl.begin(), nl.end()));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EPROTO);
  std::vector<uint8_t> nul = {'{', 0, '}'};
  EXPECT_FALSE(decode_relay(nul));
}

TEST(LinkRelay, UnknownTypeEightIsStillRefused) {
  auto h = decode(header_bytes(8, 1, 0));
  ASSERT_FALSE(h);
  EXPECT_NE(h.error().message.find("unknown link message type 8"), std::string::npos);
}

// backup-mark travels primary -> secondary as a RELAY like any relayed
// command; type 23 (a BACKUP_MARK message of its own before that) is not one.
TEST(LinkRelay, BackupMarkIsARelayAndTypeTwentyThreeIsUnknown) {
  std::string req =
      R"({"args":{"expect":7,"point":8},"command":"backup-mark","version":1})";
  auto h = decode(header_bytes(6, 3, uint32_t(req.size())));
  ASSERT_TRUE(h);
  EXPECT_EQ(h->type, Type::kRelay);
  auto t = decode(header_bytes(23, 3, 8));
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, EPROTO);
  EXPECT_NE(t.error().message.find("unknown link message type 23"), std::string::npos);
}

// VERIFY (24): offset/length in the header, the region size as a u32.
TEST(LinkVerify, RequestCarriesTheRegionSizeBigEndian) {
  Header h;
  h.type = Type::kVerify;
  h.id = 5;
  h.offset = 1 << 20;
  h.length = 1 << 20;
  auto msg = encode_message(h, encode_verify(65536));
  ASSERT_EQ(msg.size(), kHeaderSize + 4);
  EXPECT_EQ(msg[5], 24);  // type, low byte
  EXPECT_EQ(std::vector<uint8_t>(msg.begin() + kHeaderSize, msg.end()),
            (std::vector<uint8_t>{0x00, 0x01, 0x00, 0x00}));
  auto back = decode(msg);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->type, Type::kVerify);
  auto region = decode_verify(*back, std::span<const uint8_t>(msg).subspan(kHeaderSize));
  ASSERT_TRUE(region) << region.error().message;
  EXPECT_EQ(*region, 65536u);
}

TEST(LinkVerify, BadRegionSizesAndLengthsAreProtocolErrors) {
  Header h;
  h.type = Type::kVerify;
  h.length = 4096;
  for (uint32_t bad : {0u, 512u, 4095u, 12288u}) {
    auto r = decode_verify(h, encode_verify(bad));
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, EPROTO);
  }
  h.length = 0;
  EXPECT_FALSE(decode_verify(h, encode_verify(4096)));
  h.length = kMaxVerifyLength + 1;
  EXPECT_FALSE(decode_verify(h, encode_verify(4096)));
  h.length = kMaxVerifyLength;
  EXPECT_TRUE(decode_verify(h, encode_verify(4096)));
  std::vector<uint8_t> short_payload = {0, 1, 0};
  EXPECT_FALSE(decode_verify(h, short_payload));
}

TEST(LinkVerify, ReplyIsTheDigestsBackToBack) {
  std::vector<Digest> d(3);
  for (size_t i = 0; i < d.size(); ++i) d[i].fill(uint8_t(i + 1));
  auto p = encode_digests(d);
  ASSERT_EQ(p.size(), 3 * kDigestSize);
  EXPECT_EQ(p[0], 1);
  EXPECT_EQ(p[kDigestSize], 2);
  EXPECT_EQ(p[2 * kDigestSize + 31], 3);
  auto back = decode_digests(p, 3);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, d);
  // A count that does not match the request's regions is refused.
  EXPECT_FALSE(decode_digests(p, 2));
  p.pop_back();
  EXPECT_FALSE(decode_digests(p, 3));
  auto h = decode(header_bytes(34, 5, uint32_t(3 * kDigestSize)));
  ASSERT_TRUE(h);
  EXPECT_EQ(h->type, Type::kVerifyReply);
}

TEST(LinkVerify, RegionsCoverATrailingPartialRegion) {
  EXPECT_EQ(verify_regions(65536, 65536), 1u);
  EXPECT_EQ(verify_regions(65537, 65536), 2u);
  EXPECT_EQ(verify_regions(1 << 20, 65536), 16u);
}

// RESIZE (25): the new size in the header's offset, nothing else.
TEST(LinkResize, RequestIsAHeaderWithTheSizeInOffset) {
  auto msg = encode_resize(77, 3ull << 30);
  ASSERT_EQ(msg.size(), kHeaderSize);
  std::vector<uint8_t> want = header_bytes(25, 77, 0);
  // offset, big-endian: 3 GiB = 0x00000000c0000000
  want[16 + 4] = 0xc0;
  EXPECT_EQ(msg, want);
  auto h = decode(msg);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->type, Type::kResize);
  auto size = decode_resize(*h);
  ASSERT_TRUE(size) << size.error().message;
  EXPECT_EQ(*size, 3ull << 30);
}

TEST(LinkResize, ZeroUnalignedOrAPayloadIsAProtocolError) {
  Header h;
  h.type = Type::kResize;
  for (uint64_t bad : {uint64_t(0), uint64_t(4095), uint64_t(1 << 20) + 512}) {
    h.offset = bad;
    auto r = decode_resize(h);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, EPROTO);
  }
  h.offset = 1 << 20;
  h.length = 1;
  EXPECT_FALSE(decode_resize(h)) << "length must be 0";
  // A payload is refused at the header already.
  EXPECT_FALSE(decode(header_bytes(25, 1, 1)));
  EXPECT_TRUE(decode(header_bytes(25, 1, 0)));
}

TEST(LinkResize, ReplyCarriesErrnoSizeZeroedFlagAndTheReason) {
  ResizeReply ok{.err = 0, .size = 1ull << 30, .zeroed = true, .message = ""};
  auto msg = encode_resize_reply(5, ok);
  ASSERT_EQ(msg.size(), kHeaderSize);
  EXPECT_EQ(msg[5], 35);  // type, low byte
  EXPECT_EQ(msg[7], 1);   // flags: kResizeZeroed
  auto h = decode(msg);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->type, Type::kResizeReply);
  auto r = decode_resize_reply(*h, {});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->err, 0u);
  EXPECT_EQ(r->size, 1ull << 30);
  EXPECT_TRUE(r->zeroed);

  std::string why = "node 'beta' config says 268435456 bytes";
  auto no = encode_resize_reply(6, {.err = EINVAL, .size = 256 << 20, .message = why});
  auto nh = decode(no);
  ASSERT_TRUE(nh);
  EXPECT_EQ(nh->length, uint32_t(EINVAL));
  EXPECT_EQ(nh->flags, 0);
  auto nr = decode_resize_reply(*nh, std::span<const uint8_t>(no).subspan(kHeaderSize));
  ASSERT_TRUE(nr);
  EXPECT_EQ(nr->err, uint32_t(EINVAL));
  EXPECT_FALSE(nr->zeroed);
  EXPECT_EQ(nr->message, why);
}

TEST(LinkResize, ReplyWithUnknownFlagsOrALongReasonIsRefused) {
  Header h;
  h.type = Type::kResizeReply;
  h.flags = 2;
  EXPECT_FALSE(decode_resize_reply(h, {}));
  EXPECT_TRUE(decode(header_bytes(35, 1, uint32_t(kMaxResizeMessage))));
  EXPECT_FALSE(decode(header_bytes(35, 1, uint32_t(kMaxResizeMessage + 1))));
  // Encoding cuts an overlong reason instead of sending what the peer refuses.
  auto msg = encode_resize_reply(1, {.err = EIO, .message = std::string(10000, 'x')});
  EXPECT_EQ(msg.size(), kHeaderSize + kMaxResizeMessage);
}

TEST(LinkResize, HelloAdvertisesTheFeatureBesideVerify) {
  EXPECT_EQ(kFeatureResize, 2);
  EXPECT_EQ(kFeatures & kFeatureVerify, kFeatureVerify);
  EXPECT_EQ(kFeatures & kFeatureResize, kFeatureResize);
}

TEST(LinkRead, RequestHasNoPayloadAndTheReplyCarriesUpToOneWritesData) {
  auto req = decode(header_bytes(26, 5, 0));
  ASSERT_TRUE(req) << req.error().message;
  EXPECT_EQ(req->type, Type::kRead);
  EXPECT_FALSE(decode(header_bytes(26, 5, 1))) << "READ carries no payload";
  auto reply = decode(header_bytes(36, 5, kMaxData));
  ASSERT_TRUE(reply) << reply.error().message;
  EXPECT_EQ(reply->type, Type::kReadReply);
  EXPECT_FALSE(decode(header_bytes(36, 5, kMaxData + 1))) << "larger than any WRITE";
  EXPECT_EQ(kFeatureRead, 8);
  EXPECT_EQ(kFeatures & kFeatureRead, kFeatureRead);
}

TEST(LinkDetach, HasNoPayloadAndItsOwnFeatureBit) {
  auto req = decode(header_bytes(27, 9, 0));
  ASSERT_TRUE(req) << req.error().message;
  EXPECT_EQ(req->type, Type::kDetach);
  EXPECT_FALSE(decode(header_bytes(27, 9, 1))) << "DETACH carries no payload";
  EXPECT_EQ(kFeatureDetach, 16);
  EXPECT_EQ(kFeatures & kFeatureDetach, kFeatureDetach);
}

TEST(LinkFeatures, SoleErrorsHasItsOwnBit) {
  // On the wire: an older daemon must read the bit as "unknown", never as
  // another feature.
  EXPECT_EQ(kFeatureSoleErrors, 32);
  EXPECT_EQ(kFeatures & kFeatureSoleErrors, kFeatureSoleErrors);
}

}  // namespace
}  // namespace mirror::link
