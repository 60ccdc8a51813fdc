#include "listing.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

#include <nlohmann/json.hpp>

namespace pipegate::bridge {

namespace {

const char* Mode(const ListingRow& r) { return r.messages ? "messages" : "bytes"; }

std::string Max(const ListingRow& r) {
  return r.max_clients == 0 ? "-" : std::to_string(r.max_clients);
}

nlohmann::ordered_json Object(const ListingRow& r) {
  nlohmann::ordered_json o = {{"name", r.name},
                              {"kind", r.kind},
                              {"access", r.access},
                              {"mode", Mode(r)},
                              {"clients", r.clients}};
  o["max_clients"] =
      r.max_clients == 0 ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(r.max_clients);
  if (r.messages) o["max_message"] = r.max_message;
  return o;
}

std::string Dump(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

std::string Detail(const ListingRow& r) {
  std::string out =
      fmt::format("name:     {}\nkind:     {}\naccess:   {}\n", r.name, r.kind, r.access);
  out += r.messages ? fmt::format("mode:     messages, at most {} bytes each\n", r.max_message)
                    : std::string("mode:     byte stream\n");
  out += r.max_clients == 0
             ? fmt::format("clients:  {} attached (no maximum)\n", r.clients)
             : fmt::format("clients:  {} attached (at most {})\n", r.clients, r.max_clients);
  return out;
}

}  // namespace

std::string FormatListing(const std::vector<ListingRow>& rows, ListingFormat format) {
  std::string out;
  switch (format) {
    case ListingFormat::kJson: {
      nlohmann::ordered_json list = nlohmann::ordered_json::array();
      for (const ListingRow& r : rows) list.push_back(Object(r));
      return Dump(list);
    }
    case ListingFormat::kJsonObject:
      return rows.empty() ? std::string("{}\n") : Dump(Object(rows.front()));
    case ListingFormat::kDetail:
      for (size_t i = 0; i < rows.size(); ++i) out += (i > 0 ? "\n" : "") + Detail(rows[i]);
      return out;
    case ListingFormat::kTabs:
      for (const ListingRow& r : rows) {
        out += fmt::format("{}\t{}\t{}\t{}\t{}\t{}\n", r.name, r.kind, r.access, Mode(r), r.clients,
                           Max(r));
      }
      return out;
    case ListingFormat::kTable:
      break;
  }
  // Column widths: at least the header's, else the widest value.
  std::array<size_t, 5> w = {4, 4, 6, 4, 7};  // NAME KIND ACCESS MODE CLIENTS
  for (const ListingRow& r : rows) {
    w[0] = std::max(w[0], r.name.size());
    w[1] = std::max(w[1], r.kind.size());
    w[2] = std::max(w[2], r.access.size());
    w[3] = std::max(w[3], std::string(Mode(r)).size());
    w[4] = std::max(w[4], std::to_string(r.clients).size());
  }
  auto line = [&](const std::string& a, const std::string& b, const std::string& c,
                  const std::string& d, const std::string& e, const std::string& f) {
    out += fmt::format("{:<{}}  {:<{}}  {:<{}}  {:<{}}  {:>{}}  {}\n", a, w[0], b, w[1], c, w[2], d,
                       w[3], e, w[4], f);
  };
  line("NAME", "KIND", "ACCESS", "MODE", "CLIENTS", "MAX");
  for (const ListingRow& r : rows) {
    line(r.name, r.kind, r.access, Mode(r), std::to_string(r.clients), Max(r));
  }
  return out;
}

}  // namespace pipegate::bridge
