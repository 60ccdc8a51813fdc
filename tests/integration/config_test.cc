// `pipegated --check-config` and start-up with a bad config (SPEC §4).

#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/pki.h"
#include "support/process.h"
#include "support/tcp_proxy.h"
#include "support/timing.h"

namespace pipegate::testing {
namespace {

// @PKI@ and @DIR@ in a config template become the test PKI and the temp dir.
std::string Expand(const std::string& toml, const TempDir& dir) {
  return ReplaceAll(ReplaceAll(toml, "@PKI@", PkiDir()), "@DIR@", dir.path());
}

// The 1-based line of the `occurrence`-th (1-based) appearance of `text` in `toml`, or 0.
int LineOf(const std::string& toml, const std::string& text, int occurrence = 1) {
  size_t at = std::string::npos;
  for (int i = 0; i < occurrence; ++i) {
    at = toml.find(text, at == std::string::npos ? 0 : at + 1);
    if (at == std::string::npos) {
      return 0;
    }
  }
  int line = 1;
  for (size_t i = 0; i < at; ++i) {
    line += toml[i] == '\n' ? 1 : 0;
  }
  return line;
}

constexpr const char* kHeader = R"([gateway]
listen = ["127.0.0.1:0"]
cert = "@PKI@/gateway.crt"
key = "@PKI@/gateway.key"
client_ca = "@PKI@/ca.crt"
)";

CommandResult CheckConfig(TempDir& dir, const std::string& toml, std::string* path_out) {
  const std::string path = dir.Unique("check", ".toml");
  EXPECT_TRUE(WriteFile(path, toml));
  *path_out = path;
  return RunCommand({BinPath("pipegated"), "--check-config", path}, dir.path(), Duration(15000));
}

TEST(CheckConfig, AcceptsAValidFile) {
  TempDir dir;
  ASSERT_TRUE(EnsureTestPki());
  const std::string toml = Expand(std::string(kHeader) + R"(
[[export]]
name = "logs"
kind = "fifo"
access = "read"
path = "@DIR@/logs.fifo"
create = true
mode = "0640"
allow = ["alice", "spiffe://example.org/ci"]
max_clients = 2

[[export]]
name = "docker"
kind = "unix"
path = "@DIR@/docker.sock"
allow = ["ops"]
)",
                                  dir);
  std::string path;
  const CommandResult result = CheckConfig(dir, toml, &path);
  EXPECT_EQ(result.status, 0) << DescribeStatus(result.status) << "\n" << result.out << result.err;
}

TEST(CheckConfig, ReportsSyntaxErrorWithItsLine) {
  TempDir dir;
  const std::string toml = R"([gateway]
listen = ["127.0.0.1:0"]

cert = "unterminated
key = "k"
)";
  std::string path;
  const CommandResult result = CheckConfig(dir, toml, &path);
  const std::string output = result.out + result.err;
  EXPECT_EQ(result.status, 1) << DescribeStatus(result.status) << "\n" << output;
  EXPECT_NE(output.find(path + ":4:"), std::string::npos) << output;
}

TEST(CheckConfig, ReportsEachErrorWithItsLine) {
  TempDir dir;
  ASSERT_TRUE(EnsureTestPki());
  const std::string toml = Expand(std::string(kHeader) + R"(
[[export]]
name = "good"
kind = "fifo"
access = "read"
path = "@DIR@/a.fifo"
allow = ["alice"]

[[export]]
name = "bad/name"
kind = "fifo"
access = "read"
path = "@DIR@/b.fifo"
allow = ["alice"]

[[export]]
name = "badkind"
kind = "socket"
path = "@DIR@/c.fifo"
allow = ["alice"]

[[export]]
name = "badaccess"
kind = "fifo"
access = "sideways"
path = "@DIR@/d.fifo"
allow = ["alice"]

[[export]]
name = "good"
kind = "fifo"
access = "write"
path = "@DIR@/e.fifo"
allow = ["alice"]
)",
                                  dir);
  std::string path;
  const CommandResult result = CheckConfig(dir, toml, &path);
  const std::string output = result.out + result.err;
  EXPECT_EQ(result.status, 1) << DescribeStatus(result.status) << "\n" << output;
  // Each error names the line of the offending key; a duplicate name may instead name the line of
  // its [[export]] header, just above.
  const int duplicate = LineOf(toml, "name = \"good\"", 2);
  const std::vector<std::vector<int>> expected = {{LineOf(toml, "name = \"bad/name\"")},
                                                  {LineOf(toml, "kind = \"socket\"")},
                                                  {LineOf(toml, "access = \"sideways\"")},
                                                  {duplicate, duplicate - 1}};
  for (const auto& candidates : expected) {
    bool found = false;
    for (const int line : candidates) {
      found = found || output.find(path + ":" + std::to_string(line) + ":") != std::string::npos;
    }
    EXPECT_TRUE(found) << "no error reported at line " << candidates[0] << ":\n" << output;
  }
  const int good = LineOf(toml, "name = \"good\"");
  EXPECT_EQ(output.find(path + ":" + std::to_string(good) + ":"), std::string::npos)
      << "the first, valid export was flagged:\n"
      << output;
}

TEST(CheckConfig, MissingFileExitsOne) {
  TempDir dir;
  const CommandResult result =
      RunCommand({BinPath("pipegated"), "--check-config", dir.Join("absent.toml")}, dir.path());
  EXPECT_EQ(result.status, 1) << result.out << result.err;
  EXPECT_FALSE((result.out + result.err).empty());
}

TEST(CheckConfig, GatewayRefusesToStartWithABadConfig) {
  TempDir dir;
  ASSERT_TRUE(EnsureTestPki());
  const std::string path = dir.Join("bad.toml");
  ASSERT_TRUE(WriteFile(path, Expand(std::string(kHeader) + R"(
[[export]]
name = "x"
kind = "nope"
path = "@DIR@/x"
allow = ["alice"]
)",
                                     dir)));
  const CommandResult result =
      RunCommand({BinPath("pipegated"), "--config", path}, dir.path(), Duration(15000));
  EXPECT_EQ(result.status, 1) << DescribeStatus(result.status) << "\n" << result.out << result.err;
  EXPECT_NE(result.err.find(path), std::string::npos) << result.err;
}

// Every certificate, key, CA and CRL problem at once, each with the line of its key; and the
// gateway refuses to start with the same file, saying the same.
TEST(CheckConfig, ReportsEveryTlsFileProblemWithItsLine) {
  TempDir dir;
  ASSERT_TRUE(EnsureTestPki());
  ASSERT_TRUE(WriteFile(dir.Join("garbage.key"), "not a key\n"));
  ::chmod(dir.Join("garbage.key").c_str(), 0600);
  ASSERT_TRUE(WriteFile(dir.Join("garbage.crl"), "not a CRL\n"));
  const std::string toml = Expand(R"([gateway]
listen = ["127.0.0.1:0"]
cert = "@DIR@/absent.crt"
key = "@DIR@/garbage.key"
client_ca = "@PKI@/ca.crt"
crl = "@DIR@/garbage.crl"
)",
                                  dir);
  std::string path;
  const CommandResult checked = CheckConfig(dir, toml, &path);
  EXPECT_EQ(checked.status, 1) << DescribeStatus(checked.status) << "\n" << checked.err;
  for (const char* key : {"cert", "key", "crl"}) {
    const std::string where = path + ":" + std::to_string(LineOf(toml, std::string(key) + " =")) +
                              ": gateway: " + key + ": ";
    EXPECT_NE(checked.err.find(where), std::string::npos) << "no '" << where << "' in:\n"
                                                          << checked.err;
  }
  EXPECT_NE(checked.err.find("absent.crt"), std::string::npos) << checked.err;
  EXPECT_EQ(checked.err.find("client_ca"), std::string::npos) << checked.err;

  const CommandResult started =
      RunCommand({BinPath("pipegated"), "--config", path}, dir.path(), Duration(15000));
  EXPECT_EQ(started.status, 1) << DescribeStatus(started.status) << "\n" << started.err;
  for (const char* key : {"cert", "key", "crl"}) {
    EXPECT_NE(started.err.find(std::string("gateway: ") + key + ": "), std::string::npos)
        << started.err;
  }
}

// The gateway binds IP addresses only; a name fails the check rather than the start.
TEST(CheckConfig, RefusesAHostNameInListen) {
  TempDir dir;
  ASSERT_TRUE(EnsureTestPki());
  std::string toml = Expand(kHeader, dir);
  toml = ReplaceAll(toml, "\"127.0.0.1:0\"", "\"localhost:7445\"");
  std::string path;
  const CommandResult result = CheckConfig(dir, toml, &path);
  EXPECT_EQ(result.status, 1) << DescribeStatus(result.status) << "\n" << result.err;
  EXPECT_NE(result.err.find(path + ":" + std::to_string(LineOf(toml, "listen")) +
                            ": gateway: listen address \"localhost:7445\": the host must be an "
                            "IP address"),
            std::string::npos)
      << result.err;
}

// A start that fails after the FIFOs were made (here: the port is taken) removes them again.
TEST(CheckConfig, AFailedStartRemovesTheFifosItCreated) {
  TempDir dir;
  ASSERT_TRUE(EnsureTestPki());
  uint16_t port = 0;
  const int taken = ListenOnLoopback(&port);
  ASSERT_GE(taken, 0);
  std::string toml = Expand(std::string(kHeader) + R"(
[[export]]
name = "logs"
kind = "fifo"
access = "read"
path = "@DIR@/logs.fifo"
create = true
allow = ["alice"]
)",
                            dir);
  toml = ReplaceAll(toml, "127.0.0.1:0", "127.0.0.1:" + std::to_string(port));
  std::string path;
  EXPECT_EQ(CheckConfig(dir, toml, &path).status, 0);
  const CommandResult result =
      RunCommand({BinPath("pipegated"), "--config", path}, dir.path(), Duration(15000));
  ::close(taken);
  EXPECT_EQ(result.status, 2) << DescribeStatus(result.status) << "\n" << result.err;
  EXPECT_NE(result.err.find("created FIFO"), std::string::npos)
      << "the FIFO was never made, so the test shows nothing:\n"
      << result.err;
  struct stat st {};
  EXPECT_NE(::lstat(dir.Join("logs.fifo").c_str(), &st), 0)
      << "the failed start left its FIFO behind";
}

}  // namespace
}  // namespace pipegate::testing
