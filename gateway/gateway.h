#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "pipegate/config.h"
#include "pipegate/local_path.h"
#include "pipegate/status.h"
#include "pipegate/tls.h"

#include "connection_limits.h"
#include "counters.h"

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
  /// By export name, for `create = true` FIFOs: who may own the FIFO and how open it may be.
  std::map<std::string, AdoptRule> fifo_rules;
};

class Worker;
class Session;

/// @brief What every session of one client identity holds together, across connections and
/// workers (the per-identity caps of docs/security.md §5).
///
/// Thread: atomics, shared by the sessions of the identity on any worker. Ownership: shared
/// by those sessions; IdentityLedger keeps only a weak reference.
struct IdentityUsage {
  std::atomic<uint32_t> streams{0};
  std::atomic<uint32_t> detached_sessions{0};
  std::atomic<uint64_t> replay_bytes{0};
};

/// @brief Finds the IdentityUsage of an identity (thread-safe). Entries of identities with no
/// session left are dropped.
class IdentityLedger {
 public:
  std::shared_ptr<IdentityUsage> For(const std::string& identity);
  /// @return Identities with a live session (for tests and counters).
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::weak_ptr<IdentityUsage>> by_identity_;
  uint64_t lookups_ = 0;
};

/// @brief Gateway-wide totals behind the caps of docs/security.md §5 (thread-safe).
struct Totals {
  std::atomic<uint32_t> streams{0};
  std::atomic<uint64_t> replay_bytes{0};
};

/// @brief Where a session lives and what resuming it requires (guarded by Gateway's mutex;
/// `session` is only dereferenced on `worker`'s thread).
struct SessionRecord {
  Worker* worker = nullptr;
  Session* session = nullptr;
  std::string key;                      ///< Current resume key.
  std::string spki;                     ///< SHA-256 of the client's public key: only it may resume.
  std::vector<std::string> identities;  ///< PeerIdentity::All(): a resume must present these.
};

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
  /// @brief What `--check-config` adds to parsing: the accounts exist, and the
  /// certificate, key, CA bundle and CRL load (permissions included).
  static Status CheckConfig(const GatewayConfig& config);
  /// @brief Connection admission (max_connections, per source, bytes in flight).
  ConnectionLimiter& limiter() noexcept { return limiter_; }

  // The session registry, shared by the workers (a reconnect may land on any of them).
  void RegisterSession(const std::string& id, const SessionRecord& record);
  bool FindSession(const std::string& id, SessionRecord* out) const;
  void UpdateSessionKey(const std::string& id, const std::string& key);
  void UnregisterSession(const std::string& id, const Session* session);
  /// @return How long a detached session is kept.
  uint32_t resume_ttl_ms() const noexcept { return resume_ttl_ms_.load(); }
  /// @brief Counts a session that starts waiting for its client; false (nothing counted) when
  /// as many sessions as max_connections already wait, or its identity already has
  /// max_detached_sessions_per_identity waiting, so detached sessions stay bounded.
  bool TryDetachSession(IdentityUsage* usage);
  /// @brief A detached session was resumed or ended.
  void SessionReattached(IdentityUsage* usage) noexcept {
    detached_sessions_.fetch_sub(1);
    if (usage != nullptr) usage->detached_sessions.fetch_sub(1);
  }
  IdentityLedger& identities() noexcept { return identities_; }
  Totals& totals() noexcept { return totals_; }

 private:
  Result<std::shared_ptr<const Snapshot>> Load();
  void Reload();
  /// @brief Creates missing `create = true` FIFOs, or adopts ones that pass their rule; warns
  /// about (and leaves unavailable) the rest. Main thread.
  void PrepareFifos(const Snapshot& snap);
  void RemoveCreatedFifos();

  std::string config_path_;
  mutable std::mutex mu_;
  std::shared_ptr<const Snapshot> snapshot_;
  Counters counters_;
  ConnectionLimiter limiter_;
  std::map<std::string, SessionRecord> sessions_;  ///< Guarded by mu_.
  std::atomic<uint32_t> resume_ttl_ms_{300000};    ///< Set by Load(), read by the workers.
  std::atomic<uint32_t> detached_sessions_{0};     ///< Sessions waiting for a resume.
  IdentityLedger identities_;
  Totals totals_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<int> listen_fds_;
  std::map<std::string, LocalPath> created_;  ///< FIFOs made here, by path; removed at exit.

  friend class Worker;
};

}  // namespace pipegate::gateway
