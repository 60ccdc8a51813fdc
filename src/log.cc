#include "pipegate/log.h"

#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace pipegate {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<unsigned> g_categories{0};
std::string g_program = "pipegate";

unsigned ParseCategories(const char* spec) {
  if (spec == nullptr) return 0;
  unsigned bits = 0;
  std::string_view rest(spec);
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string_view word = rest.substr(0, comma);
    if (word == "tls") bits |= static_cast<unsigned>(LogCategory::kTls);
    if (word == "mux") bits |= static_cast<unsigned>(LogCategory::kMux);
    if (word == "frame") bits |= static_cast<unsigned>(LogCategory::kFrame);
    if (word == "acl") bits |= static_cast<unsigned>(LogCategory::kAcl);
    if (word == "loop") bits |= static_cast<unsigned>(LogCategory::kLoop);
    if (word == "all" || word == "*") bits = ~0u;
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return bits;
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
    case LogLevel::kOff:
      break;
  }
  return "off";
}

}  // namespace

void InitLogging(LogLevel level, std::string_view program) {
  g_program = std::string(program);
  unsigned cats = ParseCategories(std::getenv("PIPEGATE_DEBUG"));
  g_categories.store(cats);
  if (cats != 0 && level > LogLevel::kDebug) level = LogLevel::kDebug;
  g_level.store(static_cast<int>(level));
}

bool LogEnabled(LogLevel level, LogCategory cat) noexcept {
  if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed)) return false;
  if (level == LogLevel::kDebug && cat != LogCategory::kGeneral) {
    return (g_categories.load(std::memory_order_relaxed) & static_cast<unsigned>(cat)) != 0;
  }
  return true;
}

void LogWrite(LogLevel level, std::string_view message) noexcept {
  char stamp[40];
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm parts{};
  gmtime_r(&ts.tv_sec, &parts);
  size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &parts);
  snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000);
  std::string line;
  line.reserve(message.size() + 64);
  line.append(stamp).append(" ").append(g_program).append(" ").append(LevelName(level));
  line.append(": ").append(message).append("\n");
  // One write(2) per line keeps lines whole when threads log at once.
  ssize_t rc = ::write(STDERR_FILENO, line.data(), line.size());
  (void)rc;
}

void CheckFailed(const char* expr, const char* file, int line) noexcept {
  fprintf(stderr, "pipegate: check failed: %s at %s:%d\n", expr, file, line);
  abort();
}

}  // namespace pipegate
