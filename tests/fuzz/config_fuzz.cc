// Fuzz target for the gateway configuration parser: any text must give either a config or at
// least one error, never both, and never crash.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "pipegate/config.h"

namespace {

[[noreturn]] void Fail(const char* what, int line) {
  std::fprintf(stderr, "config_fuzz:%d: invariant failed: %s\n", line, what);
  std::abort();
}
#define FUZZ_CHECK(cond)                \
  do {                                  \
    if (!(cond)) Fail(#cond, __LINE__); \
  } while (0)

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  pipegate::ConfigParseResult r = pipegate::ParseGatewayConfig(text, "/etc/pipegate");
  FUZZ_CHECK(r.config.has_value() == r.errors.empty());
  for (const pipegate::ConfigError& e : r.errors) {
    FUZZ_CHECK(e.line >= 0);
    FUZZ_CHECK(!e.message.empty());
  }
  std::string formatted = pipegate::FormatConfigErrors("fuzz.toml", r.errors);
  FUZZ_CHECK(formatted.empty() == r.errors.empty());
  if (r.config) {
    for (const pipegate::ExportConfig& e : r.config->exports) {
      FUZZ_CHECK(!e.name.empty());
      FUZZ_CHECK(!e.allow.empty());              // SPEC §5: no default access.
      FUZZ_CHECK(r.config->Find(e.name) == &e);  // Names are unique.
    }
  }
  return 0;
}
