// Loop tests of the handle wrappers the programs use instead of raw libuv (src/uv/handles.h):
// Loop, Timer, Signal, Async, Listener and CloseHandles, each on a real loop. Every test ends
// with Loop::Close() true (every handle closed); every wait is bounded by a timer.

#include "uv/handles.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <uv.h>

#include "support/tcp_proxy.h"

namespace pipegate::uvglue {
namespace {

// Stops a test's loop after @p ms if the condition under test never came: the test then
// fails on its expectations instead of hanging. The timer repeats: uv_run(UV_RUN_ONCE) runs due
// timers before it polls, so a one-shot deadline that fires there would leave the poll with no
// timer at all, blocked for good.
class Deadline {
 public:
  Deadline(Loop& loop, uint64_t ms) : timer_(loop, [this] { expired_ = true; }) {
    timer_.Start(ms, ms);
  }
  void Cancel() { timer_.Close(); }
  bool expired() const { return expired_; }

 private:
  Timer timer_;
  bool expired_ = false;
};

TEST(LoopHandles, TimerFiresOnceThenRepeatsAndStops) {
  Loop loop;
  int once = 0;
  int repeats = 0;
  Timer single(loop, [&] { ++once; });
  single.Start(1);
  std::unique_ptr<Timer> repeating;
  repeating = std::make_unique<Timer>(loop, [&] {
    if (++repeats == 3) repeating->Stop();
  });
  repeating->Start(1, 1);
  EXPECT_TRUE(repeating->active());
  loop.Run();  // Returns when neither timer is active any more.
  EXPECT_EQ(once, 1);
  EXPECT_EQ(repeats, 3);
  EXPECT_FALSE(repeating->active());
  single.Close();
  repeating.reset();
  EXPECT_TRUE(loop.Close());
}

TEST(LoopHandles, ATimerMayBeDestroyedFromItsOwnCallback) {
  Loop loop;
  int fired = 0;
  std::unique_ptr<Timer> timer;
  timer = std::make_unique<Timer>(loop, [&] {
    ++fired;
    timer.reset();  // The handle's memory lives on until its close callback.
  });
  timer->Start(0, 1);
  loop.Run();
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(timer, nullptr);
  EXPECT_TRUE(loop.Close());
}

TEST(LoopHandles, AClosedTimerNeverFires) {
  Loop loop;
  bool fired = false;
  {
    Timer timer(loop, [&] { fired = true; });
    timer.Start(0);
  }  // Destroyed before the loop ran.
  loop.Run();
  EXPECT_FALSE(fired);
  EXPECT_TRUE(loop.Close());
}

TEST(LoopHandles, SignalCallsBackOnTheLoop) {
  Loop loop;
  int seen = 0;
  std::unique_ptr<Signal> signal;
  signal = std::make_unique<Signal>(loop, SIGUSR2, [&] {
    ++seen;
    signal.reset();
  });
  Deadline deadline(loop, 10000);
  ASSERT_EQ(::raise(SIGUSR2), 0);
  while (seen == 0 && !deadline.expired()) uv_run(loop.native(), UV_RUN_ONCE);
  deadline.Cancel();
  loop.Run();
  EXPECT_EQ(seen, 1);
  EXPECT_TRUE(loop.Close());
}

TEST(LoopHandles, AsyncWakesFromAnotherThreadAndRefusesAfterClose) {
  Loop loop;
  std::atomic<int> queued{0};
  int taken = 0;
  std::vector<int> inbox;  // Guarded by the Async's lock (SendWith / CloseWith).
  std::unique_ptr<Async> async;
  async = std::make_unique<Async>(loop, [&] {
    std::vector<int> mine;
    async->SendWith([&] { mine.swap(inbox); });
    taken += static_cast<int>(mine.size());
    if (taken == 100) async->CloseWith([&] { taken += static_cast<int>(inbox.size()); });
  });
  std::thread producer([&] {
    for (int i = 0; i < 100; ++i) {
      if (async->SendWith([&] { inbox.push_back(i); })) queued.fetch_add(1);
    }
  });
  Deadline deadline(loop, 10000);
  while (taken < 100 && !deadline.expired()) uv_run(loop.native(), UV_RUN_ONCE);
  producer.join();
  deadline.Cancel();
  EXPECT_EQ(queued.load(), 100);
  EXPECT_EQ(taken, 100);
  // Closed: a late producer is told so and nothing runs.
  bool ran = false;
  EXPECT_FALSE(async->SendWith([&] { ran = true; }));
  EXPECT_FALSE(async->Send());
  EXPECT_FALSE(ran);
  loop.Run();
  async.reset();
  EXPECT_TRUE(loop.Close());
}

TEST(LoopHandles, ListenerReportsAPendingConnection) {
  uint16_t port = 0;
  int fd = ::pipegate::testing::ListenOnLoopback(&port);
  ASSERT_GE(fd, 0);

  Loop loop;
  int accepted = 0;
  std::unique_ptr<Listener> listener;
  Result<std::unique_ptr<Listener>> opened = Listener::Open(loop, fd, [&](const Status& s) {
    ASSERT_TRUE(s.ok()) << s.message();
    uv_tcp_t* client = new uv_tcp_t();
    uv_tcp_init(loop.native(), client);
    if (uv_accept(listener->native(), reinterpret_cast<uv_stream_t*>(client)) == 0) ++accepted;
    uv_close(reinterpret_cast<uv_handle_t*>(client),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    listener->Close();
  });
  ASSERT_TRUE(opened) << opened.error().message();
  listener = std::move(*opened);
  ::close(fd);  // The listener holds its own duplicate.

  int client = ::pipegate::testing::ConnectLoopback(port);
  ASSERT_GE(client, 0);
  Deadline deadline(loop, 10000);
  while (accepted == 0 && !deadline.expired()) uv_run(loop.native(), UV_RUN_ONCE);
  deadline.Cancel();
  ::close(client);
  loop.Run();
  EXPECT_EQ(accepted, 1);
  listener.reset();
  EXPECT_TRUE(loop.Close());
}

TEST(LoopHandles, ListenerOnABadDescriptorIsAnError) {
  Loop loop;
  Result<std::unique_ptr<Listener>> opened = Listener::Open(loop, -1, [](const Status&) {});
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code(), Code::kIo);
  EXPECT_NE(opened.error().message().find("cannot"), std::string::npos);
  EXPECT_TRUE(loop.Close());
}

// An owner of three raw handles, freed by CloseHandles after the last close callback.
struct Owner {
  explicit Owner(uv_loop_t* loop, int* freed) : freed_(freed) {
    for (uv_timer_t* t : {&a, &b, &c}) {
      uv_timer_init(loop, t);
      t->data = this;
    }
  }
  void Close() {
    CloseHandles<Owner, &Owner::closes, &Owner::AllClosed>(
        this, {AsHandle(&a), AsHandle(&b), AsHandle(&c)});
  }
  void AllClosed() {
    ++*freed_;
    delete this;
  }
  uv_timer_t a{}, b{}, c{};
  CloseCount<Owner> closes;
  int* freed_;
};

TEST(LoopHandles, CloseHandlesCallsBackOnceAfterTheLastClose) {
  Loop loop;
  int freed = 0;
  auto* owner = new Owner(loop.native(), &freed);
  owner->Close();
  EXPECT_EQ(freed, 0);  // Close callbacks run on the loop, not inside uv_close.
  loop.Run();
  EXPECT_EQ(freed, 1);
  EXPECT_TRUE(loop.Close());
}

TEST(LoopHandles, LoopCloseReportsAHandleLeftOpen) {
  Loop loop;
  uv_timer_t leaked{};
  uv_timer_init(loop.native(), &leaked);
  EXPECT_FALSE(loop.Close());
  uv_close(reinterpret_cast<uv_handle_t*>(&leaked), nullptr);
  EXPECT_TRUE(loop.Close());
}

}  // namespace
}  // namespace pipegate::uvglue
