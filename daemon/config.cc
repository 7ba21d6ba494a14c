#include "config.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <new>
#include <optional>
#include <utility>

#include "config_parser.h"
#include "unique_fd.h"

namespace mirror {

std::string_view to_string(OnPeerLoss v) {
  return v == OnPeerLoss::kFailStop ? "fail-stop" : "continue";
}
std::string_view to_string(OnIoError v) {
  return v == OnIoError::kPassOn ? "pass-on" : "detach";
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

namespace config_detail {

namespace {

constexpr size_t kMaxNameBytes = 64;  // socket paths; the metadata file's name field
constexpr size_t kMaxGroupNameBytes = 32;

}  // namespace

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

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
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

bool valid_name(std::string_view s, size_t max, bool allow_dot_dash_underscore_first) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
      return false;
  return allow_dot_dash_underscore_first || std::isalnum(static_cast<unsigned char>(s[0]));
}

namespace {

// A key as it would be written in TOML: bare when possible.
std::string key_text(std::string_view k) {
  bool bare = !k.empty() && std::all_of(k.begin(), k.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  });
  return bare ? std::string(k) : quote(k);
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

}  // namespace

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

Result<bool> Parser::get_either(const toml::node& n, std::string_view key,
                                std::string_view first, std::string_view second) const {
  auto s = get_string(n, key);
  if (!s) return s.error();
  if (*s == first) return false;
  if (*s == second) return true;
  return fail(key, quote(*s) + " is not \"" + std::string(first) + "\" or \"" +
                       std::string(second) + "\"");
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
                            "on-peer-loss", "on-io-error", "resync-rate", "resync-max-inflight", "resync-checksums",
                            "initial-sync", "before-resync-target", "after-resync-target",
                            "handler-timeout", "primary", "control-group", "tls", "tls-ca", "tls-cert", "tls-key"});
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
    auto fail_stop = get_either(*n, "volume.on-peer-loss", "continue", "fail-stop");
    if (!fail_stop) return fail_stop.error();
    cfg->on_peer_loss = *fail_stop ? OnPeerLoss::kFailStop : OnPeerLoss::kContinue;
  }

  if (const auto* n = t.get("on-io-error")) {
    auto pass_on = get_either(*n, "volume.on-io-error", "detach", "pass-on");
    if (!pass_on) return pass_on.error();
    cfg->on_io_error = *pass_on ? OnIoError::kPassOn : OnIoError::kDetach;
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

  if (const auto* n = t.get("resync-checksums")) {
    const auto* b = n->as_boolean();
    if (b == nullptr) return wrong_type("volume.resync-checksums", *n, "true or false");
    cfg->resync_checksums = b->get();
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
    auto skip = get_either(*n, "volume.initial-sync", "full", "skip");
    if (!skip) return skip.error();
    cfg->initial_sync = *skip ? InitialSync::kSkip : InitialSync::kFull;
  }

  if (auto st = parse_handlers(t, cfg); !st) return st;

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

// The programs are checked for existence at the daemon's start
// (check_handler_programs), not here.
Status Parser::parse_handlers(const toml::table& t, VolumeConfig* cfg) const {
  for (auto [k, dst] : {std::pair{"before-resync-target", &cfg->before_resync_target},
                        std::pair{"after-resync-target", &cfg->after_resync_target}}) {
    if (const auto* n = t.get(k)) {
      auto path = get_path(*n, "volume." + std::string(k));
      if (!path) return path.error();
      *dst = std::move(*path);
    }
  }
  if (const auto* n = t.get("handler-timeout")) {
    const auto* s = n->as_string();
    if (s == nullptr)
      return wrong_type("volume.handler-timeout", *n, "a duration string like \"60s\"");
    auto ms = parse_duration_ms(s->get());
    if (!ms) return fail("volume.handler-timeout", ms.error().message);
    if (*ms < 1000 || *ms > kMaxHandlerTimeoutMs)
      return fail("volume.handler-timeout", quote(s->get()) + " is out of range (1s to 1h)");
    cfg->handler_timeout_ms = *ms;
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

}  // namespace config_detail

namespace {

using config_detail::iequals;
using config_detail::quote;

constexpr size_t kMaxVolumeFileBytes = 1 << 20;

// The only entry into Parser: nothing thrown inside escapes.
Result<VolumeConfig> parse_guarded(std::string_view text, const std::string& file,
                                   std::optional<mode_t> mode) {
  try {
    return config_detail::Parser(text, file, mode).run();
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

Status check_handler_programs(const VolumeConfig& cfg) {
  for (auto [k, path] : {std::pair{"before-resync-target", &cfg.before_resync_target},
                         std::pair{"after-resync-target", &cfg.after_resync_target}}) {
    if (path->empty()) continue;
    std::string what = cfg.file + ": volume." + k + ": " + quote(*path);
    struct stat st {};
    if (::stat(path->c_str(), &st) < 0) {
      int e = errno;
      return Error{e, what + (e == ENOENT ? " does not exist" : ": " + std::string(strerror(e)))};
    }
    if (!S_ISREG(st.st_mode)) return Error{EINVAL, what + " is not a regular file"};
    if (::access(path->c_str(), X_OK) < 0)
      return Error{EACCES, what + " is not executable (chmod +x " + *path + ")"};
  }
  return {};
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
