// Security policy end to end: TLS versions and suites, RSA keys, --servername and
// --pin, hide_existence, URI-prefix identities, the audit trail, symlinks, file permissions and
// dropping privileges.

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/pipe_io.h"
#include "support/pki.h"
#include "support/proc_stats.h"
#include "support/process.h"
#include "support/timing.h"
#include "support/unix_socket.h"

namespace pipegate::testing {
namespace {

// `pipegate cat` of export `name` with one line written locally; true if it arrived.
::testing::AssertionResult CatWorks(TempDir& dir, GatewayFixture& gw, const std::string& name,
                                    std::vector<std::string> extra_args = {},
                                    const Identity& who = Alice()) {
  const std::string fifo = gw.ExportPath(name);
  const std::string out = dir.Unique("cat", ".out");
  std::vector<std::string> args = {"cat"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  args.push_back(gw.Address(name));
  Bridge cat(dir, args, StdioSpec::Null(), out, who);
  if (!WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !cat.Running(); },
               Duration(10000)) ||
      !cat.Running()) {
    return ::testing::AssertionFailure() << "cat did not attach: " << cat.Describe();
  }
  const int writer = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (writer < 0) return ::testing::AssertionFailure() << "no reader on " << fifo;
  const bool wrote = write(writer, "policy\n", 7) == 7;
  close(writer);
  if (!wrote || cat.Wait(Duration(10000)) != 0 || ReadFile(out) != "policy\n") {
    return ::testing::AssertionFailure() << cat.Describe();
  }
  return ::testing::AssertionSuccess();
}

// `openssl s_client` against the gateway as alice, with extra arguments.
CommandResult SClient(TempDir& dir, uint16_t port, std::vector<std::string> extra) {
  std::vector<std::string> argv = {"openssl",
                                   "s_client",
                                   "-connect",
                                   "127.0.0.1:" + std::to_string(port),
                                   "-alpn",
                                   "pipegate/1",
                                   "-cert",
                                   PkiPath("alice.crt"),
                                   "-key",
                                   PkiPath("alice.key"),
                                   "-CAfile",
                                   PkiPath("ca.crt"),
                                   "-verify_return_error",
                                   "-brief"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return RunCommand(argv, dir.path(), Duration(10000));
}

// ---- TLS versions, suites and key types ----

TEST(TlsPolicy, Tls12IsRefusedByDefault) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const CommandResult tls12 = SClient(dir, gw.port(), {"-tls1_2"});
  EXPECT_NE(tls12.status, 0) << tls12.err;
  const CommandResult tls13 = SClient(dir, gw.port(), {"-tls1_3"});
  EXPECT_EQ(tls13.status, 0) << tls13.err;
  EXPECT_NE(tls13.err.find("Protocol version: TLSv1.3"), std::string::npos) << tls13.err;
}

TEST(TlsPolicy, Tls12SwitchAllowsOnlyForwardSecretAeadSuites) {
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::FifoRead("logs")});
  options.extra_gateway_toml = "tls_min_version = \"1.2\"\n";
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  const CommandResult tls12 = SClient(dir, gw.port(), {"-tls1_2"});
  EXPECT_EQ(tls12.status, 0) << tls12.err;
  EXPECT_NE(tls12.err.find("Protocol version: TLSv1.2"), std::string::npos) << tls12.err;
  EXPECT_NE(tls12.err.find("Ciphersuite: ECDHE-ECDSA-"), std::string::npos) << tls12.err;
  EXPECT_TRUE(tls12.err.find("GCM") != std::string::npos ||
              tls12.err.find("CHACHA20") != std::string::npos)
      << tls12.err;
  // CBC suites, even with ECDHE, and static RSA key exchange are refused.
  for (const char* cbc : {"ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "AES128-SHA"}) {
    const CommandResult refused = SClient(dir, gw.port(), {"-tls1_2", "-cipher", cbc});
    EXPECT_NE(refused.status, 0) << cbc << ": " << refused.err;
  }
  // TLS 1.3 is still preferred, and the bridge (TLS 1.3 only) still works.
  EXPECT_TRUE(CatWorks(dir, gw, "logs"));
}

TEST(TlsPolicy, RsaCertificatesWorkOnBothSides) {
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::FifoRead("logs")});
  options.cert = "gateway-rsa.crt";
  options.key = "gateway-rsa.key";
  options.exports[0].allow = {"carol"};
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  EXPECT_TRUE(CatWorks(dir, gw, "logs", {}, Identity::Of("carol")));
}

// ---- What the bridge checks about the gateway ----

TEST(TlsPolicy, ServernameOverridesTheNameChecked) {
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::FifoRead("logs")});
  options.cert = "gateway-wrongname.crt";  // Valid for wrong.example only.
  options.key = "gateway-wrongname.key";
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  const ClientResult plain = RunPipegate(dir, {"ls", gw.BaseAddress()});
  EXPECT_TRUE(IsError(plain, 2, gw.BaseAddress(), "name mismatch.*127\\.0\\.0\\.1"));
  EXPECT_TRUE(CatWorks(dir, gw, "logs", {"--servername", "wrong.example"}));
  const ClientResult other =
      RunPipegate(dir, {"ls", "--servername", "other.example", gw.BaseAddress()});
  EXPECT_TRUE(IsError(other, 2, gw.BaseAddress(), "name mismatch.*other\\.example"));
}

TEST(TlsPolicy, PinnedGatewayKey) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string right = PinOf("gateway");
  const std::string wrong = PinOf("gateway-rotated");
  ASSERT_EQ(right.rfind("sha256:", 0), 0u) << right;
  EXPECT_TRUE(CatWorks(dir, gw, "logs", {"--pin", right}));
  // Any one of several pins may match (rotation), in base64 or hex.
  EXPECT_TRUE(CatWorks(dir, gw, "logs", {"--pin", wrong, "--pin", right}));
  const ClientResult refused = RunPipegate(dir, {"ls", "--pin", wrong, gw.BaseAddress()});
  EXPECT_TRUE(
      IsError(refused, 2, gw.BaseAddress(),
              "does not match --pin \\(its pin is " + ReplaceAll(right, "+", "\\+") + "\\)"));
  const ClientResult malformed = RunPipegate(dir, {"ls", "--pin", "sha256:nope", gw.BaseAddress()});
  EXPECT_TRUE(IsError(malformed, 1, gw.BaseAddress(), "bad --pin"));
}

// ---- Who may see and open what ----

TEST(AccessPolicy, HideExistenceAnswersNoSuchPipe) {
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::FifoRead("logs")});
  options.extra_gateway_toml = "hide_existence = true\n";
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  const ClientResult hidden =
      RunPipegate(dir, {"cat", gw.Address("logs")}, ClientOptions::As(Bob()));
  EXPECT_TRUE(IsError(hidden, 4, gw.Address("logs"), "^no such pipe 'logs'$"));
  const ClientResult absent =
      RunPipegate(dir, {"cat", gw.Address("nope")}, ClientOptions::As(Bob()));
  EXPECT_TRUE(IsError(absent, 4, gw.Address("nope"), "^no such pipe 'nope'$"));
  const ClientResult ls = RunPipegate(dir, {"ls", gw.BaseAddress()}, ClientOptions::As(Bob()));
  EXPECT_EQ(ls.status, 0) << ls.Describe();
  EXPECT_EQ(ls.out.find("logs"), std::string::npos) << ls.out;
  // The log still tells the operator the truth.
  EXPECT_NE(gw.Log().find("decision=access-denied identity=\"bob\""), std::string::npos);
  EXPECT_NE(gw.Log().find("answered=no-such-pipe"), std::string::npos);
  EXPECT_TRUE(CatWorks(dir, gw, "logs"));
}

TEST(AccessPolicy, WithoutHideExistenceARefusalSaysAccessDenied) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const ClientResult denied =
      RunPipegate(dir, {"cat", gw.Address("logs")}, ClientOptions::As(Bob()));
  EXPECT_TRUE(IsError(denied, 3, gw.Address("logs"), "^access denied for 'bob'$"));
}

TEST(AccessPolicy, UriPrefixAdmitsSpiffeIdsUnderIt) {
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::FifoRead("logs")});
  options.exports[0].allow = {"spiffe://example.org/ci/*"};
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  EXPECT_TRUE(CatWorks(dir, gw, "logs"));  // alice is spiffe://example.org/ci/alice.
  const ClientResult bob = RunPipegate(dir, {"cat", gw.Address("logs")}, ClientOptions::As(Bob()));
  EXPECT_TRUE(IsError(bob, 3, gw.Address("logs"), "access denied"));
}

TEST(AccessPolicy, EveryDecisionLeavesAnAuditLine) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  ASSERT_TRUE(CatWorks(dir, gw, "logs"));
  RunPipegate(dir, {"cat", gw.Address("logs")}, ClientOptions::As(Bob()));
  RunPipegate(dir, {"cat", gw.Address("nope")});
  RunPipegate(dir, {"write", gw.Address("logs")});
  const std::string log = gw.Log();
  for (const char* line :
       {"audit: decision=granted identity=\"alice\" "
        "identities=\"alice,alice.example,spiffe://example.org/ci/alice\" export=\"logs\" "
        "access=read from=127.0.0.1:",
        "audit: decision=access-denied identity=\"bob\" identities=\"bob\" export=\"logs\" "
        "access=read from=127.0.0.1:",
        "audit: decision=no-such-pipe identity=\"alice\"", "export=\"nope\"",
        "audit: decision=wrong-access identity=\"alice\"",
        "why=\"access denied: 'logs' is read-only\""}) {
    EXPECT_NE(log.find(line), std::string::npos) << "missing: " << line << "\n" << log;
  }
}

// ---- The local side ----

TEST(LocalPolicy, SymlinkedExportsAreNotFollowed) {
  TempDir dir;
  const std::string real_fifo = dir.Join("real.fifo");
  ASSERT_TRUE(MakeFifo(real_fifo));
  ASSERT_EQ(symlink(real_fifo.c_str(), dir.Join("link.fifo").c_str()), 0);
  const std::string server_path = dir.Join("real.sock");
  UnixEchoServer server(server_path);
  ASSERT_TRUE(server.ok());
  ASSERT_EQ(symlink(server_path.c_str(), dir.Join("link.sock").c_str()), 0);
  ExportSpec fifo;
  fifo.name = "fifo";
  fifo.access = "read";
  fifo.path = dir.Join("link.fifo");
  ExportSpec sock = ExportSpec::Unix("sock", dir.Join("link.sock"));
  GatewayFixture gw(dir, WithExports({fifo, sock}));
  ASSERT_TRUE(gw.Start());
  const ClientResult cat = RunPipegate(dir, {"cat", gw.Address("fifo")});
  EXPECT_TRUE(IsError(cat, 4, gw.Address("fifo"), "is a symbolic link"));
  const ClientResult connect = RunPipegate(dir, {"connect", gw.Address("sock")});
  EXPECT_TRUE(IsError(connect, 4, gw.Address("sock"), "is a symbolic link"));
  EXPECT_EQ(server.accepted(), 0);
  EXPECT_FALSE(ProcessHasFileOpen(gw.pid(), real_fifo));
}

TEST(LocalPolicy, WorldWritableConfigOrKeyIsRefused) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  const std::string config = dir.Join("gw.toml");
  ASSERT_TRUE(WriteFile(config, gw.ConfigToml()));
  ASSERT_EQ(chmod(config.c_str(), 0666), 0);
  CommandResult r = RunCommand({BinPath("pipegated"), "--config", config}, dir.path());
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("refusing to use configuration file '" + config +
                       "': it is world-writable and group-writable (fix with: chmod go-w"),
            std::string::npos)
      << r.err;
  r = RunCommand({BinPath("pipegated"), "--check-config", config}, dir.path());
  EXPECT_EQ(r.status, 1) << r.err;

  // A private key anyone may write to.
  const std::string key = dir.Join("gateway.key");
  ASSERT_TRUE(WriteFile(key, ReadFile(PkiPath("gateway.key"))));
  ASSERT_EQ(chmod(key.c_str(), 0602), 0);
  GatewayOptions options = WithExports({ExportSpec::FifoRead("logs")});
  options.key = key;
  GatewayFixture bad_key(dir, options);
  ASSERT_TRUE(WriteFile(config, bad_key.ConfigToml()));
  ASSERT_EQ(chmod(config.c_str(), 0600), 0);
  r = RunCommand({BinPath("pipegated"), "--check-config", config}, dir.path());
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("refusing to use private key '" + key + "': it is world-writable"),
            std::string::npos)
      << r.err;
  r = RunCommand({BinPath("pipegated"), "--config", config}, dir.path());
  EXPECT_EQ(r.status, 1) << r.err;
  ASSERT_EQ(chmod(key.c_str(), 0600), 0);
  r = RunCommand({BinPath("pipegated"), "--check-config", config}, dir.path());
  EXPECT_EQ(r.status, 0) << r.err;
}

TEST(LocalPolicy, CheckConfigLoadsTheCrlAndTheAccounts) {
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::FifoRead("logs")});
  options.extra_gateway_toml = "crl = \"" + PkiPath("ca.crt") + "\"\n";
  GatewayFixture gw(dir, options);
  const std::string config = dir.Join("gw.toml");
  ASSERT_TRUE(WriteFile(config, gw.ConfigToml()));
  CommandResult r = RunCommand({BinPath("pipegated"), "--check-config", config}, dir.path());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("it holds no PEM CRL"), std::string::npos) << r.err;
  options.extra_gateway_toml = "user = \"no-such-user-pg\"\n";
  GatewayFixture gw2(dir, options);
  ASSERT_TRUE(WriteFile(config, gw2.ConfigToml()));
  r = RunCommand({BinPath("pipegated"), "--check-config", config}, dir.path());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("no such user 'no-such-user-pg'"), std::string::npos) << r.err;
}

// Started as root, the gateway binds and creates its FIFOs, then runs as `user`/`group`; the
// FIFO it created belongs to that user.
TEST(LocalPolicy, DropsPrivilegesAfterBinding) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  passwd* nobody = getpwnam("nobody");
  if (nobody == nullptr) GTEST_SKIP() << "no user 'nobody'";
  TempDir dir;
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);  // nobody must reach the FIFO.
  GatewayOptions options = WithExports({ExportSpec::FifoRead("logs")});
  options.extra_gateway_toml = "user = \"nobody\"\n";
  // In the coverage build (the asan stage of scripts/test.sh), a gateway that runs as nobody
  // cannot write its counts into the root-owned build tree; they go to a directory that nobody
  // may write, which scripts/coverage.sh merges back.
  if (const char* counts = std::getenv("PIPEGATE_TEST_DROPPED_GCOV_DIR");
      counts != nullptr && *counts != '\0') {
    ::mkdir(counts, 0755);
    ASSERT_EQ(::chmod(counts, 01777), 0) << counts << ": " << std::strerror(errno);
    options.env.emplace_back("GCOV_PREFIX", counts);
  }
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  EXPECT_TRUE(WaitFor([&] { return gw.Log().find("dropped privileges") != std::string::npos; },
                      Duration(5000)));
  const std::string status = ReadFile("/proc/" + std::to_string(gw.pid()) + "/status");
  const std::string uid = std::to_string(nobody->pw_uid);
  EXPECT_NE(status.find("Uid:\t" + uid + "\t" + uid + "\t" + uid + "\t" + uid), std::string::npos)
      << status;
  struct stat st {};
  ASSERT_EQ(lstat(gw.ExportPath("logs").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, nobody->pw_uid);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_TRUE(CatWorks(dir, gw, "logs"));
}

// `create = true` adopts an existing FIFO only if the gateway's user (or the export's owner)
// owns it and it is no more open than `mode`. Otherwise the gateway starts, warns, and keeps
// that one export unavailable: the operator's data must not reach another user's FIFO.
TEST(LocalPolicy, CreateRefusesAFifoAnotherUserMade) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (chown to nobody)";
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoWrite("cmd"), ExportSpec::FifoRead("logs")}));
  const std::string theirs = gw.ExportPath("cmd");
  ASSERT_TRUE(MakeFifo(theirs, 0600));
  ASSERT_EQ(chmod(theirs.c_str(), 0666), 0);
  ASSERT_EQ(chown(theirs.c_str(), 65534, 65534), 0);
  FifoReaderOptions reader_options;
  reader_options.stop_at_eof = false;
  reader_options.keep_data = true;
  FifoReader attacker(theirs, reader_options);  // Waiting for what the operator writes.
  ASSERT_TRUE(attacker.ok()) << attacker.error();
  ASSERT_TRUE(gw.Start());
  EXPECT_NE(gw.Log().find("export 'cmd': refusing to use FIFO '" + theirs +
                          "': it is owned by uid 65534 (nobody), not by uid 0 (root)"),
            std::string::npos)
      << gw.Log();
  EXPECT_NE(gw.Log().find("the export is unavailable until that is fixed"), std::string::npos);

  const std::string input = dir.Join("in.txt");
  ASSERT_TRUE(WriteFile(input, "operator's secret\n"));
  const ClientResult r =
      RunPipegate(dir, {"write", gw.Address("cmd")}, ClientOptions::Stdin(input));
  EXPECT_TRUE(IsError(r, 4, gw.Address("cmd"),
                      "pipe 'cmd' is not available: refusing to use FIFO '" + theirs +
                          "': it is owned by uid 65534"));
  EXPECT_EQ(attacker.DeliveredBytes(), 0u) << "the write reached the other user's FIFO";
  EXPECT_TRUE(CatWorks(dir, gw, "logs")) << "the other export must keep working";
  // Not made by the gateway, so not removed by it either.
  ASSERT_EQ(gw.Stop(), 0);
  EXPECT_TRUE(IsFifo(theirs));
}

TEST(LocalPolicy, CreateAdoptsOnlyItsOwnFifoNoMoreOpenThanTheMode) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs"), ExportSpec::FifoRead("open")}));
  const std::string own = gw.ExportPath("logs");
  ASSERT_TRUE(MakeFifo(own, 0600));
  ASSERT_EQ(chmod(own.c_str(), 0600), 0);
  const std::string open = gw.ExportPath("open");
  ASSERT_TRUE(MakeFifo(open, 0600));
  ASSERT_EQ(chmod(open.c_str(), 0644), 0);  // mode = "0600": others could read what it carries.
  ASSERT_TRUE(gw.Start());
  EXPECT_NE(gw.Log().find("export 'logs': using the existing FIFO " + own), std::string::npos)
      << gw.Log();
  EXPECT_NE(gw.Log().find("export 'open': refusing to use FIFO '" + open +
                          "': its mode 0644 gives group or others more access than 0600"),
            std::string::npos)
      << gw.Log();
  EXPECT_TRUE(CatWorks(dir, gw, "logs"));
  const ClientResult r = RunPipegate(dir, {"cat", gw.Address("open")});
  EXPECT_TRUE(IsError(r, 4, gw.Address("open"), "its mode 0644 gives group or others more"));
  ASSERT_EQ(gw.Stop(), 0);
  EXPECT_TRUE(IsFifo(own)) << "the gateway removed a FIFO it did not create";
}

// A FIFO the gateway made and someone removed is made again by the next reload.
TEST(LocalPolicy, ReloadRecreatesARemovedFifoItHadCreated) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string fifo = gw.ExportPath("logs");
  ASSERT_EQ(unlink(fifo.c_str()), 0);
  gw.Signal(SIGHUP);
  EXPECT_TRUE(WaitFor([&] { return IsFifo(fifo); }, Duration(5000))) << gw.Log();
  EXPECT_TRUE(CatWorks(dir, gw, "logs"));
  ASSERT_EQ(gw.Stop(), 0);
  EXPECT_FALSE(PathExists(fifo)) << "the FIFO made by the reload was not removed at exit";
}

}  // namespace
}  // namespace pipegate::testing
