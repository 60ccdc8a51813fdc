#include "client.h"

#include <fmt/format.h>
#include <signal.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <utility>

#include "pipegate/log.h"

namespace pipegate::bridge {

using uvglue::Connection;
using uvglue::LocalPipe;

Status Message(Code code, ErrorCode error, std::string_view reason) {
  return Status(code, reason.empty() ? std::string(ErrorCodeName(error))
                                     : SanitizeControlBytes(reason, kMaxReasonBytes));
}

namespace {

// How long a lost session is chased when the gateway did not say how long it keeps it.
constexpr uint64_t kDefaultResumeLimitMs = 300000;

// The command's status when its connection closed and no resume is attempted.
Status ClosedStatus(const Status& why, bool ready, bool have_streams) {
  if (why.code() == Code::kStreamLost && !ready) return Status(Code::kConnect, why.message());
  if (why.code() == Code::kStreamLost || (why.code() == Code::kOk && have_streams)) {
    return Status(Code::kStreamLost, fmt::format("stream broke: {}", why.message()));
  }
  return why;
}

}  // namespace

Client::Client(uvglue::Loop& loop, const BridgeOptions& options)
    : loop_(loop),
      options_(options),
      reconnect_timer_(loop, [this] { OnReconnectTimer(); }),
      linger_timer_(loop, [this] { OnLingerTimer(); }) {}

Client::~Client() = default;

Status Client::Run() {
  tls_fingerprint_ = TlsFilesFingerprint({options_.tls.cert, options_.tls.key, options_.tls.ca});
  Result<std::shared_ptr<const TlsContext>> tls = TlsContext::NewClient(options_.tls);
  if (!tls) {
    Finish(tls.error());
  } else {
    tls_ = *tls;
    if (options_.progress) StartProgress();
    sigint_.emplace(loop_, SIGINT, [this] { OnSignal(SIGINT); });
    sigterm_.emplace(loop_, SIGTERM, [this] { OnSignal(SIGTERM); });
    Dial();
  }
  loop_.Run();
  return result_;
}

void Client::Finish(const Status& status) {
  if (finished_) return;
  finished_ = true;
  result_ = status;
  if (progress_timer_) {
    DrawProgress(/*last=*/true);
    progress_timer_.reset();
  }
  streams_.clear();  // Closes every local pipe.
  if (mount_ != nullptr) mount_->Stop();
  DropConnection(status.ok() ? Status(Code::kOk, "done") : status);
  reconnect_timer_.Close();
  linger_timer_.Close();
  sigint_.reset();  // Safe from the signal's own callback (uvglue::HandleBase).
  sigterm_.reset();
}

void Client::OnSignal(int signum) {
  // Every command, a mount included, stops in order (streams closed, the connection closed
  // with close_notify, the mount's path removed) and exits 128+N, as a shell reports a process
  // that signal N ended. Bytes the gateway already wrote into the local pipe stay delivered;
  // anything still on the way is dropped (docs/decisions.md), so the message says how far the
  // streams got.
  std::string what = signum == SIGINT ? "interrupted by SIGINT" : "terminated by SIGTERM";
  if (options_.command != Command::kMount && !streams_.empty()) {
    auto [confirmed, received] = TotalProgress();
    if (options_.command != Command::kCat) {
      what += fmt::format("; {} byte(s) sent were confirmed delivered", confirmed);
    }
    if (options_.command != Command::kWrite) {
      what += fmt::format("; {} byte(s) received were written out", received);
    }
  }
  Finish(Status(signum == SIGINT ? Code::kInterrupted : Code::kTerminated, what));
}

// ---- streams ----

std::pair<uint64_t, uint64_t> Client::TotalProgress() const {
  std::pair<uint64_t, uint64_t> total{0, 0};
  for (const auto& [id, s] : streams_) {
    auto [acked, delivered] = mux_->Progress(id);
    total.first += acked;
    total.second += delivered;
  }
  return total;
}

BridgeStream* Client::Find(uint32_t id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second.get();
}

void Client::FlushSoon() {
  if (conn_ != nullptr) conn_->Flush();
}

Result<uint32_t> Client::OpenStream(Access access, uvglue::StreamPipes pipes, uint32_t wait_ms,
                                    uint8_t flags) {
  OpenPayload open;
  open.access = static_cast<uint8_t>(access);
  open.flags = static_cast<uint8_t>(flags | (options_.lines ? kOpenFlagLines : 0) |
                                    (options_.follow ? kOpenFlagFollow : 0));
  open.wait_ms = wait_ms;
  open.name = options_.address.name;
  Result<uint32_t> id = mux_->Open(open);
  if (!id) return id.error();
  auto stream = std::make_unique<BridgeStream>(this, *id, options_.address.name);
  stream->Attach(std::move(pipes));
  BridgeStream* s = stream.get();
  streams_[*id] = std::move(stream);
  // The Mux grants the early window only once the gateway's SETTINGS offered one. A local
  // client usually writes right after its connect(): reading now lets those bytes leave with
  // the OPEN, in one record and one write, rather than a loop turn later (at the cost of one
  // read that finds nothing, for a protocol where the server speaks first). The read may end
  // the stream: nothing of it is used after.
  if ((flags & kOpenFlagEarlyData) != 0 && mux_->SendWindow(*id) > 0) {
    s->early = true;
    s->StartReading();
    s->OnLocalReadable();
  }
  if (conn_ != nullptr) conn_->Flush();
  return *id;
}

void Client::AttachPipes(uint32_t id, uvglue::StreamPipes pipes) {
  if (BridgeStream* s = Find(id)) s->Attach(std::move(pipes));
}

void Client::AbortStream(uint32_t id) {
  if (Find(id) == nullptr) return;
  mux_->Abort(id, ErrorCode::kCancel, "the local reader went away before the stream opened");
  FlushSoon();
}

uint64_t BridgeStream::UnreadInput() const {
  int n = 0;
  if (in_ == nullptr || ::ioctl(in_->fd(), FIONREAD, &n) != 0 || n < 0) return 0;
  return static_cast<uint64_t>(n);
}

void Client::OnConnectionWritable() {
  std::vector<uint32_t> ids;
  ids.swap(paused_);
  for (uint32_t id : ids) {
    if (BridgeStream* s = Find(id)) s->Resume();
  }
}

void Client::OnOpenAccepted(uint32_t id, const OpenOkPayload& ok) {
  if (id == probe_id_ && probe_id_ != 0) {
    OnProbeAnswered(id, std::nullopt, "");
    return;
  }
  BridgeStream* s = Find(id);
  if (s == nullptr) return;
  s->accepted = true;
  if (mount_ != nullptr) {
    mount_->OnStreamAccepted(id);  // A FIFO's local end is attached now.
    s = Find(id);
    if (s == nullptr) return;
  }
  // A fifo export serves one direction; a duplex request gets that one.
  if (ok.access == static_cast<uint8_t>(Access::kRead)) s->DropInput();
  if (ok.access == static_cast<uint8_t>(Access::kWrite)) s->DropOutput();
  const bool messages = (ok.flags & kExportMessages) != 0 && ok.max_message > 0;
  if (!options_.messages.empty() && !messages) {
    Finish(Status(Code::kUsage, fmt::format("--messages needs a message-mode export; '{}' is a "
                                            "byte stream",
                                            options_.address.name)));
    return;
  }
  if (messages) {
    // A mounted socket is a seqpacket socket (Mount::Start); stdio is framed as asked, or
    // without --messages each read is a message and messages are written back to back.
    using uvglue::MessageFraming;
    MessageFraming framing = mount_ != nullptr               ? MessageFraming::kSocket
                             : options_.messages == "length" ? MessageFraming::kLength
                             : options_.messages == "lines"  ? MessageFraming::kLines
                                                             : MessageFraming::kRaw;
    s->SetMessageMode(framing, framing, ok.max_message);
  }
  if (s->early) {
    s->Resume();  // Reading since the OPEN; the stream's full window is open now.
  } else {
    s->StartReading();
  }
}

void Client::OnStreamMessageEnd(uint32_t id) {
  if (BridgeStream* s = Find(id)) s->OnMessageEnd();
}

void Client::OnStreamData(uint32_t id, const uint8_t* data, size_t len) {
  BridgeStream* s = Find(id);
  if (s == nullptr) return;
  if (options_.count == 0 || options_.command != Command::kCat) {
    s->OnData(data, len);
    return;
  }
  // cat --count: pass bytes up to the count (or to the end of the Nth line), drop the rest.
  size_t take = 0;
  if (!s->count_reached) {
    if (options_.count_lines) {
      while (take < len && counted_ < options_.count) {
        const void* nl = std::memchr(data + take, '\n', len - take);
        if (nl == nullptr) {
          take = len;
          break;
        }
        take = static_cast<size_t>(static_cast<const uint8_t*>(nl) - data) + 1;
        ++counted_;
      }
    } else {
      take = static_cast<size_t>(std::min<uint64_t>(len, options_.count - counted_));
      counted_ += take;
    }
  }
  if (take > 0) {
    s->OnData(data, take);
    s = Find(id);
    if (s == nullptr) return;
  }
  if (take < len) {
    mux_->Consumed(id, len - take);  // Past the count: dropped.
    FlushSoon();
  }
  if (!s->count_reached && counted_ >= options_.count) {
    s->count_reached = true;
    s->OnFin();  // The output ends once it has written what it holds (OnLocalWriteDone).
  }
}

void BridgeStream::OnLocalWriteDone() {
  StreamLink::OnLocalWriteDone();
  if (count_reached) static_cast<Client*>(owner_)->OnCountWritten(id_);
}

void Client::OnCountWritten(uint32_t id) {
  // STOP without an error: the gateway lets the export go and the stream ends cleanly.
  mux_->StopReading(id, ErrorCode::kNoError, "cat --count: done");
  FlushSoon();
}

void Client::OnStreamFin(uint32_t id) {
  BridgeStream* s = Find(id);
  if (s == nullptr) return;
  s->OnFin();
  if (options_.command == Command::kConnect && !linger_timer_.active()) {
    linger_stream_ = id;
    linger_timer_.Start(kConnectLingerMs);
  }
}

void Client::OnLingerTimer() {
  if (BridgeStream* s = Find(linger_stream_)) s->EndInput();
}

void Client::OnStreamReset(uint32_t id, ErrorCode error, std::string_view reason) {
  if (id == probe_id_ && probe_id_ != 0) {
    OnProbeAnswered(id, error, reason);
    return;
  }
  BridgeStream* s = Find(id);
  if (s == nullptr || error == ErrorCode::kNoError) return;
  s->confirmed = std::max(s->confirmed, mux_->Progress(id).first);
  if (s->result.ok()) s->result = Message(CodeForError(error), error, reason);
}

void Client::OnStreamStopped(uint32_t id, ErrorCode error, std::string_view reason) {
  BridgeStream* s = Find(id);
  if (s == nullptr) return;
  s->confirmed = std::max(s->confirmed, mux_->Progress(id).first);
  s->StopLocalReading();
  if (s->result.ok() && error != ErrorCode::kNoError) {
    s->result = Message(CodeForError(error), error, reason);
  }
}

void Client::OnStreamExit(uint32_t id, const ExitPayload& exit) {
  if (BridgeStream* s = Find(id)) s->exit = exit;
}

void Client::OnStreamWritable(uint32_t id) {
  if (BridgeStream* s = Find(id)) s->Resume();
}

void Client::OnStreamClosed(uint32_t id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  std::unique_ptr<BridgeStream> s = std::move(it->second);
  streams_.erase(it);
  std::erase(paused_, id);
  Status result = s->result;
  if (result.ok() && !s->local_error().ok()) result = s->local_error();
  // An exec export's process decides the exit status, unless this side failed locally (its
  // stdout went away, say): the gateway's stop of a direction the process no longer reads
  // is no failure of the command.
  if (s->exit && s->local_error().ok() && options_.command != Command::kMount) {
    ProcessOutcome outcome = OutcomeOfExit(*s->exit);
    process_exit_ = outcome.exit_status;
    result = std::move(outcome.status);
  }
  MountStreamEnd end{result, 0};
  if (!result.ok() && s->bytes_sent() > s->confirmed)
    end.undelivered = s->bytes_sent() - s->confirmed;
  if (!result.ok()) end.undelivered += s->UnreadInput();
  if (options_.command != Command::kMount) {
    // What the meter's last line reports: a stream that ended well had every byte confirmed.
    progress_last_ = {result.ok() ? s->bytes_sent() : s->confirmed, s->bytes_received()};
  }
  s.reset();  // Closes the local pipes.
  if (options_.command == Command::kMount) {
    if (mount_ != nullptr) mount_->OnStreamEnded(id, end);
    return;
  }
  Finish(result);
}

// ---- the connection and the session ----

void Client::NewMux() {
  MuxOptions mo;
  mo.is_client = true;
  mo.resumable = options_.command != Command::kLs && options_.command != Command::kStat;
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
  // A resume carries the detached session over; any other dial starts a fresh one. Dial()
  // runs from Run() or the reconnect timer, never inside a Mux callback, so the Mux replaced
  // here is not in use.
  RefreshTls();
  if (!resuming_) {
    session_tls_ = tls_;
    NewMux();
  } else if (tls_ != session_tls_) {
    // Renewed files: a certificate for the same key and names may resume the session; any
    // other may not (the gateway binds a session to both), so it waits for a fresh session.
    if (tls_->OwnResumeIdentity() == session_tls_->OwnResumeIdentity()) {
      session_tls_ = tls_;
      PG_LOG(kInfo, "resuming with the renewed client certificate (same key and names)");
    } else {
      PG_LOG(kInfo,
             "the renewed client certificate has a new key or names: the session resumes "
             "with the one it began with, and the next session uses the new one");
    }
  }
  conn_ = Connection::Connect(loop_.native(), options_.address.host, options_.address.port,
                              session_tls_, ConnOptions(), this, mux_.get());
}

void Client::RefreshTls() {
  std::string now = TlsFilesFingerprint({options_.tls.cert, options_.tls.key, options_.tls.ca});
  if (now == tls_fingerprint_) return;
  tls_fingerprint_ = std::move(now);  // Judged once per change, as the gateway does.
  Result<std::shared_ptr<const TlsContext>> fresh = TlsContext::NewClient(options_.tls);
  if (!fresh) {
    PG_LOG(kWarn,
           "the client certificate files changed but do not load; keeping the ones "
           "loaded before: {}",
           fresh.error().message());
    return;
  }
  tls_ = *fresh;
  PG_LOG(kInfo, "client certificate files changed: this connection uses them");
}

void Client::OnReconnectTimer() {
  if (finished_ || conn_ != nullptr) return;
  Dial();
}

void Client::DropConnection(const Status& why) {
  Connection* c = std::exchange(conn_, nullptr);
  if (c == nullptr) return;
  dropping_ = true;
  c->Close(why);
  dropping_ = false;
}

void Client::OnMuxReady() {
  if (resuming_) {
    SendResume();
    return;
  }
  ready_ = true;
  if (mount_ != nullptr) {
    NotifyOpenable();  // A mount on a fresh session after a refused resume: serve openers again.
    return;
  }
  StartCommand();
}

void Client::SendResume() {
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
  if (dropping_) return;
  conn_ = nullptr;
  if (finished_) return;
  const bool have_streams = !streams_.empty() || options_.command == Command::kMount;
  const bool transient =
      why.code() == Code::kStreamLost || why.code() == Code::kConnect || why.code() == Code::kTls;
  if (resuming_ && transient) {
    PG_LOG(kInfo, "{}: reconnect attempt failed: {}", options_.address.ToString(), why.message());
    mux_->Detach();  // Whatever this attempt received (SETTINGS, say) is void.
    NotifyOpenable();
    ScheduleReconnect(why);  // Still trying to get back.
    return;
  }
  if (ready_ && has_session_ && have_streams && why.code() == Code::kStreamLost) {
    StartResuming(why);
    return;
  }
  Finish(ClosedStatus(why, ready_, have_streams));
}

void Client::StartResuming(const Status& why) {
  // Keep every stream; local ends just see back-pressure while we reconnect and resume.
  resuming_ = true;
  reconnect_.Lost(loop_.Now());
  mux_->Detach();
  NotifyOpenable();  // New local openers are queued on the detached mux.
  PG_LOG(kInfo, "{}: connection lost ({}); resuming", options_.address.ToString(), why.message());
  ScheduleReconnect(why);
}

void Client::ScheduleReconnect(const Status& why) {
  uint64_t limit = resume_deadline_ms_ > 0 ? resume_deadline_ms_ : kDefaultResumeLimitMs;
  if (options_.resume_timeout_ms > 0) limit = std::min(limit, options_.resume_timeout_ms);
  std::optional<uint64_t> delay = reconnect_.NextDelay(loop_.Now(), limit);
  if (!delay) {
    LostForGood(fmt::format("could not reconnect within {} s ({})", limit / 1000, why.message()));
    return;
  }
  reconnect_timer_.Start(*delay);
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
  resume_key_ = DeriveResumeKey(conn_->tls(), session_id_);  // Ratchet.
  PG_LOG(kInfo, "{}: resumed after {} ms", options_.address.ToString(),
         loop_.Now() - reconnect_.lost_at_ms());
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
  if (options_.command == Command::kMount) {
    StartFreshSession(why);  // A mount carries on with fresh streams for new openers.
    return;
  }
  // Say how far the streams got, so nobody mistakes a cut for a whole transfer.
  auto [confirmed, received] = TotalProgress();
  Finish(Status(Code::kStreamLost,
                fmt::format("connection lost and could not be resumed: {}; {} byte(s) sent were "
                            "confirmed delivered, {} byte(s) received were written out",
                            why, confirmed, received)));
}

void Client::StartFreshSession(const std::string& why) {
  fprintf(stderr, "pipegate: %s: connection lost and not resumed: %s\n",
          options_.address.ToString().c_str(), why.c_str());
  streams_.clear();
  paused_.clear();
  probe_id_ = 0;
  resuming_ = false;
  has_session_ = false;
  ready_ = false;  // Openers wait for the fresh session's SETTINGS (NotifyOpenable below).
  DropConnection(Status(Code::kOk, "resume refused"));
  if (mount_ != nullptr) mount_->OnSessionReplaced();
  NotifyOpenable();
  // Dial from the loop, not from inside the old connection's callbacks: Dial() replaces mux_.
  reconnect_.Restart();
  reconnect_timer_.Start(0);
}

}  // namespace pipegate::bridge
