#include "pipegate/log.h"

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace pipegate {
namespace {

// The log layer is process-wide: the fixture swaps in a fake clock and a capturing sink, and
// puts both back (with the limit off) after each test. Each test uses causes of its own, because
// a cause keeps its window for the life of the process.
std::atomic<uint64_t> g_now_ms{0};
std::mutex g_lines_mu;
std::vector<std::string> g_lines;

uint64_t FakeNow() noexcept { return g_now_ms.load(); }

void Capture(LogLevel, std::string_view message) noexcept {
  std::lock_guard<std::mutex> lock(g_lines_mu);
  g_lines.emplace_back(message);
}

class LogRateLimit : public ::testing::Test {
 protected:
  void SetUp() override {
    g_now_ms += 1000000;
    SetLogClockForTest(&FakeNow);
    SetLogSinkForTest(&Capture);
    FlushAllSuppressedLogLines();  // What earlier tests left pending.
    {
      std::lock_guard<std::mutex> lock(g_lines_mu);
      g_lines.clear();
    }
    SetLogLinesPerSecond(3);
  }
  void TearDown() override {
    SetLogLinesPerSecond(0);
    SetLogSinkForTest(nullptr);
    SetLogClockForTest(nullptr);
  }
  static std::vector<std::string> Lines() {
    std::lock_guard<std::mutex> lock(g_lines_mu);
    return g_lines;
  }
  static int Admitted(LogCause& cause, int tries) {
    int admitted = 0;
    for (int i = 0; i < tries; ++i) admitted += cause.Admit() ? 1 : 0;
    return admitted;
  }
};

TEST_F(LogRateLimit, AdmitsUpToTheCapPerWindowAndCountsTheRest) {
  static LogCause cause("audit", "decision=no-such-pipe");
  const uint64_t before = SuppressedLogLines();
  EXPECT_EQ(Admitted(cause, 10), 3);
  EXPECT_EQ(SuppressedLogLines() - before, 7u);
  EXPECT_TRUE(Lines().empty());  // The window has not ended: no summary yet.

  g_now_ms += 999;
  EXPECT_FALSE(cause.Admit());
  EXPECT_TRUE(Lines().empty());

  g_now_ms += 1;  // The window ends with the next line of the cause, summary first.
  EXPECT_TRUE(cause.Admit());
  ASSERT_EQ(Lines().size(), 1u);
  EXPECT_EQ(Lines()[0], "audit: suppressed 8 lines of decision=no-such-pipe in the last 1.0 s");
  EXPECT_EQ(SuppressedLogLines() - before, 8u);
}

TEST_F(LogRateLimit, NoSummaryWhenNothingWasSuppressed) {
  static LogCause cause("log", "quiet");
  EXPECT_EQ(Admitted(cause, 3), 3);
  g_now_ms += 5000;
  EXPECT_EQ(Admitted(cause, 3), 3);
  FlushAllSuppressedLogLines();
  EXPECT_TRUE(Lines().empty());
}

TEST_F(LogRateLimit, FlushSummarisesOnlyWindowsThatHaveEnded) {
  static LogCause cause("log", "\"burst {}\"");
  EXPECT_EQ(Admitted(cause, 5), 3);
  g_now_ms += 500;
  FlushSuppressedLogLines();
  EXPECT_TRUE(Lines().empty());

  g_now_ms += 1000;  // The burst is over and the cause never logs again.
  FlushSuppressedLogLines();
  ASSERT_EQ(Lines().size(), 1u);
  EXPECT_EQ(Lines()[0], "log: suppressed 2 lines of \"burst {}\" in the last 1.5 s");
  FlushSuppressedLogLines();  // Said once only.
  EXPECT_EQ(Lines().size(), 1u);

  // A new window starts at the flush: the cap applies afresh.
  EXPECT_EQ(Admitted(cause, 4), 3);
}

TEST_F(LogRateLimit, FlushAllSummarisesAnOpenWindow) {
  static LogCause cause("log", "exit");
  EXPECT_EQ(Admitted(cause, 4), 3);
  FlushAllSuppressedLogLines();
  ASSERT_EQ(Lines().size(), 1u);
  EXPECT_EQ(Lines()[0], "log: suppressed 1 lines of exit in the last 0.0 s");
}

TEST_F(LogRateLimit, CausesHaveSeparateBudgets) {
  static LogCause denied("audit", "decision=access-denied");
  static LogCause granted("audit", "decision=granted");
  EXPECT_EQ(Admitted(denied, 100), 3);
  EXPECT_EQ(Admitted(granted, 3), 3);  // A flood of one cause leaves the others alone.
}

TEST_F(LogRateLimit, ZeroMeansNoLimitButPendingSummariesAreStillWritten) {
  static LogCause cause("log", "reloaded");
  EXPECT_EQ(Admitted(cause, 5), 3);
  SetLogLinesPerSecond(0);  // A reload that lifts the limit.
  EXPECT_EQ(Admitted(cause, 100), 100);
  g_now_ms += 1000;
  EXPECT_TRUE(cause.Admit());
  ASSERT_EQ(Lines().size(), 1u);
  EXPECT_NE(Lines()[0].find("suppressed 2 lines of reloaded"), std::string::npos);
}

TEST_F(LogRateLimit, ThreadsShareOneBudgetPerCause) {
  static LogCause cause("log", "threads");
  SetLogLinesPerSecond(50);
  const uint64_t before = SuppressedLogLines();
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] { admitted += Admitted(cause, 10000); });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(admitted.load(), 50);
  EXPECT_EQ(SuppressedLogLines() - before, 40000u - 50u);
  FlushAllSuppressedLogLines();
  ASSERT_EQ(Lines().size(), 1u);
  EXPECT_NE(Lines()[0].find("suppressed 39950 lines of threads"), std::string::npos);
}

int g_formatted = 0;
int Formatted() { return ++g_formatted; }

TEST_F(LogRateLimit, PgLogDoesNotFormatASuppressedLine) {
  g_formatted = 0;
  for (int i = 0; i < 10; ++i) PG_LOG(kWarn, "open {} refused", Formatted());
  EXPECT_EQ(g_formatted, 3);
  std::vector<std::string> lines = Lines();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[2], "open 3 refused");
  g_now_ms += 1000;
  FlushSuppressedLogLines();
  lines = Lines();
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[3], "log: suppressed 7 lines of \"open {} refused\" in the last 1.0 s");
}

TEST_F(LogRateLimit, ConnLogNamesItsCauseWithoutTheConnectionPrefix) {
  for (int i = 0; i < 4; ++i) PG_CONN_LOG(kWarn, i, "protocol error from {}", "1.2.3.4:5");
  g_now_ms += 1000;
  FlushSuppressedLogLines();
  std::vector<std::string> lines = Lines();
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "[C0] protocol error from 1.2.3.4:5");
  EXPECT_EQ(lines[3], "log: suppressed 1 lines of \"protocol error from {}\" in the last 1.0 s");
}

TEST(SanitizeForLog, EscapesWhatCouldForgeOrBreakALine) {
  EXPECT_EQ(SanitizeForLog("plain name-1.example"), "plain name-1.example");
  EXPECT_EQ(SanitizeForLog("a\nb\rc\td"), "a\\x0ab\\x0dc\\x09d");
  EXPECT_EQ(SanitizeForLog("q\"b\\"), "q\\x22b\\x5c");
  EXPECT_EQ(SanitizeForLog("\xff\x7f"), "\\xff\\x7f");
  EXPECT_EQ(SanitizeForLog(std::string_view("a\0b", 3)), "a\\x00b");
}

TEST(SanitizeForLog, CutsAndSaysTheFullSize) {
  EXPECT_EQ(SanitizeForLog(std::string(70, 'x')), std::string(64, 'x') + "...(70 bytes)");
  EXPECT_EQ(SanitizeForLog("abcdef", 3), "abc...(6 bytes)");
  EXPECT_EQ(SanitizeForLog("abc", 3), "abc");
}

TEST(SanitizeControlBytes, KeepsQuotesAndBackslashesSoEscapedTextReadsTheSame) {
  EXPECT_EQ(SanitizeControlBytes("access denied for 'evil\\x0a'", 100),
            "access denied for 'evil\\x0a'");
  EXPECT_EQ(SanitizeControlBytes("a\n\x1b[2J\"b\"", 100), "a\\x0a\\x1b[2J\"b\"");
  EXPECT_EQ(SanitizeControlBytes("abcdef", 3), "abc...(6 bytes)");
}

}  // namespace
}  // namespace pipegate
