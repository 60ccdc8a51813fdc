#include "reconnect_policy.h"

#include <algorithm>
#include <memory>
#include <random>

namespace pipegate::bridge {

ReconnectPolicy::ReconnectPolicy(Random random) : random_(std::move(random)) {
  if (!random_) {
    auto engine = std::make_shared<std::mt19937_64>(std::random_device{}());
    random_ = [engine] { return (*engine)(); };
  }
}

void ReconnectPolicy::Lost(uint64_t now_ms) {
  lost_at_ms_ = now_ms;
  backoff_ms_ = 0;
}

std::optional<uint64_t> ReconnectPolicy::NextDelay(uint64_t now_ms, uint64_t limit_ms) {
  const uint64_t elapsed = now_ms > lost_at_ms_ ? now_ms - lost_at_ms_ : 0;
  if (elapsed >= limit_ms) return std::nullopt;
  backoff_ms_ = backoff_ms_ == 0 ? kFirstDelayMs : std::min(backoff_ms_ * 2, kMaxDelayMs);
  const uint64_t jitter = backoff_ms_ / 4;
  const uint64_t delay = backoff_ms_ - jitter + random_() % (2 * jitter + 1);
  return std::min(delay, limit_ms - elapsed);
}

}  // namespace pipegate::bridge
