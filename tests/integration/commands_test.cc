// `pipegate ls`, the other address forms, and the gateway's own life cycle.

#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/proc_stats.h"
#include "support/process.h"
#include "support/timing.h"
#include "support/unix_socket.h"

namespace pipegate::testing {
namespace {

std::vector<std::string> SortedLines(const std::string& text) {
  std::vector<std::string> lines = SplitLines(text);
  std::sort(lines.begin(), lines.end());
  return lines;
}

class LsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<UnixEchoServer>(dir_.Join("srv.sock"));
    ASSERT_TRUE(server_->ok());
    auto allow = [](ExportSpec spec, std::vector<std::string> who) {
      spec.allow = std::move(who);
      return spec;
    };
    gw_ = std::make_unique<GatewayFixture>(
        dir_, WithExports({
                  allow(ExportSpec::FifoRead("by-cn"), {"alice"}),
                  allow(ExportSpec::FifoWrite("by-dns"), {"alice.example"}),
                  allow(ExportSpec::FifoRead("by-uri"), {"spiffe://example.org/ci/alice"}),
                  allow(ExportSpec::FifoRead("anyone"), {"*"}),
                  allow(ExportSpec::FifoWrite("bobs"), {"bob"}),
                  allow(ExportSpec::FifoRead("nobody"), {"carol", "alice.example.org"}),
                  allow(ExportSpec::Unix("sock", dir_.Join("srv.sock")), {"bob", "alice"}),
              }));
    ASSERT_TRUE(gw_->Start());
  }

  TempDir dir_;
  std::unique_ptr<UnixEchoServer> server_;
  std::unique_ptr<GatewayFixture> gw_;
};

TEST_F(LsTest, ListsOnlyTheExportsAliceMayUse) {
  const ClientResult result = RunPipegate(dir_, {"ls", gw_->BaseAddress()});
  ASSERT_EQ(result.status, 0) << result.Describe();
  EXPECT_EQ(SortedLines(result.out),
            (std::vector<std::string>{
                "anyone\tfifo\tread\tbytes\t0\t1", "by-cn\tfifo\tread\tbytes\t0\t1",
                "by-dns\tfifo\twrite\tbytes\t0\t-", "by-uri\tfifo\tread\tbytes\t0\t1",
                "sock\tunix\tduplex\tbytes\t0\t-"}))
      << result.Describe();
}

TEST_F(LsTest, ListsOnlyTheExportsBobMayUse) {
  const ClientResult result =
      RunPipegate(dir_, {"ls", gw_->BaseAddress()}, ClientOptions::As(Bob()));
  ASSERT_EQ(result.status, 0) << result.Describe();
  EXPECT_EQ(SortedLines(result.out), (std::vector<std::string>{"anyone\tfifo\tread\tbytes\t0\t1",
                                                               "bobs\tfifo\twrite\tbytes\t0\t-",
                                                               "sock\tunix\tduplex\tbytes\t0\t-"}))
      << result.Describe();
}

TEST_F(LsTest, OptionsMayFollowTheCommandAndComeFromFlags) {
  const Identity alice = Alice();
  const ClientResult result = RunPipegate(
      dir_, {"ls", gw_->BaseAddress(), "--cert", alice.cert, "--key", alice.key, "--ca", alice.ca},
      ClientOptions::As(std::nullopt));
  ASSERT_EQ(result.status, 0) << result.Describe();
  EXPECT_EQ(SortedLines(result.out).size(), 5u) << result.Describe();
}

TEST_F(LsTest, FlagsOverrideTheEnvironment) {
  // Environment says bob; flags say alice.
  const Identity alice = Alice();
  const ClientResult result =
      RunPipegate(dir_, {"--cert", alice.cert, "--key", alice.key, "ls", gw_->BaseAddress()},
                  ClientOptions::As(Bob()));
  ASSERT_EQ(result.status, 0) << result.Describe();
  EXPECT_EQ(SortedLines(result.out).size(), 5u) << result.Describe();
}

// SPEC §2: `//HOST:PORT/pipe/NAME` is accepted too.
TEST(Addresses, SlashSlashPipeFormWorks) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string fifo = gw.ExportPath("logs");
  ProcessOptions writer_options = ProcessOptions::Of({"sh", "-c", "echo hi"});
  writer_options.stdout_spec = StdioSpec::File(fifo);
  Process writer(std::move(writer_options));  // Blocks in open() until the gateway reads.
  const ClientResult result =
      RunPipegate(dir, {"cat", "//127.0.0.1:" + std::to_string(gw.port()) + "/pipe/logs"});
  EXPECT_EQ(result.status, 0) << result.Describe();
  EXPECT_EQ(result.out, "hi\n");
  EXPECT_EQ(writer.Wait(Duration(5000)), 0);
}

TEST(Gateway, ExitsZeroOnSigtermAndSigint) {
  for (const int sig : {SIGTERM, SIGINT}) {
    TempDir dir;
    GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
    ASSERT_TRUE(gw.Start());
    // One finished client first, so the gateway has had a connection.
    RunPipegate(dir, {"ls", gw.BaseAddress()});
    gw.Signal(sig);
    EXPECT_TRUE(WaitFor([&] { return !gw.Running(); }, Duration(15000)))
        << "pipegated ignored signal " << sig;
    EXPECT_EQ(gw.Stop(Duration(1000)), 0) << "after signal " << sig << "\n" << gw.Log();
  }
}

TEST(Gateway, DoesNotRemoveFifoItDidNotCreate) {
  TempDir dir;
  const std::string fifo = dir.Join("mine.fifo");
  ASSERT_TRUE(MakeFifo(fifo));
  ExportSpec spec = ExportSpec::FifoRead("mine");
  spec.path = fifo;
  spec.create = false;
  GatewayFixture gw(dir, WithExports({spec}));
  ASSERT_TRUE(gw.Start());
  EXPECT_EQ(RunPipegate(dir, {"ls", gw.BaseAddress()}).status, 0);
  EXPECT_EQ(gw.Stop(), 0);
  EXPECT_TRUE(IsFifo(fifo)) << "the gateway removed a FIFO it did not create";
}

TEST(Gateway, CreatesFifoWithTheConfiguredMode) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());  // Checks that the FIFO exists.
  struct stat st {};
  ASSERT_EQ(stat(gw.ExportPath("logs").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "mode = \"0600\" not applied";
  EXPECT_EQ(RunPipegate(dir, {"ls", gw.BaseAddress()}).status, 0);
  EXPECT_EQ(gw.Stop(), 0);
}

// "listening on" is the readiness signal: a stop request right after it must be a clean stop.
TEST(Gateway, ExitsZeroOnSigtermRightAfterListening) {
  for (int attempt = 0; attempt < 10; ++attempt) {
    TempDir dir;
    GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
    ASSERT_TRUE(gw.Start());
    ASSERT_EQ(gw.Stop(), 0) << "attempt " << attempt
                            << ": SIGTERM right after the listening line did not exit 0";
  }
}

}  // namespace
}  // namespace pipegate::testing
