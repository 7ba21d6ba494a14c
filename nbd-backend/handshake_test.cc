// NBD handshake (option haggling) tests, from the spec's byte layouts.
#include "codec_test_util.h"

namespace mirror::nbd {
namespace codec_test {
namespace {

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
constexpr std::string_view kDirtyHex =
    "6d6972726f72643a64697274792d73696e63652d6261636b7570";  // mirrord:dirty-since-backup

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
                  N("0003e889045565a9 00000009 00000004 0000001e 00000000") + N(kDirtyHex)))
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
  EXPECT_EQ(c_.Send(Opt(kOptListMetaContext, MetaData("disk", {"mirrord:dirty-since-backup"}))),
            Status::kNeedMore);
  EXPECT_THAT(ReplyHexes(c_.Take()),
              ElementsAre(N("0003e889045565a9 00000009 00000004 0000001e 00000000") + N(kDirtyHex),
                          N("0003e889045565a9 00000009 00000001 00000000")));
}

TEST_F(HandshakeTest, ListMetaContextNamespaceQueryListsMirrordContexts) {
  Start();
  NegotiateStructuredReplies();
  EXPECT_EQ(c_.Send(Opt(kOptListMetaContext, MetaData("disk", {"mirrord:"}))), Status::kNeedMore);
  EXPECT_THAT(ReplyHexes(c_.Take()),
              ElementsAre(N("0003e889045565a9 00000009 00000004 0000001e 00000000") + N(kDirtyHex),
                          N("0003e889045565a9 00000009 00000001 00000000")))
      << "a query of the namespace alone lists every context in it (as nbdinfo --list does)";
}

TEST_F(HandshakeTest, SetBothMetaContextsGivesEachItsIdAndSelectsBoth) {
  Start();
  NegotiateStructuredReplies();
  EXPECT_EQ(c_.Send(Opt(kOptSetMetaContext,
                        MetaData("disk", {"mirrord:dirty-since-backup", "base:allocation"}))),
            Status::kNeedMore);
  EXPECT_THAT(ReplyHexes(c_.Take()),
              ElementsAre(N("0003e889045565a9 0000000a 00000004 00000013 00000001") + N(kAllocHex),
                          N("0003e889045565a9 0000000a 00000004 0000001e 00000002") + N(kDirtyHex),
                          N("0003e889045565a9 0000000a 00000001 00000000")))
      << "one NBD_REP_META_CONTEXT per selected context, with the id BLOCK_STATUS replies use";
  EXPECT_THAT(Go("disk").meta_context_ids, ElementsAre(1u, 2u));
}

TEST_F(HandshakeTest, SetOnlyTheDirtyContextSelectsIdTwo) {
  Start();
  NegotiateStructuredReplies();
  EXPECT_EQ(c_.Send(Opt(kOptSetMetaContext, MetaData("disk", {"mirrord:dirty-since-backup"}))),
            Status::kNeedMore);
  EXPECT_THAT(ReplyHexes(c_.Take()),
              ElementsAre(N("0003e889045565a9 0000000a 00000004 0000001e 00000002") + N(kDirtyHex),
                          N("0003e889045565a9 0000000a 00000001 00000000")));
  EXPECT_THAT(Go("disk").meta_context_ids, ElementsAre(2u));
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

}  // namespace
}  // namespace codec_test
}  // namespace mirror::nbd
