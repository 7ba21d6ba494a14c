#include "handler_run.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <map>

extern char** environ;

namespace mirror {

namespace {

int pidfd_open(pid_t pid) { return int(::syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_send_signal(int pidfd, int sig) {
  return int(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// posix_spawn's attributes and file actions, freed on every path.
struct SpawnSetup {
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t actions;
  SpawnSetup() {
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&actions);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
  }
};

}  // namespace

Result<std::unique_ptr<HandlerRun>> HandlerRun::start(
    Loop& loop, const std::string& program,
    const std::vector<std::pair<std::string, std::string>>& env, Done done) {
  // mirrord's environment, ours replacing any of the same name.
  std::map<std::string, std::string> vars;
  for (char** e = environ; e && *e; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (eq) vars[std::string(*e, size_t(eq - *e))] = eq + 1;
  }
  for (const auto& [k, v] : env) vars[k] = v;
  std::vector<std::string> strings;
  strings.reserve(vars.size());
  for (const auto& [k, v] : vars) strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& s : strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string prog = program;
  char* argv[] = {prog.data(), nullptr};

  SpawnSetup s;
  // mirrord blocks SIGTERM and SIGINT (it reads them from a signalfd) and
  // ignores SIGPIPE: the program gets every signal at its default, unblocked.
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&s.attr, &all);
  posix_spawnattr_setsigmask(&s.attr, &none);
  // A group of its own: a timeout kills the program's children too.
  posix_spawnattr_setpgroup(&s.attr, 0);
  posix_spawnattr_setflags(&s.attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_USEVFORK);
  // stdin /dev/null; stdout and stderr stay mirrord's (never a pipe that
  // could fill); nothing else (sockets, the backing store, the metadata).
  posix_spawn_file_actions_addopen(&s.actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addclosefrom_np(&s.actions, 3);

  pid_t pid = -1;
  if (int e = posix_spawn(&pid, prog.c_str(), &s.actions, &s.attr, argv, envp.data()); e != 0)
    return Error{e, "cannot start " + program + ": " + strerror(e)};
  std::unique_ptr<HandlerRun> run(new HandlerRun(loop, std::move(done)));
  run->pid_ = pid;
  run->running_ = true;
  // Not reaped yet, so the pid is still this child's, even if it exited.
  run->pidfd_.reset(pidfd_open(pid));
  if (!run->pidfd_.valid()) {
    int e = errno;
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);  // killed: returns at once
    return Error{e, "cannot watch " + program + " (pidfd_open): " + strerror(e)};
  }
  run->poll();
  return run;
}

void HandlerRun::poll() {
  io_uring_sqe* sqe = loop_.sqe(this);
  io_uring_prep_poll_add(sqe, pidfd_.get(), POLLIN);
}

void HandlerRun::kill(int sig) {
  // The group while its leader is unreaped (its id cannot be reused);
  // the leader alone if it left the group (setpgid) or the group is gone.
  if (!running_) return;
  if (::kill(-pid_, sig) < 0) pidfd_send_signal(pidfd_.get(), sig);
}

void HandlerRun::abandon(int sig) {
  if (sig) kill(sig);
  done_ = nullptr;
}

void HandlerRun::on_complete(int res, uint32_t) {
  if (res == -EINTR || res == -EAGAIN) return poll();
  siginfo_t info{};
  Outcome o;
  if (::waitid(P_PIDFD, id_t(pidfd_.get()), &info, WEXITED | WNOHANG) < 0) {
    o.how = std::string("cannot be waited for: ") + strerror(errno);
    running_ = false;
    if (done_) std::exchange(done_, nullptr)(o);
    return;
  }
  if (info.si_pid == 0) return poll();  // not exited (a spurious wake-up): watch again
  running_ = false;
  if (info.si_code == CLD_EXITED) {
    o.ok = info.si_status == 0;
    o.how = "exit " + std::to_string(info.si_status);
  } else if (info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED) {
    o.how = "killed by signal " + std::to_string(info.si_status) + " (" +
            strsignal(info.si_status) + ")";
  } else {
    o.how = "ended (cannot tell how)";
  }
  if (done_) std::exchange(done_, nullptr)(o);
}

}  // namespace mirror
