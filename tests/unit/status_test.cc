// Status codes and the exit statuses SPEC §7 gives them.

#include "pipegate/status.h"

#include <signal.h>

#include <gtest/gtest.h>

namespace pipegate {
namespace {

TEST(ExitCodeFor, FollowsTheSpecTable) {
  struct Case {
    Code code;
    int exit;
  };
  const Case cases[] = {
      {Code::kOk, 0},
      {Code::kUsage, 1},
      {Code::kConnect, 2},
      {Code::kTls, 2},
      {Code::kAccessDenied, 3},
      {Code::kNotFound, 4},
      {Code::kBusy, 5},
      {Code::kNoReader, 5},
      {Code::kLimit, 5},
      {Code::kBrokenPipe, 6},
      {Code::kStreamLost, 6},
      {Code::kProtocol, 6},
      {Code::kIo, 6},
      {Code::kInternal, 6},
      {Code::kInterrupted, 128 + SIGINT},
      {Code::kTerminated, 128 + SIGTERM},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(CodeName(c.code));
    EXPECT_EQ(ExitCodeFor(c.code), c.exit);
  }
  // As shells report them.
  EXPECT_EQ(ExitCodeFor(Code::kInterrupted), 130);
  EXPECT_EQ(ExitCodeFor(Code::kTerminated), 143);
}

TEST(CodeName, NamesTheSignalCodes) {
  EXPECT_STREQ(CodeName(Code::kInterrupted), "interrupted");
  EXPECT_STREQ(CodeName(Code::kTerminated), "terminated");
}

}  // namespace
}  // namespace pipegate
