// The control socket's limits: how many connections a local user may hold,
// which connection root's evicts when the socket is full, and how often a
// refusal is logged. Pure decisions (no sockets, no clock of their own), so
// they are unit-tested (control_limits_test.cc); ControlServer applies them.
//
// The socket is mode 0666 (anyone may ask for status): without these, one
// unprivileged user holding idle connections, or pipelining requests and
// never reading the replies, takes the control plane from root or the
// daemon's memory. docs/control-protocol.md, "Connection limits".
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace mirror::control {

struct ClientLimits {
  size_t per_uid = 8;          // connections one non-root uid may hold at once
  size_t non_root_total = 48;  // all non-root connections together: the rest is root's
  size_t total = 64;           // past it, a root connection evicts the oldest idle non-root one
  uint64_t idle_ms = 60000;    // no request in progress, no stream, nothing moved: closed
  size_t max_unsent = 1 << 20; // reply bytes waiting for a client: past it, its requests
                               // are not read until it reads (its events stream is closed)
};

// One open connection, as admission sees it.
struct ConnectionView {
  uid_t uid = 0;
  bool idle = false;  // no request in progress, not streaming events
};

struct Admission {
  bool admit = true;
  // Admitted, but the socket is full: close conns[*evict] (the oldest idle
  // non-root connection) to make room.
  std::optional<size_t> evict;
  // Refused: the limit that refused it, for the client and the log.
  std::string reason;
};

// Whether a new connection from `uid` is admitted, given the open ones in
// the order they were accepted (oldest first). Root (uid 0) is always
// admitted: no local user can lock it out.
Admission admit(const std::vector<ConnectionView>& conns, uid_t uid, const ClientLimits& l);

// At most one log line per key (a uid) per interval; the ones left out in
// between are counted and reported with the next one logged.
class LogRateLimit {
 public:
  explicit LogRateLimit(uint64_t interval_ms = 1000) : interval_ms_(interval_ms) {}
  // Whether to log an event for `key` at `now_ms`; if so, *suppressed is how
  // many were left out for that key since the last one logged.
  bool allow(uint32_t key, uint64_t now_ms, uint64_t* suppressed);

 private:
  struct Entry {
    uint64_t last_ms = 0;
    uint64_t suppressed = 0;
  };
  uint64_t interval_ms_;
  std::unordered_map<uint32_t, Entry> entries_;
};

}  // namespace mirror::control
