// ControlClient's deadlines against fake daemons on a real Unix socket: one
// that never answers (a hung event loop: the kernel still queues the
// connections), one whose backlog is full, and a live one that answers a
// command late, as rejoin --wait does.
#include "control_client.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "control_protocol.h"
#include "test_listener.h"

namespace mirror {
namespace {

using json = nlohmann::json;

json request(const std::string& command, json args = json::object()) {
  return {{"version", control::kVersion}, {"command", command}, {"args", std::move(args)}};
}

// A live daemon: answers `status` at once and any other command after
// `late_ms`, each connection on its own thread.
class LiveDaemon {
 public:
  explicit LiveDaemon(int late_ms) : late_ms_(late_ms) {
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~LiveDaemon() {
    stop_ = true;
    acceptor_.join();
    for (auto& t : conns_) t.join();
  }
  const std::string& path() const { return l_.path(); }
  int statuses() const { return statuses_; }

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{l_.fd(), POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int fd = ::accept4(l_.fd(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) conns_.emplace_back([this, fd] { serve(UniqueFd(fd)); });
    }
  }
  void serve(UniqueFd fd) {
    std::string line;
    char c;
    while (::read(fd.get(), &c, 1) == 1 && c != '\n') line += c;
    json req = json::parse(line, nullptr, false);
    if (req.is_discarded()) return;
    if (req["command"] == "status") {
      ++statuses_;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(late_ms_));
    }
    std::string reply = json{{"ok", true}, {"result", req["command"]}}.dump() + "\n";
    ASSERT_EQ(ssize_t(reply.size()), ::write(fd.get(), reply.data(), reply.size()));
  }

  Listener l_;
  int late_ms_;
  std::atomic<bool> stop_{false};
  std::atomic<int> statuses_{0};
  std::thread acceptor_;
  std::vector<std::thread> conns_;
};

TEST(ReplyWait, OnlyWhatTheDaemonAnswersAtOnceHasAPlainDeadline) {
  EXPECT_FALSE(reply_wait(request("status")).probe);
  EXPECT_FALSE(reply_wait(request("events")).probe);
  EXPECT_TRUE(reply_wait(request("status", {{"peer", true}})).probe);  // relayed
  EXPECT_TRUE(reply_wait(request("rejoin", {{"wait", true}})).probe);
  EXPECT_TRUE(reply_wait(request("verify", {{"wait", true}})).probe);
  EXPECT_TRUE(reply_wait(request("demote", {{"timeout", 600}})).probe);
  EXPECT_TRUE(reply_wait(request("resize")).probe);
  EXPECT_TRUE(reply_wait(request("split")).probe);
  EXPECT_EQ(kAnswerTimeoutMs, reply_wait(request("status")).answer_ms);
  EXPECT_EQ(250, reply_wait(request("status"), 250).answer_ms);
}

TEST(ControlClient, GivesUpOnADaemonThatNeverAnswers) {
  Listener hung;  // connections queue in the backlog, nothing reads them
  ControlClient c;
  ASSERT_TRUE(c.connect(hung.path(), 200));
  ASSERT_TRUE(c.send(request("status")));
  auto r = c.receive(reply_wait(request("status"), 200));
  ASSERT_FALSE(r);
  EXPECT_EQ(ETIMEDOUT, r.error().code);
  EXPECT_NE(std::string::npos, r.error().message.find(hung.path())) << r.error().message;
  EXPECT_NE(std::string::npos, r.error().message.find("no answer within 1 s"))
      << r.error().message;
}

TEST(ControlClient, AWaitingCommandGivesUpWhenTheDaemonStopsAnsweringStatus) {
  Listener hung;
  ControlClient c;
  ASSERT_TRUE(c.connect(hung.path(), 200));
  ASSERT_TRUE(c.send(request("rejoin", {{"wait", true}})));
  auto r = c.receive(reply_wait(request("rejoin", {{"wait", true}}), 200));
  ASSERT_FALSE(r);
  EXPECT_EQ(ETIMEDOUT, r.error().code);
  EXPECT_NE(std::string::npos, r.error().message.find("nor to a status request"))
      << r.error().message;
}

TEST(ControlClient, AWaitingCommandWaitsOnWhileTheDaemonAnswersStatus) {
  // The reply comes after several answer timeouts; the daemon answers the
  // status probes meanwhile, so the client waits for it.
  LiveDaemon d(1500);
  ControlClient c;
  ASSERT_TRUE(c.connect(d.path(), 300));
  ASSERT_TRUE(c.send(request("rejoin", {{"wait", true}})));
  auto r = c.receive(reply_wait(request("rejoin", {{"wait", true}}), 300));
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ("rejoin", (*r)["result"]);
  EXPECT_GE(d.statuses(), 1);
}

TEST(ControlClient, ARefusedConnectionGetsTheDaemonsReason) {
  // A daemon that refuses the connection (too many from this user) writes
  // one line and closes before the client sent its request: the send fails
  // (EPIPE), the line is what the user must see, not "Broken pipe".
  Listener l;
  ControlClient c;
  ASSERT_TRUE(c.connect(l.path(), 1000));
  UniqueFd fd(::accept4(l.fd(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  std::string line = control::error_reply(EAGAIN, "too many control connections").dump() + "\n";
  ASSERT_EQ(ssize_t(line.size()), ::write(fd.get(), line.data(), line.size()));
  fd.reset();
  ASSERT_TRUE(c.send(request("status")));
  auto r = c.receive(reply_wait(request("status"), 1000));
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ("EAGAIN", (*r)["code"]);
  EXPECT_EQ("too many control connections", (*r)["error"]);
}

TEST(ControlClient, ConnectGivesUpWhenTheBacklogStaysFull) {
  // A hung daemon accepts nothing: once its backlog is full a blocking
  // connect() would wait for ever.
  Listener hung(0);
  std::vector<ControlClient> queued(8);
  Status st;
  for (auto& c : queued) {
    st = c.connect(hung.path(), 100);
    if (!st) break;
  }
  ASSERT_FALSE(st) << "the backlog never filled";
  EXPECT_EQ(ETIMEDOUT, st.error().code);
  EXPECT_NE(std::string::npos, st.error().message.find(hung.path())) << st.error().message;
}

TEST(ControlClient, AnAbsentDaemonIsUnreachableAtOnce) {
  ControlClient c;
  auto st = c.connect("/nonexistent/mirrord.ctl", 100);
  ASSERT_FALSE(st);
  EXPECT_EQ(ENOENT, st.error().code);
}

}  // namespace
}  // namespace mirror
