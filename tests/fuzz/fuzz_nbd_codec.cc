// libFuzzer target for the NBD codec (nbd-backend/codec.h).
//
// Input layout: byte 0 chooses how the rest is split into reads (0 = all at
// once; otherwise bits 0-5 bound the piece size, bit 6 adds empty reads and
// the whole byte seeds the piece sizes); the rest is what a client sends:
// client flags, options, then (if the handshake ends in transmission) a
// stream of 28-byte requests and write payloads.
//
// Every input runs twice, split as byte 0 says and in one piece, and both
// runs must agree. Each run checks the handshake against a model of the
// client's stream rebuilt from the bytes the server consumed: each option
// gets zero or more informational replies then exactly one final reply,
// with the option's own code, of a type the spec allows for it. The
// transmission part checks decode/encode round trips and that every request
// validate_request accepts is one the spec allows. Any violation aborts.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "codec.h"

namespace {

using namespace mirror::nbd;
using Bytes = std::vector<uint8_t>;
using Status = Handshake::Status;

[[noreturn]] void Fail(const char* what, const char* file, int line) {
  std::fprintf(stderr, "fuzz_nbd_codec: invariant violated at %s:%d: %s\n", file, line, what);
  std::abort();
}
#define CHECK(cond)                               \
  do {                                            \
    if (!(cond)) Fail(#cond, __FILE__, __LINE__); \
  } while (0)

uint16_t Get16(const uint8_t* p) {
  return uint16_t(p[0] << 8 | p[1]);
}
uint32_t Get32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
uint64_t Get64(const uint8_t* p) {
  return uint64_t(Get32(p)) << 32 | Get32(p + 4);
}

constexpr uint64_t kIHaveOptMagic = 0x49484156454F5054;
constexpr uint64_t kReplyMagic = 0x0003e889045565a9;

// ---------------------------------------------------------------- catalog --

class Catalog : public ExportCatalog {
 public:
  Catalog() {
    exports_[0].name = "disk";
    exports_[0].description = "scratch disk";
    exports_[0].size = 1 << 20;
    exports_[0].meta_contexts = {"base:allocation", "x-mirror:dirty"};
    exports_[1].name = "golden";
    exports_[1].size = 64 << 10;
    exports_[1].read_only = true;
    exports_[1].max_block = 64 << 10;
  }
  std::vector<const ExportInfo*> list() const override { return {&exports_[0], &exports_[1]}; }
  const ExportInfo* find(std::string_view name) const override {
    if (name.empty()) return &exports_[0];
    for (const ExportInfo& e : exports_)
      if (e.name == name) return &e;
    return nullptr;
  }

 private:
  ExportInfo exports_[2];
};

const Catalog& TheCatalog() {
  static const Catalog catalog;  // immutable after construction
  return catalog;
}

// ---------------------------------------------------------- client model --

struct ClientOption {
  uint32_t opt = 0;
  uint32_t len = 0;
  bool oversized = false;  // longer than kMaxOptionLen: skipped, data not kept
  Bytes data;
};

// The client's side of the handshake, rebuilt from the bytes the server
// consumed. Since the server consumes whole messages only (or skips an
// oversized option's data), the model must sit on a message boundary after
// every feed that does not end the handshake.
class ClientStream {
 public:
  // Takes bytes the server consumed; returns the options they completed.
  std::vector<ClientOption> Consume(std::span<const uint8_t> b) {
    std::vector<ClientOption> done;
    size_t i = 0;
    while (i < b.size()) {
      if (!flags_done_ || !in_data_) {
        hdr_.push_back(b[i++]);
        if (!flags_done_ && hdr_.size() == 4) {
          flags = Get32(hdr_.data());
          flags_done_ = true;
          hdr_.clear();
        } else if (flags_done_ && hdr_.size() == 16) {
          CHECK(Get64(hdr_.data()) == kIHaveOptMagic);  // bad magic is never consumed
          cur_ = ClientOption{};
          cur_.opt = Get32(&hdr_[8]);
          cur_.len = Get32(&hdr_[12]);
          cur_.oversized = cur_.len > Handshake::kMaxOptionLen;
          left_ = cur_.len;
          hdr_.clear();
          in_data_ = true;
          if (left_ == 0) {
            done.push_back(cur_);
            in_data_ = false;
          }
        }
        continue;
      }
      size_t n = std::min<uint64_t>(left_, b.size() - i);
      if (!cur_.oversized) cur_.data.insert(cur_.data.end(), b.begin() + i, b.begin() + i + n);
      left_ -= n;
      i += n;
      if (left_ == 0) {
        done.push_back(std::move(cur_));
        in_data_ = false;
      }
    }
    return done;
  }
  // Between messages, or inside the data of an option being skipped.
  bool AtBoundary() const { return hdr_.empty() && (!in_data_ || cur_.oversized); }

  uint32_t flags = 0;

 private:
  bool flags_done_ = false;
  bool in_data_ = false;
  Bytes hdr_;
  ClientOption cur_;
  uint64_t left_ = 0;
};

// The export name at the start of INFO/GO/META option data, if well formed.
bool NameOf(const Bytes& d, std::string_view* name) {
  if (d.size() < 4) return false;
  uint32_t n = Get32(d.data());
  if (n > d.size() - 4) return false;
  *name = std::string_view(reinterpret_cast<const char*>(d.data() + 4), n);
  return true;
}

struct MetaSelection {
  const ExportInfo* export_info = nullptr;
  std::vector<uint32_t> ids;
  bool ok = false;
};

// What the handshake should have agreed on, from the replies seen so far.
struct Model {
  bool structured = false;
  MetaSelection last_set;  // the latest SET_META_CONTEXT, failed or not
  MetaSelection last_ok_set;
  const ExportInfo* go_export = nullptr;
};

struct OptReply {
  uint32_t opt, type;
  std::span<const uint8_t> data;
};

bool IsFinal(uint32_t type) {
  return type == kRepAck || (type & kRepErrBit);
}

bool PowerOfTwo(uint32_t v) {
  return v && !(v & (v - 1));
}

void CheckInfoReply(std::span<const uint8_t> d, const ExportInfo* e, const Model& m) {
  CHECK(d.size() >= 2);
  switch (Get16(d.data())) {
    case kInfoExport:
      CHECK(d.size() == 12);
      CHECK(e != nullptr);
      CHECK(Get64(&d[2]) == e->size);
      CHECK(Get16(&d[10]) == e->transmission_flags(m.structured));
      break;
    case kInfoName:
      CHECK(std::string_view(reinterpret_cast<const char*>(&d[2]), d.size() - 2) == e->name);
      break;
    case kInfoDescription:
      CHECK(d.size() - 2 <= 4096);
      break;
    case kInfoBlockSize: {
      CHECK(d.size() == 14);
      uint32_t min = Get32(&d[2]), pref = Get32(&d[6]), max = Get32(&d[10]);
      CHECK(PowerOfTwo(min) && min <= 65536);
      CHECK(PowerOfTwo(pref) && pref >= std::max<uint32_t>(min, 512));
      CHECK(max == 0xffffffff || max % min == 0);
      break;
    }
    default:
      break;  // the server MAY send information types not requested
  }
}

struct Checked {
  size_t at;            // offset after the option's replies
  uint32_t final_type;  // type of its final reply
};

// Checks the server's replies to one completed option starting at out[at]
// and updates the model.
Checked CheckOption(const ClientOption& o, std::span<const uint8_t> out, size_t at, Model& m) {
  const Catalog& cat = TheCatalog();
  std::vector<OptReply> replies;
  for (;;) {
    CHECK(out.size() - at >= 20);  // every option gets a final reply
    CHECK(Get64(&out[at]) == kReplyMagic);
    OptReply r{Get32(&out[at + 8]), Get32(&out[at + 12]), {}};
    uint32_t len = Get32(&out[at + 16]);
    CHECK(out.size() - at - 20 >= len);
    r.data = out.subspan(at + 20, len);
    at += 20 + len;
    CHECK(r.opt == o.opt);  // replies carry the client's option code
    replies.push_back(r);
    if (IsFinal(r.type)) break;
  }
  const OptReply& last = replies.back();
  const size_t n_info = replies.size() - 1;
  if (last.type & kRepErrBit) {
    CHECK(last.type == kRepErrUnsup || last.type == kRepErrInvalid || last.type == kRepErrUnknown ||
          last.type == kRepErrTooBig);
    CHECK(last.data.size() <= 4096);
  } else {
    CHECK(last.data.empty());  // NBD_REP_ACK has no data
  }
  if (o.oversized) {
    CHECK(replies.size() == 1 && last.type == kRepErrTooBig);
    return {at, last.type};
  }

  std::string_view name;
  const ExportInfo* e = NameOf(o.data, &name) ? cat.find(name) : nullptr;
  switch (o.opt) {
    case kOptAbort:
      CHECK(replies.size() == 1 && last.type == kRepAck);
      break;
    case kOptList:
      CHECK(last.type == (o.data.empty() ? kRepAck : kRepErrInvalid));
      if (last.type == kRepAck) CHECK(n_info == cat.list().size());
      for (size_t i = 0; i < n_info; ++i) {
        const OptReply& r = replies[i];
        CHECK(r.type == kRepServer && r.data.size() >= 4);
        uint32_t nlen = Get32(r.data.data());
        CHECK(nlen <= r.data.size() - 4);
        CHECK(cat.find(std::string_view(reinterpret_cast<const char*>(&r.data[4]), nlen)));
      }
      break;
    case kOptStructuredReply:
      CHECK(n_info == 0);
      CHECK(last.type == (o.data.empty() ? kRepAck : kRepErrInvalid));
      if (last.type == kRepAck) m.structured = true;
      break;
    case kOptInfo:
    case kOptGo: {
      if (last.type != kRepAck) {
        if (last.type == kRepErrUnknown) CHECK(n_info == 0 && e == nullptr);
        break;
      }
      CHECK(e != nullptr);
      CHECK(n_info >= 1 && Get16(replies[0].data.data()) == kInfoExport);
      int exports = 0;
      for (size_t i = 0; i < n_info; ++i) {
        CHECK(replies[i].type == kRepInfo);
        CheckInfoReply(replies[i].data, e, m);
        exports += Get16(replies[i].data.data()) == kInfoExport;
      }
      CHECK(exports == 1);
      if (o.opt == kOptGo) m.go_export = e;
      break;
    }
    case kOptListMetaContext:
    case kOptSetMetaContext: {
      bool set = o.opt == kOptSetMetaContext;
      MetaSelection sel;
      for (size_t i = 0; i < n_info; ++i) {
        const OptReply& r = replies[i];
        CHECK(r.type == kRepMetaContext && r.data.size() > 4);
        CHECK(e != nullptr);
        uint32_t id = Get32(r.data.data());
        std::string_view ctx(reinterpret_cast<const char*>(&r.data[4]), r.data.size() - 4);
        CHECK(ctx.find(':') != std::string_view::npos && ctx.find(':') > 0);
        if (!set) {
          CHECK(id == 0);  // the ID in LIST replies is reserved
          continue;
        }
        CHECK(id >= 1 && id <= e->meta_contexts.size() && e->meta_contexts[id - 1] == ctx);
        for (uint32_t seen : sel.ids) CHECK(seen != id);  // each with a unique ID
        sel.ids.push_back(id);
      }
      if (set && !m.structured) CHECK(last.type == kRepErrInvalid);
      if (set) {
        sel.export_info = e;
        sel.ok = last.type == kRepAck;
        m.last_set = sel;
        if (sel.ok) m.last_ok_set = sel;
      }
      break;
    }
    default:
      // STARTTLS (no TLS here: an ACK would be fatal), PEEK_EXPORT,
      // EXTENDED_HEADERS and unknown options are all errored.
      CHECK(n_info == 0 && last.type == kRepErrUnsup);
      break;
  }
  return {at, last.type};
}

void CheckNegotiated(const Negotiated& n, const Model& m, const ClientStream& client) {
  const ExportInfo* e = n.export_info;
  CHECK(e != nullptr && e == m.go_export);
  CHECK(n.structured_replies == m.structured);
  CHECK(n.no_zeroes == bool(client.flags & kClientFlagNoZeroes));
  CHECK(n.transmission_flags == e->transmission_flags(n.structured_replies));
  CHECK(n.transmission_flags & kFlagHasFlags);
  if (!n.structured_replies) CHECK(!(n.transmission_flags & kFlagSendDf));
  if (!n.meta_context_ids.empty()) CHECK(n.structured_replies);
  if (m.last_set.ok && m.last_set.export_info == e) {
    CHECK(n.meta_context_ids == m.last_set.ids);
  } else {
    // Nothing may be selected that the client was not told about for this
    // export. (The spec also clears the selection on a failed SET; that is
    // checked by the unit tests, not here.)
    for (uint32_t id : n.meta_context_ids) {
      CHECK(m.last_ok_set.export_info == e);
      bool told = false;
      for (uint32_t t : m.last_ok_set.ids) told |= t == id;
      CHECK(told);
    }
  }
}

// ------------------------------------------------------------- handshake --

class Splitter {
 public:
  explicit Splitter(uint8_t mode)
      : whole_(mode == 0),
        empty_reads_(mode & 0x40),
        max_(1 + (mode & 0x3f)),
        state_(0x9e3779b9u * (mode + 1u)) {}
  // Size of the next read, 0 for an empty read. The xorshift state is never
  // zero (odd multiplier), so empty reads never repeat forever.
  size_t Next(size_t left) {
    if (whole_) return left;
    state_ ^= state_ << 13;
    state_ ^= state_ >> 17;
    state_ ^= state_ << 5;
    if (empty_reads_ && (state_ & 7) == 0) return 0;
    return std::min<size_t>(left, 1 + (state_ >> 8) % max_);
  }

 private:
  bool whole_;
  bool empty_reads_;
  uint32_t max_;
  uint32_t state_;
};

struct RunResult {
  Status status = Status::kNeedMore;
  Bytes out;
  size_t consumed = 0;
  Negotiated negotiated;
};

RunResult RunHandshake(std::span<const uint8_t> input, Splitter split) {
  const Catalog& cat = TheCatalog();
  Handshake hs(cat);
  RunResult run;
  ClientStream client;
  Model model;
  Bytes pending;
  size_t fed = 0;
  while (fed < input.size()) {
    size_t n = split.Next(input.size() - fed);
    pending.insert(pending.end(), input.begin() + fed, input.begin() + fed + n);
    fed += n;
    size_t out_before = run.out.size();
    size_t consumed = ~size_t(0);
    Status s = hs.feed(pending, consumed, run.out);
    CHECK(consumed <= pending.size());
    run.status = s;
    run.consumed += consumed;
    std::span<const uint8_t> fresh(run.out.data() + out_before, run.out.size() - out_before);
    std::vector<ClientOption> done =
        client.Consume(std::span<const uint8_t>(pending.data(), consumed));
    pending.erase(pending.begin(), pending.begin() + consumed);

    size_t at = 0;
    for (size_t i = 0; i < done.size(); ++i) {
      const ClientOption& o = done[i];
      if (o.opt == kOptExportName && !o.oversized) {
        // Ends the handshake: success sends size, flags and maybe zeroes;
        // an unknown export can only be answered by closing.
        CHECK(i + 1 == done.size());
        std::string_view name(reinterpret_cast<const char*>(o.data.data()), o.data.size());
        const ExportInfo* e = cat.find(name);
        if (!e) {
          CHECK(s == Status::kClose && at == fresh.size());
          break;
        }
        CHECK(s == Status::kDone);
        model.go_export = e;
        size_t want = (client.flags & kClientFlagNoZeroes) ? 10 : 134;
        CHECK(fresh.size() - at == want);
        CHECK(Get64(&fresh[at]) == e->size);
        CHECK(Get16(&fresh[at + 8]) == e->transmission_flags(model.structured));
        for (size_t z = at + 10; z < fresh.size(); ++z) CHECK(fresh[z] == 0);
        at = fresh.size();
        break;
      }
      Checked c = CheckOption(o, fresh, at, model);
      at = c.at;
      bool ends =
          o.opt == kOptAbort || (o.opt == kOptGo && !o.oversized && c.final_type == kRepAck);
      if (ends) CHECK(i + 1 == done.size());  // nothing is consumed after the end
      if (o.opt == kOptAbort) CHECK(s == Status::kClose);
      if (o.opt == kOptGo && ends) CHECK(s == Status::kDone);
    }
    CHECK(at == fresh.size());  // no reply without an option to answer
    if (s == Status::kDone) {
      // Only a successful GO or EXPORT_NAME, the last option consumed, ends it.
      CHECK(!done.empty() && !done.back().oversized &&
            (done.back().opt == kOptGo || done.back().opt == kOptExportName));
    }

    if (s == Status::kNeedMore) {
      CHECK(client.AtBoundary());
      CHECK(pending.size() < 16 + size_t(Handshake::kMaxOptionLen));
      continue;
    }
    if (s == Status::kDone) CheckNegotiated(hs.result(), model, client);
    // The end is sticky: more input is neither consumed nor answered.
    Bytes more = pending;
    more.insert(more.end(), input.begin() + fed, input.end());
    size_t again = 1;
    size_t before = run.out.size();
    CHECK(hs.feed(more, again, run.out) == s);
    CHECK(again == 0 && run.out.size() == before);
    break;
  }
  run.negotiated = hs.result();
  return run;
}

// ---------------------------------------------------------- transmission --

bool AllowedError(uint32_t e) {
  switch (e) {
    case 0:
    case kEperm:
    case kEio:
    case kEnomem:
    case kEinval:
    case kEnospc:
    case kEoverflow:
    case kEnotsup:
    case kEshutdown:
      return true;
    default:
      return false;
  }
}

// A request validate_request accepted must be one the spec lets a client send
// after this negotiation (the codec may be stricter, never looser).
void CheckAcceptedIsValid(const Request& r, const Negotiated& n) {
  const ExportInfo& e = *n.export_info;
  const uint16_t tf = n.transmission_flags;
  uint16_t ok_flags = (tf & kFlagSendFua) ? kCmdFlagFua : 0;
  bool ranged = true, writes = false;
  switch (r.type) {
    case kCmdRead:
      if (tf & kFlagSendDf) ok_flags |= kCmdFlagDf;
      CHECK(r.length <= e.max_block);
      break;
    case kCmdWrite:
      writes = true;
      CHECK(r.length <= e.max_block);
      break;
    case kCmdFlush:
      ranged = false;
      CHECK(r.offset == 0 && r.length == 0);
      break;
    case kCmdTrim:
      writes = true;
      CHECK(tf & kFlagSendTrim);
      break;
    case kCmdCache:
      break;
    case kCmdWriteZeroes:
      writes = true;
      CHECK(tf & kFlagSendWriteZeroes);
      ok_flags |= kCmdFlagNoHole;
      if (tf & kFlagSendFastZero) ok_flags |= kCmdFlagFastZero;
      break;
    case kCmdBlockStatus:
      CHECK(n.structured_replies && !n.meta_context_ids.empty());
      ok_flags |= kCmdFlagReqOne;
      break;
    default:
      Fail("unknown command accepted", __FILE__, __LINE__);
  }
  CHECK((r.flags & ~ok_flags) == 0);
  if (writes) CHECK(!e.read_only && !(tf & kFlagReadOnly));
  if (ranged) CHECK(r.length > 0 && r.offset <= e.size && r.length <= e.size - r.offset);
}

void CheckReplyEncoders(const Request& r, uint32_t error, std::span<const uint8_t> payload) {
  uint8_t simple[kSimpleReplySize];
  encode_simple_reply(simple, error, r.cookie);
  CHECK(Get32(simple) == kSimpleReplyMagic && Get32(simple + 4) == error &&
        Get64(simple + 8) == r.cookie);
  Bytes out;
  std::string_view msg(reinterpret_cast<const char*>(payload.data()), payload.size());
  encode_error_chunk(out, r.cookie, error ? error : kEio, msg, r.flags & 1);
  CHECK(out.size() >= kChunkHeaderSize + 6);
  CHECK(Get32(&out[0]) == kStructuredReplyMagic && Get16(&out[6]) == kReplyTypeError);
  CHECK(Get64(&out[8]) == r.cookie && Get32(&out[16]) == out.size() - kChunkHeaderSize);
  CHECK(Get16(&out[24]) == out.size() - kChunkHeaderSize - 6 && Get16(&out[24]) <= 4096);
  out.clear();
  const Extent ext[] = {{r.length | 1, r.flags & 3u}, {uint32_t(r.offset) | 1, 0}};
  encode_block_status_chunk(out, r.cookie, 1, std::span<const Extent>(ext, 1 + (r.type & 1)), true);
  CHECK(Get32(&out[16]) == out.size() - kChunkHeaderSize && (out.size() - 24) % 8 == 0);
}

void RunTransmission(std::span<const uint8_t> in, const Negotiated& n) {
  size_t at = 0;
  while (in.size() - at >= kRequestHeaderSize) {
    std::array<uint8_t, kRequestHeaderSize> hdr;
    std::copy_n(in.begin() + at, hdr.size(), hdr.begin());
    at += hdr.size();
    Request r;
    bool ok = decode_request(hdr, &r);
    CHECK(ok == (Get32(hdr.data()) == kRequestMagic));
    if (!ok) return;  // cannot resynchronise: the server closes
    CHECK(r.flags == Get16(&hdr[4]) && r.type == Get16(&hdr[6]) && r.cookie == Get64(&hdr[8]) &&
          r.offset == Get64(&hdr[16]) && r.length == Get32(&hdr[24]));
    Bytes enc;
    encode_request(enc, r);  // differential: encode(decode(x)) == x
    CHECK(enc.size() == hdr.size() && std::equal(enc.begin(), enc.end(), hdr.begin()));

    Verdict v = validate_request(r, n);
    CHECK(AllowedError(v.error));
    CHECK(v.why != nullptr);
    CHECK(v.payload == (r.type == kCmdWrite ? r.length : 0));
    bool too_big = r.type == kCmdWrite && r.length > n.export_info->max_block;
    CHECK(v.disconnect == too_big);
    if (v.disconnect) return;
    if (v.error == 0 && r.type != kCmdDisc) CheckAcceptedIsValid(r, n);
    if (r.type == kCmdDisc) {
      CHECK(v.error == 0);
      return;  // nothing may follow NBD_CMD_DISC
    }
    size_t take = std::min<size_t>(v.payload, in.size() - at);
    CheckReplyEncoders(r, v.error, in.subspan(at, std::min<size_t>(take, 64)));
    at += take;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::span<const uint8_t> input(data + 1, size - 1);
  RunResult split = RunHandshake(input, Splitter(data[0]));
  RunResult whole = RunHandshake(input, Splitter(0));
  // However the bytes arrive, the session is the same.
  CHECK(split.status == whole.status);
  CHECK(split.out == whole.out);
  CHECK(split.consumed == whole.consumed);
  CHECK(split.negotiated.export_info == whole.negotiated.export_info);
  CHECK(split.negotiated.meta_context_ids == whole.negotiated.meta_context_ids);
  if (whole.status == Status::kDone)
    RunTransmission(input.subspan(whole.consumed), whole.negotiated);
  return 0;
}
