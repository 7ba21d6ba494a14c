// VolumeControl: answers control requests for a Volume and turns its state
// changes into `events` (one JSON object per change, like drbdsetup events2).
#pragma once

#include <memory>
#include <vector>
#include <nlohmann/json.hpp>

#include "control_server.h"
#include "kernel_device.h"
#include "uring.h"
#include "volume.h"

namespace mirror {

class VolumeControl final : public ControlServer::Handler {
 public:
  VolumeControl(Loop& loop, Volume& volume, ControlServer& server);
  void on_command(const control::Request& req, const ControlPeer& peer,
                  ControlServer::Respond respond) override;
  void stop();
  // The node's kernel device (may stay null): shown by status, and made to
  // follow the role by demote and promote.
  void set_device(KernelDevice* d) { device_ = d; }

 private:
  // from_peer: relayed by the peer's daemon (never relayed back).
  void dispatch(const control::Request& req, bool from_peer, ControlServer::Respond respond);
  void relay_to_peer(const control::Request& req, ControlServer::Respond respond);
  void poll();
  nlohmann::json status_json() const;
  using Reply = std::function<void(int, const std::string&)>;
  void demote(uint32_t timeout_ms, Reply reply);
  void promote(bool force, bool identical, Reply reply);
  // A role change's reply once the device has the new role's state.
  void device_follow_role(int err, const std::string& msg, const Reply& reply);

  Loop& loop_;
  Volume& volume_;
  ControlServer& server_;
  KernelDevice* device_ = nullptr;
  Timer timer_;
  nlohmann::json last_;  // what the last event reported
  uint64_t last_size_ = 0;  // the volume's size at the last poll
  // rejoin --wait: answered once synchronized, or once a resync was
  // refused for a failed before-resync-target after it asked.
  struct RejoinWaiter {
    uint64_t refusals;  // Volume::resync_refusal().count when it asked
    ControlServer::Respond respond;
  };
  std::vector<RejoinWaiter> rejoin_waiters_;
  struct VerifyWaiter {
    uint64_t run;
    ControlServer::Respond respond;
  };
  std::vector<VerifyWaiter> verify_waiters_;  // verify --wait
  // The promote fence (both nodes secondary in standby): a promote here
  // first asks the peer to stay secondary (promote-fence). fencing_ while
  // that question is out; peer_fenced_until_ms_ while this node promised
  // the peer to stay secondary (bounded: the peer's promote may fail).
  bool fencing_ = false;
  uint64_t peer_fenced_until_ms_ = 0;
  uint64_t peer_fenced_session_ = 0;  // the session the promise was made in
  void promote_fenced(bool force, Reply reply);
  void promote_fence_request(Reply reply);
  void release_peer_fence();
  void answer_verify_waiters(const nlohmann::json& verify);
};

}  // namespace mirror
