// What `mirrorctl status` prints for the device, from the daemon's own JSON
// (status_to_json), so the two ends of the schema are tested together.
#include "status_render.h"

#include <gtest/gtest.h>

#include "status_json.h"

namespace mirror {
namespace {

VolumeStatus volume() {
  VolumeStatus v;
  v.volume = "db";
  v.node = "alpha";
  v.peer = "beta";
  v.role = Role::kPrimary;
  v.link = "connected";
  v.state = "synchronized";
  v.size = 64 << 20;
  return v;
}

TEST(StatusRender, DeviceLine) {
  DeviceStatus d;
  d.path = "/dev/nbd0";
  d.api = "netlink";
  d.connections = 4;
  d.state = "attached";
  d.reattached = true;
  nlohmann::json j = status_to_json(volume(), &d);
  EXPECT_EQ(j["device"]["path"], "/dev/nbd0");
  EXPECT_EQ(j["device"]["connections"], 4);
  EXPECT_EQ(j["device"]["reattached"], true);
  std::string out = render_status(j, false);
  EXPECT_NE(out.find("  device           /dev/nbd0 (attached, 4 connections, netlink, "
                     "re-attached after a restart)\n"),
            std::string::npos)
      << out;
}

TEST(StatusRender, ReadOnlyDeadDevice) {
  DeviceStatus d;
  d.path = "/dev/nbd1";
  d.api = "ioctl";
  d.connections = 1;
  d.state = "dead";
  d.read_only = true;
  std::string out = render_status(status_to_json(volume(), &d), false);
  EXPECT_NE(out.find("/dev/nbd1 (dead, 1 connection, ioctl, read-only)"), std::string::npos) << out;
}

TEST(StatusRender, SplitBrainSaysHowToResolve) {
  VolumeStatus v = volume();
  v.state = "split-brain";
  v.last_error = "split brain: both nodes are primary";
  std::string out = render_status(status_to_json(v), false);
  EXPECT_NE(out.find("last error       split brain: both nodes are primary\n"), std::string::npos)
      << out;
  EXPECT_NE(out.find("run `mirrorctl discard-my-data`"), std::string::npos) << out;
  EXPECT_EQ(render_status(status_to_json(volume()), false).find("to resolve"), std::string::npos);
}

TEST(StatusRender, NoDeviceNoLine) {
  nlohmann::json j = status_to_json(volume());
  EXPECT_TRUE(j["device"].is_null());
  EXPECT_EQ(render_status(j, false).find("device"), std::string::npos);
}

TEST(StatusRender, TrimLineOnlyWhenNotApplied) {
  VolumeStatus v = volume();
  nlohmann::json j = status_to_json(v);
  EXPECT_EQ(j["trim"], "applied");
  EXPECT_EQ(render_status(j, false).find("trim"), std::string::npos);
  v.trim = "peer-store-cannot-punch";
  std::string out = render_status(status_to_json(v), false);
  EXPECT_NE(out.find("not applied: the peer's backing store cannot punch holes"), std::string::npos)
      << out;
  v.trim = "local-store-cannot-punch";
  out = render_status(status_to_json(v), false);
  EXPECT_NE(out.find("not applied: this node's backing store cannot punch holes"), std::string::npos)
      << out;
}

TEST(StatusRender, ReadErrorsLineOnlyOnceThePeerAnsweredOne) {
  VolumeStatus v = volume();
  nlohmann::json j = status_to_json(v);
  EXPECT_EQ(j["reads_from_peer"], 0);
  EXPECT_EQ(j["read_repairs"], 0);
  EXPECT_EQ(render_status(j, false).find("read errors"), std::string::npos);
  v.reads_from_peer = 3;
  v.read_repairs = 2;
  std::string out = render_status(status_to_json(v), false);
  EXPECT_NE(out.find("3 reads this disk failed answered by the peer's copy; 2 rewritten here"),
            std::string::npos)
      << out;
}

TEST(StatusRender, DisklessAndPeerDiskFailedLines) {
  VolumeStatus v = volume();
  nlohmann::json j = status_to_json(v);
  EXPECT_EQ(j["disk"], "ok");
  EXPECT_EQ(j["peer_disk_failed"], false);
  std::string out = render_status(j, false);
  EXPECT_EQ(out.find("disk  "), std::string::npos) << out;
  v.disk = "diskless";
  out = render_status(status_to_json(v), false);
  EXPECT_NE(out.find("FAILED and detached (diskless): every read and write is served by " +
                     v.peer + "'s copy"),
            std::string::npos)
      << out;
  v.disk = "ok";
  v.peer_disk_failed = true;
  out = render_status(status_to_json(v), false);
  EXPECT_NE(out.find("this copy is the only current one"), std::string::npos) << out;
}

TEST(StatusRender, Handlers) {
  VolumeStatus v = volume();
  nlohmann::json none = status_to_json(v);
  EXPECT_TRUE(none["handlers"]["before_resync_target"].is_null());
  EXPECT_TRUE(none["handlers"]["after_resync_target"].is_null());
  EXPECT_EQ(render_status(none, false).find("resync  "), std::string::npos);
  v.before_resync_target.program = "/etc/mirrord/snap";
  v.before_resync_target.runs = 2;
  v.before_resync_target.last_result = "exit 3";
  v.after_resync_target.program = "/etc/mirrord/unsnap";
  nlohmann::json j = status_to_json(v);
  EXPECT_EQ(j["handlers"]["before_resync_target"]["runs"], 2);
  EXPECT_EQ(j["handlers"]["before_resync_target"]["last_result"], "exit 3");
  EXPECT_TRUE(j["handlers"]["after_resync_target"]["last_result"].is_null());
  std::string out = render_status(j, false);
  EXPECT_NE(out.find("/etc/mirrord/snap: last run exit 3 (2 runs since start)"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("/etc/mirrord/unsnap: not run yet (0 runs since start)"), std::string::npos)
      << out;
}

TEST(StatusRender, VerifyRunningAndFinished) {
  VolumeStatus v = volume();
  nlohmann::json none = status_to_json(v);
  EXPECT_TRUE(none["verify"].is_null());
  EXPECT_EQ(render_status(none, false).find("verify"), std::string::npos);

  v.verify.run = 3;
  v.verify.running = true;
  v.verify.result = "running";
  v.verify.total_bytes = 64 << 20;
  v.verify.done_bytes = 16 << 20;
  v.verify.rate_bps = 8 << 20;
  v.verify.out_of_sync_bytes = 2 * 65536;
  v.verify.out_of_sync_regions = 2;
  nlohmann::json j = status_to_json(v);
  EXPECT_EQ(j["verify"]["run"], 3);
  EXPECT_EQ(j["verify"]["out_of_sync_bytes"], 131072);
  std::string out = render_status(j, false);
  EXPECT_NE(out.find("  verify           25.0% of 64.0 MiB, 8.0 MiB/s, 128.0 KiB out of sync in 2 "
                     "regions (resynced from the primary)\n"),
            std::string::npos)
      << out;

  v.verify.running = false;
  v.verify.result = "failed: the link was lost";
  out = render_status(status_to_json(v), false);
  EXPECT_NE(out.find("  last verify      failed: the link was lost "), std::string::npos) << out;
  EXPECT_NE(out.find(": 16.0 MiB of 64.0 MiB compared, 128.0 KiB out of sync in 2 regions"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("unreadable"), std::string::npos) << "no read error, no words about it";

  v.verify.repaired_bytes = 1 << 20;
  v.verify.peer_unreadable_bytes = 2 << 20;
  v.verify.unreadable_bytes = 3 << 20;
  j = status_to_json(v);
  EXPECT_EQ(j["verify"]["repaired_bytes"], 1 << 20);
  EXPECT_EQ(j["verify"]["peer_unreadable_bytes"], 2 << 20);
  EXPECT_EQ(j["verify"]["unreadable_bytes"], 3 << 20);
  out = render_status(j, false);
  EXPECT_NE(out.find("; 1.0 MiB unreadable here, rewritten from the peer's copy; 2.0 MiB "
                     "unreadable on the peer, resynced there; 3.0 MiB unreadable here and not "
                     "repaired (not compared)"),
            std::string::npos)
      << out;
}

}  // namespace
}  // namespace mirror
