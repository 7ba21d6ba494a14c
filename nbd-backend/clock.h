// Clocks, in the units the code uses. Monotonic for timeouts and rates;
// the coarse one (vDSO, a few ms of resolution) where it runs per request;
// the wall clock only for times shown to people.
#pragma once

#include <time.h>

#include <cstdint>

namespace mirror {

inline uint64_t clock_read_ns(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return uint64_t(ts.tv_sec) * 1000000000 + uint64_t(ts.tv_nsec);
}
inline uint64_t mono_ms() { return clock_read_ns(CLOCK_MONOTONIC) / 1000000; }
inline uint64_t mono_us() { return clock_read_ns(CLOCK_MONOTONIC) / 1000; }
inline uint64_t coarse_ms() { return clock_read_ns(CLOCK_MONOTONIC_COARSE) / 1000000; }
inline uint64_t unix_ms() { return clock_read_ns(CLOCK_REALTIME) / 1000000; }

}  // namespace mirror
