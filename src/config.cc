// The gateway configuration file (SPEC §4): TOML in, a validated GatewayConfig or every error
// with its line out. Sans-I/O (src/config_file.cc reads the file). This file holds [gateway]
// and [limits]; the [[export]] tables are src/config_export.cc, typed reading src/config_reader.h.
//
// Validation is strict on purpose. A typo in a key (`alow`) must not silently drop an access
// list, so unknown keys are errors, and every error is collected so that one run of
// `pipegated --check-config` shows them all.

#include "pipegate/config.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pipegate/address.h"

#include "config_export.h"
#include "config_reader.h"
#include "config_text.h"
// toml++ is used header-only and without exceptions (see cmake/Dependencies.cmake), with a fix
// for Debian's 3.3.0 (src/toml.h).
#include "toml.h"

namespace pipegate {
// The parser's text helpers (src/config_text.h).
using config_text::IsIpLiteral;
using config_text::IsKnown;
using config_text::LineOf;
using config_text::Quoted;
using config_text::Suggestion;
using config_text::TypeName;

namespace {

constexpr int64_t kMaxWorkers = 256;

constexpr std::array<std::string_view, 3> kTopLevelKeys = {"gateway", "export", "limits"};
constexpr std::array<std::string_view, 15> kGatewayKeys = {"listen",
                                                           "cert",
                                                           "key",
                                                           "client_ca",
                                                           "workers",
                                                           "crl",
                                                           "tls_min_version",
                                                           "hide_existence",
                                                           "reload_revokes",
                                                           "user",
                                                           "group",
                                                           "resume_ttl",
                                                           "metrics_listen",
                                                           "log_format",
                                                           "watch_certificates"};
constexpr std::array<std::string_view, 21> kLimitKeys = {
    "handshake_timeout",
    "idle_timeout",
    "max_connections",
    "max_connections_per_source",
    "max_streams_per_connection",
    "max_bytes_in_flight_per_connection",
    "max_bytes_in_flight",
    "max_frame_size",
    "max_name_length",
    "max_streams",
    "max_streams_per_identity",
    "max_detached_sessions_per_identity",
    "max_replay_bytes_per_stream",
    "max_replay_bytes_per_session",
    "max_replay_bytes_per_identity",
    "max_replay_bytes",
    "max_write_backlog_per_connection",
    "max_pending_opens_per_connection",
    "max_open_wait",
    "log_lines_per_second",
    "max_exec_processes",
};

// Bounds of the [limits] values. The frame size bounds come from the protocol: a peer must
// accept 16 KiB DATA bodies, and SETTINGS may not announce more than kMaxFramePayloadLimit
// (1 MiB, offset prefix included; see include/pipegate/frame.h).
constexpr int64_t kMinFrameSize = 16384;
constexpr int64_t kMaxFrameSize = (int64_t{1} << 20) - 8;
constexpr int64_t kMinWindow = 64 * 1024;
constexpr int64_t kMaxWindow = int64_t{1} << 30;
constexpr int64_t kMaxNameLength = 128;

// The hint for an unknown key of [gateway] or [limits] that belongs to the other table.
std::string MisplacedKey(std::string_view key, const std::string& subject) {
  if (subject == "gateway" && IsKnown(key, kLimitKeys)) return " (it belongs under [limits])";
  if (subject == "limits" && IsKnown(key, kGatewayKeys)) return " (it belongs under [gateway])";
  return "";
}

// Walks the parsed document and fills a GatewayConfig, recording every problem found.
class ConfigValidator : private ConfigReader {
 public:
  explicit ConfigValidator(std::string_view base_dir) : ConfigReader(base_dir, &errors_) {}

  ConfigParseResult Run(std::string_view text) {
    toml::parse_result parsed = toml::parse(text);
    if (!parsed) {
      const toml::parse_error& error = parsed.error();
      AddError(static_cast<int>(error.source().begin.line),
               "syntax error at column " + std::to_string(error.source().begin.column) + ": " +
                   std::string(error.description()));
      return Finish();
    }
    const toml::table& root = parsed.table();
    CheckTopLevel(root);

    const toml::node* gateway = root.get("gateway");
    if (gateway == nullptr) {
      AddError(0, "missing [gateway] table");
    } else if (const toml::table* table = gateway->as_table()) {
      ParseGateway(*table);
    } else {
      AddError(LineOf(*gateway), "gateway must be a table ([gateway]), not " +
                                     std::string(TypeName(gateway->type())));
    }

    if (const toml::node* limits = root.get("limits")) {
      if (const toml::table* table = limits->as_table()) {
        ParseLimits(*table);
      } else {
        AddError(LineOf(*limits),
                 "limits must be a table ([limits]), not " + std::string(TypeName(limits->type())));
      }
    }

    if (const toml::node* exports = root.get("export")) {
      ParseExports(*exports);
    }
    return Finish();
  }

 private:
  ConfigParseResult Finish() {
    ConfigParseResult result;
    if (errors_.empty()) {
      result.config = std::move(config_);
    } else {
      std::stable_sort(errors_.begin(), errors_.end(),
                       [](const ConfigError& a, const ConfigError& b) { return a.line < b.line; });
      result.errors = std::move(errors_);
    }
    return result;
  }

  void CheckTopLevel(const toml::table& root) {
    for (auto&& [key, value] : root) {
      if (IsKnown(key.str(), kTopLevelKeys)) {
        continue;
      }
      std::string hint = Suggestion(key.str(), kTopLevelKeys);
      if (hint.empty() && IsKnown(key.str(), kLimitKeys)) {
        hint = " (it belongs under [limits])";
      } else if (hint.empty() && IsKnown(key.str(), kGatewayKeys)) {
        hint = " (it belongs under [gateway])";
      } else if (hint.empty() && IsKnown(key.str(), kExportKeys)) {
        hint = " (it belongs under an [[export]])";
      }
      AddError(LineOf(key, value), "unknown top-level key " + Quoted(key.str()) + hint);
    }
  }

  void ParseGateway(const toml::table& table) {
    const std::string subject = "gateway";
    CheckKeys(table, subject, kGatewayKeys, &MisplacedKey);
    for (auto&& [key, value] : table)
      config_.gateway_key_lines[std::string(key.str())] = LineOf(key, value);

    if (const toml::node* listen = table.get("listen")) {
      ParseListen(*listen);
    } else {
      config_.listen.push_back("0.0.0.0:" + std::to_string(kDefaultPort));
    }
    if (std::optional<std::string> cert = GetPath(table, subject, "cert")) {
      config_.cert = std::move(*cert);
    }
    if (std::optional<std::string> key = GetPath(table, subject, "key")) {
      config_.key = std::move(*key);
    }
    if (std::optional<std::string> ca = GetPath(table, subject, "client_ca")) {
      config_.client_ca = std::move(*ca);
    }
    if (std::optional<int64_t> workers = GetInteger(table, subject, "workers", 0, kMaxWorkers)) {
      config_.workers = static_cast<uint32_t>(*workers);
    }
    if (table.get("crl") != nullptr) {
      if (std::optional<std::string> crl = GetPath(table, subject, "crl")) {
        config_.crl = std::move(*crl);
      }
    }
    if (std::optional<std::string> version =
            GetString(table, subject, "tls_min_version", /*required=*/false)) {
      if (*version == "1.3") {
        config_.tls_min_version = TlsMinVersion::kTls13;
      } else if (*version == "1.2") {
        config_.tls_min_version = TlsMinVersion::kTls12;
      } else {
        AddError(LineOf(*table.get("tls_min_version")),
                 subject + ": tls_min_version must be \"1.3\" (the default) or \"1.2\", not " +
                     Quoted(*version));
      }
    }
    if (std::optional<bool> hide = GetBool(table, subject, "hide_existence")) {
      config_.hide_existence = *hide;
    }
    if (std::optional<bool> revokes = GetBool(table, subject, "reload_revokes")) {
      config_.reload_revokes = *revokes;
    }
    if (std::optional<int64_t> ttl = GetInteger(table, subject, "resume_ttl", 1, 86400)) {
      config_.resume_ttl_s = static_cast<uint32_t>(*ttl);
    }
    if (std::optional<std::string> user = GetAccountName(table, subject, "user")) {
      config_.user = std::move(*user);
    }
    if (std::optional<std::string> group = GetAccountName(table, subject, "group")) {
      config_.group = std::move(*group);
    }
    if (const toml::node* metrics = table.get("metrics_listen")) {
      const toml::value<std::string>* text = metrics->as_string();
      if (text == nullptr) {
        CheckType(subject, "metrics_listen", *metrics, toml::node_type::string);
      } else if (!text->get().empty()) {
        if (std::optional<std::string> canonical =
                CanonicalListenAddress(text->get(), LineOf(*metrics), "metrics_listen")) {
          config_.metrics_listen = std::move(*canonical);
        }
      }
    }
    if (std::optional<std::string> format =
            GetString(table, subject, "log_format", /*required=*/false)) {
      if (*format == "text") {
        config_.log_format = LogFormat::kText;
      } else if (*format == "json") {
        config_.log_format = LogFormat::kJson;
      } else {
        AddError(LineOf(*table.get("log_format")),
                 subject + ": log_format must be \"text\" (the default) or \"json\", not " +
                     Quoted(*format));
      }
    }
    if (std::optional<bool> watch = GetBool(table, subject, "watch_certificates")) {
      config_.watch_certificates = *watch;
    }
  }

  // An IP "HOST:PORT" (or "[V6]:PORT") in canonical form, or nullopt with the error added.
  std::optional<std::string> CanonicalListenAddress(const std::string& text, int line,
                                                    std::string_view key) {
    Result<std::pair<std::string, uint16_t>> host_port = ParseHostPort(text);
    if (!host_port) {
      AddError(line, "gateway: " + std::string(key) + " address " + Quoted(text) + ": " +
                         host_port.error().message());
      return std::nullopt;
    }
    const std::string& host = host_port->first;
    if (!IsIpLiteral(host)) {
      AddError(line, "gateway: " + std::string(key) + " address " + Quoted(text) +
                         ": the host must be an IP address (such as 0.0.0.0, 127.0.0.1 or "
                         "[::]), not a name");
      return std::nullopt;
    }
    std::string canonical = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return canonical + ":" + std::to_string(host_port->second);
  }

  // One line per [limits] key, in the order of the example config: a table, not logic to split
  // (longer than 60 lines for that reason).
  void ParseLimits(const toml::table& table) {
    const std::string subject = "limits";
    CheckKeys(table, subject, kLimitKeys, &MisplacedKey);
    Limits& l = config_.limits;
    if (auto v = GetSeconds(table, subject, "handshake_timeout", 100, 3600 * 1000, false)) {
      l.handshake_timeout_ms = *v;
    }
    if (auto v = GetSeconds(table, subject, "idle_timeout", 1000, 7 * 86400 * 1000, true)) {
      l.idle_timeout_ms = *v;
    }
    if (auto v = GetInteger(table, subject, "max_connections", 1, 1000000)) {
      l.max_connections = static_cast<uint32_t>(*v);
    }
    if (auto v = GetInteger(table, subject, "max_connections_per_source", 1, 1000000)) {
      l.max_connections_per_source = static_cast<uint32_t>(*v);
    }
    if (auto v = GetInteger(table, subject, "max_streams_per_connection", 1, 65536)) {
      l.max_streams_per_connection = static_cast<uint32_t>(*v);
    }
    if (auto v = GetBytes(table, subject, "max_bytes_in_flight_per_connection", kMinWindow,
                          kMaxWindow)) {
      l.max_bytes_in_flight_per_connection = static_cast<uint32_t>(*v);
    }
    if (auto v = GetBytes(table, subject, "max_bytes_in_flight", kMinWindow, int64_t{1} << 40)) {
      l.max_bytes_in_flight = *v;
    }
    if (auto v = GetBytes(table, subject, "max_frame_size", kMinFrameSize, kMaxFrameSize)) {
      l.max_frame_size = static_cast<uint32_t>(*v);
    }
    if (auto v = GetInteger(table, subject, "max_name_length", 1, kMaxNameLength)) {
      l.max_name_length = static_cast<uint32_t>(*v);
    }
    if (auto v = GetInteger(table, subject, "max_streams", 1, 1000000)) {
      l.max_streams = static_cast<uint32_t>(*v);
    }
    if (auto v = GetInteger(table, subject, "max_streams_per_identity", 1, 1000000)) {
      l.max_streams_per_identity = static_cast<uint32_t>(*v);
    }
    if (auto v = GetInteger(table, subject, "max_detached_sessions_per_identity", 0, 1000000)) {
      l.max_detached_sessions_per_identity = static_cast<uint32_t>(*v);
    }
    if (auto v = GetBytes(table, subject, "max_replay_bytes_per_stream", kMinWindow, kMaxWindow)) {
      l.max_replay_bytes_per_stream = static_cast<uint32_t>(*v);
    }
    if (auto v = GetBytes(table, subject, "max_replay_bytes_per_session", kMinWindow, kMaxWindow)) {
      l.max_replay_bytes_per_session = static_cast<uint32_t>(*v);
    }
    if (auto v = GetBytes(table, subject, "max_replay_bytes_per_identity", kMinWindow,
                          int64_t{1} << 40)) {
      l.max_replay_bytes_per_identity = *v;
    }
    if (auto v = GetBytes(table, subject, "max_replay_bytes", kMinWindow, int64_t{1} << 40)) {
      l.max_replay_bytes = *v;
    }
    if (auto v =
            GetBytes(table, subject, "max_write_backlog_per_connection", kMinWindow, kMaxWindow)) {
      l.max_write_backlog_per_connection = static_cast<uint32_t>(*v);
    }
    if (auto v = GetInteger(table, subject, "max_pending_opens_per_connection", 0, 65536)) {
      l.max_pending_opens_per_connection = static_cast<uint32_t>(*v);
    }
    if (auto v = GetSeconds(table, subject, "max_open_wait", 0, 86400 * 1000, true)) {
      l.max_open_wait_ms = *v;
    }
    if (auto v = GetInteger(table, subject, "log_lines_per_second", 1, 1000000)) {
      l.log_lines_per_second = static_cast<uint32_t>(*v);
    }
    if (auto v = GetInteger(table, subject, "max_exec_processes", 0, 65536)) {
      l.max_exec_processes = static_cast<uint32_t>(*v);
    }
    if (l.max_streams_per_identity > l.max_streams) l.max_streams_per_identity = l.max_streams;
    if (l.max_replay_bytes_per_stream > l.max_replay_bytes_per_session) {
      l.max_replay_bytes_per_stream = l.max_replay_bytes_per_session;
    }
    if (l.max_bytes_in_flight < l.max_bytes_in_flight_per_connection) {
      AddError(LineOf(table), subject + ": max_bytes_in_flight (" +
                                  std::to_string(l.max_bytes_in_flight) +
                                  ") must be at least max_bytes_in_flight_per_connection (" +
                                  std::to_string(l.max_bytes_in_flight_per_connection) + ")");
    }
    if (l.max_connections_per_source > l.max_connections) {
      l.max_connections_per_source = l.max_connections;  // Harmless; the total limit rules.
    }
  }

  // Stores each listen address in canonical form, `host:port` or `[v6]:port`.
  void ParseListen(const toml::node& node) {
    const toml::array* array = node.as_array();
    if (array == nullptr) {
      CheckType("gateway", "listen", node, toml::node_type::array);
      return;
    }
    if (array->empty()) {
      AddError(LineOf(node), "gateway: listen must not be empty (omit it for 0.0.0.0:7445)");
      return;
    }
    std::map<std::string, int> seen;
    for (const toml::node& element : *array) {
      const int line = LineOf(element) != 0 ? LineOf(element) : LineOf(node);
      const toml::value<std::string>* text = element.as_string();
      if (text == nullptr) {
        AddError(line, "gateway: listen entries must be strings, not " +
                           std::string(TypeName(element.type())));
        continue;
      }
      std::optional<std::string> address = CanonicalListenAddress(text->get(), line, "listen");
      if (!address) continue;
      std::string canonical = std::move(*address);
      auto [it, inserted] = seen.emplace(canonical, line);
      if (!inserted) {
        AddError(line, "gateway: listen address " + Quoted(canonical) +
                           " is repeated (first on line " + std::to_string(it->second) + ")");
        continue;
      }
      config_.listen.push_back(std::move(canonical));
    }
  }

  void ParseExports(const toml::node& node) {
    if (node.is_table()) {
      AddError(LineOf(node), "export must be an array of tables: write [[export]], not [export]");
      return;
    }
    const toml::array* array = node.as_array();
    if (array == nullptr) {
      AddError(LineOf(node), "export must be an array of tables ([[export]]), not " +
                                 std::string(TypeName(node.type())));
      return;
    }
    int index = 0;
    for (const toml::node& element : *array) {
      ++index;
      const toml::table* table = element.as_table();
      if (table == nullptr) {
        AddError(LineOf(element) != 0 ? LineOf(element) : LineOf(node),
                 "export #" + std::to_string(index) + " must be a table, not " +
                     TypeName(element.type()));
        continue;
      }
      config_.exports.push_back(
          ParseExportTable(*this, *table, index, config_.limits, &export_lines_));
    }
  }

  GatewayConfig config_;
  std::vector<ConfigError> errors_;
  std::map<std::string, int> export_lines_;
};

}  // namespace

const char* ExportKindName(ExportKind kind) noexcept {
  switch (kind) {
    case ExportKind::kFifo:
      return "fifo";
    case ExportKind::kUnix:
      return "unix";
    case ExportKind::kExec:
      return "exec";
  }
  return "unknown";
}

const char* AccessName(Access access) noexcept {
  switch (access) {
    case Access::kRead:
      return "read";
    case Access::kWrite:
      return "write";
    case Access::kDuplex:
      return "duplex";
  }
  return "unknown";
}

const ExportConfig* GatewayConfig::Find(std::string_view name) const {
  for (const ExportConfig& e : exports) {
    if (e.name == name) {
      return &e;
    }
  }
  return nullptr;
}

ConfigParseResult ParseGatewayConfig(std::string_view text, std::string_view base_dir) {
  return ConfigValidator(base_dir).Run(text);
}

std::vector<std::string> GatewayConfigKeys() {
  std::vector<std::string> keys;
  for (std::string_view k : kGatewayKeys) keys.push_back("gateway." + std::string(k));
  for (std::string_view k : kLimitKeys) keys.push_back("limits." + std::string(k));
  for (std::string_view k : kExportKeys) keys.push_back("export." + std::string(k));
  return keys;
}

std::string FormatConfigErrors(const std::string& path, const std::vector<ConfigError>& errors) {
  std::string out;
  for (const ConfigError& error : errors) {
    out += path;
    if (error.line > 0) {
      out += ":" + std::to_string(error.line);
    }
    out += ": " + error.message + "\n";
  }
  return out;
}

}  // namespace pipegate
