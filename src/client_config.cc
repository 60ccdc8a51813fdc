// Defaults for the bridge client from ~/.config/pipegate/config.toml.
#define TOML_HEADER_ONLY 1
#define TOML_EXCEPTIONS 0
#include <fmt/format.h>

#include <fstream>
#include <iterator>
#include <string>

#include "pipegate/config.h"

#include <toml++/toml.h>

namespace pipegate {

Result<ClientDefaults> LoadClientDefaults(const std::string& path) {
  ClientDefaults d;
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status(Code::kUsage, fmt::format("{}: cannot read", path));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (ConfigError unsafe = ScreenTomlText(text); unsafe.line != 0) {
    return Status(Code::kUsage, fmt::format("{}:{}: {}", path, unsafe.line, unsafe.message));
  }
  toml::parse_result parsed = toml::parse(text, path);
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
    *field = *node.value<std::string>();
  }
  return d;
}

}  // namespace pipegate
