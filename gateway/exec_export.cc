#include "exec_export.h"

#include <fmt/format.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <utility>

#include "pipegate/log.h"
#include "pipegate/mux.h"

namespace pipegate::gateway {

namespace {

std::string EnvEntry(std::string_view name, std::string_view value) {
  std::string entry(name);
  entry += '=';
  for (char c : value) entry += c == '\0' ? '?' : c;
  return entry;
}

}  // namespace

std::vector<std::string> ExecEnvironment(const ExportConfig& e, const PeerIdentity& peer,
                                         std::string_view remote_address,
                                         const std::optional<std::string>& mapped_user) {
  std::vector<std::string> env;
  env.push_back("PATH=/usr/bin:/bin");
  env.push_back(EnvEntry("PIPEGATE_EXPORT", e.name));
  env.push_back(EnvEntry("PIPEGATE_IDENTITY", peer.Name()));
  env.push_back(EnvEntry("PIPEGATE_REMOTE_ADDR", remote_address));
  if (mapped_user) env.push_back(EnvEntry("PIPEGATE_USER", *mapped_user));
  return env;
}

std::optional<ExecProcessSlot> ExecProcessSlot::TryAcquire(Totals* totals, uint32_t max) {
  uint32_t before = totals->exec_processes.fetch_add(1);
  if (before >= max) {
    totals->exec_processes.fetch_sub(1);
    return std::nullopt;
  }
  return ExecProcessSlot(totals);
}

ExecStream::ExecStream(uvglue::StreamLinkOwner* owner, Counters* counters, uint32_t id,
                       const ExportConfig& e, ExportInstance instance, StreamCharge charge,
                       uvglue::Loop& loop, uint64_t conn_id)
    : ExportStream(owner, counters, id, e, std::move(instance), std::move(charge)),
      counters_(counters),
      loop_(loop),
      conn_id_(conn_id),
      command_(e.command),
      timeout_ms_(e.timeout_ms),
      timer_(loop, [this] { OnTimeout(); }) {}

ExecStream::~ExecStream() {
  if (child_ != nullptr && !child_->reaped()) {
    counters_->exec_killed++;
    PG_STREAM_LOG(kInfo, conn_id_, id_, "exec '{}': killing process group {}: the stream ended",
                  name_, child_->pid());
  }
  // child_'s deleter SIGKILLs the group (unless reaped); the loop reaps it later.
}

Result<int> ExecStream::Start(std::vector<std::string> env, ExecProcessSlot slot) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return Status(Code::kIo, fmt::format("exec '{}': socketpair: {}", name_, ErrnoText(errno)));
  }
  uvglue::ChildProcess::Options options;
  options.argv = command_;
  options.env = std::move(env);
  options.stdio_fd = sv[1];
  options.max_line = kExecStderrLineMax;
  // std::function wants a copyable callable: the slot rides in a shared_ptr, released when the
  // child is reaped (or at once if it never starts).
  auto held = std::make_shared<ExecProcessSlot>(std::move(slot));
  Result<uvglue::ChildProcessPtr> child = uvglue::ChildProcess::Spawn(
      loop_.native(), options, this, [held]() mutable { held.reset(); });
  ::close(sv[1]);  // The child has its copies (stdin and stdout).
  if (!child) {
    ::close(sv[0]);
    return Status(Code::kIo,
                  fmt::format("cannot run '{}' for '{}': {}", SanitizeForLog(command_.at(0), 128),
                              name_, child.error().message()));
  }
  child_ = std::move(*child);
  if (timeout_ms_ > 0) timer_.Start(timeout_ms_);
  PG_STREAM_LOG(kInfo, conn_id_, id_, "exec '{}': started process {}", name_, child_->pid());
  return sv[0];
}

void ExecStream::OnChildStderrLine(std::string_view line, bool cut) {
  // One log cause for every exec stderr line: log_lines_per_second caps them all together.
  PG_LOG(kInfo, "exec '{}' [C{}][S{}] stderr: {}{}", name_, conn_id_, id_,
         SanitizeForLog(line, kExecStderrLineMax), cut ? " [line cut]" : "");
}

void ExecStream::OnChildExit(int64_t exit_status, int term_signal) {
  const int pid = child_ != nullptr ? child_->pid() : 0;
  if (timed_out_) {
    exit_ = ExitPayload{ExitHow::kTimedOut, static_cast<uint32_t>((timeout_ms_ + 999) / 1000)};
  } else if (term_signal != 0) {
    exit_ = ExitPayload{ExitHow::kSignaled, static_cast<uint32_t>(term_signal)};
  } else {
    exit_ = ExitPayload{ExitHow::kExited, static_cast<uint32_t>(exit_status & 0xff)};
  }
  PG_STREAM_LOG(kInfo, conn_id_, id_, "exec '{}': process {} {} {}", name_, pid,
                exit_->how == ExitHow::kExited     ? "exited with status"
                : exit_->how == ExitHow::kSignaled ? "was killed by signal"
                                                   : "timed out after (s)",
                exit_->code);
  if (output_ended_) MaybeFinish();
}

bool ExecStream::HoldFin() {
  output_ended_ = true;
  if (!exit_) return true;  // OnChildExit() sends EXIT and the FIN.
  Mux* mux = owner_->stream_mux();
  if (mux == nullptr) return false;
  finished_ = true;
  timer_.Stop();
  mux->SendExit(id_, *exit_);
  // The child is gone: nothing will read what the client still sends. The sending direction is
  // not done yet (its FIN follows), so this does not end the stream.
  mux->StopReading(id_, ErrorCode::kNoError, "the process exited");
  return false;
}

void ExecStream::MaybeFinish() {
  if (finished_ || !exit_) return;
  uvglue::StreamLinkOwner* owner = owner_;
  Mux* mux = owner->stream_mux();
  if (mux == nullptr) return;
  finished_ = true;
  timer_.Stop();
  const uint32_t id = id_;
  mux->SendExit(id, *exit_);
  mux->StopReading(id, ErrorCode::kNoError, "the process exited");
  if (output_ended_) {
    mux->SendFin(id);  // May end the stream: nothing of this object is used after it.
  } else {
    EndInput();  // The output never ended (a descendant escaped the group): end it here.
  }
  owner->FlushSoon();
}

void ExecStream::OnTimeout() {
  if (child_ == nullptr) return;
  if (!child_->reaped()) {
    timed_out_ = true;
    counters_->exec_timeouts++;
    PG_STREAM_LOG(kWarn, conn_id_, id_,
                  "exec '{}': process {} ran longer than its timeout of {} ms: killing its "
                  "process group",
                  name_, child_->pid(), timeout_ms_);
    child_->KillGroup(SIGKILL);  // OnChildExit() follows, and reports the timeout.
    return;
  }
  // Reaped, but something outside its group still holds its stdout open: end the output now.
  MaybeFinish();
}

}  // namespace pipegate::gateway
