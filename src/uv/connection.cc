#include "uv/connection.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>

#include "pipegate/log.h"

namespace pipegate::uvglue {
namespace {

std::atomic<uint64_t> g_next_connection_id{1};

}  // namespace

Connection::Connection(uv_loop_t* loop, std::unique_ptr<TlsSession> tls, const std::string& host,
                       const ConnectionOptions& options, ConnectionHandler* handler, Mux* mux)
    : loop_(loop),
      id_(g_next_connection_id.fetch_add(1)),
      host_(host),
      options_(options),
      handler_(handler),
      tls_(std::move(tls)),
      mux_(mux) {
  uv_tcp_init(loop_, &tcp_);
  uv_check_init(loop_, &check_);
  uv_idle_init(loop_, &idle_);
  tcp_.data = check_.data = idle_.data = this;
  resolve_req_.data = connect_req_.data = write_req_.data = this;
  started_ms_ = last_recv_ms_ = uv_now(loop_);
  Ticker::Subscribe(loop_, this);
}

Connection::~Connection() = default;

Result<Connection*> Connection::Accept(uv_loop_t* loop, uv_stream_t* server,
                                       std::shared_ptr<const TlsContext> tls,
                                       const ConnectionOptions& options, ConnectionHandler* handler,
                                       Mux* mux) {
  auto* c = new Connection(loop, std::make_unique<TlsSession>(std::move(tls), ""), "", options,
                           handler, mux);
  int rc = uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp_));
  if (rc != 0) {
    c->state_ = State::kClosing;
    c->handler_told_closed_ = true;  // The caller learns from the error instead.
    c->CloseHandles();
    return Status(Code::kConnect, fmt::format("accept failed: {}", uv_strerror(rc)));
  }
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getpeername(&c->tcp_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    c->peer_address_ = FormatPeer(ss);
  }
  c->StartTls();
  return c;
}

void Connection::StartTls() {
  state_ = State::kHandshaking;
  uv_tcp_nodelay(&tcp_, 1);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), &Connection::OnAlloc, &Connection::OnRead);
  if (!tls_->established()) {
    Status st = tls_->Advance(plain_);  // A client writes its ClientHello here.
    (void)st;
  }
}

namespace {

// libuv calls the read callback right after the allocation, and OnBytes() copies what it keeps
// (into the TLS input), so every connection of a loop thread shares one read buffer and idle
// connections hold none. 256 KiB reads measured no faster than 64 KiB ones here (larger bursts
// overlap less with the local pipe on 2 cores).
constexpr size_t kReadBufferSize = 64 * 1024;
thread_local std::unique_ptr<uint8_t[]> t_read_buffer;

}  // namespace

void Connection::OnAlloc(uv_handle_t* /*handle*/, size_t /*suggested*/, uv_buf_t* buf) noexcept {
  if (!t_read_buffer) t_read_buffer.reset(new uint8_t[kReadBufferSize]);
  *buf = uv_buf_init(reinterpret_cast<char*>(t_read_buffer.get()), kReadBufferSize);
}

void Connection::OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept {
  auto* self = static_cast<Connection*>(stream->data);
  if (self->state_ == State::kClosing && self->write_side_shut_) {
    if (nread < 0) self->CloseHandles();  // The peer's FIN (or an error): nothing more to wait for.
    return;                               // Input after our close is discarded.
  }
  if (self->state_ >= State::kClosing) return;
  if (nread > 0) {
    self->last_recv_ms_ = uv_now(self->loop_);
    self->ping_outstanding_ = false;
    self->OnBytes(reinterpret_cast<const uint8_t*>(buf->base), static_cast<size_t>(nread));
    return;
  }
  if (nread == 0) return;
  Status why;
  if (self->state_ == State::kHandshaking) {
    why = Status(Code::kTls,
                 nread == UV_EOF
                     ? "TLS failed: the peer closed the connection during the handshake"
                     : fmt::format("TLS failed: {}", uv_strerror(static_cast<int>(nread))));
  } else if (nread == UV_EOF) {
    why = Status(Code::kStreamLost, "connection closed by peer");
  } else {
    why = Status(Code::kStreamLost,
                 fmt::format("connection lost: {}", uv_strerror(static_cast<int>(nread))));
  }
  self->Abort(why);
}

void Connection::OnBytes(const uint8_t* p, size_t n) {
  tls_->FeedCiphertext(p, n);
  ProcessInput();
}

void Connection::ProcessBuffered() {
  if (state_ != State::kOpen) return;
  ProcessInput();
}

void Connection::ProcessInput() {
  bool was_established = tls_->established();
  Status st = tls_->Advance(plain_);
  if (!st.ok()) {
    // Send the alert that explains the failure, then close.
    BeginClose(st, /*graceful=*/true);
    return;
  }
  if (!was_established && tls_->established()) {
    state_ = State::kOpen;
    mux_->Start();  // SETTINGS go first on every connection.
    handler_->OnTlsEstablished(tls_->peer_identity());
    if (state_ >= State::kClosing) return;
  }
  while (!plain_.empty()) {
    Mux* feeding = mux_;
    size_t used = 0;
    Status fed = feeding->Feed(plain_.data(), plain_.size(), &used);
    plain_.Consume(used);
    if (state_ >= State::kClosing) return;
    if (!fed.ok()) {
      PG_CONN_LOG(kWarn, id_, "protocol error from {}: {}", peer_address_, fed.message());
      mux_->Goaway(ErrorForCode(fed.code()), fed.message());
      BeginClose(fed, /*graceful=*/true);
      return;
    }
    if (mux_->ready()) ever_ready_ = true;
    if (!feeding->resume_requested()) break;
    // The Mux stopped after a RESUME: the handler moves this connection to the resumed
    // session (Rebind) or to another worker (Release, which takes the rest of plain_ along).
    // A Mux that was not replaced refuses the rest as a protocol error on the next pass.
    handler_->OnInputYielded();
    if (state_ >= State::kClosing) return;
  }
  if (state_ == State::kOpen) UpdateReading();
  if (tls_->peer_closed()) {
    // close_notify: an orderly end, not a loss to recover from.
    BeginClose(Status(Code::kOk, "connection closed by peer"), /*graceful=*/true);
    return;
  }
  Flush();
}

void Connection::Flush() {
  if (flush_scheduled_ || state_ == State::kClosed) return;
  flush_scheduled_ = true;
  // The check handle runs after this turn's I/O callbacks, so their frames coalesce; the idle
  // handle keeps the loop from blocking in poll when Flush() is called from a timer.
  uv_check_start(&check_, &Connection::OnCheck);
  uv_idle_start(&idle_, &Connection::OnIdle);
}

// The idle handle only keeps poll from blocking while a flush is pending; OnCheck stops it.
void Connection::OnIdle(uv_idle_t* /*handle*/) noexcept {}

void Connection::OnCheck(uv_check_t* handle) noexcept {
  auto* self = static_cast<Connection*>(handle->data);
  uv_check_stop(handle);
  uv_idle_stop(&self->idle_);
  self->flush_scheduled_ = false;
  if (self->state_ == State::kResolving && !self->resolving_) {
    self->DialDeferred();
    return;
  }
  self->DoFlush();
}

void Connection::DoFlush() {
  if (state_ == State::kClosed) return;
  if (mux_ != nullptr && !mux_->output().empty() && tls_->established()) {
    Buffer& out = mux_->output();
    Status st = tls_->WritePlaintext(out.data(), out.size());
    out.Clear();
    if (!st.ok()) {
      Abort(st);
      return;
    }
  }
  tls_->DrainCiphertext(pending_);
  StartWrite();
}

void Connection::StartWrite() {
  if (state_ == State::kClosed) return;
  if (!write_in_flight_ && !pending_.empty() && state_ >= State::kHandshaking) {
    uv_buf_t buf = uv_buf_init(reinterpret_cast<char*>(pending_.data()),
                               static_cast<unsigned>(pending_.size()));
    int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp_), &buf, 1);
    if (n > 0) pending_.Consume(static_cast<size_t>(n));
    if (n < 0 && n != UV_EAGAIN) {
      Abort(Status(Code::kStreamLost, fmt::format("connection lost: {}", uv_strerror(n))));
      return;
    }
    if (!pending_.empty()) {
      std::swap(pending_, inflight_);
      pending_.Clear();
      buf = uv_buf_init(reinterpret_cast<char*>(inflight_.data()),
                        static_cast<unsigned>(inflight_.size()));
      int rc = uv_write(&write_req_, reinterpret_cast<uv_stream_t*>(&tcp_), &buf, 1,
                        &Connection::OnWrite);
      if (rc != 0) {
        Abort(Status(Code::kStreamLost, fmt::format("connection lost: {}", uv_strerror(rc))));
        return;
      }
      write_in_flight_ = true;
    }
  }
  if (!write_in_flight_) {
    MaybeNotifyWritable();
    if (state_ == State::kClosed) return;
  }
  UpdateReading();
  if (state_ == State::kClosing && write_queued() == 0) Linger();
}

void Connection::MaybeNotifyWritable() {
  if (!was_backlogged_ || backlog() >= kLowMark) return;
  was_backlogged_ = false;
  if (state_ == State::kOpen) handler_->OnConnectionWritable();
}

void Connection::WantWritable() {
  was_backlogged_ = true;
  // With no write in flight, no write completion will come to say the backlog fell: the flush
  // (from the loop, not from inside the caller, which is pausing a stream right now) encrypts
  // and writes what waits, and says so if that brought it under the low mark.
  if (!write_in_flight_) Flush();
}

void Connection::UpdateReading() {
  if (options_.max_write_backlog == 0 || state_ != State::kOpen) return;
  // Frames the mux queued this turn are output too; they are encrypted at the next flush.
  const size_t backlog = this->backlog();
  if (!reading_paused_ && backlog > options_.max_write_backlog) {
    reading_paused_ = true;
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
    PG_DEBUG(kLoop, "[C{}] {} bytes wait for {}: not reading it until it reads", id_, backlog,
             peer_address_);
  } else if (reading_paused_ && backlog < kLowMark) {
    reading_paused_ = false;
    last_recv_ms_ = uv_now(loop_);  // The pause was ours; the peer was not silent.
    uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), &Connection::OnAlloc, &Connection::OnRead);
  }
}

void Connection::OnWrite(uv_write_t* req, int status) noexcept {
  auto* self = static_cast<Connection*>(req->data);
  self->write_in_flight_ = false;
  self->inflight_.Clear();
  if (self->state_ == State::kClosed) {
    self->CloseHandles();
    return;
  }
  if (status != 0) {
    self->Abort(Status(Code::kStreamLost, fmt::format("connection lost: {}", uv_strerror(status))));
    return;
  }
  self->StartWrite();
}

void Connection::OnTick(uint64_t now) {
  if (state_ == State::kClosing) {
    if (now >= close_deadline_ms_) CloseHandles();
    return;
  }
  if (state_ == State::kClosed) return;
  if (!ever_ready_ && !mux_->ready()) {
    CheckHandshakeDeadline(now);
    return;
  }
  // An established connection with no stream for idle_timeout_ms is closed.
  if (options_.idle_timeout_ms != 0 && mux_->stream_count() == 0) {
    if (idle_since_ms_ == 0) {
      idle_since_ms_ = now;
    } else if (now - idle_since_ms_ >= options_.idle_timeout_ms) {
      mux_->Goaway(ErrorCode::kNoError, "idle timeout");
      Close(Status(Code::kLimit,
                   fmt::format("idle: no stream for {} s", options_.idle_timeout_ms / 1000)));
      return;
    }
  } else {
    idle_since_ms_ = 0;
  }
  mux_->ReleaseIdleMemory();
  tls_->ReleaseIdleBuffers();
  handler_->OnHousekeeping(now);
  uint64_t silent = now - last_recv_ms_;
  if (silent >= options_.keepalive_timeout_ms) {
    // While reads are paused for the write backlog, the silence is the peer not reading.
    Abort(Status(Code::kStreamLost,
                 reading_paused_
                     ? fmt::format("connection lost: the peer read nothing for {} s", silent / 1000)
                     : fmt::format("connection lost: nothing received for {} s", silent / 1000)));
    return;
  }
  if (silent >= options_.keepalive_interval_ms && !ping_outstanding_) {
    ping_outstanding_ = true;
    mux_->Ping(now);
    Flush();
  }
}

void Connection::Close(const Status& why) { BeginClose(why, /*graceful=*/true); }

void Connection::Abort(const Status& why) { BeginClose(why, /*graceful=*/false); }

void Connection::BeginClose(const Status& why, bool graceful) {
  if (state_ >= State::kClosing) {
    if (!graceful) CloseHandles();
    return;
  }
  bool can_send = state_ >= State::kHandshaking;
  state_ = State::kClosing;
  close_deadline_ms_ = uv_now(loop_) + options_.close_linger_ms;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  // The mux belongs to the session and may move on to a new connection: take what it queued
  // for this one now, then never touch it again.
  Mux* mux = mux_;
  mux_ = nullptr;
  if (graceful && can_send && mux != nullptr) {
    Buffer& out = mux->output();
    if (!out.empty() && tls_->established()) {
      Status st = tls_->WritePlaintext(out.data(), out.size());
      (void)st;
    }
    out.Clear();
  }
  if (!handler_told_closed_) {
    handler_told_closed_ = true;
    handler_->OnConnectionClosed(why);
  }
  if (state_ == State::kClosed) return;
  if (graceful && can_send) {
    tls_->Shutdown();
    tls_->DrainCiphertext(pending_);
    StartWrite();
    if (state_ == State::kClosing && write_queued() == 0) Linger();
    return;
  }
  CloseHandles();
}

void Connection::Linger() {
  if (write_side_shut_ || state_ != State::kClosing) return;
  // Only a session that got as far as the Mux has a peer that may still be sending stream
  // data; a failed handshake (garbage, a wrong certificate) is closed as soon as its alert is
  // out, so such peers cannot make the gateway hold their sockets for the linger.
  uv_os_fd_t fd = -1;
  if (!ever_ready_ || uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp_), &fd) != 0 ||
      ::shutdown(fd, SHUT_WR) != 0) {
    CloseHandles();
    return;
  }
  write_side_shut_ = true;
  int rc = uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), &Connection::OnAlloc,
                         &Connection::OnRead);
  if (rc != 0) CloseHandles();
}

void Connection::CloseHandles() {
  if (state_ == State::kClosed) {
    return;
  }
  state_ = State::kClosed;
  Ticker::Unsubscribe(loop_, this);
  if (resolving_) uv_cancel(reinterpret_cast<uv_req_t*>(&resolve_req_));
  if (redialing_) {  // tcp_ is closing already; OnRedialClosed() waits for it.
    uvglue::CloseHandles<Connection, &Connection::closes_, &Connection::MaybeFree>(
        this, {AsHandle(&check_), AsHandle(&idle_)});
    return;
  }
  uvglue::CloseHandles<Connection, &Connection::closes_, &Connection::MaybeFree>(
      this, {AsHandle(&tcp_), AsHandle(&check_), AsHandle(&idle_)});
}

void Connection::MaybeFree() {
  // A getaddrinfo still running holds &resolve_req_; wait for its (cancelled) callback. A
  // socket closing for a redial is waited for too.
  if (state_ != State::kClosed || closes_.pending > 0 || resolving_ || redialing_) return;
  ConnectionHandler* handler = handler_;
  delete this;  // The only delete of a Connection.
  handler->OnConnectionFreed();
}

Connection::Released Connection::Release() {
  Released out;
  EncryptPending();
  if (write_in_flight_) return out;  // Bytes half-written by libuv cannot be moved.
  uv_os_fd_t fd = -1;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp_), &fd) == 0) {
    out.fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);  // Close-on-exec: exec exports start processes.
  }
  out.peer_address = peer_address_;
  out.admission = options_.admission;
  out.tls = std::move(tls_);
  out.pending.Append(pending_.data(), pending_.size());
  pending_.Clear();
  std::swap(out.input, plain_);
  handler_told_closed_ = true;
  state_ = State::kClosing;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  CloseHandles();
  return out;
}

Connection* Connection::Adopt(uv_loop_t* loop, Released released, const ConnectionOptions& options,
                              ConnectionHandler* handler, Mux* mux) {
  ConnectionOptions adopted = options;
  adopted.admission = std::move(released.admission);  // Held since the first accept.
  auto* c = new Connection(loop, std::move(released.tls), "", adopted, handler, mux);
  c->peer_address_ = released.peer_address;
  c->pending_.Append(released.pending.data(), released.pending.size());
  std::swap(c->plain_, released.input);
  int rc = uv_tcp_open(&c->tcp_, released.fd);
  c->state_ = State::kOpen;
  c->ever_ready_ = true;
  if (rc != 0) {
    ::close(released.fd);
    c->Abort(
        Status(Code::kStreamLost, fmt::format("cannot adopt connection: {}", uv_strerror(rc))));
    return c;
  }
  uv_tcp_nodelay(&c->tcp_, 1);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp_), &Connection::OnAlloc,
                &Connection::OnRead);
  c->Flush();
  return c;
}

void Connection::EncryptPending() {
  if (mux_ == nullptr) return;
  Buffer& out = mux_->output();
  if (!out.empty() && tls_ && tls_->established()) {
    Status st = tls_->WritePlaintext(out.data(), out.size());
    (void)st;  // A failure shows on the next read.
    out.Clear();
  }
  if (tls_) tls_->DrainCiphertext(pending_);
}

void Connection::Rebind(ConnectionHandler* handler, Mux* mux) {
  EncryptPending();  // What the old mux queued still goes out, in order.
  handler_ = handler;
  mux_ = mux;
  Flush();
}

}  // namespace pipegate::uvglue
