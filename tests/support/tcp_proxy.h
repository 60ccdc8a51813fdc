#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace pipegate::testing {

/// @brief A non-blocking TCP socket bound to 127.0.0.1 at a free port, not listening: while it
/// is open, a connection to @p port is refused, and no other socket takes the port.
/// @return The socket (the caller closes it), with @p port set; -1 on failure.
int BindOnLoopback(uint16_t* port);

/// @brief BindOnLoopback(), then listening.
int ListenOnLoopback(uint16_t* port);

/// @brief A blocking TCP socket connected to 127.0.0.1:@p port (on loopback the connect
/// completes or is refused at once). @return The socket (the caller closes it); -1 on failure.
int ConnectLoopback(uint16_t port);

/// @brief A loopback TCP relay between clients and a target port, which a test can cut.
///
/// Listens on 127.0.0.1:0 and relays each accepted connection to 127.0.0.1:target, one thread
/// per connection, so a bridge can be made to lose its connection mid-stream (SPEC §8) without
/// touching the gateway. DropAll() resets every live relayed connection on both sides (SO_LINGER
/// 0, so peers get RST and bytes in flight are lost), like a network failure.
///
/// Ownership: owns its sockets and threads; the destructor stops and joins them. Every wait is a
/// poll() of at most 20 ms, so it stops promptly.
class TcpProxy {
 public:
  explicit TcpProxy(uint16_t target_port);
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  /// @return True if listening.
  bool ok() const { return listen_fd_ >= 0; }
  /// @return The port clients should use.
  uint16_t port() const { return port_; }
  /// @return `pipe://127.0.0.1:PORT` for this proxy.
  std::string BaseAddress() const;
  /// @return Connections accepted so far.
  int accepted() const { return accepted_.load(); }
  /// @return Bytes relayed so far, both directions.
  uint64_t relayed() const { return relayed_.load(); }

  /// @brief Resets every live relayed connection and returns once they are all gone.
  /// @return How many connections were reset.
  int DropAll();

 private:
  void AcceptLoop();
  void Relay(int id, int client, int server, uint64_t generation);

  uint16_t target_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> accepted_{0};
  std::atomic<uint64_t> relayed_{0};
  std::mutex mu_;
  std::map<int, uint64_t> live_;  // Relay id -> generation it belongs to.
  std::vector<std::thread> relays_;
  std::thread acceptor_;
};

}  // namespace pipegate::testing
