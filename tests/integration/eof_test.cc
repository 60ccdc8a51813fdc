// End of file travels (SPEC §3 "EOF travels"): through a fifo read export to `pipegate cat`,
// and as a half-close through a unix export with `pipegate connect`.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/data.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/proc_stats.h"
#include "support/process.h"
#include "support/timing.h"
#include "support/unix_socket.h"

namespace pipegate::testing {
namespace {

bool WriteString(int fd, const std::string& text) {
  return write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
}

// Like a local `cat FIFO`: no EOF before the first writer, none while one writer remains, and EOF
// (exit 0) once the last one closes.
TEST(Eof, CatWaitsForFirstWriterAndExitsZeroWhenLastWriterCloses) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string fifo = gw.ExportPath("logs");
  const std::string out = dir.Join("out");
  Bridge cat(dir, {"cat", gw.Address("logs")}, StdioSpec::Null(), out);
  ASSERT_TRUE(cat.started());
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !cat.Running(); },
                      Duration(10000)))
      << cat.Describe();
  ASSERT_TRUE(cat.Running()) << "cat saw EOF before any local writer opened the FIFO: "
                             << cat.Describe();

  // First writer: the test itself, kept open.
  const int held = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(held, 0) << "the FIFO has no reader although the remote reader is attached";
  ASSERT_TRUE(WriteString(held, "first\n"));
  // Second writer: a process that writes and exits.
  Process second({"sh", "-c", "echo second > \"$0\"", fifo});
  EXPECT_EQ(second.Wait(Duration(10000)), 0);
  EXPECT_TRUE(WaitFor([&] { return ReadFile(out) == "first\nsecond\n"; }, Duration(10000)))
      << "cat output so far: '" << ReadFile(out) << "'";
  EXPECT_TRUE(cat.Running()) << "cat ended while a local writer still had the FIFO open: "
                             << cat.Describe();

  close(held);
  EXPECT_EQ(cat.Wait(Duration(10000)), 0) << cat.Describe();
  EXPECT_EQ(ReadFile(out), "first\nsecond\n");
}

// Like `yes > FIFO` beside a local `cat FIFO | head -c 100`: once head has its bytes and exits,
// the reader goes and the writer dies of SIGPIPE. The bridge's connection must end in order
// (close_notify, FIN), not with the reset that closing on unread input causes: a reset looks
// like a network loss, and the gateway would keep the stream (and its FIFO) for a resume.
TEST(Eof, CatIntoHeadGivesTheRemoteWriterSigpipe) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string fifo = gw.ExportPath("logs");
  const std::string out = dir.Join("out");
  ProcessOptions pipeline = PipegateOptions(dir, {"cat", gw.Address("logs")});
  std::vector<std::string> argv = {"sh", "-c", "\"$@\" | head -c 100 > \"$OUT\"", "sh"};
  argv.insert(argv.end(), pipeline.argv.begin(), pipeline.argv.end());
  pipeline.argv = argv;
  pipeline.env.emplace_back("OUT", out);
  Process cat_head(pipeline);
  ASSERT_TRUE(cat_head.started());
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !cat_head.Running(); },
                      Duration(10000)));

  Process yes({"sh", "-c", "exec yes > \"$0\"", fifo});
  ASSERT_TRUE(yes.started());
  EXPECT_EQ(cat_head.Wait(Duration(15000)), 0);
  std::string expected;
  for (int i = 0; i < 50; ++i) expected += "y\n";
  EXPECT_EQ(ReadFile(out), expected);
  // Well inside resume_ttl (300 s): only an orderly end releases the FIFO this soon.
  EXPECT_EQ(yes.Wait(Duration(15000)), 128 + SIGPIPE)
      << "the writer did not get SIGPIPE; gateway log:\n"
      << gw.Log();
}

// A service that answers and closes while the client's stdin stays open (a terminal, or a
// pipe nobody closes): `connect` ends its side 0.5 s after the service's, as socat does, and
// exits 0 with the whole answer, instead of waiting for a stdin EOF that never comes.
TEST(Eof, ConnectEndsSoonAfterTheServiceClosesFirst) {
  TempDir dir;
  const std::string server_path = dir.Join("srv.sock");
  const int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  ASSERT_LT(server_path.size(), sizeof sun.sun_path);
  std::memcpy(sun.sun_path, server_path.c_str(), server_path.size());
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);
  ASSERT_EQ(listen(listener, 4), 0);
  // Answers one connection and closes it; stops by itself within 30 s, or when told.
  std::atomic<bool> stop{false};
  std::thread server([listener, &stop] {
    for (int i = 0; i < 300 && !stop.load(); ++i) {
      pollfd p{listener, POLLIN, 0};
      if (poll(&p, 1, 100) != 1) continue;
      const int c = accept(listener, nullptr, nullptr);
      if (c < 0) return;
      const std::string greeting = "hello, and goodbye\n";
      (void)!write(c, greeting.data(), greeting.size());
      close(c);
      return;
    }
  });
  struct Joiner {
    std::atomic<bool>& stop;
    std::thread& thread;
    int fd;
    ~Joiner() {
      stop = true;
      thread.join();
      close(fd);
    }
  } joiner{stop, server, listener};
  GatewayFixture gw(dir, WithExports({ExportSpec::Unix("svc", server_path)}));
  ASSERT_TRUE(gw.Start());

  const std::string out = dir.Join("out");
  Bridge connect(dir, {"connect", gw.Address("svc")}, StdioSpec::Pipe(), out);
  ASSERT_TRUE(connect.started());
  EXPECT_EQ(connect.Wait(Duration(10000)), 0)
      << "connect kept waiting for stdin after the service closed: " << connect.Describe();
  EXPECT_EQ(ReadFile(out), "hello, and goodbye\n");
}

// stdin EOF becomes a half-close at the unix server, whose reply (sent only after that EOF) still
// comes back before `pipegate connect` exits 0.
TEST(Eof, ConnectHalfClosesAndStillReceivesTheReply) {
  TempDir dir;
  const std::string server_path = dir.Join("srv.sock");
  UnixEchoServer server(server_path, UnixEchoServer::Mode::kReplyAfterEof);
  ASSERT_TRUE(server.ok()) << server.error();
  GatewayFixture gw(dir, WithExports({ExportSpec::Unix("svc", server_path)}));
  ASSERT_TRUE(gw.Start());

  const uint64_t size = DataSize(4 * kMiB, 1 * kMiB);
  const std::string input = dir.Join("in");
  const std::string sha = WriteRandomFile(input, size, 4);
  const std::string out = dir.Join("out");
  Bridge connect(dir, {"connect", gw.Address("svc")}, StdioSpec::File(input), out);
  ASSERT_TRUE(connect.started());
  EXPECT_EQ(connect.Wait(Duration(30000)), 0) << connect.Describe();
  EXPECT_EQ(server.half_closes(), 1) << "the server never saw EOF from the client";
  EXPECT_EQ(FileSize(out).value_or(0), size);
  EXPECT_EQ(Sha256Hex(out), sha);
}

// An empty stdin still opens the stream, half-closes at once, and gets the (empty) reply.
TEST(Eof, ConnectWithEmptyStdinExitsZero) {
  TempDir dir;
  const std::string server_path = dir.Join("srv.sock");
  UnixEchoServer server(server_path, UnixEchoServer::Mode::kReplyAfterEof);
  ASSERT_TRUE(server.ok()) << server.error();
  GatewayFixture gw(dir, WithExports({ExportSpec::Unix("svc", server_path)}));
  ASSERT_TRUE(gw.Start());
  const ClientResult result = RunPipegate(dir, {"connect", gw.Address("svc")});
  EXPECT_EQ(result.status, 0) << result.Describe();
  EXPECT_EQ(result.out, "");
  EXPECT_TRUE(WaitFor([&] { return server.half_closes() == 1; }, Duration(5000)));
}

// A remote writer's close reaches the local reader as EOF.
TEST(Eof, WriteCloseReachesLocalReaderAsEof) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoWrite("cmd")}));
  ASSERT_TRUE(gw.Start());
  const std::string out = dir.Join("out");
  ProcessOptions reader_options = ProcessOptions::Of({"cat", gw.ExportPath("cmd")});
  reader_options.stdout_spec = StdioSpec::File(out);
  Process reader(std::move(reader_options));
  ASSERT_TRUE(reader.started());
  const std::string input = dir.Join("in");
  ASSERT_TRUE(WriteFile(input, "reload\n"));
  // The reader is (or soon will be) blocked in open(); --wait covers the moment before that.
  const ClientResult result =
      RunPipegate(dir, {"write", "--wait", "10", gw.Address("cmd")}, ClientOptions::Stdin(input));
  EXPECT_EQ(result.status, 0) << result.Describe();
  EXPECT_EQ(reader.Wait(Duration(10000)), 0) << "local cat saw no EOF";
  EXPECT_EQ(ReadFile(out), "reload\n");
}

}  // namespace
}  // namespace pipegate::testing
