#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "support/files.h"
#include "support/pki.h"
#include "support/process.h"
#include "support/timing.h"

namespace pipegate::testing {

/// @brief ProcessOptions that run `pipegate ARGS...` as `identity`.
///
/// The identity goes in PIPEGATE_CERT/KEY/CA (nullopt unsets them). HOME and XDG_CONFIG_HOME
/// point into `dir`, so no user config file can leak in. Stdio defaults: stdin /dev/null, stdout
/// and stderr inherited; set them on the result.
ProcessOptions PipegateOptions(TempDir& dir, std::vector<std::string> args,
                               const std::optional<Identity>& identity = Alice());

/// @brief How RunPipegate runs the client.
struct ClientOptions {
  std::optional<Identity> identity = Alice();
  std::string stdin_path;              ///< Empty: /dev/null.
  std::string stdout_path;             ///< Empty: captured into ClientResult::out.
  Duration timeout = Duration(30000);  ///< Nominal; on timeout the client is killed.
  std::vector<std::pair<std::string, std::optional<std::string>>> env;
  /// Argv run in front of `pipegate ARGS...`, which it must exec (e.g. `unshare ... sh -c`).
  std::vector<std::string> wrapper;

  /// @brief Options with stdin from `path`.
  static ClientOptions Stdin(std::string path) {
    ClientOptions options;
    options.stdin_path = std::move(path);
    return options;
  }
  /// @brief Options that run as `who` (nullopt: no identity at all).
  static ClientOptions As(std::optional<Identity> who) {
    ClientOptions options;
    options.identity = std::move(who);
    return options;
  }
  /// @return These options with stdin from `path` (`ClientOptions::As(Bob()).WithStdin(f)`).
  ClientOptions WithStdin(std::string path) const {
    ClientOptions options = *this;
    options.stdin_path = std::move(path);
    return options;
  }
};

/// @brief What a finished `pipegate` run did.
struct ClientResult {
  std::optional<int> status;  ///< Exit code (128+N for signal N); nullopt if it timed out.
  std::string out;            ///< stdout, unless redirected to a file.
  std::string err;            ///< stderr.
  Duration elapsed{0};
  std::string command;

  /// @return A one-paragraph summary for assertion messages.
  std::string Describe() const;
};

/// @brief Runs `pipegate ARGS...` to completion (or kills it at the timeout).
ClientResult RunPipegate(TempDir& dir, std::vector<std::string> args, ClientOptions options = {});

/// @brief A `pipegate` client running in the background, stderr captured to a file.
///
/// Ownership: owns the Process (killed and reaped on destruction). Borrows the TempDir.
class Bridge {
 public:
  /// @param stdin_spec Where stdin comes from (default /dev/null).
  /// @param stdout_path Where stdout goes; empty captures it to a file read by Result().
  Bridge(TempDir& dir, std::vector<std::string> args, StdioSpec stdin_spec = StdioSpec::Null(),
         std::string stdout_path = "", const std::optional<Identity>& identity = Alice());
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  bool started() const { return process_->started(); }
  pid_t pid() const { return process_->pid(); }
  Process& process() { return *process_; }
  bool Running() { return process_->Running(); }
  /// @brief As Process::Wait (nominal timeout).
  std::optional<int> Wait(Duration timeout);
  /// @return stdout (when captured) and stderr so far, with the exit status if reaped.
  ClientResult Result();
  /// @return Result().Describe().
  std::string Describe() { return Result().Describe(); }
  /// @return The stdout file.
  const std::string& out_path() const { return out_path_; }

 private:
  std::string out_path_;
  std::string err_path_;
  bool capture_out_;
  Clock::time_point start_;
  std::unique_ptr<Process> process_;
};

/// @brief Checks SPEC §7's error form: exit `code`, and stderr has one error line
/// `pipegate: ADDRESS: CAUSE` (besides timestamped log lines) where CAUSE matches `cause_regex`
/// (ECMAScript, case-insensitive; empty matches anything). Set `exact_address` false to accept any
/// line starting with `pipegate: ADDRESS` (for addresses that are rejected before they can be
/// canonicalized).
::testing::AssertionResult IsError(const ClientResult& result, int code, const std::string& address,
                                   const std::string& cause_regex = "", bool exact_address = true);

/// @brief Reads a file written by a child (stdout or stderr) and strips one trailing newline.
std::string ReadOutput(const std::string& path);

/// @brief Waits (up to 10 s) until the `pipegate mount` @p mount has made @p local, as a FIFO
/// (@p want_fifo) or a Unix socket; fails with the mount's description if it did not start or
/// ended first.
::testing::AssertionResult StartMount(Bridge& mount, const std::string& local,
                                      bool want_fifo = false);
/// @brief Stops @p mount with SIGTERM and checks that it exited 143 by itself (SPEC §7, 128 +
/// SIGTERM; not killed by the signal) and removed @p local.
::testing::AssertionResult StopMount(Bridge& mount, const std::string& local);

/// @brief Splits text into lines (no trailing empty line).
std::vector<std::string> SplitLines(const std::string& text);

}  // namespace pipegate::testing
