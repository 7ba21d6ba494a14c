// Attaching an NBD export to the kernel's /dev/nbdX ourselves, without
// nbd-client: the kernel gets one end of a socketpair per connection and
// speaks only the transmission phase on it (NbdServer::adopt serves the other
// end).
//
// Two kernel interfaces:
//  - the "nbd" generic-netlink family (include/uapi/linux/nbd-netlink.h):
//    CONNECT, RECONFIGURE (fresh sockets for a live device, found again by
//    its backend identifier after a daemon restart), DISCONNECT, STATUS, and
//    a LINK_DEAD multicast when a connection dies;
//  - the older ioctls on /dev/nbdX (linux/nbd.h), where the family is
//    missing: NBD_DO_IT blocks for the life of the device, so it runs in a
//    thread of its own. No reconfigure, no backend identifier.
//
// The netlink traffic goes through GenlTransport so that message building
// and reply parsing are unit tested without a kernel (kernel_nbd_test.cc).
// The sysfs reads take the sysfs root as a parameter for the same reason.
//
// Threads: none of these classes is thread-safe; use each from one thread.
// Calls block (netlink round trips, ioctls) but the kernel never waits for
// our NBD replies inside them, so they may run on the serving loop's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "result.h"
#include "unique_fd.h"

struct nl_sock;  // libnl

namespace mirror::knbd {

struct AttachParams {
  int index = -1;              // /dev/nbdINDEX; -1: the first free device
  std::vector<int> sock_fds;   // the kernel's ends; the caller still owns (and closes) them
  uint64_t size_bytes = 0;
  uint64_t block_size = 4096;
  uint64_t server_flags = 0;   // NBD_FLAG_* as a network client would be told
  uint64_t timeout_s = 0;      // per request; 0 = the kernel's default (none)
  uint64_t dead_conn_timeout_s = 0;  // how long I/O waits for a RECONFIGURE
  std::string backend_id;      // /sys/block/nbdX/backend; found again after a restart
};

struct DeviceState {
  int index = -1;
  bool connected = false;
};

// One exchange with the kernel's "nbd" generic-netlink family.
class GenlTransport {
 public:
  virtual ~GenlTransport() = default;
  // The family's id; an Error with ENOENT when the kernel has no "nbd"
  // family (module not loaded, or a kernel older than 4.12).
  virtual Result<int> family_id() = 0;
  // Sends one complete netlink message (nlmsghdr + genlmsghdr + attributes,
  // port and sequence left 0 for the transport to fill) and waits for the
  // kernel's acknowledgement. Returns the data messages that came before it,
  // each a whole netlink message; a kernel refusal is an Error with its errno.
  virtual Result<std::vector<std::vector<uint8_t>>> transact(const std::vector<uint8_t>& msg) = 0;
};

// The real transport: a libnl-genl socket (RAII).
class NetlinkTransport final : public GenlTransport {
 public:
  static Result<std::unique_ptr<NetlinkTransport>> open();
  ~NetlinkTransport() override;
  Result<int> family_id() override;
  Result<std::vector<std::vector<uint8_t>>> transact(const std::vector<uint8_t>& msg) override;

 private:
  NetlinkTransport() = default;
  ::nl_sock* sk_ = nullptr;
  int family_ = -1;
};

// Builds a request of the nbd family: exposed so that the byte layout can be
// checked against nbd-netlink.h. `cmd` is an NBD_CMD_*.
enum class Cmd : uint8_t { kConnect = 1, kDisconnect = 2, kReconfigure = 3, kStatus = 5 };
std::vector<uint8_t> build_connect(int family, const AttachParams& p);
// size_bytes: the device's new size (NBD_ATTR_SIZE_BYTES); 0 leaves it.
// No fds: only the size (or the timeout) changes.
std::vector<uint8_t> build_reconfigure(int family, int index, const std::vector<int>& fds,
                                       const std::string& backend_id,
                                       uint64_t dead_conn_timeout_s, uint64_t size_bytes = 0);
std::vector<uint8_t> build_disconnect(int family, int index);
std::vector<uint8_t> build_status(int family, int index);

// Parsers of the kernel's messages (whole netlink messages).
Result<int> parse_connect_reply(const std::vector<uint8_t>& msg);
Result<std::vector<DeviceState>> parse_status_reply(const std::vector<uint8_t>& msg);
// The device index of an NBD_CMD_LINK_DEAD multicast; ENOMSG if `msg` is
// another command.
Result<int> parse_link_dead(const uint8_t* msg, size_t len);

// The netlink client.
class NetlinkNbd {
 public:
  explicit NetlinkNbd(GenlTransport& t) : t_(t) {}
  // Returns the index the kernel used.
  Result<int> connect(const AttachParams& p);
  // Hands the kernel fresh sockets for a device whose connections died (the
  // kernel replaces dead ones only; spare fds are not taken). The backend
  // identifier must match the one given at connect.
  // size_bytes != 0 also sets the device's size (the kernel's
  // RECONFIGURE applies NBD_ATTR_SIZE_BYTES since Linux 5.3): an online
  // resize passes no fds.
  Status reconfigure(int index, const std::vector<int>& fds, const std::string& backend_id,
                     uint64_t dead_conn_timeout_s, uint64_t size_bytes = 0);
  Status disconnect(int index);
  // Every device (index -1) or one.
  Result<std::vector<DeviceState>> status(int index = -1);

 private:
  Result<int> family();
  GenlTransport& t_;
};

// Which kernel interface to use. ENOENT from family_id() means the family is
// missing: ioctl. Any other error (EPERM, no netlink at all) is returned.
enum class Api { kNetlink, kIoctl };
Result<Api> choose_api(GenlTransport& t);

// /sys/block (or a test's fake tree): the device carrying `backend_id` in
// its `backend` file, or -1.
int find_by_backend(const std::string& sysfs_block, const std::string& backend_id);
// The first nbdN with no `pid` file and size 0 (free for the ioctl path), or
// -1; the index order is numeric.
int first_free(const std::string& sysfs_block);
// "/dev/nbd3" -> 3, "auto" -> -1; an Error for anything else.
Result<int> parse_device(const std::string& path);

// The multicast listener: LINK_DEAD arrives when a connection of a device
// that has a dead-connection timeout dies.
class LinkDeadListener {
 public:
  static Result<std::unique_ptr<LinkDeadListener>> open();
  ~LinkDeadListener();
  int fd() const;  // readable when events wait; non-blocking
  // Reads what is queued: the indexes of the devices reported dead.
  std::vector<int> read_events();

 private:
  LinkDeadListener() = default;
  ::nl_sock* sk_ = nullptr;
};

// The ioctl fallback for one device. connect() returns once the kernel has
// the sockets and a thread sits in NBD_DO_IT. disconnect() only asks: the
// kernel sends NBD_CMD_DISC and NBD_DO_IT returns once the server has closed
// its ends, which needs the serving loop to run, so the caller must not wait
// for it on that loop. The destructor waits (after shutting the kernel's
// sockets down, so it cannot hang on a server that is gone).
class IoctlNbd {
 public:
  explicit IoctlNbd(std::string dev_dir = "/dev", std::string sysfs_block = "/sys/block")
      : dev_dir_(std::move(dev_dir)), sysfs_block_(std::move(sysfs_block)) {}
  ~IoctlNbd();
  Result<int> connect(const AttachParams& p);
  Status disconnect();
  // NBD_SET_SIZE (online resize) on a descriptor of the attached device, a
  // dup of device_fd(): the call runs on a thread that may outlive this
  // object.
  static Status set_size(int dev_fd, uint64_t size_bytes);
  bool attached() const { return dev_.valid() && !disconnect_sent_; }
  int device_fd() const { return dev_.get(); }

 private:
  std::string dev_dir_, sysfs_block_;
  UniqueFd dev_;
  std::thread do_it_;
  bool disconnect_sent_ = false;
};

}  // namespace mirror::knbd
