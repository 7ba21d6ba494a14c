#include "control_protocol.h"

#include <cstring>
#include <string>
#include <unordered_set>
#include <vector>

namespace mirror::control {

using json = nlohmann::json;
using T = ArgSpec::Type;

const std::vector<CommandSpec>& commands() {
  static const std::vector<CommandSpec> table = {
      {"status", "Show role, link state, out-of-sync bytes and resync progress", false,
       {{"peer", T::kBool, "Show the peer's status instead (relayed over the replication link)",
         false, false}}},
      {"events", "Stream state changes, one JSON object per line, until interrupted", false, {}},
      {"split",
       "Freeze the mirror at one instant: the secondary keeps a point-in-time image, the "
       "primary tracks every change (a failed split makes none: the pair mirrors on)",
       true,
       {{"freeze", T::kStrings, "Filesystems (mount points) to freeze around the split", false,
         true},
        {"pre", T::kString, "Command run before the split (e.g. block database writes)", false,
         true},
        {"post", T::kString, "Command run after the split, even if it failed", false, true},
        {"timeout", T::kInt, "Seconds before thawing and running --post whatever happens "
                             "(default 30)", false, true}}},
      {"rejoin", "Copy the regions changed since the split to the secondary, then mirror again",
       true,
       {{"wait", T::kBool, "Block until the copies are synchronized", false, false}}},
      {"verify",
       "Compare both copies region by region (online, like drbdadm verify); regions that "
       "differ are resynced from the primary. Runs on the primary",
       true,
       {{"wait", T::kBool, "Block until the verify ends; exit 1 unless it completed", false,
         false},
        {"offset", T::kInt, "Start here (bytes; rounded down to a region)", false, false},
        {"length", T::kInt, "Verify this many bytes (default: to the end)", false, false},
        {"cancel", T::kBool, "Stop the verify that is running", false, false},
        {"if-primary", T::kBool,
         "On a secondary, do nothing and succeed (one timer or cron job on both hosts)", false,
         false}}},
      {"resize",
       "Grow the volume online to the size its volume file now says (edit `size` in both "
       "nodes' files first; like drbdadm resize). Runs on the primary and grows both nodes; "
       "with the peer down, grows this node alone",
       true,
       {{"assume-clean", T::kBool,
         "Do not copy the new area to the peer (both new areas are known identical)", false,
         false}}},
      {"hold", "Hold new writes (consistency groups; released after timeout_ms)", true,
       {{"timeout_ms", T::kInt, "Release automatically after this long", true, false}}},
      {"release", "Release writes held by hold", true, {}},
      {"demote",
       "Primary: refuse new writes, wait until the peer is in sync, flush, become secondary",
       true,
       {{"timeout", T::kInt, "Seconds to wait for the peer to be in sync (default 60)", false,
         false}}},
      {"promote",
       "Secondary: become primary; refused while this copy may be behind the peer or the peer "
       "is primary",
       true,
       {{"force", T::kBool, "Promote even though this copy may be behind (the peer is lost); "
                            "its later writes become a split brain", false, false},
        {"identical", T::kBool, "With --force, on a new pair's primary: both copies are "
                                "known identical, the peer adopts this one without a copy",
         false, false}}},
      {"discard-my-data",
       "Split brain only: discard this node's changes (the victim); it becomes secondary and "
       "the peer copies back the regions either node changed (DRBD: connect --discard-my-data)",
       true, {}},
      {"open-rw",
       "Secondary, while split: serve the stable image read-write (fsck, a test restore); "
       "rejoin copies the changed regions back from the primary",
       true, {}},
      {"backup",
       "Back the volume up from the secondary: split, copy its image to a sparse file, mark "
       "the backup point, rejoin (run on the primary's host; a backup that fails leaves the "
       "pair mirroring, or resyncing toward it)",
       true,
       {{"to", T::kString, "The image file (created; with --incremental: updated)", true, true},
        {"incremental", T::kBool, "Copy only the regions changed since the last backup into "
                                  "the existing image", false, true},
        {"from", T::kString, "The secondary's NBD URI (default: from the volume file)", false,
         true},
        {"freeze", T::kStrings, "Filesystems (mount points) to freeze around the split", false,
         true},
        {"pre", T::kString, "Command run before the split", false, true},
        {"post", T::kString, "Command run after the split, even if it failed", false, true},
        {"timeout", T::kInt, "Seconds before thawing and running --post (default 30)", false,
         true}}},
      {"reload-tls",
       "Read tls-ca, tls-cert and tls-key again (certificate rotation without a restart): "
       "the link session running goes on, the next one uses the new files",
       true, {}},
      {"backup-mark",
       "While split: the secondary's changed-regions map restarts at this backup point "
       "(mirrorctl backup does this after copying)",
       true,
       {{"point", T::kInt, "The new backup point id (0: only check --expect)", true, false},
        {"expect", T::kInt, "Refuse (ESTALE) unless the current point is this one", false,
         false},
        {"split", T::kInt, "Refuse (ECANCELED) unless the split is still the one of this "
                           "instant (Unix ms: the backup's copy saw one split throughout)",
         false, false}}},
      {"promote-fence",
       "Internal (daemon to daemon): the peer, secondary in standby too, is about to promote; "
       "this node stays secondary meanwhile, or refuses if it is promoting itself and goes first",
       true, {}, true},
      {"promote-unfence",
       "Internal (daemon to daemon): the peer's fenced promote failed; this node's promise to "
       "stay secondary for it ends now instead of after 30 s",
       true, {}, true},
  };
  return table;
}

const CommandSpec* find_command(std::string_view name) {
  for (const auto& c : commands()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

Status validate_args(const CommandSpec& spec, const json& args) {
  if (!args.is_object()) return Error{EINVAL, "\"args\" must be an object"};
  for (auto it = args.begin(); it != args.end(); ++it) {
    const ArgSpec* a = nullptr;
    for (const auto& s : spec.args) {
      if (s.name == it.key()) a = &s;
    }
    if (!a) return Error{EINVAL, spec.name + ": unknown argument '" + it.key() + "'"};
    bool ok = false;
    switch (a->type) {
      case T::kBool: ok = it->is_boolean(); break;
      case T::kString: ok = it->is_string(); break;
      case T::kInt: ok = it->is_number_integer(); break;
      case T::kStrings:
        ok = it->is_array();
        for (const auto& e : *it) ok = ok && e.is_string();
        break;
    }
    if (!ok) return Error{EINVAL, spec.name + ": argument '" + a->name + "' has the wrong type"};
  }
  for (const auto& s : spec.args) {
    if (s.required && !args.contains(s.name))
      return Error{EINVAL, spec.name + ": missing argument '" + s.name + "'"};
  }
  return {};
}

Result<Request> parse_request(std::string_view line) {
  if (line.size() > kMaxMessage) return Error{E2BIG, "request too large"};
  // A key given twice is ambiguous (JSON leaves it open; nlohmann keeps the
  // last, another parser the first): {"command":"status","command":"demote"}
  // must not mean whatever this parser happens to pick.
  std::vector<std::unordered_set<std::string>> keys;  // per open object
  std::string duplicate;
  json j = json::parse(
      line,
      [&](int, json::parse_event_t ev, json& parsed) {
        if (ev == json::parse_event_t::object_start) {
          keys.emplace_back();
        } else if (ev == json::parse_event_t::object_end && !keys.empty()) {
          keys.pop_back();
        } else if (ev == json::parse_event_t::key && !keys.empty()) {
          const std::string& k = parsed.get_ref<const std::string&>();
          if (!keys.back().insert(k).second && duplicate.empty()) duplicate = k;
        }
        return true;
      },
      /*allow_exceptions=*/false);
  if (j.is_discarded()) return Error{EINVAL, "malformed JSON"};
  if (!duplicate.empty())
    return Error{EINVAL, "key \"" + duplicate + "\" given twice in one object"};
  if (!j.is_object()) return Error{EINVAL, "a request must be a JSON object"};
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"] != kVersion)
    return Error{EINVAL, "unsupported or missing protocol \"version\" (this daemon speaks 1)"};
  if (!j.contains("command") || !j["command"].is_string())
    return Error{EINVAL, "missing \"command\""};
  std::string name = j["command"];
  Request r;
  r.spec = find_command(name);
  if (!r.spec) return Error{ENOENT, "unknown command '" + name + "'"};
  if (j.contains("args")) r.args = j["args"];
  if (auto st = validate_args(*r.spec, r.args); !st) return st.error();
  return r;
}

json ok_reply(json result) { return json{{"ok", true}, {"result", std::move(result)}}; }

json error_reply(int code, std::string_view message) {
  const char* name = "EIO";
  switch (code) {
    case EPERM: name = "EPERM"; break;
    case EACCES: name = "EACCES"; break;
    case EINVAL: name = "EINVAL"; break;
    case ENOENT: name = "ENOENT"; break;
    case E2BIG: name = "E2BIG"; break;
    case EBUSY: name = "EBUSY"; break;
    case ENOTCONN: name = "ENOTCONN"; break;
    case EALREADY: name = "EALREADY"; break;
    case ETIMEDOUT: name = "ETIMEDOUT"; break;
    case ECANCELED: name = "ECANCELED"; break;
    case EEXIST: name = "EEXIST"; break;
    case ESTALE: name = "ESTALE"; break;
    case EOPNOTSUPP: name = "EOPNOTSUPP"; break;
    case ECONNRESET: name = "ECONNRESET"; break;
    case EAGAIN: name = "EAGAIN"; break;
    case EPROTO: name = "EPROTO"; break;
    case EROFS: name = "EROFS"; break;
    case ENOSPC: name = "ENOSPC"; break;
    case EDQUOT: name = "EDQUOT"; break;
    default: break;
  }
  return json{{"ok", false}, {"code", name}, {"error", std::string(message)}};
}

}  // namespace mirror::control
