// The mount's pure decision function (bridge-client/mount_state.h): which mode an export is
// presented in, and what each event does in each state. The I/O half is covered by
// tests/integration/mount_test.cc.

#include "mount_state.h"

#include <gtest/gtest.h>

namespace pipegate::bridge {
namespace {

constexpr bool kCanOpen = true;
constexpr bool kCannotOpen = false;

MountStep Step(MountState state, MountAction action) { return MountStep{state, action}; }

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
  EXPECT_EQ(InitialMountState(MountMode::kFifoFromWriter), MountState::kWaitWriter);
}

TEST(NextMountStep, TickProbesForAReaderOnlyWhenAStreamCanBeOpened) {
  const MountMode m = MountMode::kFifoToReader;
  EXPECT_EQ(NextMountStep(m, MountState::kWaitReader, MountEvent::kTick, kCanOpen, 0),
            Step(MountState::kWaitReader, MountAction::kProbeReader));
  EXPECT_EQ(NextMountStep(m, MountState::kWaitReader, MountEvent::kTick, kCannotOpen, 0),
            Step(MountState::kWaitReader, MountAction::kNone));
  EXPECT_EQ(NextMountStep(m, MountState::kStreaming, MountEvent::kTick, kCanOpen, 0),
            Step(MountState::kStreaming, MountAction::kNone));
}

TEST(NextMountStep, AfterAStreamTheOldReaderGetsItsGracePeriod) {
  const MountMode m = MountMode::kFifoToReader;
  EXPECT_EQ(NextMountStep(m, MountState::kStreaming, MountEvent::kStreamEnded, kCanOpen, 0),
            Step(MountState::kWaitGone, MountAction::kNoteEnd));
  EXPECT_EQ(
      NextMountStep(m, MountState::kWaitGone, MountEvent::kTick, kCanOpen, kReaderGoneGraceMs - 1),
      Step(MountState::kWaitGone, MountAction::kNone));
  EXPECT_EQ(
      NextMountStep(m, MountState::kWaitGone, MountEvent::kTick, kCanOpen, kReaderGoneGraceMs),
      Step(MountState::kWaitReader, MountAction::kProbeReader));
  // The grace period does not run out while no stream can be opened.
  EXPECT_EQ(NextMountStep(m, MountState::kWaitGone, MountEvent::kTick, kCannotOpen, 10000),
            Step(MountState::kWaitGone, MountAction::kNone));
}

TEST(NextMountStep, AWriterFifoHandsItsReadEndToAStreamThenRearms) {
  const MountMode m = MountMode::kFifoFromWriter;
  EXPECT_EQ(NextMountStep(m, MountState::kWaitWriter, MountEvent::kReadable, kCanOpen, 0),
            Step(MountState::kStreaming, MountAction::kOpenWriterStream));
  EXPECT_EQ(NextMountStep(m, MountState::kWaitWriter, MountEvent::kReadable, kCannotOpen, 0),
            Step(MountState::kWaitWriter, MountAction::kPauseWaiter));
  EXPECT_EQ(NextMountStep(m, MountState::kStreaming, MountEvent::kStreamEnded, kCanOpen, 0),
            Step(MountState::kWaitWriter, MountAction::kArmWriter));
}

TEST(NextMountStep, ASocketAcceptsAndKeepsListening) {
  const MountMode m = MountMode::kSocket;
  EXPECT_EQ(NextMountStep(m, MountState::kListening, MountEvent::kReadable, kCanOpen, 0),
            Step(MountState::kListening, MountAction::kAccept));
  EXPECT_EQ(NextMountStep(m, MountState::kListening, MountEvent::kReadable, kCannotOpen, 0),
            Step(MountState::kListening, MountAction::kPauseWaiter));
  EXPECT_EQ(NextMountStep(m, MountState::kListening, MountEvent::kStreamEnded, kCanOpen, 0),
            Step(MountState::kListening, MountAction::kNone));
  EXPECT_EQ(NextMountStep(m, MountState::kListening, MountEvent::kSessionReplaced, kCanOpen, 0),
            Step(MountState::kListening, MountAction::kNone));
}

TEST(NextMountStep, AReplacedSessionEndsOnlyAFifoStreamOrItsGracePeriod) {
  EXPECT_EQ(NextMountStep(MountMode::kFifoToReader, MountState::kStreaming,
                          MountEvent::kSessionReplaced, kCannotOpen, 0),
            Step(MountState::kWaitGone, MountAction::kNoteEnd));
  // The grace period starts again: the stream that was cut may have had a reader.
  EXPECT_EQ(NextMountStep(MountMode::kFifoToReader, MountState::kWaitGone,
                          MountEvent::kSessionReplaced, kCannotOpen, 50),
            Step(MountState::kWaitGone, MountAction::kNoteEnd));
  EXPECT_EQ(NextMountStep(MountMode::kFifoToReader, MountState::kWaitReader,
                          MountEvent::kSessionReplaced, kCannotOpen, 0),
            Step(MountState::kWaitReader, MountAction::kNone));
  EXPECT_EQ(NextMountStep(MountMode::kFifoFromWriter, MountState::kStreaming,
                          MountEvent::kSessionReplaced, kCannotOpen, 0),
            Step(MountState::kWaitWriter, MountAction::kArmWriter));
  EXPECT_EQ(NextMountStep(MountMode::kFifoFromWriter, MountState::kWaitWriter,
                          MountEvent::kSessionReplaced, kCannotOpen, 0),
            Step(MountState::kWaitWriter, MountAction::kNone));
}

}  // namespace
}  // namespace pipegate::bridge
