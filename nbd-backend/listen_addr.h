// Listening addresses: "HOST:PORT", "[V6]:PORT" or "unix:PATH".
#pragma once

#include <string>

#include "result.h"
#include "unique_fd.h"

namespace mirror {

struct ListenAddr {
  enum class Kind { kTcp, kUnix } kind = Kind::kTcp;
  std::string host;  // numeric address, or a name resolved at bind time
  uint16_t port = 0;
  std::string path;

  static Result<ListenAddr> parse(const std::string& text);
  std::string to_string() const;
};

struct BoundSocket {
  UniqueFd fd;
  ListenAddr addr;          // with the port the kernel chose for port 0
  bool is_tcp = false;
};

// Creates, binds and listens. A stale Unix socket file (nobody listening)
// is replaced; a live one is an error.
Result<BoundSocket> bind_listener(const ListenAddr& addr, int backlog = 128);

// Connects a stream socket (blocking connect; for clients and tests).
Result<UniqueFd> connect_to(const ListenAddr& addr);

}  // namespace mirror
