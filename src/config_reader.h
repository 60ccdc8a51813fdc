#pragma once

// Typed reading of the configuration file's TOML tables, for the parsers in src/config.cc and
// src/config_export.cc: each getter checks type and range and records every problem, with its
// line, in one shared list. Internal to src/; sans-I/O.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
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

  void AddError(int line, std::string message) {
    errors_->push_back(ConfigError{line, std::move(message)});
  }

  // Reports an unexpected type for @p key and returns false, or returns true.
  bool CheckType(const std::string& subject, std::string_view key, const toml::node& node,
                 toml::node_type want) {
    if (node.type() == want) {
      return true;
    }
    AddError(config_text::LineOf(node), subject + ": " + std::string(key) + " must be " +
                                            config_text::TypeName(want) + ", not " +
                                            config_text::TypeName(node.type()));
    return false;
  }

  // Returns the string at @p key, or nullopt if absent (reported when @p required) or mistyped.
  std::optional<std::string> GetString(const toml::table& table, const std::string& subject,
                                       std::string_view key, bool required) {
    const toml::node* node = table.get(key);
    if (node == nullptr) {
      if (required) {
        AddError(config_text::LineOf(table),
                 subject + ": missing required key " + config_text::Quoted(key));
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
      AddError(config_text::LineOf(*node), subject + ": " + std::string(key) + " must be from " +
                                               std::to_string(lo) + " to " + std::to_string(hi) +
                                               ", not " + std::to_string(value));
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
    const int line = config_text::LineOf(*table.get(key));
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
    if (!IsAccountName(*value)) {
      AddError(config_text::LineOf(*table.get(key)),
               subject + ": " + std::string(key) + " " + config_text::Quoted(*value) +
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
      AddError(config_text::LineOf(*node), subject + ": " + std::string(key) +
                                               " must be a number of seconds, not " +
                                               config_text::TypeName(node->type()));
      return std::nullopt;
    }
    if (zero_ok && seconds == 0) {
      return 0;
    }
    const double ms = seconds * 1000.0;
    if (!(ms >= static_cast<double>(lo_ms) && ms <= static_cast<double>(hi_ms))) {
      AddError(config_text::LineOf(*node),
               subject + ": " + std::string(key) + " must be from " + FormatSeconds(lo_ms) +
                   " to " + FormatSeconds(hi_ms) + " seconds" +
                   (zero_ok ? " (or 0 for never)" : "") + ", not " + FormatSeconds(ms));
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
    const int line = config_text::LineOf(*node);
    int64_t value = 0;
    if (const toml::value<int64_t>* integer = node->as_integer()) {
      value = integer->get();
    } else if (const toml::value<std::string>* text = node->as_string()) {
      std::optional<int64_t> parsed = ParseByteSize(text->get());
      if (!parsed) {
        AddError(line, subject + ": " + std::string(key) + " " + config_text::Quoted(text->get()) +
                           " is not a size (write bytes, or a number with K, M or G)");
        return std::nullopt;
      }
      value = *parsed;
    } else {
      AddError(line, subject + ": " + std::string(key) + " must be a size in bytes, not " +
                         config_text::TypeName(node->type()));
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

  // A user or group name as useradd accepts it, or a numeric id.
  static bool IsAccountName(const std::string& value) {
    return !value.empty() && value.size() <= 32 && value[0] != '-' &&
           std::all_of(value.begin(), value.end(), [](char c) {
             return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
           });
  }

 private:
  std::string base_dir_;
  std::vector<ConfigError>* errors_;
};

}  // namespace pipegate
