// `pipegated --check-config` and start-up with a bad config (SPEC §4).

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/pki.h"
#include "support/process.h"
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

}  // namespace
}  // namespace pipegate::testing
