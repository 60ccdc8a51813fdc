#include "mount.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <utility>

#include "pipegate/log.h"
#include "pipegate/mux.h"

namespace pipegate::bridge {

using uvglue::LocalPipe;
using uvglue::LocalPipePtr;

namespace {

constexpr uint64_t kMountPollMs = 20;  // How often a FIFO mount looks for a local reader.
constexpr int kAcceptBatch = 16;       // Connections accepted per readable event.
// How long the gateway may hold a FIFO mount's OPEN waiting for a reader or a free instance
// (it cuts this to its max_open_wait).
constexpr uint32_t kMountWaitMs = 60000;

}  // namespace

Mount::Mount(uvglue::Loop& loop, const BridgeOptions& options, MountHost* host)
    : loop_(loop),
      options_(options),
      host_(host),
      poll_timer_(loop, [this] { Apply(MountEvent::kTick); }),
      retry_timer_(loop, [this] { Apply(MountEvent::kRetryDue); }) {}

Mount::~Mount() { Stop(); }

void Mount::Start(const ListEntry& entry) {
  Result<MountMode> mode = ChooseMountMode(static_cast<ExportKind>(entry.kind),
                                           static_cast<Access>(entry.access), options_.present_as);
  if (!mode) {
    host_->Finish(mode.error());
    return;
  }
  mode_ = *mode;
  messages_ = (entry.flags & kExportMessages) != 0;
  // What the local program writes right after connect() goes with the OPEN, sparing a round
  // trip per connection, where the export takes it (a byte stream the client writes).
  early_data_ = mode_ == MountMode::kSocket &&
                EarlyDataFits(OpenOkPayload{entry.kind, entry.access, entry.flags, 0});
  if (messages_ && mode_ != MountMode::kSocket) {
    host_->Finish(Status(Code::kUsage, fmt::format("'{}' carries messages: it can be mounted as "
                                                   "a (seqpacket) socket, not as a FIFO",
                                                   entry.name)));
    return;
  }
  Status st = mode_ == MountMode::kSocket ? PrepareSocketPath() : PrepareFifoPath();
  if (!st.ok()) {
    host_->Finish(st);
    return;
  }
  state_ = InitialMountState(mode_);
  PG_LOG(kInfo, "mounted {} at {}", options_.address.ToString(), options_.local_path);
  if (mode_ == MountMode::kFifoToReader) poll_timer_.Start(0, kMountPollMs);
  Apply(MountEvent::kStart);
}

void Mount::OnStreamAccepted(uint32_t id) {
  if (stopped_ || mode_ == MountMode::kSocket || id != stream_id_) return;
  Apply(MountEvent::kAccepted);
}

void Mount::OnStreamEnded(uint32_t id, const MountStreamEnd& end) {
  if (stopped_) return;
  if (mode_ == MountMode::kSocket) {
    if (!end.result.ok()) Say(end.result.message());
    return;
  }
  if (id != stream_id_) return;  // An OPEN given up when its reader left.
  stream_id_ = 0;
  last_end_ = end.result;
  if (state_ == MountState::kStreaming) {
    if (!end.result.ok()) {
      std::string what = end.result.message();
      if (mode_ == MountMode::kFifoFromWriter && end.undelivered > 0) {
        what += fmt::format("; {} byte(s) written into {} were not delivered", end.undelivered,
                            options_.local_path);
      }
      Say(what);
    }
  } else if (!end.result.ok() && RetryableRefusal(end.result.code())) {
    NoteRefusal(end.result);
  }
  Apply(MountEvent::kStreamEnded, end.result.code());
}

void Mount::OnSessionReplaced() {
  stream_id_ = 0;
  Apply(MountEvent::kSessionReplaced);
}

void Mount::OnOpenableChanged() {
  if (listener_ != nullptr) listener_->WantRead(host_->CanOpen());
}

void Mount::OnLocalReadable() { Apply(MountEvent::kReadable); }

void Mount::OnLocalWriteError(const Status&) { Apply(MountEvent::kReaderLeft); }

void Mount::Stop() {
  if (stopped_) return;
  stopped_ = true;
  EndRefusals();
  listener_.reset();  // Closes it.
  held_.reset();
  local_.RemoveIfOurs();
  poll_timer_.Close();
  retry_timer_.Close();
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
  // Not kept open: each opener gets its own open through local_, and until then no one may
  // find the FIFO open (a non-blocking writer gets ENXIO, as with a FIFO nobody reads).
  Result<PreparedFifo> fifo =
      CreateOrAdoptFifo(options_.local_path, Rule(), options_.owner, /*keep_open=*/false);
  if (!fifo) return fifo.error();
  if (!fifo->path.created()) WarnIfNotAsAsked();
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
  Result<ListeningSocket> sock = ListenUnixAt(options_.local_path, Rule(), 128, options_.owner,
                                              messages_ ? SOCK_SEQPACKET : SOCK_STREAM);
  if (!sock) return sock.error();
  local_ = sock->path;
  listener_ = *LocalPipe::Open(loop_.native(), sock->fd, LocalPipe::kRead, true, this);
  listener_->WantRead(true);
  return Status::Ok();
}

void Mount::Apply(MountEvent event, Code end) {
  if (stopped_) return;
  MountFacts facts;
  facts.can_open = host_->CanOpen();
  facts.since_end_ms = loop_.Now() - stream_ended_ms_;
  facts.end = end;
  const MountStep step = NextMountStep(mode_, state_, event, facts);
  state_ = step.state;
  switch (step.action) {
    case MountAction::kNone:
      return;
    case MountAction::kPauseWaiter:
      OnOpenableChanged();
      return;
    case MountAction::kAccept:
      AcceptConnections();
      return;
    case MountAction::kProbeReader:
      ProbeReader();
      return;
    case MountAction::kOpenStream:
      OpenFifoStream();
      return;
    case MountAction::kAttachLocal:
      AttachLocal();
      return;
    case MountAction::kScheduleRetry:
      retry_timer_.Start(RetryDelayMs(attempts_++));
      return;
    case MountAction::kNoteEnd:
      stream_ended_ms_ = loop_.Now();
      return;
    case MountAction::kDropReader:
      held_.reset();
      retry_timer_.Stop();
      if (stream_id_ != 0) host_->AbortStream(std::exchange(stream_id_, 0));
      return;
    case MountAction::kFinish:
      host_->Finish(last_end_);
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
  // Held (and watched: a reader who leaves before a stream takes it is let go) until the
  // gateway accepts a stream for it.
  held_ = *LocalPipe::Open(loop_.native(), *fd, LocalPipe::kWrite, true, this);
  held_->WatchHangup(true);
  Apply(MountEvent::kReaderFound);
}

void Mount::OpenFifoStream() {
  const Access access = mode_ == MountMode::kFifoToReader ? Access::kRead : Access::kWrite;
  // The gateway waits for a reader (or a free instance) as long as it allows, the flag's time
  // if given; a refusal after that is retried here with backoff.
  const uint32_t wait_ms = options_.wait_ms > 0 ? options_.wait_ms : kMountWaitMs;
  Result<uint32_t> id = host_->OpenStream(access, {}, wait_ms);
  if (!id) {  // Refused before it was sent (a limit, a departing gateway): as if by the gateway.
    last_end_ = id.error();
    if (RetryableRefusal(id.error().code())) NoteRefusal(id.error());
    Apply(MountEvent::kStreamEnded, id.error().code());
    return;
  }
  stream_id_ = *id;
}

void Mount::AttachLocal() {
  EndRefusals();
  attempts_ = 0;
  if (mode_ == MountMode::kFifoToReader) {
    host_->AttachPipes(stream_id_, {nullptr, std::move(held_)});
    return;
  }
  // Only now may local writers open the FIFO: the gateway holds a reader's FIFO for them.
  Result<int> fd = local_.Reopen(O_RDONLY | O_NONBLOCK);
  if (!fd) {
    host_->Finish(fd.error());  // Replaced or gone: stop rather than serve another file.
    return;
  }
  LocalPipePtr pipe = *LocalPipe::Open(loop_.native(), *fd, LocalPipe::kRead, true, nullptr);
  host_->AttachPipes(stream_id_, {std::move(pipe), nullptr});
}

void Mount::AcceptConnections() {
  for (int i = 0; i < kAcceptBatch && !stopped_; ++i) {
    int fd = ::accept4(listener_->fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    LocalPipePtr pipe = *LocalPipe::Open(
        loop_.native(), fd, LocalPipe::kRead | LocalPipe::kWrite | LocalPipe::kNonBlockingSocket,
        true, nullptr);
    // As a connect() to a local socket whose backlog is full waits, a connection to a busy
    // export waits (up to kMountWaitMs); as one to a socket nobody listens on is refused, the
    // connection is closed at once when the service is not there. --wait asks to wait for both.
    const bool asked = options_.wait_ms > 0;
    Result<uint32_t> id =
        host_->OpenStream(Access::kDuplex, uvglue::StreamPipes::Duplex(std::move(pipe)),
                          asked ? options_.wait_ms : kMountWaitMs,
                          static_cast<uint8_t>((asked ? 0 : kOpenFlagWaitOnlyWhileBusy) |
                                               (early_data_ ? kOpenFlagEarlyData : 0)));
    if (!id) PG_LOG(kWarn, "{}: {}", options_.address.ToString(), id.error().message());
  }
}

namespace {

// True for 10, 100, 1000...: the repeat counts that are reported as they happen.
bool IsMilestone(uint64_t n) {
  uint64_t milestone = 10;
  while (milestone < n) milestone *= 10;
  return milestone == n;
}

}  // namespace

void Mount::NoteRefusal(const Status& why) {
  if (why.message() == refusal_) {
    ++repeats_;
    if (IsMilestone(repeats_)) {
      Say(fmt::format("{} ({} more times; still retrying)", refusal_, repeats_));
    }
    return;
  }
  EndRefusals();
  refusal_ = why.message();
  Say(fmt::format("{} (retrying with backoff)", refusal_));
}

void Mount::EndRefusals() {
  if (repeats_ > 0 && !IsMilestone(repeats_)) {
    Say(fmt::format("{} ({} more times in all)", refusal_, repeats_));
  }
  refusal_.clear();
  repeats_ = 0;
}

void Mount::Say(const std::string& message) const {
  fprintf(stderr, "pipegate: %s: %s\n", options_.address.ToString().c_str(), message.c_str());
}

}  // namespace pipegate::bridge
