#pragma once

#include <cstdint>
#include <functional>
#include <optional>

namespace pipegate::bridge {

/// @brief When the bridge tries again after losing its connection: exponential backoff from
/// 250 ms doubling to 30 s, each delay spread by ±25 % so that many clients cut at once do not
/// come back at once, and never past the deadline (the gateway's resume lifetime, or
/// --resume-timeout).
///
/// Pure: the caller passes the time and the policy draws from an injected random source, so
/// tests drive it without a clock. Thread: one thread.
class ReconnectPolicy {
 public:
  /// A source of uniformly random 64-bit values.
  using Random = std::function<uint64_t()>;

  static constexpr uint64_t kFirstDelayMs = 250;
  static constexpr uint64_t kMaxDelayMs = 30000;

  /// @param random Null: a std::mt19937_64 seeded from std::random_device.
  explicit ReconnectPolicy(Random random = nullptr);

  /// @brief The connection was lost at @p now_ms: the next delay is the first one again.
  void Lost(uint64_t now_ms);
  /// @brief Starts the backoff over without moving the loss time (a new connection was made
  /// and then refused: the next attempt may go at once).
  void Restart() { backoff_ms_ = 0; }
  /// @return The delay before the next attempt, or nullopt once @p limit_ms have passed since
  /// the loss (give up). The delay never ends past that limit.
  std::optional<uint64_t> NextDelay(uint64_t now_ms, uint64_t limit_ms);
  /// @return When the connection was lost.
  uint64_t lost_at_ms() const noexcept { return lost_at_ms_; }

 private:
  Random random_;
  uint64_t backoff_ms_ = 0;
  uint64_t lost_at_ms_ = 0;
};

}  // namespace pipegate::bridge
