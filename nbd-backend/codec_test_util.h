// Shared helpers of the NBD codec tests (handshake_test.cc,
// transmission_test.cc). The tests are written from the byte layouts of the protocol
// document (doc/proto.md of NetworkBlockDevice/nbd). Expected bytes are
// written out by hand in hex, never produced by the encoder under test, and
// client input is built by the small big-endian helpers below (not wire.h).
// Error-reply message texts are implementation detail and are not pinned.
#pragma once

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
inline void PrintTo(Handshake::Status s, std::ostream* os) {
  *os << (s == Handshake::Status::kNeedMore ? "kNeedMore"
          : s == Handshake::Status::kDone   ? "kDone"
          : s == Handshake::Status::kClose  ? "kClose"
                                            : "kStartTls");
}

namespace codec_test {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;
using Bytes = std::vector<uint8_t>;
using Status = Handshake::Status;

// ------------------------------------------------------------ byte helpers --

// Bytes from hand-written hex; whitespace between fields is ignored.
inline Bytes H(std::string_view hex) {
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

inline std::string Hex(std::span<const uint8_t> b) {
  std::string s;
  char buf[3];
  for (uint8_t x : b) {
    std::snprintf(buf, sizeof buf, "%02x", x);
    s += buf;
  }
  return s;
}

// A hand-written hex literal in the canonical form Hex() prints.
inline std::string N(std::string_view hex) {
  return Hex(H(hex));
}

inline Bytes A(std::string_view ascii) {
  return Bytes(ascii.begin(), ascii.end());
}

inline Bytes Cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

inline Bytes Be(uint64_t v, int n) {
  Bytes out;
  for (int i = n - 1; i >= 0; --i) out.push_back(uint8_t(v >> (8 * i)));
  return out;
}
inline Bytes Be16(uint16_t v) {
  return Be(v, 2);
}
inline Bytes Be32(uint32_t v) {
  return Be(v, 4);
}

// -------------------------------------------- client messages (test side) --

const Bytes kFixedNewstyle = H("00000001");  // NBD_FLAG_C_FIXED_NEWSTYLE
const Bytes kFixedNoZeroes = H("00000003");  // ... | NBD_FLAG_C_NO_ZEROES
constexpr std::string_view kIHaveOptHex = "49484156454f5054";

// C: IHAVEOPT, 32-bit option, 32-bit length, data.
inline Bytes Opt(uint32_t opt, const Bytes& data = {}) {
  return Cat({H(kIHaveOptHex), Be32(opt), Be32(uint32_t(data.size())), data});
}

// NBD_OPT_INFO / NBD_OPT_GO data: name length, name, count, info types.
inline Bytes InfoData(std::string_view name, std::initializer_list<uint16_t> infos = {}) {
  Bytes d = Cat({Be32(uint32_t(name.size())), A(name), Be16(uint16_t(infos.size()))});
  for (uint16_t i : infos) d = Cat({d, Be16(i)});
  return d;
}

// NBD_OPT_{LIST,SET}_META_CONTEXT data: name, query count, queries.
inline Bytes MetaData(std::string_view name, std::initializer_list<std::string_view> queries) {
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

inline uint32_t Get32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}

// Splits server output into option replies (S: magic, option, type, length,
// data); any byte that does not fit that layout is a test failure.
inline std::vector<OptReply> Replies(const Bytes& out) {
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

inline std::vector<std::string> ReplyHexes(const Bytes& out) {
  std::vector<std::string> v;
  for (const OptReply& r : Replies(out)) v.push_back(r.hex);
  return v;
}

// The output is exactly one error reply of `type` to option `opt`; the
// message (if any) is free text.
inline void ExpectOnlyError(const Bytes& out, uint32_t opt, uint32_t type, const char* rule) {
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
    disk.meta_contexts = {"base:allocation", "mirrord:dirty-since-backup"};
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
  explicit Client(const ExportCatalog& c, TlsMode tls = TlsMode::kOff) : hs_(c, tls) {}
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
}  // namespace codec_test
}  // namespace mirror::nbd
