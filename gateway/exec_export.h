#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pipegate/acl.h"
#include "pipegate/config.h"
#include "pipegate/frame.h"
#include "pipegate/status.h"

#include "export_stream.h"
#include "session_registry.h"
#include "uv/child_process.h"
#include "uv/handles.h"

namespace pipegate::gateway {

/// Longest stderr line of an exec process that reaches the log; the rest of it is dropped.
inline constexpr size_t kExecStderrLineMax = 512;

/// @brief The whole environment of an exec export's process (docs/decisions.md "Process
/// exports"): PATH=/usr/bin:/bin, PIPEGATE_EXPORT, PIPEGATE_IDENTITY (the client's primary
/// identity, PeerIdentity::Name()), PIPEGATE_REMOTE_ADDR, and PIPEGATE_USER when the export's
/// identity mapping gave the client a local account (@p mapped_user, the name as configured).
/// Nothing of the gateway's own environment. NUL bytes, which an environment cannot hold, become
/// '?'. Pure.
std::vector<std::string> ExecEnvironment(const ExportConfig& e, const PeerIdentity& peer,
                                         std::string_view remote_address,
                                         const std::optional<std::string>& mapped_user);

/// @brief One gateway-wide process slot (max_exec_processes), held from spawn until the
/// process is reaped, even after its stream is gone. Move-only.
///
/// Thread: any (the count is an atomic shared by every worker).
class ExecProcessSlot {
 public:
  /// @brief Takes a slot unless @p max are in use (0 = no process may run).
  static std::optional<ExecProcessSlot> TryAcquire(Totals* totals, uint32_t max);
  ExecProcessSlot(ExecProcessSlot&& other) noexcept
      : totals_(std::exchange(other.totals_, nullptr)) {}
  ExecProcessSlot& operator=(ExecProcessSlot&&) = delete;
  ExecProcessSlot(const ExecProcessSlot&) = delete;
  ExecProcessSlot& operator=(const ExecProcessSlot&) = delete;
  ~ExecProcessSlot() {
    if (totals_ != nullptr) totals_->exec_processes.fetch_sub(1);
  }

 private:
  explicit ExecProcessSlot(Totals* totals) : totals_(totals) {}
  Totals* totals_;  ///< The gateway's; outlives every worker loop. Null once moved from.
};

/// @brief The stream of an exec export: a fresh process whose stdin and stdout are one end of
/// a Unix stream socketpair, whose other end is this stream's duplex local pipe (so the
/// client's FIN becomes shutdown(SHUT_WR), EOF on the child's stdin). Its stderr goes to the
/// log, line by line, rate-limited. How the process ended reaches the client as EXIT right
/// before the FIN of the gateway's direction: the FIN waits for both the end of the child's
/// stdout and the child's exit. Then the client's direction is stopped (nothing reads it any
/// more). A `timeout` kills the process group (SIGKILL) and reports EXIT(timed out).
///
/// Ownership: a std::unique_ptr in its session's stream table, like every ExportStream. Its
/// destruction closes the ChildProcess, which SIGKILLs the process group unless the child was
/// reaped already; the process slot is given back when the child is reaped, which the worker's
/// loop waits for. Thread: the session's loop. Re-entrancy: the child's events may end the
/// stream through the mux; the session deletes it only from OnStreamClosed.
class ExecStream final : public ExportStream, public uvglue::ChildProcessEvents {
 public:
  ExecStream(uvglue::StreamLinkOwner* owner, Counters* counters, uint32_t id, const ExportConfig& e,
             ExportInstance instance, StreamCharge charge, uvglue::Loop& loop, uint64_t conn_id);
  ~ExecStream() override;

  /// @brief Starts the process with @p env and a socketpair; @p slot is held until it is
  /// reaped.
  /// @return The gateway's end of the socketpair (the caller owns it; it becomes this
  /// stream's duplex local pipe), or why the process could not start (kIo).
  Result<int> Start(std::vector<std::string> env, ExecProcessSlot slot);

  // ChildProcessEvents.
  void OnChildStderrLine(std::string_view line, bool cut) override;
  void OnChildExit(int64_t exit_status, int term_signal) override;

 private:
  bool HoldFin() override;
  void OnTimeout();
  /// @brief Sends EXIT and FIN once both the output's EOF and the exit status are known, and
  /// stops the client's direction.
  void MaybeFinish();

  Counters* counters_;
  uvglue::Loop& loop_;
  uint64_t conn_id_;
  std::vector<std::string> command_;
  uint64_t timeout_ms_;
  uvglue::ChildProcessPtr child_;
  uvglue::Timer timer_;
  std::optional<ExitPayload> exit_;
  bool output_ended_ = false;  ///< The child's stdout reached EOF; its FIN is held.
  bool timed_out_ = false;
  bool finished_ = false;  ///< EXIT and FIN went out.
};

}  // namespace pipegate::gateway
