// Identity mapping: which local account an export's local pipe is opened as, for a client.

#include "identity_map.h"

#include <fmt/format.h>
#include <grp.h>
#include <unistd.h>

#include <algorithm>

#include "pipegate/account.h"

namespace pipegate::gateway {

std::string MappedAccount::Display() const {
  return fmt::format("{} (uid {}, gid {})", user, uid, gid);
}

std::optional<MappedAccount> MapIdentity(const ExportConfig& e, const PeerIdentity& peer) {
  for (const IdentityMapping& m : e.identity_map) {
    if (!m.resolved) continue;  // Never served: the loader refuses unresolved maps.
    if (!IsAllowed({m.identity}, peer)) continue;
    return MappedAccount{m.user, m.uid, m.gid, m.groups};
  }
  return std::nullopt;
}

namespace {

// The user's supplementary groups, as initgroups(3) would set them (primary group included).
std::vector<uint32_t> SupplementaryGroups(const std::string& user_name, gid_t gid) {
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 4; ++attempt) {
    int n = static_cast<int>(groups.size());
    if (getgrouplist(user_name.c_str(), gid, groups.data(), &n) >= 0) {
      groups.resize(static_cast<size_t>(n));
      return std::vector<uint32_t>(groups.begin(), groups.end());
    }
    groups.resize(static_cast<size_t>(std::max(n, 1) * 2));
  }
  return {gid};
}

}  // namespace

std::vector<ConfigError> ResolveIdentityMaps(GatewayConfig& config) {
  std::vector<ConfigError> errors;
  for (ExportConfig& e : config.exports) {
    for (IdentityMapping& m : e.identity_map) {
      m.resolved = false;
      Result<Account> a = ResolveAccount(m.user, m.group);
      if (!a) {
        errors.push_back(
            {m.line, fmt::format("export '{}': identity map: {}", e.name, a.error().message())});
        continue;
      }
      if (!a->uid || !a->gid) {
        errors.push_back({m.line, fmt::format("export '{}': identity map: user '{}' has no "
                                              "group; name one (user:group)",
                                              e.name, m.user)});
        continue;
      }
      // Root is never a mapping target: a client would get what the helper itself holds.
      if (*a->uid == 0 || *a->gid == 0) {
        errors.push_back({m.line, fmt::format("export '{}': identity map: refusing to open as "
                                              "root (user '{}', uid {}, gid {})",
                                              e.name, m.user, *a->uid, *a->gid)});
        continue;
      }
      m.uid = *a->uid;
      m.gid = *a->gid;
      m.groups = a->user_name.empty() ? std::vector<uint32_t>{m.gid}
                                      : SupplementaryGroups(a->user_name, m.gid);
      // getgrouplist() adds the group given, not the user's primary group from passwd: with
      // an explicit group, the account is that group plus the user's group-file memberships.
      m.resolved = true;
    }
  }
  return errors;
}

MappedAccount GatewayAccount(const GatewayConfig& config) {
  MappedAccount own;
  own.user = config.user.empty() ? "(the gateway's own account)" : config.user;
  own.uid = ::geteuid();
  own.gid = ::getegid();
  if (Result<Account> a = ResolveAccount(config.user, config.group); a) {
    if (a->uid) own.uid = *a->uid;
    if (a->gid) own.gid = *a->gid;
  }
  return own;
}

bool NeedsHelper(const MappedAccount& as, const MappedAccount& own) {
  return as.uid != own.uid || as.gid != own.gid;
}

std::vector<ConfigError> CheckMappingsPossible(const GatewayConfig& config, bool helper_available,
                                               const std::string& why_not) {
  std::vector<ConfigError> errors;
  if (helper_available) return errors;
  const MappedAccount own = GatewayAccount(config);
  for (const ExportConfig& e : config.exports) {
    if (e.kind == ExportKind::kExec) continue;  // Only names the account (PIPEGATE_USER).
    for (const IdentityMapping& m : e.identity_map) {
      if (!m.resolved) continue;
      if (NeedsHelper(MappedAccount{m.user, m.uid, m.gid, {}}, own)) {
        errors.push_back(
            {m.line, fmt::format("export '{}': cannot open as user '{}' (uid {}, gid {}): {}; "
                                 "only the gateway's own account (uid {}, gid {}) can be mapped "
                                 "without the identity helper, which needs pipegated started "
                                 "as root",
                                 e.name, m.user, m.uid, m.gid, why_not, own.uid, own.gid)});
      }
    }
  }
  return errors;
}

bool AnyMappingNeedsHelper(const GatewayConfig& config) {
  const MappedAccount own = GatewayAccount(config);
  for (const ExportConfig& e : config.exports) {
    if (e.kind == ExportKind::kExec) continue;
    for (const IdentityMapping& m : e.identity_map) {
      if (m.resolved && NeedsHelper(MappedAccount{m.user, m.uid, m.gid, {}}, own)) return true;
    }
  }
  return false;
}

}  // namespace pipegate::gateway
