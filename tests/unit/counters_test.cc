#include "counters.h"

#include <set>
#include <string>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace pipegate::gateway {
namespace {

TEST(Counters, JsonHasEveryCounterOnceWithItsValue) {
  Counters k;
  k.connections_accepted = 3;
  k.refused_pending_opens = 7;
  k.tls_refused.revoked = 2;
  const nlohmann::json json = nlohmann::json::parse(CountersJson(k));
  ASSERT_TRUE(json.is_object());
  EXPECT_EQ(json.at("connections_accepted").get<uint64_t>(), 3u);
  EXPECT_EQ(json.at("refused_pending_opens").get<uint64_t>(), 7u);
  EXPECT_EQ(json.at("tls_revoked").get<uint64_t>(), 2u);
  EXPECT_EQ(json.at("busy").get<uint64_t>(), 0u);
  EXPECT_TRUE(json.contains("log_lines_suppressed"));
  std::set<std::string> names;
  size_t visited = 0;
  VisitCounters(k, 0, [&](std::string_view name, uint64_t, const char* help) {
    ++visited;
    EXPECT_TRUE(names.insert(std::string(name)).second) << name << " appears twice";
    EXPECT_NE(std::string(help), "") << name << " has no help text";
  });
  EXPECT_EQ(json.size(), visited);
  // One field per counter: the struct is made from the same lists as the output.
  EXPECT_EQ(sizeof(Counters), (visited - 1) * sizeof(std::atomic<uint64_t>));
}

}  // namespace
}  // namespace pipegate::gateway
