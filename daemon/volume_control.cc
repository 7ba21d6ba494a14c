#include "volume_control.h"

#include "clock.h"
#include "log.h"
#include "status_json.h"

namespace mirror {

namespace {
constexpr uint64_t kMaxHoldMs = 3'600'000;
}  // namespace

using json = nlohmann::json;

VolumeControl::VolumeControl(Loop& loop, Volume& volume, ControlServer& server)
    : loop_(loop), volume_(volume), server_(server), timer_(loop, [this] { poll(); }) {
  timer_.arm(200);
  // A command relayed by the peer's daemon: its control server already
  // checked the caller's credentials, and the link is authenticated.
  volume_.on_relay = [this](const std::string& text,
                            std::function<void(const std::string&)> reply) {
    auto req = control::parse_request(text);
    if (!req)
      return reply(control::error_reply(req.error().code, "relayed request: " +
                                                              req.error().message).dump());
    dispatch(*req, true, [reply](json j) { reply(j.dump()); });
  };
}

void VolumeControl::stop() { timer_.cancel(); }

json VolumeControl::status_json() const {
  if (device_ == nullptr) return status_to_json(volume_.status());
  DeviceStatus d = device_->status();
  return status_to_json(volume_.status(), &d);
}

// Like DRBD's `drbdadm secondary`: refused while the node's device is in use
// (a file system mounted on it would get write errors from the demote on),
// before anything changes.
void VolumeControl::demote(uint32_t timeout_ms, Reply reply) {
  if (device_ == nullptr || volume_.role() != Role::kPrimary)
    return volume_.demote(timeout_ms, reply);
  // Claimed from the check through the re-attach: a mount meanwhile fails
  // (EBUSY) instead of getting a device that refuses its writes.
  device_->claim([this, timeout_ms, reply](Status in_use) {
    if (!in_use && in_use.error().code == EBUSY) {
      std::string dev = device_->path();
      return reply(EBUSY, dev + " is in use (mounted, held open exclusively or by a holder): "
                              "unmount " + dev + " first; still primary");
    }
    if (!in_use)
      return reply(in_use.error().code,
                   "cannot tell whether the device is in use: " + in_use.error().to_string() +
                       "; still primary");
    volume_.demote(timeout_ms, [this, reply](int err, const std::string& msg) {
      if (err) device_->release_claim();
      device_follow_role(err, msg, reply);
    });
  });
}

void VolumeControl::promote(bool force, bool identical, Reply reply) {
  if (identical) {
    if (!force)
      return reply(EINVAL, "--identical goes with --force (the operator's word on a new pair)");
    return volume_.promote_identical(reply);
  }
  if (!volume_.standby_with_peer()) return promote_fenced(force, reply);
  // Both nodes secondary and connected: a promote on each at the same time
  // would make two primaries (each checked the other's role before either
  // changed). The peer is asked to stay secondary first; of two promotes
  // that cross, the node whose name sorts first goes on.
  const std::string peer = volume_.peer_name();
  if (mono_ms() < peer_fenced_until_ms_ && volume_.session_serial() == peer_fenced_session_)
    return reply(EBUSY, "'" + peer + "' is being promoted (this node promised it to stay "
                        "secondary): promote again once it is primary, or in 30 s");
  if (fencing_) return reply(EBUSY, "a promote of this node is already asking '" + peer + "'");
  // The peer is asked only for a promote that would go on here: one refused
  // for its own reasons must not hold the peer's promotes back.
  bool refused = false;
  volume_.promote(force, [&refused, &reply](int err, const std::string& msg) {
    if (err) {
      refused = true;
      reply(err, msg);
    }
  }, /*check_only=*/true);
  if (refused) return;
  fencing_ = true;
  json request = {{"version", control::kVersion}, {"command", "promote-fence"},
                  {"args", json::object()}};
  volume_.relay(request.dump(), [this, force, reply, peer](int err, const std::string& text) {
    fencing_ = false;
    if (err) {
      // Unanswered in time, the fence may still reach the peer (a stalled
      // link): the release follows it.
      if (err == ETIMEDOUT) release_peer_fence();
      return reply(err, "cannot agree the promote with '" + peer + "': " + text +
                            " (with '" + peer + "' lost for good: stop it, or promote --force "
                            "once the link is down)");
    }
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("ok") || !j["ok"].is_boolean())
      return reply(EIO, "'" + peer + "' sent a malformed reply to the promote fence");
    if (!j["ok"].get<bool>()) {
      std::string e = j.value("error", std::string("refused"));
      // A daemon from before the fence: the old promote, unfenced.
      if (e.find("unknown command 'promote-fence'") == std::string::npos)
        return reply(EBUSY, "refused by '" + peer + "': " + e);
    }
    promote_fenced(force, [this, reply](int err, const std::string& msg) {
      // The peer promised to stay secondary for this promote: one that
      // failed here (its metadata could not be written) frees it now, not
      // after 30 s of refusing its own promotes.
      if (err) release_peer_fence();
      reply(err, msg);
    });
  });
}

void VolumeControl::release_peer_fence() {
  json request = {{"version", control::kVersion}, {"command", "promote-unfence"},
                  {"args", json::object()}};
  // Best effort: a peer from before the release ("unknown command") or a
  // lost link keeps the 30 s bound.
  volume_.relay(request.dump(), [peer = volume_.peer_name()](int err, const std::string& text) {
    if (err) MLOG_INFO("promote fence: '%s' not released: %s", peer.c_str(), text.c_str());
  });
}

void VolumeControl::promote_fence_request(Reply reply) {
  if (volume_.role() != Role::kSecondary) return reply(EBUSY, "this node is primary");
  const std::string& self = volume_.node_name();
  if (fencing_ && self < volume_.peer_name())
    return reply(EBUSY, "'" + self + "' is being promoted at the same time, and goes first "
                        "(of two promotes that cross, the node whose name sorts first)");
  peer_fenced_until_ms_ = mono_ms() + 30000;
  peer_fenced_session_ = volume_.session_serial();
  reply(0, "'" + self + "' stays secondary");
}

void VolumeControl::promote_fenced(bool force, Reply reply) {
  if (device_ == nullptr) return volume_.promote(force, reply);
  volume_.promote(force, [this, reply](int err, const std::string& msg) {
    // Already primary: a device that stayed read-only through the promote
    // (it was in use) gets another chance.
    if (err == EALREADY && device_->status().read_only) {
      return device_->follow_role([reply, dev = device_->path()](const std::string& note) {
        if (!note.empty()) return reply(EBUSY, "already primary; " + note);
        reply(0, "already primary; " + dev + " is writable now");
      });
    }
    device_follow_role(err, msg, reply);
  });
}

void VolumeControl::device_follow_role(int err, const std::string& msg, const Reply& reply) {
  if (err) return reply(err, msg);
  device_->follow_role([reply, msg](const std::string& note) {
    reply(0, note.empty() ? msg : msg + "; " + note);
  });
}

void VolumeControl::on_command(const control::Request& req, const ControlPeer&,
                               ControlServer::Respond respond) {
  dispatch(req, false, std::move(respond));
}

void VolumeControl::dispatch(const control::Request& req, bool from_peer,
                             ControlServer::Respond respond) {
  const std::string& cmd = req.spec->name;
  if (!from_peer) {
    // Commands that run on the primary work from either host: the
    // secondary's daemon relays them over the replication link.
    bool needs_primary = cmd == "split" || cmd == "rejoin" || cmd == "hold" ||
                         cmd == "release" || cmd == "resize";
    if (needs_primary && volume_.role() == Role::kSecondary && volume_.peer_is_primary())
      return relay_to_peer(req, std::move(respond));
    if (cmd == "status" && req.args.value("peer", false))
      return relay_to_peer(req, std::move(respond));
    // The other way: the map of changes since the last backup is the
    // secondary's; `mirrorctl backup` talks to the primary.
    if (cmd == "backup-mark" && volume_.role() == Role::kPrimary && volume_.peer_connected())
      return relay_to_peer(req, std::move(respond));
  }
  if (cmd == "status" || cmd == "events") {
    respond(control::ok_reply(status_json()));
    return;
  }
  auto reply = [respond](int err, const std::string& msg) {
    respond(err ? control::error_reply(err, msg) : control::ok_reply(msg));
  };
  if (cmd == "split") return volume_.split(reply);
  if (cmd == "hold") {
    // Bounded: a hold is a consistency group's moment, and a script that
    // dies before `release` must not freeze the writes for long (a value
    // cast to 32 bits once held -1 for 49 days and 2^32 for nothing).
    const nlohmann::json& t = req.args["timeout_ms"];
    bool ok = t.is_number_unsigned() ? t.get<uint64_t>() - 1 < kMaxHoldMs
                                     : t.is_number_integer() && t.get<int64_t>() >= 1 &&
                                           t.get<int64_t>() <= int64_t(kMaxHoldMs);
    if (!ok)
      return reply(EINVAL, "hold: timeout_ms must be 1.." + std::to_string(kMaxHoldMs) +
                               " (at most an hour)");
    return volume_.hold(uint32_t(t.get<uint64_t>()), reply);
  }
  if (cmd == "release") return volume_.release(reply);
  if (cmd == "promote")
    return promote(req.args.value("force", false), req.args.value("identical", false), reply);
  if (cmd == "promote-fence" || cmd == "promote-unfence") {
    if (!from_peer) return reply(EINVAL, cmd + " is sent by the peer's daemon, not by hand");
    if (cmd == "promote-fence") return promote_fence_request(reply);
    // Only the promise made in this session ends (one of an earlier session
    // ended with it).
    if (volume_.session_serial() == peer_fenced_session_) peer_fenced_until_ms_ = 0;
    return reply(0, "'" + volume_.node_name() + "' may promote again");
  }
  if (cmd == "demote") {
    int64_t s = req.args.value("timeout", int64_t(60));
    if (s <= 0 || s > 86400) return reply(EINVAL, "demote: timeout must be 1..86400 seconds");
    return demote(uint32_t(s * 1000), reply);
  }
  if (cmd == "open-rw") return volume_.open_rw(reply);
  if (cmd == "resize") return volume_.resize(req.args.value("assume-clean", false), reply);
  if (cmd == "reload-tls") return volume_.reload_tls(reply);
  if (cmd == "discard-my-data") return volume_.discard_my_data(reply);
  if (cmd == "backup-mark") {
    int64_t point = req.args["point"].get<int64_t>();
    int64_t expect = req.args.value("expect", int64_t(0));
    int64_t split = req.args.value("split", int64_t(0));
    if (point < 0 || expect < 0 || split < 0) return reply(EINVAL, "backup points are positive");
    return volume_.backup_mark(uint64_t(point), uint64_t(expect), uint64_t(split), reply);
  }
  if (cmd == "backup")
    return reply(EINVAL, "backup is run by mirrorctl (split, copy, backup-mark, rejoin)");
  if (cmd == "verify") {
    int64_t off = req.args.value("offset", int64_t(0)), len = req.args.value("length", int64_t(0));
    if (off < 0 || len < 0) return reply(EINVAL, "verify: offset and length are not negative");
    bool wait = req.args.value("wait", false), cancel = req.args.value("cancel", false);
    if (req.args.value("if-primary", false) && volume_.status().role != Role::kPrimary)
      return reply(0, "this node is not the primary: nothing to verify here (verify runs on "
                      "the primary)");
    return volume_.verify(
        uint64_t(off), uint64_t(len), cancel,
        [this, wait, cancel, respond](int err, const std::string& msg) {
          if (err || !wait || cancel)
            return respond(err ? control::error_reply(err, msg) : control::ok_reply(msg));
          // Answered by poll() once this run has ended.
          verify_waiters_.push_back({volume_.status().verify.run, respond});
        });
  }
  if (cmd == "rejoin") {
    bool wait = req.args.value("wait", false);
    return volume_.rejoin([this, wait, respond](int err, const std::string& msg) {
      if (err || !wait) return respond(err ? control::error_reply(err, msg)
                                           : control::ok_reply(msg));
      // Answered by poll() once synchronized, or refused.
      rejoin_waiters_.push_back({volume_.resync_refusal().count, respond});
    });
  }
  respond(control::error_reply(EINVAL, "command '" + cmd + "' is not available"));
}

void VolumeControl::relay_to_peer(const control::Request& req, ControlServer::Respond respond) {
  json args = req.args;
  bool wait = req.spec->name == "rejoin" && args.value("wait", false);
  // Waiting happens here, on our own state: the rejoin closes the link the
  // answer would come back on.
  args.erase("wait");
  args.erase("peer");
  json request = {{"version", control::kVersion}, {"command", req.spec->name}, {"args", args}};
  std::string peer = volume_.status().peer;
  bool changes = req.spec->changes_state;
  volume_.relay(request.dump(), [this, respond, wait, peer, changes](int err,
                                                                     const std::string& text) {
    if (err) {
      std::string m = "relaying to '" + peer + "': " + text;
      // The request went out; its answer was lost with the link, not
      // necessarily the command: a split the peer made and the secondary
      // confirmed leaves the pair split. Never to be taken for "not done".
      if (err == ECONNRESET && changes)
        m += "; '" + peer + "' may have run it before the link was lost: check `mirrorctl "
             "status` there once the link is back";
      return respond(control::error_reply(err, m));
    }
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("ok") || !j["ok"].is_boolean())
      return respond(control::error_reply(EIO, "'" + peer + "' sent a malformed reply"));
    if (!j["ok"].get<bool>()) {
      j["error"] = "on '" + peer + "': " + j.value("error", std::string("failed"));
      return respond(j);
    }
    if (wait) return rejoin_waiters_.push_back({volume_.resync_refusal().count, respond});
    respond(j);
  });
}

void VolumeControl::answer_verify_waiters(const json& v) {
  // Waiters of a run that is no longer the last one (a new run started
  // after it ended between two polls) learn only that it ended.
  std::vector<VerifyWaiter> still;
  for (auto& w : std::exchange(verify_waiters_, {})) {
    bool same = v.is_object() && v["run"] == w.run;
    if (same && v["running"].get<bool>()) {
      still.push_back(std::move(w));
      continue;
    }
    if (!same) {
      w.respond(control::error_reply(ECANCELED, "verify " + std::to_string(w.run) +
                                                    " ended (a newer run replaced its status)"));
    } else if (v["result"] == "completed") {
      w.respond(control::ok_reply(v));
    } else {
      std::string r = v["result"];
      w.respond(control::error_reply(r.rfind("cancelled", 0) == 0 ? ECANCELED : ECONNRESET,
                                     "verify " + r));
    }
  }
  verify_waiters_ = std::move(still);
}

void VolumeControl::poll() {
  json s = status_json();
  // An event when anything but the counters changes.
  json key = {{"role", s["role"]}, {"link", s["link"]}, {"state", s["state"]},
              {"consistent", s["consistent"]}, {"last_error", s["last_error"]},
              {"disk", s["disk"]}, {"peer_disk_failed", s["peer_disk_failed"]},
              {"device", s["device"].is_object() ? s["device"]["state"] : json()},
              // A handler's start and end (runs, running, last_result).
              {"handlers", s["handlers"]},
              // A verify's start and end, even one shorter than a poll.
              {"verify", s["verify"].is_object()
                             ? json::array({s["verify"]["run"], s["verify"]["result"]})
                             : json()}};
  if (!rejoin_waiters_.empty()) {
    std::string state = s["state"];
    Volume::ResyncRefusal refusal = volume_.resync_refusal();
    std::vector<RejoinWaiter> still;
    for (auto& w : std::exchange(rejoin_waiters_, {})) {
      if (state == "synchronized") {
        w.respond(control::ok_reply("synchronized"));
      } else if (state == "split-brain") {
        w.respond(
            control::error_reply(EBUSY, "split brain: " + s["last_error"].get<std::string>()));
      } else if (refusal.count > w.refusals && !refusal.why.empty()) {
        // The secondary's before-resync-target failed after this rejoin:
        // nothing resyncs until the operator acts.
        std::string who = volume_.role() == Role::kPrimary
                              ? "'" + s["peer"].get<std::string>() + "'"
                              : "this node";
        w.respond(control::error_reply(ECANCELED, "the resync was refused by " + who + ": " +
                                                      refusal.why));
      } else {
        still.push_back(std::move(w));
      }
    }
    rejoin_waiters_ = std::move(still);
  }
  if (!verify_waiters_.empty()) answer_verify_waiters(s["verify"]);
  if (key != last_) {
    last_ = key;
    json ev = s;
    ev["event"] = "change";
    server_.broadcast(ev);
  }
  // An online resize, here or driven by the peer.
  uint64_t size = s["size"];
  if (last_size_ != 0 && size != last_size_) {
    json ev = s;
    ev["event"] = "resized";
    ev["from"] = last_size_;
    ev["to"] = size;
    server_.broadcast(ev);
  }
  last_size_ = size;
  timer_.arm(200);
}

}  // namespace mirror
