#include "mount_state.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

namespace pipegate::bridge {

namespace {

constexpr uint64_t kFirstRetryMs = 100;
constexpr uint64_t kMaxRetryMs = 10000;
static_assert(kFirstRetryMs >= kReaderGoneGraceMs,
              "a write export's next stream must give the remote reader time for its EOF");

MountStep Socket(MountState state, MountEvent event, const MountFacts& facts) {
  if (event != MountEvent::kReadable) return {state, MountAction::kNone};
  // The listening socket is level-triggered: left watched while nothing can be opened, it
  // would spin the loop.
  return {state, facts.can_open ? MountAction::kAccept : MountAction::kPauseWaiter};
}

// An OPEN is due (first try, a retry, or the next stream): sent now if the session can take it,
// else retried later.
MountStep OpenOrWait(const MountFacts& facts) {
  if (facts.can_open) return {MountState::kOpening, MountAction::kOpenStream};
  return {MountState::kBackoff, MountAction::kScheduleRetry};
}

// The stream of kOpening ended before it was accepted.
MountStep Refused(const MountFacts& facts) {
  if (RetryableRefusal(facts.end)) return {MountState::kBackoff, MountAction::kScheduleRetry};
  return {MountState::kOpening, MountAction::kFinish};
}

// The events both FIFO modes answer alike: a due retry, an accepted stream, a refused one.
std::optional<MountStep> FifoCommon(MountState state, MountEvent event, const MountFacts& facts) {
  switch (event) {
    case MountEvent::kRetryDue:
      if (state != MountState::kBackoff) return MountStep{state, MountAction::kNone};
      return OpenOrWait(facts);
    case MountEvent::kAccepted:
      if (state != MountState::kOpening) return MountStep{state, MountAction::kNone};
      return MountStep{MountState::kStreaming, MountAction::kAttachLocal};
    case MountEvent::kStreamEnded:
      if (state == MountState::kOpening) return Refused(facts);
      return std::nullopt;
    default:
      return std::nullopt;
  }
}

MountStep ToReader(MountState state, MountEvent event, const MountFacts& facts) {
  if (std::optional<MountStep> common = FifoCommon(state, event, facts)) return *common;
  switch (event) {
    case MountEvent::kStart:
      return {MountState::kWaitReader, MountAction::kNone};
    case MountEvent::kTick:
      if (!facts.can_open) return {state, MountAction::kNone};
      if (state == MountState::kWaitGone && facts.since_end_ms < kReaderGoneGraceMs) {
        return {state, MountAction::kNone};
      }
      if (state == MountState::kWaitGone || state == MountState::kWaitReader) {
        return {MountState::kWaitReader, MountAction::kProbeReader};
      }
      return {state, MountAction::kNone};
    case MountEvent::kReaderFound:
      if (state != MountState::kWaitReader) return {state, MountAction::kNone};
      return OpenOrWait(facts);
    case MountEvent::kReaderLeft:
      if (state != MountState::kOpening && state != MountState::kBackoff) {
        return {state, MountAction::kNone};
      }
      return {MountState::kWaitReader, MountAction::kDropReader};
    case MountEvent::kStreamEnded:
      if (state == MountState::kStreaming) return {MountState::kWaitGone, MountAction::kNoteEnd};
      return {state, MountAction::kNone};
    case MountEvent::kSessionReplaced:
      // The streams are gone without kStreamEnded. A reader still waiting keeps waiting; one
      // whose stream was cut has had its EOF, and the next gets the grace period.
      if (state == MountState::kOpening) return {MountState::kBackoff, MountAction::kScheduleRetry};
      if (state == MountState::kStreaming || state == MountState::kWaitGone) {
        return {MountState::kWaitGone, MountAction::kNoteEnd};
      }
      return {state, MountAction::kNone};
    case MountEvent::kReadable:
    case MountEvent::kRetryDue:  // Answered by FifoCommon().
    case MountEvent::kAccepted:
      return {state, MountAction::kNone};
  }
  return {state, MountAction::kNone};
}

MountStep FromWriter(MountState state, MountEvent event, const MountFacts& facts) {
  if (std::optional<MountStep> common = FifoCommon(state, event, facts)) return *common;
  switch (event) {
    case MountEvent::kStart:
      return OpenOrWait(facts);
    case MountEvent::kStreamEnded:
      if (state != MountState::kStreaming) return {state, MountAction::kNone};
      // The next stream waits at least the first retry delay, whatever ended this one: a
      // writer's EOF reaches the remote reader only if no writer holds the gateway's FIFO when
      // it reads, so the next stream must not reopen it at once (kFirstRetryMs is at least
      // kReaderGoneGraceMs); and a fault (the remote reader went away) cannot spin.
      return {MountState::kBackoff, MountAction::kScheduleRetry};
    case MountEvent::kSessionReplaced:
      if (state == MountState::kOpening || state == MountState::kStreaming) {
        return {MountState::kBackoff, MountAction::kScheduleRetry};
      }
      return {state, MountAction::kNone};
    case MountEvent::kTick:
    case MountEvent::kReaderFound:
    case MountEvent::kReaderLeft:
    case MountEvent::kReadable:
    case MountEvent::kRetryDue:  // Answered by FifoCommon().
    case MountEvent::kAccepted:
      return {state, MountAction::kNone};
  }
  return {state, MountAction::kNone};
}

}  // namespace

bool RetryableRefusal(Code code) {
  switch (code) {
    case Code::kNoReader:
    case Code::kBusy:
    case Code::kLimit:
    case Code::kStreamLost:
    case Code::kConnect:
      return true;
    default:
      return false;
  }
}

uint64_t RetryDelayMs(uint32_t attempt) {
  return std::min(kMaxRetryMs, kFirstRetryMs << std::min<uint32_t>(attempt, 16));
}

Result<MountMode> ChooseMountMode(ExportKind kind, Access access, std::string_view present_as) {
  if (present_as == "fifo" && (kind == ExportKind::kUnix || kind == ExportKind::kExec)) {
    return Status(Code::kUsage, fmt::format("a {} export cannot be presented as a FIFO (omit --as)",
                                            ExportKindName(kind)));
  }
  // An exec export is a conversation, as a socket is: each local connection starts a process.
  if (kind == ExportKind::kUnix || kind == ExportKind::kExec || present_as == "unix") {
    return MountMode::kSocket;
  }
  return access == Access::kRead ? MountMode::kFifoToReader : MountMode::kFifoFromWriter;
}

MountState InitialMountState(MountMode mode) {
  switch (mode) {
    case MountMode::kSocket:
      return MountState::kListening;
    case MountMode::kFifoToReader:
      return MountState::kWaitReader;
    case MountMode::kFifoFromWriter:
      return MountState::kBackoff;
  }
  return MountState::kBackoff;
}

MountStep NextMountStep(MountMode mode, MountState state, MountEvent event,
                        const MountFacts& facts) {
  switch (mode) {
    case MountMode::kSocket:
      return Socket(state, event, facts);
    case MountMode::kFifoToReader:
      return ToReader(state, event, facts);
    case MountMode::kFifoFromWriter:
      return FromWriter(state, event, facts);
  }
  return {state, MountAction::kNone};
}

}  // namespace pipegate::bridge
