#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <uv.h>

#include "pipegate/status.h"

#include "uv/handles.h"

namespace pipegate::uvglue {

/// @brief Events of a ChildProcess, on the loop's thread. Never called after Close().
class ChildProcessEvents {
 public:
  virtual ~ChildProcessEvents() = default;
  /// @brief One line the child wrote to its stderr, without its newline; @p cut when the line
  /// was longer than the cap and this is only its start (the rest is dropped).
  virtual void OnChildStderrLine(std::string_view line, bool cut) = 0;
  /// @brief The child was reaped: @p exit_status is its exit status, or @p term_signal
  /// (non-zero) the signal that ended it. The rest of its process group was sent SIGKILL.
  virtual void OnChildExit(int64_t exit_status, int term_signal) = 0;
};

/// @brief One child process started with uv_spawn, in a process group (and session) of its
/// own, with a given descriptor as its stdin and stdout and a pipe as its stderr, read line by
/// line. No shell: argv[0] is executed directly, with exactly the environment given.
///
/// Ownership: Spawn() returns it in a ChildProcess::Ptr whose deleter is Close(). Close()
/// SIGKILLs the process group unless the child was reaped already, and stops every event; the
/// object then owns itself until the child is reaped and its handles are closed (libuv reaps
/// only processes whose handle is open), and deletes itself in the last close callback. So a
/// loop that runs until it has no active handle also waits for every child to be reaped.
/// Thread: its loop's thread; uv_spawn is safe with several loops on several threads (every
/// descriptor of the gateway is close-on-exec).
class ChildProcess {
 public:
  /// @brief The deleter of Ptr: Close().
  struct Closer {
    void operator()(ChildProcess* p) const noexcept { p->Close(); }
  };
  using Ptr = std::unique_ptr<ChildProcess, Closer>;

  struct Options {
    std::vector<std::string> argv;  ///< argv[0] is the absolute path executed.
    std::vector<std::string> env;   ///< The whole environment, "NAME=value" each.
    std::string cwd = "/";
    int stdio_fd = -1;       ///< The child's stdin and stdout (duplicated; the caller keeps it).
    size_t max_line = 1024;  ///< Longer stderr lines are cut to this.
  };

  /// @brief Starts the child. @p on_reaped runs once the child is reaped, even after Close()
  /// (to give back a process count); it must not touch the owner.
  /// @return The process, or why it could not start (exec failures such as ENOENT and EACCES
  /// are reported here, synchronously; no event follows).
  static Result<Ptr> Spawn(uv_loop_t* loop, const Options& options, ChildProcessEvents* events,
                           std::function<void()> on_reaped);

  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  /// @return The child's pid, which is also its process group id.
  int pid() const noexcept { return pid_; }
  /// @return True once the child was reaped.
  bool reaped() const noexcept { return reaped_; }
  /// @brief Sends @p signum to the child's whole process group; nothing once the child was
  /// reaped (its group id may then belong to someone else).
  void KillGroup(int signum);
  /// @brief SIGKILLs the process group unless reaped, stops every event, and frees the object
  /// once the child is reaped. Idempotent; called by Ptr's deleter.
  void Close();

 private:
  ChildProcess(uv_loop_t* loop, ChildProcessEvents* events, size_t max_line);
  ~ChildProcess() = default;

  static void OnExit(uv_process_t* process, int64_t exit_status, int term_signal) noexcept;
  static void OnAlloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf) noexcept;
  static void OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept;
  void EmitLines(const char* p, size_t n);
  void CloseHandlesNow();
  void OnAllClosed();

  uv_loop_t* loop_;
  uv_process_t process_{};
  uv_pipe_t err_{};
  ChildProcessEvents* events_;
  std::function<void()> on_reaped_;
  size_t max_line_;
  int pid_ = 0;
  bool spawned_ = false;
  bool reaped_ = false;
  bool closing_ = false;
  bool handles_closing_ = false;
  bool skipping_ = false;  ///< The rest of a cut stderr line is being dropped.
  std::string line_;       ///< The stderr line being collected (at most max_line_ bytes).
  char read_buf_[4096];
  CloseCount<ChildProcess> closes_;
};

using ChildProcessPtr = ChildProcess::Ptr;

}  // namespace pipegate::uvglue
