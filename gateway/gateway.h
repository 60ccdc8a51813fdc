#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pipegate/config.h"
#include "pipegate/status.h"
#include "pipegate/tls.h"

namespace pipegate::gateway {

/// @brief Live state of one export name, kept across reloads (instance count).
struct ExportSlot {
  std::atomic<uint32_t> in_use{0};
};

/// @brief An immutable view of the configuration that workers serve from. A reload builds a new
/// one; connections keep the one they started with for their TLS, and look exports up in the
/// newest one.
struct Snapshot {
  GatewayConfig config;
  std::shared_ptr<const TlsContext> tls;
  std::map<std::string, std::shared_ptr<ExportSlot>> slots;  ///< By export name.
};

/// @brief Counters of every class of event that closes or refuses something.
struct Counters {
  std::atomic<uint64_t> connections_accepted{0};
  std::atomic<uint64_t> connections_refused{0};
  std::atomic<uint64_t> tls_handshake_failed{0};
  std::atomic<uint64_t> protocol_errors{0};
  std::atomic<uint64_t> streams_opened{0};
  std::atomic<uint64_t> acl_denied{0};
  std::atomic<uint64_t> not_found{0};
  std::atomic<uint64_t> busy{0};
  std::atomic<uint64_t> no_reader{0};
  std::atomic<uint64_t> broken_pipe{0};
  std::atomic<uint64_t> bytes_to_clients{0};
  std::atomic<uint64_t> bytes_from_clients{0};
};

class Worker;

/// @brief The pipegated daemon: binds the listeners, runs one event loop per worker thread,
/// handles SIGTERM/SIGINT (drain, then exit 0) and SIGHUP (reload).
///
/// Ownership: owned by main. Thread: Run() on the main thread; workers on their own threads,
/// reached only through uv_async.
class Gateway {
 public:
  explicit Gateway(std::string config_path);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  /// @brief Loads the config, serves until stopped; returns the exit status.
  int Run();

  /// @return The newest snapshot (thread-safe).
  std::shared_ptr<const Snapshot> snapshot() const;
  Counters& counters() noexcept { return counters_; }

 private:
  Result<std::shared_ptr<const Snapshot>> Load();
  void Reload();
  void PrepareFifos(const GatewayConfig& config);
  void RemoveCreatedFifos();

  std::string config_path_;
  mutable std::mutex mu_;
  std::shared_ptr<const Snapshot> snapshot_;
  Counters counters_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<int> listen_fds_;
  std::map<std::string, std::pair<uint64_t, uint64_t>> created_;  ///< path -> (dev, ino).

  friend class Worker;
};

}  // namespace pipegate::gateway
