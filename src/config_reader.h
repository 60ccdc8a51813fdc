#pragma once

// Typed reading of the configuration file's TOML tables, for the parsers in src/config.cc and
// src/config_export.cc: each getter checks type and range and records every problem, with its
// line, in one shared list. Internal to src/; sans-I/O.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pipegate/config.h"

#include "config_text.h"
#include "toml.h"

namespace pipegate {

/// @brief Reads values out of TOML tables into typed ones, recording each problem.
///
/// Ownership: copies share the error list (it outlives them all). Not thread-safe.
class ConfigReader {
 public:
  /// @param base_dir Where relative paths are resolved from (the config file's directory).
  /// @param errors Receives every problem found; must outlive the reader and its copies.
  ConfigReader(std::string_view base_dir, std::vector<ConfigError>* errors)
      : base_dir_(base_dir), errors_(errors) {}

  void AddError(int line, std::string message);

  // Reports an unexpected type for @p key and returns false, or returns true.
  bool CheckType(const std::string& subject, std::string_view key, const toml::node& node,
                 toml::node_type want);

  // Returns the string at @p key, or nullopt if absent (reported when @p required) or mistyped.
  std::optional<std::string> GetString(const toml::table& table, const std::string& subject,
                                       std::string_view key, bool required);

  // Returns the integer at @p key if present, well typed and within [lo, hi].
  std::optional<int64_t> GetInteger(const toml::table& table, const std::string& subject,
                                    std::string_view key, int64_t lo, int64_t hi);

  // Resolves @p path against the config file's directory and normalizes it lexically.
  std::string ResolvePath(const std::string& path) const;

  // Reads a required, non-empty file path and resolves it. Returns nullopt on any error.
  std::optional<std::string> GetPath(const toml::table& table, const std::string& subject,
                                     std::string_view key);

  // Reports every key of @p table that is not in @p known, with a "did you mean" hint, or the
  // one @p misplaced gives (where the key belongs instead), if any.
  template <size_t N>
  void CheckKeys(const toml::table& table, const std::string& subject,
                 const std::array<std::string_view, N>& known,
                 std::string (*misplaced)(std::string_view key,
                                          const std::string& subject) = nullptr) {
    for (auto&& [key, value] : table) {
      if (!config_text::IsKnown(key.str(), known)) {
        std::string hint = config_text::Suggestion(key.str(), known);
        if (hint.empty() && misplaced != nullptr) hint = misplaced(key.str(), subject);
        AddError(config_text::LineOf(key, value),
                 subject + ": unknown key " + config_text::Quoted(key.str()) + hint);
      }
    }
  }

  std::optional<bool> GetBool(const toml::table& table, const std::string& subject,
                              std::string_view key);

  // A user or group: a name as useradd accepts it, or a numeric id. Whether it exists is checked
  // when the gateway starts (and by --check-config), not here: parsing stays free of I/O.
  std::optional<std::string> GetAccountName(const toml::table& table, const std::string& subject,
                                            std::string_view key);

  // A duration in seconds: an integer or a float. Returns milliseconds within [lo_ms, hi_ms];
  // 0 is also accepted when @p zero_ok (it means "never").
  std::optional<uint64_t> GetSeconds(const toml::table& table, const std::string& subject,
                                     std::string_view key, uint64_t lo_ms, uint64_t hi_ms,
                                     bool zero_ok);

  static std::string FormatSeconds(double ms);

  // A byte count: an integer, or a string with a binary suffix ("64K", "16M", "1G"; "KiB",
  // "MiB" and "GiB" are accepted too). Returns it if within [lo, hi].
  std::optional<uint64_t> GetBytes(const toml::table& table, const std::string& subject,
                                   std::string_view key, int64_t lo, int64_t hi);

  static std::optional<int64_t> ParseByteSize(std::string_view text);

  // A user or group name as useradd accepts it, or a numeric id.
  static bool IsAccountName(const std::string& value);

 private:
  std::string base_dir_;
  std::vector<ConfigError>* errors_;
};

}  // namespace pipegate
