#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <uv.h>

#include "pipegate/buffer.h"
#include "pipegate/mux.h"
#include "pipegate/status.h"
#include "pipegate/tls.h"

#include "uv/handles.h"
#include "uv/ticker.h"

namespace pipegate::uvglue {

/// @brief Limits and timers of a connection.
struct ConnectionOptions {
  MuxOptions mux;
  uint64_t handshake_timeout_ms = 10000;   ///< TCP connect + TLS + SETTINGS must finish by then.
  uint64_t keepalive_interval_ms = 10000;  ///< PING after this long with nothing received.
  uint64_t keepalive_timeout_ms = 30000;   ///< Dead after this long with nothing received.
  uint64_t close_linger_ms =
      2000;  ///< How long a graceful close waits for its bytes, then for the peer's FIN.
  uint64_t idle_timeout_ms = 0;  ///< Close after this long with no stream open; 0 = never.
  /// Ciphertext waiting for the socket past which the connection stops reading its peer until
  /// the backlog falls below kLowMark: a peer that sends requests (PINGs) but never reads
  /// cannot make the output grow. 0 = never stop.
  size_t max_write_backlog = 0;
  /// Held for as long as the connection lives and dropped when it is freed: the gateway's
  /// per-source connection accounting (an admission token).
  std::shared_ptr<const void> admission;
};

/// @brief What a Connection tells its handler, besides the Mux events.
class ConnectionHandler : public MuxCallbacks {
 public:
  /// @brief TLS is up and the peer verified; the Mux starts right after this returns.
  virtual void OnTlsEstablished(const PeerIdentity& peer) { (void)peer; }
  /// @brief The write backlog fell below the low mark; paused local reads may resume.
  virtual void OnConnectionWritable() {}
  /// @brief About once a second while the connection is up (@p now_ms: the loop's clock): the
  /// time to free what idle streams hold (LocalPipe::ReleaseIdleMemory). Must not close the
  /// connection.
  virtual void OnHousekeeping(uint64_t now_ms) { (void)now_ms; }
  /// @brief The Mux stopped feeding after a RESUME frame (MuxCallbacks::OnResumeRequest): now
  /// is the time to Rebind() or Release() the connection. Input after the RESUME is kept and
  /// goes to whichever Mux the connection has when this returns.
  virtual void OnInputYielded() {}
  /// @brief The connection is closing (or never opened). Called once. Drop every stream.
  virtual void OnConnectionClosed(const Status& why) = 0;
  /// @brief The last handle is closed; the connection is about to be deleted and will never
  /// call the handler again. The handler may delete itself here.
  virtual void OnConnectionFreed() {}
};

/// @brief One TCP connection carrying TLS carrying the Mux: the glue between libuv and the
/// sans-I/O layers (transport → TlsSession → Mux → handler).
///
/// Ownership: created by Accept()/Connect(); owns itself and is deleted after Close() once
/// every handle has closed (the close callback is the only delete). The handler must outlive
/// it, i.e. until OnConnectionFreed(). Thread: its loop's thread.
/// Re-entrancy: handler callbacks may call Close(); the connection re-checks its state.
/// Output produced by mux() calls is flushed once per loop turn (Flush()), so frames coalesce
/// into full TLS records.
class Connection final : private TickSubscriber {
 public:
  /// @brief Accepts a pending connection from @p server.
  static Result<Connection*> Accept(uv_loop_t* loop, uv_stream_t* server,
                                    std::shared_ptr<const TlsContext> tls,
                                    const ConnectionOptions& options, ConnectionHandler* handler,
                                    Mux* mux);
  /// @brief Resolves (unless @p host is a numeric address) and dials @p host:@p port; failures
  /// arrive as OnConnectionClosed, never before Connect() has returned.
  static Connection* Connect(uv_loop_t* loop, const std::string& host, uint16_t port,
                             std::shared_ptr<const TlsContext> tls,
                             const ConnectionOptions& options, ConnectionHandler* handler,
                             Mux* mux);

  /// @brief What Release() hands over: the socket and its TLS session.
  struct Released {
    int fd = -1;
    std::unique_ptr<TlsSession> tls;  ///< Null if the connection could not be released.
    std::string peer_address;
    Buffer pending;  ///< Ciphertext not yet written, to be written first.
    Buffer input;    ///< Decrypted bytes not yet fed to any Mux (after a RESUME), in order.
    std::shared_ptr<const void> admission;  ///< The admission token travels with the socket.
  };
  /// @brief Takes an established connection away from this loop (to move it to another
  /// worker): the socket is duplicated, this connection closes without telling its handler
  /// (no OnConnectionClosed), and OnConnectionFreed still comes.
  Released Release();
  /// @brief Adopts a released connection on @p loop, with @p handler and @p mux.
  static Connection* Adopt(uv_loop_t* loop, Released released, const ConnectionOptions& options,
                           ConnectionHandler* handler, Mux* mux);
  /// @brief Hands the connection to another handler and mux on the same loop (the session it
  /// resumes). What the old mux had queued is sent first; the old handler hears nothing more.
  void Rebind(ConnectionHandler* handler, Mux* mux);
  /// @brief Feeds input an adopted connection brought along (decrypted or still encrypted)
  /// to its Mux. Call once the Mux is ready for it (after Adopt() and the resume).
  void ProcessBuffered();

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// @return The multiplexer; after using it call Flush().
  Mux& mux() noexcept { return *mux_; }
  /// @return The TLS session (for exporters and the peer's key).
  const TlsSession& tls() const noexcept { return *tls_; }
  /// @brief Sends queued mux output at the end of this loop turn.
  void Flush();
  /// @return True while more than the high mark of bytes wait for the socket, counting the
  /// frames the mux queued this turn (encrypted at the next flush). Bounding those keeps one
  /// loop turn's output, and with it the buffers it passes through, small enough to stay in
  /// the cache when many streams are readable at once.
  bool backlogged() const noexcept { return backlog() > kHighMark; }
  /// @brief Someone paused for backpressure: OnConnectionWritable() will follow once the
  /// backlog is below the low mark (at once, from the loop, if it already is).
  void WantWritable();
  /// @brief Closes: sends what is queued (GOAWAY, close_notify) for up to close_linger_ms.
  void Close(const Status& why);
  /// @brief Closes at once, dropping what is queued.
  void Abort(const Status& why);

  uint64_t id() const noexcept { return id_; }
  const std::string& peer_address() const noexcept { return peer_address_; }
  const PeerIdentity& peer() const noexcept { return tls_->peer_identity(); }
  bool closing() const noexcept { return state_ >= State::kClosing; }

  static constexpr size_t kHighMark = 256 * 1024;
  static constexpr size_t kLowMark = 64 * 1024;

 private:
  enum class State { kResolving, kConnecting, kHandshaking, kOpen, kClosing, kClosed };

  Connection(uv_loop_t* loop, std::unique_ptr<TlsSession> tls, const std::string& host,
             const ConnectionOptions& options, ConnectionHandler* handler, Mux* mux);
  ~Connection();

  void StartTls();
  void OnBytes(const uint8_t* p, size_t n);
  void ProcessInput();
  void MaybeNotifyWritable();
  void UpdateReading();
  void DoFlush();
  void EncryptPending();
  void StartWrite();
  void BeginClose(const Status& why, bool graceful);
  /// @brief A graceful close whose output is all written: ends the write side (FIN) and
  /// reads and discards until the peer's FIN or the close deadline, then closes. Closing a
  /// socket with unread input makes the kernel send RST, which the peer would take for a
  /// network loss (and keep the session for resume) instead of an orderly end.
  void Linger();
  void CloseHandles();
  void MaybeFree();
  size_t write_queued() const noexcept { return inflight_.size() + pending_.size(); }
  /// @return write_queued() plus the mux output not yet encrypted.
  size_t backlog() const noexcept {
    return write_queued() + (mux_ != nullptr ? mux_->output().size() : 0);
  }

  /// Starts the TCP connect to the next of candidates_ (state kResolving → kConnecting).
  void DialNext();
  /// The connect to one address failed (@p what names it and why): dials the next address on
  /// a fresh socket, or fails the connection naming every address tried.
  void DialFailed(const std::string& what);
  /// With more addresses left, closes an attempt that has had its share of the handshake
  /// timeout and dials the next. @return True if it did.
  bool GiveUpOnSlowAddress(uint64_t now);
  /// Before the mux is ready (timer): moves past a slow address, or fails the connection once
  /// handshake_timeout_ms has passed, naming every address tried.
  void CheckHandshakeDeadline(uint64_t now);
  /// "ADDRESS:PORT", with IPv6 addresses in brackets.
  static std::string FormatPeer(const sockaddr_storage& ss);
  /// What Connect() left for the loop: dial literal_address_, or fail with dial_failure_.
  void DialDeferred();
  static void OnRedialClosed(uv_handle_t* handle) noexcept;
  static void OnResolved(uv_getaddrinfo_t* req, int status, addrinfo* res) noexcept;
  static void OnConnected(uv_connect_t* req, int status) noexcept;
  static void OnAlloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf) noexcept;
  static void OnRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept;
  static void OnWrite(uv_write_t* req, int status) noexcept;
  static void OnCheck(uv_check_t* handle) noexcept;
  static void OnIdle(uv_idle_t* handle) noexcept;
  /// Handshake deadline, idle timeout, keepalive, idle memory and the close linger.
  void OnTick(uint64_t now_ms) override;

  uv_loop_t* loop_;
  uv_tcp_t tcp_{};
  uv_check_t check_{};
  uv_idle_t idle_{};
  uv_getaddrinfo_t resolve_req_{};
  /// Connect() of a numeric address (ParseNumericAddress): what DialDeferred() dials.
  sockaddr_storage literal_address_{};
  /// Client: the addresses to try, in the resolver's order (RFC 6724), and the next one; a
  /// refused or unreachable address is followed by the next, as ssh and curl do.
  std::vector<sockaddr_storage> candidates_;
  size_t next_candidate_ = 0;
  std::string dial_errors_;  ///< "ADDRESS: why" of each address that failed, "; "-separated.
  /// Connect()'s resolver refused at once: what DialDeferred() reports instead.
  Status dial_failure_;
  uv_connect_t connect_req_{};
  uv_write_t write_req_{};
  CloseCount<Connection> closes_;  ///< Handles closing; MaybeFree() after the last.
  bool resolving_ = false;
  bool connecting_ = false;
  /// tcp_ is being closed to dial the next candidate on a fresh socket (OnRedialClosed).
  bool redialing_ = false;
  bool write_in_flight_ = false;
  bool flush_scheduled_ = false;
  bool handler_told_closed_ = false;
  bool was_backlogged_ = false;  ///< Someone waits for OnConnectionWritable().
  bool reading_paused_ = false;  ///< Reads stopped for max_write_backlog.
  bool ever_ready_ = false;
  bool write_side_shut_ = false;  ///< Linger(): FIN sent, discarding input until the peer's.

  State state_ = State::kConnecting;
  uint64_t id_;
  std::string host_;
  uint16_t port_ = 0;
  std::string peer_address_;
  ConnectionOptions options_;
  ConnectionHandler* handler_;
  std::unique_ptr<TlsSession> tls_;
  Mux* mux_;  // Owned by the handler's session; outlives this connection or is rebound.
  uint64_t started_ms_ = 0;
  uint64_t attempt_started_ms_ = 0;  // when DialNext() began the current attempt
  uint64_t last_recv_ms_ = 0;
  uint64_t close_deadline_ms_ = 0;
  bool ping_outstanding_ = false;
  uint64_t idle_since_ms_ = 0;  // when the connection last had no stream (0: busy).

  Buffer plain_;     // Decrypted bytes on their way to the mux.
  Buffer pending_;   // Ciphertext not yet handed to the kernel.
  Buffer inflight_;  // Ciphertext of the one uv_write in flight.
};

}  // namespace pipegate::uvglue
