// Identity mapping (issue 12; docs/security.md §11): an export with `connect_as` or
// `[[export.map]]` opens its local pipe as the local account the client's identity maps to, so
// the service behind a Unix socket tells clients apart by SO_PEERCRED and a FIFO's permissions
// apply to the mapped user. The gateway drops to nobody; a root helper process does the opens.
// These tests create two local users (useradd, removed again by the fixture) and need root.

#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/gateway_probe.h"
#include "support/process.h"
#include "support/timing.h"
#include "support/unix_socket.h"

namespace pipegate::testing {
namespace {

// A local user made for one test (useradd -M -r -U, so a group of the same name too), removed
// with its group when the test ends, failed or not.
class LocalUser {
 public:
  explicit LocalUser(const std::string& suffix)
      : name_("pgt" + std::to_string(::getpid()) + suffix) {
    Process add({"useradd", "-M", "-r", "-U", "-s", "/usr/sbin/nologin", name_});
    if (add.Wait(Duration(10000)) != 0) return;
    if (struct passwd* pw = ::getpwnam(name_.c_str()); pw != nullptr) {
      uid_ = pw->pw_uid;
      gid_ = pw->pw_gid;
    }
  }
  ~LocalUser() {
    Process del({"userdel", name_});
    (void)del.Wait(Duration(10000));
  }
  LocalUser(const LocalUser&) = delete;
  LocalUser& operator=(const LocalUser&) = delete;

  bool ok() const { return uid_ != 0; }
  const std::string& name() const { return name_; }
  uid_t uid() const { return uid_; }
  gid_t gid() const { return gid_; }
  std::string Creds() const { return std::to_string(uid_) + ":" + std::to_string(gid_); }

 private:
  std::string name_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
};

// A Unix socket server that answers each connection with "UID:GID\n" of its peer, as
// SO_PEERCRED reports it, and closes. Every wait is a poll of at most 50 ms.
class PeerCredServer {
 public:
  explicit PeerCredServer(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    path.copy(sun.sun_path, sizeof sun.sun_path - 1);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0 ||
        ::chmod(path.c_str(), 0666) != 0 || ::listen(fd_, 64) != 0) {
      return;
    }
    thread_ = std::thread([this] { Serve(); });
  }
  ~PeerCredServer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
    ::unlink(path_.c_str());
  }
  PeerCredServer(const PeerCredServer&) = delete;
  PeerCredServer& operator=(const PeerCredServer&) = delete;

  bool ok() const { return thread_.joinable(); }

 private:
  void Serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      ucred cred{};
      socklen_t len = sizeof cred;
      std::string answer = "?\n";
      if (::getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
        answer = std::to_string(cred.uid) + ":" + std::to_string(cred.gid) + "\n";
      }
      (void)::send(c, answer.data(), answer.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  }

  std::string path_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class IdentityMap : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (creates users; the helper runs as root)";
    a_ = std::make_unique<LocalUser>("a");
    b_ = std::make_unique<LocalUser>("b");
    ASSERT_TRUE(a_->ok() && b_->ok()) << "useradd failed for " << a_->name() << "/" << b_->name();
    // The mapped users must reach the files in it (the gateway itself, as nobody, need not).
    ASSERT_EQ(::chmod(dir_.path().c_str(), 0711), 0);
  }

  // alice -> user a, bob -> user b; carol is allowed but maps to nothing.
  std::string MapAliceAndBob() const {
    return "[[export.map]]\nidentity = \"alice\"\nuser = \"" + a_->name() +
           "\"\n[[export.map]]\nidentity = \"bob\"\nuser = \"" + b_->name() + "\"\n";
  }

  // The pid in the gateway's "identity helper started (pid N)" line, or -1.
  static pid_t HelperPid(GatewayFixture& gw) {
    std::smatch m;
    const std::string log = gw.Log();
    static const std::regex started("identity helper started \\(pid ([0-9]+)\\)");
    if (!std::regex_search(log, m, started)) return -1;
    return static_cast<pid_t>(std::stol(m[1]));
  }

  TempDir dir_;
  std::unique_ptr<LocalUser> a_;
  std::unique_ptr<LocalUser> b_;
};

TEST_F(IdentityMap, UnixPeerCredentialsAreTheMappedAccount) {
  const std::string sock = dir_.Join("peer.sock");
  PeerCredServer server(sock);
  ASSERT_TRUE(server.ok());
  ExportSpec peer = ExportSpec::Unix("peer", sock);
  peer.allow = {"alice", "bob", "carol"};
  peer.extra_toml = MapAliceAndBob();
  GatewayOptions options = WithExports({peer});
  options.extra_gateway_toml = "user = \"nobody\"\n";
  GatewayFixture gw(dir_, options);
  ASSERT_TRUE(gw.Start());
  ASSERT_GT(HelperPid(gw), 0) << gw.Log();

  ClientResult alice =
      RunPipegate(dir_, {"connect", gw.Address("peer")}, ClientOptions::As(Alice()));
  EXPECT_EQ(alice.status, 0) << alice.Describe();
  EXPECT_EQ(alice.out, a_->Creds() + "\n") << alice.Describe();
  ClientResult bob = RunPipegate(dir_, {"connect", gw.Address("peer")}, ClientOptions::As(Bob()));
  EXPECT_EQ(bob.status, 0) << bob.Describe();
  EXPECT_EQ(bob.out, b_->Creds() + "\n") << bob.Describe();

  ClientResult carol =
      RunPipegate(dir_, {"connect", gw.Address("peer")}, ClientOptions::As(Identity::Of("carol")));
  EXPECT_TRUE(IsError(carol, 3, gw.Address("peer"), "access denied")) << carol.Describe();

  std::map<std::string, uint64_t> k = ReadCounters(gw);
  EXPECT_EQ(k["mapped_opens"], 2u);
  EXPECT_EQ(k["mapping_refused"], 1u);
  EXPECT_EQ(k["acl_denied"], 0u);
  // The audit line says which account each open was made as; the gateway itself is nobody.
  EXPECT_NE(gw.Log().find("as=\"" + a_->name() + " (uid " + std::to_string(a_->uid())),
            std::string::npos)
      << gw.Log();
  EXPECT_NE(gw.Log().find("dropped privileges: now uid 65534"), std::string::npos) << gw.Log();
}

// A reload that changes the map reaches the helper too, which reads the file again and from
// then on serves only the new mapping. (The gateway stays root here: one that dropped to
// nobody cannot read the test PKI's key again on reload.)
TEST_F(IdentityMap, ReloadChangesTheMapInTheHelperToo) {
  const std::string sock = dir_.Join("peer.sock");
  PeerCredServer server(sock);
  ASSERT_TRUE(server.ok());
  ExportSpec peer = ExportSpec::Unix("peer", sock);
  peer.extra_toml = "connect_as = \"" + a_->name() + "\"\n";
  GatewayFixture gw(dir_, WithExports({peer}));
  ASSERT_TRUE(gw.Start());
  ClientResult before = RunPipegate(dir_, {"connect", gw.Address("peer")});
  EXPECT_EQ(before.out, a_->Creds() + "\n") << before.Describe();

  peer.extra_toml = "connect_as = \"" + b_->name() + ":" + b_->name() + "\"\n";
  ASSERT_TRUE(gw.RewriteConfig(WithExports({peer})));
  gw.Signal(SIGHUP);
  ASSERT_TRUE(WaitFor([&] { return ReadCounters(gw)["reloads"] >= 1; }, Duration(10000)))
      << gw.Log();
  ClientResult after = RunPipegate(dir_, {"connect", gw.Address("peer")});
  EXPECT_EQ(after.status, 0) << after.Describe();
  EXPECT_EQ(after.out, b_->Creds() + "\n") << after.Describe();
}

TEST_F(IdentityMap, FifoPermissionsApplyToTheMappedAccount) {
  // A FIFO only user a may write (0600, owned by a).
  const std::string fifo = dir_.Join("cmd.fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  ASSERT_EQ(::chown(fifo.c_str(), a_->uid(), a_->gid()), 0);
  ASSERT_EQ(::chmod(fifo.c_str(), 0600), 0);
  // The local reader (the test, as root).
  int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  ExportSpec cmd;
  cmd.name = "cmd";
  cmd.kind = "fifo";
  cmd.access = "write";
  cmd.path = fifo;
  cmd.allow = {"alice", "bob"};
  cmd.extra_toml = MapAliceAndBob();
  GatewayOptions options = WithExports({cmd});
  options.extra_gateway_toml = "user = \"nobody\"\n";
  GatewayFixture gw(dir_, options);
  ASSERT_TRUE(gw.Start());

  const std::string input = dir_.Join("in.txt");
  ASSERT_TRUE(WriteFile(input, "written as a\n"));
  ClientResult alice =
      RunPipegate(dir_, {"write", gw.Address("cmd")}, ClientOptions::As(Alice()).WithStdin(input));
  EXPECT_EQ(alice.status, 0) << alice.Describe();
  std::string got;
  ASSERT_TRUE(WaitFor(
      [&] {
        char buf[256];
        ssize_t n = ::read(reader, buf, sizeof buf);
        if (n > 0) got.append(buf, static_cast<size_t>(n));
        return got.size() >= 13;
      },
      Duration(5000)));
  EXPECT_EQ(got, "written as a\n");

  // bob maps to user b, whom the FIFO's mode refuses: "access denied" (exit 3).
  ClientResult bob =
      RunPipegate(dir_, {"write", gw.Address("cmd")}, ClientOptions::As(Bob()).WithStdin(input));
  EXPECT_TRUE(IsError(bob, 3, gw.Address("cmd"), "access denied.*" + b_->name())) << bob.Describe();
  EXPECT_EQ(ReadCounters(gw)["mapped_denied"], 1u);
  ::close(reader);
}

// A hostile client floods OPENs of a mapped export while the helper is stuck (SIGSTOP): the
// first one waits out the reply timeout, the rest fail at once, and another client's unmapped
// open on the same (single) worker is delayed by at most about one timeout. When the helper
// answers again, mapped opens work again.
TEST_F(IdentityMap, StuckHelperCostsOtherClientsAtMostOneTimeout) {
  const std::string sock = dir_.Join("peer.sock");
  PeerCredServer server(sock);
  ASSERT_TRUE(server.ok());
  UnixEchoServer echo(dir_.Join("echo.sock"));
  ASSERT_TRUE(echo.ok()) << echo.error();
  ExportSpec peer = ExportSpec::Unix("peer", sock);
  peer.allow = {"alice", "bob"};
  peer.extra_toml = MapAliceAndBob();
  ExportSpec plain = ExportSpec::Unix("plain", dir_.Join("echo.sock"));
  plain.allow = {"bob"};
  GatewayOptions options = WithExports({peer, plain});
  options.workers = 1;
  GatewayFixture gw(dir_, options);
  ASSERT_TRUE(gw.Start());
  const pid_t helper = HelperPid(gw);
  ASSERT_GT(helper, 0) << gw.Log();

  ASSERT_EQ(::kill(helper, SIGSTOP), 0);
  std::vector<std::unique_ptr<Bridge>> flood;
  for (int i = 0; i < 8; ++i) {
    flood.push_back(
        std::make_unique<Bridge>(dir_, std::vector<std::string>{"connect", gw.Address("peer")},
                                 StdioSpec::Null(), "", Alice()));
  }
  const std::string input = dir_.Join("ping.txt");
  ASSERT_TRUE(WriteFile(input, "ping"));
  ClientResult plain_open = RunPipegate(dir_, {"connect", gw.Address("plain")},
                                        ClientOptions::As(Bob()).WithStdin(input));
  EXPECT_EQ(plain_open.status, 0) << plain_open.Describe();
  EXPECT_EQ(plain_open.out, "ping");
  // A client start and TLS take ~50 ms; the stuck helper may add one reply timeout (1 s) and
  // one mutex wait (1 s) at most.
  EXPECT_LT(plain_open.elapsed.count(), Scaled(Duration(3000)).count()) << plain_open.Describe();
  for (auto& b : flood) {
    std::optional<int> status = b->Wait(Duration(10000));
    EXPECT_TRUE(status.has_value() && *status != 0) << b->Describe();
    EXPECT_NE(b->Result().err.find("identity helper"), std::string::npos) << b->Describe();
  }
  EXPECT_GE(ReadCounters(gw)["identity_helper_failures"], 8u);

  ASSERT_EQ(::kill(helper, SIGCONT), 0);
  // The late reply is collected by the next mapped open, which then goes through.
  ClientResult later;
  ASSERT_TRUE(WaitFor(
      [&] {
        later = RunPipegate(dir_, {"connect", gw.Address("peer")}, ClientOptions::As(Alice()));
        return later.status == 0;
      },
      Duration(5000), Duration(100)))
      << later.Describe();
  EXPECT_EQ(later.out, a_->Creds() + "\n");
}

// A helper that dies takes the mapped exports down with a clear error; the rest are served.
TEST_F(IdentityMap, DeadHelperFailsMappedExportsOnly) {
  const std::string sock = dir_.Join("peer.sock");
  PeerCredServer server(sock);
  ASSERT_TRUE(server.ok());
  UnixEchoServer echo(dir_.Join("echo.sock"));
  ASSERT_TRUE(echo.ok()) << echo.error();
  ExportSpec peer = ExportSpec::Unix("peer", sock);
  peer.allow = {"alice"};
  peer.extra_toml = "connect_as = \"" + a_->name() + "\"\n";
  ExportSpec plain = ExportSpec::Unix("plain", dir_.Join("echo.sock"));
  GatewayFixture gw(dir_, WithExports({peer, plain}));
  ASSERT_TRUE(gw.Start());
  const pid_t helper = HelperPid(gw);
  ASSERT_GT(helper, 0) << gw.Log();
  ASSERT_EQ(::kill(helper, SIGKILL), 0);

  ClientResult mapped = RunPipegate(dir_, {"connect", gw.Address("peer")});
  EXPECT_NE(mapped.status, 0) << mapped.Describe();
  EXPECT_NE(mapped.err.find("identity helper has exited"), std::string::npos) << mapped.Describe();
  EXPECT_TRUE(WaitFor([&] { return gw.Log().find("identity helper (pid") != std::string::npos; },
                      Duration(2000)))
      << gw.Log();
  const std::string input = dir_.Join("ping.txt");
  ASSERT_TRUE(WriteFile(input, "ping"));
  ClientResult plain_open =
      RunPipegate(dir_, {"connect", gw.Address("plain")}, ClientOptions::Stdin(input));
  EXPECT_EQ(plain_open.status, 0) << plain_open.Describe();
  EXPECT_EQ(plain_open.out, "ping");
  EXPECT_TRUE(gw.Running());
}

// Without root there is no helper: a map to another account is a configuration error naming
// the export and the line (the gateway's own account may still be mapped).
TEST_F(IdentityMap, WithoutRootForeignAccountsAreAConfigError) {
  ExportSpec peer = ExportSpec::Unix("peer", dir_.Join("peer.sock"));
  peer.extra_toml = "connect_as = \"" + a_->name() + "\"\n";
  ExportSpec own = ExportSpec::Unix("own", dir_.Join("own.sock"));
  own.extra_toml = "connect_as = \"nobody:nogroup\"\n";
  GatewayFixture gw(dir_, WithExports({peer, own}));
  const std::string config = dir_.Join("unprivileged.toml");
  ASSERT_TRUE(WriteFile(config, gw.ConfigToml()));
  Process check([&] {
    ProcessOptions o =
        ProcessOptions::Of({"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            BinPath("pipegated"), "--check-config", config});
    o.stderr_spec = StdioSpec::File(dir_.Join("check.err"));
    return o;
  }());
  EXPECT_EQ(check.Wait(Duration(10000)), 1);
  const std::string err = ReadFile(dir_.Join("check.err"));
  // connect_as of 'peer' is on the line after its `allow`; only that export is refused.
  EXPECT_TRUE(std::regex_search(err, std::regex(":[0-9]+: export 'peer': cannot open as user '" +
                                                a_->name() + "'.*not as root")))
      << err;
  EXPECT_EQ(err.find("export 'own': cannot open"), std::string::npos) << err;
}

}  // namespace
}  // namespace pipegate::testing
