#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/timing.h"

namespace pipegate::testing {

/// @brief A Unix stream socket server on threads of the test process.
///
/// kEcho sends back every byte as it arrives and, at the client's half-close, half-closes too.
/// kReplyAfterEof reads until the client's half-close and only then sends everything back: a reply
/// arrives only if the half-close got through while the other direction stayed open.
///
/// Every wait inside is a poll() of at most 50 ms that checks the stop flag, so the destructor
/// returns promptly. Ownership: owns the listening socket (and unlinks its path), the connection
/// threads and their sockets.
class UnixEchoServer {
 public:
  enum class Mode { kEcho, kReplyAfterEof };

  UnixEchoServer(std::string path, Mode mode = Mode::kEcho);
  ~UnixEchoServer();
  UnixEchoServer(const UnixEchoServer&) = delete;
  UnixEchoServer& operator=(const UnixEchoServer&) = delete;

  /// @return True if the socket is listening.
  bool ok() const { return listen_fd_ >= 0; }
  /// @return Why it is not.
  const std::string& error() const { return error_; }
  /// @return Connections accepted so far.
  int accepted() const { return accepted_.load(); }
  /// @return Connections whose client half-closed (EOF seen by the server).
  int half_closes() const { return half_closes_.load(); }
  /// @return Connections that ended on an error (reset, ...).
  int errors() const { return errors_.load(); }

 private:
  void AcceptLoop();
  void Serve(int fd);

  const std::string path_;
  const Mode mode_;
  int listen_fd_ = -1;
  std::string error_;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::atomic<int> half_closes_{0};
  std::atomic<int> errors_{0};
  std::mutex mu_;
  std::vector<std::thread> workers_;
  std::thread acceptor_;
};

/// @brief What UnixExchange saw.
struct ExchangeResult {
  bool ok = false;       ///< Connected, sent everything, and the peer closed cleanly.
  std::string error;     ///< What went wrong otherwise.
  std::string received;  ///< Every byte received until EOF.
};

/// @brief Connects to `path`, sends `payload` while reading, half-closes (shutdown(SHUT_WR)) and
/// reads until EOF. Connection refusals (socket not listening yet) are retried until the deadline.
/// @param timeout Nominal, for the whole exchange.
ExchangeResult UnixExchange(const std::string& path, const std::string& payload, Duration timeout);

/// @brief Connects to a Unix socket; retries ENOENT/ECONNREFUSED until the nominal timeout.
/// @return A connected, close-on-exec socket, or -1.
int ConnectUnix(const std::string& path, Duration timeout);

}  // namespace pipegate::testing
