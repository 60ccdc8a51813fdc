// SIGHUP (SPEC §4): the gateway rereads its config without dropping established streams, and a
// reload that fails keeps the old state.

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/proc_stats.h"
#include "support/process.h"
#include "support/timing.h"

namespace pipegate::testing {
namespace {

// Whether `pipegate ls` lists @p name. An `ls` that fails is a test failure (and "not
// listed" is then never the answer, so a broken ls cannot pass for a removed export).
bool Lists(TempDir& dir, GatewayFixture& gw, const std::string& name) {
  const ClientResult result = RunPipegate(dir, {"ls", gw.BaseAddress()});
  EXPECT_EQ(result.status, 0) << "ls failed: " << result.err;
  if (result.status != 0) return true;
  for (const auto& line : SplitLines(result.out)) {
    if (line.rfind(name + "\t", 0) == 0) {
      return true;
    }
  }
  return false;
}

TEST(Reload, SighupAddsAnExportAndKeepsEstablishedStreams) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string fifo = gw.ExportPath("logs");
  const std::string out = dir.Join("out");
  Bridge cat(dir, {"cat", gw.Address("logs")}, StdioSpec::Null(), out);
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !cat.Running(); },
                      Duration(10000)))
      << cat.Describe();
  const int writer = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  ASSERT_EQ(write(writer, "before\n", 7), 7);
  ASSERT_TRUE(WaitFor([&] { return ReadFile(out) == "before\n"; }, Duration(10000)));

  ASSERT_TRUE(
      gw.RewriteConfig(WithExports({ExportSpec::FifoRead("logs"), ExportSpec::FifoWrite("cmd")})));
  gw.Signal(SIGHUP);
  EXPECT_TRUE(WaitFor([&] { return Lists(dir, gw, "cmd"); }, Duration(10000), Duration(100)))
      << "the new export never appeared\n"
      << gw.Log();

  ASSERT_EQ(write(writer, "after\n", 6), 6);
  EXPECT_TRUE(WaitFor([&] { return ReadFile(out) == "before\nafter\n"; }, Duration(10000)))
      << "the established stream did not survive the reload: '" << ReadFile(out) << "'; "
      << cat.Describe();
  close(writer);
  EXPECT_EQ(cat.Wait(Duration(10000)), 0) << cat.Describe();
  EXPECT_TRUE(gw.Running());
}

TEST(Reload, SighupRemovesAccess) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  ASSERT_TRUE(Lists(dir, gw, "logs"));
  ExportSpec bob_only = ExportSpec::FifoRead("logs");
  bob_only.allow = {"bob"};
  ASSERT_TRUE(gw.RewriteConfig(WithExports({bob_only})));
  gw.Signal(SIGHUP);
  EXPECT_TRUE(WaitFor([&] { return !Lists(dir, gw, "logs"); }, Duration(10000), Duration(100)));
  const ClientResult result = RunPipegate(dir, {"cat", gw.Address("logs")});
  EXPECT_TRUE(IsError(result, 3, gw.Address("logs"), "access denied"));
}

TEST(Reload, FailedReloadKeepsTheOldConfigAndSaysWhy) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  // One round trip first: this test is about reloading, not about a SIGHUP racing start-up
  // (Gateway.ExitsZeroOnSigtermRightAfterListening covers that).
  ASSERT_TRUE(Lists(dir, gw, "logs"));
  const size_t log_before = gw.Log().size();
  ASSERT_TRUE(gw.RewriteConfigText("[gateway\nthis is not toml\n"));
  gw.Signal(SIGHUP);
  EXPECT_TRUE(
      WaitFor([&] { return gw.Log().find(gw.config_path(), log_before) != std::string::npos; },
              Duration(10000)))
      << "the failed reload was not reported (with the file name):\n"
      << gw.Log();
  EXPECT_TRUE(gw.Running());
  EXPECT_TRUE(Lists(dir, gw, "logs")) << "the old exports are gone after a failed reload";
}

}  // namespace
}  // namespace pipegate::testing

// ---- what a reload does to security ----

namespace pipegate::testing {
namespace {

// A `pipegate cat` of a fifo read export with a local writer held open, so that the stream
// stays up across reloads and each Say() proves it still carries bytes.
class LiveCat {
 public:
  LiveCat(TempDir& dir, GatewayFixture& gw, const std::string& name, const Identity& who = Alice())
      : out_(dir.Unique("live", ".out")),
        cat_(dir, {"cat", gw.Address(name)}, StdioSpec::Null(), out_, who) {
    const std::string fifo = gw.ExportPath(name);
    attached_ = WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !cat_.Running(); },
                        Duration(10000)) &&
                cat_.Running();
    if (attached_) writer_ = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  }
  ~LiveCat() {
    if (writer_ >= 0) close(writer_);
  }
  LiveCat(const LiveCat&) = delete;
  LiveCat& operator=(const LiveCat&) = delete;

  bool attached() const { return attached_ && writer_ >= 0; }
  // Writes a line locally and waits until the remote reader printed it.
  ::testing::AssertionResult Say(const std::string& line) {
    expected_ += line + "\n";
    const std::string text = line + "\n";
    if (write(writer_, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
      return ::testing::AssertionFailure() << "local write failed";
    }
    if (WaitFor([&] { return ReadFile(out_) == expected_; }, Duration(10000))) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure()
           << "the stream stopped: got '" << ReadFile(out_) << "'; " << cat_.Describe();
  }
  Bridge& bridge() { return cat_; }

 private:
  std::string out_;
  Bridge cat_;
  int writer_ = -1;
  bool attached_ = false;
  std::string expected_;
};

// Sends SIGHUP and waits for the gateway to say it reloaded (or why not).
bool ReloadAndWait(GatewayFixture& gw, const std::string& says = "reloaded ") {
  const size_t before = gw.Log().size();
  gw.Signal(SIGHUP);
  return WaitFor([&] { return gw.Log().find(says, before) != std::string::npos; }, Duration(10000));
}

TEST(ReloadSecurity, RotatedCertificateIsUsedByNewConnectionsWhileStreamsContinue) {
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::FifoRead("logs"), ExportSpec::FifoRead("b")});
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  const std::string old_pin = PinOf("gateway");
  const std::string new_pin = PinOf("gateway-rotated");
  LiveCat live(dir, gw, "logs");
  ASSERT_TRUE(live.attached()) << live.bridge().Describe();
  ASSERT_TRUE(live.Say("before"));

  options.cert = "gateway-rotated.crt";
  options.key = "gateway-rotated.key";
  ASSERT_TRUE(gw.RewriteConfig(options));
  ASSERT_TRUE(ReloadAndWait(gw)) << gw.Log();
  EXPECT_TRUE(live.Say("after the rotation"));
  // New connections see the new key, and only it.
  const ClientResult with_new = RunPipegate(dir, {"ls", "--pin", new_pin, gw.BaseAddress()});
  EXPECT_EQ(with_new.status, 0) << with_new.Describe();
  const ClientResult with_old = RunPipegate(dir, {"ls", "--pin", old_pin, gw.BaseAddress()});
  EXPECT_TRUE(IsError(with_old, 2, gw.BaseAddress(), "does not match --pin"));
  EXPECT_TRUE(live.Say("still there"));
}

TEST(ReloadSecurity, IdentityRemovedFromAllowLosesItsStream) {
  TempDir dir;
  ExportSpec logs = ExportSpec::FifoRead("logs");
  logs.allow = {"alice", "bob"};
  ExportSpec other = ExportSpec::FifoRead("other");
  other.allow = {"alice", "bob"};
  GatewayOptions options = WithExports({logs, other});
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  LiveCat alice(dir, gw, "logs", Alice());
  LiveCat bob(dir, gw, "other", Bob());
  ASSERT_TRUE(alice.attached() && bob.attached());
  ASSERT_TRUE(alice.Say("a1"));
  ASSERT_TRUE(bob.Say("b1"));

  options.exports[0].allow = {"bob"};  // alice loses "logs"; bob keeps "other".
  ASSERT_TRUE(gw.RewriteConfig(options));
  ASSERT_TRUE(ReloadAndWait(gw));
  EXPECT_EQ(alice.bridge().Wait(Duration(10000)), 3) << alice.bridge().Describe();
  const ClientResult ended = alice.bridge().Result();
  EXPECT_NE(ended.err.find("access denied for 'alice'"), std::string::npos) << ended.Describe();
  EXPECT_TRUE(bob.Say("b2")) << "a stream that is still allowed was disturbed";
  EXPECT_NE(gw.Log().find("audit: decision=revoked identity=\"alice\""), std::string::npos);
}

TEST(ReloadSecurity, ReloadRevokesFalseKeepsEstablishedStreams) {
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::FifoRead("logs")});
  options.extra_gateway_toml = "reload_revokes = false\n";
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  LiveCat alice(dir, gw, "logs");
  ASSERT_TRUE(alice.attached());
  ASSERT_TRUE(alice.Say("one"));
  options.exports[0].allow = {"bob"};
  ASSERT_TRUE(gw.RewriteConfig(options));
  ASSERT_TRUE(ReloadAndWait(gw));
  EXPECT_TRUE(alice.Say("two"));
  // New opens follow the new list at once.
  const ClientResult again = RunPipegate(dir, {"ls", gw.BaseAddress()});
  EXPECT_EQ(again.status, 0) << again.err;
  EXPECT_EQ(again.out.find("logs"), std::string::npos) << again.out;
}

TEST(ReloadSecurity, ReloadedCrlEndsTheRevokedClientsSession) {
  TempDir dir;
  ExportSpec logs = ExportSpec::FifoRead("logs");
  logs.allow = {"mallory"};
  ExportSpec other = ExportSpec::FifoRead("other");
  GatewayOptions options = WithExports({logs, other});
  options.extra_gateway_toml = "crl = \"" + PkiPath("crl-empty.pem") + "\"\n";
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  LiveCat mallory(dir, gw, "logs", Identity::Of("mallory"));
  LiveCat alice(dir, gw, "other");
  ASSERT_TRUE(mallory.attached() && alice.attached()) << mallory.bridge().Describe();
  ASSERT_TRUE(mallory.Say("m1"));

  options.extra_gateway_toml = "crl = \"" + PkiPath("crl.pem") + "\"\n";  // Revokes mallory.
  ASSERT_TRUE(gw.RewriteConfig(options));
  ASSERT_TRUE(ReloadAndWait(gw));
  EXPECT_EQ(mallory.bridge().Wait(Duration(10000)), 3) << mallory.bridge().Describe();
  EXPECT_NE(mallory.bridge().Result().err.find("revoked"), std::string::npos)
      << mallory.bridge().Describe();
  EXPECT_TRUE(alice.Say("a1"));
  // And mallory cannot come back.
  const ClientResult retry =
      RunPipegate(dir, {"ls", gw.BaseAddress()}, ClientOptions::As(Identity::Of("mallory")));
  EXPECT_TRUE(IsError(retry, 2, gw.BaseAddress(), "revoked"));
}

TEST(ReloadSecurity, BrokenConfigOrCertificateKeepsTheOldOneServing) {
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::FifoRead("logs"), ExportSpec::FifoRead("b")});
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  LiveCat live(dir, gw, "logs");
  ASSERT_TRUE(live.attached());
  ASSERT_TRUE(live.Say("one"));

  // A syntax error.
  ASSERT_TRUE(gw.RewriteConfigText("[gateway\n"));
  ASSERT_TRUE(ReloadAndWait(gw, "reload failed, keeping the running configuration"));
  EXPECT_TRUE(live.Say("two"));
  EXPECT_TRUE(Lists(dir, gw, "b"));
  // A key that does not match the certificate.
  GatewayOptions mismatched = options;
  mismatched.key = "gateway-rotated.key";
  mismatched.exports.pop_back();
  ASSERT_TRUE(gw.RewriteConfig(mismatched));
  ASSERT_TRUE(ReloadAndWait(gw, "cannot load private key"));
  EXPECT_TRUE(live.Say("three"));
  EXPECT_TRUE(Lists(dir, gw, "b")) << "a failed reload half-applied the new exports";
  // A CRL file that is not one.
  GatewayOptions bad_crl = options;
  bad_crl.extra_gateway_toml = "crl = \"" + PkiPath("ca.crt") + "\"\n";
  ASSERT_TRUE(gw.RewriteConfig(bad_crl));
  ASSERT_TRUE(ReloadAndWait(gw, "it holds no PEM CRL"));
  EXPECT_TRUE(live.Say("four"));
  EXPECT_TRUE(gw.Running());
}

}  // namespace
}  // namespace pipegate::testing
