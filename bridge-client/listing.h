#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pipegate::bridge {

/// @brief One export as `ls` and `stat` show it (text already made safe for a terminal).
struct ListingRow {
  std::string name;
  std::string kind;          ///< "fifo", "unix".
  std::string access;        ///< "read", "write", "duplex".
  bool messages = false;     ///< Message mode (a seqpacket export), else a byte stream.
  uint32_t clients = 0;      ///< Streams attached to it now (every client's).
  uint32_t max_clients = 0;  ///< 0 = unlimited.
  uint32_t max_message = 0;  ///< Message mode: the largest message.
};

/// @brief How `ls` and `stat` print.
enum class ListingFormat {
  /// One `NAME<TAB>KIND<TAB>ACCESS<TAB>MODE<TAB>CLIENTS<TAB>MAX` line per export, no header:
  /// for scripts. MODE is "bytes" or "messages"; MAX is "-" when unlimited.
  kTabs,
  kTable,       ///< The same columns, with a header, aligned with spaces: for a terminal.
  kJson,        ///< One JSON array of objects (`ls --json`), then a newline.
  kDetail,      ///< `stat`: one "field: value" line per property of each export.
  kJsonObject,  ///< `stat --json`: the first row as one JSON object, then a newline.
};

/// @return The listing in @p format. Tabs are what `ls` prints into a pipe (cut, awk -F'\t',
/// while read), the table what it prints on a terminal.
std::string FormatListing(const std::vector<ListingRow>& rows, ListingFormat format);

}  // namespace pipegate::bridge
