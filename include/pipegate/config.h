#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pipegate/log.h"
#include "pipegate/status.h"

namespace pipegate {

/// @brief What an export is backed by. Room is left for kUnixSeqpacket.
/// kExec: a fresh process per stream, its stdin and stdout joined to the stream.
enum class ExportKind : uint8_t { kFifo = 1, kUnix = 2, kExec = 3 };

/// @brief The socket type of a `unix` export: a byte stream, or messages (SOCK_SEQPACKET).
enum class SocketType : uint8_t { kStream = 0, kSeqpacket = 1 };

/// @brief What a remote client may do with an export.
enum class Access : uint8_t { kRead = 1, kWrite = 2, kDuplex = 3 };

const char* ExportKindName(ExportKind kind) noexcept;
const char* AccessName(Access access) noexcept;

/// @brief One entry of an export's identity map (`connect_as`, `[[export.map]]`;
/// docs/security.md §11): clients matching `identity` open the export as `user`/`group`.
struct IdentityMapping {
  std::string identity;  ///< An allow-entry pattern (acl.h); `connect_as` is "*".
  std::string user;      ///< Local user name or uid.
  std::string group;     ///< Local group name or gid; "" = the user's primary group.
  int line = 0;          ///< Line of the entry (or of `connect_as`), for messages.
  // Filled by the gateway when it loads the file (ResolveIdentityMaps, gateway/identity_map.h);
  // the parser leaves them unset.
  bool resolved = false;
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> groups;  ///< Supplementary groups: the user's entries in the group file.
};

/// @brief What a fan-out export does with a reader that falls more than `fanout_lag` behind.
enum class FanoutPolicy : uint8_t {
  kDrop = 0,   ///< "drop", the default: the reader's stream ends with an error.
  kBlock = 1,  ///< "block": the gateway stops reading the FIFO until the reader catches up.
};

/// @brief One `[[export]]` table (SPEC §3, §4).
struct ExportConfig {
  std::string name;
  ExportKind kind = ExportKind::kFifo;
  Access access = Access::kRead;
  std::string path;                ///< Absolute (relative paths resolve against the config file).
  bool create = false;             ///< Create a missing FIFO.
  uint32_t mode = 0600;            ///< Mode for a created FIFO.
  std::vector<std::string> allow;  ///< Client identities; "*" admits any verified client.
  uint32_t max_clients = 0;        ///< 0 = unlimited. Default 1 for fifo/read, else unlimited.
  std::string owner;               ///< Owner of a created FIFO (user name or uid); "" = default.
  std::string group;               ///< Group of a created FIFO (group name or gid); "" = default.
  /// unix exports: `socket = "seqpacket"` carries messages, each kept whole end to end.
  SocketType socket_type = SocketType::kStream;
  uint32_t max_message_size = 65536;  ///< seqpacket: the largest message, either way.
  int line = 0;                       ///< Line of the `[[export]]` header, for messages.
  /// Identity mapping: opens are made as the account of the first entry whose identity matches
  /// the client; no match is "access denied". Empty = opens are made as the gateway itself.
  /// `connect_as = "user[:group]"` is one entry for "*".
  std::vector<IdentityMapping> identity_map;

  // Fan-out (fifo + read only): every attached reader gets every byte (docs/decisions.md).
  static constexpr uint64_t kDefaultFanoutLag = uint64_t{1} << 20;
  static constexpr uint64_t kMinFanoutLag = uint64_t{64} << 10;
  static constexpr uint64_t kMaxFanoutLag = uint64_t{64} << 20;
  static constexpr uint32_t kDefaultFanoutMaxClients = 64;
  static constexpr uint32_t kMaxFanoutMaxClients = 1024;
  bool fanout = false;                               ///< One FIFO reader shared by every stream.
  uint64_t fanout_lag = kDefaultFanoutLag;           ///< Bytes a reader may trail the newest read.
  FanoutPolicy fanout_policy = FanoutPolicy::kDrop;  ///< What happens past fanout_lag.

  // kind = "exec" (docs/decisions.md "Process exports"): what each stream runs.
  std::vector<std::string> command;  ///< argv; command[0] is absolute, executed without a shell.
  uint64_t timeout_ms = 3600000;     ///< A process older than this is killed; 0 = never.
};

/// @brief Lowest TLS version the gateway accepts (`tls_min_version`).
enum class TlsMinVersion : uint8_t {
  kTls13 = 0,  ///< "1.3", the default.
  kTls12 = 1,  ///< "1.2", with forward-secret AEAD cipher suites only.
};

/// @brief The `[limits]` table: what one client, or all of them, may take. Every
/// field has a default meant for a gateway serving a few hundred clients.
struct Limits {
  uint64_t handshake_timeout_ms = 10000;  ///< TCP accept to SETTINGS (TLS included).
  /// A connection with no stream open this long is closed; 0 = never (the default, because
  /// `pipegate mount` keeps an idle connection open by design).
  uint64_t idle_timeout_ms = 0;
  uint32_t max_connections = 1024;              ///< Connections in total (all workers).
  uint32_t max_connections_per_source = 128;    ///< Connections from one IP address.
  uint32_t max_streams_per_connection = 16384;  ///< Concurrent streams on one connection.
  /// The session window a connection is granted: what a client may have sent that is not yet
  /// in a local pipe, over all its streams (each stream gets at most 1 MiB of it).
  uint32_t max_bytes_in_flight_per_connection = 4u << 20;
  /// Sum of every connection's window; connections past it are refused. The default lets every
  /// one of max_connections have its full window.
  uint64_t max_bytes_in_flight = uint64_t{4} << 30;
  uint32_t max_frame_size = 65536;  ///< Largest DATA frame body accepted (offset excluded).
  uint32_t max_name_length = 128;   ///< Longest export name a client may ask for (≤ 128).

  // What an authenticated client can make the gateway hold (docs/security.md §5). Streams and
  // sessions are counted per identity (PeerIdentity::Name(), not Display()) on all connections.
  uint32_t max_streams = 32768;                     ///< Streams in total, attached or detached.
  uint32_t max_streams_per_identity = 16384;        ///< Streams of one identity, all connections.
  uint32_t max_detached_sessions_per_identity = 8;  ///< Sessions of one identity awaiting resume.
  /// Bytes sent to a client but not yet confirmed delivered, kept for replay after a resume.
  /// The client's stream window is clamped to the per-stream cap and its session window to the
  /// per-session cap; the identity and total caps stall sending (never drop) when reached.
  uint32_t max_replay_bytes_per_stream = 1u << 20;
  uint32_t max_replay_bytes_per_session = 16u << 20;
  uint64_t max_replay_bytes_per_identity = uint64_t{64} << 20;
  uint64_t max_replay_bytes = uint64_t{256} << 20;
  /// Encrypted bytes waiting for a client's socket; past it the gateway stops reading that
  /// connection until the client reads (a client that floods PINGs and never reads).
  uint32_t max_write_backlog_per_connection = 1u << 20;
  uint32_t max_pending_opens_per_connection = 16;  ///< OPENs waiting (--wait) on one connection.
  uint64_t max_open_wait_ms = 300000;  ///< A longer wait a client asks for is cut to this.
  uint32_t log_lines_per_second = 20;  ///< Per cause; more are counted and summarised.
  /// Processes of exec exports alive at once, over every export and client (each holds a
  /// process and two descriptors until it is reaped).
  uint32_t max_exec_processes = 64;

  /// @return How many connections the total bytes-in-flight budget admits.
  uint64_t ConnectionsByMemory() const {
    return max_bytes_in_flight / max_bytes_in_flight_per_connection;
  }
};

/// @brief The whole gateway configuration file (SPEC §4).
struct GatewayConfig {
  std::vector<std::string> listen;  ///< "HOST:PORT" or "[V6]:PORT"; default ["0.0.0.0:7445"].
  std::string cert;
  std::string key;
  std::string client_ca;
  uint32_t workers = 0;  ///< 0 = one per core.
  std::string crl;       ///< PEM CRL file checked for client certificates; "" = none.
  TlsMinVersion tls_min_version = TlsMinVersion::kTls13;
  bool hide_existence = false;  ///< A refused open answers "no such pipe".
  bool reload_revokes = true;   ///< A reload ends streams their identity may no longer use.
  uint32_t resume_ttl_s = 300;  ///< How long a detached session is kept for a resume.
  std::string user;             ///< Drop to this user after binding; "" = stay.
  std::string group;            ///< Drop to this group; "" = the user's primary group.
  /// Serve Prometheus metrics over plain HTTP here ("HOST:PORT", canonical as for listen);
  /// "" (the default) = no metrics listener.
  std::string metrics_listen;
  LogFormat log_format = LogFormat::kText;  ///< How log lines are written (stderr).
  /// Reload (as on SIGHUP) when the cert, key, client_ca or crl file changes.
  bool watch_certificates = true;
  Limits limits;
  std::vector<ExportConfig> exports;
  /// Line of each [gateway] key present in the file ("cert" -> 5), for the messages of the
  /// checks made after parsing (certificates, accounts); a key not in the file is absent.
  std::map<std::string, int> gateway_key_lines;

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

/// @brief Reads client defaults; a relative path resolves against the file's directory.
/// Errors are kUsage with FILE:LINE.
Result<ClientDefaults> LoadClientDefaults(const std::string& path);

/// @brief Every key the gateway's file accepts, as TABLE.KEY: "gateway.listen",
/// "limits.max_streams", "export.name" (so that tests can hold the documentation to them).
std::vector<std::string> GatewayConfigKeys();

/// @brief Formats errors as `FILE:LINE: message` lines.
std::string FormatConfigErrors(const std::string& path, const std::vector<ConfigError>& errors);

}  // namespace pipegate
