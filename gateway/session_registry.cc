#include "session_registry.h"

namespace pipegate::gateway {

void SessionRegistry::Register(const std::string& id, const SessionRecord& record) {
  std::lock_guard<std::mutex> lock(mu_);
  sessions_[id] = record;
}

bool SessionRegistry::Find(const std::string& id, SessionRecord* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return false;
  *out = it->second;
  return true;
}

void SessionRegistry::UpdateKey(const std::string& id, const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(id);
  if (it != sessions_.end()) it->second.key = key;
}

void SessionRegistry::Unregister(const std::string& id, const Session* session) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(id);
  if (it != sessions_.end() && it->second.session == session) sessions_.erase(it);
}

bool SessionRegistry::TryDetach(IdentityUsage* usage, const Limits& limits) {
  if (usage != nullptr &&
      usage->detached_sessions.fetch_add(1) >= limits.max_detached_sessions_per_identity) {
    usage->detached_sessions.fetch_sub(1);
    return false;
  }
  uint32_t n = detached_sessions_.load();
  do {
    if (n >= limits.max_connections) {
      if (usage != nullptr) usage->detached_sessions.fetch_sub(1);
      return false;
    }
  } while (!detached_sessions_.compare_exchange_weak(n, n + 1));
  return true;
}

std::shared_ptr<IdentityUsage> IdentityLedger::For(const std::string& identity) {
  std::lock_guard<std::mutex> lock(mu_);
  // Sweep entries of identities that have gone, so that many one-off identities cost nothing.
  if (++lookups_ % 256 == 0) {
    std::erase_if(by_identity_, [](const auto& entry) { return entry.second.expired(); });
  }
  std::weak_ptr<IdentityUsage>& slot = by_identity_[identity];
  std::shared_ptr<IdentityUsage> usage = slot.lock();
  if (!usage) {
    usage = std::make_shared<IdentityUsage>();
    slot = usage;
  }
  return usage;
}

size_t IdentityLedger::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const auto& entry : by_identity_) n += entry.second.expired() ? 0 : 1;
  return n;
}

}  // namespace pipegate::gateway
