// `pipegate mount` (SPEC §6): a remote pipe presented as a local FIFO or Unix socket that
// unmodified programs open, again and again; and its clean-up on SIGTERM (exit 143).

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/data.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/pipe_io.h"
#include "support/process.h"
#include "support/timing.h"
#include "support/unix_socket.h"

namespace pipegate::testing {
namespace {

int Cycles() { return static_cast<int>(DataSize(20, 8)); }

// Makes the socket file a crashed run leaves behind: bound, then closed, nobody listening.
::testing::AssertionResult LeaveStaleSocket(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  const int bound = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  close(fd);
  if (bound != 0 || !IsSocket(path)) {
    return ::testing::AssertionFailure() << "cannot leave a socket file at " << path;
  }
  return ::testing::AssertionSuccess();
}

// Reads `fd` until EOF or the nominal deadline. Returns what arrived, and sets `eof`.
std::string ReadUntilEof(int fd, Duration timeout, bool* eof) {
  std::string got;
  *eof = false;
  const Clock::time_point end = Clock::now() + Scaled(timeout);
  while (Clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 20) != 1) continue;
    char buf[4096];
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) {
      *eof = true;
      break;
    }
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

TEST(Mount, FifoReadExportServesRepeatedLocalCatCycles) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string remote_fifo = gw.ExportPath("logs");
  const std::string local = dir.Join("logs.local");
  Bridge mount(dir, {"mount", gw.Address("logs"), local});
  ASSERT_TRUE(StartMount(mount, local, /*want_fifo=*/true));

  for (int i = 0; i < Cycles(); ++i) {
    const std::string line = "line " + std::to_string(i);
    // Gateway side: a writer that blocks in open() until the gateway opens the FIFO to read.
    Process writer({"sh", "-c", "printf '%s\\n' \"$0\" > \"$1\"", line, remote_fifo});
    // Bridge side: the unmodified `cat LOCAL`.
    const std::string out = dir.Unique("cat", ".out");
    ProcessOptions cat_options = ProcessOptions::Of({"cat", local});
    cat_options.stdout_spec = StdioSpec::File(out);
    Process cat(std::move(cat_options));
    ASSERT_EQ(cat.Wait(Duration(10000)), 0)
        << "cycle " << i << ": local cat did not end at EOF; " << mount.Describe();
    ASSERT_EQ(writer.Wait(Duration(10000)), 0)
        << "cycle " << i << ": the gateway-side writer found no reader; local cat read '"
        << ReadFile(out) << "'; " << mount.Describe();
    ASSERT_EQ(ReadFile(out), line + "\n") << "cycle " << i << "; " << mount.Describe();
    ASSERT_TRUE(mount.Running()) << mount.Describe();
  }
  EXPECT_TRUE(StopMount(mount, local));
}

TEST(Mount, FifoWriteExportServesRepeatedLocalEchoCycles) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoWrite("cmd")}));
  ASSERT_TRUE(gw.Start());
  FifoReaderOptions reader_options;
  reader_options.stop_at_eof = false;
  reader_options.keep_data = true;
  FifoReader reader(gw.ExportPath("cmd"), reader_options);
  ASSERT_TRUE(reader.ok()) << reader.error();
  const std::string local = dir.Join("cmd.local");
  Bridge mount(dir, {"mount", gw.Address("cmd"), local});
  ASSERT_TRUE(StartMount(mount, local, /*want_fifo=*/true));

  std::string expected;
  for (int i = 0; i < Cycles(); ++i) {
    const std::string line = "command " + std::to_string(i);
    Process echo({"sh", "-c", "printf '%s\\n' \"$0\" > \"$1\"", line, local});
    ASSERT_EQ(echo.Wait(Duration(10000)), 0) << "cycle " << i << ": " << mount.Describe();
    expected += line + "\n";
    ASSERT_TRUE(WaitFor([&] { return reader.data() == expected; }, Duration(10000)))
        << "cycle " << i << ": gateway-side reader has '" << reader.data() << "'";
    ASSERT_TRUE(mount.Running()) << mount.Describe();
  }
  EXPECT_TRUE(reader.saw_eof()) << "the local writers' closes never reached the gateway side";
  EXPECT_TRUE(StopMount(mount, local));
}

// How many lines of @p text contain @p needle.
size_t CountLines(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at)) {
    ++n;
    at = text.find('\n', at);  // Once per line.
    if (at == std::string::npos) break;
  }
  return n;
}

// What a local FIFO does when nobody reads it: a writer blocks in open(), O_NONBLOCK gets ENXIO.
// The mounted FIFO of a write export must do the same while no remote reader can take the bytes,
// and must not turn the wait into a stream of retries and log lines on either side.
TEST(Mount, FifoWriteExportWriterWaitsForARemoteReader) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoWrite("cmd")}));
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("cmd.local");
  Bridge mount(dir, {"mount", gw.Address("cmd"), local});
  ASSERT_TRUE(StartMount(mount, local, /*want_fifo=*/true));

  CommandResult nonblock =
      RunCommand({"/usr/bin/python3", "-c",
                  "import errno, os, sys\n"
                  "try:\n  os.open(sys.argv[1], os.O_WRONLY | os.O_NONBLOCK); print('opened')\n"
                  "except OSError as e:\n  print(errno.errorcode[e.errno])",
                  local},
                 dir.path(), Duration(10000));
  EXPECT_EQ(nonblock.out, "ENXIO\n") << nonblock.err;

  Process writer({"sh", "-c", "printf 'hello\\n' > \"$0\"", local});
  EXPECT_FALSE(WaitFor([&] { return !writer.Running(); }, Duration(500)))
      << "the local writer got through with no reader at the gateway; " << mount.Describe();

  FifoReaderOptions reader_options;
  reader_options.keep_data = true;
  FifoReader reader(gw.ExportPath("cmd"), reader_options);
  ASSERT_TRUE(reader.ok()) << reader.error();
  EXPECT_EQ(writer.Wait(Duration(10000)), 0) << mount.Describe();
  EXPECT_TRUE(WaitFor([&] { return reader.data() == "hello\n"; }, Duration(10000)))
      << "the gateway-side reader has '" << reader.data() << "'; " << mount.Describe();
  ASSERT_TRUE(mount.Running()) << mount.Describe();
  EXPECT_TRUE(StopMount(mount, local));
  // The wait happened at the gateway (one OPEN, held), not in a loop of refusals.
  EXPECT_EQ(CountLines(mount.Result().err, "no reader"), 0u) << mount.Describe();
  EXPECT_LE(CountLines(gw.Log(), "decision=no-reader"), 1u) << gw.Log();
}

// When the gateway stops waiting (max_open_wait) the mount asks again, with backoff, and says so
// once, with a count of the repeats, instead of once per attempt.
TEST(Mount, FifoWriteExportRetriesARefusalQuietly) {
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::FifoWrite("cmd")});
  options.extra_gateway_toml = "\n[limits]\nmax_open_wait = 1\n";
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("cmd.local");
  Bridge mount(dir, {"mount", gw.Address("cmd"), local});
  ASSERT_TRUE(StartMount(mount, local, /*want_fifo=*/true));
  ASSERT_TRUE(
      WaitFor([&] { return CountLines(gw.Log(), "decision=no-reader") >= 3; }, Duration(15000)))
      << gw.Log();
  const std::string err = mount.Result().err;
  EXPECT_EQ(CountLines(err, "no reader"), 1u) << err;
  EXPECT_EQ(CountLines(err, "(retrying with backoff)"), 1u) << err;

  FifoReaderOptions reader_options;
  reader_options.keep_data = true;
  FifoReader reader(gw.ExportPath("cmd"), reader_options);
  ASSERT_TRUE(reader.ok()) << reader.error();
  Process writer({"sh", "-c", "printf 'late\\n' > \"$0\"", local});
  EXPECT_EQ(writer.Wait(Duration(20000)), 0) << mount.Describe();
  EXPECT_TRUE(WaitFor([&] { return reader.data() == "late\n"; }, Duration(10000)))
      << "the gateway-side reader has '" << reader.data() << "'; " << mount.Describe();
  EXPECT_TRUE(StopMount(mount, local));
  EXPECT_NE(mount.Result().err.find("more times in all)"), std::string::npos) << mount.Describe();
}

// A local FIFO writer whose reader goes away gets EPIPE (SIGPIPE ignored, as python does).
TEST(Mount, FifoWriteExportWriterGetsEpipeWhenTheRemoteReaderLeaves) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoWrite("cmd")}));
  ASSERT_TRUE(gw.Start());
  const std::string out = dir.Join("head.out");
  ProcessOptions head_options = ProcessOptions::Of({"head", "-c", "10", gw.ExportPath("cmd")});
  head_options.stdout_spec = StdioSpec::File(out);
  Process head(std::move(head_options));
  const std::string local = dir.Join("cmd.local");
  Bridge mount(dir, {"mount", gw.Address("cmd"), local});
  ASSERT_TRUE(StartMount(mount, local, /*want_fifo=*/true));

  // Writes 4 KiB blocks until EPIPE (at most 64 MiB) and says how it ended.
  CommandResult writer = RunCommand({"/usr/bin/python3", "-c",
                                     "import os, sys\n"
                                     "fd = os.open(sys.argv[1], os.O_WRONLY)\n"
                                     "block = b'x' * 4096\n"
                                     "for i in range(16384):\n"
                                     "  try:\n    os.write(fd, block)\n"
                                     "  except BrokenPipeError:\n    print('EPIPE'); sys.exit(0)\n"
                                     "print('no EPIPE')",
                                     local},
                                    dir.path(), Duration(30000));
  EXPECT_EQ(writer.out, "EPIPE\n") << writer.err << "; " << mount.Describe();
  EXPECT_EQ(head.Wait(Duration(10000)), 0);
  EXPECT_EQ(ReadFile(out), "xxxxxxxxxx");
  EXPECT_TRUE(WaitFor([&] { return mount.Result().err.find("broken pipe") != std::string::npos; },
                      Duration(10000)))
      << mount.Describe();
  EXPECT_TRUE(mount.Running()) << mount.Describe();
  EXPECT_TRUE(StopMount(mount, local));
}

// A local FIFO reader waits for a writer; it does not get EOF because the remote pipe is busy.
TEST(Mount, FifoReadExportReaderWaitsWhileTheRemotePipeIsBusy) {
  TempDir dir;
  ExportSpec logs = ExportSpec::FifoRead("logs");
  logs.max_clients = 1;
  GatewayFixture gw(dir, WithExports({logs}));
  ASSERT_TRUE(gw.Start());
  // Holds the only instance.
  Bridge occupier(dir, {"cat", gw.Address("logs")});
  ASSERT_TRUE(
      WaitFor([&] { return CountLines(gw.Log(), "decision=granted") == 1; }, Duration(10000)))
      << occupier.Describe();
  const std::string local = dir.Join("logs.local");
  Bridge mount(dir, {"mount", gw.Address("logs"), local});
  ASSERT_TRUE(StartMount(mount, local, /*want_fifo=*/true));
  const std::string out = dir.Join("cat.out");
  ProcessOptions cat_options = ProcessOptions::Of({"cat", local});
  cat_options.stdout_spec = StdioSpec::File(out);
  Process cat(std::move(cat_options));
  // The mount finds the reader within its 20 ms poll and asks for the pipe; the gateway holds
  // that OPEN while the pipe is busy (the mount's wait), and the reader keeps waiting.
  EXPECT_FALSE(WaitFor([&] { return !cat.Running(); }, Duration(500)))
      << "the local reader ended while the remote pipe was busy; " << mount.Describe();

  occupier.process().Signal(SIGTERM);
  ASSERT_TRUE(occupier.Wait(Duration(10000)).has_value());
  Process writer({"sh", "-c", "printf 'at last\\n' > \"$0\"", gw.ExportPath("logs")});
  EXPECT_EQ(cat.Wait(Duration(20000)), 0) << mount.Describe();
  EXPECT_EQ(writer.Wait(Duration(10000)), 0);
  EXPECT_EQ(ReadFile(out), "at last\n") << mount.Describe();
  EXPECT_TRUE(StopMount(mount, local));
}

// A local connect() to a socket whose backlog is full waits; one to a socket nobody listens on
// is refused at once. Through a mounted socket, a connection to a busy export (max_clients) is
// held until an instance is free and then served; one to an export whose service is gone is
// closed at once, although the mount lets the gateway wait up to 60 s for a busy one.
TEST(Mount, SocketConnectionWaitsForABusyExportButNotForAMissingService) {
  TempDir dir;
  const std::string server_path = dir.Join("srv.sock");
  auto server = std::make_unique<UnixEchoServer>(server_path);
  ASSERT_TRUE(server->ok()) << server->error();
  ExportSpec svc = ExportSpec::Unix("svc", server_path);
  svc.max_clients = 1;
  GatewayFixture gw(dir, WithExports({svc}));
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("svc.sock");
  Bridge mount(dir, {"mount", gw.Address("svc"), local});
  ASSERT_TRUE(StartMount(mount, local, /*want_fifo=*/false));

  const int first = ConnectUnix(local, Duration(10000));
  ASSERT_GE(first, 0);
  ASSERT_TRUE(
      WaitFor([&] { return CountLines(gw.Log(), "decision=granted") == 1; }, Duration(10000)))
      << mount.Describe();
  const int second = ConnectUnix(local, Duration(10000));
  ASSERT_GE(second, 0);
  ASSERT_EQ(write(second, "second\n", 7), 7);
  ASSERT_EQ(shutdown(second, SHUT_WR), 0);
  bool eof = false;
  EXPECT_EQ(ReadUntilEof(second, Duration(1000), &eof), "");
  EXPECT_FALSE(eof) << "the connection to a busy export was closed instead of waiting";

  close(first);  // Frees the instance: the waiting connection is served.
  EXPECT_EQ(ReadUntilEof(second, Duration(10000), &eof), "second\n");
  EXPECT_TRUE(eof);
  close(second);

  server.reset();  // Nobody listens any more.
  const int third = ConnectUnix(local, Duration(10000));
  ASSERT_GE(third, 0);
  EXPECT_EQ(ReadUntilEof(third, Duration(10000), &eof), "");
  EXPECT_TRUE(eof) << "a connection to a service that is gone was not closed at once";
  close(third);
  EXPECT_TRUE(StopMount(mount, local));
}

TEST(Mount, FifoExportAsUnixSocket) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("logs.sock");
  Bridge mount(dir, {"mount", gw.Address("logs"), local, "--as", "unix"});
  ASSERT_TRUE(StartMount(mount, local, /*want_fifo=*/false));
  for (int i = 0; i < 3; ++i) {
    const std::string line = "entry " + std::to_string(i) + "\n";
    Process writer({"sh", "-c", "printf '%s' \"$0\" > \"$1\"", line, gw.ExportPath("logs")});
    const ExchangeResult result = UnixExchange(local, "", Duration(10000));
    EXPECT_TRUE(result.ok) << result.error;
    EXPECT_EQ(result.received, line);
    EXPECT_EQ(writer.Wait(Duration(5000)), 0);
  }
  EXPECT_TRUE(StopMount(mount, local));
}

TEST(Mount, ReplacesStaleSocketFile) {
  TempDir dir;
  UnixEchoServer server(dir.Join("srv.sock"));
  ASSERT_TRUE(server.ok());
  GatewayFixture gw(dir, WithExports({ExportSpec::Unix("echo", dir.Join("srv.sock"))}));
  ASSERT_TRUE(gw.Start());
  // A socket file left behind by a crashed run: bound, then closed, nobody listening.
  const std::string local = dir.Join("m.sock");
  ASSERT_TRUE(LeaveStaleSocket(local));
  Bridge mount(dir, {"mount", gw.Address("echo"), local});
  ASSERT_TRUE(mount.started());
  const ExchangeResult result = UnixExchange(local, "ping\n", Duration(10000));
  EXPECT_TRUE(result.ok) << result.error << "; " << mount.Describe();
  EXPECT_EQ(result.received, "ping\n");
  EXPECT_TRUE(StopMount(mount, local));
}

TEST(Mount, RefusesToReplaceARegularFile) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("precious.txt");
  ASSERT_TRUE(WriteFile(local, "do not delete\n"));
  Bridge mount(dir, {"mount", gw.Address("logs"), local});
  ASSERT_TRUE(mount.started());
  // A path the user named that cannot be used is a usage error (exit 1), and says why.
  EXPECT_EQ(mount.Wait(Duration(10000)), 1) << mount.Describe();
  EXPECT_NE(mount.Result().err.find(local), std::string::npos) << mount.Describe();
  EXPECT_NE(mount.Result().err.find("it exists and is not a FIFO"), std::string::npos)
      << mount.Describe();
  EXPECT_EQ(ReadFile(local), "do not delete\n");
}

// ---- A local user must not hijack the mounted path (security.md §7) ----

constexpr uid_t kNobody = 65534;

// The mount exits with status 1 and one error line naming the path and the cause.
::testing::AssertionResult RefusedWith(Bridge& mount, const std::string& address,
                                       const std::string& cause_regex) {
  if (!mount.Wait(Duration(10000)).has_value()) {
    return ::testing::AssertionFailure() << "the mount did not stop: " << mount.Describe();
  }
  return IsError(mount.Result(), 1, address, cause_regex);
}

TEST(MountSecurity, RefusesAFifoAnotherUserMade) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (chown to nobody)";
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  // Another user got there first, with a FIFO anyone may read, hoping to read what root mounts.
  const std::string local = dir.Join("logs.local");
  ASSERT_TRUE(MakeFifo(local, 0600));
  ASSERT_EQ(chmod(local.c_str(), 0666), 0);
  ASSERT_EQ(chown(local.c_str(), kNobody, kNobody), 0);
  Bridge mount(dir, {"mount", gw.Address("logs"), local});
  ASSERT_TRUE(mount.started());
  EXPECT_TRUE(RefusedWith(
      mount, gw.Address("logs"),
      "refusing to use FIFO '" + local + "': it is owned by uid 65534 \\(nobody\\), not by uid 0"));
  EXPECT_TRUE(IsFifo(local)) << "the mount removed a FIFO it did not make";
}

TEST(MountSecurity, RefusesOwnFifoOpenToOthers) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("logs.local");
  ASSERT_TRUE(MakeFifo(local, 0600));
  ASSERT_EQ(chmod(local.c_str(), 0622), 0);
  Bridge mount(dir, {"mount", gw.Address("logs"), local});
  ASSERT_TRUE(mount.started());
  EXPECT_TRUE(RefusedWith(mount, gw.Address("logs"),
                          "refusing to use FIFO '" + local +
                              "': its mode 0622 gives group or others more access than 0600"));
  // With a --mode that allows that much, the same FIFO is used (and left in place after).
  Bridge wider(dir, {"mount", gw.Address("logs"), local, "--mode", "0622"});
  ASSERT_TRUE(StartMount(wider, local, /*want_fifo=*/true));
  Process writer({"sh", "-c", "printf 'hello\\n' > \"$0\"", gw.ExportPath("logs")});
  const std::string out = dir.Join("cat.out");
  ProcessOptions cat_options = ProcessOptions::Of({"cat", local});
  cat_options.stdout_spec = StdioSpec::File(out);
  Process cat(std::move(cat_options));
  ASSERT_EQ(cat.Wait(Duration(10000)), 0) << wider.Describe();
  EXPECT_EQ(ReadFile(out), "hello\n");
  wider.process().Signal(SIGTERM);
  EXPECT_EQ(wider.Wait(Duration(10000)), 128 + SIGTERM) << wider.Describe();
  EXPECT_TRUE(IsFifo(local)) << "the mount removed a FIFO it did not make";
}

TEST(MountSecurity, RefusesAStaleSocketAnotherUserLeft) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (chown to nobody)";
  TempDir dir;
  UnixEchoServer server(dir.Join("srv.sock"));
  ASSERT_TRUE(server.ok());
  GatewayFixture gw(dir, WithExports({ExportSpec::Unix("echo", dir.Join("srv.sock"))}));
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("m.sock");
  ASSERT_TRUE(LeaveStaleSocket(local));
  ASSERT_EQ(chown(local.c_str(), kNobody, kNobody), 0);
  Bridge mount(dir, {"mount", gw.Address("echo"), local});
  ASSERT_TRUE(mount.started());
  EXPECT_TRUE(RefusedWith(mount, gw.Address("echo"),
                          "refusing to use socket '" + local + "': it is owned by uid 65534"));
  EXPECT_TRUE(IsSocket(local));
}

TEST(MountSecurity, ModeSetsThePermissionsOfWhatItCreates) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string fifo = dir.Join("logs.fifo.local");
  Bridge mount(dir, {"mount", gw.Address("logs"), fifo, "--mode", "0640"});
  ASSERT_TRUE(StartMount(mount, fifo, /*want_fifo=*/true));
  struct stat st {};
  ASSERT_EQ(lstat(fifo.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_TRUE(StopMount(mount, fifo));
  // A socket gets the default 0600 whatever the umask (bind() would give 0777 & ~umask).
  const std::string sock = dir.Join("logs.sock");
  Bridge as_unix(dir, {"mount", gw.Address("logs"), sock, "--as", "unix"});
  ASSERT_TRUE(StartMount(as_unix, sock, /*want_fifo=*/false));
  ASSERT_EQ(lstat(sock.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_TRUE(StopMount(as_unix, sock));
  const ClientResult bad = RunPipegate(dir, {"mount", gw.Address("logs"), fifo, "--mode", "0066"});
  EXPECT_EQ(bad.status, 1) << bad.Describe();
  EXPECT_NE(bad.err.find("--mode must be an octal mode"), std::string::npos) << bad.Describe();
}

// The attack from the issue: after the mount started (and served a reader), another user swaps
// the FIFO for a symlink to a file, hoping the next remote data overwrites it. The mount must
// stop with an error instead of opening the symlink.
TEST(MountSecurity, StopsWhenTheFifoIsSwappedForASymlink) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("logs.local");
  Bridge mount(dir, {"mount", gw.Address("logs"), local});
  ASSERT_TRUE(StartMount(mount, local, /*want_fifo=*/true));
  {
    Process writer({"sh", "-c", "printf 'first\\n' > \"$0\"", gw.ExportPath("logs")});
    const std::string out = dir.Join("cat.out");
    ProcessOptions cat_options = ProcessOptions::Of({"cat", local});
    cat_options.stdout_spec = StdioSpec::File(out);
    Process cat(std::move(cat_options));
    ASSERT_EQ(cat.Wait(Duration(10000)), 0) << mount.Describe();
    ASSERT_EQ(writer.Wait(Duration(10000)), 0);
    ASSERT_EQ(ReadFile(out), "first\n");
  }
  const std::string precious = dir.Join("precious");
  ASSERT_TRUE(WriteFile(precious, "root's file\n"));
  ASSERT_EQ(rename(local.c_str(), dir.Join("moved").c_str()), 0);
  ASSERT_EQ(symlink(precious.c_str(), local.c_str()), 0);
  // Remote data waiting to be delivered: a writer on the gateway side.
  Process writer({"sh", "-c", "printf 'remote data\\n' > \"$0\"", gw.ExportPath("logs")});
  EXPECT_TRUE(RefusedWith(mount, gw.Address("logs"),
                          local + " was replaced by a symbolic link \\(device/inode changed\\)"));
  EXPECT_EQ(ReadFile(precious), "root's file\n");
  struct stat st {};
  ASSERT_EQ(lstat(local.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode)) << "the mount removed a symlink it did not make";
}

// The same for a write export, whose mount reopens the FIFO's read end for every stream.
TEST(MountSecurity, WriteMountStopsWhenTheFifoIsReplaced) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoWrite("cmd")}));
  ASSERT_TRUE(gw.Start());
  FifoReaderOptions reader_options;
  reader_options.stop_at_eof = false;
  reader_options.keep_data = true;
  FifoReader reader(gw.ExportPath("cmd"), reader_options);
  ASSERT_TRUE(reader.ok()) << reader.error();
  const std::string local = dir.Join("cmd.local");
  Bridge mount(dir, {"mount", gw.Address("cmd"), local});
  ASSERT_TRUE(StartMount(mount, local, /*want_fifo=*/true));
  // Another FIFO under the same name: the next local writer would talk to someone else's pipe.
  // The old FIFO keeps a second name, and the new one replaces the path in one rename(), so
  // the path never goes missing (which the mount would report as "gone" instead).
  ASSERT_EQ(link(local.c_str(), dir.Join("moved").c_str()), 0);
  ASSERT_TRUE(MakeFifo(dir.Join("other"), 0600));
  ASSERT_EQ(rename(dir.Join("other").c_str(), local.c_str()), 0);
  // The mount reopens the path when the gateway accepts its next stream. If it already held the
  // old FIFO's read end, this writer's EOF ends that stream and brings the next one; if not, the
  // writer blocks in open() and is killed at the end of the test.
  Process echo({"sh", "-c", "printf 'one\\n' > \"$0\"", dir.Join("moved")});
  EXPECT_TRUE(RefusedWith(mount, gw.Address("cmd"),
                          local + " was replaced by another file \\(device/inode changed\\)"));
  EXPECT_TRUE(IsFifo(local)) << "the mount removed a FIFO it did not make";
}

}  // namespace
}  // namespace pipegate::testing
