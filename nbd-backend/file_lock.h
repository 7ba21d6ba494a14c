// An exclusive or shared claim on a file, held on a descriptor of its own.
//
// A flock belongs to the open file, and the file lives as long as anything
// references it. io_uring requests reference the file they used, and the
// last reference may be dropped on an io-wq worker, whose deferred fput can
// wait seconds for that worker to wake. A lock taken on the descriptor that
// I/O goes through would outlive close() by that long, and a restarted
// daemon, or a test that reopens a file it just closed, would be told "in
// use by another process" by its own past. So the lock sits on a second
// descriptor that never reaches io_uring: closing it releases the lock at
// once. A short patient retry still covers a previous process that is
// exiting.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <thread>

#include "result.h"
#include "unique_fd.h"

namespace mirror {

class FileLock {
 public:
  FileLock() = default;

  // Locks the file `data_fd` has open, found by `path`; `what` names it in
  // errors ("backing file", "metadata"). `op` is LOCK_SH or LOCK_EX.
  static Result<FileLock> acquire(const std::string& path, int data_fd, int op,
                                  const std::string& what, int patience_ms = 2000) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!fd.valid()) return errno_error("open " + what + " " + path + " to lock it");
    struct stat a {}, b {};
    if (::fstat(fd.get(), &a) < 0 || ::fstat(data_fd, &b) < 0)
      return errno_error("stat " + what + " " + path);
    if (a.st_dev != b.st_dev || a.st_ino != b.st_ino)
      return Error{EBUSY, what + " " + path + " was replaced while being opened"};
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + std::chrono::milliseconds(patience_ms);
    while (::flock(fd.get(), op | LOCK_NB) < 0) {
      if (errno != EWOULDBLOCK) return errno_error("flock " + what + " " + path);
      if (Clock::now() >= deadline)
        return Error{EBUSY, what + " " + path + " is in use by another process"};
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FileLock lock;
    lock.fd_ = std::move(fd);
    return lock;
  }

  bool held() const { return fd_.valid(); }

 private:
  UniqueFd fd_;
};

}  // namespace mirror
