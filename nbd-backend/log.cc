#include "log.h"

#include <unistd.h>

#include <sys/time.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace mirror {
namespace {
LogLevel g_level = LogLevel::kInfo;
const char* const kNames[] = {"debug", "info", "warn", "error"};
}  // namespace

void set_log_level(LogLevel level) { g_level = level; }
LogLevel log_level() { return g_level; }

bool parse_log_level(std::string_view name, LogLevel* out) {
  for (int i = 0; i < 4; ++i) {
    if (name == kNames[i]) {
      *out = static_cast<LogLevel>(i);
      return true;
    }
  }
  return false;
}

void logf(LogLevel level, const char* fmt, ...) {
  if (level < g_level) return;
  char buf[1024];
  int n = 0;
  // journald stamps lines itself; elsewhere (a terminal, a log file) we do.
  static const bool journal = std::getenv("JOURNAL_STREAM") != nullptr;
  if (!journal) {
    timeval tv;
    gettimeofday(&tv, nullptr);
    tm t;
    localtime_r(&tv.tv_sec, &t);
    n = int(std::strftime(buf, sizeof buf, "%H:%M:%S", &t));
    n += std::snprintf(buf + n, sizeof buf - n, ".%03d ", int(tv.tv_usec / 1000));
  }
  n += std::snprintf(buf + n, sizeof buf - n, "mirrord[%d] %s: ", static_cast<int>(getpid()),
                     kNames[static_cast<int>(level)]);
  va_list ap;
  va_start(ap, fmt);
  int m = std::vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
  va_end(ap);
  size_t len = n + (m < 0 ? 0 : std::min<size_t>(m, sizeof buf - n - 2));
  buf[len++] = '\n';
  // One write(2) per line so lines from concurrent processes do not interleave.
  ssize_t r = ::write(STDERR_FILENO, buf, len);
  (void)r;
}

}  // namespace mirror
