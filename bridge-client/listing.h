#pragma once

#include <string>
#include <vector>

namespace pipegate::bridge {

/// @brief One export as `ls` shows it (text already made safe for a terminal).
struct ListingRow {
  std::string name;
  std::string kind;    ///< "fifo", "unix".
  std::string access;  ///< "read", "write", "duplex".
};

/// @brief How `ls` prints.
enum class ListingFormat {
  kTabs,   ///< One `NAME<TAB>KIND<TAB>ACCESS` line per export, no header: for scripts.
  kTable,  ///< A header and columns aligned with spaces: for a terminal.
  kJson,   ///< One JSON array of {"name","kind","access"} objects and a newline (`--json`).
};

/// @return The listing in @p format. Tabs are what `ls` prints into a pipe (cut, awk -F'\t',
/// while read), the table what it prints on a terminal.
std::string FormatListing(const std::vector<ListingRow>& rows, ListingFormat format);

}  // namespace pipegate::bridge
