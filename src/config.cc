// The gateway configuration file (SPEC §4): TOML in, a validated GatewayConfig or every error
// with its line out. Sans-I/O except LoadGatewayConfig, which only reads the file.
//
// Validation is strict on purpose. A typo in a key (`alow`) must not silently drop an access
// list, so unknown keys are errors, and every error is collected so that one run of
// `pipegated --check-config` shows them all.

#include "pipegate/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "pipegate/acl.h"
#include "pipegate/address.h"
#include "pipegate/local_path.h"

// toml++ is used header-only and without exceptions (see cmake/Dependencies.cmake), with a fix
// for Debian's 3.3.0 (src/toml.h).
#include "config_text.h"
#include "toml.h"

namespace pipegate {
// The parser's text helpers (src/config_text.h).
using config_text::HasSurroundingSpace;
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
constexpr std::array<std::string_view, 19> kExportKeys = {
    "name", "kind", "access", "path", "create", "mode", "allow", "max_clients", "owner", "group",
    "socket", "max_message_size", "connect_as", "map",
    // Fan-out.
    "fanout", "fanout_lag", "fanout_policy",
    // Exec.
    "command", "timeout"};
// Keys of one [[export.map]] entry (identity mapping).
constexpr std::array<std::string_view, 3> kMapKeys = {"identity", "user", "group"};
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
constexpr int64_t kMaxMessageSize = int64_t{1} << 20;
constexpr int64_t kMaxNameLength = 128;

// Walks the parsed document and fills a GatewayConfig, recording every problem found.
class ConfigValidator {
 public:
  explicit ConfigValidator(std::string_view base_dir) : base_dir_(base_dir) {}

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
  void AddError(int line, std::string message) {
    errors_.push_back(ConfigError{line, std::move(message)});
  }

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

  // Reports an unexpected type for @p key and returns false, or returns true.
  bool CheckType(const std::string& subject, std::string_view key, const toml::node& node,
                 toml::node_type want) {
    if (node.type() == want) {
      return true;
    }
    AddError(LineOf(node), subject + ": " + std::string(key) + " must be " + TypeName(want) +
                               ", not " + TypeName(node.type()));
    return false;
  }

  // Returns the string at @p key, or nullopt if absent (reported when @p required) or mistyped.
  std::optional<std::string> GetString(const toml::table& table, const std::string& subject,
                                       std::string_view key, bool required) {
    const toml::node* node = table.get(key);
    if (node == nullptr) {
      if (required) {
        AddError(LineOf(table), subject + ": missing required key " + Quoted(key));
      }
      return std::nullopt;
    }
    if (!CheckType(subject, key, *node, toml::node_type::string)) {
      return std::nullopt;
    }
    return node->as_string()->get();
  }

  // Returns the integer at @p key if present, well typed and within [lo, hi].
  std::optional<int64_t> GetInteger(const toml::table& table, const std::string& subject,
                                    std::string_view key, int64_t lo, int64_t hi) {
    const toml::node* node = table.get(key);
    if (node == nullptr || !CheckType(subject, key, *node, toml::node_type::integer)) {
      return std::nullopt;
    }
    const int64_t value = node->as_integer()->get();
    if (value < lo || value > hi) {
      AddError(LineOf(*node), subject + ": " + std::string(key) + " must be from " +
                                  std::to_string(lo) + " to " + std::to_string(hi) + ", not " +
                                  std::to_string(value));
      return std::nullopt;
    }
    return value;
  }

  // Resolves @p path against the config file's directory and normalizes it lexically.
  std::string ResolvePath(const std::string& path) const {
    std::filesystem::path resolved(path);
    if (resolved.is_relative() && !base_dir_.empty()) {
      resolved = std::filesystem::path(base_dir_) / resolved;
    }
    return resolved.lexically_normal().string();
  }

  // Reads a required, non-empty file path and resolves it. Returns nullopt on any error.
  std::optional<std::string> GetPath(const toml::table& table, const std::string& subject,
                                     std::string_view key) {
    std::optional<std::string> value = GetString(table, subject, key, /*required=*/true);
    if (!value) {
      return std::nullopt;
    }
    const int line = LineOf(*table.get(key));
    if (value->empty()) {
      AddError(line, subject + ": " + std::string(key) + " must not be empty");
      return std::nullopt;
    }
    if (value->find('\0') != std::string::npos) {
      AddError(line, subject + ": " + std::string(key) + " contains a NUL character");
      return std::nullopt;
    }
    return ResolvePath(*value);
  }

  template <size_t N>
  void CheckKeys(const toml::table& table, const std::string& subject,
                 const std::array<std::string_view, N>& known) {
    for (auto&& [key, value] : table) {
      if (!IsKnown(key.str(), known)) {
        std::string hint = Suggestion(key.str(), known);
        if (hint.empty() && subject == "gateway" && IsKnown(key.str(), kLimitKeys)) {
          hint = " (it belongs under [limits])";
        } else if (hint.empty() && subject == "limits" && IsKnown(key.str(), kGatewayKeys)) {
          hint = " (it belongs under [gateway])";
        }
        AddError(LineOf(key, value), subject + ": unknown key " + Quoted(key.str()) + hint);
      }
    }
  }

  void ParseGateway(const toml::table& table) {
    const std::string subject = "gateway";
    CheckKeys(table, subject, kGatewayKeys);
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

  std::optional<bool> GetBool(const toml::table& table, const std::string& subject,
                              std::string_view key) {
    const toml::node* node = table.get(key);
    if (node == nullptr || !CheckType(subject, key, *node, toml::node_type::boolean)) {
      return std::nullopt;
    }
    return node->as_boolean()->get();
  }

  // A user or group: a name as useradd accepts it, or a numeric id. Whether it exists is checked
  // when the gateway starts (and by --check-config), not here: parsing stays free of I/O.
  std::optional<std::string> GetAccountName(const toml::table& table, const std::string& subject,
                                            std::string_view key) {
    std::optional<std::string> value = GetString(table, subject, key, /*required=*/false);
    if (!value) {
      return std::nullopt;
    }
    const bool valid = !value->empty() && value->size() <= 32 && (*value)[0] != '-' &&
                       std::all_of(value->begin(), value->end(), [](char c) {
                         return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
                       });
    if (!valid) {
      AddError(LineOf(*table.get(key)), subject + ": " + std::string(key) + " " + Quoted(*value) +
                                            " is not a user or group name or a numeric id");
      return std::nullopt;
    }
    return value;
  }

  // A duration in seconds: an integer or a float. Returns milliseconds within [lo_ms, hi_ms];
  // 0 is also accepted when @p zero_ok (it means "never").
  std::optional<uint64_t> GetSeconds(const toml::table& table, const std::string& subject,
                                     std::string_view key, uint64_t lo_ms, uint64_t hi_ms,
                                     bool zero_ok) {
    const toml::node* node = table.get(key);
    if (node == nullptr) {
      return std::nullopt;
    }
    double seconds = 0;
    if (const toml::value<int64_t>* integer = node->as_integer()) {
      seconds = static_cast<double>(integer->get());
    } else if (const toml::value<double>* floating = node->as_floating_point()) {
      seconds = floating->get();
    } else {
      AddError(LineOf(*node), subject + ": " + std::string(key) +
                                  " must be a number of seconds, not " + TypeName(node->type()));
      return std::nullopt;
    }
    if (zero_ok && seconds == 0) {
      return 0;
    }
    const double ms = seconds * 1000.0;
    if (!(ms >= static_cast<double>(lo_ms) && ms <= static_cast<double>(hi_ms))) {
      AddError(LineOf(*node), subject + ": " + std::string(key) + " must be from " +
                                  FormatSeconds(lo_ms) + " to " + FormatSeconds(hi_ms) +
                                  " seconds" + (zero_ok ? " (or 0 for never)" : "") + ", not " +
                                  FormatSeconds(ms));
      return std::nullopt;
    }
    return static_cast<uint64_t>(ms);
  }

  static std::string FormatSeconds(double ms) {
    std::string text = std::to_string(ms / 1000.0);
    text.erase(text.find_last_not_of('0') + 1);
    if (!text.empty() && text.back() == '.') {
      text.pop_back();
    }
    return text;
  }

  // A byte count: an integer, or a string with a binary suffix ("64K", "16M", "1G"; "KiB",
  // "MiB" and "GiB" are accepted too). Returns it if within [lo, hi].
  std::optional<uint64_t> GetBytes(const toml::table& table, const std::string& subject,
                                   std::string_view key, int64_t lo, int64_t hi) {
    const toml::node* node = table.get(key);
    if (node == nullptr) {
      return std::nullopt;
    }
    const int line = LineOf(*node);
    int64_t value = 0;
    if (const toml::value<int64_t>* integer = node->as_integer()) {
      value = integer->get();
    } else if (const toml::value<std::string>* text = node->as_string()) {
      std::optional<int64_t> parsed = ParseByteSize(text->get());
      if (!parsed) {
        AddError(line, subject + ": " + std::string(key) + " " + Quoted(text->get()) +
                           " is not a size (write bytes, or a number with K, M or G)");
        return std::nullopt;
      }
      value = *parsed;
    } else {
      AddError(line, subject + ": " + std::string(key) + " must be a size in bytes, not " +
                         TypeName(node->type()));
      return std::nullopt;
    }
    if (value < lo || value > hi) {
      AddError(line, subject + ": " + std::string(key) + " must be from " + std::to_string(lo) +
                         " to " + std::to_string(hi) + " bytes, not " + std::to_string(value));
      return std::nullopt;
    }
    return static_cast<uint64_t>(value);
  }

  static std::optional<int64_t> ParseByteSize(std::string_view text) {
    size_t digits = 0;
    int64_t value = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
      if (value > (int64_t{1} << 40)) {
        return std::nullopt;
      }
      value = value * 10 + (text[digits] - '0');
      ++digits;
    }
    if (digits == 0) {
      return std::nullopt;
    }
    std::string_view suffix = text.substr(digits);
    if (!suffix.empty() && suffix.front() == ' ') {
      suffix.remove_prefix(1);
    }
    int shift = 0;
    if (suffix.empty() || suffix == "B") {
      shift = 0;
    } else if (suffix == "K" || suffix == "KiB") {
      shift = 10;
    } else if (suffix == "M" || suffix == "MiB") {
      shift = 20;
    } else if (suffix == "G" || suffix == "GiB") {
      shift = 30;
    } else {
      return std::nullopt;
    }
    return value << shift;
  }

  // One line per [limits] key, in the order of the example config: a table, not logic to split
  // (longer than 60 lines for that reason).
  void ParseLimits(const toml::table& table) {
    const std::string subject = "limits";
    CheckKeys(table, subject, kLimitKeys);
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
      ParseExport(*table, index);
    }
  }

  void ParseExport(const toml::table& table, int index) {
    ExportConfig out;
    out.line = LineOf(table);
    std::string subject = "export #" + std::to_string(index);

    // The name comes first so that later messages can say which export they are about.
    if (std::optional<std::string> name = GetString(table, subject, "name", /*required=*/true)) {
      Status status = ValidatePipeName(*name);
      if (status.ok()) {
        subject = "export " + Quoted(*name);
        out.name = std::move(*name);
        auto [it, inserted] = export_lines_.emplace(out.name, out.line);
        if (!inserted) {
          AddError(out.line, subject + ": duplicate export name (first defined on line " +
                                 std::to_string(it->second) + ")");
        }
      } else {
        AddError(LineOf(*table.get("name")), subject + ": " + status.message());
      }
    }
    CheckKeys(table, subject, kExportKeys);

    std::optional<ExportKind> kind = ParseKind(table, subject);
    if (kind) {
      out.kind = *kind;
    }
    if (std::optional<Access> access = ParseAccess(table, subject, kind)) {
      out.access = *access;
    }
    if (kind == ExportKind::kExec) {
      ParseExecOptions(table, subject, out);
    } else if (std::optional<std::string> path = GetPath(table, subject, "path")) {
      if (std::filesystem::path(*path).is_absolute()) {
        out.path = std::move(*path);
      } else {
        AddError(LineOf(*table.get("path")),
                 subject + ": path " + Quoted(*path) + " must be absolute");
      }
    }
    if (kind != ExportKind::kExec) {
      for (std::string_view key : {std::string_view("command"), std::string_view("timeout")}) {
        if (const toml::node* node = table.get(key)) {
          AddError(LineOf(*node),
                   subject + ": " + std::string(key) + " only applies to exec exports");
        }
      }
    }
    ParseFifoOptions(table, subject, kind, out);
    ParseAllow(table, subject, out);
    if (std::optional<std::string> owner = GetAccountName(table, subject, "owner")) {
      out.owner = std::move(*owner);
    }
    if (std::optional<std::string> group = GetAccountName(table, subject, "group")) {
      out.group = std::move(*group);
    }
    if (kind == ExportKind::kFifo && !out.create && (!out.owner.empty() || !out.group.empty())) {
      AddError(out.line, subject + ": owner and group only apply to a FIFO the gateway creates " +
                             "(create = true)");
    }

    ParseMessageOptions(table, subject, kind, out);

    // Default instances (SPEC §3): one reader of a read FIFO, a few processes of an exec
    // export (each client costs a process), otherwise unlimited.
    out.max_clients = (out.kind == ExportKind::kFifo && out.access == Access::kRead) ? 1
                      : out.kind == ExportKind::kExec                                ? 16
                                                                                     : 0;
    if (std::optional<int64_t> max_clients =
            GetInteger(table, subject, "max_clients", 0, std::numeric_limits<uint32_t>::max())) {
      out.max_clients = static_cast<uint32_t>(*max_clients);
    }
    ParseFanout(table, subject, kind, out);

    ParseIdentityMap(table, subject, out);

    // Only a config without errors is returned, so a broken export can be kept here.
    config_.exports.push_back(std::move(out));
  }

  // `socket = "seqpacket"` makes a unix export carry messages (SOCK_SEQPACKET), each at most
  // max_message_size bytes. A message is held whole on the receiving side until it can be
  // written, so it must fit in one stream's window and in its replay allowance.
  void ParseMessageOptions(const toml::table& table, const std::string& subject,
                           std::optional<ExportKind> kind, ExportConfig& out) {
    if (const toml::node* node = table.get("socket")) {
      std::optional<std::string> text = GetString(table, subject, "socket", /*required=*/false);
      if (kind && kind != ExportKind::kUnix) {
        AddError(LineOf(*node), subject + ": socket only applies to unix exports");
      } else if (text && *text == "seqpacket") {
        out.socket_type = SocketType::kSeqpacket;
      } else if (text && *text != "stream") {
        AddError(LineOf(*node),
                 subject + ": unknown socket " + Quoted(*text) + " (expected stream or seqpacket)");
      }
    }
    const toml::node* max = table.get("max_message_size");
    if (max == nullptr) return;
    if (out.socket_type != SocketType::kSeqpacket) {
      AddError(LineOf(*max),
               subject + ": max_message_size only applies to socket = \"seqpacket\" exports");
      return;
    }
    const Limits& l = config_.limits;
    const int64_t fits = std::min<int64_t>(
        {kMaxMessageSize, l.max_bytes_in_flight_per_connection, l.max_replay_bytes_per_stream});
    if (std::optional<uint64_t> v = GetBytes(table, subject, "max_message_size", 1, fits)) {
      out.max_message_size = static_cast<uint32_t>(*v);
    }
  }

  // `fanout`, `fanout_lag` and `fanout_policy`. Fan-out shares one reader of a FIFO, so it fits
  // only a fifo export read by clients. Its reader count is always capped: max_clients defaults
  // to 64 and may not be 0 (unlimited), as every reader holds two descriptors and a stream.
  void ParseFanout(const toml::table& table, const std::string& subject,
                   std::optional<ExportKind> kind, ExportConfig& out) {
    if (std::optional<bool> fanout = GetBool(table, subject, "fanout")) {
      out.fanout = *fanout;
      if (out.fanout && kind && (out.kind != ExportKind::kFifo || out.access != Access::kRead)) {
        AddError(LineOf(*table.get("fanout")),
                 subject + ": fanout only applies to a fifo export with access = \"read\"");
        out.fanout = false;
      }
    }
    if (std::optional<uint64_t> lag =
            GetBytes(table, subject, "fanout_lag", ExportConfig::kMinFanoutLag,
                     ExportConfig::kMaxFanoutLag)) {
      out.fanout_lag = *lag;
    }
    if (std::optional<std::string> policy =
            GetString(table, subject, "fanout_policy", /*required=*/false)) {
      if (*policy == "drop") {
        out.fanout_policy = FanoutPolicy::kDrop;
      } else if (*policy == "block") {
        out.fanout_policy = FanoutPolicy::kBlock;
      } else {
        AddError(
            LineOf(*table.get("fanout_policy")),
            subject + ": unknown fanout_policy " + Quoted(*policy) + " (expected drop or block)");
      }
    }
    if (!out.fanout) {
      for (std::string_view key :
           {std::string_view("fanout_lag"), std::string_view("fanout_policy")}) {
        if (const toml::node* node = table.get(key)) {
          AddError(LineOf(*node),
                   subject + ": " + std::string(key) + " only applies with fanout = true");
        }
      }
      return;
    }
    if (table.get("max_clients") == nullptr) {
      out.max_clients = ExportConfig::kDefaultFanoutMaxClients;
    } else if (out.max_clients == 0 || out.max_clients > ExportConfig::kMaxFanoutMaxClients) {
      AddError(LineOf(*table.get("max_clients")),
               subject + ": max_clients must be from 1 to " +
                   std::to_string(ExportConfig::kMaxFanoutMaxClients) +
                   " for a fanout export (every reader holds descriptors and a stream)");
    }
  }

  std::optional<ExportKind> ParseKind(const toml::table& table, const std::string& subject) {
    std::optional<std::string> kind = GetString(table, subject, "kind", /*required=*/true);
    if (!kind) {
      return std::nullopt;
    }
    if (*kind == "fifo") {
      return ExportKind::kFifo;
    }
    if (*kind == "unix") {
      return ExportKind::kUnix;
    }
    if (*kind == "exec") {
      return ExportKind::kExec;
    }
    AddError(LineOf(*table.get("kind")),
             subject + ": unknown kind " + Quoted(*kind) + " (expected fifo, unix or exec)");
    return std::nullopt;
  }

  // A fifo export is read or write, with no default; a unix export is always duplex.
  std::optional<Access> ParseAccess(const toml::table& table, const std::string& subject,
                                    std::optional<ExportKind> kind) {
    const toml::node* node = table.get("access");
    std::optional<std::string> text = GetString(table, subject, "access", /*required=*/false);
    if (node == nullptr) {
      if (kind == ExportKind::kFifo) {
        AddError(LineOf(table),
                 subject + ": missing required key \"access\" (read or write, for a fifo)");
      }
      return kind == ExportKind::kUnix || kind == ExportKind::kExec
                 ? std::optional<Access>(Access::kDuplex)
                 : std::nullopt;
    }
    if (!text) {
      return std::nullopt;  // Wrong type, already reported.
    }
    const int line = LineOf(*node);
    std::optional<Access> access;
    if (*text == "read") {
      access = Access::kRead;
    } else if (*text == "write") {
      access = Access::kWrite;
    } else if (*text == "duplex") {
      access = Access::kDuplex;
    }
    if (kind == ExportKind::kFifo) {
      if (!access) {
        AddError(line, subject + ": unknown access " + Quoted(*text) + " (expected read or write)");
      } else if (*access == Access::kDuplex) {
        AddError(line, subject + ": access \"duplex\" is not possible for a fifo export " +
                           "(expected read or write)");
        access.reset();
      }
    } else if (kind == ExportKind::kUnix || kind == ExportKind::kExec) {
      const char* kind_name = kind == ExportKind::kUnix ? "unix" : "exec";
      if (!access) {
        AddError(line, subject + ": unknown access " + Quoted(*text) + " (a " + kind_name +
                           " export is always duplex)");
      } else if (*access != Access::kDuplex) {
        AddError(line, subject + ": access " + Quoted(*text) + " is not possible for a " +
                           kind_name + " export (only duplex)");
        access.reset();
      }
    } else if (!access) {
      AddError(line,
               subject + ": unknown access " + Quoted(*text) + " (expected read, write or duplex)");
    }
    return access;
  }

  // `create` and `mode` describe a FIFO the gateway makes, so they only fit fifo exports.
  void ParseFifoOptions(const toml::table& table, const std::string& subject,
                        std::optional<ExportKind> kind, ExportConfig& out) {
    for (std::string_view key : {std::string_view("create"), std::string_view("mode"),
                                 std::string_view("owner"), std::string_view("group")}) {
      const toml::node* node = table.get(key);
      if (node != nullptr && (kind == ExportKind::kUnix || kind == ExportKind::kExec)) {
        AddError(LineOf(*node),
                 subject + ": " + std::string(key) + " only applies to fifo exports");
      }
    }
    if (const toml::node* create = table.get("create")) {
      if (CheckType(subject, "create", *create, toml::node_type::boolean)) {
        out.create = create->as_boolean()->get();
      }
    }
    if (const toml::node* mode = table.get("mode")) {
      if (std::optional<uint32_t> value = ParseMode(*mode, subject)) {
        out.mode = *value;
      }
    }
  }

  // kind = "exec": `command` (argv, no shell: command[0] is an absolute path) and `timeout`
  // (seconds a process may live, 0 = no limit); an exec export has no `path`.
  void ParseExecOptions(const toml::table& table, const std::string& subject, ExportConfig& out) {
    if (const toml::node* path = table.get("path")) {
      AddError(LineOf(*path), subject + ": path does not apply to an exec export (it runs " +
                                  "command, a fresh process per client)");
    }
    const toml::node* node = table.get("command");
    if (node == nullptr) {
      AddError(LineOf(table), subject + ": missing required key \"command\" (an exec export " +
                                  "runs command = [\"/absolute/program\", \"arg\", ...])");
    } else if (CheckType(subject, "command", *node, toml::node_type::array)) {
      const toml::array& array = *node->as_array();
      if (array.empty()) {
        AddError(LineOf(*node), subject + ": command must not be empty");
      }
      for (const toml::node& element : array) {
        const int line = LineOf(element) != 0 ? LineOf(element) : LineOf(*node);
        const toml::value<std::string>* arg = element.as_string();
        if (arg == nullptr) {
          AddError(line, subject + ": command entries must be strings, not " +
                             std::string(TypeName(element.type())));
          continue;
        }
        if (arg->get().find('\0') != std::string::npos) {
          AddError(line, subject + ": command entries must not contain a NUL character");
          continue;
        }
        if (out.command.empty() && !std::filesystem::path(arg->get()).is_absolute()) {
          AddError(line, subject + ": command[0] " + Quoted(arg->get()) +
                             " must be an absolute path (no shell and no PATH search is used)");
        }
        out.command.push_back(arg->get());
      }
    }
    if (auto v = GetSeconds(table, subject, "timeout", 100, uint64_t{86400} * 1000 * 365, true)) {
      out.timeout_ms = *v;
    }
  }

  // Accepts an octal string ("0640", "640") or a TOML integer written in octal (0o640). A
  // decimal integer is refused: `mode = 640` would silently mean 0o1200.
  std::optional<uint32_t> ParseMode(const toml::node& node, const std::string& subject) {
    const int line = LineOf(node);
    if (const toml::value<int64_t>* integer = node.as_integer()) {
      if ((integer->flags() & toml::value_flags::format_as_octal) == toml::value_flags::none) {
        AddError(line, subject + ": mode must be an octal string like \"0640\", not a decimal " +
                           "integer");
        return std::nullopt;
      }
      if (integer->get() < 0 || integer->get() > 0777) {
        AddError(line, subject + ": mode must be at most 0777");
        return std::nullopt;
      }
      return static_cast<uint32_t>(integer->get());
    }
    if (!CheckType(subject, "mode", node, toml::node_type::string)) {
      return std::nullopt;
    }
    const std::string& text = node.as_string()->get();
    uint32_t value = 0;
    bool octal = !text.empty() && text.size() <= 4;
    for (char c : text) {
      if (c < '0' || c > '7') {
        octal = false;
        break;
      }
      value = value * 8 + static_cast<uint32_t>(c - '0');
    }
    if (!octal) {
      AddError(line, subject + ": mode " + Quoted(text) + " is not an octal mode like \"0640\"");
      return std::nullopt;
    }
    if (value > 0777) {
      AddError(line, subject + ": mode " + Quoted(text) + " must be at most 0777");
      return std::nullopt;
    }
    return value;
  }

  // SPEC §5: there is no default access, so `allow` is required and must name someone.
  void ParseAllow(const toml::table& table, const std::string& subject, ExportConfig& out) {
    const toml::node* node = table.get("allow");
    if (node == nullptr) {
      AddError(LineOf(table), subject + ": missing required key \"allow\" (there is no default " +
                                  "access; [\"*\"] admits any client the CA vouches for)");
      return;
    }
    if (!CheckType(subject, "allow", *node, toml::node_type::array)) {
      return;
    }
    const toml::array& array = *node->as_array();
    if (array.empty()) {
      AddError(LineOf(*node), subject + ": allow must not be empty (there is no default access)");
      return;
    }
    for (const toml::node& element : array) {
      const int line = LineOf(element) != 0 ? LineOf(element) : LineOf(*node);
      const toml::value<std::string>* entry = element.as_string();
      if (entry == nullptr) {
        AddError(line, subject + ": allow entries must be strings, not " +
                           std::string(TypeName(element.type())));
        continue;
      }
      const std::string& text = entry->get();
      if (text.empty()) {
        AddError(line, subject + ": allow entries must not be empty");
        continue;
      }
      if (HasSurroundingSpace(text) || text.find('\0') != std::string::npos) {
        AddError(line, subject + ": allow entry " + Quoted(text) +
                           " has surrounding white space or a NUL character");
        continue;
      }
      // Types (cn:, dns:, uri:), wildcards and URI dot segments: docs/security.md §3.
      if (Result<AllowEntry> parsed = ParseAllowEntry(text); !parsed) {
        AddError(line, subject + ": " + parsed.error().message());
        continue;
      }
      out.allow.push_back(text);
    }
  }

  // Identity mapping (docs/security.md §11): `connect_as = "user[:group]"` maps every client to
  // one account; `[[export.map]]` entries {identity, user, group} map by allow-entry pattern,
  // first match wins. The accounts are resolved later, by the gateway (they are not text).
  void ParseIdentityMap(const toml::table& table, const std::string& subject, ExportConfig& out) {
    const toml::node* connect_as = table.get("connect_as");
    const toml::node* map = table.get("map");
    if (connect_as != nullptr && map != nullptr) {
      AddError(LineOf(*connect_as), subject + ": connect_as and [[export.map]] exclude each " +
                                        "other (write connect_as as a map entry with identity " +
                                        "\"*\")");
      return;
    }
    // A fan-out export's FIFO is opened once, by its hub, for every reader: there is no open per
    // client that could be made as that client's account.
    if (out.fanout && (connect_as != nullptr || map != nullptr)) {
      const toml::node& node = connect_as != nullptr ? *connect_as : *map;
      AddError(LineOf(node), subject + ": " +
                                 (connect_as != nullptr ? "connect_as" : "[[export.map]]") +
                                 " does not apply to a fanout export (its FIFO has one reader, "
                                 "the gateway)");
      return;
    }
    if (connect_as != nullptr) {
      if (!CheckType(subject, "connect_as", *connect_as, toml::node_type::string)) return;
      const std::string& text = connect_as->as_string()->get();
      const size_t colon = text.find(':');
      IdentityMapping m;
      m.identity = "*";
      m.user = text.substr(0, colon);
      m.group = colon == std::string::npos ? "" : text.substr(colon + 1);
      m.line = LineOf(*connect_as);
      if (!IsAccountName(m.user) || (colon != std::string::npos && !IsAccountName(m.group))) {
        AddError(m.line, subject + ": connect_as " + Quoted(text) +
                             " is not \"user\" or \"user:group\" (names or numeric ids)");
        return;
      }
      out.identity_map.push_back(std::move(m));
      return;
    }
    if (map == nullptr) return;
    const toml::array* array = map->as_array();
    if (array == nullptr || !array->is_array_of_tables()) {
      AddError(LineOf(*map), subject + ": map must be an array of tables: write [[export.map]] " +
                                 "entries with identity, user and group");
      return;
    }
    if (array->empty()) {
      AddError(LineOf(*map), subject + ": map must not be empty");
      return;
    }
    int index = 0;
    for (const toml::node& element : *array) {
      ++index;
      const toml::table& entry = *element.as_table();
      const std::string where = subject + ": map entry #" + std::to_string(index);
      CheckKeys(entry, where, kMapKeys);
      IdentityMapping m;
      m.line = LineOf(entry) != 0 ? LineOf(entry) : LineOf(*map);
      std::optional<std::string> identity = GetString(entry, where, "identity", /*required=*/true);
      if (identity) {
        // Written as in `allow` (docs/security.md §3), and checked the same way.
        if (identity->empty() || HasSurroundingSpace(*identity) ||
            identity->find('\0') != std::string::npos) {
          AddError(m.line, where + ": identity " + Quoted(*identity) +
                               " is empty or has surrounding white space or a NUL character");
          identity.reset();
        } else if (Result<AllowEntry> parsed = ParseAllowEntry(*identity); !parsed) {
          AddError(m.line, where + ": " + parsed.error().message());
          identity.reset();
        }
      }
      std::optional<std::string> user = GetString(entry, where, "user", /*required=*/true);
      if (user && !IsAccountName(*user)) {
        AddError(m.line, where + ": user " + Quoted(*user) + " is not a user name or a numeric id");
        user.reset();
      }
      std::optional<std::string> group = GetString(entry, where, "group", /*required=*/false);
      if (group && !IsAccountName(*group)) {
        AddError(m.line,
                 where + ": group " + Quoted(*group) + " is not a group name or a numeric id");
        group.reset();
      }
      if (!identity || !user) continue;
      m.identity = std::move(*identity);
      m.user = std::move(*user);
      m.group = group.value_or("");
      out.identity_map.push_back(std::move(m));
    }
  }

  // The account names GetAccountName accepts: portable user and group names, or numbers.
  static bool IsAccountName(const std::string& value) {
    return !value.empty() && value.size() <= 32 && value[0] != '-' &&
           std::all_of(value.begin(), value.end(), [](char c) {
             return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
           });
  }

  std::string base_dir_;
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
