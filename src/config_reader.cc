#include "config_reader.h"

#include <algorithm>
#include <filesystem>
#include <string>
#include <utility>

namespace pipegate {

void ConfigReader::AddError(int line, std::string message) {
  errors_->push_back(ConfigError{line, std::move(message)});
}

bool ConfigReader::CheckType(const std::string& subject, std::string_view key,
                             const toml::node& node, toml::node_type want) {
  if (node.type() == want) {
    return true;
  }
  AddError(config_text::LineOf(node), subject + ": " + std::string(key) + " must be " +
                                          config_text::TypeName(want) + ", not " +
                                          config_text::TypeName(node.type()));
  return false;
}

std::optional<std::string> ConfigReader::GetString(const toml::table& table,
                                                   const std::string& subject, std::string_view key,
                                                   bool required) {
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

std::optional<int64_t> ConfigReader::GetInteger(const toml::table& table,
                                                const std::string& subject, std::string_view key,
                                                int64_t lo, int64_t hi) {
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

std::string ConfigReader::ResolvePath(const std::string& path) const {
  std::filesystem::path resolved(path);
  if (resolved.is_relative() && !base_dir_.empty()) {
    resolved = std::filesystem::path(base_dir_) / resolved;
  }
  return resolved.lexically_normal().string();
}

std::optional<std::string> ConfigReader::GetPath(const toml::table& table,
                                                 const std::string& subject, std::string_view key) {
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

std::optional<bool> ConfigReader::GetBool(const toml::table& table, const std::string& subject,
                                          std::string_view key) {
  const toml::node* node = table.get(key);
  if (node == nullptr || !CheckType(subject, key, *node, toml::node_type::boolean)) {
    return std::nullopt;
  }
  return node->as_boolean()->get();
}

std::optional<std::string> ConfigReader::GetAccountName(const toml::table& table,
                                                        const std::string& subject,
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

std::optional<uint64_t> ConfigReader::GetSeconds(const toml::table& table,
                                                 const std::string& subject, std::string_view key,
                                                 uint64_t lo_ms, uint64_t hi_ms, bool zero_ok) {
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
    AddError(config_text::LineOf(*node), subject + ": " + std::string(key) + " must be from " +
                                             FormatSeconds(lo_ms) + " to " + FormatSeconds(hi_ms) +
                                             " seconds" + (zero_ok ? " (or 0 for never)" : "") +
                                             ", not " + FormatSeconds(ms));
    return std::nullopt;
  }
  return static_cast<uint64_t>(ms);
}

std::string ConfigReader::FormatSeconds(double ms) {
  std::string text = std::to_string(ms / 1000.0);
  text.erase(text.find_last_not_of('0') + 1);
  if (!text.empty() && text.back() == '.') {
    text.pop_back();
  }
  return text;
}

std::optional<uint64_t> ConfigReader::GetBytes(const toml::table& table, const std::string& subject,
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

std::optional<int64_t> ConfigReader::ParseByteSize(std::string_view text) {
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

bool ConfigReader::IsAccountName(const std::string& value) {
  return !value.empty() && value.size() <= 32 && value[0] != '-' &&
         std::all_of(value.begin(), value.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.';
         });
}

}  // namespace pipegate
