#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "pipegate/status.h"

namespace pipegate {

/// @brief A resolved user and group: the gateway's `user`/`group` and an export's FIFO owner,
/// and the bridge's `mount --owner/--group`.
struct Account {
  std::string user_name;  ///< As resolved; empty when only a group was given.
  std::string group_name;
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
};

/// @brief Resolves `user` and `group` names (or numeric ids) through the system databases.
/// Without a group, a user's primary group is used. A numeric id needs no entry (as chown(1)).
/// @return The account, or kUsage naming what does not exist ("no such user 'x'").
Result<Account> ResolveAccount(const std::string& user, const std::string& group);

}  // namespace pipegate
