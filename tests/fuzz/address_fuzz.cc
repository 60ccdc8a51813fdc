// Fuzz target for the address parsers (SPEC §2): any text must either parse into an address
// whose canonical form parses back to the same address, or be refused with a message; and the
// name rules must agree with ValidatePipeName. Listen addresses likewise round-trip.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "pipegate/address.h"

namespace {

[[noreturn]] void Fail(const char* what, int line) {
  std::fprintf(stderr, "address_fuzz:%d: invariant failed: %s\n", line, what);
  std::abort();
}
#define FUZZ_CHECK(cond)                \
  do {                                  \
    if (!(cond)) Fail(#cond, __LINE__); \
  } while (0)

void CheckPipeAddress(std::string_view text, pipegate::NameRule rule) {
  pipegate::Result<pipegate::PipeAddress> a = pipegate::ParseAddress(text, rule);
  if (!a) {
    FUZZ_CHECK(!a.error().message().empty());
    return;
  }
  FUZZ_CHECK(!a->host.empty());
  if (rule == pipegate::NameRule::kRequired) FUZZ_CHECK(!a->name.empty());
  if (!a->name.empty()) {
    FUZZ_CHECK(pipegate::ValidatePipeName(a->name).ok());
    FUZZ_CHECK(a->name.size() <= pipegate::kMaxPipeNameLength);
  }
  // The canonical form (what messages show) names the same pipe.
  const std::string canonical = a->ToString();
  pipegate::Result<pipegate::PipeAddress> again =
      pipegate::ParseAddress(canonical, pipegate::NameRule::kOptional);
  FUZZ_CHECK(again.has_value());
  FUZZ_CHECK(again->host == a->host);
  FUZZ_CHECK(again->port == a->port);
  FUZZ_CHECK(again->name == a->name);
  FUZZ_CHECK(again->ToString() == canonical);
}

void CheckListenAddress(std::string_view text) {
  pipegate::Result<std::pair<std::string, uint16_t>> hp = pipegate::ParseHostPort(text);
  if (!hp) {
    FUZZ_CHECK(!hp.error().message().empty());
    return;
  }
  FUZZ_CHECK(!hp->first.empty());
  const std::string host =
      hp->first.find(':') != std::string::npos ? "[" + hp->first + "]" : hp->first;
  pipegate::Result<std::pair<std::string, uint16_t>> again =
      pipegate::ParseHostPort(host + ":" + std::to_string(hp->second));
  FUZZ_CHECK(again.has_value());
  FUZZ_CHECK(*again == *hp);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  CheckPipeAddress(text, pipegate::NameRule::kRequired);
  CheckPipeAddress(text, pipegate::NameRule::kOptional);
  CheckListenAddress(text);
  // A name on its own: valid exactly when the full address with it parses.
  const bool valid = pipegate::ValidatePipeName(text).ok();
  if (text.find('/') == std::string_view::npos && text.find('\\') == std::string_view::npos) {
    pipegate::Result<pipegate::PipeAddress> a =
        pipegate::ParseAddress("pipe://gw/" + std::string(text));
    FUZZ_CHECK(a.has_value() == valid);
  }
  return 0;
}
