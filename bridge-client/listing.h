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

/// @return The listing: for a terminal (@p table), a header and columns aligned with spaces;
/// otherwise one `NAME<TAB>KIND<TAB>ACCESS` line per export and no header, for scripts (cut,
/// awk -F'\t', while read), as SPEC §1 describes it.
std::string FormatListing(const std::vector<ListingRow>& rows, bool table);

}  // namespace pipegate::bridge
