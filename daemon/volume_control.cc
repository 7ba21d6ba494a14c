#include "volume_control.h"

#include "status_json.h"

namespace mirror {

using json = nlohmann::json;

VolumeControl::VolumeControl(Loop& loop, Volume& volume, ControlServer& server)
    : loop_(loop), volume_(volume), server_(server), timer_(loop, [this] { poll(); }) {
  timer_.arm(200);
}

void VolumeControl::stop() { timer_.cancel(); }

json VolumeControl::status_json() const {
  if (device_ == nullptr) return status_to_json(volume_.status());
  DeviceStatus d = device_->status();
  return status_to_json(volume_.status(), &d);
}

void VolumeControl::on_command(const control::Request& req, const ControlPeer&,
                               ControlServer::Respond respond) {
  const std::string& cmd = req.spec->name;
  if (cmd == "status" || cmd == "events") {
    respond(control::ok_reply(status_json()));
    return;
  }
  auto reply = [respond](int err, const std::string& msg) {
    respond(err ? control::error_reply(err, msg) : control::ok_reply(msg));
  };
  if (cmd == "split") return volume_.split(reply);
  if (cmd == "hold") return volume_.hold(uint32_t(req.args["timeout_ms"].get<int64_t>()), reply);
  if (cmd == "release") return volume_.release(reply);
  if (cmd == "promote") return volume_.promote(req.args.value("force", false), reply);
  if (cmd == "demote") {
    int64_t s = req.args.value("timeout", int64_t(60));
    if (s <= 0 || s > 86400) return reply(EINVAL, "demote: timeout must be 1..86400 seconds");
    return volume_.demote(uint32_t(s * 1000), reply);
  }
  if (cmd == "rejoin") {
    bool wait = req.args.value("wait", false);
    return volume_.rejoin([this, wait, respond](int err, const std::string& msg) {
      if (err || !wait) return respond(err ? control::error_reply(err, msg)
                                           : control::ok_reply(msg));
      rejoin_waiters_.push_back(respond);  // answered by poll() once synchronized
    });
  }
  respond(control::error_reply(EINVAL, "command '" + cmd + "' is not available"));
}

void VolumeControl::poll() {
  json s = status_json();
  // An event when anything but the counters changes.
  json key = {{"role", s["role"]}, {"link", s["link"]}, {"state", s["state"]},
              {"consistent", s["consistent"]}, {"last_error", s["last_error"]},
              {"device", s["device"].is_object() ? s["device"]["state"] : json()}};
  if (!rejoin_waiters_.empty()) {
    std::string state = s["state"];
    if (state == "synchronized" || state == "split-brain") {
      for (auto& r : std::exchange(rejoin_waiters_, {})) {
        r(state == "synchronized"
              ? control::ok_reply("synchronized")
              : control::error_reply(EBUSY, "split brain: " + s["last_error"].get<std::string>()));
      }
    }
  }
  if (key != last_) {
    last_ = key;
    json ev = s;
    ev["event"] = "change";
    server_.broadcast(ev);
  }
  timer_.arm(200);
}

}  // namespace mirror
