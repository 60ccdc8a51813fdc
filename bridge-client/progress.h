#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace pipegate::bridge {

/// @brief What one progress line reports.
struct ProgressSample {
  uint64_t sent = 0;      ///< Bytes the gateway confirmed delivered (write, connect).
  uint64_t received = 0;  ///< Bytes received and written out (cat, connect).
  bool show_sent = false;
  bool show_received = false;
  std::optional<uint64_t> total;  ///< Bytes to send, when known (stdin is a regular file).
  double elapsed_s = 0;
  double rate = 0;  ///< Bytes per second, recent.
};

/// @return A human size with a binary unit: "512 B", "1.5 KiB", "16.0 MiB", "2.00 GiB".
std::string HumanBytes(double bytes);

/// @return An elapsed time or ETA as "0:07", "12:34" or "1:02:03".
std::string HumanDuration(double seconds);

/// @return One progress line, without a newline, like pv's:
///   `16.0 MiB sent 50% of 32.0 MiB, 12.3 MiB/s, 0:01 elapsed, ETA 0:01`
///   `1.50 GiB received, 210 MiB/s, 0:07 elapsed`
///   `1.0 KiB sent, 2.0 KiB received, 3.0 KiB/s, 0:01 elapsed`
std::string FormatProgress(const ProgressSample& p);

/// @brief A smoothed transfer rate: each update weighs the newest interval against about two
/// seconds of the past, so a stall shows within a few updates while one busy interval does not
/// swing the figure wildly.
class RateMeter {
 public:
  /// @brief @p bytes moved so far at @p now_s seconds. @return The rate in bytes per second.
  double Update(uint64_t bytes, double now_s);

 private:
  bool started_ = false;
  uint64_t last_bytes_ = 0;
  double last_s_ = 0;
  double rate_ = 0;
};

}  // namespace pipegate::bridge
