// Internal to the volume file parser (config.cc: the file, [volume], the
// secret; config_node.cc: the [[node]] tables, their device and TLS keys).
// Nothing outside mirror_config includes it: toml++ stays private to it.
#pragma once

#include <sys/types.h>  // mode_t

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#ifdef MIRROR_TOML_AS_SHIPPED
// The fuzz build compiles toml++ in without NDEBUG. toml++ 3.3.0 asserts a
// precondition in parse_key() that malformed table headers such as "[[[1]]]"
// or "[\0" break (upstream marzer/tomlplusplus#301); the library we ship
// (Debian's, NDEBUG, built by gcc) skips that check and returns a parse error.
// Fuzz what we ship: no toml++ asserts; ASan and UBSan still watch.
#define TOML_ASSERT(expr) static_cast<void>(0)
#endif
#include <toml++/toml.h>

#include "config.h"

namespace mirror::config_detail {

// Renders a value from the file for an error message: quoted, control and
// non-ASCII bytes escaped (the file may hold anything), long values cut.
std::string quote(std::string_view s);
bool iequals(std::string_view a, std::string_view b);
// "a string", "an integer", ...: what a wrong value is, for messages.
std::string_view type_name(const toml::node& n);
// A name that ends up in file names, socket paths and log lines.
bool valid_name(std::string_view s, size_t max, bool allow_dot_dash_underscore_first);

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
  // A string that must be `first` or `second`: false for first, true for second.
  Result<bool> get_either(const toml::node& n, std::string_view key, std::string_view first,
                          std::string_view second) const;
  Result<Bytes> get_bytes(const toml::node& n, std::string_view key) const;

  // config.cc
  Status parse_volume(const toml::table& t, VolumeConfig* cfg) const;
  Status parse_secret(const toml::table& t, VolumeConfig* cfg) const;
  Status read_secret_file(const std::string& path, VolumeConfig* cfg) const;
  Status parse_handlers(const toml::table& t, VolumeConfig* cfg) const;
  // config_node.cc
  Status parse_nodes(const toml::table& root, VolumeConfig* cfg) const;
  Status parse_node(const toml::table& t, const std::string& prefix, const VolumeConfig& cfg,
                    NodeConfig* node) const;
  Status parse_device(const toml::table& t, const std::string& prefix, DeviceConfig* dev) const;
  Status parse_node_nbd_tls(const toml::table& t, const std::string& prefix,
                            NodeConfig* node) const;
  Status parse_node_tls(const toml::table& t, const std::string& prefix, const VolumeConfig& cfg,
                        NodeConfig* node) const;

  std::string_view text_;
  const std::string& file_;
  std::optional<mode_t> file_mode_;
};

}  // namespace mirror::config_detail
