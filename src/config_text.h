#pragma once

// The config parser's text helpers: stateless, no I/O. Internal to src/ (the parser and its
// tests); not part of the public headers.

#include <algorithm>
#include <array>
#include <cstddef>
#include <string>
#include <string_view>

#include "toml.h"

namespace pipegate::config_text {

/// @return True for an IPv4 or IPv6 address literal: what the gateway can bind without
/// resolving.
bool IsIpLiteral(const std::string& host);

/// @return The 1-based line of @p node in its file (0 if unknown).
int LineOf(const toml::node& node);
/// @return The line of @p key, or of its @p value if the key's is unknown.
int LineOf(const toml::key& key, const toml::node& value);

/// @return "a table", "an integer"... for messages.
const char* TypeName(toml::node_type type);

/// @return @p text in double quotes, with quotes, backslashes and control bytes escaped, for a
/// message a terminal shows.
std::string Quoted(std::string_view text);

/// @return The Levenshtein distance between @p a and @p b.
size_t EditDistance(std::string_view a, std::string_view b);

/// @return True if @p key is one of @p known.
template <size_t N>
bool IsKnown(std::string_view key, const std::array<std::string_view, N>& known) {
  return std::find(known.begin(), known.end(), key) != known.end();
}

/// @return ` (did you mean "x"?)` for the closest of @p known within two edits of @p key, else "".
template <size_t N>
std::string Suggestion(std::string_view key, const std::array<std::string_view, N>& known) {
  std::string_view best;
  size_t best_distance = 3;
  for (std::string_view candidate : known) {
    const size_t distance = EditDistance(key, candidate);
    if (distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  if (best.empty()) {
    return {};
  }
  return " (did you mean " + Quoted(best) + "?)";
}

/// @return True if @p text starts or ends with white space.
bool HasSurroundingSpace(std::string_view text);

}  // namespace pipegate::config_text
