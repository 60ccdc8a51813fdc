// `pipegate mount` (SPEC §6): a remote pipe presented as a local FIFO or Unix socket that
// unmodified programs open, again and again; and its clean-up on SIGTERM.

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
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

// Starts `pipegate mount ADDRESS LOCAL [extra...]` and waits for LOCAL to appear.
::testing::AssertionResult StartMount(Bridge& mount, const std::string& local, bool want_fifo) {
  if (!mount.started()) {
    return ::testing::AssertionFailure() << mount.Describe();
  }
  const bool up =
      WaitFor([&] { return (want_fifo ? IsFifo(local) : IsSocket(local)) || !mount.Running(); },
              Duration(10000));
  if (!up || !mount.Running()) {
    return ::testing::AssertionFailure()
           << local << " did not appear as a " << (want_fifo ? "FIFO" : "socket") << ": "
           << mount.Describe();
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult StopMount(Bridge& mount, const std::string& local) {
  mount.process().Signal(SIGTERM);
  const std::optional<int> status = mount.Wait(Duration(10000));
  if (status != 0) {
    return ::testing::AssertionFailure() << "after SIGTERM: " << mount.Describe();
  }
  if (PathExists(local)) {
    return ::testing::AssertionFailure() << "mount left " << local << " behind";
  }
  return ::testing::AssertionSuccess();
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
  {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, local.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    close(fd);
    ASSERT_TRUE(IsSocket(local));
  }
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
  const std::optional<int> status = mount.Wait(Duration(10000));
  EXPECT_TRUE(status.has_value() && *status != 0) << mount.Describe();
  EXPECT_EQ(ReadFile(local), "do not delete\n");
}

}  // namespace
}  // namespace pipegate::testing
