#pragma once

#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "pipegate/config.h"
#include "pipegate/local_path.h"
#include "pipegate/status.h"
#include "pipegate/tls.h"

#include "connection_limits.h"
#include "counters.h"
#include "identity_helper.h"
#include "identity_map.h"
#include "listeners.h"
#include "session_registry.h"
#include "snapshot.h"

namespace pipegate::gateway {

class Worker;

/// @brief The pipegated daemon: binds the listeners, runs one event loop per worker thread,
/// handles SIGTERM/SIGINT (drain, then exit 0) and SIGHUP (reload).
///
/// Ownership: owned by main; owns the workers. Thread: Run() on the main thread; workers on
/// their own threads, reached only through their thread-safe methods (an Async each). The
/// accessors below are thread-safe.
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
  /// @brief What `--check-config` (and every load) adds to parsing: the accounts exist, and
  /// the certificate, key, CA bundle and CRL load (permissions included).
  /// @return Every problem, with the line of the [gateway] key it concerns (0 for exports).
  /// @param identity_helper Whether an identity helper runs or will (started as root): without
  /// one, identity maps may only name the gateway's own account.
  static std::vector<ConfigError> CheckConfig(const GatewayConfig& config,
                                              bool identity_helper = ::geteuid() == 0);
  /// @brief Connection admission (max_connections, per source, bytes in flight).
  ConnectionLimiter& limiter() noexcept { return limiter_; }
  /// @brief The sessions clients may resume, shared by the workers.
  SessionRegistry& sessions() noexcept { return sessions_; }
  /// @return How long a detached session is kept.
  uint32_t resume_ttl_ms() const noexcept { return resume_ttl_ms_.load(); }
  IdentityLedger& identities() noexcept { return identities_; }
  Totals& totals() noexcept { return totals_; }
  /// @brief Log in @p format whatever the file's log_format says (the command line wins).
  /// Call before Run().
  void OverrideLogFormat(LogFormat format) { log_format_override_ = format; }
  /// @return The identity helper, or null when none runs (no map needs one, or not root).
  /// Set before the workers start and kept until they are joined (thread-safe to use).
  IdentityHelper* identity_helper() const noexcept { return identity_helper_.get(); }
  /// @return The account the workers run as (mapped opens to it need no helper).
  const MappedAccount& own_account() const noexcept { return own_account_; }
  /// @return Every metric of /metrics, rendered (thread-safe).
  std::string RenderMetrics() const;

 private:
  Result<std::shared_ptr<const Snapshot>> Load();
  void Reload();
  /// @brief Creates missing `create = true` FIFOs, or adopts ones that pass their rule; warns
  /// about (and leaves unavailable) the rest. Main thread.
  void PrepareFifos(const Snapshot& snap);
  /// @brief Creates or adopts the FIFO of export @p e under @p rule (PrepareFifos).
  void PrepareFifo(const GatewayConfig& config, const ExportConfig& e, const AdoptRule& rule);
  void RemoveCreatedFifos();

  // The steps of Run(), in order.
  /// @return 0, or the exit status if the listeners cannot be bound or privileges dropped.
  int BindAndDropPrivileges();
  void StartWorkers();
  /// @brief Runs the main loop (signals, the trim timer) until SIGTERM/SIGINT, then joins the
  /// workers.
  void ServeUntilStopped();
  void LogFinalCounters();
  /// @brief Reloads if the certificate files changed and have stayed unchanged since the last
  /// check (a debounce of one check period). Main thread, once a second.
  void CheckCertificateFiles();

  std::string config_path_;
  mutable std::mutex mu_;
  std::shared_ptr<const Snapshot> snapshot_;  ///< Guarded by mu_.
  Counters counters_;
  ConnectionLimiter limiter_;
  SessionRegistry sessions_;
  std::atomic<uint32_t> resume_ttl_ms_{300000};  ///< Set by Load(), read by the workers.
  IdentityLedger identities_;
  Totals totals_;
  ListenSockets listeners_;
  ListenSockets metrics_listener_;  ///< Bound only with metrics_listen.
  std::optional<LogFormat> log_format_override_;
  std::atomic<int64_t> loaded_at_unix_{0};  ///< When the running snapshot was loaded.
  // Certificate watching (main thread): the files' identity when last loaded, and a change
  // seen once, which must be seen again unchanged a period later before it is loaded.
  std::string cert_fingerprint_;
  std::string pending_fingerprint_;
  // Identity mapping: set in Run() before the workers start, constant while they run.
  std::unique_ptr<IdentityHelper> identity_helper_;
  MappedAccount own_account_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::map<std::string, LocalPath> created_;  ///< FIFOs made here, by path; removed at exit.
};

}  // namespace pipegate::gateway
