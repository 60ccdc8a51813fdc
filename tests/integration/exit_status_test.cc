// SPEC §7's exit statuses where they are easy to get wrong: a stop by signal (128+N), usage
// errors (one line, status 1), an export whose file does not exist yet (no reader, 5, and
// --wait waits for it), a mount the identity may not use (the gateway's own refusal), and
// client certificate, key or CA files that cannot be loaded (TLS failed, 2).

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "pipegate/config.h"
#include "pipegate/frame.h"

#include "support/bridge_client.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/gateway_probe.h"
#include "support/pipe_io.h"
#include "support/pki.h"
#include "support/proc_stats.h"
#include "support/process.h"
#include "support/raw_client.h"
#include "support/timing.h"
#include "support/unix_socket.h"

namespace pipegate::testing {
namespace {

// @return @p text as a regular expression that matches exactly it.
std::string Literal(const std::string& text) {
  return std::regex_replace(text, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)");
}

const char* SignalName(int sig) { return sig == SIGINT ? "SIGINT" : "SIGTERM"; }

// Sends @p sig to a running bridge and checks that it stopped in order, by itself, with
// 128+N and the one-line `pipegate: ADDRESS: ... SIGNAME` message.
::testing::AssertionResult StopsWith(Bridge& bridge, int sig, const std::string& address) {
  if (!bridge.Running()) {
    return ::testing::AssertionFailure() << "not running before the signal: " << bridge.Describe();
  }
  bridge.process().Signal(sig);
  if (!bridge.Wait(Duration(10000)).has_value()) {
    return ::testing::AssertionFailure() << "still running after the signal: " << bridge.Describe();
  }
  if (bridge.process().signaled()) {
    return ::testing::AssertionFailure()
           << "killed by the signal instead of exiting with 128+N: " << bridge.Describe();
  }
  return IsError(bridge.Result(), 128 + sig, address, SignalName(sig));
}

// --- 128+N: ended by a signal -------------------------------------------------------------------

TEST(SignalExit, CatStopsWithSignalStatus) {
  for (const int sig : {SIGINT, SIGTERM}) {
    SCOPED_TRACE(SignalName(sig));
    TempDir dir;
    GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
    ASSERT_TRUE(gw.Start());
    Bridge cat(dir, {"cat", gw.Address("logs")});
    ASSERT_TRUE(WaitFor(
        [&] { return ProcessHasFileOpen(gw.pid(), gw.ExportPath("logs")) || !cat.Running(); },
        Duration(10000)))
        << cat.Describe();
    EXPECT_TRUE(StopsWith(cat, sig, gw.Address("logs")));
    // The stream was closed with the connection: the gateway let go of the FIFO.
    EXPECT_TRUE(WaitFor([&] { return !ProcessHasFileOpen(gw.pid(), gw.ExportPath("logs")); },
                        Duration(10000)));
  }
}

// What a `write` had delivered stays delivered; a record it had not finished (here the unended
// line of --lines) is never written, and the local reader sees EOF.
TEST(SignalExit, WriteKeepsWhatWasDeliveredAndStopsWithSignalStatus) {
  for (const int sig : {SIGINT, SIGTERM}) {
    SCOPED_TRACE(SignalName(sig));
    TempDir dir;
    GatewayFixture gw(dir, WithExports({ExportSpec::FifoWrite("cmd")}));
    ASSERT_TRUE(gw.Start());
    FifoReaderOptions reader_options;
    reader_options.keep_data = true;
    FifoReader reader(gw.ExportPath("cmd"), reader_options);
    ASSERT_TRUE(reader.ok()) << reader.error();
    Bridge write(dir, {"write", "--lines", gw.Address("cmd")}, StdioSpec::Pipe());
    ASSERT_TRUE(write.started());
    const std::string sent = "delivered\nhalf a li";
    ASSERT_EQ(::write(write.process().stdin_fd(), sent.data(), sent.size()),
              static_cast<ssize_t>(sent.size()));
    ASSERT_TRUE(WaitFor([&] { return reader.data() == "delivered\n"; }, Duration(10000)))
        << "reader has '" << reader.data() << "'; " << write.Describe();
    EXPECT_TRUE(StopsWith(write, sig, gw.Address("cmd")));
    EXPECT_TRUE(reader.WaitDone(Duration(10000))) << "the local reader never saw EOF";
    EXPECT_TRUE(reader.saw_eof());
    EXPECT_EQ(reader.data(), "delivered\n");
  }
}

TEST(SignalExit, ConnectStopsWithSignalStatus) {
  for (const int sig : {SIGINT, SIGTERM}) {
    SCOPED_TRACE(SignalName(sig));
    TempDir dir;
    const std::string server_path = dir.Join("srv.sock");
    UnixEchoServer server(server_path);
    ASSERT_TRUE(server.ok()) << server.error();
    GatewayFixture gw(dir, WithExports({ExportSpec::Unix("svc", server_path)}));
    ASSERT_TRUE(gw.Start());
    Bridge connect(dir, {"connect", gw.Address("svc")}, StdioSpec::Pipe());
    ASSERT_TRUE(
        WaitFor([&] { return server.accepted() == 1 || !connect.Running(); }, Duration(10000)))
        << connect.Describe();
    EXPECT_TRUE(StopsWith(connect, sig, gw.Address("svc")));
  }
}

TEST(SignalExit, MountStopsWithSignalStatusAndRemovesItsPath) {
  for (const int sig : {SIGINT, SIGTERM}) {
    SCOPED_TRACE(SignalName(sig));
    TempDir dir;
    GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
    ASSERT_TRUE(gw.Start());
    const std::string local = dir.Join("logs.local");
    Bridge mount(dir, {"mount", gw.Address("logs"), local});
    ASSERT_TRUE(WaitFor([&] { return IsFifo(local) || !mount.Running(); }, Duration(10000)))
        << mount.Describe();
    EXPECT_TRUE(StopsWith(mount, sig, gw.Address("logs")));
    EXPECT_FALSE(PathExists(local)) << "mount left " << local << " behind";
  }
}

// --- 1: usage errors are one line ---------------------------------------------------------------

// Checks a usage error: status 1 and exactly one stderr line, `PROGRAM: CAUSE`.
::testing::AssertionResult IsUsageError(const CommandResult& result, const std::string& program,
                                        const std::string& cause_regex) {
  const std::vector<std::string> lines = SplitLines(result.err);
  const std::string describe =
      DescribeStatus(result.status) + "\n  stderr: " + result.err + "\n  stdout: " + result.out;
  if (result.status != 1) {
    return ::testing::AssertionFailure() << "expected exit 1, got " << describe;
  }
  if (lines.size() != 1) {
    return ::testing::AssertionFailure()
           << "expected one stderr line, got " << lines.size() << ": " << describe;
  }
  const std::string prefix = program + ": ";
  if (lines[0].rfind(prefix, 0) != 0) {
    return ::testing::AssertionFailure()
           << "the line does not start with '" << prefix << "': " << describe;
  }
  if (!std::regex_search(lines[0], std::regex(cause_regex, std::regex::icase))) {
    return ::testing::AssertionFailure()
           << "the line does not say /" << cause_regex << "/: " << describe;
  }
  return ::testing::AssertionSuccess();
}

CommandResult RunBinary(TempDir& dir, const std::string& binary, std::vector<std::string> args) {
  args.insert(args.begin(), BinPath(binary));
  return RunCommand(args, dir.path(), Duration(15000));
}

struct UsageCase {
  std::vector<std::string> args;
  std::string cause;  // What the one line must say.
};

TEST(UsageExit, BridgeUsageErrorsAreOneLineWithStatusOne) {
  TempDir dir;
  const std::vector<UsageCase> cases = {
      {{}, "a command is required \\(expected ls, stat, cat, write, connect or mount\\)"},
      {{"frobnicate", "pipe://127.0.0.1:1/x"},
       "^pipegate: unknown command 'frobnicate' \\(expected ls, stat, cat, write, connect or "
       "mount\\)$"},
      {{"-v", "frobnicate"}, "unknown command 'frobnicate'"},
      {{"cat"}, "address"},
      {{"cat", "pipe://127.0.0.1:1/x", "extra-argument"}, "extra-argument"},
      {{"cat", "--no-such-option", "pipe://127.0.0.1:1/x"}, "--no-such-option"},
      {{"mount", "pipe://127.0.0.1:1/x"}, "local_path"},
      {{"cat", "--wait", "soon", "pipe://127.0.0.1:1/x"}, "--wait"},
      {{"--bogus"}, "--bogus"},
  };
  for (const UsageCase& c : cases) {
    const CommandResult result = RunBinary(dir, "pipegate", c.args);
    std::string args;
    for (const std::string& a : c.args) args += " " + a;
    EXPECT_TRUE(IsUsageError(result, "pipegate", c.cause)) << "pipegate" << args;
  }
}

TEST(UsageExit, BridgeHelpAndVersionExitZero) {
  TempDir dir;
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"--help"}, {"cat", "--help"}, {"--version"}}) {
    const CommandResult result = RunBinary(dir, "pipegate", args);
    EXPECT_EQ(result.status, 0) << args[0] << ": " << result.err;
    EXPECT_NE(result.out, "") << args[0];
  }
  const CommandResult help = RunBinary(dir, "pipegate", {"--help"});
  for (const char* command : {"ls", "cat", "write", "connect", "mount"}) {
    EXPECT_NE(help.out.find(command), std::string::npos) << help.out;
  }
}

TEST(UsageExit, GatewayUsageErrorsAreOneLineWithStatusOne) {
  TempDir dir;
  const std::vector<UsageCase> cases = {
      {{"--bogus"}, "--bogus"},
      {{"extra-argument"}, "extra-argument"},
      {{"--config"}, "--config"},
      {{}, "--config FILE is required"},
  };
  for (const UsageCase& c : cases) {
    const CommandResult result = RunBinary(dir, "pipegated", c.args);
    std::string args;
    for (const std::string& a : c.args) args += " " + a;
    EXPECT_TRUE(IsUsageError(result, "pipegated", c.cause)) << "pipegated" << args;
  }
  const CommandResult help = RunBinary(dir, "pipegated", {"--help"});
  EXPECT_EQ(help.status, 0) << help.err;
  EXPECT_NE(help.out.find("--check-config"), std::string::npos) << help.out;
}

// --- 5: an export whose file does not exist (yet) has no reader ---------------------------------

TEST(MissingExportFile, FifoIsNoReaderNotNoSuchPipe) {
  TempDir dir;
  ExportSpec write_spec = ExportSpec::FifoWrite("cmd");
  write_spec.path = dir.Join("absent-cmd.fifo");
  write_spec.create = false;
  ExportSpec read_spec = ExportSpec::FifoRead("logs");
  read_spec.path = dir.Join("absent-logs.fifo");
  read_spec.create = false;
  GatewayFixture gw(dir, WithExports({write_spec, read_spec}));
  ASSERT_TRUE(gw.Start());
  const std::string input = dir.Join("in");
  ASSERT_TRUE(WriteFile(input, "hello\n"));
  const ClientResult write =
      RunPipegate(dir, {"write", gw.Address("cmd")}, ClientOptions::Stdin(input));
  EXPECT_TRUE(IsError(write, 5, gw.Address("cmd"), "^no reader: .*does not exist"));
  const ClientResult cat = RunPipegate(dir, {"cat", gw.Address("logs")});
  EXPECT_TRUE(IsError(cat, 5, gw.Address("logs"), "^no reader: .*does not exist"));
  std::map<std::string, uint64_t> counters = ReadCounters(gw);
  EXPECT_EQ(counters["no_reader"], 2u);
  EXPECT_EQ(counters["unavailable"], 0u);
  EXPECT_EQ(counters["not_found"], 0u);
}

TEST(MissingExportFile, SocketIsNoReaderNotNoSuchPipe) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::Unix("svc", dir.Join("absent.sock"))}));
  ASSERT_TRUE(gw.Start());
  const ClientResult result = RunPipegate(dir, {"connect", gw.Address("svc")});
  EXPECT_TRUE(IsError(result, 5, gw.Address("svc"), "^no reader: .*does not exist"));
  std::map<std::string, uint64_t> counters = ReadCounters(gw);
  EXPECT_EQ(counters["no_reader"], 1u);
  EXPECT_EQ(counters["unavailable"], 0u);
}

// Sends OPEN(@p id, wait) for @p name and then a PING: the gateway handles frames in order, so
// its PING answer proves it has tried the open, and no answer to the OPEN before it means the
// open is waiting (not refused at once).
::testing::AssertionResult OpenIsWaiting(RawClient& client, uint32_t id, const std::string& name,
                                         Access access) {
  if (!client.SendOpen(id, name, static_cast<uint8_t>(access), 30000) ||
      !client.SendRaw(FrameType::kPing, 0, 0, 8, std::string(8, '\x07'))) {
    return ::testing::AssertionFailure() << "send failed: " << client.close_reason();
  }
  for (;;) {
    std::optional<RawFrame> frame = client.NextFrame(Duration(10000));
    if (!frame) return ::testing::AssertionFailure() << "no PING answer";
    if (frame->header.type == FrameType::kPing) return ::testing::AssertionSuccess();
    if (frame->header.stream_id == id) {
      std::string why = frame->header.type == FrameType::kReset ? DecodeResetReason(*frame).second
                                                                : std::string("accepted");
      return ::testing::AssertionFailure() << "the open was answered at once: " << why;
    }
  }
}

TEST(MissingExportFile, WaitWaitsForTheFifoToAppear) {
  TempDir dir;
  ExportSpec spec = ExportSpec::FifoWrite("cmd");
  spec.path = dir.Join("later.fifo");
  spec.create = false;
  GatewayFixture gw(dir, WithExports({spec}));
  ASSERT_TRUE(gw.Start());
  std::string error;
  std::unique_ptr<RawClient> client = RawClient::Connect(gw.port(), Alice(), &error);
  ASSERT_NE(client, nullptr) << error;
  ASSERT_TRUE(OpenIsWaiting(*client, 1, "cmd", Access::kWrite));

  ASSERT_TRUE(MakeFifo(spec.path));
  FifoReader reader(spec.path);
  ASSERT_TRUE(reader.ok()) << reader.error();
  std::optional<RawFrame> ok = client->WaitFor(FrameType::kOpenOk, 1, Duration(10000));
  EXPECT_TRUE(ok.has_value()) << "no OPEN_OK once the FIFO appeared: " << gw.Log();
}

TEST(MissingExportFile, WaitWaitsForTheSocketToAppear) {
  TempDir dir;
  const std::string server_path = dir.Join("later.sock");
  GatewayFixture gw(dir, WithExports({ExportSpec::Unix("svc", server_path)}));
  ASSERT_TRUE(gw.Start());
  std::string error;
  std::unique_ptr<RawClient> client = RawClient::Connect(gw.port(), Alice(), &error);
  ASSERT_NE(client, nullptr) << error;
  ASSERT_TRUE(OpenIsWaiting(*client, 1, "svc", Access::kDuplex));

  UnixEchoServer server(server_path);
  ASSERT_TRUE(server.ok()) << server.error();
  std::optional<RawFrame> ok = client->WaitFor(FrameType::kOpenOk, 1, Duration(10000));
  EXPECT_TRUE(ok.has_value()) << "no OPEN_OK once the socket appeared: " << gw.Log();
  EXPECT_TRUE(WaitFor([&] { return server.accepted() == 1; }, Duration(10000)));
}

// The bridge's --wait end to end: `write --wait` to a FIFO that appears later delivers.
TEST(MissingExportFile, WriteWaitDeliversOnceTheFifoAppears) {
  TempDir dir;
  ExportSpec spec = ExportSpec::FifoWrite("cmd");
  spec.path = dir.Join("later.fifo");
  spec.create = false;
  GatewayFixture gw(dir, WithExports({spec}));
  ASSERT_TRUE(gw.Start());
  const std::string input = dir.Join("in");
  ASSERT_TRUE(WriteFile(input, "hello\n"));
  Bridge write(dir,
               {"write", "--wait", std::to_string(Scaled(Duration(15000)).count() / 1000),
                gw.Address("cmd")},
               StdioSpec::File(input));
  ASSERT_TRUE(write.started());
  ASSERT_TRUE(
      WaitFor([&] { return CountTcpConnections(write.pid(), gw.port()) == 1 || !write.Running(); },
              Duration(10000)));
  ASSERT_TRUE(write.Running()) << "write did not wait for the FIFO: " << write.Describe();
  ASSERT_TRUE(MakeFifo(spec.path));
  const std::string out = dir.Join("out");
  ProcessOptions reader_options = ProcessOptions::Of({"cat", spec.path});
  reader_options.stdout_spec = StdioSpec::File(out);
  Process reader(std::move(reader_options));
  EXPECT_EQ(write.Wait(Duration(15000)), 0) << write.Describe();
  EXPECT_EQ(reader.Wait(Duration(10000)), 0);
  EXPECT_EQ(ReadFile(out), "hello\n");
}

// A path that exists but is not a FIFO is still "not available" (4): waiting cannot fix it.
TEST(MissingExportFile, WrongFileTypeStaysNoSuchPipe) {
  TempDir dir;
  ExportSpec spec = ExportSpec::FifoRead("logs");
  spec.path = dir.Join("regular.file");
  spec.create = false;
  ASSERT_TRUE(WriteFile(spec.path, "not a fifo\n"));
  GatewayFixture gw(dir, WithExports({spec}));
  ASSERT_TRUE(gw.Start());
  const Duration wait = Scaled(Duration(60000));
  const ClientResult result =
      RunPipegate(dir, {"cat", "--wait", std::to_string(wait.count() / 1000), gw.Address("logs")});
  EXPECT_TRUE(IsError(result, 4, gw.Address("logs"), "is not a FIFO"));
  EXPECT_LT(result.elapsed, wait / 2) << "waited for something waiting cannot fix";
  std::map<std::string, uint64_t> counters = ReadCounters(gw);
  EXPECT_EQ(counters["unavailable"], 1u);
  EXPECT_EQ(counters["no_reader"], 0u);
}

// --- 3 and 4: mount of an export one may not use ------------------------------------------------

TEST(MountRefusal, DeniedExportExitsThreeWithTheGatewaysMessage) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("logs.local");
  const ClientResult result =
      RunPipegate(dir, {"mount", gw.Address("logs"), local}, ClientOptions::As(Bob()));
  EXPECT_TRUE(IsError(result, 3, gw.Address("logs"), "^access denied for 'bob'$"));
  EXPECT_FALSE(PathExists(local));
}

TEST(MountRefusal, HiddenExportStaysNoSuchPipe) {
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::FifoRead("logs")});
  options.extra_gateway_toml = "hide_existence = true\n";
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("logs.local");
  const ClientResult hidden =
      RunPipegate(dir, {"mount", gw.Address("logs"), local}, ClientOptions::As(Bob()));
  EXPECT_TRUE(IsError(hidden, 4, gw.Address("logs"), "^no such pipe 'logs'$"));
  const ClientResult absent =
      RunPipegate(dir, {"mount", gw.Address("nope"), local}, ClientOptions::As(Bob()));
  EXPECT_TRUE(IsError(absent, 4, gw.Address("nope"), "^no such pipe 'nope'$"));
  EXPECT_FALSE(PathExists(local));
}

TEST(MountRefusal, UnknownExportExitsFour) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("nope.local");
  const ClientResult result = RunPipegate(dir, {"mount", gw.Address("nope"), local});
  EXPECT_TRUE(IsError(result, 4, gw.Address("nope"), "^no such pipe 'nope'$"));
  EXPECT_FALSE(PathExists(local));
}

// --- 2: client certificate, key or CA files that cannot be loaded -------------------------------

TEST(ClientTlsFiles, UnloadableFilesExitTwoNamingTheFile) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string absent = dir.Join("absent.pem");
  const std::string garbage = dir.Join("garbage.pem");
  ASSERT_TRUE(WriteFile(garbage, "this is not PEM\n"));
  ASSERT_EQ(chmod(garbage.c_str(), 0600), 0);
  struct Case {
    std::string variable;
    std::string path;
    std::string cause;
  };
  const std::vector<Case> cases = {
      {"PIPEGATE_CERT", absent, "certificate '" + absent + "': No such file or directory"},
      {"PIPEGATE_KEY", absent, "private key '" + absent + "': No such file or directory"},
      {"PIPEGATE_CA", absent, "CA bundle '" + absent + "': No such file or directory"},
      {"PIPEGATE_CERT", garbage, "cannot load certificate '" + garbage + "'"},
      {"PIPEGATE_KEY", garbage, "cannot load private key '" + garbage + "'"},
      {"PIPEGATE_CA", garbage, "cannot load CA bundle '" + garbage + "'"},
      {"PIPEGATE_KEY", Bob().key, "private key '" + Bob().key + "'"},  // Not alice's key.
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.variable + "=" + c.path);
    ClientOptions options;
    options.env = {{c.variable, c.path}};
    const ClientResult result = RunPipegate(dir, {"cat", gw.Address("logs")}, options);
    EXPECT_TRUE(IsError(result, 2, gw.Address("logs"), Literal(c.cause)));
  }
  // The flags are files too.
  const ClientResult flag = RunPipegate(dir, {"cat", "--ca", absent, gw.Address("logs")});
  EXPECT_TRUE(IsError(flag, 2, gw.Address("logs"), "CA bundle"));
}

}  // namespace
}  // namespace pipegate::testing
