// ThreadCall: the blocking calls of KernelDevice (the in-use probe, the
// re-attach, the resize) run on a thread of their own while the loop goes on
// serving; their completion runs on the loop, one call at a time.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "kernel_device.h"

namespace mirror {
namespace {

struct ThreadCallTest : ::testing::Test {
  std::unique_ptr<Loop> loop = Loop::create(16).value();
  std::thread::id loop_thread = std::this_thread::get_id();
};

TEST_F(ThreadCallTest, WorkRunsOffTheLoopAndDoneOnIt) {
  ThreadCall call(*loop);
  std::thread::id work_thread;
  std::atomic<bool> release{false};
  bool loop_ran_meanwhile = false;
  Status got;
  call.run(
      [&] {
        work_thread = std::this_thread::get_id();
        while (!release) std::this_thread::yield();  // blocks until the loop ran something
        return Status(Error{EBUSY, "open /dev/nbd0: Device or resource busy"});
      },
      [&](Status st) {
        EXPECT_EQ(std::this_thread::get_id(), loop_thread);
        got = st;
        loop->stop();
      });
  EXPECT_TRUE(call.busy());
  loop->defer([&] {
    loop_ran_meanwhile = true;
    release = true;
  });
  loop->run();
  EXPECT_TRUE(loop_ran_meanwhile);
  EXPECT_NE(work_thread, loop_thread);
  EXPECT_FALSE(call.busy());
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, EBUSY);
  EXPECT_EQ(got.error().message, "open /dev/nbd0: Device or resource busy");
}

TEST_F(ThreadCallTest, SecondCallWhileBusyIsRefusedAndDoneMayChainTheNext) {
  ThreadCall call(*loop);
  std::atomic<bool> release{false};
  int first = 0, second = 0, chained = 0;
  Status refused;
  call.run(
      [&] {
        while (!release) std::this_thread::yield();
        return Status();
      },
      [&](Status st) {
        EXPECT_TRUE(st);
        ++first;
        // What follow_role does: the probe's completion starts the re-attach.
        call.run([] { return Status(); }, [&](Status st2) {
          EXPECT_TRUE(st2);
          ++chained;
          loop->stop();
        });
      });
  call.run([] { return Status(); }, [&](Status st) {
    ++second;
    refused = st;
    release = true;
  });
  loop->run();
  EXPECT_EQ(first, 1);
  EXPECT_EQ(second, 1);
  EXPECT_EQ(chained, 1);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, EAGAIN);
}

}  // namespace
}  // namespace mirror
