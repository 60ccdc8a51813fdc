#include "pipegate/log.h"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>

#include <nlohmann/json.hpp>

namespace pipegate {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<unsigned> g_categories{0};
std::atomic<LogFormat> g_format{LogFormat::kText};
std::string g_program = "pipegate";

// Rate limits. A window is one second; the cap applies to each LogCause on its own.
constexpr uint64_t kWindowMs = 1000;
std::atomic<uint32_t> g_lines_per_second{0};
std::atomic<uint64_t> g_suppressed_total{0};
// Causes that have suppressed a line at least once, newest first. Only ever grows; causes are
// statics, so the pointers stay valid until exit.
std::atomic<LogCause*> g_listed{nullptr};
std::atomic<bool> g_atexit_registered{false};

uint64_t MonotonicMs() noexcept {
  timespec ts{};
  // The coarse clock (a few ms of resolution) is enough for one-second windows and is the
  // cheapest to read on the path that refuses a line.
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

std::atomic<uint64_t (*)() noexcept> g_clock{&MonotonicMs};
std::atomic<void (*)(LogLevel, std::string_view) noexcept> g_sink{nullptr};

uint64_t NowMs() noexcept { return g_clock.load(std::memory_order_relaxed)(); }

// A LogCause is a function-local static in every PG_LOG: it must need neither a guard nor an
// exit-time destructor.
static_assert(std::is_trivially_destructible_v<std::mutex>);
static_assert(std::is_trivially_destructible_v<LogCause>);

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

bool IsKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// The fields of a text message: a leading [C7] or [C7][S3] prefix, and every key=value or
// key="value" word (a quoted value ends at the next '"': SanitizeForLog escapes quotes inside).
// Keys already present keep their first value.
void AddMessageFields(std::string_view message, nlohmann::ordered_json* out) {
  std::string_view rest = message;
  for (const char* name : {"conn", "stream"}) {
    if (rest.size() < 3 || rest[0] != '[') break;
    size_t close = rest.find(']');
    if (close == std::string_view::npos) break;
    (*out)[name] = std::string(rest.substr(1, close - 1));
    rest.remove_prefix(close + 1);
  }
  for (size_t i = 0; i < message.size();) {
    size_t eq = message.find('=', i);
    if (eq == std::string_view::npos) break;
    size_t start = eq;
    while (start > i && IsKeyChar(message[start - 1])) --start;
    const bool word_start = start == 0 || message[start - 1] == ' ';
    size_t end = eq + 1;
    std::string value;
    if (end < message.size() && message[end] == '"') {
      size_t close = message.find('"', end + 1);
      if (close == std::string_view::npos) break;
      value = std::string(message.substr(end + 1, close - end - 1));
      end = close + 1;
    } else {
      while (end < message.size() && message[end] != ' ') ++end;
      value = std::string(message.substr(eq + 1, end - eq - 1));
    }
    if (word_start && start < eq) {
      std::string key(message.substr(start, eq - start));
      if (!out->contains(key)) (*out)[key] = std::move(value);
    }
    i = end;
  }
}

}  // namespace

std::string FormatJsonLogLine(std::string_view time, std::string_view program, LogLevel level,
                              std::string_view message) {
  nlohmann::ordered_json line;
  line["time"] = std::string(time);
  line["program"] = std::string(program);
  line["level"] = LevelName(level);
  line["msg"] = std::string(message);
  AddMessageFields(message, &line);
  // Messages are ASCII after SanitizeForLog(), but a path or an OS message may not be: bytes
  // that are not UTF-8 become U+FFFD instead of an exception.
  return line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

void SetLogFormat(LogFormat format) noexcept { g_format.store(format); }

LogFormat GetLogFormat() noexcept { return g_format.load(); }

bool ParseLogFormat(std::string_view text, LogFormat* format) noexcept {
  if (text == "text") {
    *format = LogFormat::kText;
  } else if (text == "json") {
    *format = LogFormat::kJson;
  } else {
    return false;
  }
  return true;
}

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
  if (auto* sink = g_sink.load(std::memory_order_acquire); sink != nullptr) {
    sink(level, message);
    return;
  }
  char stamp[40];
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm parts{};
  gmtime_r(&ts.tv_sec, &parts);
  size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &parts);
  snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000);
  std::string line;
  if (g_format.load(std::memory_order_relaxed) == LogFormat::kJson) {
    try {
      line = FormatJsonLogLine(stamp, g_program, level, message);
    } catch (...) {  // Allocation failure: a log line is not worth a crash.
      return;
    }
    line.push_back('\n');
  } else {
    line.reserve(message.size() + 64);
    line.append(stamp).append(" ").append(g_program).append(" ").append(LevelName(level));
    line.append(": ").append(message).append("\n");
  }
  // One write(2) per line keeps lines whole when threads log at once.
  ssize_t rc = ::write(STDERR_FILENO, line.data(), line.size());
  (void)rc;
}

namespace {

std::string Escape(std::string_view text, size_t max_bytes, bool quotes) {
  static constexpr std::string_view kHex = "0123456789abcdef";
  std::string out;
  const size_t shown = std::min(text.size(), max_bytes);
  out.reserve(shown);
  for (size_t i = 0; i < shown; ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x20 || byte >= 0x7f || (quotes && (byte == '"' || byte == '\\'))) {
      out += "\\x";
      out.push_back(kHex[byte >> 4]);
      out.push_back(kHex[byte & 0xf]);
    } else {
      out.push_back(static_cast<char>(byte));
    }
  }
  if (shown < text.size()) out += fmt::format("...({} bytes)", text.size());
  return out;
}

}  // namespace

std::string SanitizeForLog(std::string_view text, size_t max_bytes) {
  return Escape(text, max_bytes, /*quotes=*/true);
}

std::string SanitizeControlBytes(std::string_view text, size_t max_bytes) {
  return Escape(text, max_bytes, /*quotes=*/false);
}

bool LogCause::Admit() noexcept {
  const uint32_t cap = g_lines_per_second.load(std::memory_order_relaxed);
  if (cap == 0 && !listed_.load(std::memory_order_relaxed)) return true;  // Never limited.
  const uint64_t now = NowMs();
  uint64_t report = 0;
  uint64_t span_ms = 0;
  bool admit = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (now - window_start_ms_ >= kWindowMs) {
      report = suppressed_;
      span_ms = now - window_start_ms_;
      window_start_ms_ = now;
      admitted_ = 0;
      suppressed_ = 0;
    }
    admit = cap == 0 || admitted_ < cap;
    if (admit) {
      ++admitted_;
    } else {
      ++suppressed_;
    }
  }
  if (report != 0) {
    // The summary goes before the line that ended the window, so the log reads in order.
    LogWrite(LogLevel::kWarn,
             fmt::format("{}: suppressed {} lines of {} in the last {:.1f} s", prefix_, report,
                         name_, static_cast<double>(span_ms) / 1000.0));
  }
  if (!admit) {
    g_suppressed_total.fetch_add(1, std::memory_order_relaxed);
    if (!listed_.load(std::memory_order_acquire)) List();
  }
  return admit;
}

void LogCause::List() noexcept {
  bool expected = false;
  // The first suppression publishes the cause; later ones see listed_ and skip this.
  if (!listed_.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) return;
  LogCause* head = g_listed.load(std::memory_order_relaxed);
  do {
    next_ = head;
  } while (!g_listed.compare_exchange_weak(head, this, std::memory_order_release,
                                           std::memory_order_relaxed));
  bool registered = false;
  if (g_atexit_registered.compare_exchange_strong(registered, true)) {
    std::atexit([] { FlushAllSuppressedLogLines(); });
  }
}

void LogCause::Summarise(uint64_t now_ms, bool force) noexcept {
  uint64_t report = 0;
  uint64_t span_ms = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (suppressed_ == 0 || (!force && now_ms - window_start_ms_ < kWindowMs)) return;
    report = suppressed_;
    span_ms = now_ms - window_start_ms_;
    window_start_ms_ = now_ms;
    admitted_ = 0;
    suppressed_ = 0;
  }
  LogWrite(LogLevel::kWarn,
           fmt::format("{}: suppressed {} lines of {} in the last {:.1f} s", prefix_, report, name_,
                       static_cast<double>(span_ms) / 1000.0));
}

void SetLogLinesPerSecond(uint32_t lines) noexcept {
  g_lines_per_second.store(lines, std::memory_order_relaxed);
}

uint32_t LogLinesPerSecond() noexcept { return g_lines_per_second.load(std::memory_order_relaxed); }

uint64_t SuppressedLogLines() noexcept {
  return g_suppressed_total.load(std::memory_order_relaxed);
}

void FlushSuppressedLogLines() noexcept {
  const uint64_t now = NowMs();
  for (LogCause* c = g_listed.load(std::memory_order_acquire); c != nullptr; c = c->next_) {
    c->Summarise(now, /*force=*/false);
  }
}

void FlushAllSuppressedLogLines() noexcept {
  const uint64_t now = NowMs();
  for (LogCause* c = g_listed.load(std::memory_order_acquire); c != nullptr; c = c->next_) {
    c->Summarise(now, /*force=*/true);
  }
}

void SetLogClockForTest(uint64_t (*now_ms)() noexcept) noexcept {
  g_clock.store(now_ms != nullptr ? now_ms : &MonotonicMs);
}

void SetLogSinkForTest(void (*sink)(LogLevel level, std::string_view message) noexcept) noexcept {
  g_sink.store(sink, std::memory_order_release);
}

void CheckFailed(const char* expr, const char* file, int line) noexcept {
  fprintf(stderr, "pipegate: check failed: %s at %s:%d\n", expr, file, line);
  abort();
}

}  // namespace pipegate
