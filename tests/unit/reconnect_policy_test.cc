#include "reconnect_policy.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <gtest/gtest.h>

namespace pipegate::bridge {
namespace {

// A random source that returns the given values in turn.
ReconnectPolicy::Random Sequence(std::vector<uint64_t> values) {
  auto next = std::make_shared<size_t>(0);
  return [values, next] { return values[(*next)++ % values.size()]; };
}

TEST(ReconnectPolicy, DoublesFrom250MsToThirtySeconds) {
  ReconnectPolicy policy([] { return uint64_t{0}; });
  policy.Lost(1000);
  std::vector<uint64_t> lows;
  for (int i = 0; i < 10; ++i) lows.push_back(*policy.NextDelay(1000, 3600000));
  // With random 0 every delay is backoff - 25 %.
  EXPECT_EQ(lows,
            (std::vector<uint64_t>{188, 375, 750, 1500, 3000, 6000, 12000, 22500, 22500, 22500}));
}

TEST(ReconnectPolicy, JitterStaysWithinAQuarterEitherWay) {
  ReconnectPolicy low([] { return uint64_t{0}; });
  ReconnectPolicy high([] { return UINT64_MAX; });
  low.Lost(0);
  high.Lost(0);
  uint64_t backoff = ReconnectPolicy::kFirstDelayMs;
  for (int i = 0; i < 12; ++i) {
    const uint64_t l = *low.NextDelay(0, 3600000);
    const uint64_t h = *high.NextDelay(0, 3600000);
    EXPECT_GE(l, backoff - backoff / 4) << i;
    EXPECT_LE(h, backoff + backoff / 4) << i;
    EXPECT_LE(l, h) << i;
    backoff = std::min(backoff * 2, ReconnectPolicy::kMaxDelayMs);
  }
}

TEST(ReconnectPolicy, GivesUpAtTheLimitAndNeverSleepsPastIt) {
  ReconnectPolicy policy(Sequence({12345}));
  policy.Lost(10000);
  std::optional<uint64_t> d = policy.NextDelay(10000, 100);
  ASSERT_TRUE(d);
  EXPECT_LE(*d, 100u);  // 250 ms would pass the 100 ms limit: cut to what is left.
  EXPECT_EQ(policy.NextDelay(10050, 100), std::optional<uint64_t>(50));
  EXPECT_EQ(policy.NextDelay(10100, 100), std::nullopt);
  EXPECT_EQ(policy.lost_at_ms(), 10000u);
}

TEST(ReconnectPolicy, ALossOrARestartStartsTheBackoffOver) {
  ReconnectPolicy policy([] { return uint64_t{0}; });
  policy.Lost(0);
  for (int i = 0; i < 5; ++i) policy.NextDelay(0, 3600000);
  policy.Restart();
  EXPECT_EQ(policy.NextDelay(0, 3600000), std::optional<uint64_t>(188));
  EXPECT_EQ(policy.lost_at_ms(), 0u);  // Restart keeps the deadline running.
  for (int i = 0; i < 5; ++i) policy.NextDelay(0, 3600000);
  policy.Lost(5000);
  EXPECT_EQ(policy.NextDelay(5000, 3600000), std::optional<uint64_t>(188));
}

}  // namespace
}  // namespace pipegate::bridge
