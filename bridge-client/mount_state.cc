#include "mount_state.h"

namespace pipegate::bridge {

namespace {

MountStep OnTick(MountState state, bool can_open, uint64_t since_end_ms) {
  if (!can_open) return {state, MountAction::kNone};
  if (state == MountState::kWaitGone && since_end_ms < kReaderGoneGraceMs) {
    return {state, MountAction::kNone};
  }
  if (state == MountState::kWaitGone || state == MountState::kWaitReader) {
    return {MountState::kWaitReader, MountAction::kProbeReader};
  }
  return {state, MountAction::kNone};
}

MountStep OnReadable(MountState state, bool can_open) {
  // The waiting pipe is level-triggered: left watched while nothing can be opened, it would
  // spin the loop.
  if (!can_open) return {state, MountAction::kPauseWaiter};
  if (state == MountState::kWaitWriter)
    return {MountState::kStreaming, MountAction::kOpenWriterStream};
  if (state == MountState::kListening) return {state, MountAction::kAccept};
  return {state, MountAction::kNone};
}

MountStep OnStreamEnded(MountMode mode, MountState state) {
  switch (mode) {
    case MountMode::kSocket:
      return {state, MountAction::kNone};  // Each connection was its own stream.
    case MountMode::kFifoToReader:
      return {MountState::kWaitGone, MountAction::kNoteEnd};
    case MountMode::kFifoFromWriter:
      return {MountState::kWaitWriter, MountAction::kArmWriter};
  }
  return {state, MountAction::kNone};
}

}  // namespace

Result<MountMode> ChooseMountMode(ExportKind kind, Access access, std::string_view present_as) {
  if (present_as == "fifo" && kind == ExportKind::kUnix) {
    return Status(Code::kUsage, "a unix export cannot be presented as a FIFO (omit --as)");
  }
  if (kind == ExportKind::kUnix || present_as == "unix") return MountMode::kSocket;
  return access == Access::kRead ? MountMode::kFifoToReader : MountMode::kFifoFromWriter;
}

MountState InitialMountState(MountMode mode) {
  switch (mode) {
    case MountMode::kSocket:
      return MountState::kListening;
    case MountMode::kFifoToReader:
      return MountState::kWaitReader;
    case MountMode::kFifoFromWriter:
      return MountState::kWaitWriter;
  }
  return MountState::kWaitWriter;
}

MountStep NextMountStep(MountMode mode, MountState state, MountEvent event, bool can_open,
                        uint64_t since_end_ms) {
  switch (event) {
    case MountEvent::kTick:
      return OnTick(state, can_open, since_end_ms);
    case MountEvent::kReadable:
      return OnReadable(state, can_open);
    case MountEvent::kStreamEnded:
      return OnStreamEnded(mode, state);
    case MountEvent::kSessionReplaced:
      // Only a FIFO's stream (or its grace period) is cut short; a listener keeps listening.
      if (state != MountState::kStreaming && state != MountState::kWaitGone) {
        return {state, MountAction::kNone};
      }
      return OnStreamEnded(mode, state);
  }
  return {state, MountAction::kNone};
}

}  // namespace pipegate::bridge
