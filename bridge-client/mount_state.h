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
enum class MountState {
  kWaitReader,  ///< Polling the FIFO for a reader.
  kStreaming,   ///< A FIFO's stream is open.
  kWaitGone,    ///< A FIFO's stream ended: the old reader is given time to leave.
  kWaitWriter,  ///< Holding the FIFO's read end, waiting for a writer's first byte.
  kListening,   ///< A socket mount: always accepting.
};

/// @brief What happened to a mount.
enum class MountEvent {
  kTick,             ///< The reader poll timer fired.
  kReadable,         ///< The waiting pipe (FIFO read end or listening socket) is readable.
  kStreamEnded,      ///< The stream the mount opened has closed.
  kSessionReplaced,  ///< The session was refused and replaced: its streams are gone.
};

/// @brief What the mount does next; the I/O half (Mount) performs it.
enum class MountAction {
  kNone,
  kPauseWaiter,       ///< Stop watching the waiting pipe until streams can be opened again.
  kProbeReader,       ///< Try to open the FIFO for writing; a reader there gets a read stream.
  kOpenWriterStream,  ///< Hand the waiting read end to a new write stream.
  kAccept,            ///< Accept the waiting socket connections, one stream each.
  kNoteEnd,           ///< Remember when the stream ended (the grace period starts).
  kArmWriter,         ///< Reopen the FIFO's read end and wait for the next writer.
};

/// @brief A mount's next state and the action that gets it there.
struct MountStep {
  MountState state;
  MountAction action;
  bool operator==(const MountStep&) const = default;
};

/// After a FIFO reader's stream ends, how long the old reader has to leave before the mount
/// probes for a new one: a successful probe open would hand EOF to a reader blocked in open()
/// if it were closed again.
inline constexpr uint64_t kReaderGoneGraceMs = 100;

/// @return How an export of @p kind and @p access is presented, given --as @p present_as
/// ("", "unix" or "fifo"); kUsage if a unix export is asked to be a FIFO.
Result<MountMode> ChooseMountMode(ExportKind kind, Access access, std::string_view present_as);

/// @return The state a mount of @p mode starts in.
MountState InitialMountState(MountMode mode);

/// @brief The mount's decision function. Pure: the caller supplies whether a stream can be
/// opened now and how long ago the last stream ended.
/// @param can_open Whether the session can take a new stream now.
/// @param since_end_ms Time since kNoteEnd (meaningful in kWaitGone only).
MountStep NextMountStep(MountMode mode, MountState state, MountEvent event, bool can_open,
                        uint64_t since_end_ms);

}  // namespace pipegate::bridge
