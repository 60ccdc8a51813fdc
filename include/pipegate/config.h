#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pipegate/status.h"

namespace pipegate {

/// @brief What an export is backed by. Room is left for kUnixSeqpacket and kExec.
enum class ExportKind : uint8_t { kFifo = 1, kUnix = 2 };

/// @brief What a remote client may do with an export.
enum class Access : uint8_t { kRead = 1, kWrite = 2, kDuplex = 3 };

const char* ExportKindName(ExportKind kind) noexcept;
const char* AccessName(Access access) noexcept;

/// @brief One `[[export]]` table (SPEC §3, §4).
struct ExportConfig {
  std::string name;
  ExportKind kind = ExportKind::kFifo;
  Access access = Access::kRead;
  std::string path;               ///< Absolute (relative paths resolve against the config file).
  bool create = false;            ///< Create a missing FIFO.
  uint32_t mode = 0600;           ///< Mode for a created FIFO.
  std::vector<std::string> allow; ///< Client identities; "*" admits any verified client.
  uint32_t max_clients = 0;       ///< 0 = unlimited. Default 1 for fifo/read, else unlimited.
  int line = 0;                   ///< Line of the `[[export]]` header, for messages.
};

/// @brief The whole gateway configuration file (SPEC §4).
struct GatewayConfig {
  std::vector<std::string> listen;  ///< "HOST:PORT" or "[V6]:PORT"; default ["0.0.0.0:7445"].
  std::string cert;
  std::string key;
  std::string client_ca;
  uint32_t workers = 0;             ///< 0 = one per core.
  std::vector<ExportConfig> exports;

  /// @return The export named @p name, or nullptr.
  const ExportConfig* Find(std::string_view name) const;
};

/// @brief One configuration error, with the line it was found on (0 if it has none).
struct ConfigError {
  int line = 0;
  std::string message;
};

/// @brief Either a valid config or every error found.
struct ConfigParseResult {
  std::optional<GatewayConfig> config;
  std::vector<ConfigError> errors;
};

/// @brief Parses and validates config text. @p base_dir resolves relative paths.
ConfigParseResult ParseGatewayConfig(std::string_view text, std::string_view base_dir);

/// @brief Reads and parses the file at @p path.
ConfigParseResult LoadGatewayConfig(const std::string& path);

/// @brief Bridge defaults from ~/.config/pipegate/config.toml (keys cert, key, ca).
struct ClientDefaults {
  std::string cert;
  std::string key;
  std::string ca;
};

/// @brief Reads client defaults; errors are kUsage with FILE:LINE.
Result<ClientDefaults> LoadClientDefaults(const std::string& path);

/// @brief Formats errors as `FILE:LINE: message` lines.
std::string FormatConfigErrors(const std::string& path, const std::vector<ConfigError>& errors);

}  // namespace pipegate
