#include "clock.h"
#include "quiesce.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mirror {
namespace {

// Runs `cmd` with sh -c; kills it at the deadline. "" on success.
std::string run_hook(const std::string& what, const std::string& cmd, int64_t deadline_ms) {
  if (cmd.empty()) return "";
  pid_t pid = fork();
  if (pid < 0) return what + ": fork: " + strerror(errno);
  if (pid == 0) {
    setpgid(0, 0);
    // Not the dispositions of the guard (SIGTERM) or of a backup (SIGPIPE).
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  for (;;) {
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return "";
      if (WIFEXITED(st)) return what + " '" + cmd + "' exited with " + std::to_string(WEXITSTATUS(st));
      return what + " '" + cmd + "' was killed by signal " + std::to_string(WTERMSIG(st));
    }
    if (int64_t(mono_ms()) >= deadline_ms) {
      kill(-pid, SIGKILL);
      waitpid(pid, &st, 0);
      return what + " '" + cmd + "' did not finish before the timeout and was killed";
    }
    usleep(10000);
  }
}

void thaw_all(const std::vector<std::string>& mounts) {
  for (const auto& m : mounts) {
    int fd = open(m.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) continue;
    ioctl(fd, FITHAW, 0);  // EINVAL when not frozen: fine
    close(fd);
  }
}

// The guard: waits for a byte on `from_parent` (done) until the deadline;
// on timeout or EOF (mirrorctl died) it thaws and runs the post-hook, and
// reports which happened on `to_parent`.
[[noreturn]] void guard(int from_parent, int to_parent, const QuiesceOptions& o,
                        int64_t deadline_ms) {
  // The guard is there to outlive mirrorctl, so not what ends it: ^C and a
  // hangup go to mirrorctl's process group (the guard leaves it), a stop of
  // its service sends SIGTERM to the whole cgroup (the guard ignores it; it
  // ends once mirrorctl has, by EOF).
  setpgid(0, 0);
  signal(SIGTERM, SIG_IGN);
  pollfd p{from_parent, POLLIN, 0};
  int r;
  do {
    int64_t left = deadline_ms - int64_t(mono_ms());
    r = left > 0 ? poll(&p, 1, int(left)) : 0;
  } while (r < 0 && errno == EINTR);
  char c = 0;
  bool done = r > 0 && read(from_parent, &c, 1) == 1;
  if (done) {
    char ok = 'k';
    ssize_t w = write(to_parent, &ok, 1);
    (void)w;
    _exit(0);
  }
  thaw_all(o.freeze);
  run_hook("post-hook", o.post, int64_t(mono_ms()) + 30000);
  char t = 't';
  ssize_t w = write(to_parent, &t, 1);
  (void)w;
  _exit(1);
}

}  // namespace

QuiesceResult quiesced_split(const QuiesceOptions& o, const std::function<std::string()>& split) {
  QuiesceResult res;
  int64_t deadline = int64_t(mono_ms()) + int64_t(o.timeout_s) * 1000;
  int to_guard[2], from_guard[2];
  if (pipe2(to_guard, O_CLOEXEC) < 0 || pipe2(from_guard, O_CLOEXEC) < 0) {
    res.message = std::string("pipe: ") + strerror(errno);
    return res;
  }
  pid_t g = fork();
  if (g < 0) {
    res.message = std::string("fork: ") + strerror(errno);
    return res;
  }
  if (g == 0) {
    close(to_guard[1]);
    close(from_guard[0]);
    guard(to_guard[0], from_guard[1], o, deadline);
  }
  close(to_guard[0]);
  close(from_guard[1]);

  std::string err = run_hook("pre-hook", o.pre, deadline);
  std::vector<std::string> frozen;
  if (err.empty()) {
    for (const auto& m : o.freeze) {
      int fd = open(m.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0) {
        err = "cannot open mount point " + m + ": " + strerror(errno);
        break;
      }
      int rc = ioctl(fd, FIFREEZE, 0);
      int e = errno;
      close(fd);
      if (rc < 0) {
        err = "cannot freeze " + m + ": " + strerror(e);
        break;
      }
      frozen.push_back(m);
    }
  }
  if (err.empty() && int64_t(mono_ms()) < deadline) {
    res.split_attempted = true;
    err = split();
    res.split_made = err.empty();
  } else if (err.empty()) {
    err = "the timeout expired before the split";
  }
  // Tell the guard we are done; it answers whether it had to step in.
  char c = 'd';
  ssize_t w = write(to_guard[1], &c, 1);
  (void)w;
  char verdict = 0;
  ssize_t n = read(from_guard[0], &verdict, 1);
  waitpid(g, nullptr, 0);
  close(to_guard[1]);
  close(from_guard[0]);
  bool guard_stepped_in = n != 1 || verdict != 'k';
  if (!guard_stepped_in) {
    thaw_all(frozen);
    std::string post_err = run_hook("post-hook", o.post, int64_t(mono_ms()) + 30000);
    if (!post_err.empty()) err = err.empty() ? post_err : err + "; " + post_err;
  } else {
    std::string t = "the timeout (" + std::to_string(o.timeout_s) +
                    " s) expired: filesystems were thawed and the post-hook ran";
    if (res.split_attempted && err.empty())
      t += "; the split happened after the thaw, so it is only crash-consistent";
    err = err.empty() ? t : err + "; " + t;
  }
  res.ok = err.empty();
  res.message = res.ok ? "split" : err;
  return res;
}

}  // namespace mirror
