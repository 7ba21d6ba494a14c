// Relayed control commands (docs/replication-protocol.md, "Relayed control
// commands"): a command for the other node's daemon goes over the link as
// RELAY and its answer comes back as RELAY_REPLY; this node runs the peer's
// requests as if they came from its own control socket. Sessions and the
// link's other messages are in volume.cc.
#include "clock.h"
#include "log.h"
#include "volume.h"
#include "volume_internal.h"

namespace mirror {

bool Volume::peer_is_primary() const {
  return active_ && peer_known_ && peer_state_.role == link::State::kPrimary;
}

std::string Volume::not_primary(const std::string& command) const {
  std::string m = command + " runs on the primary";
  if (peer_is_primary()) return m + " ('" + peer_.name + "')";
  m += "; this node ('" + self_.name + "') is secondary and '" + peer_.name + "' ";
  return m + (active_ ? "is not primary either (standby: promote one node first)"
                      : "is not connected");
}

void Volume::relay(const std::string& request, RelayDone done) {
  if (!active_) return done(ENOTCONN, "the peer '" + peer_.name + "' is not connected");
  uint64_t id = next_control_id_++;
  relay_waiters_[id] = {std::move(done), mono_ms() + relay_timeout_ms()};
  link::Header h;
  h.type = link::Type::kRelay;
  h.id = id;
  auto payload = link::encode_relay(request);
  active_->conn->send_owned(link::encode_message(h, payload));
}

void Volume::expire_relays() {
  std::vector<RelayDone> expired;
  for (auto it = relay_waiters_.begin(); it != relay_waiters_.end();) {
    if (now_ms_ < it->second.deadline_ms) {
      ++it;
      continue;
    }
    expired.push_back(std::move(it->second.done));
    it = relay_waiters_.erase(it);
  }
  for (auto& d : expired) {
    // The reply, if it ever comes, is dropped (its id is gone).
    MLOG_WARN("volume '%s': a command relayed to '%s' got no answer in %llu ms",
              cfg_.name.c_str(), peer_.name.c_str(),
              static_cast<unsigned long long>(relay_timeout_ms()));
    d(ETIMEDOUT, "'" + peer_.name + "' did not answer within " +
                     std::to_string(relay_timeout_ms() / 1000) +
                     " s (its daemon is stopped or hung, or the link stalls); the command may "
                     "still run there when it resumes: check its status there");
  }
}

void Volume::on_relay_message(LinkConn* c, const link::Header& h, Buffer& payload) {
  auto text = link::decode_relay({payload.data(), h.payload});
  if (!text) return c->close("the peer sent a " + text.error().message);
  if (h.type == link::Type::kRelayReply) {
    auto it = relay_waiters_.find(h.id);
    if (it == relay_waiters_.end()) return;  // answered after we gave up
    RelayDone d = std::move(it->second.done);
    relay_waiters_.erase(it);
    return d(0, *text);
  }
  if (!on_relay) return;
  uint64_t id = h.id;
  // The session the request came on: the reply goes there or nowhere.
  auto* s = static_cast<Session*>(c->context);
  std::weak_ptr<Session> weak = find_session(s);
  on_relay(*text, [this, weak, id](const std::string& reply) {
    auto sp = weak.lock();
    if (!sp || sp->gone) return;
    link::Header r;
    r.type = link::Type::kRelayReply;
    r.id = id;
    sp->conn->send_owned(link::encode_message(r, link::encode_relay(reply)));
  });
}

}  // namespace mirror
