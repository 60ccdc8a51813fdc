#pragma once

#include <cstdint>

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

/// @brief What a mount needs from the client that carries its streams.
///
/// Thread: the loop's thread. Re-entrancy: OpenStream() and Finish() may call back into the
/// mount (Finish() calls Mount::Stop()).
class MountHost {
 public:
  virtual ~MountHost() = default;
  /// @return Whether a stream may be opened now (the session is usable, or is being resumed
  /// and queues the open).
  virtual bool CanOpen() const = 0;
  /// @brief Opens a stream of @p access on the local @p pipes, which it takes in any case
  /// (on an error they are closed).
  virtual Status OpenStream(Access access, uvglue::StreamPipes pipes) = 0;
  /// @brief Ends the bridge with @p status (the first call wins).
  virtual void Finish(const Status& status) = 0;
};

/// @brief One mount: a local FIFO or Unix socket at options.local_path whose every local
/// opener gets a stream to the export. The decisions are NextMountStep()'s (mount_state.h);
/// this class performs them.
///
/// Ownership: owned by the client for the rest of its life; it owns the local path (removed
/// in Stop() if it made it), the waiting pipe and the reader poll timer. The streams it opens
/// belong to the client, which reports their end with OnStreamEnded(). Thread: the loop's
/// thread. Re-entrancy: any method may end in MountHost::Finish(), which calls Stop(); after
/// Stop() every method is a no-op, so the client never has to destroy the mount from inside
/// one of its calls.
class Mount final : public uvglue::LocalPipeEvents {
 public:
  Mount(uvglue::Loop& loop, const BridgeOptions& options, MountHost* host);
  ~Mount() override;
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;

  /// @brief Makes (or adopts) the local path for @p entry and starts serving it; on failure
  /// finishes the bridge through the host.
  void Start(const ListEntry& entry);
  /// @brief A stream this mount opened has closed, with @p result (printed if an error).
  void OnStreamEnded(const Status& result);
  /// @brief The session was refused and replaced by a fresh one: its streams are gone and no
  /// OnStreamEnded() comes for them.
  void OnSessionReplaced();
  /// @brief Whether the host can open a stream may have changed: watch the waiting pipe only
  /// while it can (the pipe is level-triggered: left watched, it would spin the loop).
  void OnOpenableChanged();
  /// @brief Closes the waiting pipe and the poll timer and removes the local path if this
  /// process made it. Idempotent.
  void Stop();

  // LocalPipeEvents, for the waiting pipe.
  void OnLocalReadable() override;

 private:
  AdoptRule Rule() const;
  Status PrepareFifoPath();
  /// @brief Says on stderr when an adopted FIFO's mode, owner or group differ from the flags'.
  void WarnIfNotAsAsked() const;
  Status PrepareSocketPath();
  void Apply(MountEvent event);
  void ProbeReader();
  void OpenWriterStream();
  void AcceptConnections();
  void ArmWriter();

  uvglue::Loop& loop_;
  const BridgeOptions& options_;
  MountHost* host_;
  MountMode mode_ = MountMode::kFifoFromWriter;
  MountState state_ = MountState::kWaitWriter;
  bool stopped_ = false;
  /// The mounted path, made (or adopted) by Prepare*Path; every later open goes through it.
  LocalPath local_;
  uvglue::LocalPipePtr wait_pipe_;  ///< FIFO read end or listening socket, while waiting.
  uvglue::Timer poll_timer_;        ///< Looks for a FIFO reader (kFifoToReader only).
  uint64_t stream_ended_ms_ = 0;
};

}  // namespace pipegate::bridge
