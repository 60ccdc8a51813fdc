#include "progress.h"

#include <fmt/format.h>

#include <cmath>

namespace pipegate::bridge {

std::string HumanBytes(double bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  size_t unit = 0;
  while (bytes >= 1024 && unit + 1 < std::size(kUnits)) {
    bytes /= 1024;
    ++unit;
  }
  if (unit == 0) return fmt::format("{:.0f} B", bytes);
  const int decimals = bytes < 10 ? 2 : bytes < 100 ? 1 : 0;
  return fmt::format("{:.{}f} {}", bytes, decimals, kUnits[unit]);
}

std::string HumanDuration(double seconds) {
  const auto s = static_cast<uint64_t>(std::llround(std::max(0.0, seconds)));
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

std::string FormatProgress(const ProgressSample& p) {
  std::string line;
  if (p.show_sent) {
    line += HumanBytes(static_cast<double>(p.sent)) + " sent";
    if (p.total && *p.total > 0) {
      const double done =
          std::min(1.0, static_cast<double>(p.sent) / static_cast<double>(*p.total));
      line += fmt::format(" {:.0f}% of {}", std::floor(done * 100),
                          HumanBytes(static_cast<double>(*p.total)));
    }
  }
  if (p.show_received) {
    if (!line.empty()) line += ", ";
    line += HumanBytes(static_cast<double>(p.received)) + " received";
  }
  line += fmt::format(", {}/s, {} elapsed", HumanBytes(p.rate), HumanDuration(p.elapsed_s));
  if (p.show_sent && p.total && p.sent < *p.total && p.rate > 0) {
    line += ", ETA " + HumanDuration(static_cast<double>(*p.total - p.sent) / p.rate);
  }
  return line;
}

double RateMeter::Update(uint64_t bytes, double now_s) {
  if (!started_) {
    started_ = true;
    last_bytes_ = bytes;
    last_s_ = now_s;
    rate_ = now_s > 0 ? static_cast<double>(bytes) / now_s : 0;
    return rate_;
  }
  const double dt = now_s - last_s_;
  if (dt <= 0) return rate_;
  const double now_rate = static_cast<double>(bytes - last_bytes_) / dt;
  // About two seconds of memory at one update every 0.25 s.
  const double weight = std::min(1.0, dt / 2.0);
  rate_ = rate_ * (1 - weight) + now_rate * weight;
  last_bytes_ = bytes;
  last_s_ = now_s;
  return rate_;
}

}  // namespace pipegate::bridge
