// Tests of the fault-injecting backend and of PowerLoss: the faults land
// where they are asked for and nowhere else, and a simulated power loss
// leaves exactly the synced writes on the file.
#include "fault_backend.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "file_backend.h"

namespace mirror {
namespace {

constexpr uint64_t kSize = 1 << 20;

struct FaultFixture : ::testing::Test {
  std::unique_ptr<Loop> loop = Loop::create(64).value();
  std::string path;
  std::unique_ptr<FileBackend> file;

  void SetUp() override {
    char tmpl[] = "/tmp/fault_backend_test.XXXXXX";
    int fd = ::mkstemp(tmpl);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, kSize), 0);
    ::close(fd);
    path = tmpl;
    file = std::move(FileBackend::open(*loop, path, {}).value());
  }
  void TearDown() override { ::unlink(path.c_str()); }

  // Runs one operation to completion; returns its result.
  int run(const std::function<void(IoDone*)>& start) {
    int result = 1;
    IoDone* d = FnDone::make([&](int err) {
      result = err;
      loop->stop();
    });
    start(d);
    loop->run();
    return result;
  }
  int write(Backend& b, uint64_t off, uint8_t byte, bool fua = false, uint32_t len = 4096) {
    std::vector<uint8_t> buf(len, byte);
    return run([&](IoDone* d) { b.write(off, len, buf.data(), fua, d); });
  }
  int flush(Backend& b) {
    return run([&](IoDone* d) { b.flush(d); });
  }
  // The file's byte at off (read behind the backends' back).
  uint8_t at(uint64_t off) {
    uint8_t c = 0xee;
    EXPECT_EQ(::pread(file->fd(), &c, 1, off), 1);
    return c;
  }
};

TEST(FaultSpec, ParsesEveryFault) {
  auto s = FaultSpec::parse("write-eio=1M:4K,read-eio=0:512,write-enospc=2G:1M,eio-after=10,"
                            "enospc-after=20,crash-after=5,meta-eio-after=7,meta-delay-ms=3000,"
                            "read-delay-ms=250");
  ASSERT_TRUE(s) << s.error().message;
  ASSERT_EQ(s->write_eio.size(), 1u);
  EXPECT_EQ(s->write_eio[0].off, 1u << 20);
  EXPECT_EQ(s->write_eio[0].len, 4096u);
  EXPECT_EQ(s->write_enospc[0].off, 2ull << 30);
  EXPECT_EQ(s->read_eio[0].len, 512u);
  EXPECT_EQ(s->eio_after, 10u);
  EXPECT_EQ(s->enospc_after, 20u);
  EXPECT_EQ(s->crash_after, 5u);
  EXPECT_EQ(s->meta_eio_after, 7u);
  EXPECT_EQ(s->meta_delay_ms, 3000u);
  EXPECT_EQ(s->read_delay_ms, 250u);
  EXPECT_FALSE(FaultSpec::parse("meta-delay-ms=10")->any_data()) << "metadata only";
  EXPECT_TRUE(FaultSpec::parse("meta-delay-ms=10")->any());
  EXPECT_FALSE(FaultSpec::parse("meta-eio-after=3")->any_data()) << "metadata only";
  EXPECT_TRUE(s->power_loss) << "crash-after implies power-loss tracking";
  EXPECT_EQ(FaultSpec::parse(s->to_string())->to_string(), s->to_string());
  EXPECT_TRUE(FaultSpec::parse("power-loss")->power_loss);
  auto stop = FaultSpec::parse("stop-on-resize");
  ASSERT_TRUE(stop) << stop.error().message;
  EXPECT_TRUE(stop->stop_on_resize);
  EXPECT_TRUE(stop->any());
  EXPECT_FALSE(stop->any_data()) << "the daemon's, not the data path's";
  EXPECT_EQ(stop->to_string(), "stop-on-resize");
  auto det = FaultSpec::parse("stop-on-detach");
  ASSERT_TRUE(det) << det.error().message;
  EXPECT_TRUE(det->stop_on_detach);
  EXPECT_FALSE(det->any_data());
  EXPECT_EQ(det->to_string(), "stop-on-detach");
  auto split = FaultSpec::parse("stop-after-split");
  ASSERT_TRUE(split) << split.error().message;
  EXPECT_TRUE(split->stop_after_split);
  EXPECT_TRUE(split->any());
  EXPECT_FALSE(split->any_data());
  EXPECT_EQ(split->to_string(), "stop-after-split");
  auto delay = FaultSpec::parse("device-call-delay-ms=5000");
  ASSERT_TRUE(delay) << delay.error().message;
  EXPECT_EQ(delay->device_call_delay_ms, 5000u);
  EXPECT_TRUE(delay->any());
  EXPECT_FALSE(delay->any_data()) << "the kernel device's, not the data path's";
  EXPECT_EQ(delay->to_string(), "device-call-delay-ms=5000");
  auto at_step = FaultSpec::parse("power-loss-at-resize=grown");
  ASSERT_TRUE(at_step) << at_step.error().message;
  EXPECT_EQ(at_step->power_loss_at_resize, "grown");
  EXPECT_TRUE(at_step->power_loss) << "the unsynced writes must be tracked to be dropped";
  EXPECT_EQ(at_step->to_string(), "power-loss-at-resize=grown");
  auto stall = FaultSpec::parse("write-stall=1M:4K:11000");
  ASSERT_TRUE(stall) << stall.error().message;
  ASSERT_EQ(stall->write_stall.size(), 1u);
  EXPECT_EQ(stall->write_stall[0].range.off, 1u << 20);
  EXPECT_EQ(stall->write_stall[0].range.len, 4096u);
  EXPECT_EQ(stall->write_stall[0].ms, 11000u);
  EXPECT_TRUE(stall->any_data());
  EXPECT_EQ(stall->to_string(), "write-stall=1048576:4096:11000");
  EXPECT_FALSE(FaultSpec::parse("write-stall=1M:4K"));
  EXPECT_FALSE(FaultSpec::parse("write-stall=1M:4K:0"));
  EXPECT_FALSE(FaultSpec::parse("")->any());
}

TEST(FaultSpec, RefusesBadSpecsWithTheReason) {
  for (const char* bad : {"write-eio=5", "write-eio=x:1", "eio-after=", "eio-after=0",
                          "crash-after=-1", "bogus=1", "write-eio=0:0", "eio-after=3T",
                          "power-loss=1", "device-call-delay-ms=0", "power-loss-at-resize=",
                          "power-loss-at-resize=x"}) {
    auto s = FaultSpec::parse(bad);
    ASSERT_FALSE(s) << bad;
    EXPECT_EQ(s.error().code, EINVAL) << bad;
    EXPECT_NE(s.error().message.find("MIRRORD_FAULTS"), std::string::npos) << s.error().message;
  }
}

TEST_F(FaultFixture, WriteEioHitsOnlyTheRange) {
  FaultSpec spec = FaultSpec::parse("write-eio=64K:4K").value();
  FaultBackend fb(*loop, *file, file->fd(), spec, nullptr);
  EXPECT_EQ(write(fb, 0, 0x11), 0);
  EXPECT_EQ(write(fb, 64 << 10, 0x22), -EIO);
  EXPECT_EQ(write(fb, (64 << 10) - 2048, 0x33), -EIO) << "a write overlapping the range fails";
  EXPECT_EQ(write(fb, 68 << 10, 0x44), 0) << "the next block is fine";
  EXPECT_EQ(at(0), 0x11);
  EXPECT_EQ(at(64 << 10), 0) << "a failed write must not reach the file";
  EXPECT_EQ(at(68 << 10), 0x44);
  EXPECT_EQ(fb.faults_injected(), 2u);
  EXPECT_EQ(run([&](IoDone* d) { fb.zero(60 << 10, 8192, {}, d); }), -EIO);
  EXPECT_EQ(run([&](IoDone* d) { fb.trim(0, 8192, false, d); }), 0);
}

TEST_F(FaultFixture, BadSectorReadsFailUntilAWriteCoversIt) {
  FaultSpec spec = FaultSpec::parse("bad-sector=8K:4K,bad-sector=64K:4K").value();
  EXPECT_TRUE(spec.any_data());
  EXPECT_EQ(spec.to_string(), "bad-sector=8192:4096,bad-sector=65536:4096");
  FaultBackend fb(*loop, *file, file->fd(), spec, nullptr);
  std::vector<uint8_t> buf(16384);
  auto read = [&](uint64_t off, uint32_t len) {
    return run([&](IoDone* d) { fb.read(off, len, buf.data(), d); });
  };
  EXPECT_EQ(read(0, 16384), -EIO) << "a read touching the bad sector fails";
  EXPECT_EQ(read(12288, 4096), 0) << "the next sector is fine";
  EXPECT_EQ(write(fb, 8192, 0x55, false, 2048), 0);
  EXPECT_EQ(read(8192, 4096), -EIO) << "a write covering part of it does not remap it";
  EXPECT_EQ(write(fb, 4096, 0x66, false, 12288), 0);
  EXPECT_EQ(read(0, 16384), 0) << "a write covering it whole remapped it";
  EXPECT_EQ(buf[8192], 0x66);
  EXPECT_EQ(read(65536, 512), -EIO) << "the other bad sector is still bad";
  EXPECT_EQ(run([&](IoDone* d) { fb.zero(65536, 4096, {}, d); }), 0);
  EXPECT_EQ(read(65536, 4096), 0) << "WRITE_ZEROES remaps too";
}

TEST_F(FaultFixture, ReadEioAndCountedFailures) {
  FaultSpec spec = FaultSpec::parse("read-eio=8K:1,eio-after=2").value();
  FaultBackend fb(*loop, *file, file->fd(), spec, nullptr);
  std::vector<uint8_t> buf(4096);
  EXPECT_EQ(run([&](IoDone* d) { fb.read(8192, 4096, buf.data(), d); }), -EIO);
  EXPECT_EQ(run([&](IoDone* d) { fb.read(0, 4096, buf.data(), d); }), 0);
  EXPECT_EQ(write(fb, 0, 1), 0);
  EXPECT_EQ(write(fb, 4096, 2), 0);
  EXPECT_EQ(write(fb, 8192, 3), -EIO) << "the third write fails";
  EXPECT_EQ(write(fb, 0, 4), -EIO) << "and every one after";
  EXPECT_EQ(at(0), 1);
  EXPECT_EQ(flush(fb), 0) << "flush is not a write";

  FaultSpec full = FaultSpec::parse("enospc-after=1,write-enospc=512K:1").value();
  FaultBackend fb2(*loop, *file, file->fd(), full, nullptr);
  EXPECT_EQ(write(fb2, 0, 5), 0);
  EXPECT_EQ(write(fb2, 512 << 10, 5), -ENOSPC);
  EXPECT_EQ(write(fb2, 0, 6), -ENOSPC) << "every write after the first";
}

TEST_F(FaultFixture, DeadAfterFailsEveryRequestOnceTheDiskIsGone) {
  FaultSpec spec = FaultSpec::parse("dead-after=2").value();
  EXPECT_TRUE(spec.any_data());
  EXPECT_EQ(spec.to_string(), "dead-after=2");
  FaultBackend fb(*loop, *file, file->fd(), spec, nullptr);
  std::vector<uint8_t> buf(4096);
  auto read = [&] { return run([&](IoDone* d) { fb.read(0, 4096, buf.data(), d); }); };
  EXPECT_EQ(write(fb, 0, 1), 0);
  EXPECT_EQ(write(fb, 4096, 2), 0);
  EXPECT_EQ(read(), 0) << "alive until the third write";
  EXPECT_EQ(flush(fb), 0);
  EXPECT_EQ(write(fb, 8192, 3), -EIO) << "the third write finds the disk gone";
  EXPECT_EQ(read(), -EIO) << "and so does every read after it";
  EXPECT_EQ(flush(fb), -EIO) << "and every flush";
  EXPECT_EQ(run([&](IoDone* d) { fb.trim(0, 4096, false, d); }), -EIO);
  EXPECT_EQ(run([&](IoDone* d) { fb.zero(0, 4096, {}, d); }), -EIO);
  EXPECT_EQ(at(0), 1) << "what was written before stays";
  EXPECT_EQ(at(8192), 0);
}

TEST_F(FaultFixture, WritebackEioLosesTheWriteAndFailsTheNextFlush) {
  FaultSpec spec = FaultSpec::parse("writeback-eio=8K:4K").value();
  EXPECT_TRUE(spec.any_data());
  EXPECT_EQ(spec.to_string(), "writeback-eio=8192:4096");
  FaultBackend fb(*loop, *file, file->fd(), spec, nullptr);
  EXPECT_EQ(write(fb, 0, 1), 0);
  EXPECT_EQ(write(fb, 8192, 2), 0) << "the write itself succeeds (the page cache took it)";
  EXPECT_EQ(at(8192), 2);
  EXPECT_EQ(flush(fb), -EIO) << "its writeback failed: the flush says so";
  EXPECT_EQ(at(8192), 0) << "and the disk has the old bytes";
  EXPECT_EQ(at(0), 1) << "other writes stay";
  EXPECT_EQ(write(fb, 8192, 3), 0);
  EXPECT_EQ(flush(fb), 0) << "one-shot";
  EXPECT_EQ(at(8192), 3);
}

TEST_F(FaultFixture, PowerLossKeepsSyncedWritesAndDropsTheRest) {
  PowerLoss pl;
  FaultSpec spec = FaultSpec::parse("power-loss").value();
  FaultBackend fb(*loop, *file, file->fd(), spec, &pl);
  EXPECT_EQ(write(fb, 0, 0xa1), 0);
  EXPECT_EQ(flush(fb), 0);
  EXPECT_EQ(pl.unsynced_writes(), 0u) << "a flush covers completed writes";
  EXPECT_EQ(write(fb, 0, 0xb2), 0);            // overwrites a synced write: unsynced
  EXPECT_EQ(write(fb, 8192, 0xc3), 0);         // new data: unsynced
  EXPECT_EQ(write(fb, 16384, 0xd4, true), 0);  // FUA: durable
  EXPECT_EQ(write(fb, 8192, 0xe5), 0);         // overwrites an unsynced write
  EXPECT_EQ(pl.unsynced_writes(), 3u);
  EXPECT_EQ(at(0), 0xb2);
  EXPECT_EQ(pl.restore_for_testing(), 3u * 4096);
  EXPECT_EQ(at(0), 0xa1) << "an unsynced overwrite is rolled back to the synced data";
  EXPECT_EQ(at(8192), 0) << "two unsynced writes: back to what was there before both";
  EXPECT_EQ(at(16384), 0xd4) << "a FUA write survives";

  // A FUA write over unsynced ones: it survives, they are dropped around it.
  EXPECT_EQ(write(fb, 0, 0x11, false, 12288), 0);
  EXPECT_EQ(write(fb, 4096, 0x22, true), 0);
  EXPECT_EQ(pl.unsynced_writes(), 1u);
  EXPECT_EQ(pl.unsynced_bytes(), 8192u) << "the FUA write's range is cut out of the older record";
  pl.restore_for_testing();
  EXPECT_EQ(at(0), 0xa1);
  EXPECT_EQ(at(4096), 0x22);
  EXPECT_EQ(at(8192), 0);
}

TEST_F(FaultFixture, PowerLossAfterAFailedSyncKeepsTheRecords) {
  PowerLoss pl;
  uint64_t id = pl.before_write(file->fd(), 0, 4096);
  ASSERT_EQ(::pwrite(file->fd(), std::string(4096, 'x').data(), 4096, 0), 4096);
  pl.write_done(id);
  uint64_t in_flight = pl.before_write(file->fd(), 4096, 4096);  // not done: no sync covers it
  uint64_t t = pl.sync_started(file->fd());
  pl.sync_done(t, false);
  EXPECT_EQ(pl.unsynced_writes(), 2u) << "a failed sync makes nothing durable";
  t = pl.sync_started(file->fd());
  pl.sync_done(t, true);
  EXPECT_EQ(pl.unsynced_writes(), 1u) << "only the completed write was covered";
  pl.write_done(in_flight);
  EXPECT_EQ(at(0), 'x');
  EXPECT_EQ(pl.restore_for_testing(), 4096u);
  EXPECT_EQ(at(0), 'x');
}

// A file extended for a resize: its new length survives a power loss only
// once a sync (a flush, or a FUA write's) covered the extension.
TEST_F(FaultFixture, PowerLossCutsAnUnsyncedExtensionBack) {
  const int fd = file->fd();
  auto length = [&] {
    struct stat st {};
    EXPECT_EQ(::fstat(fd, &st), 0);
    return uint64_t(st.st_size);
  };
  auto extend = [&](PowerLoss& pl, uint64_t to) {
    const uint64_t was = length();
    ASSERT_EQ(::ftruncate(fd, off_t(to)), 0);
    pl.extended(fd, was);
  };
  auto write_at = [&](PowerLoss& pl, uint64_t off) {
    uint64_t id = pl.before_write(fd, off, 4096);
    EXPECT_EQ(::pwrite(fd, std::string(4096, 'n').data(), 4096, off), 4096);
    pl.write_done(id);
    return id;
  };
  {
    PowerLoss pl;
    extend(pl, 2 * kSize);
    write_at(pl, kSize + 8192);  // into the new area, unsynced
    pl.restore_for_testing();
    EXPECT_EQ(length(), kSize) << "an extension no sync covered is lost";
  }
  {
    PowerLoss pl;
    extend(pl, 2 * kSize);
    pl.sync_done(pl.sync_started(fd), true);
    EXPECT_EQ(pl.unsynced_writes(), 0u);
    write_at(pl, kSize + 8192);
    pl.restore_for_testing();
    EXPECT_EQ(length(), 2 * kSize) << "a synced extension stays";
    EXPECT_EQ(at(kSize + 8192), 0) << "the unsynced write into it does not";
  }
  ASSERT_EQ(::ftruncate(fd, kSize), 0);
  {
    PowerLoss pl;
    extend(pl, 2 * kSize);
    pl.write_durable(write_at(pl, kSize + 8192));  // FUA: its fdatasync writes the size
    pl.restore_for_testing();
    EXPECT_EQ(length(), 2 * kSize);
    EXPECT_EQ(at(kSize + 8192), 'n');
  }
  {
    PowerLoss pl;
    extend(pl, 3 * kSize);
    uint64_t t = pl.sync_started(fd);
    pl.sync_done(t, false);
    pl.restore_for_testing();
    EXPECT_EQ(length(), 2 * kSize) << "a failed sync leaves the extension unsynced";
  }
}

// The inner backend of the crash test: plain pread/pwrite/fdatasync on an
// fd (the forked child cannot use the parent's ring or take the file lock).
class PwriteBackend final : public Backend {
 public:
  PwriteBackend(Loop& loop, int fd) : loop_(loop), fd_(fd) {}
  uint64_t size() const override { return kSize; }
  bool read_only() const override { return false; }
  bool can_trim() const override { return false; }
  void read(uint64_t off, uint32_t len, uint8_t* buf, IoDone* d) override {
    later(d, ::pread(fd_, buf, len, off) == ssize_t(len) ? 0 : -EIO);
  }
  void write(uint64_t off, uint32_t len, const uint8_t* buf, bool, IoDone* d) override {
    later(d, ::pwrite(fd_, buf, len, off) == ssize_t(len) ? 0 : -EIO);
  }
  void flush(IoDone* d) override { later(d, ::fdatasync(fd_) == 0 ? 0 : -EIO); }
  void trim(uint64_t, uint32_t, bool, IoDone* d) override { later(d, -ENOTSUP); }
  void zero(uint64_t, uint32_t, ZeroFlags, IoDone* d) override { later(d, -ENOTSUP); }
  void cache(uint64_t, uint32_t, IoDone* d) override { later(d, 0); }
  void block_status(uint64_t, uint32_t, uint32_t, std::vector<nbd::Extent>*, IoDone* d) override {
    later(d, -ENOTSUP);
  }

 private:
  void later(IoDone* d, int err) { loop_.defer([d, err] { d->io_done(err); }); }
  Loop& loop_;
  int fd_;
};

TEST_F(FaultFixture, CrashAfterKillsTheProcessWithOnlySyncedDataLeft) {
  FaultSpec spec = FaultSpec::parse("crash-after=2").value();
  EXPECT_EXIT(
      {
        loop = Loop::create(8).value();
        PwriteBackend inner(*loop, file->fd());
        PowerLoss pl;
        FaultBackend fb(*loop, inner, file->fd(), spec, &pl);
        if (write(fb, 0, 0x5a) != 0 || flush(fb) != 0 || write(fb, 4096, 0x6b) != 0) std::exit(1);
        write(fb, 8192, 0x7c);  // the third write: crash before it is issued
        std::exit(0);
      },
      ::testing::KilledBySignal(SIGKILL), "simulated power loss");
  EXPECT_EQ(at(0), 0x5a);
  EXPECT_EQ(at(4096), 0) << "the unsynced second write was dropped";
  EXPECT_EQ(at(8192), 0);
}

}  // namespace
}  // namespace mirror
