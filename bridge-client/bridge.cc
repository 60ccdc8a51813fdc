#include "bridge.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include <uv.h>

#include "pipegate/config.h"
#include "pipegate/frame.h"
#include "pipegate/local_path.h"
#include "pipegate/log.h"
#include "pipegate/resume.h"

#include "reconnect_policy.h"
#include "uv/connection.h"
#include "uv/local_pipe.h"
#include "uv/stream_link.h"

namespace pipegate::bridge {

using uvglue::Connection;
using uvglue::LocalPipe;
using uvglue::StreamLink;

namespace {

constexpr uint64_t kMountPollMs = 20;         // How often a FIFO mount looks for a local reader.
constexpr uint64_t kReaderGoneGraceMs = 100;  // After EOF, time for the old reader to leave.

// The longest reason from the gateway that is shown whole.
constexpr size_t kMaxReasonBytes = 512;

// A RESET or STOP reason comes from the gateway: escaped, as every peer-supplied string that
// reaches a log line or the terminal.
Status Message(Code code, ErrorCode error, std::string_view reason) {
  return Status(code, reason.empty() ? std::string(ErrorCodeName(error))
                                     : SanitizeControlBytes(reason, kMaxReasonBytes));
}

}  // namespace

class Client;

/// @brief A bridge stream: a StreamLink plus the first error that ended it.
class BridgeStream final : public StreamLink {
 public:
  BridgeStream(Client* client, uint32_t id, const std::string& name);
  Status result;  ///< First error seen; OK if the stream ended cleanly.
  bool accepted = false;
};

/// @brief Forwards readability of a waiting pipe (a mount's FIFO or listening socket).
class Waiter final : public uvglue::LocalPipeEvents {
 public:
  explicit Waiter(Client* client) : client_(client) {}
  void OnLocalReadable() override;
  void OnLocalWritten(size_t) override {}
  void OnLocalWriteError(const Status&) override {}

 private:
  Client* client_;
};

/// @brief One bridge process: one connection to the gateway and the command's streams.
///
/// Ownership: lives on RunBridge's stack; every handle it or its connection owns is closed
/// before RunBridge returns. Thread: the one loop.
class Client final : public uvglue::ConnectionHandler, public uvglue::StreamLinkOwner {
 public:
  Client(uv_loop_t* loop, const BridgeOptions& options)
      : loop_(loop), options_(options), waiter_(this) {
    NewMux();
    uv_timer_init(loop_, &timer_);
    uv_timer_init(loop_, &reconnect_timer_);
    timer_.data = reconnect_timer_.data = this;
    uv_signal_init(loop_, &sigint_);
    uv_signal_init(loop_, &sigterm_);
    sigint_.data = sigterm_.data = this;
  }

  Status Run();

  // StreamLinkOwner.
  Mux* stream_mux() override { return finished_ ? nullptr : mux_.get(); }
  void FlushSoon() override {
    if (conn_ != nullptr) conn_->Flush();
  }
  bool Backlogged() override { return conn_ == nullptr || conn_->backlogged(); }
  void PauseForBackpressure(StreamLink* link) override { paused_.push_back(link->id()); }

  // ConnectionHandler.
  void OnConnectionWritable() override {
    std::vector<uint32_t> ids;
    ids.swap(paused_);
    for (uint32_t id : ids) {
      if (BridgeStream* s = Find(id)) s->Resume();
    }
  }
  void OnConnectionClosed(const Status& why) override;
  void OnConnectionFreed() override {}

  // MuxCallbacks.
  void OnMuxReady() override;
  void OnOpenRequest(uint32_t, const OpenPayload&) override {}
  void OnOpenAccepted(uint32_t id, const OpenOkPayload& ok) override;
  void OnStreamData(uint32_t id, const uint8_t* data, size_t len) override {
    if (BridgeStream* s = Find(id)) s->OnData(data, len);
  }
  void OnStreamFin(uint32_t id) override {
    if (BridgeStream* s = Find(id)) s->OnFin();
  }
  void OnStreamReset(uint32_t id, ErrorCode error, std::string_view reason) override {
    BridgeStream* s = Find(id);
    if (s == nullptr || error == ErrorCode::kNoError) return;
    if (s->result.ok()) s->result = Message(CodeForError(error), error, reason);
  }
  void OnStreamStopped(uint32_t id, ErrorCode error, std::string_view reason) override {
    BridgeStream* s = Find(id);
    if (s == nullptr) return;
    s->StopLocalReading();
    if (s->result.ok() && error != ErrorCode::kNoError) {
      s->result = Message(CodeForError(error), error, reason);
    }
  }
  void OnStreamWritable(uint32_t id) override {
    if (BridgeStream* s = Find(id)) s->Resume();
  }
  void OnStreamDelivered(uint32_t) override {}
  void OnStreamClosed(uint32_t id) override;
  void OnListRequest() override {}
  void OnListReply(const std::vector<ListEntry>& entries, bool more) override;
  void OnGoaway(const GoawayPayload& g) override;
  void OnSession(const SessionPayload& session) override;
  void OnResumeOk(const ResumeOkPayload& ok) override;

  void OnWaiterReadable();

 private:
  BridgeStream* Find(uint32_t id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
  }
  Result<BridgeStream*> OpenStream(Access access, LocalPipe* in, LocalPipe* out);
  void Finish(const Status& status);
  void StartSingle();
  void StartMount(const ListEntry& entry);
  AdoptRule MountRule() const;
  Status PrepareFifoPath();
  Status PrepareSocketPath();
  void RemoveLocalPath();
  void MountFifoWriteArm();
  void MountTick();
  void MountStreamEnded(const Status& result);
  static void OnTimer(uv_timer_t* handle) noexcept;
  static void OnSignal(uv_signal_t* handle, int signum) noexcept;
  static void OnReconnectTimer(uv_timer_t* handle) noexcept;
  void NewMux();
  void Dial();
  /// @return Whether a stream may be opened now: on a ready connection, or queued on a detached
  /// mux that will send its OPEN when it resumes.
  bool CanOpen() const { return !finished_ && (mux_->detached() || (conn_ != nullptr && ready_)); }
  /// @brief Watches a mount's waiting pipe only while a stream can be opened for it (the pipe
  /// is level-triggered: left watched, it would spin the loop).
  void ArmWaiter() {
    if (wait_pipe_ != nullptr) wait_pipe_->WantRead(CanOpen());
  }
  void ScheduleReconnect(const Status& why);
  void LostForGood(const std::string& why);
  uvglue::ConnectionOptions ConnOptions() const;

  uv_loop_t* loop_;
  BridgeOptions options_;
  std::unique_ptr<Mux> mux_;  // Outlives connections: streams resume across them.
  /// The mux a mount gave up on; it may still be inside its Feed() (the GOAWAY that refused
  /// the resume), so it is freed at the next NewMux() or with the client.
  std::unique_ptr<Mux> retired_mux_;
  bool ignore_close_ = false;  ///< Closing a connection we already gave up on.
  std::shared_ptr<const TlsContext> tls_;
  Connection* conn_ = nullptr;
  bool ready_ = false;
  // Resumption state.
  bool has_session_ = false;
  bool resuming_ = false;
  uint8_t session_id_[kSessionIdSize] = {};
  std::string resume_key_;
  uint64_t resume_deadline_ms_ = 0;
  ReconnectPolicy reconnect_;
  uint32_t resumes_ = 0;
  uv_timer_t reconnect_timer_{};
  bool finished_ = false;
  Status result_;
  uv_timer_t timer_{};
  uv_signal_t sigint_{};
  uv_signal_t sigterm_{};
  std::unordered_map<uint32_t, std::unique_ptr<BridgeStream>> streams_;
  std::vector<uint32_t> paused_;
  std::vector<ListEntry> listing_;

  // Mount state.
  enum class MountState { kNone, kWaitReader, kStreaming, kWaitGone, kWaitWriter, kListening };
  MountState mount_ = MountState::kNone;
  ListEntry export_;
  bool present_unix_ = false;
  /// The mounted path, made (or adopted) by Prepare*Path; every later open goes through it.
  LocalPath local_;
  Waiter waiter_;
  LocalPipe* wait_pipe_ = nullptr;  ///< FIFO read end or listening socket, while waiting.
  uint64_t stream_ended_ms_ = 0;
};

BridgeStream::BridgeStream(Client* client, uint32_t id, const std::string& name)
    : StreamLink(client, id, name) {}

void Waiter::OnLocalReadable() { client_->OnWaiterReadable(); }

Status Client::Run() {
  Result<std::shared_ptr<const TlsContext>> tls = TlsContext::NewClient(options_.tls);
  if (!tls) {
    Finish(tls.error());
  } else {
    tls_ = *tls;
    uv_signal_start(&sigint_, &Client::OnSignal, SIGINT);
    uv_signal_start(&sigterm_, &Client::OnSignal, SIGTERM);
    Dial();
  }
  uv_run(loop_, UV_RUN_DEFAULT);
  return result_;
}

void Client::Finish(const Status& status) {
  if (finished_) return;
  finished_ = true;
  result_ = status;
  streams_.clear();  // Closes every local pipe.
  if (wait_pipe_ != nullptr) {
    wait_pipe_->Close();
    wait_pipe_ = nullptr;
  }
  RemoveLocalPath();
  if (conn_ != nullptr) {
    Connection* c = conn_;
    conn_ = nullptr;
    c->Close(status.ok() ? Status(Code::kOk, "done") : status);
  }
  for (uv_handle_t* h :
       {reinterpret_cast<uv_handle_t*>(&timer_), reinterpret_cast<uv_handle_t*>(&reconnect_timer_),
        reinterpret_cast<uv_handle_t*>(&sigint_), reinterpret_cast<uv_handle_t*>(&sigterm_)}) {
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  }
}

void Client::OnSignal(uv_signal_t* handle, int /*signum*/) noexcept {
  auto* self = static_cast<Client*>(handle->data);
  if (self->options_.command == Command::kMount) {
    self->Finish(Status::Ok());  // Stopping is how a mount ends.
  } else {
    self->Finish(Status(Code::kStreamLost, "interrupted"));
  }
}

void Client::OnMuxReady() {
  if (resuming_) {
    // Prove we hold the session's key, bound to this new connection, and say what we have.
    ResumePayload r;
    std::memcpy(r.session_id, session_id_, kSessionIdSize);
    if (!ComputeResumeProof(resume_key_, conn_->tls(), r.proof)) {
      LostForGood("cannot derive the resume proof");
      return;
    }
    r.last_id = mux_->last_stream_id();
    r.streams = mux_->ResumeState();
    PG_DEBUG(kMux, "sending RESUME with {} stream(s)", r.streams.size());
    mux_->SendResume(r);
    conn_->Flush();
    return;
  }
  ready_ = true;
  if (mount_ != MountState::kNone) {
    ArmWaiter();  // A mount on a fresh session after a refused resume: serve openers again.
    return;
  }
  if (options_.command == Command::kLs || options_.command == Command::kMount) {
    mux_->RequestList();
    conn_->Flush();
    return;
  }
  StartSingle();
}

Result<BridgeStream*> Client::OpenStream(Access access, LocalPipe* in, LocalPipe* out) {
  OpenPayload open;
  open.access = static_cast<uint8_t>(access);
  open.flags = options_.lines ? kOpenFlagLines : 0;
  open.wait_ms = options_.wait_ms;
  open.name = options_.address.name;
  Result<uint32_t> id = mux_->Open(open);
  if (!id) return id.error();
  auto stream = std::make_unique<BridgeStream>(this, *id, options_.address.name);
  stream->Attach(in, out);
  if (in != nullptr) in->set_events(stream.get());
  if (out != nullptr) out->set_events(stream.get());
  BridgeStream* raw = stream.get();
  streams_[*id] = std::move(stream);
  if (conn_ != nullptr) conn_->Flush();
  return raw;
}

void Client::StartSingle() {
  LocalPipe* in = nullptr;
  LocalPipe* out = nullptr;
  Access access = Access::kRead;
  Command cmd = options_.command;
  if (cmd == Command::kWrite || cmd == Command::kConnect) {
    in = *LocalPipe::Open(loop_, STDIN_FILENO, LocalPipe::kRead, false, nullptr);
  }
  if (cmd == Command::kCat || cmd == Command::kConnect) {
    out = *LocalPipe::Open(loop_, STDOUT_FILENO, LocalPipe::kWrite, false, nullptr);
  }
  if (cmd == Command::kWrite) access = Access::kWrite;
  if (cmd == Command::kConnect) access = Access::kDuplex;
  Result<BridgeStream*> s = OpenStream(access, in, out);
  if (!s) {
    if (in != nullptr) in->Close();
    if (out != nullptr) out->Close();
    Finish(s.error());
  }
}

void Client::OnOpenAccepted(uint32_t id, const OpenOkPayload& ok) {
  BridgeStream* s = Find(id);
  if (s == nullptr) return;
  s->accepted = true;
  // A fifo export serves one direction; a duplex request gets that one.
  if (ok.access == static_cast<uint8_t>(Access::kRead)) s->DropInput();
  if (ok.access == static_cast<uint8_t>(Access::kWrite)) s->DropOutput();
  s->StartReading();
}

void Client::OnStreamClosed(uint32_t id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  std::unique_ptr<BridgeStream> s = std::move(it->second);
  streams_.erase(it);
  std::erase(paused_, id);
  Status result = s->result;
  if (result.ok() && !s->local_error().ok()) result = s->local_error();
  s.reset();  // Closes the local pipes.
  if (options_.command == Command::kMount) {
    MountStreamEnded(result);
    return;
  }
  Finish(result);
}

void Client::OnListReply(const std::vector<ListEntry>& entries, bool more) {
  listing_.insert(listing_.end(), entries.begin(), entries.end());
  if (more) return;
  if (options_.command == Command::kLs) {
    std::string out;
    for (const ListEntry& e : listing_) {
      out += fmt::format("{}\t{}\t{}\n", SanitizeControlBytes(e.name, kMaxReasonBytes),
                         ExportKindName(static_cast<ExportKind>(e.kind)),
                         AccessName(static_cast<Access>(e.access)));
    }
    if (fwrite(out.data(), 1, out.size(), stdout) != out.size() || fflush(stdout) != 0) {
      Finish(Status(Code::kIo, "cannot write the listing to stdout"));
      return;
    }
    Finish(Status::Ok());
    return;
  }
  for (const ListEntry& e : listing_) {
    if (e.name == options_.address.name) {
      StartMount(e);
      return;
    }
  }
  // ls hides exports this identity may not use, so "no such pipe" covers both cases.
  Finish(Status(Code::kNotFound,
                fmt::format("no such pipe '{}' (or access denied)", options_.address.name)));
}

// ---- mount ----

AdoptRule Client::MountRule() const {
  // Only the invoking user's own file, no more open than the mount would make it.
  return AdoptRule{{::geteuid()}, static_cast<mode_t>(options_.mode)};
}

Status Client::PrepareFifoPath() {
  Result<PreparedFifo> fifo = CreateOrAdoptFifo(options_.local_path, MountRule());
  if (!fifo) return fifo.error();
  if (fifo->fd >= 0) ::close(fifo->fd);  // Each opener gets its own open through local_.
  local_ = fifo->path;
  return Status::Ok();
}

Status Client::PrepareSocketPath() {
  Result<ListeningSocket> sock = ListenUnixAt(options_.local_path, MountRule(), 128);
  if (!sock) return sock.error();
  local_ = sock->path;
  wait_pipe_ = *LocalPipe::Open(loop_, sock->fd, LocalPipe::kRead, true, &waiter_);
  wait_pipe_->WantRead(true);
  return Status::Ok();
}

void Client::RemoveLocalPath() { local_.RemoveIfOurs(); }

void Client::StartMount(const ListEntry& entry) {
  export_ = entry;
  auto kind = static_cast<ExportKind>(entry.kind);
  if (options_.present_as == "fifo" && kind == ExportKind::kUnix) {
    Finish(Status(Code::kUsage, "a unix export cannot be presented as a FIFO (omit --as)"));
    return;
  }
  present_unix_ = kind == ExportKind::kUnix || options_.present_as == "unix";
  Status st = present_unix_ ? PrepareSocketPath() : PrepareFifoPath();
  if (!st.ok()) {
    Finish(st);
    return;
  }
  if (present_unix_) {
    mount_ = MountState::kListening;
  } else if (static_cast<Access>(entry.access) == Access::kRead) {
    mount_ = MountState::kWaitReader;
    uv_timer_start(&timer_, &Client::OnTimer, 0, kMountPollMs);
  } else {
    MountFifoWriteArm();
  }
  PG_LOG(kInfo, "mounted {} at {}", options_.address.ToString(), options_.local_path);
}

void Client::MountFifoWriteArm() {
  // Hold the read end open so local writers never block in open(); the first byte a writer
  // puts in opens the remote stream.
  Result<int> fd = local_.Reopen(O_RDONLY | O_NONBLOCK);
  if (!fd) {
    Finish(fd.error());  // Replaced or gone: stop rather than serve another file.
    return;
  }
  mount_ = MountState::kWaitWriter;
  wait_pipe_ = *LocalPipe::Open(loop_, *fd, LocalPipe::kRead, true, &waiter_);
  wait_pipe_->WantRead(true);
}

void Client::OnWaiterReadable() {
  if (!CanOpen()) {
    ArmWaiter();  // Stops watching until a stream can be opened (nothing after Finish()).
    return;
  }
  if (mount_ == MountState::kWaitWriter) {
    LocalPipe* pipe = wait_pipe_;
    wait_pipe_ = nullptr;
    pipe->WantRead(false);
    mount_ = MountState::kStreaming;
    Result<BridgeStream*> s = OpenStream(Access::kWrite, pipe, nullptr);
    if (!s) {
      pipe->Close();
      Finish(s.error());
    }
    return;
  }
  if (mount_ == MountState::kListening) {
    for (int i = 0; i < 16; ++i) {
      int fd = ::accept4(wait_pipe_->fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      LocalPipe* pipe =
          *LocalPipe::Open(loop_, fd, LocalPipe::kRead | LocalPipe::kWrite, true, nullptr);
      Result<BridgeStream*> s = OpenStream(Access::kDuplex, pipe, pipe);
      if (!s) {
        pipe->Close();
        PG_LOG(kWarn, "{}: {}", options_.address.ToString(), s.error().message());
      }
    }
  }
}

void Client::OnTimer(uv_timer_t* handle) noexcept {
  static_cast<Client*>(handle->data)->MountTick();
}

void Client::MountTick() {
  if (!CanOpen()) return;
  if (mount_ == MountState::kWaitGone) {
    // A successful probe open would hand EOF to a reader blocked in open() if we closed it
    // again, so after EOF we do not probe at all until the old reader has had time to go.
    if (uv_now(loop_) - stream_ended_ms_ < kReaderGoneGraceMs) return;
    mount_ = MountState::kWaitReader;
  }
  if (mount_ != MountState::kWaitReader) return;
  Result<int> fd = local_.Reopen(O_WRONLY | O_NONBLOCK);
  if (!fd) {
    if (fd.error().code() == Code::kNoReader) return;  // Nobody reads yet.
    Finish(fd.error());  // Replaced or gone: remote data must not go anywhere else.
    return;
  }
  mount_ = MountState::kStreaming;
  LocalPipe* pipe = *LocalPipe::Open(loop_, *fd, LocalPipe::kWrite, true, nullptr);
  pipe->WatchHangup(true);
  Result<BridgeStream*> s = OpenStream(Access::kRead, nullptr, pipe);
  if (!s) {
    pipe->Close();
    Finish(s.error());
  }
}

void Client::MountStreamEnded(const Status& result) {
  if (finished_) return;
  if (!result.ok()) {
    fprintf(stderr, "pipegate: %s: %s\n", options_.address.ToString().c_str(),
            result.message().c_str());
  }
  if (present_unix_) return;  // Each connection was its own stream; keep listening.
  if (static_cast<Access>(export_.access) == Access::kRead) {
    mount_ = MountState::kWaitGone;
    stream_ended_ms_ = uv_now(loop_);
    return;
  }
  MountFifoWriteArm();  // The stream's pipe is closed; serve the next writer.
}

// ---- connection and resumption ----

void Client::NewMux() {
  MuxOptions mo;
  mo.is_client = true;
  mo.resumable = options_.command != Command::kLs;
  retired_mux_ = std::move(mux_);
  mux_ = std::make_unique<Mux>(mo, this);
  ready_ = false;
}

uvglue::ConnectionOptions Client::ConnOptions() const {
  uvglue::ConnectionOptions copt;
  copt.mux.is_client = true;
  if (options_.keepalive_ms > 0) {
    copt.keepalive_interval_ms = options_.keepalive_ms;
    copt.keepalive_timeout_ms = options_.keepalive_ms * 3;
  }
  return copt;
}

void Client::Dial() {
  conn_ = Connection::Connect(loop_, options_.address.host, options_.address.port, tls_,
                              ConnOptions(), this, mux_.get());
}

void Client::OnSession(const SessionPayload& session) {
  if (resuming_ || conn_ == nullptr) return;  // A fresh session offered while we resume.
  std::memcpy(session_id_, session.session_id, kSessionIdSize);
  resume_key_ = DeriveResumeKey(conn_->tls(), session_id_);
  // Give up a little after the gateway would have dropped the session anyway.
  resume_deadline_ms_ = session.ttl_ms;
  has_session_ = !resume_key_.empty();
}

void Client::OnConnectionClosed(const Status& why) {
  if (ignore_close_) return;
  conn_ = nullptr;
  if (finished_) return;
  bool have_streams = !streams_.empty() || options_.command == Command::kMount;
  bool transient =
      why.code() == Code::kStreamLost || why.code() == Code::kConnect || why.code() == Code::kTls;
  if (resuming_ && transient) {
    PG_LOG(kInfo, "{}: reconnect attempt failed: {}", options_.address.ToString(), why.message());
    mux_->Detach();  // Whatever this attempt received (SETTINGS, say) is void.
    ArmWaiter();
    ScheduleReconnect(why);  // Still trying to get back.
    return;
  }
  if (ready_ && has_session_ && have_streams && why.code() == Code::kStreamLost) {
    // Keep every stream; local ends just see back-pressure while we reconnect and resume.
    resuming_ = true;
    reconnect_.Lost(uv_now(loop_));
    mux_->Detach();
    ArmWaiter();  // New local openers are queued on the detached mux.
    PG_LOG(kInfo, "{}: connection lost ({}); resuming", options_.address.ToString(), why.message());
    ScheduleReconnect(why);
    return;
  }
  if (why.code() == Code::kStreamLost && !ready_) {
    Finish(Status(Code::kConnect, why.message()));
  } else if (why.code() == Code::kStreamLost || (why.code() == Code::kOk && have_streams)) {
    Finish(Status(Code::kStreamLost, fmt::format("stream broke: {}", why.message())));
  } else {
    Finish(why);
  }
}

void Client::ScheduleReconnect(const Status& why) {
  uint64_t limit = resume_deadline_ms_ > 0 ? resume_deadline_ms_ : 300000;
  if (options_.resume_timeout_ms > 0) limit = std::min(limit, options_.resume_timeout_ms);
  std::optional<uint64_t> delay = reconnect_.NextDelay(uv_now(loop_), limit);
  if (!delay) {
    LostForGood(fmt::format("could not reconnect within {} s ({})", limit / 1000, why.message()));
    return;
  }
  uv_timer_start(&reconnect_timer_, &Client::OnReconnectTimer, *delay, 0);
}

void Client::OnReconnectTimer(uv_timer_t* handle) noexcept {
  auto* self = static_cast<Client*>(handle->data);
  if (self->finished_ || self->conn_ != nullptr) return;
  self->Dial();
}

void Client::OnResumeOk(const ResumeOkPayload& ok) {
  if (!resuming_ || conn_ == nullptr) return;
  Status st = mux_->ResumeWith(ok.streams, ok.last_id);
  if (!st.ok()) {
    LostForGood(st.message());
    return;
  }
  resuming_ = false;
  // The replay may have finished every stream, and with them the command.
  if (finished_ || conn_ == nullptr) return;
  ++resumes_;
  resume_key_ = DeriveResumeKey(conn_->tls(), session_id_);  // Ratchet.
  PG_LOG(kInfo, "{}: resumed after {} ms", options_.address.ToString(),
         uv_now(loop_) - reconnect_.lost_at_ms());
  OnConnectionWritable();
  conn_->Flush();
}

void Client::OnGoaway(const GoawayPayload& g) {
  if (g.error == ErrorCode::kResumeRejected) {
    LostForGood(fmt::format("the gateway no longer has the session ({})",
                            SanitizeControlBytes(g.reason, kMaxReasonBytes)));
    return;
  }
  PG_LOG(kInfo, "gateway is going away: {}", SanitizeControlBytes(g.reason, kMaxReasonBytes));
}

void Client::LostForGood(const std::string& why) {
  if (finished_) return;
  // Say how far each stream got, so nobody mistakes a cut for a whole transfer.
  uint64_t confirmed = 0;
  uint64_t received = 0;
  for (auto& [id, s] : streams_) {
    auto [acked, delivered] = mux_->Progress(id);
    confirmed += acked;
    received += delivered;
  }
  if (options_.command == Command::kMount) {
    // A mount carries on with fresh streams for new openers.
    fprintf(stderr, "pipegate: %s: connection lost and not resumed: %s\n",
            options_.address.ToString().c_str(), why.c_str());
    streams_.clear();
    paused_.clear();
    resuming_ = false;
    has_session_ = false;
    if (conn_ != nullptr) {
      Connection* c = conn_;
      conn_ = nullptr;
      ignore_close_ = true;
      c->Close(Status(Code::kOk, "resume refused"));
      ignore_close_ = false;
    }
    NewMux();  // Not ready until the new connection's SETTINGS: openers wait (ArmWaiter).
    if (mount_ == MountState::kStreaming || mount_ == MountState::kWaitGone) {
      MountStreamEnded(Status::Ok());
    }
    ArmWaiter();
    // Dial from the loop, not from inside the old connection's callbacks.
    reconnect_.Restart();
    uv_timer_start(&reconnect_timer_, &Client::OnReconnectTimer, 0, 0);
    return;
  }
  Finish(Status(Code::kStreamLost,
                fmt::format("connection lost and could not be resumed: {}; {} byte(s) sent were "
                            "confirmed delivered, {} byte(s) received were written out",
                            why, confirmed, received)));
}

Status RunBridge(const BridgeOptions& options) {
  // libuv makes stdin/stdout non-blocking, which changes the shared file descriptions (a
  // terminal, say): restore them on the way out.
  int in_flags = fcntl(STDIN_FILENO, F_GETFL);
  int out_flags = fcntl(STDOUT_FILENO, F_GETFL);
  uv_loop_t loop;
  PG_CHECK(uv_loop_init(&loop) == 0);
  Status result;
  {
    Client client(&loop, options);
    result = client.Run();
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) {
    PG_LOG(kError, "handles left open at exit");
    uv_print_all_handles(&loop, stderr);
  }
  if (in_flags >= 0) fcntl(STDIN_FILENO, F_SETFL, in_flags);
  if (out_flags >= 0) fcntl(STDOUT_FILENO, F_SETFL, out_flags);
  return result;
}

}  // namespace pipegate::bridge
