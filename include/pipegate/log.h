#pragma once

#include <cstdint>
#include <string_view>

#include <fmt/format.h>

namespace pipegate {

/// @brief Log severities, lowest first.
enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kOff = 4 };

/// @brief Debug categories, enabled at runtime with PIPEGATE_DEBUG=tls,mux,frame,acl,loop.
enum class LogCategory : unsigned { kGeneral = 0, kTls = 1, kMux = 2, kFrame = 4, kAcl = 8, kLoop = 16 };

/// @brief Process-wide logger settings. Set once at startup, before threads start.
struct LogConfig {
  LogLevel level = LogLevel::kInfo;
  unsigned debug_categories = 0;  ///< Bit set of LogCategory for kDebug messages.
  std::string_view program = "pipegate";
};

/// @brief Sets the process-wide log configuration; also reads PIPEGATE_DEBUG.
void InitLogging(LogLevel level, std::string_view program);

/// @return True if a message at @p level in @p cat would be written.
bool LogEnabled(LogLevel level, LogCategory cat = LogCategory::kGeneral) noexcept;

/// @brief Writes one formatted line to stderr (thread-safe, one write(2) per line).
void LogWrite(LogLevel level, std::string_view message) noexcept;

}  // namespace pipegate

// The level is checked before the arguments are formatted.
#define PG_LOG(level, ...)                                                        \
  do {                                                                            \
    if (::pipegate::LogEnabled(::pipegate::LogLevel::level)) {                    \
      ::pipegate::LogWrite(::pipegate::LogLevel::level, fmt::format(__VA_ARGS__)); \
    }                                                                             \
  } while (0)

#define PG_DEBUG(cat, ...)                                                                    \
  do {                                                                                        \
    if (::pipegate::LogEnabled(::pipegate::LogLevel::kDebug, ::pipegate::LogCategory::cat)) { \
      ::pipegate::LogWrite(::pipegate::LogLevel::kDebug, fmt::format(__VA_ARGS__));            \
    }                                                                                         \
  } while (0)

#define PG_CONN_LOG(level, conn_id, fmtstr, ...) \
  PG_LOG(level, "[C{}] " fmtstr, conn_id __VA_OPT__(, ) __VA_ARGS__)
#define PG_STREAM_LOG(level, conn_id, stream_id, fmtstr, ...) \
  PG_LOG(level, "[C{}][S{}] " fmtstr, conn_id, stream_id __VA_OPT__(, ) __VA_ARGS__)

// Impossible states. PG_CHECK is always on; PG_DCHECK only in debug builds.
#define PG_CHECK(cond)                                           \
  do {                                                           \
    if (!(cond)) ::pipegate::CheckFailed(#cond, __FILE__, __LINE__); \
  } while (0)
#ifdef NDEBUG
#define PG_DCHECK(cond) \
  do {                  \
  } while (0)
#else
#define PG_DCHECK(cond) PG_CHECK(cond)
#endif

namespace pipegate {
[[noreturn]] void CheckFailed(const char* expr, const char* file, int line) noexcept;
}  // namespace pipegate
