// Connection admission and the [limits] mapping: src/connection_limits.cc.

#include "connection_limits.h"

#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "pipegate/frame.h"

namespace pipegate {
namespace {

TEST(SourceKey, IsTheAddressWithoutThePort) {
  EXPECT_EQ(SourceKey("127.0.0.1:4000"), "127.0.0.1");
  EXPECT_EQ(SourceKey("10.1.2.3:1"), "10.1.2.3");
  EXPECT_EQ(SourceKey("?"), "?");
  EXPECT_EQ(SourceKey(""), "");
}

TEST(SourceKey, GroupsIpv6ByItsSlash64) {
  EXPECT_EQ(SourceKey("[2001:db8:1:2:3:4:5:6]:7445"), "2001:db8:1:2::/64");
  EXPECT_EQ(SourceKey("[2001:db8:1:2:ffff::1]:1"), "2001:db8:1:2::/64");
  EXPECT_NE(SourceKey("[2001:db8:1:3::1]:1"), SourceKey("[2001:db8:1:2::1]:1"));
  EXPECT_EQ(SourceKey("[::1]:5"), "::/64");
}

TEST(SourceKey, MappedIpv4CountsAsIpv4) {
  EXPECT_EQ(SourceKey("[::ffff:192.0.2.7]:9"), "192.0.2.7");
}

Limits SmallLimits() {
  Limits l;
  l.max_connections = 5;
  l.max_connections_per_source = 2;
  l.max_bytes_in_flight_per_connection = 1 << 20;
  l.max_bytes_in_flight = 4 << 20;  // Four connections' windows.
  return l;
}

TEST(ConnectionLimiter, AdmitsUpToThePerSourceLimit) {
  ConnectionLimiter limiter;
  const Limits l = SmallLimits();
  auto a = limiter.Admit("10.0.0.1:1", l);
  auto b = limiter.Admit("10.0.0.1:2", l);
  auto c = limiter.Admit("10.0.0.1:3", l);
  EXPECT_EQ(a.outcome, ConnectionLimiter::Outcome::kAdmitted);
  EXPECT_EQ(b.outcome, ConnectionLimiter::Outcome::kAdmitted);
  EXPECT_EQ(c.outcome, ConnectionLimiter::Outcome::kPerSource);
  EXPECT_EQ(c.reason, "too many connections from 10.0.0.1 (limit 2)");
  EXPECT_EQ(c.token, nullptr);
  EXPECT_EQ(limiter.from("10.0.0.1"), 2u);
  // Another source is unaffected.
  EXPECT_EQ(limiter.Admit("10.0.0.2:1", l).outcome, ConnectionLimiter::Outcome::kAdmitted);
}

TEST(ConnectionLimiter, DroppingTheTokenGivesTheSlotBack) {
  ConnectionLimiter limiter;
  const Limits l = SmallLimits();
  auto a = limiter.Admit("10.0.0.1:1", l);
  auto b = limiter.Admit("10.0.0.1:2", l);
  EXPECT_EQ(limiter.total(), 2u);
  std::shared_ptr<const void> copy = a.token;  // Connections copy their options.
  a.token.reset();
  EXPECT_EQ(limiter.total(), 2u);
  copy.reset();
  EXPECT_EQ(limiter.total(), 1u);
  EXPECT_EQ(limiter.from("10.0.0.1"), 1u);
  EXPECT_EQ(limiter.Admit("10.0.0.1:3", l).outcome, ConnectionLimiter::Outcome::kAdmitted);
  b.token.reset();
}

TEST(ConnectionLimiter, RefusedAdmissionsLeaveNoTrace) {
  ConnectionLimiter limiter;
  Limits l = SmallLimits();
  l.max_connections = 1;
  auto a = limiter.Admit("10.0.0.1:1", l);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(limiter.Admit("10.9.0." + std::to_string(i) + ":1", l).outcome,
              ConnectionLimiter::Outcome::kTotal);
  }
  EXPECT_EQ(limiter.total(), 1u);
  EXPECT_EQ(limiter.from("10.9.0.1"), 0u);
}

TEST(ConnectionLimiter, TotalAndMemoryLimits) {
  ConnectionLimiter limiter;
  Limits l = SmallLimits();
  l.max_connections_per_source = 100;
  std::vector<ConnectionLimiter::Admission> held;
  for (int i = 0; i < 4; ++i) held.push_back(limiter.Admit("10.0.0.1:1", l));
  for (auto& h : held) EXPECT_EQ(h.outcome, ConnectionLimiter::Outcome::kAdmitted);
  // A fifth connection fits max_connections (5) but not max_bytes_in_flight (4 windows).
  auto memory = limiter.Admit("10.0.0.1:1", l);
  EXPECT_EQ(memory.outcome, ConnectionLimiter::Outcome::kMemory);
  EXPECT_NE(memory.reason.find("max_bytes_in_flight"), std::string::npos) << memory.reason;
  l.max_bytes_in_flight = 64 << 20;
  held.push_back(limiter.Admit("10.0.0.1:1", l));
  EXPECT_EQ(held.back().outcome, ConnectionLimiter::Outcome::kAdmitted);
  auto total = limiter.Admit("10.0.0.3:1", l);
  EXPECT_EQ(total.outcome, ConnectionLimiter::Outcome::kTotal);
  EXPECT_EQ(total.reason, "too many connections (limit 5)");
}

TEST(ConnectionLimiter, TokensMayOutliveTheLimiter) {
  std::shared_ptr<const void> token;
  {
    ConnectionLimiter limiter;
    ConnectionLimiter::Admission admitted = limiter.Admit("10.0.0.1:1", SmallLimits());
    ASSERT_EQ(admitted.outcome, ConnectionLimiter::Outcome::kAdmitted);
    token = std::move(admitted.token);
    ASSERT_NE(token, nullptr);
  }
  token.reset();  // Must not touch the freed limiter's state (ASan would report it).
}

TEST(LimitsMapping, MuxOptionsFollowTheLimits) {
  Limits l;
  l.max_streams_per_connection = 7;
  l.max_frame_size = 16384;
  l.max_bytes_in_flight_per_connection = 256 * 1024;
  MuxOptions m = MuxOptionsFor(l);
  EXPECT_FALSE(m.is_client);
  EXPECT_EQ(m.max_streams, 7u);
  EXPECT_EQ(m.max_frame_payload, 16384u + kDataPrefixSize);
  EXPECT_EQ(m.session_window, 256u * 1024);
  EXPECT_EQ(m.stream_window, 256u * 1024);  // Never above the session window.

  l.max_frame_size = (1u << 20) - 8;
  l.max_bytes_in_flight_per_connection = 64u << 20;
  m = MuxOptionsFor(l);
  EXPECT_EQ(m.max_frame_payload, kMaxFramePayloadLimit);
  EXPECT_EQ(m.stream_window, MuxOptions{}.stream_window);
}

TEST(LimitsMapping, ConnectionOptionsCarryTheTimers) {
  Limits l;
  l.handshake_timeout_ms = 1500;
  l.idle_timeout_ms = 30000;
  uvglue::ConnectionOptions o = ConnectionOptionsFor(l);
  EXPECT_EQ(o.handshake_timeout_ms, 1500u);
  EXPECT_EQ(o.idle_timeout_ms, 30000u);
  EXPECT_EQ(o.mux.max_streams, l.max_streams_per_connection);
  EXPECT_EQ(o.admission, nullptr);
}

}  // namespace
}  // namespace pipegate
