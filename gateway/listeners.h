#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "pipegate/status.h"

namespace pipegate::gateway {

/// @brief The gateway's listening TCP sockets, bound once on the main thread (before privileges
/// are dropped); each worker listens on duplicates of them.
///
/// Ownership: owns the descriptors and closes them when destroyed. Thread: the main thread.
class ListenSockets {
 public:
  ListenSockets() = default;
  ~ListenSockets();
  ListenSockets(const ListenSockets&) = delete;
  ListenSockets& operator=(const ListenSockets&) = delete;

  /// @brief Binds and listens on every "HOST:PORT" / "[V6]:PORT" of @p listen (IP addresses
  /// only; port 0 picks a free port) and logs "@p what ADDRESS" with the address bound.
  /// @return OK, or kUsage for an address that does not parse, kIo for one that cannot be
  /// bound. The sockets bound before a failure are kept (and closed with this object).
  [[nodiscard]] Status Bind(const std::vector<std::string>& listen,
                            std::string_view what = "listening on");

  const std::vector<int>& fds() const noexcept { return fds_; }

 private:
  std::vector<int> fds_;
};

}  // namespace pipegate::gateway
