#include "codec.h"

#include <algorithm>
#include <cerrno>

#include "wire.h"

namespace mirror::nbd {

using wire::Reader;
using wire::Writer;

namespace {
constexpr uint32_t kMaxString = 4096;  // spec: strings MUST be no longer than this
}  // namespace

uint16_t ExportInfo::transmission_flags(bool structured_replies) const {
  uint16_t f = kFlagHasFlags | kFlagSendFlush | kFlagCanMultiConn | kFlagSendCache;
  if (structured_replies) f |= kFlagSendDf;  // DF only means something with chunks
  if (read_only) {
    f |= kFlagReadOnly;
  } else {
    f |= kFlagSendFua | kFlagSendWriteZeroes | kFlagSendFastZero;
    if (can_trim) f |= kFlagSendTrim;
  }
  return f;
}

// ------------------------------------------------------------- handshake --

std::string_view to_string(TlsMode m) {
  switch (m) {
    case TlsMode::kOff: return "off";
    case TlsMode::kOptional: return "optional";
    case TlsMode::kRequire: return "require";
  }
  return "off";
}

bool parse_tls_mode(std::string_view s, TlsMode* out) {
  for (TlsMode m : {TlsMode::kOff, TlsMode::kOptional, TlsMode::kRequire}) {
    if (s == to_string(m)) {
      *out = m;
      return true;
    }
  }
  return false;
}

void Handshake::greeting(std::vector<uint8_t>& out) {
  Writer(out).u64(kNbdMagic).u64(kIHaveOpt).u16(kFlagFixedNewstyle | kFlagNoZeroes);
}

void encode_option_reply(std::vector<uint8_t>& out, uint32_t opt, uint32_t type,
                         std::span<const uint8_t> payload) {
  Writer(out).u64(kOptReplyMagic).u32(opt).u32(type).u32(uint32_t(payload.size())).bytes(payload);
}

void encode_option_error(std::vector<uint8_t>& out, uint32_t opt, uint32_t type,
                         std::string_view message) {
  Writer(out).u64(kOptReplyMagic).u32(opt).u32(type).u32(uint32_t(message.size())).str(message);
}

Handshake::Status Handshake::close(std::string why) {
  phase_ = Phase::kClosed;
  close_reason_ = std::move(why);
  return Status::kClose;
}

Handshake::Status Handshake::feed(std::span<const uint8_t> in, size_t& consumed,
                                  std::vector<uint8_t>& out) {
  consumed = 0;
  for (;;) {
    if (phase_ == Phase::kDone) return Status::kDone;
    if (phase_ == Phase::kClosed) return Status::kClose;
    size_t used = 0;
    Status s = step(in.subspan(consumed), used, out);
    consumed += used;
    if (s != Status::kNeedMore) return s;
    if (used == 0) return Status::kNeedMore;
  }
}

Handshake::Status Handshake::step(std::span<const uint8_t> in, size_t& used,
                                  std::vector<uint8_t>& out) {
  switch (phase_) {
    case Phase::kClientFlags: {
      if (in.size() < 4) return Status::kNeedMore;
      uint32_t flags = wire::get_u32(in.data());
      used = 4;
      // The spec: the server MUST close if it does not recognise the flags.
      if (flags & ~(kClientFlagFixedNewstyle | kClientFlagNoZeroes))
        return close("unknown client flags");
      fixed_newstyle_ = flags & kClientFlagFixedNewstyle;
      result_.no_zeroes = flags & kClientFlagNoZeroes;
      phase_ = Phase::kOptions;
      return Status::kNeedMore;
    }
    case Phase::kSkipping: {
      size_t n = std::min<uint64_t>(skip_left_, in.size());
      used = n;
      skip_left_ -= n;
      if (skip_left_ > 0) return Status::kNeedMore;
      phase_ = Phase::kOptions;
      if (tls_required())
        encode_option_error(out, skip_opt_, kRepErrTlsReqd, "TLS is required: send NBD_OPT_STARTTLS");
      else
        encode_option_error(out, skip_opt_, kRepErrTooBig, "option data too long");
      return Status::kNeedMore;
    }
    case Phase::kOptions: {
      if (in.size() < 16) return Status::kNeedMore;
      Reader r(in.first(16));
      uint64_t magic = r.u64();
      uint32_t opt = r.u32();
      uint32_t len = r.u32();
      if (magic != kIHaveOpt) return close("bad option magic");
      // Count an option once, when it is consumed: a header seen again while
      // its data is still arriving is the same option.
      if (options_seen_ >= kMaxOptions) return close("too many options");
      // Without fixed newstyle the server cannot answer an option, only end.
      if (!fixed_newstyle_ && opt != kOptExportName)
        return close("option other than EXPORT_NAME without fixed newstyle");
      if (len > kMaxOptionLen) {
        if (opt == kOptExportName || len > kMaxOptionSkip) return close("option data too long");
        used = 16;
        ++options_seen_;
        skip_opt_ = opt;
        skip_left_ = len;
        phase_ = Phase::kSkipping;
        return Status::kNeedMore;
      }
      if (in.size() < 16 + size_t(len)) return Status::kNeedMore;
      used = 16 + size_t(len);
      ++options_seen_;
      return handle_option(opt, in.subspan(16, len), out);
    }
    case Phase::kDone:
      return Status::kDone;
    case Phase::kClosed:
      return Status::kClose;
  }
  return Status::kClose;
}

void Handshake::finish(const ExportInfo* e) {
  result_.export_info = e;
  if (meta_export_ == e->name) result_.meta_context_ids = meta_ids_;
  result_.transmission_flags = e->transmission_flags(result_.structured_replies);
  phase_ = Phase::kDone;
}

Handshake::Status Handshake::handle_option(uint32_t opt, std::span<const uint8_t> data,
                                           std::vector<uint8_t>& out) {
  // FORCEDTLS: nothing but STARTTLS and ABORT before TLS. EXPORT_NAME cannot
  // be refused with an error, so the spec says terminate.
  if (tls_required() && opt != kOptStartTls && opt != kOptAbort) {
    if (opt == kOptExportName) return close("client chose an export without TLS, which is required");
    encode_option_error(out, opt, kRepErrTlsReqd,
                        "TLS is required on this server: send NBD_OPT_STARTTLS first");
    told_tls_required_ = true;
    return Status::kNeedMore;
  }
  switch (opt) {
    case kOptExportName: {
      std::string_view name(reinterpret_cast<const char*>(data.data()), data.size());
      const ExportInfo* e = catalog_.find(name);
      // No way to report an error after EXPORT_NAME: the spec says terminate.
      if (!e) return close("client asked for an unknown export");
      finish(e);
      Writer w(out);
      w.u64(e->size).u16(result_.transmission_flags);
      if (!result_.no_zeroes) w.zeroes(124);
      return Status::kDone;
    }
    case kOptAbort:
      encode_option_reply(out, opt, kRepAck);
      // The log line an operator looks for when a client without TLS gives up.
      return close(told_tls_required_ && !tls_ ? "client sent NBD_OPT_ABORT after being told TLS "
                                                 "is required (NBD_REP_ERR_TLS_REQD)"
                                               : "client sent NBD_OPT_ABORT");
    case kOptList: {
      if (!data.empty()) {
        encode_option_error(out, opt, kRepErrInvalid, "NBD_OPT_LIST takes no data");
        return Status::kNeedMore;
      }
      for (const ExportInfo* e : catalog_.list()) {
        std::vector<uint8_t> payload;
        Writer(payload).u32(uint32_t(e->name.size())).str(e->name).str(e->description);
        encode_option_reply(out, opt, kRepServer, payload);
      }
      encode_option_reply(out, opt, kRepAck);
      return Status::kNeedMore;
    }
    case kOptInfo:
    case kOptGo:
      return handle_info_go(opt, data, out);
    case kOptStructuredReply:
      if (!data.empty()) {
        encode_option_error(out, opt, kRepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data");
        return Status::kNeedMore;
      }
      result_.structured_replies = true;
      encode_option_reply(out, opt, kRepAck);
      return Status::kNeedMore;
    case kOptListMetaContext:
    case kOptSetMetaContext:
      return handle_meta(opt, data, out);
    case kOptStartTls:
      if (tls_mode_ != TlsMode::kOff) return handle_starttls(data, out);
      [[fallthrough]];  // NOTLS: the spec allows NBD_REP_ERR_UNSUP
    default:
      // EXTENDED_HEADERS, anything unknown, and STARTTLS with TLS off: not
      // supported, and the session stays usable.
      encode_option_error(out, opt, kRepErrUnsup, "option not supported by this server");
      return Status::kNeedMore;
  }
}

Handshake::Status Handshake::handle_starttls(std::span<const uint8_t> data,
                                             std::vector<uint8_t>& out) {
  if (!data.empty()) {
    encode_option_error(out, kOptStartTls, kRepErrInvalid, "NBD_OPT_STARTTLS takes no data");
    return Status::kNeedMore;
  }
  // The spec: a second STARTTLS gets NBD_REP_ERR_INVALID.
  if (tls_) {
    encode_option_error(out, kOptStartTls, kRepErrInvalid, "TLS is already running");
    return Status::kNeedMore;
  }
  encode_option_reply(out, kOptStartTls, kRepAck);
  tls_ = true;
  // What was negotiated in plaintext could have been altered by anyone on
  // the path: the client negotiates again, under TLS.
  result_.structured_replies = false;
  meta_export_.clear();
  meta_ids_.clear();
  return Status::kStartTls;
}

Handshake::Status Handshake::handle_info_go(uint32_t opt, std::span<const uint8_t> data,
                                            std::vector<uint8_t>& out) {
  Reader r(data);
  uint32_t name_len = r.u32();
  std::string_view name = name_len <= kMaxString ? r.str(name_len) : std::string_view();
  uint16_t nreq = r.u16();
  std::vector<uint16_t> requests;
  for (uint32_t i = 0; i < nreq && !r.failed(); ++i) requests.push_back(r.u16());
  if (name_len > kMaxString || r.failed() || r.remaining() != 0) {
    encode_option_error(out, opt, kRepErrInvalid, "malformed NBD_OPT_INFO/GO request");
    return Status::kNeedMore;
  }
  const ExportInfo* e = catalog_.find(name);
  if (!e) {
    encode_option_error(out, opt, kRepErrUnknown, "no such export");
    return Status::kNeedMore;
  }
  std::vector<uint8_t> p;
  Writer(p).u16(kInfoExport).u64(e->size).u16(e->transmission_flags(result_.structured_replies));
  encode_option_reply(out, opt, kRepInfo, p);
  std::sort(requests.begin(), requests.end());
  requests.erase(std::unique(requests.begin(), requests.end()), requests.end());
  for (uint16_t type : requests) {
    p.clear();
    switch (type) {
      case kInfoName:
        Writer(p).u16(kInfoName).str(e->name);
        break;
      case kInfoDescription:
        if (e->description.empty()) continue;
        Writer(p).u16(kInfoDescription).str(e->description);
        break;
      case kInfoBlockSize:
        Writer(p).u16(kInfoBlockSize).u32(e->min_block).u32(e->preferred_block).u32(e->max_block);
        break;
      default:
        continue;  // unknown information types are ignored, as the spec asks
    }
    encode_option_reply(out, opt, kRepInfo, p);
  }
  encode_option_reply(out, opt, kRepAck);
  if (opt == kOptGo) {
    finish(e);
    return Status::kDone;
  }
  return Status::kNeedMore;
}

Handshake::Status Handshake::handle_meta(uint32_t opt, std::span<const uint8_t> data,
                                         std::vector<uint8_t>& out) {
  if (opt == kOptSetMetaContext) {
    // A SET replaces every earlier selection, including when it fails.
    meta_export_.clear();
    meta_ids_.clear();
    if (!result_.structured_replies) {
      encode_option_error(out, opt, kRepErrInvalid, "negotiate structured replies first");
      return Status::kNeedMore;
    }
  }
  Reader r(data);
  uint32_t name_len = r.u32();
  std::string_view name = name_len <= kMaxString ? r.str(name_len) : std::string_view();
  uint32_t nq = r.u32();
  std::vector<std::string_view> queries;
  for (uint32_t i = 0; i < nq && !r.failed(); ++i) {
    uint32_t qlen = r.u32();
    if (qlen > kMaxString) {
      r.str(r.remaining() + 1);  // force failure
      break;
    }
    queries.push_back(r.str(qlen));
  }
  if (name_len > kMaxString || r.failed() || r.remaining() != 0) {
    encode_option_error(out, opt, kRepErrInvalid, "malformed meta context request");
    return Status::kNeedMore;
  }
  const ExportInfo* e = catalog_.find(name);
  if (!e) {
    encode_option_error(out, opt, kRepErrUnknown, "no such export");
    return Status::kNeedMore;
  }
  std::vector<uint32_t> chosen;
  for (size_t i = 0; i < e->meta_contexts.size(); ++i) {
    const std::string& ctx = e->meta_contexts[i];
    bool match = false;
    if (opt == kOptListMetaContext && queries.empty()) match = true;
    for (std::string_view q : queries) {
      if (q == ctx) match = true;
      // A query of a namespace alone ("base:") lists that namespace.
      if (opt == kOptListMetaContext && !q.empty() && q.back() == ':' && ctx.starts_with(q))
        match = true;
    }
    if (match) chosen.push_back(uint32_t(i + 1));
  }
  for (uint32_t id : chosen) {
    std::vector<uint8_t> p;
    // The context id MUST be zero in replies to LIST.
    Writer(p).u32(opt == kOptSetMetaContext ? id : 0).str(e->meta_contexts[id - 1]);
    encode_option_reply(out, opt, kRepMetaContext, p);
  }
  if (opt == kOptSetMetaContext) {
    meta_export_ = e->name;
    meta_ids_ = std::move(chosen);
  }
  encode_option_reply(out, opt, kRepAck);
  return Status::kNeedMore;
}

// ---------------------------------------------------------- transmission --

bool decode_request(std::span<const uint8_t, kRequestHeaderSize> in, Request* out) {
  if (wire::get_u32(in.data()) != kRequestMagic) return false;
  out->flags = wire::get_u16(&in[4]);
  out->type = wire::get_u16(&in[6]);
  out->cookie = wire::get_u64(&in[8]);
  out->offset = wire::get_u64(&in[16]);
  out->length = wire::get_u32(&in[24]);
  return true;
}

void encode_request(std::vector<uint8_t>& out, const Request& r) {
  Writer(out).u32(kRequestMagic).u16(r.flags).u16(r.type).u64(r.cookie).u64(r.offset).u32(r.length);
}

Verdict validate_request(const Request& r, const Negotiated& n) {
  const ExportInfo& e = *n.export_info;
  Verdict v;
  if (r.type == kCmdWrite) {
    v.payload = r.length;
    // The payload must be consumed to stay in step with the stream; one
    // larger than we ever accept is not worth reading: hang up instead.
    if (r.length > e.max_block) {
      v.disconnect = true;
      v.why = "write payload larger than the maximum block size";
      return v;
    }
  }
  auto fail = [&v](uint32_t err, const char* why) {
    v.error = err;
    v.why = why;
    return v;
  };
  uint16_t allowed = 0;
  bool ranged = true;  // offset/length address the export
  bool writes = false;
  switch (r.type) {
    case kCmdRead:
      allowed = n.structured_replies ? kCmdFlagDf : 0;
      if (r.length > e.max_block) return fail(kEinval, "read larger than the maximum block size");
      break;
    case kCmdWrite:
      allowed = kCmdFlagFua;
      writes = true;
      break;
    case kCmdDisc:
      return v;  // no reply, flags and fields are ignored
    case kCmdFlush:
      ranged = false;
      if (r.offset != 0 || r.length != 0) return fail(kEinval, "flush with offset or length");
      break;
    case kCmdTrim:
      allowed = kCmdFlagFua;
      writes = true;
      if (!e.can_trim && !e.read_only) return fail(kEinval, "trim not supported");
      break;
    case kCmdCache:
      break;
    case kCmdWriteZeroes:
      allowed = kCmdFlagFua | kCmdFlagNoHole | kCmdFlagFastZero;
      writes = true;
      break;
    case kCmdBlockStatus:
      allowed = kCmdFlagReqOne;
      if (n.meta_context_ids.empty()) return fail(kEinval, "block status without a meta context");
      break;
    default:
      return fail(kEinval, "unknown command");
  }
  // With SEND_FUA advertised, FUA is valid on every command (a no-op where
  // nothing is written).
  if (n.transmission_flags & kFlagSendFua) allowed |= kCmdFlagFua;
  if (r.flags & ~allowed) return fail(kEinval, "flag not valid for this command");
  if (writes && e.read_only) return fail(kEperm, "write to a read-only export");
  if (ranged) {
    if (r.length == 0) return fail(kEinval, "zero-length request");
    if (r.offset > e.size || r.length > e.size - r.offset) {
      bool data_write = r.type == kCmdWrite || r.type == kCmdWriteZeroes;
      return fail(data_write ? kEnospc : kEinval, "request beyond the end of the export");
    }
  }
  return v;
}

uint32_t errno_to_nbd(int err) {
  if (err < 0) err = -err;
  switch (err) {
    case 0:
      return 0;
    case EPERM:
    case EROFS:
      return kEperm;
    case ENOMEM:
      return kEnomem;
    case EINVAL:
      return kEinval;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return kEnospc;
    case EOVERFLOW:
      return kEoverflow;
    case ENOTSUP:
      return kEnotsup;
    case ESHUTDOWN:
      return kEshutdown;
    default:
      return kEio;
  }
}

void encode_simple_reply(uint8_t out[kSimpleReplySize], uint32_t error, uint64_t cookie) {
  wire::put_u32(out, kSimpleReplyMagic);
  wire::put_u32(out + 4, error);
  wire::put_u64(out + 8, cookie);
}

void encode_chunk_header(uint8_t out[kChunkHeaderSize], uint16_t flags, uint16_t type,
                         uint64_t cookie, uint32_t length) {
  wire::put_u32(out, kStructuredReplyMagic);
  wire::put_u16(out + 4, flags);
  wire::put_u16(out + 6, type);
  wire::put_u64(out + 8, cookie);
  wire::put_u32(out + 16, length);
}

namespace {
void chunk(std::vector<uint8_t>& out, uint16_t flags, uint16_t type, uint64_t cookie,
           uint32_t length) {
  size_t at = out.size();
  out.resize(at + kChunkHeaderSize);
  encode_chunk_header(&out[at], flags, type, cookie, length);
}
}  // namespace

void encode_error_chunk(std::vector<uint8_t>& out, uint64_t cookie, uint32_t error,
                        std::string_view message, bool done) {
  message = message.substr(0, kMaxString);
  chunk(out, done ? kReplyFlagDone : 0, kReplyTypeError, cookie, uint32_t(6 + message.size()));
  Writer(out).u32(error).u16(uint16_t(message.size())).str(message);
}

void encode_none_chunk(std::vector<uint8_t>& out, uint64_t cookie) {
  chunk(out, kReplyFlagDone, kReplyTypeNone, cookie, 0);
}

void encode_hole_chunk(std::vector<uint8_t>& out, uint64_t cookie, uint64_t offset,
                       uint32_t length, bool done) {
  chunk(out, done ? kReplyFlagDone : 0, kReplyTypeOffsetHole, cookie, 12);
  Writer(out).u64(offset).u32(length);
}

void encode_block_status_chunk(std::vector<uint8_t>& out, uint64_t cookie, uint32_t context_id,
                               std::span<const Extent> extents, bool done) {
  chunk(out, done ? kReplyFlagDone : 0, kReplyTypeBlockStatus, cookie,
        uint32_t(4 + 8 * extents.size()));
  Writer w(out);
  w.u32(context_id);
  for (const Extent& x : extents) w.u32(x.length).u32(x.flags);
}

}  // namespace mirror::nbd
