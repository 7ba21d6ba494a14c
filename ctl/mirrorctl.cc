// mirrorctl: operate a mirrord volume through its control socket.
//
// Subcommands and their options come from the daemon's command table
// (daemon/control_protocol.cc), so the CLI, its help and the daemon's
// validation never disagree.
//
// Exit codes: 0 success, 1 the daemon refused or the command failed,
// 2 usage error, 3 the daemon could not be reached, 4 timed out (ETIMEDOUT:
// a command relayed to the peer got no answer, demote's wait ran out, or the
// daemon itself did not answer: control_client.h).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "backup.h"
#include "clock.h"
#include "config.h"
#include "control_client.h"
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
constexpr int kExitTimedOut = 4;

// The exit code of a refusal: a timeout is told apart, since the command
// may still run on a peer that resumes later (a script checks and retries).
int refusal_exit(const json& reply) {
  return reply.value("code", std::string()) == "ETIMEDOUT" ? kExitTimedOut : kExitFailed;
}

// Sends one request and returns the daemon's reply (or a transport error).
// *sent (if given): the request reached the daemon's socket (a transport
// error after it leaves the outcome unknown; one before, nothing was done).
Result<json> call(const std::string& socket, const json& request, bool* sent = nullptr) {
  ControlClient client;
  if (auto st = client.connect(socket); !st) return st.error();
  if (auto st = client.send(request); !st) return st.error();
  if (sent) *sent = true;
  return client.receive(reply_wait(request));
}

// The exit code of a transport error: a daemon that took the request (or a
// connection) and then said nothing may still act on it when it resumes.
int transport_exit(const Error& e) {
  return e.code == ETIMEDOUT ? kExitTimedOut : kExitUnreachable;
}

json make_request(const std::string& command, json args = json::object()) {
  return {{"version", control::kVersion}, {"command", command}, {"args", std::move(args)}};
}

// "" when the reply is ok, else its error text; *exit_code (if given) is
// set to the exit code that error deserves.
std::string reply_error(const Result<json>& r, const std::string& socket,
                        int* exit_code = nullptr) {
  if (!r) {
    if (exit_code) *exit_code = transport_exit(r.error());
    return r.error().message.starts_with(socket) ? r.error().to_string()
                                                 : socket + ": " + r.error().to_string();
  }
  if ((*r)["ok"].get<bool>()) return "";
  if (exit_code) *exit_code = refusal_exit(*r);
  return socket + ": " + (*r)["error"].get<std::string>();
}

// Split one volume, or several at one instant (a consistency group): hold new
// writes on every volume, split each, release all.
// `announce`: print "split" (mirrorctl split; a backup prints its own result).
// *unknown: a split request went out and got no answer (a hung or stopped
// daemon, exit 3 or 4): it may have been made, or be made when the daemon
// resumes and reads it.
int split_volumes(const std::vector<std::string>& sockets, const QuiesceOptions& q,
                  bool announce = true, bool* unknown = nullptr, bool* made = nullptr) {
  int rc = kExitFailed;
  bool sent_unanswered = false, unsent = false;
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
    std::vector<std::string> split_done;
    if (err.empty()) {
      for (const auto& s : sockets) {
        bool sent = false;
        auto reply = call(s, make_request("split"), &sent);
        err = reply_error(reply, s, &rc);
        if (!reply) (sent ? sent_unanswered : unsent) = true;
        if (!err.empty()) break;
        split_done.push_back(s);
      }
    }
    for (const auto& s : held) {
      std::string e = reply_error(call(s, make_request("release")), s);
      if (!e.empty()) std::fprintf(stderr, "mirrorctl split: release: %s\n", e.c_str());
    }
    // A group is cut at one instant or not at all: the volumes split before
    // one that failed are no point in time with it, and left split they
    // stay unmirrored while the failure reads "no split was made".
    if (!err.empty() && !split_done.empty()) {
      std::string rejoined, kept;
      for (const auto& s : split_done) {
        std::string e = reply_error(call(s, make_request("rejoin")), s);
        if (e.empty())
          rejoined += (rejoined.empty() ? "" : ", ") + s;
        else
          kept += (kept.empty() ? "" : "; ") + e;
      }
      err += "; the group's split failed: ";
      if (!rejoined.empty()) err += "the volumes it had split are rejoined (" + rejoined + ")";
      if (!kept.empty())
        err += (rejoined.empty() ? "" : "; ") + std::string("the volumes it split and could not "
                                                            "rejoin stay split (run mirrorctl "
                                                            "rejoin): ") + kept;
    }
    return err;
  };
  QuiesceResult r = quiesced_split(q, do_split);
  if (unknown) *unknown = sent_unanswered;
  if (made) *made = r.split_made;
  if (!r.ok) {
    std::fprintf(stderr, "mirrorctl split: %s%s\n", r.message.c_str(),
                 !r.split_attempted ? " (no split was made)"
                 : r.split_made
                     ? " (the split WAS made: the pair stays split until `mirrorctl rejoin`; "
                       "check that the application was unblocked)"
                 : sent_unanswered ? " (the split may have been made, or be made when mirrord "
                                     "resumes: check `mirrorctl status`, and `mirrorctl rejoin`)"
                 : unsent          ? " (no split was made: the request never reached mirrord)"
                                   : "");
    return rc;
  }
  if (announce) std::printf("split%s\n", sockets.size() > 1 ? " (consistency group)" : "");
  return 0;
}

// The NBD URI of a node's export, from its nbd-listen entries: the first
// one a client can dial (a Unix socket, or TCP with a fixed port).
std::string node_nbd_uri(const VolumeConfig& cfg, const NodeConfig& n) {
  for (const auto& l : n.nbd_listen) {
    if (l.starts_with("unix:")) return "nbd+unix:///" + cfg.name + "?socket=" + l.substr(5);
    if (!l.ends_with(":0")) return "nbd://" + l + "/" + cfg.name;
  }
  return "";
}

// SIGTERM (a cron or systemd timeout, kill), SIGINT (^C) and SIGHUP (the
// terminal went away) during a backup: once the pair may be split, dying
// would leave it split, so the handler only records the signal and makes a
// pipe readable; the copy polls that pipe and stops, and run_backup removes
// the partial image and rejoins. SIGPIPE is ignored (stderr into a pipe
// that closed must not end the backup either). SIGKILL cannot be caught:
// after one, `mirrorctl rejoin`. A signal ignored when mirrorctl started
// (nohup) stays ignored. One instance at a time: a handler can only reach
// process-wide state.
class StopSignals {
 public:
  StopSignals() {
    int p[2];
    if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0) {
      read_end_.reset(p[0]);
      write_end_.reset(p[1]);
      stop_fd = p[1];
    }
    stop_signal = 0;
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < std::size(kSignals); ++i) {
      ::sigaction(kSignals[i], &sa, &old_[i]);
      // Ignored when mirrorctl started (nohup, a background job's SIGINT):
      // whoever started it meant that, so it stays ignored.
      if (old_[i].sa_handler == SIG_IGN) ::sigaction(kSignals[i], &old_[i], nullptr);
    }
    struct sigaction ign{};
    ign.sa_handler = SIG_IGN;
    ::sigaction(SIGPIPE, &ign, &old_pipe_);
  }
  ~StopSignals() {
    for (size_t i = 0; i < std::size(kSignals); ++i) ::sigaction(kSignals[i], &old_[i], nullptr);
    ::sigaction(SIGPIPE, &old_pipe_, nullptr);
    stop_fd = -1;
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  int fd() const { return read_end_.get(); }  // readable once a signal came
  // "" or the signal's name ("SIGTERM").
  std::string caught() const {
    switch (stop_signal) {
      case 0: return "";
      case SIGTERM: return "SIGTERM";
      case SIGINT: return "SIGINT";
      default: return "SIGHUP";
    }
  }

 private:
  static constexpr int kSignals[] = {SIGTERM, SIGINT, SIGHUP};
  static inline volatile sig_atomic_t stop_signal = 0;
  static inline int stop_fd = -1;
  static void on_signal(int sig) {
    int saved = errno;
    stop_signal = sig;
    char c = 0;
    if (stop_fd >= 0) (void)!::write(stop_fd, &c, 1);  // async-signal-safe
    errno = saved;
  }

  UniqueFd read_end_, write_end_;
  struct sigaction old_[std::size(kSignals)]{}, old_pipe_{};
};

struct BackupRequest {
  std::string socket, uri, path, volume;
  bool incremental = false;
  QuiesceOptions quiesce;
};

// How long a backup waits for a primary that does not answer (a crash, then
// systemd's restart) before it gives up judging its split.
constexpr uint64_t kPrimaryBackMs = 60000;

// Why the split of instant `point` may not have lasted until now ("" if it
// did): the primary is split still, at that same instant. A primary that
// cannot be asked (its daemon down or restarting) is waited for, up to
// kPrimaryBackMs; if it still does not answer, *unknown is set.
std::string split_ended(const std::string& socket, uint64_t point, bool* unknown = nullptr) {
  auto now = call(socket, make_request("status"));
  if (!now) {
    std::fprintf(stderr, "mirrorctl backup: %s: waiting up to %llu s for it to answer\n",
                 reply_error(now, socket).c_str(),
                 static_cast<unsigned long long>(kPrimaryBackMs / 1000));
    for (uint64_t until = mono_ms() + kPrimaryBackMs; !now && mono_ms() < until;) {
      ::usleep(500 * 1000);
      now = call(socket, make_request("status"));
    }
  }
  if (std::string e = reply_error(now, socket); !e.empty()) {
    if (unknown) *unknown = !now;
    return "cannot check that the split lasted the whole copy: " + e;
  }
  const json& st = (*now)["result"];
  uint64_t at = st["last_split"].is_object() ? st["last_split"].value("unix_ms", uint64_t(0)) : 0;
  if (st.value("state", std::string()) != "split")
    return "the split ended during the copy (the pair is " +
           st.value("state", std::string("?")) + ": a rejoin meanwhile?)";
  // A primary restarted since (a crash, systemd's restart) keeps its split
  // (the metadata records it) but not the instant (null): no split was made
  // since its start, so the one it keeps is this backup's, unless a rejoin
  // and a new split came before the restart, which backup-mark's `split`
  // refuses on the secondary, whose image the copy read.
  if (at == 0) return "";
  if (at != point)
    return "the split ended during the copy: the pair is split again, at " +
           std::to_string(at) + ", not at " + std::to_string(point);
  return "";
}

// mirrorctl backup: split (quiesced), copy the secondary's image, mark the
// backup point on the secondary, rejoin. A failure after the split still
// rejoins; the backup point moves only when the copy is complete, so a
// failed incremental is repaired by running it again.
int run_backup(const BackupRequest& b) {
  const char* me = "mirrorctl backup";
  StopSignals stop;
  auto status = call(b.socket, make_request("status"));
  if (std::string e = reply_error(status, b.socket); !e.empty()) {
    std::fprintf(stderr, "%s: %s\n", me, e.c_str());
    return status ? kExitFailed : transport_exit(status.error());
  }
  const json& st = (*status)["result"];
  if (st["role"] != "primary" || st["state"] != "synchronized") {
    std::fprintf(stderr, "%s: run it against the primary of a synchronized pair (%s is %s, %s)\n",
                 me, b.socket.c_str(), st["role"].get<std::string>().c_str(),
                 st["state"].get<std::string>().c_str());
    return kExitFailed;
  }
  uint64_t size = st["size"];
  std::string volume = st["volume"];
  BackupRecord old;
  struct stat sb;
  if (b.incremental) {
    auto r = read_record(b.path);
    if (!r) {
      std::fprintf(stderr, "%s: %s\n", me, r.error().message.c_str());
      return kExitFailed;
    }
    old = *r;
    if (old.volume != volume || old.size != size) {
      std::fprintf(stderr, "%s: %s holds volume '%s' of %llu bytes, not '%s' of %llu\n", me,
                   b.path.c_str(), old.volume.c_str(), static_cast<unsigned long long>(old.size),
                   volume.c_str(), static_cast<unsigned long long>(size));
      return kExitFailed;
    }
  } else if (::stat(b.path.c_str(), &sb) == 0) {
    std::fprintf(stderr, "%s: %s exists: a full backup writes a new file (remove it, or use "
                 "--incremental to update it)\n", me, b.path.c_str());
    return kExitFailed;
  }

  if (!stop.caught().empty()) {
    std::fprintf(stderr, "%s: interrupted by %s before the split: nothing changed\n", me,
                 stop.caught().c_str());
    return kExitFailed;
  }
  auto rejoin = [&]() {
    std::string e = reply_error(call(b.socket, make_request("rejoin")), b.socket);
    if (!e.empty()) std::fprintf(stderr, "%s: rejoin: %s (run mirrorctl rejoin)\n", me, e.c_str());
    return e.empty();
  };
  bool unknown = false, made = false;
  if (int rc = split_volumes({b.socket}, b.quiesce, false, &unknown, &made); rc != 0) {
    // A split made (its post-hook then failed) or that may be made when a
    // stopped daemon resumes would leave the pair split with no backup
    // running: no copy without the hooks' word, and the rejoin queued.
    if (made || unknown) {
      std::fprintf(stderr, "%s: failed: no backup copied; asking for a rejoin %s\n", me,
                   made ? "(the split was made)" : "in case the split was made");
      rejoin();
    } else {
      // The daemon made no split (it says so above): the pair mirrors on,
      // resyncing what the secondary missed.
      std::fprintf(stderr, "%s: failed: no backup copied (the split failed)\n", me);
    }
    return rc;
  }
  uint64_t point = 0;  // the split instant, once known
  auto failed = [&](const std::string& why) {
    std::fprintf(stderr, "%s: %s\n", me, why.c_str());
    // Only this backup's split is rejoined: one made since (another
    // shell's backup, say) is not ours to end.
    bool no_answer = false;
    if (point && !split_ended(b.socket, point, &no_answer).empty())
      std::fprintf(stderr,
                   no_answer ? "%s: the primary does not answer: the pair may stay split: run "
                             "`mirrorctl rejoin` once mirrord is back\n"
                           : "%s: not rejoining: the split this backup made is over\n",
                   me);
    else
      rejoin();
    return kExitFailed;
  };
  // The point is the split instant: its time, from the primary.
  auto after = call(b.socket, make_request("status"));
  if (std::string e = reply_error(after, b.socket); !e.empty()) return failed(e);
  point = (*after)["result"]["last_split"].value("unix_ms", uint64_t(0));
  if (point == 0) return failed("the primary reports no split time");
  if (b.incremental) {
    std::string e = reply_error(
        call(b.socket, make_request("backup-mark", {{"point", 0}, {"expect", old.point}})),
        b.socket);
    if (!e.empty()) return failed(e);
  }

  std::string target = b.incremental ? b.path : b.path + ".partial";
  int fd = ::open(target.c_str(), O_RDWR | O_CLOEXEC | (b.incremental ? 0 : O_CREAT | O_EXCL),
                  0600);
  if (fd < 0) return failed(target + ": " + strerror(errno));
  UniqueFd image(fd);
  CopyOptions co;
  co.uri = b.uri;
  co.fd = image.get();
  co.incremental = b.incremental;
  co.bar = isatty(STDERR_FILENO);
  co.cancel_fd = stop.fd();
  auto copied = copy_image(co);
  if (!copied) {
    if (!b.incremental) ::unlink(target.c_str());
    std::string why = copied.error().to_string();
    if (copied.error().code == ECANCELED)
      why = "interrupted by " + stop.caught() + ": the copy stopped, " +
            (b.incremental ? b.path + " is partly updated (its backup point did not move: run "
                                      "the incremental backup again)"
                           : target + " removed");
    return failed(why + "; rejoining");
  }
  // The image is the split instant's only if that split lasted the whole
  // copy: a rejoin meanwhile (another shell, a script) resynced the
  // secondary under it, and a split since has an instant of its own.
  // Checked once the copy is done: what happens after cannot tear it.
  bool no_answer = false;
  if (std::string why = split_ended(b.socket, point, &no_answer); !why.empty()) {
    if (!b.incremental) ::unlink(target.c_str());
    return failed(why + (no_answer ? ": the image may mix two instants; "
                                   : ": the image mixes two instants; ") +
                  (b.incremental ? b.path + " is partly updated (its backup point did not move: "
                                            "run the incremental backup again)"
                                 : target + " removed"));
  }
  if (!b.incremental && ::rename(target.c_str(), b.path.c_str()) < 0)
    return failed("renaming " + target + ": " + strerror(errno));
  std::string e = reply_error(
      call(b.socket, make_request("backup-mark",
                                  {{"point", point}, {"expect", old.point}, {"split", point}})),
      b.socket);
  if (!e.empty()) return failed("the image is complete, but the backup point was not recorded: " + e);
  if (auto w = write_record(b.path, {volume, size, point}); !w)
    return failed(w.error().to_string() + " (the next backup must be a full one)");
  bool rejoined = rejoin();
  std::printf("backup %s: %s of volume '%s' at %llu: %llu bytes copied, %llu of %llu bytes "
              "considered (%llu zero), %.2f s%s\n",
              b.path.c_str(), b.incremental ? "incremental" : "full", volume.c_str(),
              static_cast<unsigned long long>(point),
              static_cast<unsigned long long>(copied->data_bytes),
              static_cast<unsigned long long>(copied->changed_bytes),
              static_cast<unsigned long long>(copied->size),
              static_cast<unsigned long long>(copied->zero_bytes), copied->seconds,
              rejoined ? "; rejoining" : "");
  return rejoined ? 0 : kExitFailed;
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
    if (c.internal) continue;
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
    if (spec.internal) continue;  // daemon to daemon only
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

  std::string peer_uri;  // the first volume file's peer export, for backup
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
    const NodeConfig* peer = cfg->peer_of((*n)->name);
    if (peer_uri.empty() && peer) peer_uri = node_nbd_uri(*cfg, *peer);
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
  if (spec->name == "split" || spec->name == "backup") {
    QuiesceOptions q;
    q.freeze = values.lists["freeze"];
    q.pre = values.strings["pre"];
    q.post = values.strings["post"];
    if (sub->count("--timeout")) q.timeout_s = int(values.ints["timeout"]);
    if (q.timeout_s <= 0) {
      std::fprintf(stderr, "mirrorctl split: --timeout must be positive\n");
      return kExitUsage;
    }
    if (spec->name == "split") return split_volumes(socket_paths, q);
    BackupRequest b;
    b.quiesce = q;
    b.path = values.strings["to"];
    b.incremental = values.flags["incremental"];
    b.uri = sub->count("--from") ? values.strings["from"] : peer_uri;
    if (socket_paths.size() != 1 || b.uri.empty()) {
      std::fprintf(stderr, "mirrorctl backup: %s\n",
                   socket_paths.size() != 1
                       ? "takes one volume"
                       : "give --from NBD-URI (or a volume file whose peer has an nbd-listen "
                         "address with a fixed port or a Unix socket)");
      return kExitUsage;
    }
    b.socket = socket_paths.front();
    return run_backup(b);
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
      return transport_exit(st.error());
    }
    if (auto st = client.send(request); !st) {
      std::fprintf(stderr, "mirrorctl: %s\n", st.error().to_string().c_str());
      return transport_exit(st.error());
    }
    ReplyWait wait = reply_wait(request);
    auto reply = client.receive(wait);
    if (!reply) {
      std::fprintf(stderr, "mirrorctl %s: %s\n", spec->name.c_str(),
                   reply.error().to_string().c_str());
      return transport_exit(reply.error());
    }
    if (!(*reply)["ok"].get<bool>()) {
      std::fprintf(stderr, "mirrorctl %s: %s (%s)\n", spec->name.c_str(),
                   (*reply)["error"].get<std::string>().c_str(),
                   (*reply)["code"].get<std::string>().c_str());
      return refusal_exit(*reply);
    }
    const json& result = (*reply)["result"];
    if (spec->name == "events") {
      std::cout << result.dump() << std::endl;
      // Events come when they come: wait while the daemon lives.
      wait.probe = true;
      for (;;) {
        auto ev = client.receive(wait);
        if (!ev && ev.error().code == ETIMEDOUT) {
          std::fprintf(stderr, "mirrorctl events: %s\n", ev.error().to_string().c_str());
          return kExitTimedOut;
        }
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
