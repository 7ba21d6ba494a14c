// FileLock: one writer per file, shared readers, and a lock that is free the
// moment its owner is gone, even when the file went through io_uring.
#include "file_lock.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "file_backend.h"
#include "uring.h"

namespace mirror {
namespace {

struct FileLockTest : ::testing::Test {
  std::string path;
  UniqueFd fd;

  void SetUp() override {
    char tmpl[] = "/tmp/file_lock_test.XXXXXX";
    int f = ::mkstemp(tmpl);
    ASSERT_GE(f, 0);
    ASSERT_EQ(::ftruncate(f, 1 << 20), 0);
    fd.reset(f);
    path = tmpl;
  }
  void TearDown() override { ::unlink(path.c_str()); }

  Result<FileLock> lock(int op, int patience_ms = 0) {
    return FileLock::acquire(path, fd.get(), op, "backing file", patience_ms);
  }
};

TEST_F(FileLockTest, SecondWriterIsRefusedByName) {
  auto first = lock(LOCK_EX);
  ASSERT_TRUE(first.ok()) << first.error().to_string();
  auto second = lock(LOCK_EX);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, EBUSY);
  EXPECT_EQ(second.error().message, "backing file " + path + " is in use by another process");
  EXPECT_FALSE(lock(LOCK_SH).ok()) << "a reader must not open a file a writer holds";
}

TEST_F(FileLockTest, ReadersShareAndKeepWritersOut) {
  auto a = lock(LOCK_SH);
  auto b = lock(LOCK_SH);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(lock(LOCK_EX).ok());
}

TEST_F(FileLockTest, FreeAsSoonAsTheOwnerIsGone) {
  { auto held = lock(LOCK_EX); ASSERT_TRUE(held.ok()); }
  EXPECT_TRUE(lock(LOCK_EX).ok());
}

TEST_F(FileLockTest, WaitsForALockReleasedDuringThePatience) {
  auto held = std::make_unique<Result<FileLock>>(lock(LOCK_EX));
  ASSERT_TRUE(held->ok());
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    held.reset();
  });
  auto later = lock(LOCK_EX, 5000);
  release.join();
  EXPECT_TRUE(later.ok());
}

TEST_F(FileLockTest, APathReplacedBetweenTheOpensIsRefused) {
  std::string other = path + ".new";
  { UniqueFd f(::open(other.c_str(), O_CREAT | O_WRONLY, 0600)); }
  ASSERT_EQ(::rename(other.c_str(), path.c_str()), 0);  // fd still names the old inode
  auto r = lock(LOCK_EX);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EBUSY);
  EXPECT_NE(r.error().message.find("replaced"), std::string::npos) << r.error().message;
}

// The regression: a backend that wrote and synced through io_uring (fsync
// runs on an io-wq worker, which may drop the last file reference long after
// close) must not leave its file locked once it is destroyed.
TEST_F(FileLockTest, ABackendThatSyncedThroughIoUringFreesItsLockOnDestruction) {
  auto loop = Loop::create(64).value();
  for (int round = 0; round < 100; ++round) {
    auto be = FileBackend::open(*loop, path, {});
    ASSERT_TRUE(be.ok()) << "round " << round << ": " << be.error().to_string();
    std::vector<uint8_t> buf(4096, uint8_t(round));
    int pending = 2;
    auto done = [&](int err) {
      EXPECT_EQ(err, 0);
      if (--pending == 0) loop->stop();
    };
    (*be)->write(0, buf.size(), buf.data(), true, FnDone::make(done));
    (*be)->flush(FnDone::make(done));
    loop->run();
    std::move(be).value().reset();
    auto again = lock(LOCK_EX);
    ASSERT_TRUE(again.ok()) << "round " << round << ": " << again.error().to_string();
  }
}

}  // namespace
}  // namespace mirror
