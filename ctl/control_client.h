// ControlClient: mirrorctl's side of the control socket (docs/control-protocol.md):
// one JSON line out, reply and event lines back, none waited for without end.
//
// A daemon whose event loop hangs (stopped, wedged) keeps its socket open and
// accepts, but never answers: a plain read() would wait for ever, and so
// would every script and timer that runs mirrorctl. Replies are therefore
// waited for with a deadline, chosen per command (reply_wait):
//
//   - answered at once from the daemon's state (`status`, the first line of
//     `events`): a daemon silent for answer_ms is hung;
//   - answered later on purpose (rejoin --wait, verify --wait, demote's wait
//     for sync, resize, commands relayed to the peer, the event stream):
//     the daemon bounds these itself where they can be bounded, so the
//     client only checks, every answer_ms without a line, that the daemon
//     still answers `status` on a second connection, and gives up when it
//     does not.
//
// Thread: the caller's. Signals: a poll() interrupted by a signal is resumed
// with the time left (the caller checks its own flags between calls).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "result.h"
#include "unique_fd.h"

namespace mirror {

// A live daemon answers `status` within this: the systemd unit's WatchdogSec,
// past which systemd ends a daemon whose event loop stalls.
inline constexpr int kAnswerTimeoutMs = 15000;

struct ReplyWait {
  int answer_ms = kAnswerTimeoutMs;
  bool probe = false;  // past answer_ms, wait on while the daemon answers a status probe
};

// How long `request` (a control request object) may wait for its reply.
ReplyWait reply_wait(const nlohmann::json& request, int answer_ms = kAnswerTimeoutMs);

class ControlClient {
 public:
  // Errors: ETIMEDOUT (the daemon's backlog stayed full for answer_ms: it
  // accepts nothing), else connect()'s errno.
  Status connect(const std::string& path, int answer_ms = kAnswerTimeoutMs);
  Status send(const nlohmann::json& j);
  // The next reply or event line. Errors: ETIMEDOUT (nothing within
  // w.answer_ms and, with w.probe, the daemon no longer answers status; the
  // message names the socket), ECONNRESET (closed), EPROTO (not JSON).
  Result<nlohmann::json> receive(const ReplyWait& w);

 private:
  Error silent(int answer_ms, const std::string& why) const;

  std::string path_;
  int answer_ms_ = kAnswerTimeoutMs;
  UniqueFd fd_;
  std::string buf_;
};

// Whether the daemon at `path` answers `status` within answer_ms.
Status daemon_answers(const std::string& path, int answer_ms);

}  // namespace mirror
