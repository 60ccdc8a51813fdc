#include "support/timing.h"

#include <cstdlib>
#include <string>
#include <thread>

namespace pipegate::testing {

double TimeoutMultiplier() {
  static const double multiplier = [] {
    const char* text = std::getenv("PIPEGATE_TEST_TIMEOUT_MULTIPLIER");
    const double build_scale = PIPEGATE_TEST_TIME_SCALE;
    if (text == nullptr || *text == '\0') {
      return build_scale;
    }
    char* end = nullptr;
    const double value = std::strtod(text, &end);
    return (end != text && value >= 1.0) ? value : build_scale;
  }();
  return multiplier;
}

Duration Scaled(Duration nominal) {
  return Duration(
      static_cast<Duration::rep>(static_cast<double>(nominal.count()) * TimeoutMultiplier()));
}

bool QuickMode() {
  static const bool quick = [] {
    const char* text = std::getenv("PIPEGATE_TEST_QUICK");
    return text != nullptr && std::string(text) == "1";
  }();
  return quick;
}

size_t DataSize(size_t full, size_t quick) { return QuickMode() ? quick : full; }

bool WaitFor(const std::function<bool()>& predicate, Duration timeout, Duration poll) {
  const auto deadline = Clock::now() + Scaled(timeout);
  while (true) {
    if (predicate()) {
      return true;
    }
    const auto now = Clock::now();
    if (now >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(poll, deadline - now));
    if (Clock::now() >= deadline) {
      return predicate();
    }
  }
}

}  // namespace pipegate::testing
