// NBD transmission tests: request decoding, validation, errno mapping and
// reply encoders, from the spec's byte layouts.
#include "codec_test_util.h"

namespace mirror::nbd {
namespace codec_test {
namespace {

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

TEST(Replies, DirtySinceBackupChunkCarriesItsContextIdAndFlagOne) {
  // mirrord:dirty-since-backup (docs/nbd-server.md): flag 1 = changed since
  // the last backup point, like qemu:dirty-bitmap:NAME.
  Bytes out;
  const Extent extents[] = {{0x10000, 0}, {0x20000, 1}, {0x100000, 0}};
  encode_block_status_chunk(out, 9, 2, extents, /*done=*/false);
  EXPECT_EQ(Hex(out), N("668e33ef 0000 0005 0000000000000009 0000001c 00000002"
                        "00010000 00000000 00020000 00000001 00100000 00000000"));
}

}  // namespace
}  // namespace codec_test
}  // namespace mirror::nbd
