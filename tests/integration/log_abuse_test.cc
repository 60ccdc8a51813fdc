// What a client can do to the gateway's log: flood it with lines it makes the gateway write
// (refused OPENs), and forge lines with a certificate whose CN holds a newline. A running
// gateway on loopback, clients that misbehave on purpose (RawClient), figures reported as test
// properties.

#include <cstdio>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/pki.h"
#include "support/process.h"
#include "support/raw_client.h"
#include "support/timing.h"

namespace pipegate::testing {
namespace {

constexpr uint8_t kRead = 1;

void Report(const std::string& what, const std::string& figures) {
  ::testing::Test::RecordProperty(what, figures);
  std::printf("[ figures  ] %s: %s\n", what.c_str(), figures.c_str());
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

size_t CountContaining(const std::vector<std::string>& lines, const std::string& needle) {
  size_t n = 0;
  for (const std::string& line : lines) n += line.find(needle) != std::string::npos ? 1 : 0;
  return n;
}

// The sum of N over "audit: suppressed N lines of decision=no-such-pipe" lines.
uint64_t SuppressedInSummaries(const std::string& log, const std::string& cause) {
  const std::regex summary("audit: suppressed ([0-9]+) lines of " + cause + " in the last");
  uint64_t total = 0;
  for (std::sregex_iterator it(log.begin(), log.end(), summary), end; it != end; ++it) {
    total += std::stoull((*it)[1].str());
  }
  return total;
}

// A client with a valid certificate sends OPENs of names that do not exist as fast as it can.
// Before the log rate limit each one left an audit line (~240 bytes); now each cause writes at
// most log_lines_per_second lines a second, and every suppressed line is accounted for in a
// summary line.
TEST(LogAbuse, RefusedOpenFloodKeepsTheLogSmallAndSummarisesWhatItSuppressed) {
  ASSERT_TRUE(EnsureTestPki());
  IgnoreSigpipe();
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::FifoRead("logs")});
  // The default cap (20 lines per second per cause) is what this test measures against.
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());

  std::string error;
  auto client = RawClient::Connect(gw.port(), Alice(), &error);
  ASSERT_TRUE(client) << error;
  ASSERT_TRUE(WaitFor([&] { return gw.Log().find("connected from") != std::string::npos; },
                      Duration(5000)));
  const size_t log_before = gw.Log().size();

  constexpr uint32_t kOpens = 20000;
  constexpr uint32_t kBatch = 1000;
  const Clock::time_point start = Clock::now();
  for (uint32_t i = 0; i < kOpens; i += kBatch) {
    uint32_t last = 0;
    for (uint32_t j = i; j < i + kBatch; ++j) {
      last = 2 * j + 1;
      ASSERT_TRUE(client->SendOpen(last, "nope-" + std::to_string(j), kRead)) << "open " << j;
    }
    // Read the RESETs, so that the gateway never stops reading for a write backlog.
    ASSERT_TRUE(client->WaitFor(FrameType::kReset, last, Duration(10000))) << "batch " << i;
  }
  const Duration flood = Since(start);

  // The summary comes within about two seconds of the end of the burst (the gateway's 1 s
  // timer), and it accounts for every refused OPEN that has no line of its own.
  uint64_t logged = 0;
  uint64_t suppressed = 0;
  const bool accounted = WaitFor(
      [&] {
        const std::string log = gw.Log().substr(log_before);
        logged = CountContaining(Lines(log), "audit: decision=no-such-pipe");
        suppressed = SuppressedInSummaries(log, "decision=no-such-pipe");
        return logged + suppressed == kOpens;
      },
      Duration(10000), Duration(100));
  const std::string log = gw.Log().substr(log_before);
  EXPECT_TRUE(accounted) << logged << " logged + " << suppressed << " suppressed != " << kOpens
                         << "\n"
                         << Tail(log);
  EXPECT_GT(suppressed, 0u);

  // 20 lines per second and cause: the flood's seconds, plus one window of slack at each end.
  const auto seconds = static_cast<uint64_t>(flood.count() / 1000) + 2;
  EXPECT_LE(logged, 20 * seconds) << "in " << flood.count() << " ms";
  const size_t lines = Lines(log).size();
  EXPECT_LE(lines, 4 * 20 * seconds);
  EXPECT_LT(log.size(), size_t{kOpens} * 2) << "bytes per refused OPEN must be a few at most";

  // A granted open is another cause: still logged after the flood.
  ASSERT_TRUE(client->SendOpen(2 * kOpens + 1, "logs", kRead));
  ASSERT_TRUE(client->WaitFor(FrameType::kOpenOk, 2 * kOpens + 1, Duration(5000)));
  EXPECT_TRUE(WaitFor(
      [&] { return gw.Log().find("audit: decision=granted", log_before) != std::string::npos; },
      Duration(5000)));

  Report("refused_open_flood", std::to_string(kOpens) + " refused OPENs in " +
                                   std::to_string(flood.count()) +
                                   " ms: " + std::to_string(log.size()) + " log bytes, " +
                                   std::to_string(lines) + " lines, " + std::to_string(logged) +
                                   " audit lines, " + std::to_string(suppressed) + " suppressed");
}

// Makes a client certificate signed by the test CA whose CN is @p cn (any bytes but NUL),
// with the openssl command line, since certs/pipegate-certs refuses control characters.
::testing::AssertionResult MakeClientCert(TempDir& dir, const std::string& cn, Identity* out) {
  const std::string key = dir.Join("odd.key");
  const std::string csr = dir.Join("odd.csr");
  const std::string crt = dir.Join("odd.crt");
  const std::string ext = dir.Join("ext.cnf");
  if (!WriteFile(ext,
                 "[ext]\nbasicConstraints = critical, CA:FALSE\n"
                 "keyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\n")) {
    return ::testing::AssertionFailure() << "cannot write " << ext;
  }
  const std::vector<std::vector<std::string>> steps = {
      {"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
       key},
      {"openssl", "req", "-new", "-key", key, "-subj", "/CN=" + cn, "-utf8", "-out", csr},
      {"openssl",
       "x509",
       "-req",
       "-in",
       csr,
       "-CA",
       PkiPath("ca.crt"),
       "-CAkey",
       PkiPath("ca.key"),
       "-set_serial",
       "7001",
       "-days",
       "1",
       "-sha256",
       "-extfile",
       ext,
       "-extensions",
       "ext",
       "-out",
       crt},
  };
  for (const std::vector<std::string>& argv : steps) {
    CommandResult r = RunCommand(argv, dir.path(), Duration(15000));
    if (r.status != 0) {
      return ::testing::AssertionFailure() << argv[1] << " failed: " << r.err;
    }
  }
  *out = Identity{crt, key, PkiPath("ca.crt")};
  return ::testing::AssertionSuccess();
}

// A newline in the CN used to end the "client '...' connected" line and start a forged one.
TEST(LogAbuse, NewlineInCommonNameCannotForgeALogLine) {
  ASSERT_TRUE(EnsureTestPki());
  IgnoreSigpipe();
  TempDir dir;
  // A CN holds at most 64 characters.
  const std::string forged = "2099-01-01T00:00:00Z pipegated info: FORGED";
  Identity odd;
  ASSERT_TRUE(MakeClientCert(dir, "evil\n" + forged, &odd));

  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  std::string error;
  auto client = RawClient::Connect(gw.port(), odd, &error);
  ASSERT_TRUE(client) << error;
  ASSERT_TRUE(client->SendOpen(1, "logs", kRead));  // Not on the allow list.
  std::optional<RawFrame> reset = client->WaitFor(FrameType::kReset, 1, Duration(5000));
  ASSERT_TRUE(reset);
  const std::string reason = DecodeResetReason(*reset).second;
  EXPECT_EQ(reason.find('\n'), std::string::npos) << reason;
  EXPECT_NE(reason.find("evil\\x0a2099"), std::string::npos) << reason;
  client.reset();  // "client '...' closed" names the identity once more.

  ASSERT_TRUE(
      WaitFor([&] { return gw.Log().find("closed:") != std::string::npos; }, Duration(5000)))
      << Tail(gw.Log());
  const std::string log = gw.Log();
  for (const std::string& line : Lines(log)) {
    EXPECT_NE(line.rfind("2099-", 0), 0u) << "forged line: " << line;
  }
  EXPECT_NE(log.find("client 'evil\\x0a" + forged + "' connected"), std::string::npos) << Tail(log);
  EXPECT_NE(log.find("audit: decision=access-denied identity=\"evil\\x0a2099"), std::string::npos)
      << Tail(log);
}

}  // namespace
}  // namespace pipegate::testing
