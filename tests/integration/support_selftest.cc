// Sanity checks of the integration-test support library itself; no pipegate binaries needed.

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/data.h"
#include "support/files.h"
#include "support/pipe_io.h"
#include "support/proc_stats.h"
#include "support/process.h"
#include "support/timing.h"
#include "support/unix_socket.h"

namespace pipegate::testing {
namespace {

TEST(SupportProcess, ReportsExitCode) {
  Process process({"sh", "-c", "exit 3"});
  ASSERT_TRUE(process.started()) << process.error();
  EXPECT_EQ(process.Wait(Duration(5000)), 3);
}

TEST(SupportProcess, ReportsDeathBySignal) {
  Process process({"sh", "-c", "kill -TERM $$"});
  ASSERT_TRUE(process.started());
  EXPECT_EQ(process.Wait(Duration(5000)), 128 + SIGTERM);
}

TEST(SupportProcess, MissingBinaryIsAnError) {
  Process process(std::vector<std::string>{"/nonexistent/binary"});
  EXPECT_FALSE(process.started());
  EXPECT_NE(process.error().find("/nonexistent/binary"), std::string::npos);
}

TEST(SupportProcess, WaitTimesOutAndDestructorKills) {
  pid_t pid = -1;
  {
    Process process({"sleep", "30"});
    ASSERT_TRUE(process.started());
    pid = process.pid();
    EXPECT_FALSE(process.Wait(Duration(50)).has_value());
    EXPECT_TRUE(process.Running());
  }
  // Reaped by the destructor: it is no longer a child of ours, not even a zombie.
  EXPECT_EQ(waitpid(pid, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

TEST(SupportProcess, KillsTheWholeProcessGroup) {
  TempDir dir;
  const std::string pid_file = dir.Join("child.pid");
  {
    Process process({"sh", "-c", "sleep 30 & echo $! > " + pid_file + "; wait"});
    ASSERT_TRUE(process.started());
    ASSERT_TRUE(WaitFor([&] { return ReadOutput(pid_file).size() > 0; }, Duration(5000)));
  }
  const pid_t grandchild = std::stoi(ReadOutput(pid_file));
  // The grandchild was reparented (not our child), so it may linger as a zombie briefly.
  EXPECT_TRUE(WaitFor(
      [&] {
        const std::string stat = ReadFile("/proc/" + std::to_string(grandchild) + "/stat");
        return stat.empty() || stat.find(") Z") != std::string::npos;
      },
      Duration(5000)));
}

TEST(SupportProcess, KillsLeftoversWhenTheLeaderExits) {
  TempDir dir;
  const std::string pid_file = dir.Join("child.pid");
  Process process({"sh", "-c", "sleep 30 & echo $! > " + pid_file});
  ASSERT_TRUE(process.started());
  EXPECT_EQ(process.Wait(Duration(5000)), 0);
  const pid_t leftover = std::stoi(ReadOutput(pid_file));
  EXPECT_TRUE(WaitFor(
      [&] {
        const std::string stat = ReadFile("/proc/" + std::to_string(leftover) + "/stat");
        return stat.empty() || stat.find(") Z") != std::string::npos;
      },
      Duration(5000)));
}

TEST(SupportProcess, PipesStdinAndEnvironment) {
  TempDir dir;
  const std::string out = dir.Join("out");
  ProcessOptions options;
  options.argv = {"sh", "-c", "printf '%s:' \"$GREETING\"; cat; test -z \"$HOME\""};
  options.env = {{"GREETING", "hello"}, {"HOME", std::nullopt}};
  options.stdin_spec = StdioSpec::Pipe();
  options.stdout_spec = StdioSpec::File(out);
  Process process(std::move(options));
  ASSERT_TRUE(process.started());
  const std::string body = "through the pipe";
  ASSERT_EQ(write(process.stdin_fd(), body.data(), body.size()), static_cast<ssize_t>(body.size()));
  process.CloseStdin();
  EXPECT_EQ(process.Wait(Duration(5000)), 0);
  EXPECT_EQ(ReadFile(out), "hello:through the pipe");
}

TEST(SupportProcess, ChildGetsDefaultSigpipe) {
  IgnoreSigpipe();
  // `yes` dies of SIGPIPE when `head` exits; with SIGPIPE ignored it would see EPIPE and exit 1.
  Process process({"sh", "-c", "yes | head -c 10 > /dev/null; exit 0"});
  ASSERT_TRUE(process.started());
  EXPECT_EQ(process.Wait(Duration(5000)), 0);
  TempDir dir;
  ProcessOptions options = ProcessOptions::Of({"sh", "-c", "yes; echo $? >&2"});
  options.stdout_spec = StdioSpec::Pipe();
  options.stderr_spec = StdioSpec::File(dir.Join("err"));
  Process yes(std::move(options));
  ASSERT_TRUE(yes.started());
  yes.CloseStdout();  // `yes` now writes to a pipe without a reader.
  EXPECT_EQ(yes.Wait(Duration(5000)), 0);
  EXPECT_EQ(ReadOutput(dir.Join("err")), std::to_string(128 + SIGPIPE));
}

TEST(SupportTempDir, RemovesItselfAndIsShort) {
  std::string path;
  {
    TempDir dir;
    path = dir.path();
    EXPECT_LT(path.size(), 20u);
    ASSERT_TRUE(WriteFile(dir.Join("a"), "x"));
    ASSERT_TRUE(MakeFifo(dir.Join("f")));
    EXPECT_TRUE(IsFifo(dir.Join("f")));
    EXPECT_NE(dir.Unique("p"), dir.Unique("p"));
  }
  EXPECT_FALSE(PathExists(path));
}

TEST(SupportSha256, KnownVectors) {
  EXPECT_EQ(Sha256HexOf(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256HexOf("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  TempDir dir;
  ASSERT_TRUE(WriteFile(dir.Join("abc"), "abc"));
  EXPECT_EQ(Sha256Hex(dir.Join("abc")), Sha256HexOf("abc"));
  EXPECT_EQ(Sha256Hex(dir.Join("missing")).rfind("error:", 0), 0u);
}

TEST(SupportRandom, DeterministicAndMatchesFile) {
  TempDir dir;
  const std::string sha = WriteRandomFile(dir.Join("r"), 3 * kMiB + 17, 42);
  EXPECT_EQ(sha, Sha256Hex(dir.Join("r")));
  EXPECT_EQ(sha, RandomStreamSha256(3 * kMiB + 17, 42));
  EXPECT_NE(sha, RandomStreamSha256(3 * kMiB + 17, 43));
  RandomStream a(7);
  RandomStream b(7);
  const std::string first = a.Next(1000);
  EXPECT_EQ(first + a.Next(5), b.Next(1005));
}

TEST(SupportWaitFor, TrueAndTimeout) {
  int calls = 0;
  EXPECT_TRUE(WaitFor([&] { return ++calls == 3; }, Duration(1000)));
  const auto start = Clock::now();
  EXPECT_FALSE(WaitFor([] { return false; }, Duration(50)));
  EXPECT_GE(Since(start), Duration(50));
}

TEST(SupportFifo, ReaderAndFeederAcrossAFifo) {
  TempDir dir;
  const std::string fifo = dir.Join("f");
  ASSERT_TRUE(MakeFifo(fifo));
  FifoReader reader(fifo);
  ASSERT_TRUE(reader.ok()) << reader.error();
  // Nobody has opened it for writing: the reader waits, it does not see EOF.
  const int wfd = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(wfd, 0);
  const uint64_t size = 2 * kMiB + 3;
  StreamFeeder feeder(wfd, size, 9);
  ASSERT_TRUE(reader.WaitDone(Duration(10000)));
  EXPECT_TRUE(feeder.done());
  EXPECT_EQ(feeder.error(), "");
  EXPECT_EQ(reader.bytes(), size);
  EXPECT_EQ(reader.Sha256Hex(), RandomStreamSha256(size, 9));
}

TEST(SupportFifo, PausedReaderBlocksFeeder) {
  TempDir dir;
  const std::string fifo = dir.Join("f");
  ASSERT_TRUE(MakeFifo(fifo));
  FifoReader reader(fifo, FifoReaderOptions::Paused());
  const int wfd = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(wfd, 0);
  StreamFeeder feeder(wfd, 4 * kMiB, 1);
  ASSERT_TRUE(
      WaitFor([&] { return Since(feeder.last_progress()) > Duration(100); }, Duration(5000)));
  EXPECT_LE(feeder.written(), 1 * kMiB);
  EXPECT_EQ(reader.DeliveredBytes(), feeder.written());
  reader.Resume();
  ASSERT_TRUE(reader.WaitDone(Duration(10000)));
  EXPECT_EQ(reader.Sha256Hex(), RandomStreamSha256(4 * kMiB, 1));
}

TEST(SupportFifo, ReaderCloseAfterBreaksWriter) {
  TempDir dir;
  const std::string fifo = dir.Join("f");
  ASSERT_TRUE(MakeFifo(fifo));
  FifoReader reader(fifo, FifoReaderOptions::CloseAfter(100000));
  const int wfd = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(wfd, 0);
  StreamFeeder feeder(wfd, 64 * kMiB, 1);
  ASSERT_TRUE(WaitFor([&] { return feeder.done(); }, Duration(10000)));
  EXPECT_NE(feeder.error().find("Broken pipe"), std::string::npos) << feeder.error();
  EXPECT_EQ(reader.bytes(), 100000u);
}

TEST(SupportUnix, EchoAndReplyAfterEof) {
  TempDir dir;
  for (auto mode : {UnixEchoServer::Mode::kEcho, UnixEchoServer::Mode::kReplyAfterEof}) {
    const std::string path = dir.Unique("echo", ".sock");
    UnixEchoServer server(path, mode);
    ASSERT_TRUE(server.ok()) << server.error();
    const std::string payload = RandomStream(5).Next(3 * kMiB);
    const ExchangeResult result = UnixExchange(path, payload, Duration(10000));
    EXPECT_TRUE(result.ok) << result.error;
    EXPECT_EQ(Sha256HexOf(result.received), Sha256HexOf(payload));
    EXPECT_TRUE(WaitFor([&] { return server.half_closes() == 1; }, Duration(1000)));
  }
}

TEST(SupportProcStats, RssAndOpenFiles) {
  const auto rss = ReadRssBytes(getpid());
  ASSERT_TRUE(rss.has_value());
  EXPECT_GT(*rss, 0u);
  TempDir dir;
  const std::string fifo = dir.Join("f");
  ASSERT_TRUE(MakeFifo(fifo));
  ProcessOptions options = ProcessOptions::Of({"cat"});
  options.stdin_spec = StdioSpec::File(fifo);
  Process cat(std::move(options));
  ASSERT_TRUE(cat.started());
  EXPECT_FALSE(ProcessHasFileOpen(cat.pid(), fifo));  // Still blocked in open().
  const int wfd = open(fifo.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(wfd, 0);
  EXPECT_TRUE(WaitFor([&] { return ProcessHasFileOpen(cat.pid(), fifo); }, Duration(5000)));
  close(wfd);
  EXPECT_EQ(cat.Wait(Duration(5000)), 0);
  EXPECT_EQ(CountTcpConnections(getpid(), 1), 0);
}

}  // namespace
}  // namespace pipegate::testing
