// NBD_OPT_STARTTLS in the handshake state machine, from the spec's "TLS
// support" section: the three server modes, the ordering rules, and that
// option haggling restarts under TLS. The TLS handshake itself is not the
// codec's: here the bytes after STARTTLS stand for the decrypted stream.
#include "codec_test_util.h"

namespace mirror::nbd {
namespace codec_test {
namespace {

constexpr std::string_view kStartTlsAck = "0003e889045565a9 00000005 00000001 00000000";

class StartTlsTest : public ::testing::Test {
 protected:
  FakeCatalog cat_;
  void Start(Client& c) {
    ASSERT_EQ(c.Send(kFixedNoZeroes), Status::kNeedMore);
    ASSERT_THAT(c.Take(), IsEmpty());
  }
  // STARTTLS acknowledged, and the state machine stops right after it.
  void StartTls(Client& c) {
    ASSERT_EQ(c.Send(Opt(kOptStartTls)), Status::kStartTls);
    ASSERT_EQ(Hex(c.Take()), N(kStartTlsAck)) << "the server MUST reply with NBD_REP_ACK";
    ASSERT_TRUE(c.hs().tls());
  }
};

// ------------------------------------------------------------- FORCEDTLS --

TEST_F(StartTlsTest, RequireAnswersEveryOptionButStartTlsWithTlsReqd) {
  Client c(cat_, TlsMode::kRequire);
  Start(c);
  for (const Bytes& opt : {Opt(kOptList), Opt(kOptInfo, InfoData("disk")), Opt(kOptGo, InfoData("disk")),
                           Opt(kOptStructuredReply), Opt(kOptListMetaContext, MetaData("disk", {})),
                           Opt(0x1234, A("junk"))}) {
    EXPECT_EQ(c.Send(opt), Status::kNeedMore);
    uint32_t code = Get32(&opt[8]);
    ExpectOnlyError(c.Take(), code, kRepErrTlsReqd,
                    "FORCEDTLS: any other option MUST get NBD_REP_ERR_TLS_REQD before TLS");
  }
  EXPECT_FALSE(c.hs().result().structured_replies) << "a refused option negotiates nothing";
  StartTls(c);
}

TEST_F(StartTlsTest, RequireRefusesAnOversizedOptionWithTlsReqdToo) {
  Client c(cat_, TlsMode::kRequire);
  Start(c);
  EXPECT_EQ(c.Send(Opt(0x42, Bytes(Handshake::kMaxOptionLen + 1, 0))), Status::kNeedMore);
  ExpectOnlyError(c.Take(), 0x42, kRepErrTlsReqd, "FORCEDTLS: whatever the option, TLS_REQD");
}

TEST_F(StartTlsTest, RequireEndsTheSessionOnExportNameWithoutTls) {
  Client c(cat_, TlsMode::kRequire);
  Start(c);
  EXPECT_EQ(c.Send(Opt(kOptExportName, A("disk"))), Status::kClose)
      << "EXPORT_NAME cannot be answered with an error: the server MUST terminate the session";
  EXPECT_THAT(c.Take(), IsEmpty()) << "and the export's size and flags are never sent";
  EXPECT_EQ(c.hs().result().export_info, nullptr);
  EXPECT_THAT(c.hs().close_reason(), ::testing::HasSubstr("TLS"));
}

TEST_F(StartTlsTest, RequireStillAcknowledgesAbort) {
  Client c(cat_, TlsMode::kRequire);
  Start(c);
  EXPECT_EQ(c.Send(Opt(kOptGo, InfoData("disk"))), Status::kNeedMore);
  c.Take();
  EXPECT_EQ(c.Send(Opt(kOptAbort)), Status::kClose);
  EXPECT_EQ(Hex(c.Take()), N("0003e889045565a9 00000002 00000001 00000000"));
  EXPECT_THAT(c.hs().close_reason(), ::testing::HasSubstr("TLS is required"))
      << "the log says why the client gave up";
}

TEST_F(StartTlsTest, RequireServesEverythingAfterStartTls) {
  Client c(cat_, TlsMode::kRequire);
  Start(c);
  StartTls(c);
  EXPECT_EQ(c.Send(Opt(kOptStructuredReply)), Status::kNeedMore);
  EXPECT_EQ(Hex(c.Take()), N("0003e889045565a9 00000008 00000001 00000000"));
  EXPECT_EQ(c.Send(Opt(kOptGo, InfoData("disk"))), Status::kDone);
  std::vector<OptReply> r = Replies(c.Take());
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].type, kRepInfo);
  EXPECT_EQ(r[1].type, kRepAck);
  EXPECT_EQ(c.hs().result().export_info, &cat_.disk());
  EXPECT_TRUE(c.hs().result().structured_replies);
}

TEST_F(StartTlsTest, RequireAcceptsExportNameAfterStartTls) {
  Client c(cat_, TlsMode::kRequire);
  Start(c);
  StartTls(c);
  EXPECT_EQ(c.Send(Opt(kOptExportName, A("golden"))), Status::kDone);
  EXPECT_EQ(Hex(c.Take()), N("0000000000010000 0507"));
}

// ------------------------------------------------------ ordering, state --

TEST_F(StartTlsTest, BytesAfterStartTlsAreLeftForTheTlsLayer) {
  Client c(cat_, TlsMode::kRequire);
  Start(c);
  // A client that sends its ClientHello without waiting for the ACK: those
  // bytes are ciphertext, not an option, and must not be parsed.
  Bytes hello = H("16030100c8 0100");
  EXPECT_EQ(c.Send(Cat({Opt(kOptStartTls), hello})), Status::kStartTls);
  EXPECT_EQ(Hex(c.Take()), N(kStartTlsAck));
  EXPECT_EQ(Hex(c.pending()), Hex(hello)) << "feed consumes up to the end of STARTTLS only";
}

TEST_F(StartTlsTest, SecondStartTlsIsErrInvalid) {
  Client c(cat_, TlsMode::kOptional);
  Start(c);
  StartTls(c);
  EXPECT_EQ(c.Send(Opt(kOptStartTls)), Status::kNeedMore);
  ExpectOnlyError(c.Take(), kOptStartTls, kRepErrInvalid,
                  "STARTTLS when TLS has already been negotiated MUST get NBD_REP_ERR_INVALID");
}

TEST_F(StartTlsTest, StartTlsWithDataIsErrInvalidAndTlsDoesNotStart) {
  Client c(cat_, TlsMode::kRequire);
  Start(c);
  EXPECT_EQ(c.Send(Opt(kOptStartTls, A("x"))), Status::kNeedMore);
  ExpectOnlyError(c.Take(), kOptStartTls, kRepErrInvalid, "STARTTLS takes no data");
  EXPECT_FALSE(c.hs().tls());
  StartTls(c);
}

TEST_F(StartTlsTest, NothingNegotiatedInPlaintextSurvivesStartTls) {
  Client c(cat_, TlsMode::kOptional);
  Start(c);
  ASSERT_EQ(c.Send(Opt(kOptStructuredReply)), Status::kNeedMore);
  ASSERT_EQ(c.Send(Opt(kOptSetMetaContext, MetaData("disk", {"base:allocation"}))),
            Status::kNeedMore);
  c.Take();
  StartTls(c);
  EXPECT_EQ(c.Send(Opt(kOptGo, InfoData("disk"))), Status::kDone);
  EXPECT_FALSE(c.hs().result().structured_replies)
      << "structured replies negotiated before TLS could have been injected: negotiate again";
  EXPECT_THAT(c.hs().result().meta_context_ids, IsEmpty());
  EXPECT_EQ(c.hs().result().transmission_flags & kFlagSendDf, 0);
}

// ---------------------------------------------------- SELECTIVETLS, NOTLS --

TEST_F(StartTlsTest, OptionalServesPlaintextClientsAsBefore) {
  Client c(cat_, TlsMode::kOptional);
  Start(c);
  EXPECT_EQ(c.Send(Opt(kOptList)), Status::kNeedMore);
  EXPECT_EQ(Replies(c.Take()).back().type, kRepAck) << "no TLS_REQD in SELECTIVETLS mode";
  EXPECT_EQ(c.Send(Opt(kOptExportName, A("disk"))), Status::kDone);
  EXPECT_FALSE(c.hs().tls());
}

TEST_F(StartTlsTest, OffAnswersStartTlsUnsupAndNeverTlsReqd) {
  Client c(cat_, TlsMode::kOff);
  Start(c);
  EXPECT_EQ(c.Send(Opt(kOptStartTls)), Status::kNeedMore);
  ExpectOnlyError(c.Take(), kOptStartTls, kRepErrUnsup,
                  "NOTLS: STARTTLS MUST get NBD_REP_ERR_POLICY or NBD_REP_ERR_UNSUP");
  EXPECT_FALSE(c.hs().tls());
  EXPECT_EQ(c.Send(Opt(kOptGo, InfoData("disk"))), Status::kDone);
}

TEST_F(StartTlsTest, WithoutFixedNewstyleThereIsNoStartTls) {
  Client c(cat_, TlsMode::kRequire);
  ASSERT_EQ(c.Send(H("00000000")), Status::kNeedMore);
  EXPECT_EQ(c.Send(Opt(kOptStartTls)), Status::kClose)
      << "TLS requires fixed newstyle; without it only EXPORT_NAME exists";
}

}  // namespace
}  // namespace codec_test
}  // namespace mirror::nbd
