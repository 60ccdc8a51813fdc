#pragma once

#include <fmt/format.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

namespace pipegate {

/// @brief Log severities, lowest first.
enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kOff = 4 };

/// @brief Debug categories, enabled at runtime with PIPEGATE_DEBUG=tls,mux,frame,acl,loop.
enum class LogCategory : unsigned {
  kGeneral = 0,
  kTls = 1,
  kMux = 2,
  kFrame = 4,
  kAcl = 8,
  kLoop = 16
};

/// @brief How log lines are written: `TIME PROGRAM LEVEL: message`, or one JSON object per line
/// with the same content (see LogWrite()).
enum class LogFormat : uint8_t { kText, kJson };

/// @brief Process-wide logger settings. Set once at startup, before threads start.
struct LogConfig {
  LogLevel level = LogLevel::kInfo;
  unsigned debug_categories = 0;  ///< Bit set of LogCategory for kDebug messages.
  std::string_view program = "pipegate";
};

/// @brief Sets the process-wide log configuration; also reads PIPEGATE_DEBUG.
void InitLogging(LogLevel level, std::string_view program);

/// @brief Chooses text or JSON lines from now on. Thread: any (an atomic; a reload may change it).
void SetLogFormat(LogFormat format) noexcept;

/// @return The format SetLogFormat() chose (text by default).
LogFormat GetLogFormat() noexcept;

/// @brief Parses "text" or "json". @return False for anything else.
bool ParseLogFormat(std::string_view text, LogFormat* format) noexcept;

/// @return True if a message at @p level in @p cat would be written.
bool LogEnabled(LogLevel level, LogCategory cat = LogCategory::kGeneral) noexcept;

/// @brief Writes one formatted line to stderr (thread-safe, one write(2) per line). In JSON
/// format the line is `{"time":…,"program":…,"level":…,"msg":…}` followed by the message's own
/// fields: a `[C7]` / `[C7][S3]` prefix becomes "conn":"C7" / "stream":"S3", and every
/// `key=value` or `key="value"` word of the message becomes "key":"value" (keys already set
/// keep their first value). The message itself is kept whole in "msg", so nothing a text line
/// says is lost.
void LogWrite(LogLevel level, std::string_view message) noexcept;

/// @return One JSON log line (no newline) as LogWrite() writes it in JSON format. Thread: any.
std::string FormatJsonLogLine(std::string_view time, std::string_view program, LogLevel level,
                              std::string_view message);

/// @brief Makes a string that may come from a peer safe and short for one log line: control
/// bytes, non-ASCII bytes, '"' and '\\' become \xNN (so a newline cannot forge a line and a
/// quote cannot end a key="value" field), and anything past @p max_bytes is cut with a note of
/// the full size. Thread: any.
std::string SanitizeForLog(std::string_view text, size_t max_bytes = 64);

/// @brief As SanitizeForLog(), but keeps '"' and '\\': for text that is shown, not parsed (a
/// gateway's reason on the bridge's terminal), so that a reason the gateway has escaped already
/// reads the same. Thread: any.
std::string SanitizeControlBytes(std::string_view text, size_t max_bytes);

// ---- Log rate limits -------------------------------------------------------------------------
//
// A client can make the gateway log a line per frame (an OPEN of an unknown name, a TLS failure,
// a refused connection). Every log line therefore has a cause, and each cause may write at most
// SetLogLinesPerSecond() lines per one-second window; the rest are counted and summarised in one
// line per cause ("log: suppressed N lines of CAUSE in the last 1.0 s") when the window has
// ended: before the cause's next line, at the next FlushSuppressedLogLines(), or at exit.

/// @brief One cause of log lines with its own rate limit. PG_LOG makes one per call site (its
/// format string names it); the audit log has one per decision.
///
/// Ownership: must live until exit (a static), because the summary list keeps its address once
/// it has suppressed a line. Thread: any; a mutex guards the window (held for a few
/// instructions, never while writing). Constant-initialised, so a function-local static costs no
/// guard.
class LogCause {
 public:
  /// @param prefix Starts the summary line ("log", "audit"). @param name Names the cause in it.
  /// Both must be string literals (or otherwise outlive the process).
  constexpr LogCause(const char* prefix, const char* name) noexcept
      : prefix_(prefix), name_(name) {}
  LogCause(const LogCause&) = delete;
  LogCause& operator=(const LogCause&) = delete;

  /// @brief Decides whether a line of this cause may be written now, writing first the summary
  /// of a window that has ended. Never allocates when it refuses.
  /// @return True to write the line; false if it was counted as suppressed.
  bool Admit() noexcept;

  /// @return The summary name, as given.
  const char* name() const noexcept { return name_; }

 private:
  friend void FlushSuppressedLogLines() noexcept;
  friend void FlushAllSuppressedLogLines() noexcept;

  // Writes the summary of the current window if it has ended (or if @p force) and lines were
  // suppressed in it, and starts a new window. Takes the mutex; writes outside it.
  void Summarise(uint64_t now_ms, bool force) noexcept;
  void List() noexcept;

  const char* prefix_;
  const char* name_;
  std::mutex mu_;
  uint64_t window_start_ms_ = 0;  // Guarded by mu_.
  uint32_t admitted_ = 0;         // Lines written in the window; guarded by mu_.
  uint64_t suppressed_ = 0;       // Lines suppressed in the window; guarded by mu_.
  std::atomic<bool> listed_{false};
  LogCause* next_ = nullptr;  // The summary list; written once, before listed_ is published.
};

/// @brief Sets the per-cause cap, lines per second; 0 (the default) means no limit. The gateway
/// sets it from `[limits] log_lines_per_second` at start and on every reload. Thread: any.
void SetLogLinesPerSecond(uint32_t lines) noexcept;

/// @return The cap SetLogLinesPerSecond() set.
uint32_t LogLinesPerSecond() noexcept;

/// @return How many lines every cause together has suppressed since the process started.
uint64_t SuppressedLogLines() noexcept;

/// @brief Writes the summary of every cause whose window has ended with suppressed lines. The
/// gateway calls it once a second, so that a burst that stops is summarised within about two
/// seconds even if its cause never logs again. Thread: any.
void FlushSuppressedLogLines() noexcept;

/// @brief Writes the summary of every cause with suppressed lines, ended window or not (at exit,
/// and for tests). Thread: any.
void FlushAllSuppressedLogLines() noexcept;

/// @brief Test seam: replaces the millisecond clock the rate limits read (nullptr restores the
/// monotonic clock). Set it before the causes under test are used.
void SetLogClockForTest(uint64_t (*now_ms)() noexcept) noexcept;

/// @brief Test seam: sends every written line (timestamp and program excluded) to @p sink
/// instead of stderr; nullptr restores stderr.
void SetLogSinkForTest(void (*sink)(LogLevel level, std::string_view message) noexcept) noexcept;

}  // namespace pipegate

// The level is checked before the arguments are formatted, and the cause's rate limit (one
// LogCause per call site, named by the format string) after the level: a suppressed line costs
// neither formatting nor an allocation.
#define PG_LOG_CAUSED(level, name, ...)                                              \
  do {                                                                               \
    if (::pipegate::LogEnabled(::pipegate::LogLevel::level)) {                       \
      static ::pipegate::LogCause pg_log_cause_("log", name);                        \
      if (pg_log_cause_.Admit()) {                                                   \
        ::pipegate::LogWrite(::pipegate::LogLevel::level, fmt::format(__VA_ARGS__)); \
      }                                                                              \
    }                                                                                \
  } while (0)

#define PG_LOG(level, fmtstr, ...) \
  PG_LOG_CAUSED(level, "\"" fmtstr "\"", fmtstr __VA_OPT__(, ) __VA_ARGS__)

// For lines only the operator can trigger (the SIGUSR1 counters, start-up and exit): checked
// against the level, never rate-limited, so that what the operator asked for always appears.
#define PG_LOG_ALWAYS(level, ...)                                                  \
  do {                                                                             \
    if (::pipegate::LogEnabled(::pipegate::LogLevel::level)) {                     \
      ::pipegate::LogWrite(::pipegate::LogLevel::level, fmt::format(__VA_ARGS__)); \
    }                                                                              \
  } while (0)

#define PG_DEBUG(cat, ...)                                                                    \
  do {                                                                                        \
    if (::pipegate::LogEnabled(::pipegate::LogLevel::kDebug, ::pipegate::LogCategory::cat)) { \
      ::pipegate::LogWrite(::pipegate::LogLevel::kDebug, fmt::format(__VA_ARGS__));           \
    }                                                                                         \
  } while (0)

#define PG_CONN_LOG(level, conn_id, fmtstr, ...) \
  PG_LOG_CAUSED(level, "\"" fmtstr "\"", "[C{}] " fmtstr, conn_id __VA_OPT__(, ) __VA_ARGS__)
#define PG_STREAM_LOG(level, conn_id, stream_id, fmtstr, ...)           \
  PG_LOG_CAUSED(level, "\"" fmtstr "\"", "[C{}][S{}] " fmtstr, conn_id, \
                stream_id __VA_OPT__(, ) __VA_ARGS__)

// Impossible states. PG_CHECK is always on; PG_DCHECK only in debug builds.
#define PG_CHECK(cond)                                               \
  do {                                                               \
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
