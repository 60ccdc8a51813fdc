#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "pipegate/status.h"

namespace pipegate {

inline constexpr uint16_t kDefaultPort = 7445;
inline constexpr size_t kMaxPipeNameLength = 128;

/// @brief A parsed remote pipe address (SPEC §2).
struct PipeAddress {
  std::string host;  ///< DNS name, IPv4 literal, or IPv6 literal without brackets.
  uint16_t port = kDefaultPort;
  std::string name;  ///< Empty only when parsed with NameRule::kOptional.

  /// @return The canonical form, `pipe://host:port/name` (IPv6 bracketed), used in messages.
  std::string ToString() const;
  /// @return True when host is an IPv4 or IPv6 literal.
  bool host_is_ip() const;
};

enum class NameRule { kRequired, kOptional };

/// @brief Parses `pipe://HOST[:PORT]/NAME`, `\\HOST\pipe\NAME` or `//HOST[:PORT]/pipe/NAME`.
/// Errors are kUsage with a message that says what is wrong (which character, for names).
Result<PipeAddress> ParseAddress(std::string_view text, NameRule rule = NameRule::kRequired);

/// @brief Checks a pipe name: 1–128 of `A-Z a-z 0-9 . _ -`, never `.` or `..`.
Status ValidatePipeName(std::string_view name);

/// @brief Parses a listen address `HOST:PORT` or `[V6]:PORT` (port 0 allowed).
Result<std::pair<std::string, uint16_t>> ParseHostPort(std::string_view text);

/// @brief Fills @p out from a numeric IPv4 or IPv6 address and @p port (an IPv6 address may name
/// its zone after '%', as in fe80::1%eth0; an unknown zone is ignored). No brackets, no lookup.
/// @return False if @p host is neither; @p out is then zeroed.
bool ParseNumericAddress(const std::string& host, uint16_t port, sockaddr_storage* out);

}  // namespace pipegate
