// The `[[export]]` tables of the gateway configuration file: kind and access, the local path,
// FIFO options, message mode, fan-out, process exports, the allow list and identity mapping.
// Every problem is recorded with its line (see src/config.cc for why validation is strict).

#include "config_export.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pipegate/acl.h"
#include "pipegate/address.h"
#include "pipegate/local_path.h"

#include "config_text.h"

namespace pipegate {
using config_text::HasSurroundingSpace;
using config_text::LineOf;
using config_text::Quoted;
using config_text::TypeName;

namespace {

// Keys of one [[export.map]] entry (identity mapping).
constexpr std::array<std::string_view, 3> kMapKeys = {"identity", "user", "group"};
constexpr int64_t kMaxMessageSize = int64_t{1} << 20;

// One export table's parser. Shares the reader's error list.
class ExportParser : public ConfigReader {
 public:
  ExportParser(const ConfigReader& reader, const Limits& limits, std::map<std::string, int>* names)
      : ConfigReader(reader), limits_(limits), names_(names) {}

  ExportConfig Parse(const toml::table& table, int index) {
    ExportConfig out;
    out.line = LineOf(table);
    std::string subject = "export #" + std::to_string(index);

    // The name comes first so that later messages can say which export they are about.
    if (std::optional<std::string> name = GetString(table, subject, "name", /*required=*/true)) {
      Status status = ValidatePipeName(*name);
      if (status.ok()) {
        subject = "export " + Quoted(*name);
        out.name = std::move(*name);
        auto [it, inserted] = names_->emplace(out.name, out.line);
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

    // Kept even when broken: only a config without errors is returned.
    return out;
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
    const Limits& l = limits_;
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

 private:
  const Limits& limits_;
  std::map<std::string, int>* names_;
};

}  // namespace

ExportConfig ParseExportTable(const ConfigReader& reader, const toml::table& table, int index,
                              const Limits& limits, std::map<std::string, int>* names) {
  return ExportParser(reader, limits, names).Parse(table, index);
}

}  // namespace pipegate
