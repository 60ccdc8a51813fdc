#include "counters.h"

#include <fmt/format.h>

#include "pipegate/log.h"

namespace pipegate::gateway {

std::string CountersJson(const Counters& counters) {
  // Names are fixed identifiers and values integers: nothing needs escaping.
  std::string json = "{";
  VisitCounters(counters, SuppressedLogLines(),
                [&json](std::string_view name, uint64_t value, const char*) {
                  if (json.size() > 1) json += ',';
                  fmt::format_to(std::back_inserter(json), "\"{}\":{}", name, value);
                });
  json += '}';
  return json;
}

}  // namespace pipegate::gateway
