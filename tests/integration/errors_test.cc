// Every failure of SPEC §7: its exit status, and one stderr line naming the address and cause.

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/data.h"
#include "support/fault_relay.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/pipe_io.h"
#include "support/proc_stats.h"
#include "support/process.h"
#include "support/timing.h"

namespace pipegate::testing {
namespace {

// A loopback TCP socket on a free port: listening (to see whether anyone connects) or merely
// bound (so that connecting is refused and nobody else can take the port meanwhile).
class TcpPort {
 public:
  explicit TcpPort(bool listening) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof addr;
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        (listening && listen(fd_, 16) != 0) ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
      return;
    }
    port_ = ntohs(addr.sin_port);
  }
  ~TcpPort() {
    if (fd_ >= 0) {
      close(fd_);
    }
  }
  TcpPort(const TcpPort&) = delete;
  TcpPort& operator=(const TcpPort&) = delete;

  uint16_t port() const { return port_; }
  std::string Base() const { return "pipe://127.0.0.1:" + std::to_string(port_); }
  // True if a connection is waiting to be accepted.
  bool HasPendingConnection() const {
    pollfd pfd{fd_, POLLIN, 0};
    return poll(&pfd, 1, 0) > 0;
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

// --- 1: bad usage or configuration -------------------------------------------------------------

TEST(Errors, BadUsageExitsOne) {
  TempDir dir;
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"frobnicate", "pipe://127.0.0.1:1/x"},
      {"cat"},
      {"cat", "pipe://127.0.0.1:1/x", "extra-argument"},
      {"cat", "--no-such-option", "pipe://127.0.0.1:1/x"},
      {"mount", "pipe://127.0.0.1:1/x"},
      {"cat", "--wait", "soon", "pipe://127.0.0.1:1/x"},
  };
  for (const auto& args : cases) {
    const ClientResult result = RunPipegate(dir, args);
    EXPECT_EQ(result.status, 1) << result.Describe();
    EXPECT_FALSE(result.err.empty()) << result.Describe();
  }
}

TEST(Errors, MissingClientCertificateIsAUsageError) {
  TempDir dir;
  const ClientResult result =
      RunPipegate(dir, {"cat", "pipe://127.0.0.1:1/x"}, ClientOptions::As(std::nullopt));
  EXPECT_EQ(result.status, 1) << result.Describe();
}

struct BadName {
  std::string name;
  std::string cause;  // What the message must say about it.
};

// Names the case in test names and messages (instead of a byte dump).
void PrintTo(const BadName& c, std::ostream* os) { *os << "name '" << c.name << "'"; }

class BadAddressName : public ::testing::TestWithParam<BadName> {};

TEST_P(BadAddressName, IsRejectedBeforeAnyConnection) {
  TempDir dir;
  TcpPort listener(/*listening=*/true);
  ASSERT_NE(listener.port(), 0);
  const std::string address = listener.Base() + "/" + GetParam().name;
  const ClientResult result = RunPipegate(dir, {"cat", address});
  ASSERT_FALSE(GetParam().cause.empty());
  EXPECT_TRUE(IsError(result, 1, address, GetParam().cause));
  EXPECT_FALSE(listener.HasPendingConnection()) << "pipegate connected despite the bad name";
}

INSTANTIATE_TEST_SUITE_P(
    Errors, BadAddressName,
    ::testing::Values(
        BadName{"a/b", R"(invalid character '/' at position 2 in pipe name "a/b")"},
        BadName{"bad name", R"(invalid character ' ' at position 4 in pipe name "bad name")"},
        BadName{"semi;colon", R"(invalid character ';' at position 5 in pipe name "semi;colon")"},
        BadName{"..", R"(pipe name "\.\." is not allowed)"},
        BadName{".", R"(pipe name "\." is not allowed)"}, BadName{"", R"(missing pipe name)"},
        BadName{std::string(129, 'x'), R"(pipe name is 129 characters long \(at most 128\))"}),
    [](const ::testing::TestParamInfo<BadName>& param_info) {
      return "Case" + std::to_string(param_info.index);
    });

// --- 2: could not connect, or TLS failed --------------------------------------------------------

TEST(Errors, ConnectionRefusedExitsTwo) {
  TempDir dir;
  TcpPort closed(/*listening=*/false);
  ASSERT_NE(closed.port(), 0);
  const std::string address = closed.Base() + "/logs";
  const ClientResult result = RunPipegate(dir, {"cat", address});
  EXPECT_TRUE(IsError(result, 2, address,
                      "^could not connect to 127\\.0\\.0\\.1:" + std::to_string(closed.port()) +
                          ": connection refused$"));
}

struct TlsCase {
  std::string label;
  std::string client;   // Client identity stem, relative to the PKI.
  std::string gateway;  // Gateway certificate stem.
  std::string cause;    // What the message must say.
};

void PrintTo(const TlsCase& c, std::ostream* os) { *os << c.label; }

class TlsFailure : public ::testing::TestWithParam<TlsCase> {};

TEST_P(TlsFailure, ExitsTwoAndSaysWhy) {
  const TlsCase& c = GetParam();
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::FifoRead("logs")});
  options.exports[0].allow = {"*"};
  options.cert = c.gateway + ".crt";
  options.key = c.gateway + ".key";
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  const ClientResult result =
      RunPipegate(dir, {"cat", gw.Address("logs")}, ClientOptions::As(Identity::Of(c.client)));
  EXPECT_TRUE(IsError(result, 2, gw.Address("logs"), c.cause));
  EXPECT_TRUE(gw.Running()) << "the gateway died on a failed handshake";
}

INSTANTIATE_TEST_SUITE_P(
    Errors, TlsFailure,
    ::testing::Values(
        TlsCase{"ClientCertFromForeignCa", "other/alice", "gateway",
                "^TLS failed: the gateway rejected our client certificate \\(unknown CA\\)$"},
        TlsCase{"ExpiredClientCert", "expired", "gateway",
                "^TLS failed: the gateway rejected our client certificate: it has expired \\(on "
                "\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d UTC\\)$"},
        TlsCase{"NotYetValidClientCert", "notyet", "gateway",
                "^TLS failed: the gateway rejected our client certificate: it is not yet valid "
                "\\(valid from \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d UTC\\)$"},
        TlsCase{"ClientCertWithWrongEku", "wrongeku", "gateway",
                "^TLS failed: the gateway rejected our client certificate: it is not valid for "
                "client use \\(its extended key usage lacks clientAuth\\)$"},
        TlsCase{"GatewayCertWithWrongName", "alice", "gateway-wrongname",
                "^TLS failed: gateway certificate name mismatch \\(not valid for "
                "'127\\.0\\.0\\.1'\\)$"},
        TlsCase{"GatewayCertFromForeignCa", "alice", "other/gateway",
                "^TLS failed: gateway certificate is not signed by a trusted CA \\(unknown CA\\)$"},
        TlsCase{"ExpiredGatewayCert", "alice", "gateway-expired",
                "^TLS failed: gateway certificate has expired$"}),
    [](const ::testing::TestParamInfo<TlsCase>& param_info) { return param_info.param.label; });

// --- 3: access denied; 4: no such pipe ----------------------------------------------------------

TEST(Errors, IdentityNotOnAllowListExitsThree) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const ClientResult result =
      RunPipegate(dir, {"cat", gw.Address("logs")}, ClientOptions::As(Bob()));
  EXPECT_TRUE(IsError(result, 3, gw.Address("logs"), "access denied"));
  EXPECT_NE(gw.Log().find("bob"), std::string::npos) << "the gateway did not log the identity";
}

TEST(Errors, UnknownExportExitsFour) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  for (const char* command : {"cat", "write", "connect"}) {
    const ClientResult result = RunPipegate(dir, {command, gw.Address("nope")});
    EXPECT_TRUE(IsError(result, 4, gw.Address("nope"), "no such")) << command;
  }
}

// --- 5: busy, or no reader ----------------------------------------------------------------------

class BusyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    gw_ = std::make_unique<GatewayFixture>(dir_, WithExports({ExportSpec::FifoRead("logs")}));
    ASSERT_TRUE(gw_->Start());
    fifo_ = gw_->ExportPath("logs");
    first_ = std::make_unique<Bridge>(dir_, std::vector<std::string>{"cat", gw_->Address("logs")},
                                      StdioSpec::Null(), dir_.Join("first.out"));
    ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw_->pid(), fifo_) || !first_->Running(); },
                        Duration(10000)))
        << first_->Describe();
    ASSERT_TRUE(first_->Running()) << first_->Describe();
  }

  TempDir dir_;
  std::unique_ptr<GatewayFixture> gw_;
  std::string fifo_;
  std::unique_ptr<Bridge> first_;
};

TEST_F(BusyTest, SecondReaderOfFifoReadExportIsBusy) {
  const ClientResult result = RunPipegate(dir_, {"cat", gw_->Address("logs")});
  EXPECT_TRUE(IsError(result, 5, gw_->Address("logs"), "busy"));
  EXPECT_TRUE(first_->Running()) << first_->Describe();
}

TEST_F(BusyTest, WaitGivesUpAfterTheWaitAndExitsFive) {
  const ClientResult result = RunPipegate(dir_, {"cat", "--wait", "1", gw_->Address("logs")});
  EXPECT_TRUE(IsError(result, 5, gw_->Address("logs"), "busy"));
  EXPECT_GE(result.elapsed, Duration(900)) << "gave up before the 1 s wait";
  EXPECT_LE(result.elapsed, Duration(1000) + Scaled(Duration(5000))) << "waited far too long";
}

TEST_F(BusyTest, WaitSucceedsWhenTheFirstReaderLeaves) {
  const std::string second_out = dir_.Join("second.out");
  Bridge second(dir_,
                {"cat", "--wait", std::to_string(Scaled(Duration(15000)).count() / 1000),
                 gw_->Address("logs")},
                StdioSpec::Null(), second_out);
  ASSERT_TRUE(second.started());
  ASSERT_TRUE(WaitFor(
      [&] { return CountTcpConnections(second.pid(), gw_->port()) == 1 || !second.Running(); },
      Duration(10000)));
  ASSERT_TRUE(second.Running()) << "the second reader did not wait: " << second.Describe();

  // The first reader gets a line and EOF, and leaves.
  Process writer1({"sh", "-c", "echo one > \"$0\"", fifo_});
  EXPECT_EQ(writer1.Wait(Duration(10000)), 0);
  EXPECT_EQ(first_->Wait(Duration(10000)), 0) << first_->Describe();
  EXPECT_EQ(ReadFile(dir_.Join("first.out")), "one\n");

  // Now the second reader holds the export.
  Process writer2({"sh", "-c", "echo two > \"$0\"", fifo_});
  EXPECT_EQ(writer2.Wait(Duration(20000)), 0);
  EXPECT_EQ(second.Wait(Duration(10000)), 0) << second.Describe();
  EXPECT_EQ(ReadFile(second_out), "two\n");
}

TEST(Errors, WriteWithNoLocalReaderExitsFive) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoWrite("cmd")}));
  ASSERT_TRUE(gw.Start());
  const std::string input = dir.Join("in");
  ASSERT_TRUE(WriteFile(input, "hello\n"));
  const ClientResult result =
      RunPipegate(dir, {"write", gw.Address("cmd")}, ClientOptions::Stdin(input));
  EXPECT_TRUE(IsError(result, 5, gw.Address("cmd"), "no reader"));
}

TEST(Errors, WriteWaitGivesUpWithNoReaderAndExitsFive) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoWrite("cmd")}));
  ASSERT_TRUE(gw.Start());
  const std::string input = dir.Join("in");
  ASSERT_TRUE(WriteFile(input, "hello\n"));
  const ClientResult result =
      RunPipegate(dir, {"write", "--wait", "1", gw.Address("cmd")}, ClientOptions::Stdin(input));
  EXPECT_TRUE(IsError(result, 5, gw.Address("cmd"), "no reader"));
  EXPECT_GE(result.elapsed, Duration(900)) << "gave up before the 1 s wait";
  EXPECT_LE(result.elapsed, Duration(1000) + Scaled(Duration(5000))) << "waited far too long";
}

TEST(Errors, WriteWaitSucceedsWhenAReaderAppears) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoWrite("cmd")}));
  ASSERT_TRUE(gw.Start());
  const std::string input = dir.Join("in");
  ASSERT_TRUE(WriteFile(input, "hello\n"));
  Bridge write(
      dir,
      {"write", "--wait", std::to_string(Scaled(Duration(5000)).count() / 1000), gw.Address("cmd")},
      StdioSpec::File(input));
  ASSERT_TRUE(write.started());
  ASSERT_TRUE(
      WaitFor([&] { return CountTcpConnections(write.pid(), gw.port()) == 1 || !write.Running(); },
              Duration(10000)));
  ASSERT_TRUE(write.Running()) << "write did not wait for a reader: " << write.Describe();

  const std::string out = dir.Join("out");
  ProcessOptions reader_options = ProcessOptions::Of({"cat", gw.ExportPath("cmd")});
  reader_options.stdout_spec = StdioSpec::File(out);
  Process reader(std::move(reader_options));
  EXPECT_EQ(write.Wait(Duration(15000)), 0) << write.Describe();
  EXPECT_EQ(reader.Wait(Duration(10000)), 0);
  EXPECT_EQ(ReadFile(out), "hello\n");
}

// --- 6: the stream broke ------------------------------------------------------------------------

TEST(Errors, LocalReaderLeavingMidStreamIsBrokenPipe) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoWrite("cmd")}));
  ASSERT_TRUE(gw.Start());
  FifoReader reader(gw.ExportPath("cmd"), FifoReaderOptions::CloseAfter(1 * kMiB));
  ASSERT_TRUE(reader.ok()) << reader.error();
  Bridge write(dir, {"write", gw.Address("cmd")}, StdioSpec::Pipe());
  ASSERT_TRUE(write.started());
  StreamFeeder feeder(write.process().TakeStdinFd(), 1024 * kMiB, 5);
  ASSERT_TRUE(write.Wait(Duration(30000)).has_value()) << write.Describe();
  EXPECT_TRUE(IsError(write.Result(), 6, gw.Address("cmd"), "broken pipe"));
  EXPECT_EQ(reader.bytes(), 1 * kMiB);
  EXPECT_TRUE(gw.Running()) << "the gateway died of the broken pipe";
}

// The gateway crashes mid-stream and comes back without the session: the bridge reconnects,
// cannot resume, and reports the broken stream. The bridge dials a relay, so that the new
// gateway can listen on a port of the kernel's choosing and still be the same address.
TEST(Errors, GatewayRestartedMidCatExitsSix) {
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::FifoRead("logs")});
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  FaultRelay relay(gw.port());
  ASSERT_TRUE(relay.ok());
  const std::string address = relay.BaseAddress() + "/logs";
  const std::string out = dir.Join("out");
  Bridge cat(dir, {"cat", address}, StdioSpec::Null(), out);
  ProcessOptions writer_options = ProcessOptions::Of({"yes", "log line"});
  writer_options.stdout_spec = StdioSpec::File(gw.ExportPath("logs"));
  Process writer(std::move(writer_options));
  ASSERT_TRUE(WaitFor([&] { return FileSize(out).value_or(0) > 1 * kMiB || !cat.Running(); },
                      Duration(20000)))
      << cat.Describe();
  ASSERT_TRUE(cat.Running()) << cat.Describe();
  relay.SetTarget(0);  // Reconnects are refused until the new gateway is up.
  gw.Kill();
  const auto killed = Clock::now();

  GatewayFixture restarted(dir, options);
  ASSERT_TRUE(restarted.Start());
  relay.SetTarget(restarted.port());
  ASSERT_TRUE(cat.Wait(Duration(30000)).has_value())
      << "cat still running 30 s after the gateway restarted without its session: "
      << cat.Describe();
  // The message accounts for the bytes: what it says was written out is what `out` holds.
  const std::string written = std::to_string(FileSize(out).value_or(0));
  EXPECT_TRUE(IsError(cat.Result(), 6, address,
                      "^connection lost and could not be resumed: the gateway no longer has the "
                      "session \\(unknown or expired session\\); 0 byte\\(s\\) sent were "
                      "confirmed delivered, " +
                          written + " byte\\(s\\) received were written out$"));
  ::testing::Test::RecordProperty("exit_after_gateway_death_ms",
                                  std::to_string(Since(killed).count()));
}

}  // namespace
}  // namespace pipegate::testing
