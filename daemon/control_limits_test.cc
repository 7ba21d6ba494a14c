#include "control_limits.h"

#include <gtest/gtest.h>

namespace mirror::control {
namespace {

std::vector<ConnectionView> conns(size_t n, uid_t uid, bool idle = true) {
  return std::vector<ConnectionView>(n, ConnectionView{uid, idle});
}

TEST(ControlLimits, OneUserGetsItsShareAndNoMore) {
  ClientLimits l;
  auto c = conns(l.per_uid - 1, 65534);
  EXPECT_TRUE(admit(c, 65534, l).admit);
  c.push_back({65534, true});
  Admission a = admit(c, 65534, l);
  EXPECT_FALSE(a.admit);
  EXPECT_EQ(a.reason, "too many control connections from uid 65534 (limit 8 per user)");
  // Another user is not refused for it.
  EXPECT_TRUE(admit(c, 1000, l).admit);
}

TEST(ControlLimits, UsersTogetherLeaveRoomForRoot) {
  ClientLimits l;
  std::vector<ConnectionView> c;
  for (uid_t u = 1000; c.size() < l.non_root_total; ++u) {
    for (size_t i = 0; i < l.per_uid; ++i) c.push_back({u, true});
  }
  Admission a = admit(c, 5000, l);
  EXPECT_FALSE(a.admit);
  EXPECT_EQ(a.reason, "too many control connections (limit 48 from users other than root)");
  a = admit(c, 0, l);
  EXPECT_TRUE(a.admit);
  EXPECT_FALSE(a.evict);
}

TEST(ControlLimits, RootEvictsTheOldestIdleUserConnectionWhenFull) {
  ClientLimits l;
  auto c = conns(l.non_root_total, 1000, false);  // all busy or streaming
  c[5].idle = true;
  c[9].idle = true;
  while (c.size() < l.total) c.push_back({0, true});
  Admission a = admit(c, 0, l);
  EXPECT_TRUE(a.admit);
  ASSERT_TRUE(a.evict);
  EXPECT_EQ(*a.evict, 5u);
  // Nothing idle to evict: root is still admitted, past the total.
  c[5].idle = c[9].idle = false;
  a = admit(c, 0, l);
  EXPECT_TRUE(a.admit);
  EXPECT_FALSE(a.evict);
  // Root's own idle connections are never evicted for it.
  EXPECT_FALSE(admit(conns(l.total, 0), 0, l).evict);
}

TEST(ControlLimits, RootHoldingTheSocketRefusesUsers) {
  ClientLimits l;
  Admission a = admit(conns(l.total, 0), 1000, l);
  EXPECT_FALSE(a.admit);
  EXPECT_FALSE(a.reason.empty());
}

TEST(LogRateLimit, OneLinePerIntervalPerKeyWithTheCountLeftOut) {
  LogRateLimit r(1000);
  uint64_t s = 99;
  EXPECT_TRUE(r.allow(65534, 10000, &s));
  EXPECT_EQ(s, 0u);
  for (int i = 0; i < 500; ++i) EXPECT_FALSE(r.allow(65534, 10000 + i, &s));
  EXPECT_TRUE(r.allow(1000, 10100, &s));  // another uid has its own budget
  EXPECT_EQ(s, 0u);
  EXPECT_FALSE(r.allow(65534, 10999, &s));
  EXPECT_TRUE(r.allow(65534, 11000, &s));
  EXPECT_EQ(s, 501u);
  EXPECT_TRUE(r.allow(65534, 12000, &s));
  EXPECT_EQ(s, 0u);
}

TEST(LogRateLimit, ForgettingQuietKeysKeepsRecentOnesLimited) {
  LogRateLimit r(1000);
  uint64_t s = 0;
  for (uint32_t k = 0; k < 100000; ++k) EXPECT_TRUE(r.allow(k, uint64_t(k) * 10, &s));
  // Keys quiet for an interval were forgotten; a recent one is still limited.
  EXPECT_FALSE(r.allow(99999, 999995, &s));
}

}  // namespace
}  // namespace mirror::control
