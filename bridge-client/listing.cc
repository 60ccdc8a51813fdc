#include "listing.h"

#include <fmt/format.h>

#include <algorithm>

namespace pipegate::bridge {

std::string FormatListing(const std::vector<ListingRow>& rows, bool table) {
  std::string out;
  if (!table) {
    for (const ListingRow& r : rows) out += fmt::format("{}\t{}\t{}\n", r.name, r.kind, r.access);
    return out;
  }
  size_t name_w = 4;  // "NAME"
  size_t kind_w = 4;  // "KIND"
  for (const ListingRow& r : rows) {
    name_w = std::max(name_w, r.name.size());
    kind_w = std::max(kind_w, r.kind.size());
  }
  auto line = [&](const std::string& a, const std::string& b, const std::string& c) {
    out += fmt::format("{:<{}}  {:<{}}  {}\n", a, name_w, b, kind_w, c);
  };
  line("NAME", "KIND", "ACCESS");
  for (const ListingRow& r : rows) line(r.name, r.kind, r.access);
  return out;
}

}  // namespace pipegate::bridge
