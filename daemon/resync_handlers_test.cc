// Tests of ResyncHandlers' before-resync-target rules: a failed run keeps
// refusing resyncs and is tried again no more often than every kRetryMs,
// unless the primary's operator asks for a retry now (mirrorctl rejoin).
// Time is the now_ms the caller passes, so no test sleeps for the period;
// the handler is a real program (a script that exits 3, or 0).
#include "resync_handlers.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <string>

#include "bitmap_test_util.h"
#include "clock.h"

namespace mirror {
namespace {

using bitmap_testing::make_loop;
using bitmap_testing::TempDir;

class ResyncHandlersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    script_ = dir_.file("before.sh");
    rc_file_ = dir_.file("before.rc");
    std::ofstream(script_) << "#!/bin/sh\nexit $(cat " << rc_file_ << ")\n";
    ::chmod(script_.c_str(), 0755);
    set_exit(3);
    cfg_.name = "db";
    cfg_.before_resync_target = script_;
    self_.name = "beta";
    self_.backing = dir_.file("beta.img");
    peer_.name = "alpha";
    handlers_ = std::make_unique<ResyncHandlers>(*loop_, cfg_, self_, peer_,
                                                 [this](std::function<void(int)> done) {
                                                   ++flushes_;
                                                   done(flush_err_);
                                                 });
  }
  void TearDown() override {
    handlers_->stop();
    handlers_.reset();
  }
  void set_exit(int rc) { std::ofstream(rc_file_) << rc << "\n"; }
  // Runs the loop until the running handler exited.
  void wait_handler() {
    std::unique_ptr<Timer> poll;
    poll = std::make_unique<Timer>(*loop_, [&] {
      if (!handlers_->before_status().running) return loop_->stop();
      poll->arm(5);
    });
    poll->arm(1);
    loop_->run();
  }
  uint64_t runs() const { return handlers_->before_status().runs; }

  TempDir dir_;
  std::unique_ptr<Loop> loop_ = make_loop();
  std::string script_, rc_file_;
  VolumeConfig cfg_;
  NodeConfig self_, peer_;
  std::unique_ptr<ResyncHandlers> handlers_;
  const ResyncHandlers::CopyMark mark_{7, 0, 0};
  int flushes_ = 0;
  int flush_err_ = 0;
};

TEST_F(ResyncHandlersTest, FailedRunIsRetriedEveryPeriodOnly) {
  uint64_t t0 = mono_ms();
  std::string why = handlers_->before_resync("bitmap", 4096, mark_, t0, false);
  EXPECT_NE(why.find("is running"), std::string::npos) << why;
  EXPECT_EQ(flushes_, 1);
  EXPECT_EQ(runs(), 1u);
  wait_handler();
  uint64_t failed = mono_ms();  // at or after the failure
  EXPECT_EQ(handlers_->before_status().last_result, "exit 3");
  EXPECT_NE(handlers_->failure().find("failed (exit 3)"), std::string::npos);
  EXPECT_EQ(handlers_->failures(), 1u);

  // Within the period: refused with the failure, not run again.
  why = handlers_->before_resync("bitmap", 4096, mark_, failed + 1000, false);
  EXPECT_NE(why.find("failed (exit 3)"), std::string::npos) << why;
  EXPECT_NE(why.find("retried in"), std::string::npos) << why;
  uint64_t after = handlers_->retry_after_ms(failed + 1000);
  EXPECT_GE(after, ResyncHandlers::kRetryMs - 1000 - (mono_ms() - t0));
  EXPECT_LE(after, ResyncHandlers::kRetryMs - 1000);
  why = handlers_->before_resync("bitmap", 4096, mark_, failed + ResyncHandlers::kRetryMs - 1000,
                                 false);
  EXPECT_NE(why.find("failed (exit 3)"), std::string::npos) << why;
  EXPECT_EQ(runs(), 1u);
  EXPECT_EQ(flushes_, 1);

  // Once the period is over: run again (the copy flushed first).
  set_exit(0);
  why = handlers_->before_resync("bitmap", 4096, mark_, failed + ResyncHandlers::kRetryMs + 1,
                                 false);
  EXPECT_NE(why.find("is running"), std::string::npos) << why;
  EXPECT_EQ(runs(), 2u);
  EXPECT_EQ(flushes_, 2);
  wait_handler();
  EXPECT_TRUE(handlers_->failure().empty());
  // It exited 0 for this copy: the plan goes ahead, once.
  EXPECT_EQ(handlers_->before_resync("bitmap", 4096, mark_, mono_ms(), false), "");
}

TEST_F(ResyncHandlersTest, OperatorRetryRunsAtOnce) {
  handlers_->before_resync("full", 4096, mark_, mono_ms(), false);
  wait_handler();
  uint64_t failed = mono_ms();
  ASSERT_FALSE(handlers_->failure().empty());
  set_exit(0);
  // One second later the automatic retry is 29 s away; the operator's is now.
  std::string why = handlers_->before_resync("full", 4096, mark_, failed + 1000, true);
  EXPECT_NE(why.find("is running"), std::string::npos) << why;
  EXPECT_EQ(runs(), 2u);
  wait_handler();
  EXPECT_EQ(handlers_->before_resync("full", 4096, mark_, mono_ms(), false), "");
}

TEST_F(ResyncHandlersTest, RunningRefusalAsksForARetryLaterAndLater) {
  set_exit(0);
  uint64_t t0 = mono_ms();
  handlers_->before_resync("bitmap", 4096, mark_, t0, false);
  // A run that just started: back in a second; one that ran long: at most
  // kRetryRunningMaxMs.
  EXPECT_EQ(handlers_->retry_after_ms(t0), 1000u);
  // (It started at t0 or a millisecond or two after.)
  EXPECT_NEAR(double(handlers_->retry_after_ms(t0 + 4000)), 4000.0, 50.0);
  EXPECT_EQ(handlers_->retry_after_ms(t0 + 600000), ResyncHandlers::kRetryRunningMaxMs);
  wait_handler();
}

TEST_F(ResyncHandlersTest, SuccessVouchesOnlyForItsPlanKind) {
  set_exit(0);
  handlers_->before_resync("bitmap", 4096, mark_, mono_ms(), false);
  wait_handler();
  // Its snapshot was sized for a bitmap resync: a full one runs it again.
  std::string why = handlers_->before_resync("full", 64 << 20, mark_, mono_ms(), false);
  EXPECT_NE(why.find("is running"), std::string::npos) << why;
  EXPECT_EQ(runs(), 2u);
  wait_handler();
  EXPECT_EQ(handlers_->before_resync("full", 64 << 20, mark_, mono_ms(), false), "");
}

TEST_F(ResyncHandlersTest, FailedFlushStartsNothing) {
  flush_err_ = -EIO;
  std::string why = handlers_->before_resync("bitmap", 4096, mark_, mono_ms(), false);
  EXPECT_NE(why.find("cannot flush this copy"), std::string::npos) << why;
  EXPECT_FALSE(handlers_->before_status().running);
  EXPECT_EQ(handlers_->failures(), 1u);
  EXPECT_NE(handlers_->before_status().last_result.find("not started"), std::string::npos);
}

}  // namespace
}  // namespace mirror
