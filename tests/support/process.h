#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "support/timing.h"

namespace pipegate::testing {

/// @brief Where one of a child's standard streams goes.
struct StdioSpec {
  enum class Kind { kInherit, kNull, kFile, kAppendFile, kPipe };
  Kind kind = Kind::kInherit;
  std::string path;

  /// Shares the test process's stream.
  static StdioSpec Inherit() { return {Kind::kInherit, {}}; }
  /// `/dev/null`.
  static StdioSpec Null() { return {Kind::kNull, {}}; }
  /// stdin: read from `path`; stdout/stderr: write to `path` (created, truncated). The file is
  /// opened in the child, so a FIFO blocks the child, not the test, until its peer opens it.
  static StdioSpec File(std::string p) { return {Kind::kFile, std::move(p)}; }
  /// stdout/stderr: append to `path` (created), so stdout and stderr can share one log.
  static StdioSpec AppendFile(std::string p) { return {Kind::kAppendFile, std::move(p)}; }
  /// A pipe whose other end the Process keeps (stdin_fd(), stdout_fd(), stderr_fd()).
  static StdioSpec Pipe() { return {Kind::kPipe, {}}; }
};

/// @brief What to run, and how.
struct ProcessOptions {
  /// argv[0] is looked up in PATH unless it contains a '/'.
  std::vector<std::string> argv;
  /// Environment changes on top of the test's own: a value sets, nullopt unsets.
  std::vector<std::pair<std::string, std::optional<std::string>>> env;
  StdioSpec stdin_spec = StdioSpec::Null();
  StdioSpec stdout_spec = StdioSpec::Inherit();
  StdioSpec stderr_spec = StdioSpec::Inherit();
  /// Working directory; empty keeps the test's.
  std::string cwd;

  /// @brief Options that run `argv` with the defaults above.
  static ProcessOptions Of(std::vector<std::string> argv) {
    ProcessOptions options;
    options.argv = std::move(argv);
    return options;
  }
};

/// @brief A child process, started by the constructor (fork + exec) and never leaked.
///
/// Ownership: the Process owns the child and the parent ends of its pipes. The destructor sends
/// SIGKILL to the child's process group (each child leads its own, so `sh -c 'a | b'` goes too)
/// and reaps it, so a failing test leaves no zombie and no stray process. When the child exits on
/// its own, whatever is left in its process group is killed as it is reaped. The child also gets
/// SIGKILL if the test process dies (PR_SET_PDEATHSIG). Nothing is ever signalled after it was
/// reaped, because its pid may by then belong to someone else.
///
/// The child starts with default dispositions for SIGPIPE, SIGINT, SIGTERM, SIGQUIT and SIGCHLD
/// and an empty signal mask, whatever the test process set. Every descriptor the support library
/// opens is close-on-exec, and the child closes all descriptors above 2 before exec, so children
/// never hold each other's pipe ends (which would hide EOF).
///
/// Thread: use one Process from one thread. Start Processes from the main test thread, because
/// PR_SET_PDEATHSIG follows the thread that forked.
class Process {
 public:
  explicit Process(ProcessOptions options);
  /// @brief Runs `argv` with stdin from /dev/null and stdout/stderr inherited.
  explicit Process(std::vector<std::string> argv);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  /// @return True if the child was forked. A failed exec (checked before fork, so rare) shows
  /// later as exit status 127 with error() set.
  bool started() const { return pid_ > 0; }
  /// @return Why start or exec failed (empty if it did not).
  const std::string& error() const { return error_; }
  /// @return The child's pid (also its process group id), or -1. Do not signal it yourself once
  /// the child may have been reaped; use Signal().
  pid_t pid() const { return pid_; }
  /// @return argv joined by spaces, for messages.
  std::string CommandLine() const;

  /// @brief Waits for the child to exit.
  /// @param timeout Nominal, scaled by TimeoutMultiplier().
  /// @return The exit code, 128 + N if killed by signal N, or nullopt on timeout.
  std::optional<int> Wait(Duration timeout);

  /// @brief Reaps the child if it has exited (killing leftovers in its group), without blocking.
  /// @return True while the child runs.
  bool Running();

  /// @return The exit status once reaped (see Wait), else nullopt.
  std::optional<int> exit_status() const { return status_; }
  /// @return True once reaped if a signal killed the child, false if it exited by itself (also
  /// with a status of 128+N of its own choosing).
  bool signaled() const { return signaled_; }

  /// @brief Sends `sig` to the child only (not its group). No-op once reaped.
  void Signal(int sig);

  /// @brief SIGKILL to the whole process group, then reaps the child.
  void Kill();

  /// @return The write end of the stdin pipe (StdioSpec::Pipe), or -1.
  int stdin_fd() const { return stdin_fd_; }
  /// @brief Closes the write end of the stdin pipe, so the child sees EOF.
  void CloseStdin();
  /// @brief Hands the stdin pipe to the caller, who must close it. @return The fd, or -1.
  int TakeStdinFd();
  /// @return The read end of the stdout pipe (StdioSpec::Pipe), or -1.
  int stdout_fd() const { return stdout_fd_; }
  /// @brief Closes the read end of the stdout pipe (the child then gets EPIPE/SIGPIPE).
  void CloseStdout();
  /// @return The read end of the stderr pipe (StdioSpec::Pipe), or -1.
  int stderr_fd() const { return stderr_fd_; }

 private:
  void Spawn();
  void Reaped(int raw_status);

  ProcessOptions options_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  bool signaled_ = false;
  std::optional<int> status_;
  std::string error_;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  int stderr_fd_ = -1;
  int report_fd_ = -1;
};

/// @brief Describes an exit status for messages: "exit 3", "signal 9", "still running".
std::string DescribeStatus(const std::optional<int>& status);

/// @brief Runs a command to completion with stdout and stderr captured.
struct CommandResult {
  std::optional<int> status;  ///< As Process::Wait; nullopt if it timed out (it was killed).
  std::string out;
  std::string err;
};

/// @brief Runs `argv` with stdin from /dev/null and waits (nominal `timeout`).
/// Output goes through temporary files in `scratch_dir`.
CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& scratch_dir,
                         Duration timeout = Duration(30000));

/// @brief Ignores SIGPIPE in the test process (idempotent), so a write to a closed pipe or socket
/// returns EPIPE instead of killing the test. Children get SIG_DFL back (see Process).
void IgnoreSigpipe();

}  // namespace pipegate::testing
