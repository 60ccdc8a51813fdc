// Loop tests of the shared once-a-second tick (src/uv/ticker.h) on real loops: a loop whose only
// periodic work is ticks sleeps without a timeout, subscribers may come and go inside a tick,
// lateness is measured, and without a timerfd a libuv timer takes over. Each test waits for at
// most a few ticks and ends with Loop::Close() true (the ticker closed itself).

#include "uv/ticker.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <uv.h>

namespace pipegate::uvglue {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

TEST(Ticker, ALoopWithOnlyTicksSleepsWithoutATimeoutAndEndsWhenTheyStop) {
  Loop loop;
  std::vector<double> at;
  const auto t0 = Clock::now();
  std::unique_ptr<Ticks> ticks;
  ticks = std::make_unique<Ticks>(loop, [&](uint64_t) {
    at.push_back(SecondsSince(t0));
    // libuv would hand epoll_wait a timeout here if any timer were active.
    EXPECT_EQ(uv_backend_timeout(loop.native()), -1);
    if (at.size() == 2) ticks->Stop();
  });
  ticks->Start();
  EXPECT_TRUE(Ticker::Active(loop.native()));
  EXPECT_TRUE(Ticker::UsesTimerfd(loop.native()));
  loop.Run();  // Returns once the last subscriber has left and the ticker has closed.
  ASSERT_EQ(at.size(), 2u);
  EXPECT_GE(at[0], 0.9);
  EXPECT_LT(at[0], 3.0);
  EXPECT_GE(at[1] - at[0], 0.5);  // One period apart, give or take a slow loop.
  EXPECT_FALSE(Ticker::Active(loop.native()));
  ticks.reset();
  EXPECT_TRUE(loop.Close());
}

// Inside a tick, one subscriber removes itself and another, and adds a third: the removed one
// is not called in that tick, the added one only from the next, and the ticker closes when
// the last one leaves.
TEST(Ticker, SubscribersMayLeaveAndJoinInsideATick) {
  Loop loop;
  int a = 0, b = 0, c = 0, d = 0;
  Ticks tick_d(loop, [&](uint64_t) { ++d; });
  Ticks tick_b(loop, [&](uint64_t) { ++b; });
  std::unique_ptr<Ticks> tick_c;
  Ticks tick_a(loop, [&](uint64_t) {
    ++a;
    tick_a.Stop();  // Itself, inside its own call.
    tick_b.Stop();  // Subscribed after it: must not be called in this tick.
    tick_d.Start();
  });
  tick_c = std::make_unique<Ticks>(loop, [&](uint64_t) {
    ++c;
    if (c == 1) {
      EXPECT_EQ(d, 0);  // Joined in this tick: not called in it.
    }
    if (c < 3) return;  // In the second tick, d is called after c.
    tick_c->Stop();
    tick_d.Stop();  // The last two leave: the ticker closes and the loop ends.
  });
  tick_a.Start();
  tick_b.Start();
  tick_c->Start();
  loop.Run();
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 0);
  EXPECT_EQ(c, 3);
  EXPECT_EQ(d, 1);  // In the second tick; in the third, c stopped it before its turn.
  EXPECT_FALSE(Ticker::Active(loop.native()));
  tick_c.reset();
  EXPECT_TRUE(loop.Close());
}

// The first tick comes after the loop was kept from running for 1.6 s: it reports that it ran
// about 0.6 s late (the loop's lag, which pipegated exports as a metric).
TEST(Ticker, ATickReportsHowLateItRuns) {
  Loop loop;
  uint64_t lateness = 0;
  int ticks_seen = 0;
  Ticks ticks(loop, [&](uint64_t) {
    ++ticks_seen;
    lateness = Ticker::LatenessUs(loop.native());
    ticks.Stop();
  });
  ticks.Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(1600));  // The loop is busy elsewhere.
  loop.Run();
  ASSERT_EQ(ticks_seen, 1);
  EXPECT_GE(lateness, 500'000u);
  EXPECT_LT(lateness, 1'500'000u);
  EXPECT_EQ(Ticker::LatenessUs(loop.native()), 0u);  // Outside a tick.
  EXPECT_TRUE(loop.Close());
}

// With the descriptor limit reached, no timerfd can be had: a repeating libuv timer ticks
// instead, and lateness is still measured.
TEST(Ticker, WithoutADescriptorForATimerfdALibuvTimerTicks) {
  Loop loop;  // Its own descriptors first.
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  // The lowest free descriptor becomes the limit, so the next one cannot be made.
  const int lowest_free = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(lowest_free, 0);
  close(lowest_free);
  rlimit tight = saved;
  tight.rlim_cur = static_cast<rlim_t>(lowest_free);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &tight), 0);
  int ticks_seen = 0;
  int64_t timeout_in_tick = -2;
  Ticks ticks(loop, [&](uint64_t) {
    ++ticks_seen;
    timeout_in_tick = uv_backend_timeout(loop.native());
    ticks.Stop();
  });
  ticks.Start();
  const bool timerfd = Ticker::UsesTimerfd(loop.native());
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);
  EXPECT_FALSE(timerfd);
  EXPECT_TRUE(Ticker::Active(loop.native()));
  loop.Run();
  EXPECT_EQ(ticks_seen, 1);
  EXPECT_GE(timeout_in_tick, 0);  // A libuv timer: the loop's waits are timed.
  EXPECT_TRUE(loop.Close());
}

}  // namespace
}  // namespace pipegate::uvglue
