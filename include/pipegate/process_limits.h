#pragma once

#include <cstdint>

namespace pipegate {

/// @brief Raises this process's soft open-file limit (RLIMIT_NOFILE) to its hard limit, as
/// daemons and proxies that hold one descriptor per connection do.
/// @return The soft limit now in force; UINT64_MAX if unlimited or unknown.
/// Thread: any (it changes a process-wide limit; call it at startup).
uint64_t RaiseOpenFileLimit();

}  // namespace pipegate
