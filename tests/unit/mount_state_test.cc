// The mount's pure decision function (bridge-client/mount_state.h): which mode an export is
// presented in, and what each event does in each state. The I/O half is covered by
// tests/integration/mount_test.cc.

#include "mount_state.h"

#include <gtest/gtest.h>

namespace pipegate::bridge {
namespace {

MountStep Step(MountState state, MountAction action) { return MountStep{state, action}; }

MountFacts Open(Code end = Code::kOk) {
  MountFacts f;
  f.can_open = true;
  f.end = end;
  return f;
}

MountFacts Closed() { return MountFacts{}; }

MountFacts Since(uint64_t ms, bool can_open = true) {
  MountFacts f;
  f.can_open = can_open;
  f.since_end_ms = ms;
  return f;
}

TEST(ChooseMountMode, UnixExportsAreSocketsAndRefuseFifo) {
  EXPECT_EQ(*ChooseMountMode(ExportKind::kUnix, Access::kDuplex, ""), MountMode::kSocket);
  EXPECT_EQ(*ChooseMountMode(ExportKind::kUnix, Access::kDuplex, "unix"), MountMode::kSocket);
  Result<MountMode> fifo = ChooseMountMode(ExportKind::kUnix, Access::kDuplex, "fifo");
  ASSERT_FALSE(fifo);
  EXPECT_EQ(fifo.error().code(), Code::kUsage);
  EXPECT_EQ(fifo.error().message(), "a unix export cannot be presented as a FIFO (omit --as)");
}

TEST(ChooseMountMode, FifoExportsFollowTheirAccessUnlessAskedForASocket) {
  EXPECT_EQ(*ChooseMountMode(ExportKind::kFifo, Access::kRead, ""), MountMode::kFifoToReader);
  EXPECT_EQ(*ChooseMountMode(ExportKind::kFifo, Access::kRead, "fifo"), MountMode::kFifoToReader);
  EXPECT_EQ(*ChooseMountMode(ExportKind::kFifo, Access::kWrite, ""), MountMode::kFifoFromWriter);
  EXPECT_EQ(*ChooseMountMode(ExportKind::kFifo, Access::kDuplex, ""), MountMode::kFifoFromWriter);
  EXPECT_EQ(*ChooseMountMode(ExportKind::kFifo, Access::kRead, "unix"), MountMode::kSocket);
}

TEST(InitialMountState, OnePerMode) {
  EXPECT_EQ(InitialMountState(MountMode::kSocket), MountState::kListening);
  EXPECT_EQ(InitialMountState(MountMode::kFifoToReader), MountState::kWaitReader);
  EXPECT_EQ(InitialMountState(MountMode::kFifoFromWriter), MountState::kBackoff);
}

TEST(RetryableRefusal, OnlyWhatMayPass) {
  for (Code c : {Code::kNoReader, Code::kBusy, Code::kLimit, Code::kStreamLost, Code::kConnect}) {
    EXPECT_TRUE(RetryableRefusal(c)) << CodeName(c);
  }
  for (Code c : {Code::kAccessDenied, Code::kNotFound, Code::kUsage, Code::kProtocol, Code::kTls,
                 Code::kIo, Code::kInternal, Code::kBrokenPipe}) {
    EXPECT_FALSE(RetryableRefusal(c)) << CodeName(c);
  }
}

TEST(RetryDelayMs, DoublesFrom100MsTo10S) {
  EXPECT_EQ(RetryDelayMs(0), 100u);
  EXPECT_EQ(RetryDelayMs(1), 200u);
  EXPECT_EQ(RetryDelayMs(6), 6400u);
  EXPECT_EQ(RetryDelayMs(7), 10000u);
  EXPECT_EQ(RetryDelayMs(1000), 10000u);
}

// ---- read export: the local reader waits through refusals ----

TEST(NextMountStep, ReadExportProbesForAReaderOnlyWhenAStreamCanBeOpened) {
  const MountMode m = MountMode::kFifoToReader;
  EXPECT_EQ(NextMountStep(m, MountState::kWaitReader, MountEvent::kStart, Open()),
            Step(MountState::kWaitReader, MountAction::kNone));
  EXPECT_EQ(NextMountStep(m, MountState::kWaitReader, MountEvent::kTick, Open()),
            Step(MountState::kWaitReader, MountAction::kProbeReader));
  EXPECT_EQ(NextMountStep(m, MountState::kWaitReader, MountEvent::kTick, Closed()),
            Step(MountState::kWaitReader, MountAction::kNone));
  EXPECT_EQ(NextMountStep(m, MountState::kStreaming, MountEvent::kTick, Open()),
            Step(MountState::kStreaming, MountAction::kNone));
  EXPECT_EQ(NextMountStep(m, MountState::kOpening, MountEvent::kTick, Open()),
            Step(MountState::kOpening, MountAction::kNone));
}

TEST(NextMountStep, ReadExportOpensForAFoundReaderAndAttachesItWhenAccepted) {
  const MountMode m = MountMode::kFifoToReader;
  EXPECT_EQ(NextMountStep(m, MountState::kWaitReader, MountEvent::kReaderFound, Open()),
            Step(MountState::kOpening, MountAction::kOpenStream));
  EXPECT_EQ(NextMountStep(m, MountState::kWaitReader, MountEvent::kReaderFound, Closed()),
            Step(MountState::kBackoff, MountAction::kScheduleRetry));
  EXPECT_EQ(NextMountStep(m, MountState::kOpening, MountEvent::kAccepted, Open()),
            Step(MountState::kStreaming, MountAction::kAttachLocal));
}

TEST(NextMountStep, ReadExportRetriesARefusalThatMayPassWhileTheReaderWaits) {
  const MountMode m = MountMode::kFifoToReader;
  for (Code c : {Code::kBusy, Code::kNoReader, Code::kLimit, Code::kStreamLost}) {
    EXPECT_EQ(NextMountStep(m, MountState::kOpening, MountEvent::kStreamEnded, Open(c)),
              Step(MountState::kBackoff, MountAction::kScheduleRetry))
        << CodeName(c);
  }
  EXPECT_EQ(NextMountStep(m, MountState::kBackoff, MountEvent::kRetryDue, Open()),
            Step(MountState::kOpening, MountAction::kOpenStream));
  EXPECT_EQ(NextMountStep(m, MountState::kBackoff, MountEvent::kRetryDue, Closed()),
            Step(MountState::kBackoff, MountAction::kScheduleRetry));
  // A stale timer after the state moved on does nothing.
  EXPECT_EQ(NextMountStep(m, MountState::kStreaming, MountEvent::kRetryDue, Open()),
            Step(MountState::kStreaming, MountAction::kNone));
}

TEST(NextMountStep, ReadExportEndsOnARefusalThatWillNotPass) {
  const MountMode m = MountMode::kFifoToReader;
  for (Code c : {Code::kAccessDenied, Code::kNotFound, Code::kProtocol}) {
    EXPECT_EQ(NextMountStep(m, MountState::kOpening, MountEvent::kStreamEnded, Open(c)).action,
              MountAction::kFinish)
        << CodeName(c);
  }
}

TEST(NextMountStep, ReadExportLetsGoOfAReaderWhoLeavesBeforeItsStream) {
  const MountMode m = MountMode::kFifoToReader;
  EXPECT_EQ(NextMountStep(m, MountState::kOpening, MountEvent::kReaderLeft, Open()),
            Step(MountState::kWaitReader, MountAction::kDropReader));
  EXPECT_EQ(NextMountStep(m, MountState::kBackoff, MountEvent::kReaderLeft, Open()),
            Step(MountState::kWaitReader, MountAction::kDropReader));
  // Once attached, the stream watches the reader itself.
  EXPECT_EQ(NextMountStep(m, MountState::kStreaming, MountEvent::kReaderLeft, Open()),
            Step(MountState::kStreaming, MountAction::kNone));
  // The end of the OPEN given up arrives later and changes nothing.
  EXPECT_EQ(
      NextMountStep(m, MountState::kWaitReader, MountEvent::kStreamEnded, Open(Code::kStreamLost)),
      Step(MountState::kWaitReader, MountAction::kNone));
}

TEST(NextMountStep, AfterAStreamTheOldReaderGetsItsGracePeriod) {
  const MountMode m = MountMode::kFifoToReader;
  EXPECT_EQ(NextMountStep(m, MountState::kStreaming, MountEvent::kStreamEnded, Open()),
            Step(MountState::kWaitGone, MountAction::kNoteEnd));
  EXPECT_EQ(
      NextMountStep(m, MountState::kStreaming, MountEvent::kStreamEnded, Open(Code::kBrokenPipe)),
      Step(MountState::kWaitGone, MountAction::kNoteEnd));
  EXPECT_EQ(
      NextMountStep(m, MountState::kWaitGone, MountEvent::kTick, Since(kReaderGoneGraceMs - 1)),
      Step(MountState::kWaitGone, MountAction::kNone));
  EXPECT_EQ(NextMountStep(m, MountState::kWaitGone, MountEvent::kTick, Since(kReaderGoneGraceMs)),
            Step(MountState::kWaitReader, MountAction::kProbeReader));
  // The grace period does not run out while no stream can be opened.
  EXPECT_EQ(NextMountStep(m, MountState::kWaitGone, MountEvent::kTick, Since(10000, false)),
            Step(MountState::kWaitGone, MountAction::kNone));
}

// ---- write export: nothing holds the read end until a remote reader can take the bytes ----

TEST(NextMountStep, WriteExportOpensFirstAndAttachesTheReadEndOnlyWhenAccepted) {
  const MountMode m = MountMode::kFifoFromWriter;
  EXPECT_EQ(NextMountStep(m, MountState::kBackoff, MountEvent::kStart, Open()),
            Step(MountState::kOpening, MountAction::kOpenStream));
  EXPECT_EQ(NextMountStep(m, MountState::kBackoff, MountEvent::kStart, Closed()),
            Step(MountState::kBackoff, MountAction::kScheduleRetry));
  EXPECT_EQ(NextMountStep(m, MountState::kOpening, MountEvent::kAccepted, Open()),
            Step(MountState::kStreaming, MountAction::kAttachLocal));
}

TEST(NextMountStep, WriteExportOpensTheNextStreamOnlyAfterTheOldReaderHadItsEof) {
  const MountMode m = MountMode::kFifoFromWriter;
  EXPECT_EQ(NextMountStep(m, MountState::kStreaming, MountEvent::kStreamEnded, Open()),
            Step(MountState::kBackoff, MountAction::kScheduleRetry));
  EXPECT_GE(RetryDelayMs(0), kReaderGoneGraceMs);
  EXPECT_EQ(NextMountStep(m, MountState::kStreaming, MountEvent::kStreamEnded, Closed()),
            Step(MountState::kBackoff, MountAction::kScheduleRetry));
}

TEST(NextMountStep, WriteExportBacksOffAfterABrokenPipeOrARefusal) {
  const MountMode m = MountMode::kFifoFromWriter;
  EXPECT_EQ(
      NextMountStep(m, MountState::kStreaming, MountEvent::kStreamEnded, Open(Code::kBrokenPipe)),
      Step(MountState::kBackoff, MountAction::kScheduleRetry));
  EXPECT_EQ(NextMountStep(m, MountState::kOpening, MountEvent::kStreamEnded, Open(Code::kNoReader)),
            Step(MountState::kBackoff, MountAction::kScheduleRetry));
  EXPECT_EQ(
      NextMountStep(m, MountState::kOpening, MountEvent::kStreamEnded, Open(Code::kAccessDenied))
          .action,
      MountAction::kFinish);
  EXPECT_EQ(NextMountStep(m, MountState::kBackoff, MountEvent::kRetryDue, Open()),
            Step(MountState::kOpening, MountAction::kOpenStream));
}

TEST(NextMountStep, ASocketAcceptsAndKeepsListening) {
  const MountMode m = MountMode::kSocket;
  EXPECT_EQ(NextMountStep(m, MountState::kListening, MountEvent::kReadable, Open()),
            Step(MountState::kListening, MountAction::kAccept));
  EXPECT_EQ(NextMountStep(m, MountState::kListening, MountEvent::kReadable, Closed()),
            Step(MountState::kListening, MountAction::kPauseWaiter));
  EXPECT_EQ(NextMountStep(m, MountState::kListening, MountEvent::kStreamEnded, Open()),
            Step(MountState::kListening, MountAction::kNone));
  EXPECT_EQ(NextMountStep(m, MountState::kListening, MountEvent::kSessionReplaced, Open()),
            Step(MountState::kListening, MountAction::kNone));
}

TEST(NextMountStep, AReplacedSessionEndsOnlyAFifoStreamOrItsGracePeriod) {
  const MountMode r = MountMode::kFifoToReader;
  EXPECT_EQ(NextMountStep(r, MountState::kStreaming, MountEvent::kSessionReplaced, Closed()),
            Step(MountState::kWaitGone, MountAction::kNoteEnd));
  // The grace period starts again: the stream that was cut may have had a reader.
  EXPECT_EQ(NextMountStep(r, MountState::kWaitGone, MountEvent::kSessionReplaced, Since(50)),
            Step(MountState::kWaitGone, MountAction::kNoteEnd));
  EXPECT_EQ(NextMountStep(r, MountState::kWaitReader, MountEvent::kSessionReplaced, Closed()),
            Step(MountState::kWaitReader, MountAction::kNone));
  // A reader whose OPEN was lost with the session keeps waiting for the retry.
  EXPECT_EQ(NextMountStep(r, MountState::kOpening, MountEvent::kSessionReplaced, Closed()),
            Step(MountState::kBackoff, MountAction::kScheduleRetry));
  const MountMode w = MountMode::kFifoFromWriter;
  EXPECT_EQ(NextMountStep(w, MountState::kStreaming, MountEvent::kSessionReplaced, Closed()),
            Step(MountState::kBackoff, MountAction::kScheduleRetry));
  EXPECT_EQ(NextMountStep(w, MountState::kOpening, MountEvent::kSessionReplaced, Closed()),
            Step(MountState::kBackoff, MountAction::kScheduleRetry));
  EXPECT_EQ(NextMountStep(w, MountState::kBackoff, MountEvent::kSessionReplaced, Closed()),
            Step(MountState::kBackoff, MountAction::kNone));
}

}  // namespace
}  // namespace pipegate::bridge
