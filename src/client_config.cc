// Defaults for the bridge client from ~/.config/pipegate/config.toml.
#include <fmt/format.h>

#include <filesystem>

#include "pipegate/config.h"

#include "toml.h"  // toml++, with a fix for Debian's 3.3.0.

namespace pipegate {

Result<ClientDefaults> LoadClientDefaults(const std::string& path) {
  ClientDefaults d;
  toml::parse_result parsed = toml::parse_file(path);
  if (!parsed) {
    const toml::parse_error& err = parsed.error();
    return Status(Code::kUsage,
                  fmt::format("{}:{}: {}", path, err.source().begin.line, err.description()));
  }
  const toml::table& t = parsed.table();
  for (auto&& [key, node] : t) {
    std::string k(key.str());
    std::string* field = k == "cert" ? &d.cert : k == "key" ? &d.key : k == "ca" ? &d.ca : nullptr;
    if (field == nullptr || !node.is_string()) {
      return Status(Code::kUsage, fmt::format("{}:{}: unknown key '{}' (expected cert, key, ca)",
                                              path, node.source().begin.line, k));
    }
    // A relative path is relative to the file, as in the gateway's file, not to wherever
    // pipegate happens to be started.
    std::filesystem::path value(*node.value<std::string>());
    if (!value.empty() && value.is_relative()) {
      value = std::filesystem::path(path).parent_path() / value;
    }
    *field = value.string();
  }
  return d;
}

}  // namespace pipegate
