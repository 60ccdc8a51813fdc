#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "pipegate/config.h"
#include "pipegate/mux.h"

#include "uv/connection.h"

namespace pipegate {

/// @return The multiplexer limits a gateway connection announces, from the `[limits]` table:
/// max_streams_per_connection, max_bytes_in_flight_per_connection (the session window; each
/// stream's window is at most that) and max_frame_size.
MuxOptions MuxOptionsFor(const Limits& limits);

/// @return The connection timers and mux limits of a gateway connection (handshake_timeout,
/// idle_timeout and MuxOptionsFor()).
uvglue::ConnectionOptions ConnectionOptionsFor(const Limits& limits);

/// @brief The key connections are counted under for max_connections_per_source: the IPv4
/// address, or the /64 prefix of an IPv6 address (one host usually owns a whole /64, so
/// counting single IPv6 addresses would not limit anyone). IPv4-mapped IPv6 addresses count as
/// IPv4.
/// @param peer_address "ip:port" or "[ipv6]:port", as Connection::peer_address() gives it.
std::string SourceKey(const std::string& peer_address);

/// @brief What ConnectionOptions::admission points to: the Worker accepts a connection with an
/// empty slot (the peer's address is known only then) and fills it once the limits admit it.
struct AdmissionSlot {
  std::shared_ptr<const void> token;  ///< ConnectionLimiter::Admission::token.
};

/// @brief Admission control for new connections: the total, per-source and memory limits.
///
/// Every admitted connection holds a token (ConnectionOptions::admission) for its lifetime;
/// dropping the token gives the slot back. Thread: shared by every worker, guarded by a mutex.
/// Ownership: owned by the Gateway; tokens keep the shared state alive, so they may outlive it.
class ConnectionLimiter {
 public:
  enum class Outcome { kAdmitted, kTotal, kPerSource, kMemory };

  struct Admission {
    Outcome outcome = Outcome::kAdmitted;
    std::shared_ptr<const void> token;  ///< Set when admitted.
    std::string reason;                 ///< Why not, in words.
  };

  ConnectionLimiter();

  /// @brief Counts one more connection from @p peer_address if @p limits allow it.
  Admission Admit(const std::string& peer_address, const Limits& limits);

  /// @return Connections currently admitted.
  uint64_t total() const;
  /// @return Connections currently admitted from @p source (a SourceKey()).
  uint32_t from(const std::string& source) const;

  /// @brief Gives the memory of ended connections back to the system (malloc_trim) once at
  /// least @p churn connections ended or were refused since the last time. Meant for a
  /// periodic timer: after a flood (slowloris, handshake garbage) the allocator would otherwise
  /// keep the freed pages. @return True if it trimmed.
  bool TrimMemoryAfterChurn(uint64_t churn = 64);

 private:
  struct State {
    mutable std::mutex mu;
    uint64_t total = 0;
    uint64_t churn = 0;  ///< Connections ended or refused since the last trim.
    std::unordered_map<std::string, uint32_t> per_source;
  };
  std::shared_ptr<State> state_;
};

}  // namespace pipegate
