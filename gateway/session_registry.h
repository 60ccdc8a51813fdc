#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "pipegate/config.h"

namespace pipegate::gateway {

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
  /// Processes of exec exports not yet reaped (against max_exec_processes).
  std::atomic<uint32_t> exec_processes{0};
};

/// @brief Where a session lives and what resuming it requires (a copy taken under the
/// registry's lock; `session` is only dereferenced on `worker`'s thread).
struct SessionRecord {
  Worker* worker = nullptr;
  Session* session = nullptr;
  std::string key;                      ///< Current resume key.
  std::string spki;                     ///< SHA-256 of the client's public key: only it may resume.
  std::vector<std::string> identities;  ///< PeerIdentity::All(): a resume must present these.
};

/// @brief The sessions a client may resume, by session id, and how many wait detached. Shared
/// by the workers, since a reconnect may land on any of them.
///
/// Ownership: a member of Gateway. Thread: every method is thread-safe.
class SessionRegistry {
 public:
  void Register(const std::string& id, const SessionRecord& record);
  /// @return False if no session is registered under @p id.
  bool Find(const std::string& id, SessionRecord* out) const;
  void UpdateKey(const std::string& id, const std::string& key);
  /// @brief Forgets @p id if it is still registered to @p session.
  void Unregister(const std::string& id, const Session* session);

  /// @brief Counts a session that starts waiting for its client; false (nothing counted) when
  /// as many sessions as max_connections already wait, or its identity already has
  /// max_detached_sessions_per_identity waiting, so detached sessions stay bounded.
  bool TryDetach(IdentityUsage* usage, const Limits& limits);
  /// @brief A detached session was resumed or ended.
  void Reattached(IdentityUsage* usage) noexcept {
    detached_sessions_.fetch_sub(1);
    if (usage != nullptr) usage->detached_sessions.fetch_sub(1);
  }

  /// @return Sessions waiting for a resume now.
  uint32_t detached() const noexcept { return detached_sessions_.load(); }

 private:
  mutable std::mutex mu_;
  std::map<std::string, SessionRecord> sessions_;  ///< Guarded by mu_.
  std::atomic<uint32_t> detached_sessions_{0};     ///< Sessions waiting for a resume.
};

}  // namespace pipegate::gateway
