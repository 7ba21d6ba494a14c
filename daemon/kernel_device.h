// KernelDevice: one export of our NbdServer attached to this host's kernel as
// /dev/nbdX (docs/kernel-attach.md). Makes a socketpair per connection, gives
// our ends to NbdServer::adopt and the others to the kernel.
//
// Start: if a device already carries our backend identifier (the previous
// mirrord crashed or was upgraded, the device stayed, maybe mounted), it gets
// fresh sockets through RECONFIGURE instead of a new CONNECT: I/O that waited
// within the dead-connection timeout then completes without an error. While
// running, a LINK_DEAD for our device (a connection died) is logged and
// answered the same way. Stop: DISCONNECT, unless the device is in use
// (mounted, held open exclusively, has holders): then it stays attached for
// the next mirrord to RECONFIGURE, as after a crash. A stop first waits for
// a role change's call (bounded: it needs only this loop) and, up to the
// resize's limit, for a resize call; a resize call still blocked then is
// abandoned and the device left attached.
//
// Role changes (follow_role): the kernel takes a device's read-only state
// only at CONNECT (NBD_ATTR_SERVER_FLAGS; RECONFIGURE does not apply them),
// so after a demote or promote a device that nobody uses is DISCONNECTed and
// CONNECTed again with the flags of the new role; a device in use keeps its
// state, and the caller says so. The device is held O_EXCL (claimed) from
// the in-use check through the DISCONNECT (from a demote's first check,
// claim(), or else from the re-attach's own), so that no mount is pulled.
//
// Thread: the Loop's. Attach and detach make blocking netlink calls; the
// kernel does not wait for our NBD replies inside them.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "blocking_call.h"
#include "config.h"
#include "kernel_nbd.h"
#include "server.h"
#include "uring.h"

namespace mirror {

// What `mirrorctl status` shows under "device".
struct DeviceStatus {
  std::string path;         // /dev/nbdN once attached, else what was configured
  std::string api;          // "netlink" or "ioctl"
  uint32_t connections = 0;
  std::string state;        // "attached", "dead" (waiting for sockets) or "detached"
  bool reattached = false;  // took over the device a previous mirrord left
  uint64_t link_dead_events = 0;
  bool read_only = false;    // the kernel's view (/sys/block/nbdN/ro) once attached
};

class KernelDevice final : public Completion {
 public:
  struct Options {
    DeviceConfig cfg;
    std::string export_name;
    std::string backend_id;  // "mirrord:<volume>:<node>"
    std::string sysfs_block = "/sys/block";
    std::string api = "auto";  // or "netlink" / "ioctl": no fallback
    std::string dev_dir = "/dev";
    bool detach_in_use = false;  // stop() detaches even a mounted device
    // How long resize()'s `done` waits for the kernel to take the size.
    uint64_t resize_wait_ms = 30000;
    // Tests only (MIRRORD_FAULTS device-call-delay-ms): the re-attach pauses
    // this long before its DISCONNECT and again before its CONNECT, the
    // resize before its kernel call.
    uint64_t call_delay_ms = 0;
  };
  KernelDevice(Loop& loop, NbdServer& server, Options opts);
  ~KernelDevice();

  Status attach();
  // Disconnects the device (the kernel sends NBD_CMD_DISC on each socket, so
  // the server's connections drain). Idempotent.
  void detach();
  // At a daemon stop: detach() if nothing uses the device, else leave it
  // attached (logged) so that a mounted file system survives a restart.
  // The in-use probe (an O_EXCL open) runs on a thread of its own while the
  // loop keeps serving the device: closing it may write back dirty pages
  // through us. A role change's probe or re-attach that runs is waited for
  // first (its CONNECT would otherwise hand the kernel sockets nobody
  // serves), and a resize call until its resize_wait_ms are over; one still
  // blocked then is abandoned and the device left attached (a DISCONNECT
  // could wait behind it). Later probes, re-attaches and resizes are
  // refused (ESHUTDOWN). `done` runs on the loop once decided.
  void stop(std::function<void()> done);
  // Online resize: the attached device takes the export's new size
  // (netlink RECONFIGURE with NBD_ATTR_SIZE_BYTES, or NBD_SET_SIZE), and
  // the kernel announces it (a resize2fs can follow). The call runs on a
  // thread of its own while the loop keeps serving the device: the kernel
  // may wait for the requests in flight (a queue freeze), which need this
  // loop. `done` runs on the loop (at once when not attached); one resize
  // at a time. A kernel call that has not returned within resize_wait_ms
  // gets ETIMEDOUT ("has not taken the new size yet"): the caller answers
  // rather than wait on it; the call goes on (its late result is logged),
  // and a resize() meanwhile gets EBUSY.
  void resize(uint64_t size, std::function<void(Status)> done);
  // Whether something uses the device (an O_EXCL open, on a thread of its
  // own): `done` gets {} when free, EBUSY when mounted, held open
  // exclusively or claimed by a holder, ESHUTDOWN once stop() was called,
  // or the open's other error. With wait_ms, ETIMEDOUT if the open has not
  // returned by then (it goes on; a stop waits for it).
  void probe_in_use(std::function<void(Status)> done, uint64_t wait_ms = 0);
  // The demote's check: the same O_EXCL open, kept open (the claim) until
  // follow_role() re-attaches the device or release_claim(), so that no
  // mount lands on a device that is about to refuse writes and be
  // re-attached. EINPROGRESS while a claim is held.
  void claim(std::function<void(Status)> done);
  // Gives the claim up (closed on a thread), e.g. after a failed demote.
  void release_claim();
  // After a promote or demote: makes the device's read-only state the
  // export's (read-only on a secondary), re-attaching it when nobody uses it.
  // `done` gets a note for the command's reply: empty when the device has
  // the new role's state, else what the user must do.
  // One at a time: a call while one runs (the promote's reply behind the
  // re-attach a confirmed copy started) waits for it and then runs.
  void follow_role(std::function<void(std::string)> done);
  void follow_role_now(std::function<void(std::string)> done);
  // The image under the device changed without passing through it (a
  // secondary's copy at a split, at the start and end of a resync): drops
  // what the kernel caches of the device's blocks (BLKFLSBUF, on a thread:
  // the open may read through this loop), so that whoever holds it open
  // reads the new image, not pages of the old one. `done` runs on the loop
  // once dropped, or after kCacheDropWaitMs if the call has not returned
  // (logged; the drop goes on), never inside the call. A drop asked for
  // while one runs runs again after it (its `done` then); none once
  // stopping or while not attached (`done` at once). Failures are logged.
  void drop_cache(std::function<void()> done);
  static constexpr uint64_t kCacheDropWaitMs = 2000;
  // The kernel's read-only state of the attached device.
  bool kernel_read_only() const;
  std::string path() const;
  DeviceStatus status() const;

  // The LINK_DEAD listener's poll.
  void on_complete(int res, uint32_t flags) override;

 private:
  // Fresh socketpairs: our ends adopted by the server, the kernel's returned.
  Result<std::vector<UniqueFd>> make_sockets();
  Status reconfigure(int index);
  void listen_link_dead();
  void arm_poll();
  void stop_listening();
  void on_probed(Status in_use);
  // The stop's next step, run again whenever a device call returns.
  void stop_step();
  void finish_stop();
  // The O_EXCL probe, whether or not a stop runs.
  void probe(std::function<void(Status)> done, uint64_t wait_ms = 0);
  // device_call_.start (`what` names it in the stop's log): done(ETIMEDOUT)
  // after wait_ms unless 0 (the call goes on; the stop waits for its end);
  // EAGAIN (deferred) while the probe or a re-attach runs.
  void run_device_call(std::string what, std::function<Status()> work,
                       std::function<void(Status)> done, uint64_t wait_ms = 0);
  void answer_resize(const std::string& dev, Status st, const std::function<void(Status)>& done);
  // DISCONNECT, then CONNECT with the export's current flags, on a thread.
  void reattach(std::function<void(std::string)> done);
  knbd::AttachParams attach_params(int index) const;
  // What the re-attach RECONFIGURE sets: the export's size if the device
  // has another one, else 0 (nothing to change, nothing to wait for).
  uint64_t size_to_set(int index) const;

  Loop& loop_;
  NbdServer& server_;
  Options opts_;
  knbd::Api api_ = knbd::Api::kNetlink;
  std::unique_ptr<knbd::NetlinkTransport> nl_;
  std::unique_ptr<knbd::IoctlNbd> ioctl_;
  std::unique_ptr<knbd::LinkDeadListener> link_dead_;
  int index_ = -1;
  bool attached_ = false;
  bool dead_ = false;
  bool reattached_ = false;
  bool poll_posted_ = false;
  bool stopping_ = false;
  uint64_t link_dead_events_ = 0;
  uint64_t next_peer_ = 0;
  // The in-use probe and the re-attach (one at a time, no time limit), and
  // the resize (its reply waits resize_wait_ms at most).
  BlockingCall device_call_{loop_};
  BlockingCall resize_call_{loop_};
  BlockingCall cache_call_{loop_};  // drop_cache()
  // Answered when the running drop ends; those asked for meanwhile wait
  // for the next one.
  std::vector<std::function<void()>> cache_waiters_, cache_waiters_next_;
  bool cache_timed_out_ = false;  // answered after kCacheDropWaitMs, still running
  void start_cache_drop();
  std::string device_call_what_;
  UniqueFd claim_;  // a demote's O_EXCL claim, held until its re-attach
  bool following_ = false;  // a follow_role() runs
  std::vector<std::function<void(std::string)>> follow_waiters_;
  bool resize_answered_ = true;  // the resize's caller got its reply
  std::function<void()> stop_done_;  // set while a stop waits
  bool stop_probing_ = false;
  bool stop_told_device_call_ = false, stop_told_resize_ = false;  // logged once
};

}  // namespace mirror
