#pragma once

#include <string>
#include <utility>
#include <variant>

namespace pipegate {

/// @brief What went wrong, in the vocabulary of SPEC §7. Each code maps to one exit status.
enum class Code {
  kOk = 0,
  kUsage,         ///< Bad usage or configuration (exit 1).
  kConnect,       ///< Could not connect (exit 2).
  kTls,           ///< TLS failed: certificate, CA, name mismatch (exit 2).
  kAccessDenied,  ///< The export does not admit this identity (exit 3).
  kNotFound,      ///< No such pipe (exit 4).
  kBusy,          ///< Every instance is taken (exit 5).
  kNoReader,      ///< A write export has no local reader (exit 5).
  kBrokenPipe,    ///< The far reader went away (exit 6).
  kStreamLost,    ///< The connection was lost and the stream could not be resumed (exit 6).
  kProtocol,      ///< The peer broke the wire protocol (exit 6 on a stream, closes it).
  kIo,            ///< A local I/O error (exit 6 on a stream).
  kLimit,         ///< A resource limit refused the request (exit 5).
  kInternal,      ///< A bug or an impossible state (exit 6).
  kInterrupted,   ///< Stopped by SIGINT (exit 130 = 128 + SIGINT, as shells report it).
  kTerminated,    ///< Stopped by SIGTERM (exit 143 = 128 + SIGTERM).
};

/// @brief The process exit status that SPEC §7 assigns to @p code.
int ExitCodeFor(Code code) noexcept;

/// @brief A short lower-case name of @p code, for logs and counters.
const char* CodeName(Code code) noexcept;

/// @brief A code plus a one-line human message. Cheap to move; `ok()` carries no message.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  /// @brief The success value.
  static Status Ok() { return Status(); }

  /// @return True when this is a success.
  bool ok() const noexcept { return code_ == Code::kOk; }
  /// @return The error code (kOk on success).
  Code code() const noexcept { return code_; }
  /// @return The message (empty on success).
  const std::string& message() const noexcept { return message_; }

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

/// @brief A value or an error Status, shaped like std::expected so it can become an alias.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {}  // NOLINT(google-explicit-constructor)

  /// @return True when a value is held.
  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  /// @return The held value; only valid when has_value().
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  /// @return The error; only valid when !has_value().
  const Status& error() const& { return std::get<1>(v_); }
  Status&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Status> v_;
};

/// @brief The text of an errno value (what strerror says), for messages. Thread-safe.
std::string ErrnoText(int err);

}  // namespace pipegate
