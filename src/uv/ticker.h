#pragma once

#include <cstdint>
#include <functional>
#include <utility>

#include "uv/handles.h"

namespace pipegate::uvglue {

/// @brief Something that wants a call about once a second on its loop (deadlines, keepalive,
/// giving back idle memory).
class TickSubscriber {
 public:
  virtual ~TickSubscriber() = default;
  /// @brief Called on the loop's thread with the loop's time (uv_now). May subscribe or
  /// unsubscribe any subscriber, itself included.
  virtual void OnTick(uint64_t now_ms) = 0;
};

/// @brief One once-a-second tick per loop, shared by every subscriber on it, from a periodic
/// timerfd that the loop watches.
///
/// Why not a libuv timer each: libuv gives epoll_wait the time to its next timer, so a loop
/// with any active timer arms and cancels a kernel timer around every sleep. The kernel re-arms
/// a periodic timerfd by itself, so a loop whose only periodic work is ticks sleeps without a
/// timeout. On the 2-core VM of bench/RESULTS.md that is about 1 µs of every 64-byte round
/// trip through a mount (1.0 µs built, 1.2 µs with every timer switched off). If no timerfd can be
/// had (descriptor limit), the ticker falls back to a repeating libuv timer.
///
/// Granularity: the first tick comes within one period of Subscribe(), then one per period, so
/// a deadline checked on ticks is noticed at most one period late (as with a one-second timer
/// per subscriber).
///
/// Ownership: the ticker of a loop is made by the first Subscribe() and closed when the last
/// subscriber leaves, so it keeps a loop alive only while someone subscribes. Every subscriber
/// must unsubscribe before its loop is closed. The ticker is kept in the loop's `data` field,
/// which nothing else may use. Thread: the loop's thread (or any thread before the loop runs).
class Ticker {
 public:
  static constexpr uint64_t kPeriodMs = 1000;

  /// @brief Starts calling @p subscriber (not subscribed yet) on @p loop's ticks.
  static void Subscribe(uv_loop_s* loop, TickSubscriber* subscriber);
  /// @brief Stops calling @p subscriber; no tick reaches it after this returns. Does nothing
  /// if it is not subscribed.
  static void Unsubscribe(uv_loop_s* loop, TickSubscriber* subscriber);
  /// @return Inside OnTick(): how late this tick runs after it was due, in microseconds (the
  /// loop's lag). 0 outside a tick.
  static uint64_t LatenessUs(uv_loop_s* loop);
  /// @return Whether @p loop has a ticker now, and whether it is a timerfd (not the fallback).
  static bool Active(uv_loop_s* loop);
  static bool UsesTimerfd(uv_loop_s* loop);
};

/// @brief A function called on every tick of its loop while started: for an owner that is not
/// a TickSubscriber itself (and for the programs, which do not name libuv types).
///
/// Ownership: by value in its owner; stopped when destroyed. Thread: the loop's thread.
class Ticks final : public TickSubscriber {
 public:
  Ticks(Loop& loop, std::function<void(uint64_t now_ms)> on_tick)
      : loop_(loop.native()), on_tick_(std::move(on_tick)) {}
  ~Ticks() override { Stop(); }
  Ticks(const Ticks&) = delete;
  Ticks& operator=(const Ticks&) = delete;

  /// @brief Starts (idempotent).
  void Start();
  /// @brief Stops (idempotent); no call comes after this returns.
  void Stop();
  bool started() const noexcept { return started_; }
  /// @return Inside the function: how late this tick runs (Ticker::LatenessUs).
  uint64_t lateness_us() const { return Ticker::LatenessUs(loop_); }

 private:
  void OnTick(uint64_t now_ms) override { on_tick_(now_ms); }

  uv_loop_s* loop_;
  std::function<void(uint64_t)> on_tick_;
  bool started_ = false;
};

}  // namespace pipegate::uvglue
