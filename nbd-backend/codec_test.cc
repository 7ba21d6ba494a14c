// Tests for the NBD codec, written from the byte layouts of the protocol
// document (doc/proto.md of NetworkBlockDevice/nbd). Expected bytes are
// written out by hand in hex, never produced by the encoder under test, and
// client input is built by the small big-endian helpers below (not wire.h).
// Error-reply message texts are implementation detail and are not pinned.
#include "codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <initializer_list>
#include <ostream>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mirror::nbd {

// Found by argument-dependent lookup, so gtest prints statuses by name.
static void PrintTo(Handshake::Status s, std::ostream* os) {
  *os << (s == Handshake::Status::kNeedMore ? "kNeedMore"
          : s == Handshake::Status::kDone   ? "kDone"
                                            : "kClose");
}

namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;
using Bytes = std::vector<uint8_t>;
using Status = Handshake::Status;

// ------------------------------------------------------------ byte helpers --

// Bytes from hand-written hex; whitespace between fields is ignored.
Bytes H(std::string_view hex) {
  static constexpr std::string_view kDigits = "0123456789abcdef";
  Bytes out;
  int hi = -1;
  for (char c : hex) {
    if (c == ' ' || c == '\n') continue;
    size_t v = kDigits.find(char(c | 0x20));  // either case
    if (v == std::string_view::npos) throw std::invalid_argument("bad hex literal");
    if (hi < 0) {
      hi = int(v);
    } else {
      out.push_back(uint8_t(hi << 4 | int(v)));
      hi = -1;
    }
  }
  if (hi >= 0) throw std::invalid_argument("odd hex literal");
  return out;
}

std::string Hex(std::span<const uint8_t> b) {
  std::string s;
  char buf[3];
  for (uint8_t x : b) {
    std::snprintf(buf, sizeof buf, "%02x", x);
    s += buf;
  }
  return s;
}

// A hand-written hex literal in the canonical form Hex() prints.
std::string N(std::string_view hex) {
  return Hex(H(hex));
}

Bytes A(std::string_view ascii) {
  return Bytes(ascii.begin(), ascii.end());
}

Bytes Cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

Bytes Be(uint64_t v, int n) {
  Bytes out;
  for (int i = n - 1; i >= 0; --i) out.push_back(uint8_t(v >> (8 * i)));
  return out;
}
Bytes Be16(uint16_t v) {
  return Be(v, 2);
}
Bytes Be32(uint32_t v) {
  return Be(v, 4);
}

// -------------------------------------------- client messages (test side) --

const Bytes kFixedNewstyle = H("00000001");  // NBD_FLAG_C_FIXED_NEWSTYLE
const Bytes kFixedNoZeroes = H("00000003");  // ... | NBD_FLAG_C_NO_ZEROES
constexpr std::string_view kIHaveOptHex = "49484156454f5054";

// C: IHAVEOPT, 32-bit option, 32-bit length, data.
Bytes Opt(uint32_t opt, const Bytes& data = {}) {
  return Cat({H(kIHaveOptHex), Be32(opt), Be32(uint32_t(data.size())), data});
}

// NBD_OPT_INFO / NBD_OPT_GO data: name length, name, count, info types.
Bytes InfoData(std::string_view name, std::initializer_list<uint16_t> infos = {}) {
  Bytes d = Cat({Be32(uint32_t(name.size())), A(name), Be16(uint16_t(infos.size()))});
  for (uint16_t i : infos) d = Cat({d, Be16(i)});
  return d;
}

// NBD_OPT_{LIST,SET}_META_CONTEXT data: name, query count, queries.
Bytes MetaData(std::string_view name, std::initializer_list<std::string_view> queries) {
  Bytes d = Cat({Be32(uint32_t(name.size())), A(name), Be32(uint32_t(queries.size()))});
  for (std::string_view q : queries) d = Cat({d, Be32(uint32_t(q.size())), A(q)});
  return d;
}

// ------------------------------------------------------ server side parse --

struct OptReply {
  uint32_t opt = 0;
  uint32_t type = 0;
  Bytes data;
  std::string hex;  // the whole reply, for exact comparisons
};

uint32_t Get32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}

// Splits server output into option replies (S: magic, option, type, length,
// data); any byte that does not fit that layout is a test failure.
std::vector<OptReply> Replies(const Bytes& out) {
  std::vector<OptReply> replies;
  size_t at = 0;
  while (at < out.size()) {
    if (out.size() - at < 20) {
      ADD_FAILURE() << "truncated option reply at offset " << at << ": " << Hex(out);
      break;
    }
    EXPECT_EQ(Hex({&out[at], 8}), "0003e889045565a9")
        << "every option reply starts with the reply magic (offset " << at << ")";
    uint32_t len = Get32(&out[at + 16]);
    if (out.size() - at - 20 < len) {
      ADD_FAILURE() << "option reply length " << len << " runs past the output";
      break;
    }
    OptReply r;
    r.opt = Get32(&out[at + 8]);
    r.type = Get32(&out[at + 12]);
    r.data.assign(out.begin() + at + 20, out.begin() + at + 20 + len);
    r.hex = Hex({&out[at], 20 + len});
    replies.push_back(std::move(r));
    at += 20 + len;
  }
  return replies;
}

std::vector<std::string> ReplyHexes(const Bytes& out) {
  std::vector<std::string> v;
  for (const OptReply& r : Replies(out)) v.push_back(r.hex);
  return v;
}

// The output is exactly one error reply of `type` to option `opt`; the
// message (if any) is free text.
void ExpectOnlyError(const Bytes& out, uint32_t opt, uint32_t type, const char* rule) {
  std::vector<OptReply> r = Replies(out);
  ASSERT_EQ(r.size(), 1u) << rule << "; output " << Hex(out);
  EXPECT_EQ(r[0].opt, opt) << rule;
  EXPECT_EQ(r[0].type, type) << rule;
}

// ------------------------------------------------------------- fixtures --

class FakeCatalog : public ExportCatalog {
 public:
  FakeCatalog() {
    ExportInfo disk;
    disk.name = "disk";
    disk.description = "scratch disk";
    disk.size = 1 << 20;
    disk.meta_contexts = {"base:allocation", "x-mirror:dirty"};
    ExportInfo golden;
    golden.name = "golden";
    golden.description = "golden image";
    golden.size = 64 << 10;
    golden.read_only = true;
    exports_ = {disk, golden};
  }
  std::vector<const ExportInfo*> list() const override {
    std::vector<const ExportInfo*> v;
    for (const ExportInfo& e : exports_) v.push_back(&e);
    return v;
  }
  const ExportInfo* find(std::string_view name) const override {
    if (name.empty()) return &exports_[0];
    for (const ExportInfo& e : exports_)
      if (e.name == name) return &e;
    return nullptr;
  }
  const ExportInfo& disk() const { return exports_[0]; }
  const ExportInfo& golden() const { return exports_[1]; }

 private:
  std::vector<ExportInfo> exports_;
};

// A client talking to one Handshake: keeps the unconsumed input like the
// server's receive buffer does, and collects the server's output.
class Client {
 public:
  explicit Client(const ExportCatalog& c) : hs_(c) {}
  Status Send(const Bytes& b) {
    pending_.insert(pending_.end(), b.begin(), b.end());
    size_t consumed = ~size_t(0);
    Status s = hs_.feed(pending_, consumed, out_);
    EXPECT_LE(consumed, pending_.size()) << "feed consumed more than it was given";
    if (consumed > pending_.size()) consumed = pending_.size();
    pending_.erase(pending_.begin(), pending_.begin() + consumed);
    return s;
  }
  Bytes Take() { return std::exchange(out_, {}); }
  const Bytes& pending() const { return pending_; }
  const Handshake& hs() const { return hs_; }

 private:
  Handshake hs_;
  Bytes pending_;
  Bytes out_;
};

class HandshakeTest : public ::testing::Test {
 protected:
  FakeCatalog cat_;
  Client c_{cat_};
  // Sends client flags (fixed newstyle, zeroes on) and checks nothing comes back.
  void Start(const Bytes& flags = kFixedNewstyle) {
    ASSERT_EQ(c_.Send(flags), Status::kNeedMore);
    ASSERT_THAT(c_.Take(), IsEmpty()) << "the server says nothing after the client flags";
  }
  void NegotiateStructuredReplies() {
    ASSERT_EQ(c_.Send(Opt(kOptStructuredReply)), Status::kNeedMore);
    ASSERT_EQ(Hex(c_.Take()), N("0003e889045565a9 00000008 00000001 00000000"));
  }
  // GO to `name` and expect success; returns the negotiated result.
  const Negotiated& Go(std::string_view name) {
    EXPECT_EQ(c_.Send(Opt(kOptGo, InfoData(name))), Status::kDone) << "GO " << name;
    std::vector<OptReply> r = Replies(c_.Take());
    EXPECT_FALSE(r.empty()) << "GO " << name << " got no reply";
    if (!r.empty()) {
      EXPECT_EQ(r.back().type, kRepAck) << "GO ends with NBD_REP_ACK";
    }
    return c_.hs().result();
  }
};

// ============================================================ greeting ==

TEST(Greeting, IsNbdMagicThenIHaveOptThenFixedNewstyleAndNoZeroesFlags) {
  Bytes out;
  Handshake::greeting(out);
  // S: 64 bits NBDMAGIC, 64 bits IHAVEOPT, 16 bits handshake flags (bits 0, 1).
  EXPECT_EQ(Hex(out), N("4e42444d41474943 49484156454f5054 0003"));
}

// ========================================================= client flags ==

TEST_F(HandshakeTest, ClientFlagsFixedNewstyleAndNoZeroesAreAcceptedSilently) {
  EXPECT_EQ(c_.Send(kFixedNoZeroes), Status::kNeedMore);
  EXPECT_THAT(c_.Take(), IsEmpty());
  EXPECT_THAT(c_.pending(), IsEmpty()) << "the 4 flag bytes are consumed";
}

TEST_F(HandshakeTest, ClientFlagsArriveWholeBeforeAnythingIsConsumed) {
  EXPECT_EQ(c_.Send(H("000000")), Status::kNeedMore);
  EXPECT_EQ(c_.pending().size(), 3u) << "a partial flags word must not be consumed";
  EXPECT_EQ(c_.Send(H("01")), Status::kNeedMore);
  EXPECT_THAT(c_.pending(), IsEmpty());
}

TEST_F(HandshakeTest, UnknownClientFlagClosesTheConnection) {
  for (const char* flags : {"00000004", "80000001", "00000103"}) {
    FakeCatalog cat;
    Client c(cat);
    EXPECT_EQ(c.Send(H(flags)), Status::kClose)
        << "flags " << flags
        << ": the server MUST drop the TCP connection if the client sets an unknown flag";
    EXPECT_THAT(c.Take(), IsEmpty()) << "nothing is sent before a hard disconnect";
    EXPECT_FALSE(c.hs().close_reason().empty()) << "close_reason says why";
  }
}

// ========================================================= EXPORT_NAME ==

TEST_F(HandshakeTest, ExportNameKnownRepliesSizeFlagsAnd124Zeroes) {
  Start(kFixedNewstyle);
  EXPECT_EQ(c_.Send(H("49484156454f5054 00000001 00000004 6469736b")), Status::kDone);
  // S: 64 bits size (1 MiB), 16 bits transmission flags, 124 bytes of zeroes.
  EXPECT_EQ(Hex(c_.Take()), N("0000000000100000 0d6d") + std::string(248, '0'));
  const Negotiated& n = c_.hs().result();
  EXPECT_EQ(n.export_info, &cat_.disk());
  EXPECT_EQ(n.transmission_flags, 0x0d6d);
  EXPECT_FALSE(n.no_zeroes);
  EXPECT_FALSE(n.structured_replies);
}

TEST_F(HandshakeTest, ExportNameWithNoZeroesOmitsThe124Zeroes) {
  Start(kFixedNoZeroes);
  EXPECT_EQ(c_.Send(H("49484156454f5054 00000001 00000006 676f6c64656e")), Status::kDone);
  // golden: 64 KiB, HAS_FLAGS|READ_ONLY|SEND_FLUSH|CAN_MULTI_CONN|SEND_CACHE.
  EXPECT_EQ(Hex(c_.Take()), N("0000000000010000 0507"))
      << "NBD_FLAG_C_NO_ZEROES: the server MUST NOT send the 124 bytes of zeroes";
  EXPECT_TRUE(c_.hs().result().no_zeroes);
  EXPECT_EQ(c_.hs().result().export_info, &cat_.golden());
}

TEST_F(HandshakeTest, ExportNameEmptySelectsTheDefaultExport) {
  Start(kFixedNoZeroes);
  EXPECT_EQ(c_.Send(H("49484156454f5054 00000001 00000000")), Status::kDone);
  EXPECT_EQ(Hex(c_.Take()), N("0000000000100000 0d6d"));
  EXPECT_EQ(c_.hs().result().export_info, &cat_.disk());
}

TEST_F(HandshakeTest, ExportNameUnknownTerminatesTheSession) {
  Start();
  EXPECT_EQ(c_.Send(Opt(kOptExportName, A("nosuch"))), Status::kClose)
      << "If the chosen export does not exist ... the server MUST terminate the session";
  EXPECT_THAT(c_.Take(), IsEmpty()) << "no reply format exists for this error";
}

TEST_F(HandshakeTest, ExportNameAfterStructuredRepliesAdvertisesDf) {
  Start(kFixedNoZeroes);
  NegotiateStructuredReplies();
  EXPECT_EQ(c_.Send(Opt(kOptExportName, A("disk"))), Status::kDone);
  EXPECT_EQ(Hex(c_.Take()), N("0000000000100000 0ded"));
  EXPECT_TRUE(c_.hs().result().structured_replies);
}

// ================================================================ LIST ==

TEST_F(HandshakeTest, ListRepliesOneServerPerExportThenAck) {
  Start();
  EXPECT_EQ(c_.Send(H("49484156454f5054 00000003 00000000")), Status::kNeedMore);
  std::vector<std::string> r = ReplyHexes(c_.Take());
  ASSERT_EQ(r.size(), 3u);
  // NBD_REP_SERVER: 32-bit name length, name, then the description.
  EXPECT_THAT(std::vector<std::string>(r.begin(), r.end() - 1),
              UnorderedElementsAre(N("0003e889045565a9 00000003 00000002 00000014"
                                     "00000004 6469736b 7363726174636820 6469736b"),
                                   N("0003e889045565a9 00000003 00000002 00000016"
                                     "00000006 676f6c64656e 676f6c64656e20 696d616765")));
  EXPECT_EQ(r.back(), N("0003e889045565a9 00000003 00000001 00000000")) << "then NBD_REP_ACK";
}

TEST_F(HandshakeTest, ListWithDataIsErrInvalidAndTheSessionContinues) {
  Start();
  EXPECT_EQ(c_.Send(Opt(kOptList, A("x"))), Status::kNeedMore);
  ExpectOnlyError(c_.Take(), kOptList, kRepErrInvalid,
                  "NBD_OPT_LIST: the server SHOULD reject a request that includes data "
                  "with NBD_REP_ERR_INVALID");
  EXPECT_EQ(Go("disk").export_info, &cat_.disk());
}

// ========================================================== INFO / GO ==

TEST_F(HandshakeTest, InfoWithoutRequestsRepliesInfoExportThenAck) {
  Start();
  EXPECT_EQ(c_.Send(H("49484156454f5054 00000006 0000000a 00000004 6469736b 0000")),
            Status::kNeedMore)
      << "INFO does not end the handshake";
  EXPECT_THAT(ReplyHexes(c_.Take()), ElementsAre(N("0003e889045565a9 00000006 00000003 0000000c"
                                                   "0000 0000000000100000 0d6d"),
                                                 N("0003e889045565a9 00000006 00000001 00000000")));
}

TEST_F(HandshakeTest, InfoSendsNameDescriptionAndBlockSizeOnRequestAfterInfoExport) {
  Start();
  EXPECT_EQ(c_.Send(Opt(kOptInfo, InfoData("disk", {kInfoBlockSize, kInfoName, kInfoDescription}))),
            Status::kNeedMore);
  std::vector<std::string> r = ReplyHexes(c_.Take());
  ASSERT_EQ(r.size(), 5u);
  EXPECT_EQ(r.front(), N("0003e889045565a9 00000006 00000003 0000000c 0000 0000000000100000"
                         "0d6d"))
      << "NBD_INFO_EXPORT comes first";
  EXPECT_THAT(
      std::vector<std::string>(r.begin() + 1, r.end() - 1),
      UnorderedElementsAre(N("0003e889045565a9 00000006 00000003 00000006 0001 6469736b"),
                           N("0003e889045565a9 00000006 00000003 0000000e 0002 7363726174636820"
                             "6469736b"),
                           N("0003e889045565a9 00000006 00000003 0000000e 0003 00000001 00001000"
                             "02000000")))
      << "the server MAY reply to the information requests in any order";
  EXPECT_EQ(r.back(), N("0003e889045565a9 00000006 00000001 00000000"));
}

TEST_F(HandshakeTest, InfoNameIsTheCanonicalNameForTheDefaultExport) {
  Start();
  EXPECT_EQ(c_.Send(Opt(kOptInfo, InfoData("", {kInfoName}))), Status::kNeedMore);
  std::vector<std::string> r = ReplyHexes(c_.Take());
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[1], N("0003e889045565a9 00000006 00000003 00000006 0001 6469736b"));
}

TEST_F(HandshakeTest, InfoIgnoresUnknownInformationTypes) {
  Start();
  EXPECT_EQ(c_.Send(Opt(kOptInfo, InfoData("golden", {0x7fff, 4, kInfoBlockSize}))),
            Status::kNeedMore);
  EXPECT_THAT(ReplyHexes(c_.Take()),
              ElementsAre(N("0003e889045565a9 00000006 00000003 0000000c 0000 0000000000010000"
                            "0507"),
                          N("0003e889045565a9 00000006 00000003 0000000e 0003 00000001"
                            "00001000 02000000"),
                          N("0003e889045565a9 00000006 00000001 00000000")))
      << "The server MUST ignore any information requests it does not understand";
}

TEST_F(HandshakeTest, InfoWithMalformedLengthsIsErrInvalidAndTheSessionContinues) {
  Start();
  const std::pair<const char*, Bytes> cases[] = {
      {"empty data", {}},
      {"name length past the data", H("00000010 6469736b 0000")},
      {"name length 0xffffffff", H("ffffffff 0000")},
      {"no request count", H("00000004 6469736b")},
      {"request count larger than the list", H("00000004 6469736b 0002 0001")},
      {"trailing byte after the list", H("00000004 6469736b 0001 0001 00")},
      {"odd-length request list", H("00000004 6469736b 0001 000100")},
  };
  for (const auto& [what, data] : cases) {
    for (uint32_t opt : {kOptInfo, kOptGo}) {
      EXPECT_EQ(c_.Send(Opt(opt, data)), Status::kNeedMore) << what;
      ExpectOnlyError(c_.Take(), opt, kRepErrInvalid, what);
    }
  }
  EXPECT_EQ(Go("disk").export_info, &cat_.disk()) << "the session is still usable";
}

TEST_F(HandshakeTest, InfoAndGoForUnknownExportAreErrUnknownAndTheSessionContinues) {
  Start();
  for (uint32_t opt : {kOptInfo, kOptGo}) {
    EXPECT_EQ(c_.Send(Opt(opt, InfoData("nosuch", {kInfoName}))), Status::kNeedMore);
    ExpectOnlyError(c_.Take(), opt, kRepErrUnknown,
                    "NBD_REP_ERR_UNKNOWN: the server SHOULD NOT send NBD_REP_INFO replies");
  }
  EXPECT_EQ(Go("golden").export_info, &cat_.golden());
}

TEST_F(HandshakeTest, GoEntersTransmissionAfterAckWithoutZeroPadding) {
  Start(kFixedNewstyle);  // zeroes not declined: GO still sends none
  Bytes go = H("49484156454f5054 00000007 0000000c 00000004 6469736b 0001 0003");
  Bytes request = H("25609513 0000 0000 0000000000000001 0000000000000000 00000200");
  EXPECT_EQ(c_.Send(Cat({go, request})), Status::kDone);
  EXPECT_THAT(ReplyHexes(c_.Take()),
              ElementsAre(N("0003e889045565a9 00000007 00000003 0000000c 0000 0000000000100000"
                            "0d6d"),
                          N("0003e889045565a9 00000007 00000003 0000000e 0003 00000001"
                            "00001000 02000000"),
                          N("0003e889045565a9 00000007 00000001 00000000")))
      << "The server MUST NOT send any zero padding bytes after the NBD_REP_ACK";
  EXPECT_EQ(Hex(c_.pending()), Hex(request))
      << "transmission starts right after the GO option: the request is not consumed";
  const Negotiated& n = c_.hs().result();
  EXPECT_EQ(n.export_info, &cat_.disk());
  EXPECT_EQ(n.transmission_flags, 0x0d6d);
  EXPECT_FALSE(n.structured_replies);
  EXPECT_THAT(n.meta_context_ids, IsEmpty());
}

TEST_F(HandshakeTest, FeedAfterDoneConsumesNothing) {
  Start();
  Go("disk");
  Bytes more = H("25609513");
  EXPECT_EQ(c_.Send(more), Status::kDone);
  EXPECT_EQ(c_.pending().size(), 4u);
  EXPECT_THAT(c_.Take(), IsEmpty());
}

// ==================================================== STRUCTURED_REPLY ==

TEST_F(HandshakeTest, StructuredReplyIsAckedAndGoAdvertisesDf) {
  Start();
  NegotiateStructuredReplies();
  const Negotiated& n = Go("disk");
  EXPECT_TRUE(n.structured_replies);
  EXPECT_EQ(n.transmission_flags, 0x0ded) << "NBD_FLAG_SEND_DF once structured replies are on";
}

TEST_F(HandshakeTest, StructuredReplyWithDataIsErrInvalidAndNotNegotiated) {
  Start();
  EXPECT_EQ(c_.Send(Opt(kOptStructuredReply, H("00"))), Status::kNeedMore);
  ExpectOnlyError(c_.Take(), kOptStructuredReply, kRepErrInvalid,
                  "NBD_OPT_STRUCTURED_REPLY: the server SHOULD reject a request that "
                  "includes data with NBD_REP_ERR_INVALID");
  const Negotiated& n = Go("disk");
  EXPECT_FALSE(n.structured_replies);
  EXPECT_EQ(n.transmission_flags & kFlagSendDf, 0)
      << "NBD_FLAG_SEND_DF MUST be clear if structured replies have not been negotiated";
}

// ===================================================== meta contexts ==

constexpr std::string_view kAllocHex = "626173653a616c6c6f636174696f6e";  // base:allocation
constexpr std::string_view kDirtyHex = "782d6d6972726f723a6469727479";    // x-mirror:dirty

TEST_F(HandshakeTest, ListMetaContextWithoutQueriesListsAllWithIdZero) {
  Start();
  NegotiateStructuredReplies();
  EXPECT_EQ(c_.Send(H("49484156454f5054 00000009 0000000c 00000004 6469736b 00000000")),
            Status::kNeedMore);
  std::vector<std::string> r = ReplyHexes(c_.Take());
  ASSERT_EQ(r.size(), 3u);
  EXPECT_THAT(std::vector<std::string>(r.begin(), r.end() - 1),
              UnorderedElementsAre(
                  N("0003e889045565a9 00000009 00000004 00000013 00000000") + N(kAllocHex),
                  N("0003e889045565a9 00000009 00000004 00000012 00000000") + N(kDirtyHex)))
      << "zero queries: the server MUST return all the metadata contexts; "
         "the ID in LIST replies SHOULD be zero";
  EXPECT_EQ(r.back(), N("0003e889045565a9 00000009 00000001 00000000"));
}

TEST_F(HandshakeTest, ListMetaContextNamespaceQueryListsThatNamespaceOnly) {
  Start();
  NegotiateStructuredReplies();
  EXPECT_EQ(c_.Send(Opt(kOptListMetaContext, MetaData("disk", {"base:"}))), Status::kNeedMore);
  EXPECT_THAT(ReplyHexes(c_.Take()),
              ElementsAre(N("0003e889045565a9 00000009 00000004 00000013 00000000") + N(kAllocHex),
                          N("0003e889045565a9 00000009 00000001 00000000")))
      << "base: is a wildcard for the base namespace during LIST";
}

TEST_F(HandshakeTest, ListMetaContextExactQueryListsThatContext) {
  Start();
  NegotiateStructuredReplies();
  EXPECT_EQ(c_.Send(Opt(kOptListMetaContext, MetaData("disk", {"x-mirror:dirty"}))),
            Status::kNeedMore);
  EXPECT_THAT(ReplyHexes(c_.Take()),
              ElementsAre(N("0003e889045565a9 00000009 00000004 00000012 00000000") + N(kDirtyHex),
                          N("0003e889045565a9 00000009 00000001 00000000")));
}

TEST_F(HandshakeTest, ListMetaContextUnknownQueriesGetOnlyAck) {
  Start();
  NegotiateStructuredReplies();
  EXPECT_EQ(c_.Send(Opt(kOptListMetaContext,
                        MetaData("disk", {"qemu:dirty-bitmap:b0", "base:nope", "x-y:"}))),
            Status::kNeedMore);
  EXPECT_EQ(Hex(c_.Take()), N("0003e889045565a9 00000009 00000001 00000000"))
      << "If none of the query strings find any metadata contexts, the server MUST send a "
         "single reply of type NBD_REP_ACK";
}

TEST_F(HandshakeTest, MetaContextMalformedIsErrInvalidAndUnknownExportErrUnknown) {
  Start();
  NegotiateStructuredReplies();
  for (uint32_t opt : {kOptListMetaContext, kOptSetMetaContext}) {
    EXPECT_EQ(c_.Send(Opt(opt, H("00000004 6469736b 00000001 00000010 626173653a"))),
              Status::kNeedMore);
    ExpectOnlyError(c_.Take(), opt, kRepErrInvalid,
                    "a query length that would require reading beyond the option: the server "
                    "MUST fail the request with NBD_REP_ERR_INVALID");
    EXPECT_EQ(c_.Send(Opt(opt, Cat({MetaData("disk", {}), H("00")}))), Status::kNeedMore);
    ExpectOnlyError(c_.Take(), opt, kRepErrInvalid, "trailing byte");
    EXPECT_EQ(c_.Send(Opt(opt, MetaData("nosuch", {"base:allocation"}))), Status::kNeedMore);
    ExpectOnlyError(c_.Take(), opt, kRepErrUnknown, "unknown export");
  }
  EXPECT_EQ(Go("disk").export_info, &cat_.disk());
}

TEST_F(HandshakeTest, SetMetaContextRequiresStructuredRepliesFirst) {
  Start();
  EXPECT_EQ(c_.Send(Opt(kOptSetMetaContext, MetaData("disk", {"base:allocation"}))),
            Status::kNeedMore);
  ExpectOnlyError(c_.Take(), kOptSetMetaContext, kRepErrInvalid,
                  "SET_META_CONTEXT MUST NOT be requested unless structured replies have been "
                  "negotiated first ... a server SHOULD send NBD_REP_ERR_INVALID");
  EXPECT_THAT(Go("disk").meta_context_ids, IsEmpty());
}

TEST_F(HandshakeTest, SetMetaContextRepliesIdOneAndGoToTheSameExportSelectsIt) {
  Start();
  NegotiateStructuredReplies();
  EXPECT_EQ(c_.Send(Cat({H("49484156454f5054 0000000a 0000001f 00000004 6469736b 00000001"
                           "0000000f"),
                         H(kAllocHex)})),
            Status::kNeedMore);
  EXPECT_THAT(ReplyHexes(c_.Take()),
              ElementsAre(N("0003e889045565a9 0000000a 00000004 00000013 00000001") + N(kAllocHex),
                          N("0003e889045565a9 0000000a 00000001 00000000")));
  EXPECT_THAT(Go("disk").meta_context_ids, ElementsAre(1u));
}

TEST_F(HandshakeTest, SetMetaContextThenExportNameToTheSameExportSelectsIt) {
  Start(kFixedNoZeroes);
  NegotiateStructuredReplies();
  EXPECT_EQ(c_.Send(Opt(kOptSetMetaContext, MetaData("disk", {"base:allocation"}))),
            Status::kNeedMore);
  c_.Take();
  EXPECT_EQ(c_.Send(Opt(kOptExportName, A("disk"))), Status::kDone);
  EXPECT_THAT(c_.hs().result().meta_context_ids, ElementsAre(1u))
      << "the same export name for the subsequent NBD_OPT_GO (or NBD_OPT_EXPORT_NAME)";
}

TEST_F(HandshakeTest, SetMetaContextForAnotherExportSelectsNothingAtGo) {
  Start();
  NegotiateStructuredReplies();
  EXPECT_EQ(c_.Send(Opt(kOptSetMetaContext, MetaData("golden", {"base:allocation"}))),
            Status::kNeedMore);
  EXPECT_EQ(Replies(c_.Take()).size(), 2u);
  EXPECT_THAT(Go("disk").meta_context_ids, IsEmpty())
      << "contexts only count when SET named the export GO selects";
}

TEST_F(HandshakeTest, SetMetaContextIgnoresTheNamespaceWildcardAndZeroQueries) {
  Start();
  NegotiateStructuredReplies();
  EXPECT_EQ(c_.Send(Opt(kOptSetMetaContext, MetaData("disk", {"base:"}))), Status::kNeedMore);
  EXPECT_EQ(Hex(c_.Take()), N("0003e889045565a9 0000000a 00000001 00000000"))
      << "base: - the server MUST ignore this form during NBD_OPT_SET_META_CONTEXT";
  EXPECT_EQ(c_.Send(Opt(kOptSetMetaContext, MetaData("disk", {}))), Status::kNeedMore);
  EXPECT_EQ(Hex(c_.Take()), N("0003e889045565a9 0000000a 00000001 00000000"))
      << "If zero queries are sent, the server MUST select no metadata contexts";
  EXPECT_THAT(Go("disk").meta_context_ids, IsEmpty());
}

TEST_F(HandshakeTest, SetMetaContextReplacesTheEarlierSelection) {
  Start();
  NegotiateStructuredReplies();
  EXPECT_EQ(c_.Send(Opt(kOptSetMetaContext, MetaData("disk", {"base:allocation"}))),
            Status::kNeedMore);
  c_.Take();
  EXPECT_EQ(c_.Send(Opt(kOptSetMetaContext, MetaData("disk", {}))), Status::kNeedMore);
  c_.Take();
  EXPECT_THAT(Go("disk").meta_context_ids, IsEmpty())
      << "Issuing this command replaces all previously-set metadata contexts";
}

// Spec, NBD_OPT_SET_META_CONTEXT: "Issuing this command replaces all
// previously-set metadata contexts (including when this command fails)".
TEST_F(HandshakeTest, FailedSetMetaContextStillClearsTheEarlierSelection) {
  const std::pair<const char*, Bytes> failing[] = {
      {"unknown export", MetaData("nosuch", {"base:allocation"})},
      {"malformed", H("00000004 6469736b 00000001 00000010 626173653a")},
  };
  for (const auto& [what, data] : failing) {
    FakeCatalog cat;
    Client c(cat);
    ASSERT_EQ(c.Send(Cat({kFixedNewstyle, Opt(kOptStructuredReply),
                          Opt(kOptSetMetaContext, MetaData("disk", {"base:allocation"})),
                          Opt(kOptSetMetaContext, data)})),
              Status::kNeedMore);
    std::vector<OptReply> r = Replies(c.Take());
    ASSERT_EQ(r.size(), 4u);
    EXPECT_TRUE(r[3].type & kRepErrBit) << what << ": the second SET fails";
    ASSERT_EQ(c.Send(Opt(kOptGo, InfoData("disk"))), Status::kDone);
    EXPECT_THAT(c.hs().result().meta_context_ids, IsEmpty())
        << what << ": a failed NBD_OPT_SET_META_CONTEXT replaces all previously-set "
        << "metadata contexts (\"including when this command fails\"), so BLOCK_STATUS "
        << "must not be accepted after GO";
  }
}

// ============================================ ABORT, unsupported, limits ==

TEST_F(HandshakeTest, AbortIsAckedThenTheSessionCloses) {
  Start();
  EXPECT_EQ(c_.Send(H("49484156454f5054 00000002 00000000")), Status::kClose);
  EXPECT_EQ(Hex(c_.Take()), N("0003e889045565a9 00000002 00000001 00000000"))
      << "NBD_OPT_ABORT: the server MUST reply with NBD_REP_ACK";
  EXPECT_EQ(c_.Send(Opt(kOptList)), Status::kClose);
  EXPECT_EQ(c_.pending().size(), 16u) << "nothing is consumed after kClose";
  EXPECT_THAT(c_.Take(), IsEmpty());
}

TEST_F(HandshakeTest, AbortWithDataIgnoresTheData) {
  Start();
  EXPECT_EQ(c_.Send(Opt(kOptAbort, A("bye"))), Status::kClose);
  EXPECT_EQ(Hex(c_.Take()), N("0003e889045565a9 00000002 00000001 00000000"))
      << "a server SHOULD ignore any data sent by the client rather than rejecting it";
}

TEST_F(HandshakeTest, UnknownOptionsAndStartTlsAreErrUnsupAndGoStillWorks) {
  Start();
  for (uint32_t opt : {kOptStartTls, kOptPeekExport, kOptExtendedHeaders, 0x1234u, 0xffffffffu}) {
    EXPECT_EQ(c_.Send(Opt(opt, A("data"))), Status::kNeedMore) << "option " << opt;
    ExpectOnlyError(c_.Take(), opt, kRepErrUnsup,
                    "NOTLS: STARTTLS gets NBD_REP_ERR_UNSUP; unknown options likewise");
  }
  EXPECT_EQ(Go("disk").export_info, &cat_.disk());
}

TEST_F(HandshakeTest, OptionLongerThanTheLimitIsSkippedAndAnsweredErrTooBig) {
  Start();
  const uint32_t len = Handshake::kMaxOptionLen + 1;
  EXPECT_EQ(c_.Send(Cat({H(kIHaveOptHex), Be32(kOptInfo), Be32(len)})), Status::kNeedMore);
  Bytes data(len, 0xab);
  EXPECT_EQ(c_.Send(Bytes(data.begin(), data.begin() + 1000)), Status::kNeedMore);
  EXPECT_THAT(c_.Take(), IsEmpty()) << "no reply before the whole option is skipped";
  EXPECT_THAT(c_.pending(), IsEmpty()) << "skipped bytes are consumed as they arrive";
  EXPECT_EQ(c_.Send(Bytes(data.begin() + 1000, data.end())), Status::kNeedMore);
  ExpectOnlyError(c_.Take(), kOptInfo, kRepErrTooBig, "NBD_REP_ERR_TOO_BIG after skipping");
  EXPECT_EQ(Go("disk").export_info, &cat_.disk()) << "the session continues";
}

TEST_F(HandshakeTest, OversizedExportNameCloses) {
  Start();
  EXPECT_EQ(
      c_.Send(Cat({H(kIHaveOptHex), Be32(kOptExportName), Be32(Handshake::kMaxOptionLen + 1)})),
      Status::kClose)
      << "EXPORT_NAME cannot be answered with an error";
}

TEST_F(HandshakeTest, AbsurdOptionLengthCloses) {
  Start();
  EXPECT_EQ(c_.Send(H("49484156454f5054 00001234 ffffffff")), Status::kClose)
      << "4 GiB of option data is a denial of service: the server MAY hard disconnect";
  EXPECT_THAT(c_.Take(), IsEmpty());
}

TEST_F(HandshakeTest, BadOptionMagicCloses) {
  Start();
  EXPECT_EQ(c_.Send(H("4e42444d41474943 00000003 00000000")), Status::kClose);
  EXPECT_THAT(c_.Take(), IsEmpty());
}

TEST_F(HandshakeTest, OptionHeaderArrivesWholeBeforeItIsConsumed) {
  Start();
  Bytes list = Opt(kOptList);
  EXPECT_EQ(c_.Send(Bytes(list.begin(), list.begin() + 15)), Status::kNeedMore);
  EXPECT_EQ(c_.pending().size(), 15u);
  EXPECT_THAT(c_.Take(), IsEmpty());
}

TEST_F(HandshakeTest, NonFixedNewstyleClientSendingListIsDisconnected) {
  Start(H("00000000"));
  EXPECT_EQ(c_.Send(Opt(kOptList)), Status::kClose)
      << "In non-fixed newstyle only NBD_OPT_EXPORT_NAME can be sent; no reply format exists";
  EXPECT_THAT(c_.Take(), IsEmpty());
}

TEST_F(HandshakeTest, NonFixedNewstyleClientCanStillUseExportName) {
  Start(H("00000000"));
  EXPECT_EQ(c_.Send(Opt(kOptExportName, A("disk"))), Status::kDone);
  EXPECT_EQ(c_.Take().size(), 8u + 2 + 124);
}

// The option limit counts options, not reads: a legitimate option whose data
// arrives in many small reads must not be mistaken for a flood of options.
TEST_F(HandshakeTest, OptionDataArrivingInManySmallReadsCountsAsOneOption) {
  Start();
  NegotiateStructuredReplies();
  // 2 queries in an unknown namespace, 2 x 3000 bytes: > kMaxOptions reads.
  std::string q1 = "x-pad:" + std::string(2994, 'a'), q2 = "x-pad:" + std::string(2994, 'b');
  Bytes opt = Opt(kOptListMetaContext, MetaData("disk", {q1, q2}));
  ASSERT_GT(opt.size(), size_t(Handshake::kMaxOptions));
  for (size_t i = 0; i < opt.size(); ++i) {
    ASSERT_EQ(c_.Send({opt[i]}), Status::kNeedMore)
        << "byte " << i << " of one option: closed with \"" << c_.hs().close_reason()
        << "\"; a partial option is not a new option";
  }
  EXPECT_EQ(Hex(c_.Take()), N("0003e889045565a9 00000009 00000001 00000000"));
  EXPECT_EQ(Go("disk").export_info, &cat_.disk());
}

TEST_F(HandshakeTest, TooManyOptionsCloseAsDenialOfService) {
  Start();
  Bytes many;
  for (int i = 0; i < Handshake::kMaxOptions; ++i) many = Cat({many, Opt(kOptStructuredReply)});
  EXPECT_EQ(c_.Send(many), Status::kNeedMore);
  EXPECT_EQ(Replies(c_.Take()).size(), size_t(Handshake::kMaxOptions));
  EXPECT_EQ(c_.Send(Opt(kOptStructuredReply)), Status::kClose);
}

// ================================================ chunking invariance ==

struct SessionRun {
  Status status = Status::kNeedMore;
  Bytes out;
  size_t consumed = 0;  // total handshake bytes consumed
  Negotiated result;
};

// Feeds `input` in pieces of the given sizes (cycled), the way a socket
// delivers it, until the handshake ends or the input runs out.
SessionRun Feed(const ExportCatalog& cat, const Bytes& input, const std::vector<size_t>& pieces) {
  Handshake hs(cat);
  SessionRun run;
  Bytes pending;
  size_t next = 0;
  for (size_t i = 0; next < input.size(); ++i) {
    size_t n = std::min(pieces[i % pieces.size()], input.size() - next);
    pending.insert(pending.end(), input.begin() + next, input.begin() + next + n);
    next += n;
    size_t consumed = 0;
    run.status = hs.feed(pending, consumed, run.out);
    pending.erase(pending.begin(), pending.begin() + consumed);
    run.consumed += consumed;
    if (run.status != Status::kNeedMore) break;
  }
  run.result = hs.result();
  return run;
}

Bytes ScriptedSession() {
  return Cat({
      kFixedNewstyle,
      Opt(0x1234, A("junk")),
      Opt(kOptList),
      Opt(kOptList, A("x")),
      Opt(kOptStartTls),
      Opt(kOptInfo, InfoData("disk", {kInfoName, kInfoDescription, kInfoBlockSize, 99})),
      Opt(kOptInfo, InfoData("nosuch")),
      Opt(kOptGo, H("00000010")),
      Opt(kOptStructuredReply),
      Opt(kOptListMetaContext, MetaData("", {})),
      Opt(kOptSetMetaContext, MetaData("disk", {"base:allocation"})),
      // Larger than kMaxOptions bytes but within kMaxOptionLen: read byte by
      // byte it spans thousands of reads.
      Opt(kOptListMetaContext,
          MetaData("disk", {"x-pad:" + std::string(2994, 'p'), "x-pad:" + std::string(2994, 'q')})),
      Opt(0x42, Bytes(Handshake::kMaxOptionLen + 3, 0x5a)),
      Opt(kOptGo, InfoData("disk", {kInfoBlockSize})),
      H("25609513 0000 0000 0000000000000001 0000000000000000 00000200"),
  });
}

TEST(HandshakeChunking, OneByteAtATimeGivesTheSameSessionAsAllAtOnce) {
  FakeCatalog cat;
  Bytes input = ScriptedSession();
  SessionRun whole = Feed(cat, input, {input.size()});
  ASSERT_EQ(whole.status, Status::kDone);
  EXPECT_EQ(whole.consumed, input.size() - 28) << "the trailing request is not consumed";
  EXPECT_EQ(Replies(whole.out).size(), 24u) << "1+3+1+1+5+1+1+1+3+2+1+1+3 replies in the script";
  EXPECT_THAT(whole.result.meta_context_ids, ElementsAre(1u));

  SessionRun bytewise = Feed(cat, input, {1});
  EXPECT_EQ(bytewise.status, whole.status);
  EXPECT_EQ(bytewise.consumed, whole.consumed);
  EXPECT_EQ(Hex(bytewise.out), Hex(whole.out)) << "output must not depend on how input is split";
  EXPECT_EQ(bytewise.result.export_info, whole.result.export_info);
  EXPECT_EQ(bytewise.result.meta_context_ids, whole.result.meta_context_ids);
  EXPECT_EQ(bytewise.result.transmission_flags, whole.result.transmission_flags);
  EXPECT_EQ(bytewise.result.structured_replies, whole.result.structured_replies);
}

TEST(HandshakeChunking, RandomSplitsGiveTheSameSessionAsAllAtOnce) {
  FakeCatalog cat;
  Bytes input = ScriptedSession();
  SessionRun whole = Feed(cat, input, {input.size()});
  std::mt19937 rng(20240611);  // fixed seed: failures are reproducible
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<size_t> pieces;
    for (int i = 0; i < 16; ++i) pieces.push_back(1 + rng() % (1 + rng() % 200));
    SessionRun r = Feed(cat, input, pieces);
    ASSERT_EQ(r.status, whole.status) << "trial " << trial;
    ASSERT_EQ(r.consumed, whole.consumed) << "trial " << trial;
    ASSERT_EQ(Hex(r.out), Hex(whole.out)) << "trial " << trial;
    ASSERT_EQ(r.result.meta_context_ids, whole.result.meta_context_ids) << "trial " << trial;
  }
}

// ================================================== transmission flags ==

TEST(TransmissionFlags, ReadWriteExportAdvertisesWritesTrimZeroesAndDfOnlyWithStructured) {
  ExportInfo e;
  // HAS_FLAGS|SEND_FLUSH|SEND_FUA|SEND_TRIM|SEND_WRITE_ZEROES|CAN_MULTI_CONN|
  // SEND_CACHE|SEND_FAST_ZERO, plus SEND_DF (bit 7) with structured replies.
  EXPECT_EQ(e.transmission_flags(false), 0x0d6d);
  EXPECT_EQ(e.transmission_flags(true), 0x0ded);
  e.can_trim = false;
  EXPECT_EQ(e.transmission_flags(false), 0x0d4d) << "no SEND_TRIM without hole punching";
}

TEST(TransmissionFlags, ReadOnlyExportAdvertisesReadOnlyAndNoWriteFeatures) {
  ExportInfo e;
  e.read_only = true;
  EXPECT_EQ(e.transmission_flags(false), 0x0507);  // HAS_FLAGS|READ_ONLY|FLUSH|MULTI_CONN|CACHE
  EXPECT_EQ(e.transmission_flags(true), 0x0587);
}

TEST(TransmissionFlags, SpecInvariantsHoldForEveryExportShape) {
  for (int bits = 0; bits < 8; ++bits) {
    ExportInfo e;
    e.read_only = bits & 1;
    e.can_trim = bits & 2;
    bool sr = bits & 4;
    uint16_t f = e.transmission_flags(sr);
    EXPECT_TRUE(f & kFlagHasFlags) << "NBD_FLAG_HAS_FLAGS: MUST always be 1";
    if (!sr) {
      EXPECT_FALSE(f & kFlagSendDf) << "SEND_DF MUST be clear without structured replies";
    }
    if (!(f & kFlagSendWriteZeroes)) {
      EXPECT_FALSE(f & kFlagSendFastZero) << "FAST_ZERO MUST be 0 if WRITE_ZEROES is not set";
    }
    EXPECT_EQ(bool(f & kFlagReadOnly), e.read_only);
  }
}

// ============================================================ requests ==

TEST(DecodeRequest, ParsesTheSpecLayout) {
  // C: magic, 16-bit flags (FUA), 16-bit type (WRITE), 64-bit handle,
  // 64-bit offset, 32-bit length.
  Bytes b = H("25609513 0001 0001 0102030405060708 0000000000001000 00000200");
  Request r;
  ASSERT_TRUE(decode_request(std::span<const uint8_t, 28>(b.data(), 28), &r));
  EXPECT_EQ(r.flags, kCmdFlagFua);
  EXPECT_EQ(r.type, kCmdWrite);
  EXPECT_EQ(r.cookie, 0x0102030405060708u);
  EXPECT_EQ(r.offset, 0x1000u);
  EXPECT_EQ(r.length, 0x200u);
}

TEST(DecodeRequest, WrongMagicIsRejected) {
  // The historic request magic, the reply magics, and a byte-swapped magic.
  for (const char* magic : {"12560953", "67446698", "668e33ef", "13956025"}) {
    Bytes b = Cat({H(magic), H("0000 0000 0000000000000001 0000000000000000 00000200")});
    Request r;
    EXPECT_FALSE(decode_request(std::span<const uint8_t, 28>(b.data(), 28), &r)) << magic;
  }
}

TEST(EncodeRequest, ProducesTheSpecLayoutAndRoundTrips) {
  Request r{.flags = 0x0014,
            .type = kCmdWriteZeroes,
            .cookie = 0xfeedfacecafebeef,
            .offset = 0x123456789a,
            .length = 0x10000};
  Bytes out;
  encode_request(out, r);
  EXPECT_EQ(Hex(out), N("25609513 0014 0006 feedfacecafebeef 000000123456789a 00010000"));
  Request back;
  ASSERT_TRUE(decode_request(std::span<const uint8_t, 28>(out.data(), 28), &back));
  EXPECT_EQ(back.flags, r.flags);
  EXPECT_EQ(back.type, r.type);
  EXPECT_EQ(back.cookie, r.cookie);
  EXPECT_EQ(back.offset, r.offset);
  EXPECT_EQ(back.length, r.length);
}

class ValidateTest : public ::testing::Test {
 protected:
  ValidateTest() {
    rw_.name = "disk";
    rw_.size = 1 << 20;
    ro_.name = "golden";
    ro_.size = 64 << 10;
    ro_.read_only = true;
  }
  static Negotiated Neg(const ExportInfo& e, bool sr, std::vector<uint32_t> ids = {}) {
    Negotiated n;
    n.export_info = &e;
    n.structured_replies = sr;
    n.meta_context_ids = std::move(ids);
    n.transmission_flags = e.transmission_flags(sr);
    return n;
  }
  static Request Req(uint16_t type, uint64_t offset, uint32_t length, uint16_t flags = 0) {
    return Request{.flags = flags, .type = type, .cookie = 7, .offset = offset, .length = length};
  }
  // Error code for a request on the rw export with structured replies and
  // base:allocation selected, unless `n` says otherwise.
  uint32_t Err(const Request& r) const { return validate_request(r, Neg(rw_, true, {1})).error; }

  ExportInfo rw_;
  ExportInfo ro_;
};

const uint16_t kRanged[] = {kCmdRead,  kCmdWrite,       kCmdTrim,
                            kCmdCache, kCmdWriteZeroes, kCmdBlockStatus};

TEST_F(ValidateTest, WellFormedRequestsOfEveryCommandAreAccepted) {
  for (uint16_t t : kRanged) EXPECT_EQ(Err(Req(t, 4096, 4096)), 0u) << "type " << t;
  EXPECT_EQ(Err(Req(kCmdFlush, 0, 0)), 0u);
  EXPECT_EQ(Err(Req(kCmdRead, (1 << 20) - 512, 512)), 0u) << "a request ending at the end";
}

TEST_F(ValidateTest, UnknownCommandIsEinval) {
  for (uint16_t t : {uint16_t(8), uint16_t(9), uint16_t(0xffff)})
    EXPECT_EQ(Err(Req(t, 0, 512)), kEinval) << "The server SHOULD return NBD_EINVAL if it "
                                               "receives an unknown command (type "
                                            << t << ")";
}

TEST_F(ValidateTest, UnknownCommandFlagIsEinval) {
  for (int bit = 5; bit < 16; ++bit)
    EXPECT_EQ(Err(Req(kCmdRead, 0, 512, uint16_t(1 << bit))), kEinval)
        << "The server SHOULD return NBD_EINVAL if it receives an unknown command flag (bit " << bit
        << ")";
}

TEST_F(ValidateTest, FlagNotDocumentedForTheCommandIsEinval) {
  const struct {
    uint16_t type, flag;
    const char* what;
  } cases[] = {
      {kCmdWrite, kCmdFlagNoHole, "NO_HOLE on WRITE"},
      {kCmdRead, kCmdFlagNoHole, "NO_HOLE on READ"},
      {kCmdTrim, kCmdFlagNoHole, "NO_HOLE on TRIM"},
      {kCmdWrite, kCmdFlagDf, "DF on WRITE"},
      {kCmdBlockStatus, kCmdFlagDf, "DF on BLOCK_STATUS"},
      {kCmdRead, kCmdFlagReqOne, "REQ_ONE on READ"},
      {kCmdWrite, kCmdFlagFastZero, "FAST_ZERO on WRITE"},
      {kCmdCache, kCmdFlagNoHole, "NO_HOLE on CACHE"},
  };
  for (const auto& c : cases)
    EXPECT_EQ(Err(Req(c.type, 0, 512, c.flag)), kEinval)
        << c.what
        << ": SHOULD return NBD_EINVAL for a flag not explicitly documented as "
           "applicable to the given request";
  EXPECT_EQ(Err(Req(kCmdWriteZeroes, 0, 512, kCmdFlagNoHole | kCmdFlagFastZero | kCmdFlagFua)), 0u);
  EXPECT_EQ(Err(Req(kCmdBlockStatus, 0, 512, kCmdFlagReqOne)), 0u);
  EXPECT_EQ(Err(Req(kCmdRead, 0, 512, kCmdFlagDf)), 0u);
}

TEST_F(ValidateTest, DfWithoutStructuredRepliesIsEinval) {
  EXPECT_EQ(validate_request(Req(kCmdRead, 0, 512, kCmdFlagDf), Neg(rw_, false)).error, kEinval)
      << "Clients MUST NOT set NBD_CMD_FLAG_DF unless NBD_FLAG_SEND_DF is set";
}

TEST_F(ValidateTest, FuaOnReadIsEinvalWhenSendFuaIsNotAdvertised) {
  ASSERT_FALSE(ro_.transmission_flags(true) & kFlagSendFua);
  EXPECT_EQ(validate_request(Req(kCmdRead, 0, 512, kCmdFlagFua), Neg(ro_, true)).error, kEinval);
}

// Spec, NBD_CMD_FLAG_FUA: "This flag is valid for all commands, provided
// NBD_FLAG_SEND_FUA has been negotiated, in which case the server MUST accept
// all commands with this bit set (even by ignoring the bit)."
TEST_F(ValidateTest, FuaIsAcceptedOnEveryCommandWhenSendFuaIsAdvertised) {
  ASSERT_TRUE(rw_.transmission_flags(true) & kFlagSendFua);
  for (uint16_t t : kRanged)
    EXPECT_EQ(Err(Req(t, 0, 512, kCmdFlagFua)), 0u)
        << "FUA on command type " << t << ": the server MUST accept all commands with this "
        << "bit set when NBD_FLAG_SEND_FUA was advertised";
  EXPECT_EQ(Err(Req(kCmdFlush, 0, 0, kCmdFlagFua)), 0u) << "FUA on FLUSH";
}

TEST_F(ValidateTest, ZeroLengthIsEinval) {
  for (uint16_t t : kRanged) {
    Verdict v = validate_request(Req(t, 0, 0), Neg(rw_, true, {1}));
    EXPECT_EQ(v.error, kEinval) << "zero-length request of type " << t;
    EXPECT_FALSE(v.disconnect) << "the server SHOULD NOT disconnect on a zero length";
  }
}

TEST_F(ValidateTest, PastTheEndIsEinvalForReadsAndEnospcForWrites) {
  const uint64_t size = rw_.size;
  for (auto [off, len] :
       {std::pair<uint64_t, uint32_t>{size - 511, 512}, {size, 1}, {size + 4096, 512}}) {
    EXPECT_EQ(Err(Req(kCmdRead, off, len)), kEinval) << "read past the end";
    EXPECT_EQ(Err(Req(kCmdTrim, off, len)), kEinval) << "trim past the end";
    EXPECT_EQ(Err(Req(kCmdCache, off, len)), kEinval) << "cache past the end";
    EXPECT_EQ(Err(Req(kCmdBlockStatus, off, len)), kEinval) << "block status past the end";
    EXPECT_EQ(Err(Req(kCmdWrite, off, len)), kEnospc)
        << "The server SHOULD return NBD_ENOSPC if it receives a write request including one "
           "or more sectors beyond the size of the device";
    EXPECT_EQ(Err(Req(kCmdWriteZeroes, off, len)), kEnospc) << "write zeroes past the end";
  }
}

TEST_F(ValidateTest, OffsetPlusLengthOverflowIsRejectedNotWrapped) {
  for (uint64_t off : {~uint64_t(0), ~uint64_t(0) - 511, uint64_t(1) << 63}) {
    EXPECT_EQ(Err(Req(kCmdRead, off, 1024)), kEinval) << "offset " << off;
    EXPECT_EQ(Err(Req(kCmdWrite, off, 1024)), kEnospc) << "offset " << off;
  }
}

TEST_F(ValidateTest, WritesToReadOnlyExportAreEperm) {
  Negotiated n = Neg(ro_, true);
  for (uint16_t t : {kCmdWrite, kCmdTrim, kCmdWriteZeroes}) {
    Verdict v = validate_request(Req(t, 0, 512), n);
    EXPECT_EQ(v.error, kEperm) << "type " << t
                               << ": SHOULD return NBD_EPERM for a write or trim request "
                                  "on a read-only export";
  }
  EXPECT_EQ(validate_request(Req(kCmdRead, 0, 512), n).error, 0u);
  EXPECT_EQ(validate_request(Req(kCmdFlush, 0, 0), n).error, 0u);
}

TEST_F(ValidateTest, RejectedWriteStillReportsItsPayloadSoTheStreamStaysInStep) {
  Verdict v = validate_request(Req(kCmdWrite, 0, 512), Neg(ro_, false));
  EXPECT_EQ(v.error, kEperm);
  EXPECT_EQ(v.payload, 512u) << "the C: length bytes of data follow the header regardless";
  v = validate_request(Req(kCmdWrite, 0, 512, 0x8000), Neg(rw_, false));
  EXPECT_EQ(v.error, kEinval);
  EXPECT_EQ(v.payload, 512u);
  EXPECT_EQ(validate_request(Req(kCmdWriteZeroes, 0, 512), Neg(rw_, false)).payload, 0u)
      << "WRITE_ZEROES has no payload";
}

TEST_F(ValidateTest, TrimWithoutHolePunchingIsEinval) {
  rw_.can_trim = false;
  EXPECT_EQ(Err(Req(kCmdTrim, 0, 512)), kEinval);
}

TEST_F(ValidateTest, FlushWithOffsetOrLengthIsEinval) {
  EXPECT_EQ(Err(Req(kCmdFlush, 512, 0)), kEinval)
      << "For a flush request, length and offset are reserved, and MUST be set to all-zero";
  EXPECT_EQ(Err(Req(kCmdFlush, 0, 512)), kEinval);
}

TEST_F(ValidateTest, BlockStatusWithoutMetaContextIsEinval) {
  EXPECT_EQ(validate_request(Req(kCmdBlockStatus, 0, 512), Neg(rw_, true)).error, kEinval)
      << "Servers SHOULD reply with NBD_EINVAL to clients sending NBD_CMD_BLOCK_STATUS "
         "without selecting at least one metadata context";
}

TEST_F(ValidateTest, WriteLargerThanMaxBlockDisconnects) {
  rw_.size = uint64_t(1) << 40;
  Verdict v = validate_request(Req(kCmdWrite, 0, rw_.max_block + 1), Neg(rw_, false));
  EXPECT_TRUE(v.disconnect) << "a payload too big to accept is not worth reading";
  EXPECT_EQ(v.payload, rw_.max_block + 1);
  v = validate_request(Req(kCmdWrite, 0, rw_.max_block), Neg(rw_, false));
  EXPECT_FALSE(v.disconnect) << "exactly max_block (2^25) is fine";
  EXPECT_EQ(v.error, 0u);
}

TEST_F(ValidateTest, ReadLargerThanMaxBlockIsEinvalNotDisconnect) {
  rw_.size = uint64_t(1) << 40;
  Verdict v = validate_request(Req(kCmdRead, 0, rw_.max_block + 1), Neg(rw_, true));
  EXPECT_EQ(v.error, kEinval)
      << "The server SHOULD report an NBD_EINVAL error if the request is larger than the "
         "advertised maximum block size";
  EXPECT_FALSE(v.disconnect);
}

TEST_F(ValidateTest, DiscIsAlwaysAcceptedWithoutPayload) {
  for (const Negotiated& n : {Neg(rw_, false), Neg(ro_, true)}) {
    Verdict v = validate_request(Req(kCmdDisc, ~uint64_t(0), 0xffffffff, 0xffff), n);
    EXPECT_EQ(v.error, 0u);
    EXPECT_FALSE(v.disconnect);
    EXPECT_EQ(v.payload, 0u);
  }
}

// ============================================================== errno ==

TEST(ErrnoToNbd, MapsToTheValuesTheSpecAllows) {
  const std::pair<int, uint32_t> table[] = {
      {0, 0},        {EPERM, 1},       {EROFS, 1},       {EIO, 5},    {ENOMEM, 12},
      {EINVAL, 22},  {ENOSPC, 28},     {EDQUOT, 28},     {EFBIG, 28}, {EOVERFLOW, 75},
      {ENOTSUP, 95}, {EOPNOTSUPP, 95}, {ESHUTDOWN, 108}, {EBADF, 5},  {ENOENT, 5},
      {EAGAIN, 5},   {-ENOSPC, 28},    {-EIO, 5},        {12345, 5},
  };
  for (auto [err, nbd] : table)
    EXPECT_EQ(errno_to_nbd(err), nbd) << "errno " << err
                                      << " (EDQUOT and EFBIG SHOULD map to NBD_ENOSPC; "
                                         "unlisted errors become NBD_EIO)";
}

// ============================================================= replies ==

TEST(Replies, SimpleReplyIsMagicErrorHandle) {
  uint8_t out[kSimpleReplySize];
  encode_simple_reply(out, kEinval, 0x0102030405060708);
  EXPECT_EQ(Hex(out), N("67446698 00000016 0102030405060708"));
}

TEST(Replies, ChunkHeaderIsMagicFlagsTypeHandleLength) {
  uint8_t out[kChunkHeaderSize];
  encode_chunk_header(out, kReplyFlagDone, kReplyTypeOffsetData, 0xa1a2a3a4a5a6a7a8, 0x1008);
  EXPECT_EQ(Hex(out), N("668e33ef 0001 0001 a1a2a3a4a5a6a7a8 00001008"));
}

TEST(Replies, ErrorChunkCarriesErrorMessageLengthAndMessage) {
  Bytes out = H("ee");  // appends: existing bytes stay
  encode_error_chunk(out, 9, kEio, "hello", /*done=*/true);
  EXPECT_EQ(Hex(out), N("ee 668e33ef 0001 8001 0000000000000009 0000000b 00000005 0005"
                        "68656c6c6f"));
  out.clear();
  encode_error_chunk(out, 9, kEperm, "", /*done=*/false);
  EXPECT_EQ(Hex(out), N("668e33ef 0000 8001 0000000000000009 00000006 00000001 0000"));
}

TEST(Replies, ErrorChunkMessageIsCappedAt4096Bytes) {
  Bytes out;
  encode_error_chunk(out, 1, kEio, std::string(5000, 'x'));
  ASSERT_EQ(out.size(), 20u + 6 + 4096);
  EXPECT_EQ(Hex({&out[16], 4}), N("00001006")) << "chunk length 6 + 4096";
  EXPECT_EQ(Hex({&out[24], 2}), N("1000")) << "message length MUST NOT exceed 4096";
}

TEST(Replies, NoneChunkHasDoneFlagAndNoPayload) {
  Bytes out;
  encode_none_chunk(out, 0x42);
  EXPECT_EQ(Hex(out), N("668e33ef 0001 0000 0000000000000042 00000000"));
}

TEST(Replies, HoleChunkIsOffsetAndSize) {
  Bytes out;
  encode_hole_chunk(out, 3, 0x200000000, 0x10000, /*done=*/false);
  encode_hole_chunk(out, 3, 0x1000, 512, /*done=*/true);
  EXPECT_EQ(Hex(out), N("668e33ef 0000 0002 0000000000000003 0000000c 0000000200000000 00010000"
                        "668e33ef 0001 0002 0000000000000003 0000000c 0000000000001000 00000200"));
}

TEST(Replies, BlockStatusChunkIsContextIdThenExtentPairs) {
  Bytes out;
  const Extent extents[] = {{0x1000, kStateHole | kStateZero}, {0xf000, 0}};
  encode_block_status_chunk(out, 5, 1, extents, /*done=*/true);
  EXPECT_EQ(Hex(out), N("668e33ef 0001 0005 0000000000000005 00000014 00000001"
                        "00001000 00000003 0000f000 00000000"));
}

}  // namespace
}  // namespace mirror::nbd
