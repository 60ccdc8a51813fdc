#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "pipegate/account.h"
#include "pipegate/config.h"
#include "pipegate/status.h"

namespace pipegate {

/// @brief Checks what the config parser cannot: that the gateway's user and group and every
/// export's FIFO owner and group exist. Used at startup, on reload and by --check-config.
Status CheckAccounts(const GatewayConfig& config);

/// @brief Switches the process to the configured `user`/`group` (supplementary groups from the
/// user's entry), for good: it then checks that root cannot be regained. Call after binding the
/// listeners and creating FIFOs, before starting threads. Without `user` and `group` it does
/// nothing; when not running as root it accepts only the current user and group.
/// @return OK (with a log line saying what it did), or kUsage.
Status DropPrivileges(const GatewayConfig& config);

/// @brief Raises the soft RLIMIT_NOFILE to the hard limit (each connection needs a descriptor,
/// each stream one more) and warns when the hard limit is below what max_connections needs.
/// @return The soft limit now in force (UINT64_MAX if unlimited or unknown).
uint64_t RaiseFileLimit(const Limits& limits);

/// @return max_streams, lowered so that max_connections and every stream fit in @p file_limit
/// descriptors (with 64 to spare): a stream past the limit would fail in accept() or open()
/// for everyone, while a refused OPEN fails only for the client that asked.
uint32_t StreamsTheFileLimitAllows(const Limits& limits, uint64_t file_limit);

/// @brief Gives a FIFO the gateway has just created the export's mode and owner. It opens the
/// FIFO without following symlinks and changes the open file, so that a symlink swapped in after
/// mkfifo() cannot redirect the change.
/// @param owner,group The export's owner/group, else the gateway's user/group; "" = leave.
Status SetFifoModeAndOwner(const std::string& path, uint32_t mode, const std::string& owner,
                           const std::string& group);

/// @brief As above, on a FIFO already open as @p fd (the caller keeps it); @p path is for
/// messages.
Status SetFifoModeAndOwner(int fd, const std::string& path, uint32_t mode, const std::string& owner,
                           const std::string& group);

}  // namespace pipegate
