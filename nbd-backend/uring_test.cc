// Tests of the io_uring loop's Timer: the semantics its users rely on.
#include "uring.h"

#include <gtest/gtest.h>

#include <chrono>

namespace mirror {
namespace {

struct TimerFixture : ::testing::Test {
  std::unique_ptr<Loop> loop = Loop::create(64).value();
  int fired = 0;
  // Runs the loop until `stop` fires (a guard timer ends the test's wait).
  void run_for(uint64_t ms) {
    Timer stop(*loop, [this] { loop->stop(); });
    stop.arm(ms);
    loop->run();
  }
};

TEST_F(TimerFixture, FiresOnce) {
  Timer t(*loop, [this] { ++fired; });
  t.arm(10);
  run_for(100);
  EXPECT_EQ(fired, 1);
  EXPECT_FALSE(t.armed());
}

TEST_F(TimerFixture, CancelledTimerDoesNotFire) {
  Timer t(*loop, [this] { ++fired; });
  t.arm(20);
  t.cancel();
  run_for(100);
  EXPECT_EQ(fired, 0);
}

TEST_F(TimerFixture, ArmAfterCancelFiresOnceWithTheNewDelay) {
  Timer t(*loop, [this] { ++fired; });
  t.arm(1000);
  t.cancel();
  t.arm(10);  // before the cancellation completed
  EXPECT_TRUE(t.armed());
  auto start = std::chrono::steady_clock::now();
  run_for(200);
  EXPECT_EQ(fired, 1) << "arm() after cancel() must not be lost";
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(900));
}

TEST_F(TimerFixture, CancelAfterReArmCancelsTheReArm) {
  Timer t(*loop, [this] { ++fired; });
  t.arm(1000);
  t.cancel();
  t.arm(10);
  t.cancel();
  run_for(100);
  EXPECT_EQ(fired, 0);
  EXPECT_FALSE(t.armed());
}

}  // namespace
}  // namespace mirror
