#pragma once

#include <cstdint>
#include <string>

#include "pipegate/config.h"
#include "pipegate/frame.h"
#include "pipegate/local_path.h"
#include "pipegate/status.h"

#include "bridge.h"
#include "mount_state.h"
#include "uv/handles.h"
#include "uv/local_pipe.h"
#include "uv/stream_link.h"

namespace pipegate::bridge {

/// @brief How one of a mount's streams ended, as the client saw it.
struct MountStreamEnd {
  Status result;  ///< OK if it ended cleanly, else the first error.
  /// Bytes read from the local pipe that the gateway never confirmed it delivered, plus bytes
  /// still unread in the local pipe when it was closed: what a local writer lost.
  uint64_t undelivered = 0;
};

/// @brief What a mount needs from the client that carries its streams.
///
/// Thread: the loop's thread. Re-entrancy: OpenStream(), AbortStream() and Finish() may call
/// back into the mount (Finish() calls Mount::Stop()).
class MountHost {
 public:
  virtual ~MountHost() = default;
  /// @return Whether a stream may be opened now (the session is usable, or is being resumed
  /// and queues the open).
  virtual bool CanOpen() const = 0;
  /// @brief Opens a stream of @p access on the local @p pipes, which it takes in any case
  /// (on an error they are closed). The pipes may be empty and given later with AttachPipes().
  /// @param wait_ms How long the gateway may wait for a busy pipe or a missing reader.
  /// @param flags OPEN flags added to the command's own: kOpenFlagWaitOnlyWhileBusy (wait only
  /// while the export is busy; a missing reader, a socket nobody listens on, is answered at
  /// once) and kOpenFlagEarlyData (the stream reads @p pipes at once and sends what it reads
  /// before the gateway accepts; only for an export known to take it, EarlyDataFits).
  /// @return The stream's id.
  virtual Result<uint32_t> OpenStream(Access access, uvglue::StreamPipes pipes, uint32_t wait_ms,
                                      uint8_t flags = 0) = 0;
  /// @brief Gives stream @p id its local pipes (from Mount::OnStreamAccepted(), before the
  /// stream starts reading them).
  virtual void AttachPipes(uint32_t id, uvglue::StreamPipes pipes) = 0;
  /// @brief Gives up stream @p id (its end is still reported through OnStreamEnded()).
  virtual void AbortStream(uint32_t id) = 0;
  /// @brief Ends the bridge with @p status (the first call wins).
  virtual void Finish(const Status& status) = 0;
};

/// @brief One mount: a local FIFO or Unix socket at options.local_path whose every local
/// opener gets a stream to the export. The decisions are NextMountStep()'s (mount_state.h,
/// which also says how a mounted FIFO behaves); this class performs them.
///
/// Ownership: owned by the client for the rest of its life; it owns the local path (removed
/// in Stop() if it made it), the listening socket, a read export's write end while no stream
/// holds it, and its timers. The streams it opens belong to the client, which reports their
/// acceptance and end. Thread: the loop's thread. Re-entrancy: any method may end in
/// MountHost::Finish(), which calls Stop(); after Stop() every method is a no-op, so the
/// client never has to destroy the mount from inside one of its calls.
class Mount final : public uvglue::LocalPipeEvents {
 public:
  Mount(uvglue::Loop& loop, const BridgeOptions& options, MountHost* host);
  ~Mount() override;
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;

  /// @brief Makes (or adopts) the local path for @p entry and starts serving it; on failure
  /// finishes the bridge through the host.
  void Start(const ListEntry& entry);
  /// @brief The gateway accepted stream @p id: a FIFO's stream gets its local end now.
  void OnStreamAccepted(uint32_t id);
  /// @brief Stream @p id that this mount opened has closed, as @p end says.
  void OnStreamEnded(uint32_t id, const MountStreamEnd& end);
  /// @brief The session was refused and replaced by a fresh one: its streams are gone and no
  /// OnStreamEnded() comes for them.
  void OnSessionReplaced();
  /// @brief Whether the host can open a stream may have changed: watch the listening socket
  /// only while it can (it is level-triggered: left watched, it would spin the loop).
  void OnOpenableChanged();
  /// @brief Closes the local pipes and the timers and removes the local path if this process
  /// made it. Idempotent.
  void Stop();

  // LocalPipeEvents: the listening socket, and a read export's held write end.
  void OnLocalReadable() override;
  void OnLocalWriteError(const Status& status) override;

 private:
  AdoptRule Rule() const;
  Status PrepareFifoPath();
  /// @brief Says on stderr when an adopted FIFO's mode, owner or group differ from the flags'.
  void WarnIfNotAsAsked() const;
  Status PrepareSocketPath();
  void Apply(MountEvent event, Code end = Code::kOk);
  void ProbeReader();
  void OpenFifoStream();
  void AttachLocal();
  void AcceptConnections();
  /// @brief Reports a refusal that will be retried: the first of a kind at once, its repeats
  /// as a count (at 10, 100, 1000... and when another outcome follows).
  void NoteRefusal(const Status& why);
  /// @brief Reports how many times the last refusal repeated, if it did, and forgets it.
  void EndRefusals();
  void Say(const std::string& message) const;

  uvglue::Loop& loop_;
  const BridgeOptions& options_;
  MountHost* host_;
  MountMode mode_ = MountMode::kFifoFromWriter;
  bool messages_ = false;    ///< The export carries messages: the socket is SOCK_SEQPACKET.
  bool early_data_ = false;  ///< Connections open their streams with kOpenFlagEarlyData.
  MountState state_ = MountState::kBackoff;
  bool stopped_ = false;
  /// The mounted path, made (or adopted) by Prepare*Path; every later open goes through it.
  LocalPath local_;
  uvglue::LocalPipePtr listener_;  ///< A socket mount's listening socket.
  uvglue::LocalPipePtr held_;      ///< Read export: the found reader's write end, until attached.
  uvglue::Timer poll_timer_;       ///< Looks for a local FIFO reader (read export only).
  uvglue::Timer retry_timer_;      ///< The backoff after a refusal.
  uint32_t stream_id_ = 0;         ///< The FIFO's current stream, 0 when none.
  Status last_end_;                ///< How the last FIFO stream ended (for kFinish).
  uint32_t attempts_ = 0;          ///< Refusals since the last accepted stream.
  std::string refusal_;            ///< The last refusal reported.
  uint64_t repeats_ = 0;           ///< How often refusal_ came again since it was reported.
  uint64_t stream_ended_ms_ = 0;
};

}  // namespace pipegate::bridge
