#include "uv/child_process.h"

#include <signal.h>

#include <cerrno>
#include <cstring>

namespace pipegate::uvglue {

ChildProcess::ChildProcess(uv_loop_t* loop, ChildProcessEvents* events, size_t max_line)
    : loop_(loop), events_(events), max_line_(max_line == 0 ? 1 : max_line) {
  process_.data = this;
  err_.data = this;
}

Result<ChildProcess::Ptr> ChildProcess::Spawn(uv_loop_t* loop, const Options& options,
                                              ChildProcessEvents* events,
                                              std::function<void()> on_reaped) {
  Ptr self(new ChildProcess(loop, events, options.max_line));
  uv_pipe_init(loop, &self->err_, 0);
  std::vector<char*> argv;
  for (const std::string& a : options.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> env;
  for (const std::string& e : options.env) env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_INHERIT_FD;
  stdio[0].data.fd = options.stdio_fd;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = options.stdio_fd;
  stdio[2].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
  stdio[2].data.stream = reinterpret_cast<uv_stream_t*>(&self->err_);
  uv_process_options_t po{};
  po.exit_cb = &ChildProcess::OnExit;
  po.file = argv[0];
  po.args = argv.data();
  po.env = env.data();
  po.cwd = options.cwd.c_str();
  // DETACHED: setsid() in the child, so it leads a process group of its own that KillGroup()
  // reaches as a whole, and it has no controlling terminal.
  po.flags = UV_PROCESS_DETACHED;
  po.stdio_count = 3;
  po.stdio = stdio;
  int rc = options.argv.empty() ? UV_EINVAL : uv_spawn(loop, &self->process_, &po);
  if (rc != 0) {
    // libuv initialised the process handle even on failure: the Ptr's Close() closes both
    // handles (there is nothing to reap) and frees the object.
    self->reaped_ = true;
    return Status(Code::kIo, uv_strerror(rc));
  }
  self->spawned_ = true;
  self->pid_ = self->process_.pid;
  self->on_reaped_ = std::move(on_reaped);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&self->err_), &ChildProcess::OnAlloc,
                &ChildProcess::OnRead);
  return self;
}

void ChildProcess::KillGroup(int signum) {
  if (!spawned_ || reaped_ || pid_ <= 0) return;
  if (::kill(-pid_, signum) != 0 && errno == ESRCH) {
    (void)::kill(pid_, signum);  // Not (yet) a group leader: the child alone.
  }
}

void ChildProcess::Close() {
  if (closing_) return;
  closing_ = true;
  events_ = nullptr;
  if (!reaped_) {
    KillGroup(SIGKILL);  // OnExit() follows once the kernel has ended it.
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&err_));
    return;
  }
  CloseHandlesNow();
}

void ChildProcess::CloseHandlesNow() {
  if (handles_closing_) return;
  handles_closing_ = true;
  CloseHandles<ChildProcess, &ChildProcess::closes_, &ChildProcess::OnAllClosed>(
      this, {AsHandle(&process_), AsHandle(&err_)});
}

void ChildProcess::OnAllClosed() { delete this; }

void ChildProcess::OnExit(uv_process_t* process, int64_t exit_status, int term_signal) noexcept {
  auto* self = static_cast<ChildProcess*>(process->data);
  // What the child left running in its group (a background job holding its stdout, say) goes
  // with it. The group outlives its reaped leader while it has members, so -pid still names
  // it; with no member left this fails with ESRCH.
  (void)::kill(-self->pid_, SIGKILL);
  self->reaped_ = true;
  if (self->on_reaped_) {
    std::function<void()> reaped = std::move(self->on_reaped_);
    self->on_reaped_ = nullptr;
    reaped();
  }
  if (self->closing_) {
    self->CloseHandlesNow();
    return;
  }
  if (self->events_ != nullptr) self->events_->OnChildExit(exit_status, term_signal);
}

void ChildProcess::OnAlloc(uv_handle_t* handle, size_t, uv_buf_t* buf) noexcept {
  auto* self = static_cast<ChildProcess*>(handle->data);
  *buf = uv_buf_init(self->read_buf_, sizeof self->read_buf_);
}

void ChildProcess::OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept {
  auto* self = static_cast<ChildProcess*>(stream->data);
  if (nread == 0) return;
  if (nread < 0) {
    // EOF or an error: whatever is left of the last line, then no more reads.
    uv_read_stop(stream);
    if (!self->line_.empty() && self->events_ != nullptr) {
      std::string line = std::move(self->line_);
      self->line_.clear();
      self->events_->OnChildStderrLine(line, false);
    }
    return;
  }
  self->EmitLines(buf->base, static_cast<size_t>(nread));
}

// Re-entrancy: an event may Close() this object; events_ is null from then on, and the object
// lives until the child is reaped, so the loop below may go on dropping bytes safely.
void ChildProcess::EmitLines(const char* p, size_t n) {
  while (n > 0) {
    const char* nl = static_cast<const char*>(std::memchr(p, '\n', n));
    const size_t upto = nl != nullptr ? static_cast<size_t>(nl - p) : n;
    if (!skipping_) {
      const size_t room = max_line_ - line_.size();
      line_.append(p, std::min(upto, room));
      if (upto > room) {
        skipping_ = true;
        std::string line = std::move(line_);
        line_.clear();
        if (events_ != nullptr) events_->OnChildStderrLine(line, true);
      }
    }
    if (nl == nullptr) return;
    if (!skipping_) {
      std::string line = std::move(line_);
      line_.clear();
      if (events_ != nullptr) events_->OnChildStderrLine(line, false);
    }
    skipping_ = false;
    p = nl + 1;
    n -= upto + 1;
  }
}

}  // namespace pipegate::uvglue
