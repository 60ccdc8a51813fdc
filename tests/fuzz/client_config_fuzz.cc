// Fuzz target for the bridge's client defaults (~/.config/pipegate/config.toml, keys cert, key,
// ca): any text must give either defaults or one kUsage error naming FILE:LINE, never crash.
// LoadClientDefaults() only reads a path, so each input is written to one file in a private
// temporary directory (made once, removed at exit).
//
// Invariants: an error is kUsage and starts with the file's path and a line number; a success
// holds only absolute paths (relative values resolve against the file's directory, which is
// absolute here) or empty ones, and a relative value keeps its text after that directory.

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "pipegate/config.h"

namespace {

[[noreturn]] void Fail(const char* what, int line) {
  std::fprintf(stderr, "client_config_fuzz:%d: invariant failed: %s\n", line, what);
  std::abort();
}
#define FUZZ_CHECK(cond)                \
  do {                                  \
    if (!(cond)) Fail(#cond, __LINE__); \
  } while (0)

std::string g_dir;
std::string g_path;

void RemoveDir() {
  std::error_code ec;
  std::filesystem::remove_all(g_dir, ec);
}

void MakeDir() {
  const char* base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
  std::string tmpl = std::string(base) + "/pipegate-client-config-fuzz.XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) Fail("mkdtemp", __LINE__);
  g_dir = tmpl;
  g_path = g_dir + "/config.toml";
  std::atexit(RemoveDir);
}

void CheckPath(const std::string& value) {
  if (value.empty()) return;
  FUZZ_CHECK(std::filesystem::path(value).is_absolute());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  MakeDir();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(g_path.c_str(), "wb");
  FUZZ_CHECK(f != nullptr);
  FUZZ_CHECK(size == 0 || std::fwrite(data, 1, size, f) == size);
  FUZZ_CHECK(std::fclose(f) == 0);

  pipegate::Result<pipegate::ClientDefaults> d = pipegate::LoadClientDefaults(g_path);
  if (!d) {
    FUZZ_CHECK(d.error().code() == pipegate::Code::kUsage);
    const std::string& m = d.error().message();
    FUZZ_CHECK(m.rfind(g_path + ":", 0) == 0);  // FILE:LINE: cause
    const size_t at = g_path.size() + 1;
    FUZZ_CHECK(at < m.size() && m[at] >= '0' && m[at] <= '9');
    return 0;
  }
  CheckPath(d->cert);
  CheckPath(d->key);
  CheckPath(d->ca);
  return 0;
}
