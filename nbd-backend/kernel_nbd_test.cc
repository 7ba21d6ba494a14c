// Tests of the kernel-attach layer without a kernel: the netlink messages
// byte by byte against nbd-netlink.h's layout, the client through a fake
// transport that answers like the kernel, the netlink/ioctl decision and the
// sysfs lookups on a fake tree.
#include "kernel_nbd.h"

#include <gtest/gtest.h>
#include <linux/nbd-netlink.h>
#include <netlink/genl/genl.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

namespace mirror::knbd {
namespace {

// The numbers the kernel ABI fixes (include/uapi/linux/nbd-netlink.h); the
// byte walks below use these literals so that a renumbering would show.
static_assert(NBD_ATTR_INDEX == 1 && NBD_ATTR_SIZE_BYTES == 2 && NBD_ATTR_BLOCK_SIZE_BYTES == 3 &&
              NBD_ATTR_TIMEOUT == 4 && NBD_ATTR_SERVER_FLAGS == 5 && NBD_ATTR_SOCKETS == 7 &&
              NBD_ATTR_DEAD_CONN_TIMEOUT == 8 && NBD_ATTR_BACKEND_IDENTIFIER == 10);
static_assert(NBD_CMD_CONNECT == 1 && NBD_CMD_DISCONNECT == 2 && NBD_CMD_RECONFIGURE == 3 &&
              NBD_CMD_LINK_DEAD == 4 && NBD_CMD_STATUS == 5);
static_assert(NBD_SOCK_ITEM == 1 && NBD_SOCK_FD == 1 && NBD_DEVICE_ITEM == 1 &&
              NBD_DEVICE_INDEX == 1 && NBD_DEVICE_CONNECTED == 2);

uint16_t u16_at(const std::vector<uint8_t>& b, size_t at) {
  uint16_t v;
  std::memcpy(&v, &b[at], 2);
  return v;
}
uint32_t u32_at(const std::vector<uint8_t>& b, size_t at) {
  uint32_t v;
  std::memcpy(&v, &b[at], 4);
  return v;
}
uint64_t u64_at(const std::vector<uint8_t>& b, size_t at) {
  uint64_t v;
  std::memcpy(&v, &b[at], 8);
  return v;
}

// A top-level attribute found by walking the TLVs by hand (host order, each
// padded to 4 bytes): {offset of payload, payload length}.
struct Attr {
  size_t at;
  size_t len;
};
std::multimap<uint16_t, Attr> walk(const std::vector<uint8_t>& b, size_t from, size_t to) {
  std::multimap<uint16_t, Attr> out;
  size_t p = from;
  while (p + 4 <= to) {
    uint16_t len = u16_at(b, p), type = u16_at(b, p + 2) & 0x3fff;  // minus NESTED/BYTEORDER
    EXPECT_GE(len, 4);
    EXPECT_LE(p + len, to);
    out.insert({type, Attr{p + 4, size_t(len - 4)}});
    p += (len + 3) & ~3u;
  }
  EXPECT_EQ(p, to) << "attributes do not end where the message does";
  return out;
}

constexpr int kFamily = 0x1d;
constexpr size_t kHdr = 16 + 4;  // nlmsghdr + genlmsghdr

TEST(KernelNbdMessages, ConnectHasEveryAttributeWhereTheHeaderSays) {
  AttachParams p;
  p.index = 3;
  p.sock_fds = {7, 9};
  p.size_bytes = 64 << 20;
  p.block_size = 4096;
  p.server_flags = 0x1234;
  p.timeout_s = 30;
  p.dead_conn_timeout_s = 120;
  p.backend_id = "mirrord:db:alpha";
  std::vector<uint8_t> b = build_connect(kFamily, p);
  ASSERT_GE(b.size(), kHdr);
  EXPECT_EQ(u32_at(b, 0), b.size()) << "nlmsg_len";
  EXPECT_EQ(u16_at(b, 4), kFamily) << "nlmsg_type is the family id";
  EXPECT_EQ(b[16], 1) << "genl cmd NBD_CMD_CONNECT";
  EXPECT_EQ(b[17], 1) << "genl version NBD_GENL_VERSION";
  auto a = walk(b, kHdr, b.size());
  ASSERT_EQ(a.count(1), 1u);
  EXPECT_EQ(a.find(1)->second.len, 4u);
  EXPECT_EQ(u32_at(b, a.find(1)->second.at), 3u);
  EXPECT_EQ(u64_at(b, a.find(2)->second.at), uint64_t(64) << 20);
  EXPECT_EQ(u64_at(b, a.find(3)->second.at), 4096u);
  EXPECT_EQ(u64_at(b, a.find(4)->second.at), 30u);
  EXPECT_EQ(u64_at(b, a.find(5)->second.at), 0x1234u);
  EXPECT_EQ(u64_at(b, a.find(8)->second.at), 120u);
  Attr id = a.find(10)->second;
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(&b[id.at])), "mirrord:db:alpha");
  EXPECT_EQ(id.len, p.backend_id.size() + 1) << "NUL-terminated string";
  // [NBD_ATTR_SOCKETS] [NBD_SOCK_ITEM] [NBD_SOCK_FD u32] ... in order.
  ASSERT_EQ(a.count(7), 1u);
  Attr socks = a.find(7)->second;
  auto items = walk(b, socks.at, socks.at + socks.len);
  ASSERT_EQ(items.count(1), 2u);
  std::vector<uint32_t> fds;
  for (auto [it, end] = items.equal_range(1); it != end; ++it) {
    auto inner = walk(b, it->second.at, it->second.at + it->second.len);
    ASSERT_EQ(inner.count(1), 1u);
    fds.push_back(u32_at(b, inner.find(1)->second.at));
  }
  EXPECT_EQ(fds, (std::vector<uint32_t>{7, 9}));
}

TEST(KernelNbdMessages, ConnectToAnyDeviceLeavesTheIndexOut) {
  AttachParams p;
  p.sock_fds = {5};
  p.size_bytes = 4096;
  auto b = build_connect(kFamily, p);
  auto a = walk(b, kHdr, b.size());
  EXPECT_EQ(a.count(1), 0u) << "no NBD_ATTR_INDEX: the kernel picks a free device";
  EXPECT_EQ(a.count(4), 0u) << "no timeout given: none sent";
  EXPECT_EQ(a.count(8), 0u);
  EXPECT_EQ(a.count(10), 0u);
}

TEST(KernelNbdMessages, ReconfigureCarriesIndexIdentifierAndSockets) {
  auto b = build_reconfigure(kFamily, 2, {11, 12, 13}, "mirrord:v:n", 60);
  EXPECT_EQ(b[16], 3) << "NBD_CMD_RECONFIGURE";
  auto a = walk(b, kHdr, b.size());
  EXPECT_EQ(u32_at(b, a.find(1)->second.at), 2u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(&b[a.find(10)->second.at])), "mirrord:v:n");
  EXPECT_EQ(u64_at(b, a.find(8)->second.at), 60u);
  Attr socks = a.find(7)->second;
  EXPECT_EQ(walk(b, socks.at, socks.at + socks.len).count(1), 3u);
  EXPECT_EQ(a.count(2), 0u) << "the size is not touched";
}

TEST(KernelNbdMessages, ReconfigureWithASizeAndNoSocketsIsAResize) {
  auto b = build_reconfigure(kFamily, 3, {}, "mirrord:v:n", 0, 512ull << 20);
  EXPECT_EQ(b[16], 3) << "NBD_CMD_RECONFIGURE";
  auto a = walk(b, kHdr, b.size());
  EXPECT_EQ(u32_at(b, a.find(1)->second.at), 3u);
  ASSERT_EQ(a.count(2), 1u) << "NBD_ATTR_SIZE_BYTES";
  EXPECT_EQ(u64_at(b, a.find(2)->second.at), 512ull << 20);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(&b[a.find(10)->second.at])), "mirrord:v:n")
      << "the kernel checks the identifier on every RECONFIGURE";
  EXPECT_EQ(a.count(7), 0u) << "no sockets: the connections stay";
  EXPECT_EQ(a.count(8), 0u) << "no timeout given: none sent";
  // A re-attach after a restart: fresh sockets and the size served now.
  auto r = build_reconfigure(kFamily, 3, {4}, "mirrord:v:n", 60, 1ull << 30);
  auto ra = walk(r, kHdr, r.size());
  EXPECT_EQ(u64_at(r, ra.find(2)->second.at), 1ull << 30);
  EXPECT_EQ(ra.count(7), 1u);
}

TEST(KernelNbdMessages, DisconnectAndStatus) {
  auto d = build_disconnect(kFamily, 5);
  EXPECT_EQ(d[16], 2);
  auto a = walk(d, kHdr, d.size());
  EXPECT_EQ(u32_at(d, a.find(1)->second.at), 5u);
  auto s = build_status(kFamily, -1);
  EXPECT_EQ(s[16], 5);
  EXPECT_EQ(s.size(), kHdr) << "status of every device: no attribute";
}

// What the kernel sends, built the way the kernel builds it.
struct Reply {
  nl_msg* m;
  explicit Reply(uint8_t cmd) : m(nlmsg_alloc()) {
    genlmsg_put(m, 0, 0, kFamily, 0, 0, cmd, 1);
  }
  ~Reply() { nlmsg_free(m); }
  std::vector<uint8_t> bytes() const {
    auto* h = nlmsg_hdr(m);
    auto* p = reinterpret_cast<const uint8_t*>(h);
    return {p, p + h->nlmsg_len};
  }
};

std::vector<uint8_t> status_reply(const std::vector<DeviceState>& devs) {
  Reply r(NBD_CMD_STATUS);
  nlattr* list = nla_nest_start(r.m, NBD_ATTR_DEVICE_LIST);
  for (const auto& d : devs) {
    nlattr* item = nla_nest_start(r.m, NBD_DEVICE_ITEM);
    nla_put_u32(r.m, NBD_DEVICE_INDEX, d.index);
    nla_put_u8(r.m, NBD_DEVICE_CONNECTED, d.connected);
    nla_nest_end(r.m, item);
  }
  nla_nest_end(r.m, list);
  return r.bytes();
}

std::vector<uint8_t> index_reply(uint8_t cmd, int index) {
  Reply r(cmd);
  nla_put_u32(r.m, NBD_ATTR_INDEX, index);
  return r.bytes();
}

class FakeKernel final : public GenlTransport {
 public:
  Result<int> family_id() override {
    if (family_error) return Error{family_error, "fake"};
    return kFamily;
  }
  Result<std::vector<std::vector<uint8_t>>> transact(const std::vector<uint8_t>& msg) override {
    sent.push_back(msg);
    if (refuse) return Error{refuse, "the kernel refused"};
    return replies;
  }
  int family_error = 0;
  int refuse = 0;
  std::vector<std::vector<uint8_t>> replies;
  std::vector<std::vector<uint8_t>> sent;
};

TEST(KernelNbdClient, ConnectReturnsTheIndexTheKernelChose) {
  FakeKernel k;
  k.replies = {index_reply(NBD_CMD_CONNECT, 6)};
  NetlinkNbd nbd(k);
  AttachParams p;
  p.sock_fds = {4};
  p.size_bytes = 1 << 20;
  auto r = nbd.connect(p);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(*r, 6);
  ASSERT_EQ(k.sent.size(), 1u);
  EXPECT_EQ(k.sent[0], build_connect(kFamily, p));
}

TEST(KernelNbdClient, KernelRefusalKeepsItsErrno) {
  FakeKernel k;
  k.refuse = EBUSY;
  NetlinkNbd nbd(k);
  AttachParams p;
  p.index = 0;
  p.sock_fds = {4};
  auto r = nbd.connect(p);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EBUSY);
  EXPECT_NE(r.error().message.find("CONNECT"), std::string::npos) << r.error().message;
}

TEST(KernelNbdClient, ConnectWithoutSocketsIsRefusedBeforeTheKernel) {
  FakeKernel k;
  NetlinkNbd nbd(k);
  auto r = nbd.connect(AttachParams{});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_TRUE(k.sent.empty());
}

TEST(KernelNbdClient, AnAckWithoutIndexIsAnError) {
  FakeKernel k;  // acknowledges, sends nothing
  NetlinkNbd nbd(k);
  AttachParams p;
  p.sock_fds = {4};
  auto r = nbd.connect(p);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EBADMSG);
}

TEST(KernelNbdClient, StatusListsDevices) {
  FakeKernel k;
  k.replies = {status_reply({{0, true}, {1, false}, {2, true}})};
  NetlinkNbd nbd(k);
  auto s = nbd.status();
  ASSERT_TRUE(s) << s.error().to_string();
  ASSERT_EQ(s->size(), 3u);
  EXPECT_EQ((*s)[0].index, 0);
  EXPECT_TRUE((*s)[0].connected);
  EXPECT_FALSE((*s)[1].connected);
  EXPECT_EQ((*s)[2].index, 2);
}

TEST(KernelNbdClient, ReconfigureAndDisconnectSendWhatWasAsked) {
  FakeKernel k;
  NetlinkNbd nbd(k);
  ASSERT_TRUE(nbd.reconfigure(1, {8, 9}, "mirrord:db:alpha", 60));
  ASSERT_TRUE(nbd.disconnect(1));
  ASSERT_EQ(k.sent.size(), 2u);
  EXPECT_EQ(k.sent[0], build_reconfigure(kFamily, 1, {8, 9}, "mirrord:db:alpha", 60));
  EXPECT_EQ(k.sent[1], build_disconnect(kFamily, 1));
  k.refuse = EINVAL;  // e.g. the identifier does not match
  auto st = nbd.reconfigure(1, {8}, "other", 0);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EINVAL);
}

TEST(KernelNbdParse, LinkDead) {
  auto m = index_reply(NBD_CMD_LINK_DEAD, 4);
  auto r = parse_link_dead(m.data(), m.size());
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(*r, 4);
  auto other = status_reply({});
  EXPECT_EQ(parse_link_dead(other.data(), other.size()).error().code, ENOMSG);
  EXPECT_EQ(parse_link_dead(m.data(), 10).error().code, EBADMSG) << "truncated";
  auto bad = m;
  uint32_t huge = 4096;
  std::memcpy(bad.data(), &huge, 4);  // nlmsg_len beyond the buffer
  EXPECT_EQ(parse_link_dead(bad.data(), bad.size()).error().code, EBADMSG);
}

TEST(KernelNbdApi, FallsBackToIoctlOnlyWhenTheFamilyIsMissing) {
  FakeKernel k;
  EXPECT_EQ(*choose_api(k), Api::kNetlink);
  k.family_error = ENOENT;
  EXPECT_EQ(*choose_api(k), Api::kIoctl);
  k.family_error = EPERM;  // a real problem, not an old kernel: say so
  auto r = choose_api(k);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EPERM);
}

TEST(KernelNbdApi, ParseDevice) {
  EXPECT_EQ(*parse_device("/dev/nbd0"), 0);
  EXPECT_EQ(*parse_device("/dev/nbd15"), 15);
  EXPECT_EQ(*parse_device("auto"), -1);
  for (const char* bad : {"", "/dev/nbd", "/dev/sda", "nbd0", "/dev/nbd0p1", "/dev/nbd-1",
                          "/dev/nbd99999999"})
    EXPECT_FALSE(parse_device(bad)) << bad;
}

struct FakeSysfs : ::testing::Test {
  std::filesystem::path root;
  void SetUp() override {
    char tmpl[] = "/tmp/kernel_nbd_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(root); }
  void device(int i, const std::string& size, const char* backend, bool pid) {
    auto d = root / ("nbd" + std::to_string(i));
    std::filesystem::create_directories(d);
    std::ofstream(d / "size") << size << "\n";
    if (backend) std::ofstream(d / "backend") << backend << "\n";
    if (pid) std::ofstream(d / "pid") << "123\n";
  }
};

TEST_F(FakeSysfs, FindByBackendMatchesTheWholeIdentifier) {
  std::filesystem::create_directories(root / "sda");
  std::ofstream(root / "sda" / "backend") << "mirrord:db:alpha\n";  // not an nbd device
  device(0, "0", nullptr, false);
  device(1, "131072", "mirrord:db:alphabet", true);
  device(10, "131072", "mirrord:db:alpha", true);
  device(2, "131072", "mirrord:db:beta", true);
  EXPECT_EQ(find_by_backend(root, "mirrord:db:alpha"), 10);
  EXPECT_EQ(find_by_backend(root, "mirrord:db:beta"), 2);
  EXPECT_EQ(find_by_backend(root, "mirrord:db"), -1);
  EXPECT_EQ(find_by_backend(root, ""), -1);
  EXPECT_EQ(find_by_backend(root / "missing", "mirrord:db:alpha"), -1);
}

TEST_F(FakeSysfs, FirstFreeSkipsBusyDevicesInNumericOrder) {
  device(10, "0", nullptr, false);
  device(0, "2048", nullptr, true);
  device(2, "0", nullptr, false);
  device(1, "0", nullptr, true);  // connecting: pid but no size yet
  EXPECT_EQ(first_free(root), 2);
  std::filesystem::remove_all(root / "nbd2");
  EXPECT_EQ(first_free(root), 10);
}

TEST_F(FakeSysfs, IoctlConnectWithoutAFreeDeviceSaysSo) {
  device(0, "2048", nullptr, true);
  IoctlNbd io(root, root);
  AttachParams p;
  p.sock_fds = {0};
  auto r = io.connect(p);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENODEV);
  EXPECT_FALSE(io.attached());
}

}  // namespace
}  // namespace mirror::knbd
