#include "uv/ticker.h"

#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include <uv.h>

namespace pipegate::uvglue {

namespace {

constexpr uint64_t kPeriodUs = Ticker::kPeriodMs * 1000;

// One loop's ticker. Freed in its handle's close callback.
struct LoopTicker {
  explicit LoopTicker(uv_loop_t* l) : loop(l) {}

  uv_loop_t* loop;
  union {
    uv_handle_t handle;
    uv_poll_t poll;    // Watching tfd.
    uv_timer_t timer;  // The fallback, when tfd < 0.
  } h{};
  int tfd = -1;
  // Subscribers in order of subscription; a slot is null while a dispatch that unsubscribed it
  // is running (compacted after it).
  std::vector<TickSubscriber*> subscribers;
  bool dispatching = false;
  uint64_t lateness_us = 0;
  uint64_t fallback_due_us = 0;  // When the fallback timer's next tick is due (uv_hrtime).
};

// A loop's ticker lives in the loop's `data` field, which nothing else in pipegate uses.
LoopTicker* Find(uv_loop_t* loop) { return static_cast<LoopTicker*>(loop->data); }

uint64_t NowUs() { return uv_hrtime() / 1000; }

void Stop(LoopTicker* t) {
  t->loop->data = nullptr;
  uv_close(&t->h.handle, [](uv_handle_t* handle) {
    auto* closed = static_cast<LoopTicker*>(handle->data);
    if (closed->tfd >= 0) ::close(closed->tfd);
    delete closed;
  });
}

void Dispatch(LoopTicker* t, uint64_t lateness_us) {
  t->lateness_us = lateness_us;
  t->dispatching = true;
  const uint64_t now = uv_now(t->loop);
  // By index, and only those subscribed before this tick: a callback may add to the vector.
  const size_t n = t->subscribers.size();
  for (size_t i = 0; i < n; ++i) {
    if (TickSubscriber* s = t->subscribers[i]) s->OnTick(now);
  }
  t->dispatching = false;
  t->lateness_us = 0;
  std::erase(t->subscribers, nullptr);
  if (t->subscribers.empty()) Stop(t);
}

void OnTimerfd(uv_poll_t* handle, int status, int events) {
  (void)events;
  auto* t = static_cast<LoopTicker*>(handle->data);
  uint64_t expirations = 0;
  if (status < 0 || ::read(t->tfd, &expirations, sizeof expirations) != sizeof expirations ||
      expirations == 0) {
    return;  // EAGAIN: another reader cannot exist; a spurious wake-up.
  }
  // The tick was due when the timer last expired: one period before its next expiry.
  uint64_t lateness = (expirations - 1) * kPeriodUs;
  itimerspec left{};
  if (::timerfd_gettime(t->tfd, &left) == 0) {
    const uint64_t left_us = static_cast<uint64_t>(left.it_value.tv_sec) * 1000000 +
                             static_cast<uint64_t>(left.it_value.tv_nsec) / 1000;
    lateness += kPeriodUs > left_us ? kPeriodUs - left_us : 0;
  }
  Dispatch(t, lateness);
}

void OnFallbackTimer(uv_timer_t* handle) {
  auto* t = static_cast<LoopTicker*>(handle->data);
  const uint64_t now = NowUs();
  const uint64_t lateness = now > t->fallback_due_us ? now - t->fallback_due_us : 0;
  t->fallback_due_us = now + kPeriodUs;  // libuv repeats from the time it ran the callback.
  Dispatch(t, lateness);
}

LoopTicker* Start(uv_loop_t* loop) {
  auto* t = new LoopTicker(loop);
  const int fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd >= 0) {
    const itimerspec every{{Ticker::kPeriodMs / 1000, 0}, {Ticker::kPeriodMs / 1000, 0}};
    if (::timerfd_settime(fd, 0, &every, nullptr) == 0 && uv_poll_init(loop, &t->h.poll, fd) == 0) {
      t->tfd = fd;
      t->h.poll.data = t;
      uv_poll_start(&t->h.poll, UV_READABLE, &OnTimerfd);
    } else {
      ::close(fd);
    }
  }
  if (t->tfd < 0) {
    uv_timer_init(loop, &t->h.timer);
    t->h.timer.data = t;
    t->fallback_due_us = NowUs() + kPeriodUs;
    uv_timer_start(&t->h.timer, &OnFallbackTimer, Ticker::kPeriodMs, Ticker::kPeriodMs);
  }
  loop->data = t;
  return t;
}

}  // namespace

void Ticker::Subscribe(uv_loop_t* loop, TickSubscriber* subscriber) {
  LoopTicker* t = Find(loop);
  if (t == nullptr) t = Start(loop);
  t->subscribers.push_back(subscriber);
}

void Ticker::Unsubscribe(uv_loop_t* loop, TickSubscriber* subscriber) {
  LoopTicker* t = Find(loop);
  if (t == nullptr) return;
  auto it = std::find(t->subscribers.begin(), t->subscribers.end(), subscriber);
  if (it == t->subscribers.end()) return;
  if (t->dispatching) {
    *it = nullptr;  // Dispatch() compacts, and closes the ticker if it was the last.
    return;
  }
  t->subscribers.erase(it);
  if (t->subscribers.empty()) Stop(t);
}

uint64_t Ticker::LatenessUs(uv_loop_t* loop) {
  LoopTicker* t = Find(loop);
  return t != nullptr ? t->lateness_us : 0;
}

bool Ticker::Active(uv_loop_t* loop) { return Find(loop) != nullptr; }

bool Ticker::UsesTimerfd(uv_loop_t* loop) {
  LoopTicker* t = Find(loop);
  return t != nullptr && t->tfd >= 0;
}

void Ticks::Start() {
  if (started_) return;
  started_ = true;
  Ticker::Subscribe(loop_, this);
}

void Ticks::Stop() {
  if (!started_) return;
  started_ = false;
  Ticker::Unsubscribe(loop_, this);
}

}  // namespace pipegate::uvglue
