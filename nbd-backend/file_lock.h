// flock() that waits a little for a lock a closed file still holds.
//
// A lock belongs to the open file, and the kernel may release that file
// after close() returns: io_uring requests that used it, or a final fput
// deferred to a kernel worker, keep it alive for a moment. A daemon
// restarted at once, or a test that reopens a file it just closed, would
// otherwise be told "in use by another process" by its own past. A lock
// still held after `patience_ms` is a real second user.
#pragma once

#include <sys/file.h>

#include <cerrno>
#include <chrono>
#include <thread>

namespace mirror {

// `op` is LOCK_SH or LOCK_EX; returns 0, or -1 with errno (EWOULDBLOCK when
// another holder kept the lock for the whole wait).
inline int flock_patiently(int fd, int op, int patience_ms = 2000) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(patience_ms);
  for (;;) {
    if (::flock(fd, op | LOCK_NB) == 0) return 0;
    if (errno != EWOULDBLOCK || Clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace mirror
