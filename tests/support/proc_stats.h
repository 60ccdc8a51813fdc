#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pipegate::testing {

/// @brief Resident set size of a process, from `/proc/PID/status` (VmRSS).
/// @return Bytes, or nullopt if the process is gone.
std::optional<uint64_t> ReadRssBytes(pid_t pid);

/// @brief True if process `pid` has `path` open (some `/proc/PID/fd/N` links to it).
/// Lets a test wait for "the gateway has opened the FIFO" without sleeping.
bool ProcessHasFileOpen(pid_t pid, const std::string& path);

/// @brief Counts the ESTABLISHED TCP connections (IPv4 and IPv6) that process `pid` holds whose
/// remote port is `remote_port`, by matching its socket inodes against /proc/net/tcp{,6}.
int CountTcpConnections(pid_t pid, uint16_t remote_port);

/// @brief The TCP and Unix sockets (with their Recv-Q/Send-Q) of the given processes, from
/// `ss -atxnp`, for failure messages about stalled streams: it shows which hop holds the bytes.
std::string SocketReport(const std::vector<pid_t>& pids);

}  // namespace pipegate::testing
