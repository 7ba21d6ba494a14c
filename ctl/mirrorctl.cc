// mirrorctl: operate a mirrord volume through its control socket.
//
// Subcommands and their options come from the daemon's command table
// (daemon/control_protocol.cc), so the CLI, its help and the daemon's
// validation never disagree.
//
// Exit codes: 0 success, 1 the daemon refused or the command failed,
// 2 usage error, 3 the daemon could not be reached.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "config.h"
#include "control_protocol.h"
#include "quiesce.h"
#include "status_render.h"
#include "unique_fd.h"

namespace mirror {
namespace {

using json = nlohmann::json;
using control::ArgSpec;

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

// A connection to the daemon: one JSON line out, one line back.
class ControlClient {
 public:
  Status connect(const std::string& path) {
    fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    if (path.size() >= sizeof un.sun_path) return Error{ENAMETOOLONG, "socket path too long"};
    std::memcpy(un.sun_path, path.data(), path.size());
    if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&un), sizeof un) < 0)
      return errno_error("cannot reach mirrord at " + path);
    return {};
  }
  Status send(const json& j) {
    std::string s = j.dump() + "\n";
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = ::write(fd_.get(), s.data() + off, s.size() - off);
      if (n < 0) return errno_error("write to mirrord");
      off += size_t(n);
    }
    return {};
  }
  // Next reply or event line.
  Result<json> receive() {
    for (;;) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        json j = json::parse(line, nullptr, false);
        if (j.is_discarded()) return Error{EPROTO, "mirrord sent malformed JSON"};
        return j;
      }
      char tmp[65536];
      ssize_t n = ::read(fd_.get(), tmp, sizeof tmp);
      if (n < 0) return errno_error("read from mirrord");
      if (n == 0) return Error{ECONNRESET, "mirrord closed the connection"};
      buf_.append(tmp, size_t(n));
    }
  }

 private:
  UniqueFd fd_;
  std::string buf_;
};

// Sends one request and returns the daemon's reply (or a transport error).
Result<json> call(const std::string& socket, const json& request) {
  ControlClient client;
  if (auto st = client.connect(socket); !st) return st.error();
  if (auto st = client.send(request); !st) return st.error();
  return client.receive();
}

json make_request(const std::string& command, json args = json::object()) {
  return {{"version", control::kVersion}, {"command", command}, {"args", std::move(args)}};
}

// "" when the reply is ok, else its error text.
std::string reply_error(const Result<json>& r, const std::string& socket) {
  if (!r) return socket + ": " + r.error().to_string();
  if ((*r)["ok"].get<bool>()) return "";
  return socket + ": " + (*r)["error"].get<std::string>();
}

// Split one volume, or several at one instant (a consistency group): hold new
// writes on every volume, split each, release all.
int split_volumes(const std::vector<std::string>& sockets, const QuiesceOptions& q) {
  auto do_split = [&]() -> std::string {
    std::vector<std::string> held;
    std::string err;
    if (sockets.size() > 1) {
      for (const auto& s : sockets) {
        err = reply_error(call(s, make_request("hold", {{"timeout_ms", q.timeout_s * 1000}})), s);
        if (!err.empty()) break;
        held.push_back(s);
      }
    }
    if (err.empty()) {
      for (const auto& s : sockets) {
        err = reply_error(call(s, make_request("split")), s);
        if (!err.empty()) break;
      }
    }
    for (const auto& s : held) {
      std::string e = reply_error(call(s, make_request("release")), s);
      if (!e.empty()) std::fprintf(stderr, "mirrorctl split: release: %s\n", e.c_str());
    }
    return err;
  };
  QuiesceResult r = quiesced_split(q, do_split);
  if (!r.ok) {
    std::fprintf(stderr, "mirrorctl split: %s%s\n", r.message.c_str(),
                 r.split_attempted ? "" : " (no split was made)");
    return kExitFailed;
  }
  std::printf("split%s\n", sockets.size() > 1 ? " (consistency group)" : "");
  return 0;
}

struct ArgValues {
  std::map<std::string, bool> flags;
  std::map<std::string, std::string> strings;
  std::map<std::string, int64_t> ints;
  std::map<std::string, std::vector<std::string>> lists;
};

json collect_args(const control::CommandSpec& spec, CLI::App* sub, ArgValues& v) {
  json args = json::object();
  for (const ArgSpec& a : spec.args) {
    if (a.client_side || sub->count("--" + a.name) == 0) continue;
    switch (a.type) {
      case ArgSpec::Type::kBool: args[a.name] = v.flags[a.name]; break;
      case ArgSpec::Type::kString: args[a.name] = v.strings[a.name]; break;
      case ArgSpec::Type::kInt: args[a.name] = v.ints[a.name]; break;
      case ArgSpec::Type::kStrings: args[a.name] = v.lists[a.name]; break;
    }
  }
  return args;
}

// Bash completion generated from the command table, so it never goes stale.
void print_bash_completion() {
  std::string cmds, cases;
  for (const auto& c : control::commands()) {
    cmds += c.name + " ";
    std::string opts = "--help ";
    for (const auto& a : c.args) opts += "--" + a.name + " ";
    if (c.name == "status") opts += "--json --watch ";
    cases += "    " + c.name + ") opts=\"" + opts + "\" ;;\n";
  }
  std::printf(
      "# bash completion for mirrorctl (generated by mirrorctl --bash-completion)\n"
      "_mirrorctl() {\n"
      "  local cur=${COMP_WORDS[COMP_CWORD]} cmd= w opts\n"
      "  for w in \"${COMP_WORDS[@]:1}\"; do case $w in -*) ;; *) [ -z \"$cmd\" ] && "
      "[[ \" %s\" == *\" $w \"* ]] && cmd=$w;; esac; done\n"
      "  if [ -z \"$cmd\" ]; then\n"
      "    COMPREPLY=($(compgen -W \"%s--socket --config --node --help\" -- \"$cur\")); return\n"
      "  fi\n"
      "  case $cmd in\n%s  esac\n"
      "  COMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))\n"
      "}\n"
      "complete -o default -F _mirrorctl mirrorctl\n",
      cmds.c_str(), cmds.c_str(), cases.c_str());
}

int run(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "--bash-completion") {
    print_bash_completion();
    return 0;
  }
  CLI::App app{"mirrorctl: control a mirrord volume (split, rejoin, status, ...)"};
  app.require_subcommand(1);
  std::vector<std::string> socket_paths, config_files;
  std::string node;
  app.add_option("--socket", socket_paths,
                 "The daemon's control socket (repeat for a consistency group)");
  app.add_option("--config", config_files,
                 "Volume file: use the control socket of this host's node in it (repeatable)");
  app.add_option("--node", node, "With --config: the node (default: host name)");
  bool as_json = false, watch = false;

  ArgValues values;
  std::map<std::string, CLI::App*> subs;
  for (const auto& spec : control::commands()) {
    CLI::App* sub = app.add_subcommand(spec.name, spec.help);
    subs[spec.name] = sub;
    for (const ArgSpec& a : spec.args) {
      std::string opt = "--" + a.name;
      CLI::Option* o = nullptr;
      switch (a.type) {
        case ArgSpec::Type::kBool: o = sub->add_flag(opt, values.flags[a.name], a.help); break;
        case ArgSpec::Type::kString: o = sub->add_option(opt, values.strings[a.name], a.help); break;
        case ArgSpec::Type::kInt: o = sub->add_option(opt, values.ints[a.name], a.help); break;
        case ArgSpec::Type::kStrings: o = sub->add_option(opt, values.lists[a.name], a.help); break;
      }
      if (a.required) o->required();
    }
    if (spec.name == "status") {
      sub->add_flag("--json", as_json, "Print the JSON status (schema 1) for scripts");
      sub->add_flag("--watch", watch, "Refresh every second, with a progress bar");
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kExitUsage;
  }

  for (const auto& config_file : config_files) {
    auto cfg = load_volume_config(config_file);
    if (!cfg) {
      std::fprintf(stderr, "mirrorctl: %s\n", cfg.error().message.c_str());
      return kExitUsage;
    }
    auto n = select_local_node(*cfg, node);
    if (!n) {
      std::fprintf(stderr, "mirrorctl: %s\n", n.error().message.c_str());
      return kExitUsage;
    }
    socket_paths.push_back((*n)->control);
  }
  if (socket_paths.empty()) {
    std::fprintf(stderr, "mirrorctl: give --socket PATH or --config VOLUME.toml\n");
    return kExitUsage;
  }

  const control::CommandSpec* spec = nullptr;
  CLI::App* sub = nullptr;
  for (const auto& [name, s] : subs) {
    if (s->parsed()) {
      spec = control::find_command(name);
      sub = s;
    }
  }
  if (spec->name == "split") {
    QuiesceOptions q;
    q.freeze = values.lists["freeze"];
    q.pre = values.strings["pre"];
    q.post = values.strings["post"];
    if (sub->count("--timeout")) q.timeout_s = int(values.ints["timeout"]);
    if (q.timeout_s <= 0) {
      std::fprintf(stderr, "mirrorctl split: --timeout must be positive\n");
      return kExitUsage;
    }
    return split_volumes(socket_paths, q);
  }
  if (socket_paths.size() > 1) {
    std::fprintf(stderr, "mirrorctl %s: takes one volume (only split takes a group)\n",
                 spec->name.c_str());
    return kExitUsage;
  }
  const std::string& socket_path = socket_paths.front();
  json request = make_request(spec->name, collect_args(*spec, sub, values));

  for (;;) {
    ControlClient client;
    if (auto st = client.connect(socket_path); !st) {
      std::fprintf(stderr, "mirrorctl: %s\n", st.error().to_string().c_str());
      return kExitUnreachable;
    }
    if (auto st = client.send(request); !st) {
      std::fprintf(stderr, "mirrorctl: %s\n", st.error().to_string().c_str());
      return kExitUnreachable;
    }
    auto reply = client.receive();
    if (!reply) {
      std::fprintf(stderr, "mirrorctl: %s\n", reply.error().to_string().c_str());
      return kExitUnreachable;
    }
    if (!(*reply)["ok"].get<bool>()) {
      std::fprintf(stderr, "mirrorctl %s: %s (%s)\n", spec->name.c_str(),
                   (*reply)["error"].get<std::string>().c_str(),
                   (*reply)["code"].get<std::string>().c_str());
      return kExitFailed;
    }
    const json& result = (*reply)["result"];
    if (spec->name == "events") {
      std::cout << result.dump() << std::endl;
      for (;;) {
        auto ev = client.receive();
        if (!ev) return 0;
        std::cout << ev->dump() << std::endl;
      }
    }
    if (spec->name != "status") {
      std::cout << (result.is_string() ? result.get<std::string>() : result.dump(2)) << std::endl;
      return 0;
    }
    if (as_json) {
      std::cout << result.dump(2) << std::endl;
    } else {
      if (watch && isatty(STDOUT_FILENO)) std::cout << "\033[H\033[2J";
      std::cout << render_status(result, watch && isatty(STDOUT_FILENO));
    }
    if (!watch) return 0;
    std::cout.flush();
    ::sleep(1);
  }
}

}  // namespace
}  // namespace mirror

int main(int argc, char** argv) { return mirror::run(argc, argv); }
