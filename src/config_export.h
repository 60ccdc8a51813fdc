#pragma once

// The `[[export]]` tables of the gateway configuration file (SPEC §3, §4; src/config.cc parses
// the rest). Internal to src/; sans-I/O.

#include <array>
#include <map>
#include <string>
#include <string_view>

#include "pipegate/config.h"

#include "config_reader.h"
#include "toml.h"

namespace pipegate {

/// The keys an `[[export]]` table may hold.
inline constexpr std::array<std::string_view, 19> kExportKeys = {
    "name", "kind", "access", "path", "create", "mode", "allow", "max_clients", "owner", "group",
    "socket", "max_message_size", "connect_as", "map",
    // Fan-out.
    "fanout", "fanout_lag", "fanout_policy",
    // Exec.
    "command", "timeout"};

/// @brief Parses export table number @p index (1-based, for messages), recording its problems
/// through @p reader.
/// @param limits The file's [limits], already parsed (a message size must fit them).
/// @param names Export names seen so far, with their lines: a repeated name is an error.
/// @return The export, also when it has errors (the caller returns no config then).
ExportConfig ParseExportTable(const ConfigReader& reader, const toml::table& table, int index,
                              const Limits& limits, std::map<std::string, int>* names);

}  // namespace pipegate
