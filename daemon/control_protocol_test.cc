// parse_request: the checks every control request passes before a command
// sees it (docs/control-protocol.md).
#include "control_protocol.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <string>

namespace mirror::control {
namespace {

TEST(ParseRequest, AcceptsAWellFormedRequest) {
  auto r = parse_request(R"({"version":1,"command":"rejoin","args":{"wait":true}})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->spec->name, "rejoin");
  EXPECT_EQ(r->args.value("wait", false), true);
}

TEST(ParseRequest, RefusesAKeyGivenTwice) {
  // Which one a JSON parser keeps is up to it: never guessed.
  for (const char* line : {R"({"version":1,"command":"status","command":"demote"})",
                           R"({"version":1,"command":"rejoin","args":{"wait":false,"wait":true}})"}) {
    SCOPED_TRACE(line);
    auto r = parse_request(line);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, EINVAL);
    EXPECT_NE(r.error().message.find("given twice"), std::string::npos) << r.error().message;
  }
}

TEST(ParseRequest, TheSameKeyInTwoObjectsIsNoDuplicate) {
  auto r = parse_request(R"({"version":1,"command":"status","args":{"version":1}})");
  ASSERT_FALSE(r);  // "version" is no argument of status...
  EXPECT_EQ(r.error().message.find("given twice"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace mirror::control
