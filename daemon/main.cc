// mirrord: serves a mirrored volume over NBD (--config VOLUME.toml), or plain
// local files (--export NAME=FILE) without replication.
#include <signal.h>
#include <sys/stat.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config.h"
#include "fault_backend.h"
#include "file_backend.h"
#include "kernel_device.h"
#include "listen_addr.h"
#include "log.h"
#include "server.h"
#include "uring.h"
#include "volume.h"
#include "control_server.h"
#include "volume_control.h"

#ifdef MIRROR_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace mirror {
namespace {

struct ExportSpec {
  std::string name;
  std::string path;
  bool read_only;
};

// Splits "NAME=VALUE" at the first '='.
bool split_pair(const std::string& s, std::string* name, std::string* value) {
  size_t eq = s.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == s.size()) return false;
  *name = s.substr(0, eq);
  *value = s.substr(eq + 1);
  return true;
}

// Reads SIGTERM/SIGINT from a signalfd through the loop.
class SignalWatcher final : public Completion {
 public:
  SignalWatcher(Loop& loop, int fd, std::function<void(int)> fn)
      : loop_(loop), fd_(fd), fn_(std::move(fn)) {}
  void arm() { io_uring_prep_read(loop_.sqe(this), fd_, &info_, sizeof info_, 0); }
  void on_complete(int res, uint32_t) override {
    if (res == sizeof info_) fn_(int(info_.ssi_signo));
    if (res != -ECANCELED) arm();
  }

 private:
  Loop& loop_;
  int fd_;
  signalfd_siginfo info_{};
  std::function<void(int)> fn_;
};

// The ready file lists what we listen on; written atomically (rename) so a
// reader never sees half of it.
Status write_ready_file(const std::string& path, const std::vector<std::string>& lines) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!f) return errno_error("cannot write " + tmp);
    for (const auto& l : lines) f << l << '\n';
    if (!f.flush()) return errno_error("cannot write " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) < 0) return errno_error("rename " + tmp);
  return {};
}

int run(int argc, char** argv) {
  CLI::App app{"mirrord: a userspace NBD server that mirrors a volume to a peer"};
  std::vector<std::string> listen_args;
  std::vector<std::string> export_args, export_ro_args, description_args;
  std::string ready_file, log_level = "info";
  ServerLimits limits;
  app.add_option("--listen", listen_args,
                 "Address to listen on: HOST:PORT, [IPv6]:PORT or unix:PATH (repeatable; "
                 "default 127.0.0.1:10809)");
  app.add_option("--export", export_args,
                 "NAME=FILE: serve FILE read-write as export NAME (repeatable; the first "
                 "is the default export)");
  app.add_option("--export-ro", export_ro_args, "NAME=FILE: serve FILE read-only");
  app.add_option("--description", description_args, "NAME=TEXT: describe export NAME");
  app.add_option("--ready-file", ready_file,
                 "Write the bound addresses here once listening (one per line)");
  app.add_option("--log-level", log_level, "debug, info, warn or error");
  app.add_option("--max-connections", limits.max_connections, "Connections served at once");
  std::string config_file, node_name;
  bool force_full_sync = false, discard_my_data = false;
  app.add_option("--config", config_file,
                 "Volume file (TOML): serve and mirror that volume (see docs/configuration.md)");
  app.add_option("--node", node_name, "This node's name in the volume file (default: host name)");
  std::string device_arg, device_timeout = "30s", dead_timeout = "120s", device_api = "auto";
  uint32_t device_connections = 1;
  app.add_option("--device", device_arg,
                 "/dev/nbdN or auto: attach the first --export to the kernel as this device "
                 "(with --config: the node's device key)");
  app.add_option("--device-connections", device_connections,
                 "Sockets between the kernel and mirrord for --device (1 to 16)");
  app.add_option("--device-timeout", device_timeout,
                 "Per-request timeout of --device, whole seconds (default 30s)");
  app.add_option("--dead-connection-timeout", dead_timeout,
                 "How long --device I/O waits for a restarted mirrord (default 120s)");
  app.add_option("--device-api", device_api,
                 "auto (netlink, else the ioctls), netlink or ioctl: how to attach the device")
      ->check(CLI::IsMember({"auto", "netlink", "ioctl"}));
  std::string nbd_tls_mode = "off";
  TlsFiles nbd_tls_files;
  app.add_option("--nbd-tls", nbd_tls_mode,
                 "off, optional or require: TLS (NBD_OPT_STARTTLS) on the exports of --export "
                 "(with --config: the node's nbd-tls key)")
      ->check(CLI::IsMember({"off", "optional", "require"}));
  app.add_option("--nbd-tls-cert", nbd_tls_files.cert, "PEM certificate (chain) of this server");
  app.add_option("--nbd-tls-key", nbd_tls_files.key, "PEM private key of --nbd-tls-cert (mode 600)");
  app.add_option("--nbd-tls-ca", nbd_tls_files.ca,
                 "PEM CA: clients must present a certificate it signed (mutual TLS)");
  bool detach_in_use = false;
  app.add_flag("--detach-in-use", detach_in_use,
               "At stop, detach the --device even while it is mounted or in use (its users "
               "get I/O errors); by default it then stays attached for the next mirrord");
  app.add_flag("--force-full-sync", force_full_sync,
               "Primary only: copy the whole volume to the peer, whatever the generations say");
  app.add_flag("--discard-my-data", discard_my_data,
               "Split brain recovery, on the node whose changes lose: become secondary and "
               "take a full copy from the peer (persisted until the copy is done)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  LogLevel level;
  if (!parse_log_level(log_level, &level)) {
    std::fprintf(stderr, "mirrord: --log-level: unknown level '%s'\n", log_level.c_str());
    return 2;
  }
  set_log_level(level);

  // Every argument is checked before anything is opened or bound.
  std::vector<ExportSpec> exports;
  auto add_exports = [&](const std::vector<std::string>& args, bool ro) {
    for (const auto& a : args) {
      ExportSpec s{"", "", ro};
      if (!split_pair(a, &s.name, &s.path)) {
        std::fprintf(stderr, "mirrord: --export%s '%s': expected NAME=FILE\n", ro ? "-ro" : "",
                     a.c_str());
        return false;
      }
      for (const auto& e : exports) {
        if (e.name == s.name) {
          std::fprintf(stderr, "mirrord: export '%s' given twice\n", s.name.c_str());
          return false;
        }
      }
      exports.push_back(s);
    }
    return true;
  };
  if (!add_exports(export_args, false) || !add_exports(export_ro_args, true)) return 2;
  VolumeConfig cfg;
  const NodeConfig* self = nullptr;
  if (!config_file.empty()) {
    if (!exports.empty()) {
      std::fprintf(stderr, "mirrord: --config and --export are exclusive\n");
      return 2;
    }
    auto c = load_volume_config(config_file);
    if (!c) {
      std::fprintf(stderr, "mirrord: %s\n", c.error().message.c_str());
      return 2;
    }
    cfg = std::move(*c);
    auto n = select_local_node(cfg, node_name);
    if (!n) {
      std::fprintf(stderr, "mirrord: %s\n", n.error().message.c_str());
      return 2;
    }
    self = *n;
    if (auto st = check_handler_programs(cfg); !st) {
      std::fprintf(stderr, "mirrord: %s\n", st.error().message.c_str());
      return 2;
    }
    if (listen_args.empty()) listen_args = self->nbd_listen;
  } else if (exports.empty()) {
    std::fprintf(stderr,
                 "mirrord: nothing to serve: give --config VOLUME.toml or --export NAME=FILE\n");
    return 2;
  }
  // The kernel device: the node's device key, or --device for --export.
  DeviceConfig device_cfg;
  if (!device_arg.empty()) {
    if (self) {
      std::fprintf(stderr, "mirrord: --device is for --export; a volume's node has a device key\n");
      return 2;
    }
    auto idx = knbd::parse_device(device_arg);
    if (!idx) {
      std::fprintf(stderr, "mirrord: --device: %s\n", idx.error().message.c_str());
      return 2;
    }
    if (device_connections < 1 || device_connections > kMaxDeviceConnections) {
      std::fprintf(stderr, "mirrord: --device-connections: %u is out of range (1 to 16)\n",
                   device_connections);
      return 2;
    }
    device_cfg.path = device_arg;
    device_cfg.connections = device_connections;
    for (auto [flag, text, out] :
         {std::tuple{"--device-timeout", &device_timeout, &device_cfg.timeout_s},
          std::tuple{"--dead-connection-timeout", &dead_timeout, &device_cfg.dead_conn_timeout_s}}) {
      auto ms = parse_duration_ms(*text);
      if (!ms || *ms % 1000 != 0 || *ms == 0 || *ms / 1000 > kMaxDeviceTimeoutS) {
        std::fprintf(stderr, "mirrord: %s: '%s' is not whole seconds from 1s to 1h\n", flag,
                     text->c_str());
        return 2;
      }
      *out = *ms / 1000;
    }
  } else if (self) {
    device_cfg = self->device;
  }
  std::map<std::string, std::string> descriptions;
  for (const auto& d : description_args) {
    std::string name, text;
    if (!split_pair(d, &name, &text)) {
      std::fprintf(stderr, "mirrord: --description '%s': expected NAME=TEXT\n", d.c_str());
      return 2;
    }
    descriptions[name] = text;
  }
  // Test-only fault injection (docs/reliability.md); never set in production.
  FaultSpec faults;
  if (const char* f = std::getenv("MIRRORD_FAULTS"); f && *f) {
    auto spec = FaultSpec::parse(f);
    if (!spec) {
      std::fprintf(stderr, "mirrord: %s\n", spec.error().message.c_str());
      return 2;
    }
    faults = *spec;
  }
  std::unique_ptr<PowerLoss> power_loss;
  if (faults.power_loss) power_loss = std::make_unique<PowerLoss>();
  nbd::TlsMode nbd_tls = nbd::TlsMode::kOff;
  nbd::parse_tls_mode(nbd_tls_mode, &nbd_tls);  // CLI11 checked the spelling
  if (self) {
    if (nbd_tls_mode != "off" || !nbd_tls_files.cert.empty() || !nbd_tls_files.key.empty() ||
        !nbd_tls_files.ca.empty()) {
      std::fprintf(stderr, "mirrord: --nbd-tls* are for --export; a volume's node has nbd-tls keys\n");
      return 2;
    }
    nbd_tls = self->nbd_tls;
    nbd_tls_files = {self->nbd_tls_ca, self->nbd_tls_cert, self->nbd_tls_key};
  } else if (nbd_tls != nbd::TlsMode::kOff &&
             (nbd_tls_files.cert.empty() || nbd_tls_files.key.empty())) {
    std::fprintf(stderr, "mirrord: --nbd-tls %s needs --nbd-tls-cert and --nbd-tls-key\n",
                 nbd_tls_mode.c_str());
    return 2;
  }
  if (listen_args.empty()) listen_args.push_back("127.0.0.1:10809");
  std::vector<ListenAddr> addrs;
  for (const auto& l : listen_args) {
    auto a = ListenAddr::parse(l);
    if (!a) {
      std::fprintf(stderr, "mirrord: --listen: %s\n", a.error().message.c_str());
      return 2;
    }
    addrs.push_back(*a);
  }

  // Signals arrive through a signalfd read on the loop.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  if (power_loss) sigaddset(&mask, SIGUSR2);  // simulate a power loss now
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);
  UniqueFd sfd(signalfd(-1, &mask, SFD_CLOEXEC));
  if (!sfd.valid()) {
    MLOG_ERROR("signalfd: %s", strerror(errno));
    return 1;
  }

  auto loop = Loop::create();
  if (!loop) {
    MLOG_ERROR("%s", loop.error().to_string().c_str());
    return 1;
  }
  std::vector<std::unique_ptr<FileBackend>> backends;
  std::vector<std::unique_ptr<FaultBackend>> fault_backends;
  std::unique_ptr<Volume> volume;
  NbdServer server(**loop, limits);
  if (self) {
    auto v = Volume::open(**loop, cfg, *self,
                          {.force_full_sync = force_full_sync,
                           .discard_my_data = discard_my_data,
                           .faults = &faults,
                           .power_loss = power_loss.get()});
    if (!v) {
      MLOG_ERROR("volume '%s': %s", cfg.name.c_str(), v.error().to_string().c_str());
      return 1;
    }
    volume = std::move(*v);
    nbd::ExportInfo info;
    info.name = cfg.name;
    info.description = "mirrored volume " + cfg.name;
    info.read_only = volume->nbd_read_only();
    server.add_export(std::move(info), volume->nbd_backend());
    Volume* vp = volume.get();
    server.add_meta_context(cfg.name, kChangedContext,
                            [vp](uint64_t off, uint32_t len, uint32_t max,
                                 std::vector<nbd::Extent>* out) {
                              vp->changed_extents(off, len, max, out);
                            });
    volume->on_export_mode = [&server, name = cfg.name](bool read_only) {
      server.set_read_only(name, read_only);
    };
  }
  for (const auto& s : exports) {
    auto be = FileBackend::open(**loop, s.path, {.read_only = s.read_only});
    if (!be) {
      MLOG_ERROR("export '%s': %s", s.name.c_str(), be.error().to_string().c_str());
      return 1;
    }
    nbd::ExportInfo info;
    info.name = s.name;
    info.read_only = s.read_only;
    if (auto it = descriptions.find(s.name); it != descriptions.end()) info.description = it->second;
    Backend* served = be->get();
    if (faults.any_data() && !s.read_only) {
      fault_backends.push_back(std::make_unique<FaultBackend>(**loop, *served, (*be)->fd(), faults,
                                                              power_loss.get()));
      served = fault_backends.back().get();
      MLOG_WARN("export '%s': TEST FAULTS injected: %s", s.name.c_str(), faults.to_string().c_str());
    }
    server.add_export(std::move(info), served);
    MLOG_INFO("export '%s': %s, %llu bytes%s", s.name.c_str(), s.path.c_str(),
              static_cast<unsigned long long>((*be)->size()), s.read_only ? ", read-only" : "");
    backends.push_back(std::move(*be));
  }
  if (nbd_tls != nbd::TlsMode::kOff) {
    std::string warning;
    auto ctx = TlsContext::create(nbd_tls_files, &warning,
                                  {.key_prefix = "nbd-tls", .min_version = 0x0303,  // TLS 1.2
                                   .dials = false});
    if (!ctx) {
      MLOG_ERROR("%s%s", self ? (cfg.file + ": node '" + self->name + "': ").c_str() : "",
                 ctx.error().message.c_str());
      return 1;
    }
    if (!warning.empty()) MLOG_WARN("%s", warning.c_str());
    server.set_tls(nbd_tls, std::move(*ctx));
    MLOG_INFO("NBD TLS %s%s", std::string(nbd::to_string(nbd_tls)).c_str(),
              nbd_tls_files.ca.empty() ? "" : ", client certificates verified");
  }
  std::vector<std::string> ready_lines;
  for (const auto& a : addrs) {
    if (a.kind == ListenAddr::Kind::kUnix) {
      // The runtime directory may not exist yet (e.g. /run/mirrord).
      std::string dir = a.path.substr(0, a.path.rfind('/'));
      if (!dir.empty()) ::mkdir(dir.c_str(), 0755);
    }
    auto b = bind_listener(a);
    if (!b) {
      MLOG_ERROR("listen %s: %s", a.to_string().c_str(), b.error().to_string().c_str());
      return 1;
    }
    ready_lines.push_back(b->is_tcp ? "tcp " + b->addr.to_string() : "unix " + b->addr.path);
    MLOG_INFO("listening on %s", b->addr.to_string().c_str());
    server.add_listener(std::move(*b));
  }

  std::unique_ptr<ControlServer> control;
  std::unique_ptr<VolumeControl> volume_control;
  std::unique_ptr<KernelDevice> device;
  bool stopping = false;
  int exit_code = 0;
  // A disk that failed a sync (its backend refuses writes until a restart)
  // may have lost writes acknowledged before: exit 1, for systemd and the
  // operator, whether it served an export or a volume's copy. Declared here,
  // not in the signal handler: the volume's stop calls it later.
  auto sync_failed = [&](const std::string& what) {
    MLOG_ERROR("%s: stopping after a failed sync: acknowledged writes may be lost", what.c_str());
    exit_code = 1;
  };
  auto writes_at_risk = [&](const std::string& what, const std::string& why) {
    MLOG_ERROR("%s: stopping %s", what.c_str(), why.c_str());
    exit_code = 1;
  };
  SignalWatcher signals(**loop, sfd.get(), [&](int signo) {
    if (signo == SIGUSR2 && power_loss) power_loss->crash("SIGUSR2");
    if (stopping) return;
    stopping = true;
    MLOG_INFO("signal %d: finishing requests in flight, then stopping", signo);
    if (volume) volume->stop_requested();
#ifdef MIRROR_HAVE_SYSTEMD
    sd_notify(0, "STOPPING=1");
#endif
    auto shutdown = [&] {
      server.shutdown([&] {
        // Everything acknowledged is made durable before we exit, or the
        // exit status says it was not: systemd marks the unit failed.
        for (auto& be : backends) {
          if (be->read_only()) continue;
          if (::fdatasync(be->fd()) < 0) {
            MLOG_ERROR("%s: fdatasync at stop: %s", be->path().c_str(), strerror(errno));
            exit_code = 1;
          } else if (be->refusing_writes()) {
            // The kernel reported the writeback error once, to the failed
            // sync: this fdatasync succeeding proves nothing.
            sync_failed(be->path());
          }
        }
        if (volume) {
          volume_control->stop();
          control->stop();
          volume->stop([&] {
            std::string risk = volume->acked_writes_at_risk();
            if (!risk.empty()) writes_at_risk("volume '" + cfg.name + "'", risk);
            (*loop)->stop();
          });
        } else {
          (*loop)->stop();
        }
      });
    };
    // The kernel first: it sends NBD_CMD_DISC on its sockets, which drain.
    // A device in use stays attached instead, for the next mirrord.
    if (device)
      device->stop(shutdown);
    else
      shutdown();
  });
  signals.arm();

  if (volume) {
    if (auto st = volume->start(); !st) {
      MLOG_ERROR("volume '%s': %s", cfg.name.c_str(), st.error().to_string().c_str());
      return 1;
    }
    control = std::make_unique<ControlServer>(**loop, nullptr, cfg.control_group);
    volume_control = std::make_unique<VolumeControl>(**loop, *volume, *control);
    control->set_handler(volume_control.get());
    if (auto st = control->listen(self->control); !st) {
      MLOG_ERROR("control socket %s: %s", self->control.c_str(), st.error().to_string().c_str());
      return 1;
    }
  }
  if (!device_cfg.path.empty()) {
    KernelDevice::Options o;
    o.cfg = device_cfg;
    o.export_name = self ? cfg.name : exports.front().name;
    o.api = device_api;
    o.detach_in_use = detach_in_use;
    o.call_delay_ms = faults.device_call_delay_ms;
    o.backend_id = self ? "mirrord:" + cfg.name + ":" + self->name : "mirrord:export:" + o.export_name;
    device = std::make_unique<KernelDevice>(**loop, server, std::move(o));
    if (auto st = device->attach(); !st) {
      MLOG_ERROR("%s", st.error().to_string().c_str());
      return 1;
    }
    if (volume_control) volume_control->set_device(device.get());
  }
  if (volume) {
    volume->on_copy_confirmed = [&device] {
      if (!device) return;
      device->follow_role([](const std::string& note) {
        if (!note.empty()) MLOG_WARN("kernel nbd: %s", note.c_str());
      });
    };
    volume->on_image_changed = [&device, &loop](std::function<void()> done) {
      if (!device) return (*loop)->defer(std::move(done));
      device->drop_cache(std::move(done));
    };
    volume->split_image_in_use = [&device, &loop](
                                     std::function<void(const std::string&, bool)> done) {
      if (!device) return (*loop)->defer([done = std::move(done)] { done("", false); });
      // Bounded: the primary holds its writes until the plan is answered.
      device->probe_in_use([&device, done = std::move(done)](Status free) {
        if (free) return done("", false);
        int code = free.error().code;
        if (code == EBUSY)
          return done(device->path() + " is mounted, held open exclusively or by a holder", false);
        std::string why = free.error().to_string();
        // Not known yet (mirrord stopping, another device call running, the
        // open slower than the limit): the rejoin asks again shortly rather
        // than overwrite an image that may be mounted.
        if (code == ESHUTDOWN || code == EAGAIN || code == ETIMEDOUT)
          return done("cannot tell yet whether " + device->path() + " is in use (" + why + ")",
                      true);
        // The device cannot be opened at all (gone): nothing can mount it.
        MLOG_WARN("kernel nbd: cannot tell whether %s is in use before the rejoin: %s",
                  device->path().c_str(), why.c_str());
        done("", false);
      }, KernelDevice::kCacheDropWaitMs);
    };
    // After an online resize: new NBD requests are checked against the new
    // size, new clients are told it, and the kernel device takes it.
    volume->on_resized = [&server, &device, name = cfg.name](
                             uint64_t size, std::function<void(const std::string&)> done) {
      server.set_size(name, size);
      if (!device) return done("");
      device->resize(size, [done](Status st) {
        if (st) return done("");
        MLOG_ERROR("%s", st.error().to_string().c_str());
        done((st.error().code == ETIMEDOUT ? "the kernel device has not taken the new size yet: "
                                           : "the kernel device kept its old size: ") +
             st.error().to_string());
      });
    };
  }
  if (!ready_file.empty()) {
    if (auto st = write_ready_file(ready_file, ready_lines); !st) {
      MLOG_ERROR("%s", st.error().to_string().c_str());
      return 1;
    }
  }
#ifdef MIRROR_HAVE_SYSTEMD
  // systemd: readiness once every listener is bound, then watchdog pings
  // from the event loop itself (a stuck loop stops them) and the volume's
  // state as the unit's status line.
  sd_notify(0, "READY=1\nSTATUS=serving");
  uint64_t watchdog_usec = 0;
  std::unique_ptr<Timer> watchdog;
  if (sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0) {
    uint64_t every_ms = std::max<uint64_t>(watchdog_usec / 2000, 1);
    Timer* raw = nullptr;
    watchdog = std::make_unique<Timer>(**loop, [&, every_ms] {
      if (volume) {
        VolumeStatus st = volume->status();
        std::string line = "WATCHDOG=1\nSTATUS=" + st.state + ", peer " + st.link +
                           ", out of sync " + std::to_string(st.dirty_bytes) + " bytes";
        sd_notify(0, line.c_str());
      } else {
        sd_notify(0, "WATCHDOG=1");
      }
      // Also while stopping: a stop that drains, flushes both copies and
      // detaches the kernel device may outlast WatchdogSec under load, and a
      // silent watchdog then turns a clean stop into a failure. A stop that
      // hangs is TimeoutStopSec's to catch.
      raw->arm(every_ms);
    });
    raw = watchdog.get();
    watchdog->arm(every_ms);
  }
#endif
  (*loop)->run();
  MLOG_INFO("stopped");
  return exit_code;
}

}  // namespace
}  // namespace mirror

int main(int argc, char** argv) { return mirror::run(argc, argv); }
