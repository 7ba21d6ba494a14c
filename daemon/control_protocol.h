// The control protocol (docs/control-protocol.md): newline-delimited JSON
// over a Unix socket. One table of commands drives the daemon's dispatch and
// validation, and mirrorctl's parser and help text.
//
//   request: {"version": 1, "command": "status", "args": {...}}
//   reply:   {"ok": true, "result": {...}}
//            {"ok": false, "code": "EPERM", "error": "human readable"}
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace mirror::control {

inline constexpr int kVersion = 1;
inline constexpr int kStatusSchema = 1;
inline constexpr size_t kMaxMessage = 64 * 1024;  // bytes per request line

struct ArgSpec {
  enum class Type { kBool, kString, kInt, kStrings };
  std::string name;
  Type type;
  std::string help;
  bool required = false;
  // Handled by mirrorctl itself (hooks, freezing), never sent to the daemon.
  bool client_side = false;
};

struct CommandSpec {
  std::string name;
  std::string help;
  bool changes_state;  // only root or the control group may run it
  std::vector<ArgSpec> args;
  // Sent by one daemon to the other over the link (RELAY), never by
  // mirrorctl: hidden from its commands, refused from a control client.
  bool internal = false;
};

const std::vector<CommandSpec>& commands();
const CommandSpec* find_command(std::string_view name);

// Checks `args` (a JSON object) against the spec: unknown names, wrong types
// and missing required arguments are errors naming the argument.
Status validate_args(const CommandSpec& spec, const nlohmann::json& args);

// Parses one request line. Errors say what is wrong with it.
struct Request {
  const CommandSpec* spec = nullptr;
  nlohmann::json args = nlohmann::json::object();
};
Result<Request> parse_request(std::string_view line);

nlohmann::json ok_reply(nlohmann::json result);
nlohmann::json error_reply(int code, std::string_view message);

}  // namespace mirror::control
