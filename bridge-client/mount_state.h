#pragma once

#include <cstdint>
#include <string_view>

#include "pipegate/config.h"
#include "pipegate/status.h"

namespace pipegate::bridge {

/// @brief How a mount presents its export locally.
enum class MountMode {
  kSocket,          ///< A listening Unix socket: each accepted connection is a duplex stream.
  kFifoToReader,    ///< A FIFO that local readers open: the remote side is read from.
  kFifoFromWriter,  ///< A FIFO that local writers open: the remote side is written to.
};

/// @brief Where a mount is between local openers.
///
/// A FIFO mount keeps its local FIFO as a local FIFO would be with the remote pipe's state:
/// - read export: a local reader's open() returns once the mount's poll finds it (the mount
///   opens the write end), and the reader then waits in read() until the remote pipe gives
///   bytes or EOF. Refusals that may pass (busy, a limit, a lost session) are retried with
///   backoff while the reader waits; the reader sees EOF only when the remote pipe ends, or
///   when the mount itself ends (a final refusal, a signal).
/// - write export: nothing holds the local FIFO's read end until the gateway has accepted a
///   stream to a reader, so a local writer blocks in open() (ENXIO with O_NONBLOCK) until a
///   remote reader can take its bytes, and gets EPIPE once that reader is gone.
enum class MountState {
  kListening,   ///< A socket mount: always accepting.
  kWaitReader,  ///< Read export: polling the FIFO for a local reader.
  kOpening,     ///< FIFO: a stream's OPEN is with the gateway (read export: the reader waits).
  kBackoff,     ///< FIFO: an OPEN was refused for a reason that may pass; retrying later.
  kStreaming,   ///< FIFO: the stream is accepted and carries the local FIFO.
  kWaitGone,    ///< Read export: a stream ended; the old reader is given time to leave.
};

/// @brief What happened to a mount.
enum class MountEvent {
  kStart,            ///< The local path is ready.
  kTick,             ///< The reader poll timer fired (read export).
  kReaderFound,      ///< A probe found a local reader (read export).
  kReaderLeft,       ///< The local reader left before a stream took it (read export).
  kRetryDue,         ///< The backoff timer fired.
  kReadable,         ///< The listening socket is readable.
  kAccepted,         ///< The gateway accepted the FIFO's stream.
  kStreamEnded,      ///< The FIFO's stream (or a socket connection's) has closed.
  kSessionReplaced,  ///< The session was refused and replaced: its streams are gone.
};

/// @brief What the mount does next; the I/O half (Mount) performs it.
enum class MountAction {
  kNone,
  kPauseWaiter,    ///< Stop watching the listening socket until streams can be opened again.
  kAccept,         ///< Accept the waiting socket connections, one stream each.
  kProbeReader,    ///< Try to open the FIFO for writing; a reader there is kReaderFound.
  kOpenStream,     ///< Send the FIFO's stream OPEN to the gateway.
  kAttachLocal,    ///< Give the accepted stream the local FIFO end.
  kScheduleRetry,  ///< Start the backoff timer (the delay grows with each refusal).
  kNoteEnd,        ///< Remember when the stream ended (the grace period starts).
  kDropReader,     ///< Close the held write end and cancel the pending OPEN.
  kFinish,         ///< A refusal that will not pass: the mount ends with it.
};

/// @brief A mount's next state and the action that gets it there.
struct MountStep {
  MountState state;
  MountAction action;
  bool operator==(const MountStep&) const = default;
};

/// @brief What the decision needs to know besides the state and the event.
struct MountFacts {
  bool can_open = false;      ///< Whether the session can take a new stream now.
  uint64_t since_end_ms = 0;  ///< Time since kNoteEnd (meaningful in kWaitGone only).
  /// kStreamEnded: why it ended (OK: cleanly). Only the code matters.
  Code end = Code::kOk;
};

/// After a FIFO reader's stream ends, how long the old reader has to leave before the mount
/// probes for a new one: a successful probe open would hand EOF to a reader blocked in open()
/// if it were closed again.
inline constexpr uint64_t kReaderGoneGraceMs = 100;

/// @return Whether a FIFO stream that ended with @p code before the gateway accepted it is
/// worth asking for again (the remote pipe has no reader or writer yet, is busy, a limit is
/// reached, or the session was lost), rather than the mount's final answer (denied, no such
/// pipe, a usage or protocol error).
bool RetryableRefusal(Code code);

/// @return The delay before retry number @p attempt (0 = the first): 100 ms doubling to 10 s.
uint64_t RetryDelayMs(uint32_t attempt);

/// @return How an export of @p kind and @p access is presented, given --as @p present_as
/// ("", "unix" or "fifo"); kUsage if a unix export is asked to be a FIFO.
Result<MountMode> ChooseMountMode(ExportKind kind, Access access, std::string_view present_as);

/// @return The state a mount of @p mode starts in (before kStart).
MountState InitialMountState(MountMode mode);

/// @brief The mount's decision function. Pure.
MountStep NextMountStep(MountMode mode, MountState state, MountEvent event,
                        const MountFacts& facts);

}  // namespace pipegate::bridge
