#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pipegate/acl.h"
#include "pipegate/config.h"

namespace pipegate::gateway {

/// @brief The local account an open is made as (identity mapping, docs/security.md §11).
struct MappedAccount {
  std::string user;  ///< The user as the configuration names it (a name or a uid).
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> groups;  ///< Supplementary groups (the user's group-file entries).

  /// @return "alice (uid 1001, gid 1001)", safe to log (names were validated by the parser).
  std::string Display() const;
};

/// @brief Maps @p peer to the account that export @p e opens its local pipe as: the first
/// entry of `e.identity_map` whose identity pattern (an allow entry, acl.h) matches @p peer.
/// Pure; the map must have been resolved (ResolveIdentityMaps). Thread: any.
/// @return The account, or nullopt when no entry matches (or the export has no map: check
/// `e.identity_map.empty()` first, since "no map" means "as the gateway itself").
std::optional<MappedAccount> MapIdentity(const ExportConfig& e, const PeerIdentity& peer);

/// @brief Resolves every export's identity map in place: user and group names to ids, and the
/// user's supplementary groups, through the system databases. An unknown account, or a
/// mapping to uid 0 or gid 0, is an error.
/// @return Every problem, each with the line of its map entry (or `connect_as`).
std::vector<ConfigError> ResolveIdentityMaps(GatewayConfig& config);

/// @return The account the gateway's workers run as once privileges are dropped: the
/// configured `user`/`group`, else the process's effective ids.
MappedAccount GatewayAccount(const GatewayConfig& config);

/// @return True when opening as @p as needs the privileged helper: it is not the gateway's own
/// account (@p own), whose opens the workers make themselves.
bool NeedsHelper(const MappedAccount& as, const MappedAccount& own);

/// @brief Checks that every mapping of a resolved @p config can be carried out: with a helper
/// any account (but root) works; without one, only the gateway's own account does.
/// @param helper_available Whether the privileged helper runs (or will: started as root).
/// @param why_not What to say when it does not, e.g. "pipegated does not run as root".
/// @return Every mapping that cannot work, with its line.
std::vector<ConfigError> CheckMappingsPossible(const GatewayConfig& config, bool helper_available,
                                               const std::string& why_not);

/// @return True if some export of a resolved @p config maps to an account that NeedsHelper.
bool AnyMappingNeedsHelper(const GatewayConfig& config);

}  // namespace pipegate::gateway
