#include "kernel_nbd.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/nbd-netlink.h>
#include <linux/nbd.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/netlink.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>

#include "log.h"
#include "read_line.h"

namespace mirror::knbd {

namespace {

struct MsgFree {
  void operator()(nl_msg* m) const { nlmsg_free(m); }
};
using MsgPtr = std::unique_ptr<nl_msg, MsgFree>;
struct CbFree {
  void operator()(nl_cb* c) const { nl_cb_put(c); }
};
using CbPtr = std::unique_ptr<nl_cb, CbFree>;

// libnl's own error codes, mapped back to the errno a caller can act on.
int nl_errno(int nlerr) {
  switch (-nlerr) {
    case NLE_OBJ_NOTFOUND: return ENOENT;
    case NLE_PERM: return EPERM;
    case NLE_NOMEM: return ENOMEM;
    case NLE_INVAL: return EINVAL;
    case NLE_AGAIN: return EAGAIN;
    case NLE_BUSY: return EBUSY;
    case NLE_NODEV: return ENODEV;
    case NLE_PROTO_MISMATCH: return EPROTONOSUPPORT;
    default: return EIO;
  }
}
Error nl_error(const std::string& context, int nlerr) {
  return Error{nl_errno(nlerr), context + ": " + nl_geterror(nlerr)};
}

MsgPtr start(int family, Cmd cmd) {
  MsgPtr m(nlmsg_alloc());
  genlmsg_put(m.get(), NL_AUTO_PORT, NL_AUTO_SEQ, family, 0, 0, uint8_t(cmd), NBD_GENL_VERSION);
  return m;
}

std::vector<uint8_t> bytes_of(nl_msg* m) {
  const nlmsghdr* h = nlmsg_hdr(m);
  const auto* p = reinterpret_cast<const uint8_t*>(h);
  return {p, p + h->nlmsg_len};
}

void put_sockets(nl_msg* m, const std::vector<int>& fds) {
  nlattr* socks = nla_nest_start(m, NBD_ATTR_SOCKETS);
  for (int fd : fds) {
    nlattr* item = nla_nest_start(m, NBD_SOCK_ITEM);
    nla_put_u32(m, NBD_SOCK_FD, uint32_t(fd));
    nla_nest_end(m, item);
  }
  nla_nest_end(m, socks);
}

const nla_policy* attr_policy() {
  static const auto p = [] {
    std::array<nla_policy, NBD_ATTR_MAX + 1> a{};
    a[NBD_ATTR_INDEX].type = NLA_U32;
    a[NBD_ATTR_DEVICE_LIST].type = NLA_NESTED;
    return a;
  }();
  return p.data();
}
const nla_policy* device_policy() {
  static const auto p = [] {
    std::array<nla_policy, NBD_DEVICE_ATTR_MAX + 1> a{};
    a[NBD_DEVICE_INDEX].type = NLA_U32;
    a[NBD_DEVICE_CONNECTED].type = NLA_U8;
    return a;
  }();
  return p.data();
}

// Validates a whole nbd-family message and parses its top-level attributes.
// nlmsghdr is the kernel ABI in host byte order: reading it in place is the
// interface, not a wire-format shortcut.
Result<uint8_t> parse_genl(const uint8_t* data, size_t len, nlattr** attrs) {
  if (len < NLMSG_HDRLEN + GENL_HDRLEN) return Error{EBADMSG, "nbd netlink: message too short"};
  auto* h = reinterpret_cast<nlmsghdr*>(const_cast<uint8_t*>(data));
  if (h->nlmsg_len > len || h->nlmsg_len < NLMSG_HDRLEN + GENL_HDRLEN)
    return Error{EBADMSG, "nbd netlink: bad message length"};
  int r = genlmsg_parse(h, 0, attrs, NBD_ATTR_MAX, const_cast<nla_policy*>(attr_policy()));
  if (r < 0) return nl_error("nbd netlink: bad attributes", r);
  return static_cast<genlmsghdr*>(nlmsg_data(h))->cmd;
}

// The nbdN entries of a sysfs block directory, in numeric order.
std::vector<int> nbd_indexes(const std::string& sysfs_block) {
  std::vector<int> out;
  DIR* d = ::opendir(sysfs_block.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.size() > 3 && n.compare(0, 3, "nbd") == 0 &&
        std::all_of(n.begin() + 3, n.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
        n.size() < 10)
      out.push_back(std::stoi(n.substr(3)));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

// ------------------------------------------------------------ messages --

std::vector<uint8_t> build_connect(int family, const AttachParams& p) {
  MsgPtr m = start(family, Cmd::kConnect);
  if (p.index >= 0) nla_put_u32(m.get(), NBD_ATTR_INDEX, uint32_t(p.index));
  nla_put_u64(m.get(), NBD_ATTR_SIZE_BYTES, p.size_bytes);
  nla_put_u64(m.get(), NBD_ATTR_BLOCK_SIZE_BYTES, p.block_size);
  nla_put_u64(m.get(), NBD_ATTR_SERVER_FLAGS, p.server_flags);
  if (p.timeout_s) nla_put_u64(m.get(), NBD_ATTR_TIMEOUT, p.timeout_s);
  if (p.dead_conn_timeout_s) nla_put_u64(m.get(), NBD_ATTR_DEAD_CONN_TIMEOUT, p.dead_conn_timeout_s);
  if (!p.backend_id.empty()) nla_put_string(m.get(), NBD_ATTR_BACKEND_IDENTIFIER, p.backend_id.c_str());
  put_sockets(m.get(), p.sock_fds);
  return bytes_of(m.get());
}

std::vector<uint8_t> build_reconfigure(int family, int index, const std::vector<int>& fds,
                                       const std::string& backend_id,
                                       uint64_t dead_conn_timeout_s, uint64_t size_bytes) {
  MsgPtr m = start(family, Cmd::kReconfigure);
  nla_put_u32(m.get(), NBD_ATTR_INDEX, uint32_t(index));
  // The kernel refuses a RECONFIGURE without the identifier the device was
  // connected with: it is what proves we are the same backend.
  if (!backend_id.empty()) nla_put_string(m.get(), NBD_ATTR_BACKEND_IDENTIFIER, backend_id.c_str());
  if (dead_conn_timeout_s) nla_put_u64(m.get(), NBD_ATTR_DEAD_CONN_TIMEOUT, dead_conn_timeout_s);
  if (size_bytes) nla_put_u64(m.get(), NBD_ATTR_SIZE_BYTES, size_bytes);
  if (!fds.empty()) put_sockets(m.get(), fds);
  return bytes_of(m.get());
}

std::vector<uint8_t> build_disconnect(int family, int index) {
  MsgPtr m = start(family, Cmd::kDisconnect);
  nla_put_u32(m.get(), NBD_ATTR_INDEX, uint32_t(index));
  return bytes_of(m.get());
}

std::vector<uint8_t> build_status(int family, int index) {
  MsgPtr m = start(family, Cmd::kStatus);
  if (index >= 0) nla_put_u32(m.get(), NBD_ATTR_INDEX, uint32_t(index));
  return bytes_of(m.get());
}

Result<int> parse_connect_reply(const std::vector<uint8_t>& msg) {
  nlattr* a[NBD_ATTR_MAX + 1] = {};
  auto cmd = parse_genl(msg.data(), msg.size(), a);
  if (!cmd) return cmd.error();
  if (*cmd != NBD_CMD_CONNECT || a[NBD_ATTR_INDEX] == nullptr)
    return Error{EBADMSG, "nbd netlink: CONNECT reply without a device index"};
  return int(nla_get_u32(a[NBD_ATTR_INDEX]));
}

Result<std::vector<DeviceState>> parse_status_reply(const std::vector<uint8_t>& msg) {
  nlattr* a[NBD_ATTR_MAX + 1] = {};
  auto cmd = parse_genl(msg.data(), msg.size(), a);
  if (!cmd) return cmd.error();
  if (*cmd != NBD_CMD_STATUS) return Error{EBADMSG, "nbd netlink: not a STATUS reply"};
  std::vector<DeviceState> out;
  if (a[NBD_ATTR_DEVICE_LIST] == nullptr) return out;
  nlattr* item;
  int rem;
  nla_for_each_nested(item, a[NBD_ATTR_DEVICE_LIST], rem) {
    if (nla_type(item) != NBD_DEVICE_ITEM) continue;
    nlattr* d[NBD_DEVICE_ATTR_MAX + 1] = {};
    if (nla_parse_nested(d, NBD_DEVICE_ATTR_MAX, item, const_cast<nla_policy*>(device_policy())) < 0 ||
        d[NBD_DEVICE_INDEX] == nullptr)
      return Error{EBADMSG, "nbd netlink: bad device item in STATUS reply"};
    DeviceState s;
    s.index = int(nla_get_u32(d[NBD_DEVICE_INDEX]));
    s.connected = d[NBD_DEVICE_CONNECTED] && nla_get_u8(d[NBD_DEVICE_CONNECTED]);
    out.push_back(s);
  }
  return out;
}

Result<int> parse_link_dead(const uint8_t* msg, size_t len) {
  nlattr* a[NBD_ATTR_MAX + 1] = {};
  auto cmd = parse_genl(msg, len, a);
  if (!cmd) return cmd.error();
  if (*cmd != NBD_CMD_LINK_DEAD) return Error{ENOMSG, "nbd netlink: not LINK_DEAD"};
  if (a[NBD_ATTR_INDEX] == nullptr) return Error{EBADMSG, "nbd netlink: LINK_DEAD without index"};
  return int(nla_get_u32(a[NBD_ATTR_INDEX]));
}

// --------------------------------------------------------------- client --

Result<int> NetlinkNbd::family() { return t_.family_id(); }

Result<int> NetlinkNbd::connect(const AttachParams& p) {
  if (p.sock_fds.empty()) return Error{EINVAL, "nbd connect: no sockets"};
  auto fam = family();
  if (!fam) return fam.error();
  auto replies = t_.transact(build_connect(*fam, p));
  if (!replies) return Error{replies.error().code, "nbd CONNECT: " + replies.error().message};
  for (const auto& r : *replies) {
    auto idx = parse_connect_reply(r);
    if (idx) return *idx;
  }
  // Kernels answer CONNECT with the index; without it we cannot manage the device.
  return Error{EBADMSG, "nbd CONNECT: the kernel acknowledged without saying which device"};
}

Status NetlinkNbd::reconfigure(int index, const std::vector<int>& fds,
                               const std::string& backend_id, uint64_t dead_conn_timeout_s,
                               uint64_t size_bytes) {
  auto fam = family();
  if (!fam) return fam.error();
  auto replies = t_.transact(
      build_reconfigure(*fam, index, fds, backend_id, dead_conn_timeout_s, size_bytes));
  if (!replies) return Error{replies.error().code, "nbd RECONFIGURE: " + replies.error().message};
  return {};
}

Status NetlinkNbd::disconnect(int index) {
  auto fam = family();
  if (!fam) return fam.error();
  auto replies = t_.transact(build_disconnect(*fam, index));
  if (!replies) return Error{replies.error().code, "nbd DISCONNECT: " + replies.error().message};
  return {};
}

Result<std::vector<DeviceState>> NetlinkNbd::status(int index) {
  auto fam = family();
  if (!fam) return fam.error();
  auto replies = t_.transact(build_status(*fam, index));
  if (!replies) return Error{replies.error().code, "nbd STATUS: " + replies.error().message};
  std::vector<DeviceState> all;
  for (const auto& r : *replies) {
    auto s = parse_status_reply(r);
    if (!s) return s.error();
    all.insert(all.end(), s->begin(), s->end());
  }
  return all;
}

Result<Api> choose_api(GenlTransport& t) {
  auto fam = t.family_id();
  if (fam) return Api::kNetlink;
  if (fam.error().code == ENOENT) return Api::kIoctl;
  return fam.error();
}

// ---------------------------------------------------------------- sysfs --

int find_by_backend(const std::string& sysfs_block, const std::string& backend_id) {
  if (backend_id.empty()) return -1;
  for (int i : nbd_indexes(sysfs_block)) {
    if (read_line(sysfs_block + "/nbd" + std::to_string(i) + "/backend") == backend_id) return i;
  }
  return -1;
}

int first_free(const std::string& sysfs_block) {
  for (int i : nbd_indexes(sysfs_block)) {
    std::string dir = sysfs_block + "/nbd" + std::to_string(i);
    struct stat st;
    if (::stat((dir + "/pid").c_str(), &st) == 0) continue;
    std::string size = read_line(dir + "/size");
    if (size.empty() || size == "0") return i;
  }
  return -1;
}

Result<int> parse_device(const std::string& path) {
  if (path == "auto") return -1;
  const std::string prefix = "/dev/nbd";
  if (path.size() > prefix.size() && path.size() <= prefix.size() + 6 &&
      path.compare(0, prefix.size(), prefix) == 0 &&
      std::all_of(path.begin() + prefix.size(), path.end(),
                  [](char c) { return c >= '0' && c <= '9'; }))
    return std::stoi(path.substr(prefix.size()));
  return Error{EINVAL, "'" + path + "' is not /dev/nbdN or \"auto\""};
}

// ----------------------------------------------------- real transports --

Result<std::unique_ptr<NetlinkTransport>> NetlinkTransport::open() {
  std::unique_ptr<NetlinkTransport> t(new NetlinkTransport);
  t->sk_ = nl_socket_alloc();
  if (t->sk_ == nullptr) return Error{ENOMEM, "netlink: cannot allocate a socket"};
  if (int r = genl_connect(t->sk_); r < 0) return nl_error("netlink: generic netlink", r);
  return t;
}

NetlinkTransport::~NetlinkTransport() {
  if (sk_) nl_socket_free(sk_);
}

Result<int> NetlinkTransport::family_id() {
  if (family_ >= 0) return family_;
  int r = genl_ctrl_resolve(sk_, NBD_GENL_FAMILY_NAME);
  if (r < 0) return nl_error("netlink family \"" NBD_GENL_FAMILY_NAME "\"", r);
  family_ = r;
  return r;
}

namespace {
struct Exchange {
  std::vector<std::vector<uint8_t>> data;
  int err = 0;
  bool done = false;
};
int on_valid(nl_msg* m, void* arg) {
  static_cast<Exchange*>(arg)->data.push_back(bytes_of(m));
  return NL_OK;
}
int on_ack(nl_msg*, void* arg) {
  static_cast<Exchange*>(arg)->done = true;
  return NL_STOP;
}
int on_error(sockaddr_nl*, nlmsgerr* e, void* arg) {
  auto* x = static_cast<Exchange*>(arg);
  x->err = -e->error;
  x->done = true;
  return NL_STOP;
}
}  // namespace

Result<std::vector<std::vector<uint8_t>>> NetlinkTransport::transact(
    const std::vector<uint8_t>& msg) {
  if (msg.size() < NLMSG_HDRLEN) return Error{EINVAL, "netlink: message too short"};
  MsgPtr m(nlmsg_convert(reinterpret_cast<nlmsghdr*>(const_cast<uint8_t*>(msg.data()))));
  if (!m) return Error{ENOMEM, "netlink: cannot copy the message"};
  CbPtr cb(nl_cb_alloc(NL_CB_DEFAULT));
  if (!cb) return Error{ENOMEM, "netlink: cannot allocate callbacks"};
  Exchange x;
  nl_cb_set(cb.get(), NL_CB_VALID, NL_CB_CUSTOM, on_valid, &x);
  nl_cb_set(cb.get(), NL_CB_ACK, NL_CB_CUSTOM, on_ack, &x);
  nl_cb_err(cb.get(), NL_CB_CUSTOM, on_error, &x);
  if (int r = nl_send_auto(sk_, m.get()); r < 0) return nl_error("netlink send", r);
  while (!x.done) {
    int r = nl_recvmsgs(sk_, cb.get());
    if (x.done) break;
    if (r < 0) return nl_error("netlink receive", r);
  }
  if (x.err) return Error{x.err, "the kernel refused"};
  return std::move(x.data);
}

Result<std::unique_ptr<LinkDeadListener>> LinkDeadListener::open() {
  std::unique_ptr<LinkDeadListener> l(new LinkDeadListener);
  l->sk_ = nl_socket_alloc();
  if (l->sk_ == nullptr) return Error{ENOMEM, "netlink: cannot allocate a socket"};
  // Multicasts carry no sequence number of ours.
  nl_socket_disable_seq_check(l->sk_);
  if (int r = genl_connect(l->sk_); r < 0) return nl_error("netlink: generic netlink", r);
  int grp = genl_ctrl_resolve_grp(l->sk_, NBD_GENL_FAMILY_NAME, NBD_GENL_MCAST_GROUP_NAME);
  if (grp < 0) return nl_error("netlink group " NBD_GENL_MCAST_GROUP_NAME, grp);
  if (int r = nl_socket_add_membership(l->sk_, grp); r < 0) return nl_error("netlink join", r);
  if (int r = nl_socket_set_nonblocking(l->sk_); r < 0) return nl_error("netlink", r);
  return l;
}

LinkDeadListener::~LinkDeadListener() {
  if (sk_) nl_socket_free(sk_);
}

int LinkDeadListener::fd() const { return nl_socket_get_fd(sk_); }

std::vector<int> LinkDeadListener::read_events() {
  std::vector<int> out;
  auto collect = [](nl_msg* m, void* arg) -> int {
    const nlmsghdr* h = nlmsg_hdr(m);
    auto idx = parse_link_dead(reinterpret_cast<const uint8_t*>(h), h->nlmsg_len);
    if (idx) static_cast<std::vector<int>*>(arg)->push_back(*idx);
    return NL_OK;
  };
  nl_socket_modify_cb(sk_, NL_CB_VALID, NL_CB_CUSTOM, collect, &out);
  for (int i = 0; i < 64; ++i) {
    if (nl_recvmsgs_default(sk_) < 0) break;  // -NLE_AGAIN: nothing more queued
  }
  return out;
}

// ---------------------------------------------------------------- ioctl --

IoctlNbd::~IoctlNbd() {
  if (!dev_.valid()) return;
  (void)disconnect();
  ::ioctl(dev_.get(), NBD_CLEAR_SOCK);  // ends NBD_DO_IT even if nobody closes the other ends
  if (do_it_.joinable()) do_it_.join();
}

Result<int> IoctlNbd::connect(const AttachParams& p) {
  if (attached()) return Error{EBUSY, "nbd ioctl: already attached"};
  if (p.sock_fds.empty()) return Error{EINVAL, "nbd ioctl: no sockets"};
  int index = p.index >= 0 ? p.index : first_free(sysfs_block_);
  if (index < 0) return Error{ENODEV, "nbd ioctl: no free /dev/nbdN (is nbd.ko loaded?)"};
  std::string path = dev_dir_ + "/nbd" + std::to_string(index);
  UniqueFd dev(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!dev.valid()) return errno_error("open " + path);
  auto fail = [&](const char* what) {
    Error e = errno_error(path + ": " + what);
    ::ioctl(dev.get(), NBD_CLEAR_SOCK);
    return e;
  };
  if (::ioctl(dev.get(), NBD_SET_BLKSIZE, static_cast<unsigned long>(p.block_size)) < 0)
    return fail("NBD_SET_BLKSIZE");
  if (::ioctl(dev.get(), NBD_SET_SIZE, static_cast<unsigned long>(p.size_bytes)) < 0)
    return fail("NBD_SET_SIZE");
  if (p.timeout_s && ::ioctl(dev.get(), NBD_SET_TIMEOUT, static_cast<unsigned long>(p.timeout_s)) < 0)
    return fail("NBD_SET_TIMEOUT");
  if (::ioctl(dev.get(), NBD_SET_FLAGS, static_cast<unsigned long>(p.server_flags)) < 0)
    return fail("NBD_SET_FLAGS");
  for (int fd : p.sock_fds) {
    if (::ioctl(dev.get(), NBD_SET_SOCK, static_cast<unsigned long>(fd)) < 0)
      return fail("NBD_SET_SOCK");
  }
  // NBD_DO_IT returns only when the device is disconnected.
  int devfd = dev.get();
  do_it_ = std::thread([devfd, path] {
    if (::ioctl(devfd, NBD_DO_IT) < 0 && errno != EPIPE)
      MLOG_WARN("%s: NBD_DO_IT ended: %s", path.c_str(), strerror(errno));
    ::ioctl(devfd, NBD_CLEAR_QUE);
    ::ioctl(devfd, NBD_CLEAR_SOCK);
  });
  dev_ = std::move(dev);
  return index;
}

Status IoctlNbd::set_size(int dev_fd, uint64_t size_bytes) {
  if (::ioctl(dev_fd, NBD_SET_SIZE, static_cast<unsigned long>(size_bytes)) < 0)
    return errno_error("NBD_SET_SIZE " + std::to_string(size_bytes));
  return {};
}

Status IoctlNbd::disconnect() {
  if (!attached()) return {};
  disconnect_sent_ = true;
  if (::ioctl(dev_.get(), NBD_DISCONNECT) < 0) return errno_error("NBD_DISCONNECT");
  return {};
}

}  // namespace mirror::knbd
