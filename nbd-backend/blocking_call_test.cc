// BlockingCall: the caller is answered within the wait whatever the call
// does, and a call that returns late is neither lost nor answered twice.
#include "blocking_call.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

namespace mirror {
namespace {

struct BlockingCallTest : ::testing::Test {
  std::unique_ptr<Loop> loop = Loop::create(64).value();
  // Runs the loop until `until` holds (checked every 5 ms) or `ms` passed.
  void run_until(const std::function<bool()>& until, uint64_t ms) {
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    Timer* self = nullptr;
    Timer poll(*loop, [&] {
      if (until() || std::chrono::steady_clock::now() >= end) return loop->stop();
      self->arm(5);
    });
    self = &poll;
    poll.arm(5);
    loop->run();
  }
};

TEST_F(BlockingCallTest, ACallThatReturnsInTimeAnswersWithItsResult) {
  BlockingCall call(*loop);
  int answers = 0, late = 0;
  Status got;
  ASSERT_TRUE(call.start(
      [] {
        return Status(Error{ENODEV, "no such device"});
      },
      5000, [&](Status st) { ++answers, got = st; }, [&](Status) { ++late; }));
  run_until([&] { return !call.running(); }, 2000);
  EXPECT_EQ(answers, 1);
  EXPECT_EQ(late, 0);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, ENODEV);
}

TEST_F(BlockingCallTest, ACallThatBlocksIsAnsweredWithETIMEDOUTThenReportedLate) {
  BlockingCall call(*loop);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  int answers = 0, late = 0;
  Status answer, late_result;
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(call.start(
      [released] {
        released.wait();  // a kernel call stuck until something else happens
        return Status();
      },
      50, [&](Status st) { ++answers, answer = st; },
      [&](Status st) { ++late, late_result = st; }));
  run_until([&] { return answers > 0; }, 2000);
  ASSERT_EQ(answers, 1) << "the caller must not wait for a call that blocks";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1000));
  ASSERT_FALSE(answer);
  EXPECT_EQ(answer.error().code, ETIMEDOUT);
  EXPECT_TRUE(call.running());

  // A second call while the first still blocks is refused, not queued.
  int second = 0;
  Status busy =
      call.start([] { return Status(); }, 50, [&](Status) { ++second; }, [&](Status) { ++second; });
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code, EBUSY);

  release.set_value();
  run_until([&] { return late > 0; }, 2000);
  EXPECT_EQ(late, 1) << "the late result is reported";
  EXPECT_TRUE(late_result);
  EXPECT_EQ(answers, 1) << "the caller is answered once";
  EXPECT_EQ(second, 0);
  EXPECT_FALSE(call.running());

  // Once it returned, the next call runs.
  int third = 0;
  ASSERT_TRUE(call.start([] { return Status(); }, 5000, [&](Status st) { third += st ? 1 : 100; },
                         [&](Status) { third += 100; }));
  run_until([&] { return third > 0; }, 2000);
  EXPECT_EQ(third, 1);
}

// Without a time limit (KernelDevice's in-use probe and re-attach): the call
// runs off the loop, which goes on serving meanwhile, and `done` gets its
// result on the loop's thread.
TEST_F(BlockingCallTest, WithoutALimitTheCallRunsOffTheLoopAndDoneOnIt) {
  BlockingCall call(*loop);
  const std::thread::id loop_thread = std::this_thread::get_id();
  std::thread::id work_thread;
  std::atomic<bool> release{false};
  bool loop_ran_meanwhile = false;
  Status got;
  ASSERT_TRUE(call.start(
      [&] {
        work_thread = std::this_thread::get_id();
        while (!release) std::this_thread::yield();  // blocks until the loop ran something
        return Status(Error{EBUSY, "open /dev/nbd0: Device or resource busy"});
      },
      0,
      [&](Status st) {
        EXPECT_EQ(std::this_thread::get_id(), loop_thread);
        got = st;
        loop->stop();
      },
      nullptr));
  EXPECT_TRUE(call.running());
  loop->defer([&] {
    loop_ran_meanwhile = true;
    release = true;
  });
  loop->run();
  EXPECT_TRUE(loop_ran_meanwhile);
  EXPECT_NE(work_thread, loop_thread);
  EXPECT_FALSE(call.running());
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, EBUSY);
  EXPECT_EQ(got.error().message, "open /dev/nbd0: Device or resource busy");
}

// One call at a time, and `done` may start the next (a role change's probe
// starts the re-attach from its completion).
TEST_F(BlockingCallTest, SecondCallWhileRunningIsRefusedAndDoneMayChainTheNext) {
  BlockingCall call(*loop);
  std::atomic<bool> release{false};
  int first = 0, chained = 0;
  ASSERT_TRUE(call.start(
      [&] {
        while (!release) std::this_thread::yield();
        return Status();
      },
      0,
      [&](Status st) {
        EXPECT_TRUE(st);
        ++first;
        Status next = call.start([] { return Status(); }, 0,
                                 [&](Status st2) {
                                   EXPECT_TRUE(st2);
                                   ++chained;
                                   loop->stop();
                                 },
                                 nullptr);
        EXPECT_TRUE(next);
      },
      nullptr));
  Status refused = call.start([] { return Status(); }, 0, [](Status) {}, nullptr);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, EBUSY);
  release = true;
  loop->run();
  EXPECT_EQ(first, 1);
  EXPECT_EQ(chained, 1);
}

// A daemon that stops while the call blocks (a kernel call nobody will
// serve): abandoned, the call is neither answered nor reported late, and
// destroying the BlockingCall does not wait for it; the thread returns on
// its own later without touching the destroyed object.
TEST_F(BlockingCallTest, AnAbandonedCallIsNotWaitedForNorAnswered) {
  auto call = std::make_unique<BlockingCall>(*loop);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  auto returned = std::make_shared<std::atomic<bool>>(false);
  int answers = 0, late = 0;
  ASSERT_TRUE(call->start(
      [released, returned] {
        released.wait();
        *returned = true;
        return Status();
      },
      60000, [&](Status) { ++answers; }, [&](Status) { ++late; }));
  call->abandon();
  EXPECT_TRUE(call->running()) << "its thread has not returned";
  Status refused = call->start([] { return Status(); }, 0, [&](Status) { ++answers; }, nullptr);
  EXPECT_FALSE(refused);
  // The loop goes on (a stop drains the server after this): the cancelled
  // wake-up read completes on it.
  bool ran = false;
  Timer t(*loop, [&] {
    ran = true;
    loop->stop();
  });
  t.arm(50);
  loop->run();
  EXPECT_TRUE(ran);
  auto t0 = std::chrono::steady_clock::now();
  call.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1000))
      << "the destructor waited for the abandoned call";
  release.set_value();
  for (int i = 0; i < 200 && !*returned; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_TRUE(*returned);
  run_until([] { return false; }, 50);
  EXPECT_EQ(answers, 0);
  EXPECT_EQ(late, 0);
}

}  // namespace
}  // namespace mirror
