#include "mount.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <utility>

#include "pipegate/log.h"

namespace pipegate::bridge {

using uvglue::LocalPipe;
using uvglue::LocalPipePtr;

namespace {

constexpr uint64_t kMountPollMs = 20;  // How often a FIFO mount looks for a local reader.
constexpr int kAcceptBatch = 16;       // Connections accepted per readable event.

}  // namespace

Mount::Mount(uvglue::Loop& loop, const BridgeOptions& options, MountHost* host)
    : loop_(loop),
      options_(options),
      host_(host),
      poll_timer_(loop, [this] { Apply(MountEvent::kTick); }) {}

Mount::~Mount() { Stop(); }

void Mount::Start(const ListEntry& entry) {
  Result<MountMode> mode = ChooseMountMode(static_cast<ExportKind>(entry.kind),
                                           static_cast<Access>(entry.access), options_.present_as);
  if (!mode) {
    host_->Finish(mode.error());
    return;
  }
  mode_ = *mode;
  Status st = mode_ == MountMode::kSocket ? PrepareSocketPath() : PrepareFifoPath();
  if (!st.ok()) {
    host_->Finish(st);
    return;
  }
  state_ = InitialMountState(mode_);
  if (mode_ == MountMode::kFifoToReader) {
    poll_timer_.Start(0, kMountPollMs);
  } else if (mode_ == MountMode::kFifoFromWriter) {
    ArmWriter();
  }
  PG_LOG(kInfo, "mounted {} at {}", options_.address.ToString(), options_.local_path);
}

void Mount::OnStreamEnded(const Status& result) {
  if (stopped_) return;
  if (!result.ok()) {
    fprintf(stderr, "pipegate: %s: %s\n", options_.address.ToString().c_str(),
            result.message().c_str());
  }
  Apply(MountEvent::kStreamEnded);
}

void Mount::OnSessionReplaced() { Apply(MountEvent::kSessionReplaced); }

void Mount::OnOpenableChanged() {
  if (wait_pipe_ != nullptr) wait_pipe_->WantRead(host_->CanOpen());
}

void Mount::OnLocalReadable() { Apply(MountEvent::kReadable); }

void Mount::Stop() {
  if (stopped_) return;
  stopped_ = true;
  wait_pipe_.reset();  // Closes it.
  local_.RemoveIfOurs();
  poll_timer_.Close();
}

AdoptRule Mount::Rule() const {
  // Only the invoking user's own file (or the --owner's, who would own what the mount makes,
  // e.g. a socket left by a crashed run), no more open than the mount would make it.
  AdoptRule rule{{::geteuid()}, static_cast<mode_t>(options_.mode)};
  if (options_.owner.uid && *options_.owner.uid != ::geteuid()) {
    rule.owners.push_back(*options_.owner.uid);
  }
  return rule;
}

Status Mount::PrepareFifoPath() {
  Result<PreparedFifo> fifo = CreateOrAdoptFifo(options_.local_path, Rule(), options_.owner);
  if (!fifo) return fifo.error();
  if (fifo->fd >= 0) {
    ::close(fifo->fd);  // Each opener gets its own open through local_.
  } else {
    WarnIfNotAsAsked();
  }
  local_ = fifo->path;
  return Status::Ok();
}

void Mount::WarnIfNotAsAsked() const {
  struct stat st {};
  if (::lstat(options_.local_path.c_str(), &st) != 0) return;
  const bool as_asked = (st.st_mode & 07777) == options_.mode &&
                        st.st_uid == options_.owner.uid.value_or(st.st_uid) &&
                        st.st_gid == options_.owner.gid.value_or(st.st_gid);
  if (as_asked) return;
  PG_LOG(kWarn,
         "using the existing FIFO {} as it is (mode {:04o}, {}, gid {}): --mode, --owner and "
         "--group apply only to a path the mount creates",
         options_.local_path, st.st_mode & 07777, UserLabel(st.st_uid), st.st_gid);
}

Status Mount::PrepareSocketPath() {
  Result<ListeningSocket> sock = ListenUnixAt(options_.local_path, Rule(), 128, options_.owner);
  if (!sock) return sock.error();
  local_ = sock->path;
  wait_pipe_ = *LocalPipe::Open(loop_.native(), sock->fd, LocalPipe::kRead, true, this);
  wait_pipe_->WantRead(true);
  return Status::Ok();
}

void Mount::Apply(MountEvent event) {
  if (stopped_) return;
  const MountStep step =
      NextMountStep(mode_, state_, event, host_->CanOpen(), loop_.Now() - stream_ended_ms_);
  state_ = step.state;
  switch (step.action) {
    case MountAction::kNone:
      return;
    case MountAction::kPauseWaiter:
      OnOpenableChanged();
      return;
    case MountAction::kProbeReader:
      ProbeReader();
      return;
    case MountAction::kOpenWriterStream:
      OpenWriterStream();
      return;
    case MountAction::kAccept:
      AcceptConnections();
      return;
    case MountAction::kNoteEnd:
      stream_ended_ms_ = loop_.Now();
      return;
    case MountAction::kArmWriter:
      ArmWriter();
      return;
  }
}

void Mount::ProbeReader() {
  Result<int> fd = local_.Reopen(O_WRONLY | O_NONBLOCK);
  if (!fd) {
    if (fd.error().code() == Code::kNoReader) return;  // Nobody reads yet.
    host_->Finish(fd.error());  // Replaced or gone: remote data must not go anywhere else.
    return;
  }
  state_ = MountState::kStreaming;
  LocalPipePtr pipe = *LocalPipe::Open(loop_.native(), *fd, LocalPipe::kWrite, true, nullptr);
  pipe->WatchHangup(true);
  Status st = host_->OpenStream(Access::kRead, {nullptr, std::move(pipe)});
  if (!st.ok()) host_->Finish(st);
}

void Mount::OpenWriterStream() {
  LocalPipePtr pipe = std::move(wait_pipe_);
  pipe->WantRead(false);
  Status st = host_->OpenStream(Access::kWrite, {std::move(pipe), nullptr});
  if (!st.ok()) host_->Finish(st);
}

void Mount::AcceptConnections() {
  for (int i = 0; i < kAcceptBatch && !stopped_; ++i) {
    int fd = ::accept4(wait_pipe_->fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    LocalPipePtr pipe =
        *LocalPipe::Open(loop_.native(), fd, LocalPipe::kRead | LocalPipe::kWrite, true, nullptr);
    Status st = host_->OpenStream(Access::kDuplex, uvglue::StreamPipes::Duplex(std::move(pipe)));
    if (!st.ok()) PG_LOG(kWarn, "{}: {}", options_.address.ToString(), st.message());
  }
}

void Mount::ArmWriter() {
  // Hold the read end open so local writers never block in open(); the first byte a writer
  // puts in opens the remote stream.
  Result<int> fd = local_.Reopen(O_RDONLY | O_NONBLOCK);
  if (!fd) {
    host_->Finish(fd.error());  // Replaced or gone: stop rather than serve another file.
    return;
  }
  state_ = MountState::kWaitWriter;
  wait_pipe_ = *LocalPipe::Open(loop_.native(), *fd, LocalPipe::kRead, true, this);
  wait_pipe_->WantRead(true);
}

}  // namespace pipegate::bridge
