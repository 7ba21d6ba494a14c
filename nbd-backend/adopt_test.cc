// NbdServer::adopt: a socket whose peer (the kernel) never negotiates is
// served in the transmission phase straight away, with the export's rules:
// writes land in the file, a read-only export refuses them with EPERM.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstdlib>
#include <cstring>

#include "codec.h"
#include "file_backend.h"
#include "proto.h"
#include "server.h"
#include "wire.h"

namespace mirror {
namespace {

struct AdoptFixture : ::testing::Test {
  std::unique_ptr<Loop> loop = Loop::create(64).value();
  std::string path;
  UniqueFd client;

  void SetUp() override {
    char tmpl[] = "/tmp/adopt_test.XXXXXX";
    int fd = mkstemp(tmpl);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, 1 << 20), 0);
    ::close(fd);
    path = tmpl;
  }
  void TearDown() override { ::unlink(path.c_str()); }

  // Adopts one end of a socketpair into `server` as export "e".
  void adopt(NbdServer& server) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    client.reset(sv[0]);
    auto st = server.adopt(UniqueFd(sv[1]), "e", "kernel");
    ASSERT_TRUE(st) << st.error().to_string();
  }
  void send_request(uint16_t type, uint64_t cookie, uint64_t off, uint32_t len,
                    const std::vector<uint8_t>& payload = {}) {
    std::vector<uint8_t> out;
    nbd::encode_request(out, nbd::Request{0, type, cookie, off, len});
    out.insert(out.end(), payload.begin(), payload.end());
    ASSERT_EQ(::send(client.get(), out.data(), out.size(), 0), ssize_t(out.size()));
  }
  // Runs the loop until `n` bytes wait on the client side (or 5 s pass).
  std::vector<uint8_t> receive(size_t n) {
    Timer* poll_ptr = nullptr;
    int rounds = 0;
    Timer poll(*loop, [&] {
      int avail = 0;
      std::vector<uint8_t> peek(n);
      avail = int(::recv(client.get(), peek.data(), n, MSG_PEEK | MSG_DONTWAIT));
      if ((avail >= 0 && size_t(avail) >= n) || ++rounds > 1000) return loop->stop();
      poll_ptr->arm(5);
    });
    poll_ptr = &poll;
    poll.arm(1);
    loop->run();
    std::vector<uint8_t> got(n);
    EXPECT_EQ(::recv(client.get(), got.data(), n, MSG_DONTWAIT), ssize_t(n));
    return got;
  }
  static uint32_t reply_error(const std::vector<uint8_t>& r) { return wire::get_u32(&r[4]); }
};

TEST_F(AdoptFixture, WriteThenReadWithoutHandshake) {
  auto be = FileBackend::open(*loop, path, {});
  ASSERT_TRUE(be);
  NbdServer server(*loop);
  server.add_export(nbd::ExportInfo{.name = "e"}, be->get());
  uint16_t flags = server.kernel_flags("e");
  EXPECT_TRUE(flags & nbd::kFlagHasFlags);
  EXPECT_TRUE(flags & nbd::kFlagSendFlush);
  EXPECT_TRUE(flags & nbd::kFlagSendFua);
  EXPECT_FALSE(flags & nbd::kFlagReadOnly);
  EXPECT_FALSE(flags & nbd::kFlagSendDf) << "the kernel gets simple replies only";
  adopt(server);
  std::vector<uint8_t> data(4096, 0xa5);
  send_request(nbd::kCmdWrite, 1, 8192, 4096, data);
  auto w = receive(nbd::kSimpleReplySize);
  EXPECT_EQ(reply_error(w), 0u);
  send_request(nbd::kCmdRead, 2, 8192, 4096);
  auto r = receive(nbd::kSimpleReplySize + 4096);
  EXPECT_EQ(reply_error(r), 0u);
  EXPECT_EQ(wire::get_u64(&r[8]), 2u) << "cookie";
  EXPECT_TRUE(std::equal(data.begin(), data.end(), r.begin() + nbd::kSimpleReplySize));
  EXPECT_EQ(server.connection_count(), 1u);
}

TEST_F(AdoptFixture, ReadOnlyExportRefusesWritesWithEperm) {
  auto be = FileBackend::open(*loop, path, {.read_only = true});
  ASSERT_TRUE(be);
  NbdServer server(*loop);
  server.add_export(nbd::ExportInfo{.name = "e"}, be->get());
  EXPECT_TRUE(server.kernel_flags("e") & nbd::kFlagReadOnly);
  adopt(server);
  send_request(nbd::kCmdWrite, 7, 0, 512, std::vector<uint8_t>(512, 1));
  auto w = receive(nbd::kSimpleReplySize);
  EXPECT_EQ(reply_error(w), nbd::errno_to_nbd(-EPERM));
}

TEST_F(AdoptFixture, UnknownExportIsRefused) {
  auto be = FileBackend::open(*loop, path, {});
  NbdServer server(*loop);
  server.add_export(nbd::ExportInfo{.name = "e"}, be->get());
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd keep(sv[0]);
  auto st = server.adopt(UniqueFd(sv[1]), "nope", "kernel");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EINVAL);
  EXPECT_EQ(server.kernel_flags("nope"), 0);
  EXPECT_EQ(server.connection_count(), 0u);
}

}  // namespace
}  // namespace mirror
