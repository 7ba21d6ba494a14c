#include "config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <exception>
#include <initializer_list>
#include <new>
#include <optional>
#include <tuple>
#include <utility>

#ifdef MIRROR_TOML_AS_SHIPPED
// The fuzz build compiles toml++ in without NDEBUG. toml++ 3.3.0 asserts a
// precondition in parse_key() that malformed table headers such as "[[[1]]]"
// or "[\0" break (upstream marzer/tomlplusplus#301); the library we ship
// (Debian's, NDEBUG, built by gcc) skips that check and returns a parse error.
// Fuzz what we ship: no toml++ asserts; ASan and UBSan still watch.
#define TOML_ASSERT(expr) static_cast<void>(0)
#endif
#include <toml++/toml.h>

#include "kernel_nbd.h"
#include "listen_addr.h"
#include "unique_fd.h"

namespace mirror {

std::string_view to_string(OnPeerLoss v) {
  return v == OnPeerLoss::kFailStop ? "fail-stop" : "continue";
}
std::string_view to_string(InitialSync v) {
  return v == InitialSync::kSkip ? "skip" : "full";
}

const NodeConfig* VolumeConfig::node(std::string_view name) const {
  for (const auto& n : nodes)
    if (n.name == name) return &n;
  return nullptr;
}

const NodeConfig* VolumeConfig::peer_of(std::string_view name) const {
  if (nodes.size() != 2 || node(name) == nullptr) return nullptr;
  return nodes[0].name == name ? &nodes[1] : &nodes[0];
}

namespace {

constexpr size_t kMaxVolumeFileBytes = 1 << 20;
constexpr size_t kMaxNameBytes = 64;      // socket paths; the metadata file's name field
constexpr size_t kMaxNodeNameBytes = 64;  // the metadata file's name fields
constexpr size_t kMaxGroupNameBytes = 32;

// Renders a value from the file for an error message: quoted, control and
// non-ASCII bytes escaped (the file may hold anything), long values cut.
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == 80) {
      out += "...";
      break;
    }
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += char(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out + "\"";
}

// A key as it would be written in TOML: bare when possible.
std::string key_text(std::string_view k) {
  bool bare = !k.empty() && std::all_of(k.begin(), k.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  });
  return bare ? std::string(k) : quote(k);
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool is_power_of_two(uint64_t v) {
  return v != 0 && (v & (v - 1)) == 0;
}

// Levenshtein distance, for "did you mean" on unknown keys. Inputs are short.
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string_view type_name(const toml::node& n) {
  if (n.is_table()) return "a table";
  if (n.is_array()) return "an array";
  if (n.is_string()) return "a string";
  if (n.is_integer()) return "an integer";
  if (n.is_floating_point()) return "a float";
  if (n.is_boolean()) return "a boolean";
  return "a date/time";
}

// A name that ends up in file names, socket paths and log lines.
bool valid_name(std::string_view s, size_t max, bool allow_dot_dash_underscore_first) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
      return false;
  return allow_dot_dash_underscore_first || std::isalnum(static_cast<unsigned char>(s[0]));
}

// True for the code points on which toml++ 3.3.0's
// is_non_ascii_horizontal_whitespace() reaches TOML_UNREACHABLE (undefined
// behaviour; upstream issues #190 and #295, fixed after 3.3.0). It mirrors
// that function: a 64-entry bitmap over blocks of 0x3FA code points from
// U+00A0, with a switch that forgets blocks 0, 11 and 63. The parser asks
// the question in more places than can be modelled (and reads ahead in
// malformed input), so such code points are refused anywhere in the file.
bool toml_whitespace_test_is_undefined(char32_t c) {
  if (c < 0xA0 || c > 0xFEFF || c == 0xA0 || c == 0x3000 || c == 0xFEFF) return false;
  uint64_t block = (c - 0xA0) / 0x3FA;
  if ((1ull << block) & 0x7FFFFFFFFFFFF75Eull) return false;
  return block != 5 && block != 7;
}

// Checks the text is UTF-8 (TOML requires it) without the code points above.
// Returns the offset of the first offending byte and what is wrong, or an
// empty string.
std::pair<size_t, std::string> check_characters(std::string_view t) {
  for (size_t i = 0; i < t.size();) {
    auto b = [&](size_t k) { return static_cast<unsigned char>(t[k]); };
    if (b(i) < 0x80) {
      ++i;
      continue;
    }
    size_t n = b(i) >= 0xC2 && b(i) <= 0xDF   ? 2
               : b(i) >= 0xE0 && b(i) <= 0xEF ? 3
               : b(i) >= 0xF0 && b(i) <= 0xF4 ? 4
                                              : 0;
    char32_t c = n == 0 ? 0 : b(i) & (0x7F >> n);
    for (size_t k = 1; k < n; ++k) {
      if (i + k >= t.size() || (b(i + k) & 0xC0) != 0x80) n = 0;
      if (n != 0) c = (c << 6) | (b(i + k) & 0x3F);
    }
    bool overlong = (n == 3 && c < 0x800) || (n == 4 && c < 0x10000);
    if (n == 0 || overlong || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
      return {i, "invalid UTF-8"};
    if (toml_whitespace_test_is_undefined(c)) {
      char u[16];
      std::snprintf(u, sizeof u, "U+%04X", unsigned(c));
      return {i, std::string("character ") + u +
                     " is not supported, even in a string or comment (a bug in toml++ 3.3.0); "
                     "use ASCII"};
    }
    i += n;
  }
  return {std::string_view::npos, {}};
}

// ListenAddr::parse takes any host text. A volume file gets a stricter check,
// so that a typo does not become a name lookup at start-up and an IPv6
// address without brackets cannot silently lose its last group to the port.
// Returns what is wrong, or an empty string.
std::string host_problem(const ListenAddr& a, std::string_view text) {
  if (a.kind != ListenAddr::Kind::kTcp) return {};
  if (text.starts_with("[")) {
    size_t pct = a.host.find('%');  // a zone, as in [fe80::1%eth0]
    std::string addr = a.host.substr(0, pct);
    in6_addr v6{};
    if (::inet_pton(AF_INET6, addr.c_str(), &v6) != 1 ||
        (pct != std::string::npos && !valid_name(a.host.substr(pct + 1), 64, true)))
      return quote(a.host) + " is not an IPv6 address";
    return {};
  }
  if (a.host.find(':') != std::string::npos)
    return "write an IPv6 address in brackets, \"[ADDR]:PORT\"";
  if (!valid_name(a.host, 253, false)) return quote(a.host) + " is not a host name or IP address";
  return {};
}

// True when a TCP listener on `a` can only be reached from this host: an
// address in 127.0.0.0/8, ::1 (also IPv4-mapped) or the name "localhost". Any
// other name is not resolved here and counts as remote.
bool loopback_only(const ListenAddr& a) {
  if (a.kind != ListenAddr::Kind::kTcp) return true;
  std::string host = a.host.substr(0, a.host.find('%'));
  in_addr v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1)
    return IN6_IS_ADDR_LOOPBACK(&v6) || (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
  return iequals(host, "localhost");
}

// A byte count as written in the file, with the text to quote in errors.
struct Bytes {
  uint64_t value;
  std::string shown;
};

// Validates one volume file. Holds only references; lives for one parse.
class Parser {
 public:
  // `file_mode` is the volume file's st_mode when it came from disk (for the
  // inline-secret permission check), nullopt for text given directly.
  Parser(std::string_view text, const std::string& file, std::optional<mode_t> file_mode)
      : text_(text), file_(file), file_mode_(file_mode) {}

  Result<VolumeConfig> run();

 private:
  Error fail(std::string_view key, const std::string& what, int code = EINVAL) const {
    return Error{code, file_ + ": " + std::string(key) + ": " + what};
  }
  Error wrong_type(std::string_view key, const toml::node& n, std::string_view want) const {
    return fail(key, "must be " + std::string(want) + ", not " + std::string(type_name(n)));
  }
  // The dotted path of key `k` in the table at `prefix` ("node[2].device"),
  // as errors name it.
  static std::string key(std::string_view prefix, std::string_view k);

  Status check_keys(const toml::table& t, std::string_view prefix,
                    std::initializer_list<std::string_view> known) const;
  Result<std::string> get_string(const toml::node& n, std::string_view key) const;
  // t[k] read by get_string, nullopt when the key is absent.
  Result<std::optional<std::string>> optional_string(const toml::table& t, std::string_view prefix,
                                                     std::string_view k) const;
  Result<std::string> get_path(const toml::node& n, std::string_view key) const;
  Result<Bytes> get_bytes(const toml::node& n, std::string_view key) const;

  Status parse_volume(const toml::table& t, VolumeConfig* cfg) const;
  Status parse_secret(const toml::table& t, VolumeConfig* cfg) const;
  Status read_secret_file(const std::string& path, VolumeConfig* cfg) const;
  Status parse_node(const toml::table& t, const std::string& prefix, const VolumeConfig& cfg,
                    NodeConfig* node) const;
  Status parse_device(const toml::table& t, const std::string& prefix, DeviceConfig* dev) const;
  Status parse_node_nbd_tls(const toml::table& t, const std::string& prefix,
                           NodeConfig* node) const;
  Status parse_node_tls(const toml::table& t, const std::string& prefix, const VolumeConfig& cfg,
                        NodeConfig* node) const;
  Status parse_nodes(const toml::table& root, VolumeConfig* cfg) const;

  std::string_view text_;
  const std::string& file_;
  std::optional<mode_t> file_mode_;
};

std::string Parser::key(std::string_view prefix, std::string_view k) {
  return std::string(prefix) + "." + std::string(k);
}

// Unknown keys are errors: a typo must not silently fall back to a default.
// The first unknown key in file order is reported, with a near match.
Status Parser::check_keys(const toml::table& t, std::string_view prefix,
                          std::initializer_list<std::string_view> known) const {
  const toml::key* first = nullptr;
  for (auto&& [k, v] : t) {
    if (std::find(known.begin(), known.end(), k.str()) != known.end()) continue;
    if (first == nullptr || k.source().begin.line < first->source().begin.line) first = &k;
  }
  if (first == nullptr) return {};
  std::string what = "unknown key";
  std::string_view best;
  size_t best_d = 3;  // suggest only close matches
  for (std::string_view cand : known) {
    size_t d = edit_distance(first->str(), cand);
    if (d < best_d) best = cand, best_d = d;
  }
  if (!best.empty()) what += " (did you mean " + std::string(best) + "?)";
  std::string path = std::string(prefix) + (prefix.empty() ? "" : ".") + key_text(first->str());
  return fail(path, what);
}

Result<std::string> Parser::get_string(const toml::node& n, std::string_view key) const {
  const auto* s = n.as_string();
  if (s == nullptr) return wrong_type(key, n, "a string");
  if (s->get().find('\0') != std::string::npos) return fail(key, "contains a NUL character");
  return s->get();
}

Result<std::optional<std::string>> Parser::optional_string(const toml::table& t,
                                                           std::string_view prefix,
                                                           std::string_view k) const {
  const toml::node* n = t.get(k);
  if (n == nullptr) return std::optional<std::string>();
  auto s = get_string(*n, key(prefix, k));
  if (!s) return s.error();
  return std::optional<std::string>(std::move(*s));
}

Result<std::string> Parser::get_path(const toml::node& n, std::string_view key) const {
  auto s = get_string(n, key);
  if (!s) return s;
  if (!s->starts_with("/")) return fail(key, quote(*s) + " must be an absolute path");
  return s;
}

// A byte count: a TOML integer, or a string parse_size accepts.
Result<Bytes> Parser::get_bytes(const toml::node& n, std::string_view key) const {
  if (const auto* i = n.as_integer()) {
    if (i->get() < 0) return fail(key, std::to_string(i->get()) + " is negative");
    return Bytes{uint64_t(i->get()), std::to_string(i->get())};
  }
  const auto* s = n.as_string();
  if (s == nullptr) return wrong_type(key, n, "a size (an integer or a string like \"64K\")");
  auto v = parse_size(s->get());
  if (!v) return fail(key, v.error().message);
  return Bytes{*v, quote(s->get())};
}

Status Parser::parse_volume(const toml::table& t, VolumeConfig* cfg) const {
  if (auto st = check_keys(t, "volume",
                           {"name", "size", "secret", "secret-file", "ack-timeout",
                            "bitmap-granularity", "activity-extent", "activity-log-extents",
                            "on-peer-loss", "resync-rate", "resync-max-inflight", "initial-sync",
                            "primary", "control-group", "tls", "tls-ca", "tls-cert", "tls-key"});
      !st)
    return st;

  if (const auto* n = t.get("name")) {
    auto s = get_string(*n, "volume.name");
    if (!s) return s.error();
    if (!valid_name(*s, kMaxNameBytes, false))
      return fail("volume.name", quote(*s) +
                                     " is not a volume name: 1 to 64 letters, digits, '-', '_' or "
                                     "'.', starting with a letter or digit");
    cfg->name = std::move(*s);
  } else {
    return fail("volume.name", "missing (required)");
  }

  if (const auto* n = t.get("size")) {
    auto b = get_bytes(*n, "volume.size");
    if (!b) return b.error();
    if (b->value == 0) return fail("volume.size", "must be greater than 0");
    if (b->value % kVolumeSizeAlign != 0)
      return fail("volume.size", b->shown + " is not a multiple of 4096 bytes");
    if (b->value > uint64_t(INT64_MAX)) return fail("volume.size", b->shown + " is too large");
    cfg->size = b->value;
  } else {
    return fail("volume.size", "missing (required), e.g. size = \"10G\"");
  }

  if (auto st = parse_secret(t, cfg); !st) return st;

  if (const auto* n = t.get("ack-timeout")) {
    const auto* s = n->as_string();
    if (s == nullptr) return wrong_type("volume.ack-timeout", *n, "a duration string like \"5s\"");
    auto ms = parse_duration_ms(s->get());
    if (!ms) return fail("volume.ack-timeout", ms.error().message);
    if (*ms == 0 || *ms > kMaxAckTimeoutMs)
      return fail("volume.ack-timeout", quote(s->get()) + " is out of range (1ms to 1h)");
    cfg->ack_timeout_ms = *ms;
  }

  if (const auto* n = t.get("bitmap-granularity")) {
    auto b = get_bytes(*n, "volume.bitmap-granularity");
    if (!b) return b.error();
    if (!is_power_of_two(b->value) || b->value < kMinGranularity || b->value > kMaxGranularity)
      return fail("volume.bitmap-granularity", b->shown + " must be a power of two from 4K to 64M");
    cfg->granularity = uint32_t(b->value);
  }

  if (const auto* n = t.get("activity-extent")) {
    auto b = get_bytes(*n, "volume.activity-extent");
    if (!b) return b.error();
    if (!is_power_of_two(b->value) || b->value > kMaxAlExtent)
      return fail("volume.activity-extent", b->shown + " must be a power of two up to 1G");
    cfg->al_extent = uint32_t(b->value);
  }
  if (cfg->al_extent < cfg->granularity)
    return fail("volume.activity-extent", std::to_string(cfg->al_extent) +
                                              " bytes is smaller than volume.bitmap-granularity (" +
                                              std::to_string(cfg->granularity) + " bytes)");

  if (const auto* n = t.get("on-peer-loss")) {
    auto s = get_string(*n, "volume.on-peer-loss");
    if (!s) return s.error();
    if (*s == "continue") {
      cfg->on_peer_loss = OnPeerLoss::kContinue;
    } else if (*s == "fail-stop") {
      cfg->on_peer_loss = OnPeerLoss::kFailStop;
    } else {
      return fail("volume.on-peer-loss", quote(*s) + " is not \"continue\" or \"fail-stop\"");
    }
  }

  if (const auto* n = t.get("resync-rate")) {
    auto b = get_bytes(*n, "volume.resync-rate");
    if (!b) return b.error();
    // Resync copies whole bitmap chunks (one granule at least), so a limit
    // below one chunk per second could not be honoured.
    if (b->value != 0 && b->value < cfg->granularity)
      return fail("volume.resync-rate", b->shown + " is below one bitmap chunk per second (" +
                                            std::to_string(cfg->granularity) +
                                            " bytes); use \"0\" for unlimited");
    cfg->resync_rate = b->value;
  }

  if (const auto* n = t.get("resync-max-inflight")) {
    const auto* i = n->as_integer();
    if (i == nullptr) return wrong_type("volume.resync-max-inflight", *n, "an integer");
    if (i->get() < 1 || i->get() > int64_t(kMaxResyncInflight))
      return fail("volume.resync-max-inflight",
                  std::to_string(i->get()) + " is out of range (1 to 1024)");
    cfg->resync_max_inflight = uint32_t(i->get());
  }

  if (const auto* n = t.get("activity-log-extents")) {
    const auto* i = n->as_integer();
    if (i == nullptr) return wrong_type("volume.activity-log-extents", *n, "an integer");
    if (i->get() < 1 || i->get() > 65534)
      return fail("volume.activity-log-extents",
                  std::to_string(i->get()) + " is out of range (1 to 65534)");
    cfg->al_extents = uint32_t(i->get());
  }

  if (const auto* n = t.get("initial-sync")) {
    auto s = get_string(*n, "volume.initial-sync");
    if (!s) return s.error();
    if (*s == "full") {
      cfg->initial_sync = InitialSync::kFull;
    } else if (*s == "skip") {
      cfg->initial_sync = InitialSync::kSkip;
    } else {
      return fail("volume.initial-sync", quote(*s) + " is not \"full\" or \"skip\"");
    }
  }

  if (const auto* n = t.get("primary")) {
    auto s = get_string(*n, "volume.primary");
    if (!s) return s.error();
    cfg->primary = std::move(*s);  // checked against the nodes once they are parsed
  } else {
    return fail("volume.primary", "missing (required): the node that starts as primary");
  }

  if (const auto* n = t.get("control-group")) {
    auto s = get_string(*n, "volume.control-group");
    if (!s) return s.error();
    if (!valid_name(*s, kMaxGroupNameBytes, true) || s->starts_with("-"))
      return fail("volume.control-group", quote(*s) + " is not a valid group name");
    cfg->control_group = std::move(*s);
  }

  if (const auto* n = t.get("tls")) {
    const auto* b = n->as_boolean();
    if (b == nullptr) return wrong_type("volume.tls", *n, "true or false");
    cfg->tls = b->get();
  }
  for (auto [k, dst] : {std::pair{"tls-ca", &cfg->tls_ca}, std::pair{"tls-cert", &cfg->tls_cert},
                        std::pair{"tls-key", &cfg->tls_key}}) {
    if (const auto* n = t.get(k)) {
      auto path = get_path(*n, "volume." + std::string(k));
      if (!path) return path.error();
      *dst = std::move(*path);
    }
  }
  if (cfg->tls && cfg->tls_ca.empty())
    return fail("volume.tls-ca",
                "missing: tls = true needs the CA that signs both nodes' certificates, e.g. "
                "tls-ca = \"/etc/mirrord/ca.pem\"");
  return {};
}

// Each node's certificate and key: its own tls-cert/tls-key, else the
// volume's (one path that holds a different file on each host).
Status Parser::parse_node_tls(const toml::table& t, const std::string& prefix,
                              const VolumeConfig& cfg, NodeConfig* node) const {
  for (auto [k, dst, dflt] : {std::tuple{"tls-cert", &node->tls_cert, &cfg.tls_cert},
                              std::tuple{"tls-key", &node->tls_key, &cfg.tls_key}}) {
    const std::string at = key(prefix, k);
    if (const auto* n = t.get(k)) {
      auto path = get_path(*n, at);
      if (!path) return path.error();
      *dst = std::move(*path);
    } else {
      *dst = *dflt;
    }
    if (!cfg.tls && !dst->empty())
      return fail(t.get(k) ? at : key("volume", k),
                  "set, but volume.tls is not true: the link would run in plaintext; set "
                  "tls = true in [volume] (or remove the tls keys)");
    if (cfg.tls && dst->empty())
      return fail(at, "missing: tls = true needs this node's " +
                          std::string(dst == &node->tls_cert ? "certificate" : "private key") +
                          "; set " + k + " in this [[node]] table or in [volume]");
  }
  return {};
}

// The secret is never quoted or measured in a message.
Status Parser::parse_secret(const toml::table& t, VolumeConfig* cfg) const {
  const toml::node* inline_secret = t.get("secret");
  const toml::node* secret_file = t.get("secret-file");
  if (inline_secret != nullptr && secret_file != nullptr)
    return fail("volume.secret", "set either secret or secret-file, not both");
  if (inline_secret == nullptr && secret_file == nullptr)
    return fail("volume.secret-file",
                "missing: set secret-file = \"/etc/mirrord/NAME.secret\" (or an inline secret "
                "in a chmod 600 volume file)");

  if (secret_file != nullptr) {
    auto path = get_path(*secret_file, "volume.secret-file");
    if (!path) return path.error();
    return read_secret_file(*path, cfg);
  }

  const auto* s = inline_secret->as_string();
  if (s == nullptr) return wrong_type("volume.secret", *inline_secret, "a string");
  if (file_mode_ && (*file_mode_ & (S_IRGRP | S_IROTH)) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", unsigned(*file_mode_ & 07777));
    return fail("volume.secret",
                std::string("the file holds an inline secret but group or others can read it "
                            "(mode ") +
                    mode + "); run chmod 600 " + file_ + " or move the secret to secret-file",
                EPERM);
  }
  if (s->get().size() < kMinSecretBytes)
    return fail("volume.secret", "too short: at least 16 bytes required");
  if (s->get().size() > kMaxSecretBytes)
    return fail("volume.secret", "too long: at most 4096 bytes");
  cfg->secret = s->get();
  return {};
}

Status Parser::read_secret_file(const std::string& path, VolumeConfig* cfg) const {
  constexpr std::string_view kKey = "volume.secret-file";
  // O_NONBLOCK: a FIFO named here must not hang the daemon at start.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd.valid()) return fail(kKey, "cannot open " + quote(path), errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) < 0) return fail(kKey, "cannot stat " + quote(path), errno);
  if (!S_ISREG(st.st_mode)) return fail(kKey, quote(path) + " is not a regular file");
  // The same leak as an inline secret in a readable volume file.
  if ((st.st_mode & (S_IRGRP | S_IROTH)) != 0)
    return fail(kKey, quote(path) + " is readable by group or others; run chmod 600 " + path,
                EPERM);
  std::string data;
  char buf[1024];
  for (;;) {
    ssize_t r = ::read(fd.get(), buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return fail(kKey, "cannot read " + quote(path), errno);
    if (r == 0) break;
    data.append(buf, size_t(r));
    if (data.size() > kMaxSecretBytes + 2)
      return fail(kKey, "the secret in " + quote(path) + " is too long: at most 4096 bytes");
  }
  while (!data.empty() && (data.back() == '\n' || data.back() == '\r')) data.pop_back();
  if (data.size() < kMinSecretBytes)
    return fail(kKey, "the secret in " + quote(path) +
                          " is too short: at least 16 bytes required after the trailing newline "
                          "is removed");
  if (data.size() > kMaxSecretBytes)
    return fail(kKey, "the secret in " + quote(path) + " is too long: at most 4096 bytes");
  cfg->secret = std::move(data);
  return {};
}

Status Parser::parse_node(const toml::table& t, const std::string& prefix, const VolumeConfig& cfg,
                          NodeConfig* node) const {
  if (auto st = check_keys(
          t, prefix,
          {"name", "address", "backing", "metadata", "nbd-listen", "nbd-allow-remote", "control",
           "device", "device-connections", "device-timeout", "dead-connection-timeout", "tls-cert",
           "tls-key", "nbd-tls", "nbd-tls-cert", "nbd-tls-key", "nbd-tls-ca"});
      !st)
    return st;
  auto required = [&](std::string_view k, std::string_view example) -> Result<const toml::node*> {
    const toml::node* n = t.get(k);
    if (n == nullptr)
      return fail(key(prefix, k), "missing (required), e.g. " + std::string(example));
    return n;
  };

  auto n = required("name", "name = \"alpha\" (this host's name)");
  if (!n) return n.error();
  auto name = get_string(**n, key(prefix, "name"));
  if (!name) return name.error();
  if (!valid_name(*name, kMaxNodeNameBytes, false))
    return fail(key(prefix, "name"),
                quote(*name) +
                    " is not a node name: 1 to 64 letters, digits, '-', '_' or '.', "
                    "starting with a letter or digit");
  node->name = std::move(*name);

  n = required("address", "address = \"10.0.0.1:7788\"");
  if (!n) return n.error();
  auto address = get_string(**n, key(prefix, "address"));
  if (!address) return address.error();
  auto la = ListenAddr::parse(*address);
  if (!la) return fail(key(prefix, "address"), quote(*address) + " is not HOST:PORT");
  if (la->kind != ListenAddr::Kind::kTcp)
    return fail(key(prefix, "address"),
                quote(*address) + " is not HOST:PORT: replication runs over TCP");
  if (la->port == 0)
    return fail(key(prefix, "address"),
                quote(*address) + " is not HOST:PORT: port 0 cannot be dialled");
  if (auto why = host_problem(*la, *address); !why.empty())
    return fail(key(prefix, "address"), quote(*address) + " is not HOST:PORT: " + why);
  node->address = la->to_string();

  n = required("backing", "backing = \"/dev/vg0/NAME\"");
  if (!n) return n.error();
  auto backing = get_path(**n, key(prefix, "backing"));
  if (!backing) return backing.error();
  node->backing = std::move(*backing);

  n = required("metadata", "metadata = \"/var/lib/mirrord/NAME.meta\"");
  if (!n) return n.error();
  auto metadata = get_path(**n, key(prefix, "metadata"));
  if (!metadata) return metadata.error();
  if (*metadata == node->backing)
    return fail(key(prefix, "metadata"), quote(*metadata) + " is also the backing device");
  node->metadata = std::move(*metadata);

  node->control = "/run/mirrord/" + cfg.name + ".ctl";
  if (const auto* c = t.get("control")) {
    auto control = get_path(*c, key(prefix, "control"));
    if (!control) return control.error();
    node->control = std::move(*control);
  }
  if (node->control.size() >= sizeof(sockaddr_un::sun_path))
    return fail(key(prefix, "control"),
                quote(node->control) + " is too long for a socket path (max 107)");

  if (const auto* n = t.get("nbd-allow-remote")) {
    const auto* b = n->as_boolean();
    const auto* s = n->as_string();
    if (s != nullptr && s->get() == "tls") {
      node->nbd_allow_remote = node->nbd_remote_needs_tls = true;
    } else if (b == nullptr) {
      return wrong_type(key(prefix, "nbd-allow-remote"), *n, "true, false or \"tls\"");
    } else {
      node->nbd_allow_remote = b->get();
    }
  }

  if (const auto* l = t.get("nbd-listen")) {
    const auto* arr = l->as_array();
    if (arr == nullptr) return wrong_type(key(prefix, "nbd-listen"), *l, "an array of strings");
    for (size_t i = 0; i < arr->size(); ++i) {
      std::string k = key(prefix, "nbd-listen") + "[" + std::to_string(i + 1) + "]";
      auto s = get_string(*arr->get(i), k);
      if (!s) return s.error();
      auto a = ListenAddr::parse(*s);
      if (!a) return fail(k, quote(*s) + " is not HOST:PORT or unix:PATH");
      if (auto why = host_problem(*a, *s); !why.empty())
        return fail(k, quote(*s) + " is not HOST:PORT or unix:PATH: " + why);
      if (a->kind == ListenAddr::Kind::kUnix && !a->path.starts_with("/"))
        return fail(k, quote(*s) + ": the socket path must be absolute");
      if (a->kind == ListenAddr::Kind::kUnix && a->path == node->control)
        return fail(k, quote(*s) + " is also the control socket");
      if (std::find(node->nbd_listen.begin(), node->nbd_listen.end(), a->to_string()) !=
          node->nbd_listen.end())
        return fail(k, quote(*s) + " is listed twice");
      // NBD has no authentication: whoever reaches the port owns the volume.
      if (!node->nbd_allow_remote && !loopback_only(*a))
        return fail(k, quote(*s) +
                           " is not a loopback address, and NBD clients are not authenticated: "
                           "anyone who can reach it could read and overwrite the volume; listen "
                           "on 127.0.0.1, [::1] or a unix: socket, or set nbd-allow-remote = "
                           "true in this [[node]] table (or \"tls\", with nbd-tls = \"require\")");
      node->nbd_listen.push_back(a->to_string());
    }
  } else {
    node->nbd_listen.push_back("unix:/run/mirrord/" + cfg.name + ".nbd");
    if (node->nbd_listen.back() == "unix:" + node->control)
      return fail(key(prefix, "control"),
                  quote(node->control) + " is also the default nbd-listen socket");
  }
  if (auto st = parse_device(t, prefix, &node->device); !st) return st;
  if (auto st = parse_node_nbd_tls(t, prefix, node); !st) return st;
  return parse_node_tls(t, prefix, cfg, node);
}

// TLS on the node's NBD exports: a mode, and the files it needs.
Status Parser::parse_node_nbd_tls(const toml::table& t, const std::string& prefix,
                                  NodeConfig* node) const {
  auto mode = optional_string(t, prefix, "nbd-tls");
  if (!mode) return mode.error();
  if (*mode && !nbd::parse_tls_mode(**mode, &node->nbd_tls))
    return fail(key(prefix, "nbd-tls"),
                quote(**mode) + " is not \"off\", \"optional\" or \"require\"");
  for (auto [k, dst] :
       {std::pair{"nbd-tls-cert", &node->nbd_tls_cert},
        std::pair{"nbd-tls-key", &node->nbd_tls_key}, std::pair{"nbd-tls-ca", &node->nbd_tls_ca}}) {
    if (const auto* n = t.get(k)) {
      auto path = get_path(*n, key(prefix, k));
      if (!path) return path.error();
      *dst = std::move(*path);
      if (node->nbd_tls == nbd::TlsMode::kOff)
        return fail(key(prefix, k),
                    "set, but nbd-tls is off: the exports would run in plaintext; set "
                    "nbd-tls = \"require\" (or \"optional\") in this [[node]] table");
    }
  }
  if (node->nbd_tls != nbd::TlsMode::kOff) {
    if (node->nbd_tls_cert.empty())
      return fail(key(prefix, "nbd-tls-cert"),
                  "missing: nbd-tls = \"" + std::string(nbd::to_string(node->nbd_tls)) +
                      "\" needs the certificate the exports present, e.g. nbd-tls-cert = "
                      "\"/etc/mirrord/nbd-cert.pem\"");
    if (node->nbd_tls_key.empty())
      return fail(key(prefix, "nbd-tls-key"), "missing: nbd-tls = \"" +
                                                  std::string(nbd::to_string(node->nbd_tls)) +
                                                  "\" needs the private key of nbd-tls-cert");
  }
  if (node->nbd_remote_needs_tls && node->nbd_tls != nbd::TlsMode::kRequire)
    return fail(key(prefix, "nbd-tls"),
                "must be \"require\": nbd-allow-remote = \"tls\" allows remote "
                "NBD listeners only when every client must use TLS");
  return {};
}

Status Parser::parse_device(const toml::table& t, const std::string& prefix,
                            DeviceConfig* dev) const {
  auto path = optional_string(t, prefix, "device");
  if (!path) return path.error();
  if (*path) {
    if (auto idx = knbd::parse_device(**path); !idx)
      return fail(key(prefix, "device"), idx.error().message);
    dev->path = std::move(**path);
  }
  if (const auto* n = t.get("device-connections")) {
    const auto* i = n->as_integer();
    if (i == nullptr) return wrong_type(key(prefix, "device-connections"), *n, "an integer");
    if (i->get() < 1 || i->get() > int64_t(kMaxDeviceConnections))
      return fail(key(prefix, "device-connections"),
                  std::to_string(i->get()) + " is out of range (1 to 16)");
    dev->connections = uint32_t(i->get());
  }
  // The kernel counts both timeouts in whole seconds.
  for (auto [k, out] : {std::pair{"device-timeout", &dev->timeout_s},
                        std::pair{"dead-connection-timeout", &dev->dead_conn_timeout_s}}) {
    const auto* n = t.get(k);
    if (n == nullptr) continue;
    const auto* s = n->as_string();
    if (s == nullptr) return wrong_type(key(prefix, k), *n, "a duration string like \"30s\"");
    auto ms = parse_duration_ms(s->get());
    if (!ms) return fail(key(prefix, k), ms.error().message);
    if (*ms % 1000 != 0 || *ms == 0 || *ms / 1000 > kMaxDeviceTimeoutS)
      return fail(key(prefix, k), quote(s->get()) + " must be whole seconds from 1s to 1h");
    *out = *ms / 1000;
  }
  if (dev->path.empty() &&
      (t.get("device-connections") || t.get("device-timeout") || t.get("dead-connection-timeout")))
    return fail(key(prefix, "device"),
                "missing: the device-* keys need device = \"/dev/nbdN\" or \"auto\"");
  return {};
}

Status Parser::parse_nodes(const toml::table& root, VolumeConfig* cfg) const {
  const toml::node* n = root.get("node");
  if (n == nullptr)
    return fail("node", "missing: a volume needs two [[node]] tables, one for each host");
  const auto* arr = n->as_array();
  if (arr == nullptr)
    return fail("node", std::string("must be an array of tables written [[node]], not ") +
                            std::string(type_name(*n)) +
                            (n->is_table() ? " ([node] or [node.NAME])" : ""));
  if (arr->size() != 2)
    return fail("node", "found " + std::to_string(arr->size()) +
                            " [[node]] tables; a volume has exactly 2");
  for (size_t i = 0; i < arr->size(); ++i) {
    std::string prefix = "node[" + std::to_string(i + 1) + "]";
    const auto* t = arr->get(i)->as_table();
    if (t == nullptr) return wrong_type(prefix, *arr->get(i), "a table");
    NodeConfig node;
    if (auto st = parse_node(*t, prefix, *cfg, &node); !st) return st;
    cfg->nodes.push_back(std::move(node));
  }

  const NodeConfig& a = cfg->nodes[0];
  const NodeConfig& b = cfg->nodes[1];
  if (iequals(a.name, b.name)) return fail("node[2].name", quote(b.name) + " is also node[1].name");
  if (iequals(a.address, b.address))
    return fail("node[2].address", quote(b.address) + " is also node[1].address");
  if (cfg->node(cfg->primary) == nullptr)
    return fail("volume.primary", quote(cfg->primary) + " is not a node name (nodes: " +
                                      quote(a.name) + ", " + quote(b.name) + ")");
  return {};
}

Result<VolumeConfig> Parser::run() {
  if (auto [off, why] = check_characters(text_); !why.empty()) {
    size_t line_start = text_.rfind('\n', off);
    line_start = line_start == std::string_view::npos ? 0 : line_start + 1;
    size_t line = 1 + size_t(std::count(text_.begin(), text_.begin() + off, '\n'));
    return Error{EINVAL, file_ + ":" + std::to_string(line) + ":" +
                             std::to_string(off - line_start + 1) + ": " + why};
  }
  toml::table root;
  try {
    root = toml::parse(text_, std::string_view(file_));
  } catch (const toml::parse_error& e) {
    const auto& pos = e.source().begin;
    std::string what(e.description());
    // toml++ may echo a character of the offending value; withhold it when
    // the error is on the line that sets an inline secret.
    size_t line_start = 0;
    for (size_t l = 1; l < pos.line && line_start != std::string_view::npos; ++l) {
      line_start = text_.find('\n', line_start);
      if (line_start != std::string_view::npos) ++line_start;
    }
    if (line_start != std::string_view::npos) {
      std::string_view line = text_.substr(line_start);
      line.remove_prefix(std::min(line.find_first_not_of(" \t"), line.size()));
      if (line.starts_with("secret") && line.size() > 6 &&
          (line[6] == ' ' || line[6] == '\t' || line[6] == '='))
        what = "syntax error in the secret (details withheld)";
    }
    return Error{EINVAL, file_ + ":" + std::to_string(pos.line) + ":" + std::to_string(pos.column) +
                             ": " + what};
  }

  if (auto st = check_keys(root, "", {"volume", "node"}); !st) return st.error();
  const toml::node* vol = root.get("volume");
  if (vol == nullptr) return fail("volume", "missing: the file needs a [volume] table");
  if (!vol->is_table()) return wrong_type("volume", *vol, "a table");

  VolumeConfig cfg;
  cfg.file = file_;
  if (auto st = parse_volume(*vol->as_table(), &cfg); !st) return st.error();
  if (auto st = parse_nodes(root, &cfg); !st) return st.error();
  return cfg;
}

// The only entry into Parser: nothing thrown inside escapes.
Result<VolumeConfig> parse_guarded(std::string_view text, const std::string& file,
                                   std::optional<mode_t> mode) {
  try {
    return Parser(text, file, mode).run();
  } catch (const std::bad_alloc&) {
    return Error{ENOMEM, file + ": out of memory while parsing"};
  } catch (const std::exception& e) {
    return Error{EINVAL, file + ": cannot parse: " + e.what()};
  } catch (...) {
    return Error{EINVAL, file + ": cannot parse"};
  }
}

}  // namespace

Result<VolumeConfig> parse_volume_config(std::string_view text, const std::string& file) {
  return parse_guarded(text, file, std::nullopt);
}

Result<VolumeConfig> load_volume_config(const std::string& file) {
  UniqueFd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd.valid()) return errno_error(file + ": cannot open");
  struct stat st {};
  if (::fstat(fd.get(), &st) < 0) return errno_error(file + ": cannot stat");
  if (!S_ISREG(st.st_mode)) return Error{EINVAL, file + ": not a regular file"};
  if (uint64_t(st.st_size) > kMaxVolumeFileBytes)
    return Error{EFBIG, file + ": larger than 1 MiB; not a volume file"};
  std::string text;
  char buf[16384];
  for (;;) {
    ssize_t r = ::read(fd.get(), buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno_error(file + ": cannot read");
    if (r == 0) break;
    text.append(buf, size_t(r));
    if (text.size() > kMaxVolumeFileBytes)
      return Error{EFBIG, file + ": larger than 1 MiB; not a volume file"};
  }
  return parse_guarded(text, file, st.st_mode);
}

Result<const NodeConfig*> select_local_node(const VolumeConfig& cfg, const std::string& node_flag,
                                            std::string_view hostname) {
  std::string names;
  for (const auto& n : cfg.nodes) names += (names.empty() ? "" : ", ") + quote(n.name);
  if (!node_flag.empty()) {
    if (const NodeConfig* n = cfg.node(node_flag)) return n;
    return Error{ENOENT, cfg.file + ": --node " + quote(node_flag) + " is not a node of volume " +
                             quote(cfg.name) + " (nodes: " + names + ")"};
  }
  std::string_view short_name = hostname.substr(0, hostname.find('.'));
  for (const auto& n : cfg.nodes)
    if (iequals(n.name, hostname)) return &n;
  for (const auto& n : cfg.nodes)
    if (iequals(n.name, short_name)) return &n;
  return Error{ENOENT, cfg.file + ": no node is named after this host " + quote(hostname) +
                           " (nodes: " + names + "); pass --node NAME"};
}

Result<const NodeConfig*> select_local_node(const VolumeConfig& cfg, const std::string& node_flag) {
  if (!node_flag.empty()) return select_local_node(cfg, node_flag, std::string_view());
  char host[HOST_NAME_MAX + 1] = {};
  if (::gethostname(host, sizeof host - 1) < 0) return errno_error("gethostname");
  return select_local_node(cfg, node_flag, std::string_view(host));
}

Result<uint64_t> parse_size(std::string_view s) {
  auto bad = [&](std::string_view why) {
    return Error{EINVAL, quote(s) + " is not a size: " + std::string(why)};
  };
  constexpr std::string_view kForm =
      "expected digits with an optional K, M, G or T suffix (binary: 1K = 1024)";
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range) return bad("too large");
  if (ec != std::errc()) return bad(kForm);
  std::string_view suffix(p, size_t(s.data() + s.size() - p));
  unsigned shift = 0;
  if (suffix.size() > 1) return bad(kForm);
  if (suffix.size() == 1) {
    switch (std::toupper(static_cast<unsigned char>(suffix[0]))) {
      case 'K':
        shift = 10;
        break;
      case 'M':
        shift = 20;
        break;
      case 'G':
        shift = 30;
        break;
      case 'T':
        shift = 40;
        break;
      default:
        return bad(kForm);
    }
  }
  if (v > (UINT64_MAX >> shift)) return bad("too large");
  return v << shift;
}

Result<uint32_t> parse_duration_ms(std::string_view s) {
  auto bad = [&](std::string_view why) {
    return Error{EINVAL, quote(s) + " is not a duration: " + std::string(why)};
  };
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec == std::errc::result_out_of_range) return bad("too long");
  if (ec != std::errc()) return bad("expected digits and a unit: ms, s, m or h (e.g. \"5s\")");
  std::string_view unit(p, size_t(s.data() + s.size() - p));
  uint64_t scale;
  if (unit == "ms") {
    scale = 1;
  } else if (unit == "s") {
    scale = 1000;
  } else if (unit == "m" || unit == "min") {
    scale = 60 * 1000;
  } else if (unit == "h") {
    scale = 3600 * 1000;
  } else if (unit.starts_with(".")) {
    return bad("fractions are not supported; use a smaller unit (\"1500ms\")");
  } else if (unit.empty()) {
    return bad("a unit is required: ms, s, m or h (e.g. \"5s\", \"500ms\")");
  } else {
    return bad("unknown unit " + quote(unit) + "; use ms, s, m or h");
  }
  if (v > UINT32_MAX / scale) return bad("too long");
  return uint32_t(v * scale);
}

}  // namespace mirror
