#include "listing.h"

#include <fmt/format.h>

#include <algorithm>

#include <nlohmann/json.hpp>

namespace pipegate::bridge {

std::string FormatListing(const std::vector<ListingRow>& rows, ListingFormat format) {
  std::string out;
  if (format == ListingFormat::kJson) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const ListingRow& r : rows) {
      list.push_back({{"name", r.name}, {"kind", r.kind}, {"access", r.access}});
    }
    return list.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
  }
  if (format == ListingFormat::kTabs) {
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
