#pragma once

#include <chrono>
#include <functional>

namespace pipegate::testing {

using Clock = std::chrono::steady_clock;
using Duration = std::chrono::milliseconds;

/// @brief The factor every nominal timeout is multiplied by.
///
/// Read once from `PIPEGATE_TEST_TIMEOUT_MULTIPLIER` (a number ≥ 1) if set; otherwise the
/// build's factor, PIPEGATE_TEST_TIME_SCALE in tests/CMakeLists.txt (1, or more for a sanitizer
/// build), the one place where sanitizer slowdowns are written down (libuv's
/// `UV_TEST_TIMEOUT_MULTIPLIER` works the same way).
/// @return The multiplier, at least 1.
double TimeoutMultiplier();

/// @brief Scales a nominal timeout by TimeoutMultiplier().
/// @param nominal The timeout a RelWithDebInfo build needs, with room to spare.
/// @return The timeout to use in this run.
Duration Scaled(Duration nominal);

/// @brief True when `PIPEGATE_TEST_QUICK=1`: tests use smaller data sizes (for sanitizer builds).
bool QuickMode();

/// @brief Picks a data size: `full` normally, `quick` in QuickMode().
size_t DataSize(size_t full, size_t quick);

/// @brief Polls `predicate` until it returns true or the (scaled) timeout passes.
///
/// The predicate runs at once, then every `poll` (5 ms by default), and once more at the deadline,
/// so a condition that becomes true just in time still counts. Use this instead of sleeping.
/// @param predicate Checked on the calling thread; must be cheap.
/// @param timeout Nominal timeout; scaled by TimeoutMultiplier().
/// @param poll Interval between checks.
/// @return True if the predicate became true, false on timeout.
bool WaitFor(const std::function<bool()>& predicate, Duration timeout, Duration poll = Duration(5));

/// @brief Milliseconds elapsed since `start`, for messages and rough bounds.
inline Duration Since(Clock::time_point start) {
  return std::chrono::duration_cast<Duration>(Clock::now() - start);
}

}  // namespace pipegate::testing
