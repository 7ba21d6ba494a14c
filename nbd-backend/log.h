// Minimal leveled logging to stderr (journald adds timestamps under systemd).
// Never log secrets or client data.
#pragma once

#include <string_view>

namespace mirror {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Process-wide threshold; set once at startup before any thread starts.
void set_log_level(LogLevel level);
LogLevel log_level();
bool parse_log_level(std::string_view name, LogLevel* out);

void logf(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace mirror

#define MLOG_DEBUG(...)                                                      \
  do {                                                                       \
    if (::mirror::log_level() <= ::mirror::LogLevel::kDebug)                 \
      ::mirror::logf(::mirror::LogLevel::kDebug, __VA_ARGS__);               \
  } while (0)
#define MLOG_INFO(...) ::mirror::logf(::mirror::LogLevel::kInfo, __VA_ARGS__)
#define MLOG_WARN(...) ::mirror::logf(::mirror::LogLevel::kWarn, __VA_ARGS__)
#define MLOG_ERROR(...) ::mirror::logf(::mirror::LogLevel::kError, __VA_ARGS__)
