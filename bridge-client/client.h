#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pipegate/buffer.h"
#include "pipegate/config.h"
#include "pipegate/frame.h"
#include "pipegate/mux.h"
#include "pipegate/resume.h"
#include "pipegate/status.h"
#include "pipegate/tls.h"

#include "bridge.h"
#include "mount.h"
#include "progress.h"
#include "reconnect_policy.h"
#include "uv/connection.h"
#include "uv/handles.h"
#include "uv/local_pipe.h"
#include "uv/stream_link.h"

namespace pipegate::bridge {

/// How long `connect` keeps reading stdin after the gateway's side ended, before it ends its
/// own side and exits: what socat does by default (-t 0.5), and what lets `connect` finish
/// when stdin is a terminal or a pipe that stays open (nc exits at the network's EOF at once;
/// the pause lets a reply to the last bytes sent still cross).
inline constexpr uint64_t kConnectLingerMs = 500;

/// The longest reason from the gateway that is shown whole.
inline constexpr size_t kMaxReasonBytes = 512;

/// @brief The status a RESET or STOP from the gateway ends a stream with: @p code, and the
/// gateway's @p reason escaped (as every peer-supplied string that reaches the terminal), or the
/// name of @p error when it gave none.
Status Message(Code code, ErrorCode error, std::string_view reason);

/// @brief A bridge stream: a StreamLink plus the first error that ended it.
///
/// Ownership: the client's stream table. Thread: the loop's thread.
class BridgeStream final : public uvglue::StreamLink {
 public:
  using StreamLink::StreamLink;
  Status result;  ///< First error seen; OK if the stream ended cleanly.
  bool accepted = false;
  bool early = false;  ///< Reading since the OPEN (early data), not since OPEN_OK.
  /// Bytes the gateway confirmed delivered, as last seen while the Mux still had the stream.
  uint64_t confirmed = 0;
  /// How the process behind an exec stream ended (EXIT), once the gateway said so.
  std::optional<ExitPayload> exit;
  /// @return Bytes waiting unread in the input pipe (0 without one, or if it cannot tell).
  uint64_t UnreadInput() const;
  /// `cat --count`: the count is reached; once the output has taken the last byte, the client
  /// stops the stream (Client::OnCountWritten).
  bool count_reached = false;
  void OnLocalWriteDone() override;
};

/// @brief One bridge process: the session with the gateway (one Mux, carried by one
/// connection at a time and resumed on a new one after a loss), the command's streams, and
/// the command itself (the one-shot commands in commands.cc, a mount through Mount).
///
/// Ownership: lives on RunBridge's stack; it owns the Mux, the streams, the mount and its
/// timers and signals, and holds the current Connection (which owns itself and is closed by
/// Finish()). Every handle it or its connection owns is closed before Run() returns.
/// Thread: the loop's thread. Re-entrancy: the Mux, the connection and the mount call in
/// synchronously, and Finish() may come from any of them. It only closes things: the mount is
/// stopped, not destroyed; the connection frees itself later; the signal wrappers it destroys
/// may be destroyed from their own callback (uvglue::HandleBase). Streams are deleted from
/// OnStreamClosed(), as the StreamLink contract allows.
class Client final : public uvglue::ConnectionHandler,
                     public uvglue::StreamLinkOwner,
                     public MountHost {
 public:
  Client(uvglue::Loop& loop, const BridgeOptions& options);
  ~Client() override;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  /// @brief Runs the command until it finishes and every handle is closed.
  /// @return The command's status (see RunBridge).
  Status Run();
  /// @return The exit status the command takes from an exec export's process (see RunBridge),
  /// or nullopt.
  std::optional<int> process_exit() const noexcept { return process_exit_; }

  // StreamLinkOwner.
  Mux* stream_mux() override { return finished_ ? nullptr : mux_.get(); }
  void FlushSoon() override;
  bool Backlogged() override { return conn_ == nullptr || conn_->backlogged(); }
  void PauseForBackpressure(uvglue::StreamLink* link) override {
    paused_.push_back(link->id());
    if (conn_ != nullptr) conn_->WantWritable();  // Else the reconnect resumes it.
  }

  // ConnectionHandler.
  void OnConnectionWritable() override;
  void OnHousekeeping(uint64_t now_ms) override {
    for (auto& [id, stream] : streams_) {
      if (uvglue::LocalPipe* out = stream->output()) out->ReleaseIdleMemory();
    }
    Buffer::TrimCache(now_ms);  // The bridge's one thread has no other timer for it.
  }
  void OnConnectionClosed(const Status& why) override;

  // MuxCallbacks.
  void OnMuxReady() override;
  void OnOpenAccepted(uint32_t id, const OpenOkPayload& ok) override;
  void OnStreamData(uint32_t id, const uint8_t* data, size_t len) override;
  void OnStreamFin(uint32_t id) override;
  void OnStreamMessageEnd(uint32_t id) override;
  /// @brief `cat --count`: stream @p id's output took its last byte: stop reading it.
  void OnCountWritten(uint32_t id);
  void OnStreamReset(uint32_t id, ErrorCode error, std::string_view reason) override;
  void OnStreamStopped(uint32_t id, ErrorCode error, std::string_view reason) override;
  void OnStreamWritable(uint32_t id) override;
  void OnStreamClosed(uint32_t id) override;
  void OnListReply(const std::vector<ListEntry>& entries, bool more) override;
  void OnGoaway(const GoawayPayload& g) override;
  void OnSession(const SessionPayload& session) override;
  void OnResumeOk(const ResumeOkPayload& ok) override;
  void OnStreamExit(uint32_t id, const ExitPayload& exit) override;

  // MountHost.
  /// @return Whether a stream may be opened now: on a ready connection, or queued on the
  /// detached Mux of a session being resumed, which sends its OPEN when it resumes.
  bool CanOpen() const override {
    return !finished_ && (resuming_ || (conn_ != nullptr && ready_));
  }
  Result<uint32_t> OpenStream(Access access, uvglue::StreamPipes pipes, uint32_t wait_ms,
                              uint8_t flags = 0) override;
  void AttachPipes(uint32_t id, uvglue::StreamPipes pipes) override;
  void AbortStream(uint32_t id) override;
  /// @brief Ends the command with @p status: closes the streams, the mount, the connection,
  /// the timers and the signals. The first call wins.
  void Finish(const Status& status) override;

 private:
  // The commands (commands.cc).
  void StartCommand();
  void StartSingle();
  /// @brief ls: prints the listing, or with a NAME in the address just that export (probing
  /// the gateway for why when the listing leaves it out).
  void ListOrProbe();
  void PrintListing();
  void StartMount();
  /// @brief Sends an OPEN of the export (of a mount, or of `ls NAME`) that the listing left
  /// out, only to learn why: the gateway refuses it before touching the export (Authorize),
  /// with "access denied" or "no such pipe".
  void ProbeRefusal();
  /// @brief The gateway answered the probe: @p refusal (nullopt: granted) and its @p reason.
  void OnProbeAnswered(uint32_t id, std::optional<ErrorCode> refusal, std::string_view reason);

  // The connection and the session (client.cc).
  BridgeStream* Find(uint32_t id);
  /// @return Over every stream: bytes the gateway confirmed delivered, bytes written out here.
  std::pair<uint64_t, uint64_t> TotalProgress() const;
  /// @brief SIGINT or SIGTERM (@p signum): ends the command with kInterrupted or kTerminated.
  void OnSignal(int signum);
  /// @brief connect: the gateway's side ended kConnectLingerMs ago; ends stdin's side too.
  void OnLingerTimer();
  // --progress (commands.cc).
  void StartProgress();
  /// @brief Draws the meter: in place on a terminal, a line at a time otherwise; @p last ends
  /// it with a newline.
  void DrawProgress(bool last);
  /// @brief Reloads the client certificate, key and CA into tls_ when their files changed
  /// since they were loaded (Dial() decides whether a resume may use them). Files that do not
  /// load are warned about once, and the context loaded before is kept.
  void RefreshTls();
  void NewMux();
  void Dial();
  void OnReconnectTimer();
  uvglue::ConnectionOptions ConnOptions() const;
  void SendResume();
  void StartResuming(const Status& why);
  void ScheduleReconnect(const Status& why);
  void LostForGood(const std::string& why);
  void StartFreshSession(const std::string& why);
  void DropConnection(const Status& why);
  void NotifyOpenable() {
    if (mount_ != nullptr) mount_->OnOpenableChanged();
  }

  uvglue::Loop& loop_;
  BridgeOptions options_;
  /// The newest client certificate, key and CA (RefreshTls()), for the next fresh session.
  std::shared_ptr<const TlsContext> tls_;
  std::string tls_fingerprint_;  ///< The files tls_ was loaded from (TlsFilesFingerprint).
  /// The context the current session uses: a resume presents a certificate for the same key,
  /// since the gateway lets only the key that made a session resume it.
  std::shared_ptr<const TlsContext> session_tls_;
  /// The session's multiplexer. It outlives connections (streams resume across them) and is
  /// replaced only by Dial(), from the loop: a session given up on may still be inside its
  /// own Feed() (the GOAWAY that refused the resume), so it must not be freed there.
  std::unique_ptr<Mux> mux_;
  uvglue::Connection* conn_ = nullptr;  ///< The connection carrying mux_, if any.
  /// True only inside DropConnection(): Connection::Close() reports OnConnectionClosed()
  /// synchronously, before it returns, and a connection the client has already let go of is
  /// no loss to act on. (A dial that fails inside Connection::Connect() also reports
  /// synchronously, before conn_ is set, and that report must be acted on: so a null conn_
  /// cannot stand in for this flag.)
  bool dropping_ = false;
  bool ready_ = false;  ///< The session's first connection got SETTINGS.

  // Resumption.
  bool has_session_ = false;  ///< The gateway named a session and we hold its resume key.
  bool resuming_ = false;     ///< Between a loss and RESUME_OK: mux_ is detached.
  uint8_t session_id_[kSessionIdSize] = {};
  std::string resume_key_;
  uint64_t resume_deadline_ms_ = 0;  ///< The session's lifetime at the gateway.
  ReconnectPolicy reconnect_;
  uvglue::Timer reconnect_timer_;
  /// connect: started by the gateway's FIN; OnLingerTimer() ends stdin's direction.
  uvglue::Timer linger_timer_;
  uint32_t linger_stream_ = 0;  ///< The stream linger_timer_ ends.

  bool finished_ = false;
  Status result_;
  std::optional<int> process_exit_;  ///< Set when the stream's process decides the exit status.
  std::optional<uvglue::Signal> sigint_;
  std::optional<uvglue::Signal> sigterm_;
  std::unordered_map<uint32_t, std::unique_ptr<BridgeStream>> streams_;
  std::vector<uint32_t> paused_;  ///< Streams waiting for OnConnectionWritable().
  std::vector<ListEntry> listing_;
  /// The stream ProbeRefusal() opened, until the gateway answers it; 0 when none.
  uint32_t probe_id_ = 0;
  uint64_t counted_ = 0;          ///< cat --count: bytes (or lines) written so far.
  bool relisted_ = false;         ///< A probe was granted and the export list asked for again.
  std::unique_ptr<Mount> mount_;  ///< Set once the mount starts; lives as long as the client.

  // --progress.
  std::optional<uvglue::Timer> progress_timer_;
  bool progress_tty_ = false;  ///< stderr is a terminal: redraw in place.
  uint64_t progress_start_ms_ = 0;
  std::optional<uint64_t> progress_total_;  ///< Bytes stdin holds, when it is a regular file.
  std::pair<uint64_t, uint64_t> progress_last_{0, 0};  ///< Sent (confirmed), received.
  RateMeter progress_rate_;
};

}  // namespace pipegate::bridge
