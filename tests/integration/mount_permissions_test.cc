// `pipegate mount --mode/--owner/--group` (SPEC §6): a path root mounts is usable by the user
// and group the flags name, with the bytes intact, and refused (EACCES) to everyone else; the
// mount still removes that path at exit although it no longer owns it. Users are switched in a
// forked child (setgroups, setresgid, setresuid), so these tests need root and skip otherwise.

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/data.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/process.h"
#include "support/timing.h"
#include "support/unix_socket.h"

namespace pipegate::testing {
namespace {

constexpr uid_t kNobody = 65534;   // nobody in Debian's base-passwd.
constexpr gid_t kNogroup = 65534;  // nogroup.
constexpr uid_t kStranger = 4242;  // A uid with no passwd entry, in no group of ours.

// Child exit statuses besides errno values (which are below 200).
constexpr int kChecksumMismatch = 201;
constexpr int kCannotSwitch = 202;

#define PG_NEEDS_ROOT() \
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (files given to nobody, users switched)"

// Runs @p body in a forked child as @p uid and @p gid with no supplementary groups, and
// returns its exit status; nullopt when it did not finish within @p timeout (it is killed).
// The body returns 0, an errno value or kChecksumMismatch; it must not use gtest assertions.
std::optional<int> RunAs(uid_t uid, gid_t gid, const std::function<int()>& body, Duration timeout) {
  const pid_t pid = ::fork();
  if (pid < 0) return std::nullopt;
  if (pid == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 ||
        ::setresuid(uid, uid, uid) != 0) {
      ::_exit(kCannotSwitch);
    }
    ::_exit(body());
  }
  int status = 0;
  const bool done = WaitFor([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout);
  if (!done) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return std::nullopt;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Connects to the socket at @p path once. @return 0 if connected, else connect()'s errno.
int ConnectOnce(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  const int err = errno;
  ::close(fd);
  return rc == 0 ? 0 : err;
}

// Sends @p payload through the socket at @p path (to the export's echo server and back).
// @return 0 when the same bytes came back, kChecksumMismatch, or the errno of a refused connect.
int EchoThrough(const std::string& path, const std::string& payload) {
  if (const int err = ConnectOnce(path); err != 0) return err;
  const ExchangeResult result = UnixExchange(path, payload, Duration(20000));
  if (!result.ok) return kChecksumMismatch;
  return Sha256HexOf(result.received) == Sha256HexOf(payload) ? 0 : kChecksumMismatch;
}

// Reads the FIFO at @p path to EOF. @return 0 when the bytes have SHA-256 @p digest,
// kChecksumMismatch, or open()'s errno.
int ReadFifo(const std::string& path, const std::string& digest) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  Sha256 sha;
  std::vector<char> buf(65536);
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    sha.Update(buf.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return sha.HexDigest() == digest ? 0 : kChecksumMismatch;
}

// Opens the FIFO at @p path for reading without waiting for a writer. @return 0 or errno.
int OpenFifoOnce(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

// The mounted path's type, permission bits, owner and group.
struct Perms {
  mode_t type = 0;
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

std::optional<Perms> PermsOf(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return std::nullopt;
  return Perms{st.st_mode & S_IFMT, st.st_mode & 07777, st.st_uid, st.st_gid};
}

// A temp dir that other users may pass through (mkdtemp makes it 0700).
::testing::AssertionResult OpenToOthers(const TempDir& dir) {
  if (::chmod(dir.path().c_str(), 0711) != 0) {
    return ::testing::AssertionFailure() << "chmod " << dir.path() << ": " << std::strerror(errno);
  }
  return ::testing::AssertionSuccess();
}

TEST(MountPermissions, UnixExportGivenToNobodyIsUsableByNobodyOnly) {
  PG_NEEDS_ROOT();
  TempDir dir;
  ASSERT_TRUE(OpenToOthers(dir));
  UnixEchoServer server(dir.Join("srv.sock"));
  ASSERT_TRUE(server.ok()) << server.error();
  GatewayFixture gw(dir, WithExports({ExportSpec::Unix("echo", dir.Join("srv.sock"))}));
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("echo.sock");
  Bridge mount(dir, {"mount", gw.Address("echo"), local, "--mode", "0660", "--owner", "nobody",
                     "--group", "nogroup"});
  ASSERT_TRUE(StartMount(mount, local, /*want_fifo=*/false));
  const std::optional<Perms> perms = PermsOf(local);
  ASSERT_TRUE(perms.has_value());
  EXPECT_EQ(perms->type, static_cast<mode_t>(S_IFSOCK));
  EXPECT_EQ(perms->mode, 0660u);
  EXPECT_EQ(perms->uid, kNobody);
  EXPECT_EQ(perms->gid, kNogroup);

  const std::string payload = RandomStream(7).Next(DataSize(4 << 20, 1 << 20));
  EXPECT_EQ(RunAs(
                kNobody, kNogroup, [&] { return EchoThrough(local, payload); }, Duration(30000)),
            0)
      << "nobody could not exchange bytes through " << local << "; " << mount.Describe();
  // Neither the owner nor in the group: refused by the path's mode.
  EXPECT_EQ(RunAs(
                kStranger, kStranger, [&] { return ConnectOnce(local); }, Duration(10000)),
            EACCES);
  EXPECT_TRUE(mount.Running()) << mount.Describe();
  EXPECT_TRUE(StopMount(mount, local));  // Removed although nobody owns it now.
}

TEST(MountPermissions, UnixExportWithTheDefaultModeRefusesOtherUsers) {
  PG_NEEDS_ROOT();
  TempDir dir;
  ASSERT_TRUE(OpenToOthers(dir));
  UnixEchoServer server(dir.Join("srv.sock"));
  ASSERT_TRUE(server.ok()) << server.error();
  GatewayFixture gw(dir, WithExports({ExportSpec::Unix("echo", dir.Join("srv.sock"))}));
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("echo.sock");
  Bridge mount(dir, {"mount", gw.Address("echo"), local});
  ASSERT_TRUE(StartMount(mount, local, /*want_fifo=*/false));
  const std::optional<Perms> perms = PermsOf(local);
  ASSERT_TRUE(perms.has_value());
  EXPECT_EQ(perms->mode, 0600u);
  EXPECT_EQ(perms->uid, 0u);
  EXPECT_EQ(RunAs(
                kNobody, kNogroup, [&] { return ConnectOnce(local); }, Duration(10000)),
            EACCES);
  // Root itself still gets through.
  const ExchangeResult result = UnixExchange(local, "ping\n", Duration(10000));
  EXPECT_TRUE(result.ok) << result.error << "; " << mount.Describe();
  EXPECT_EQ(result.received, "ping\n");
  EXPECT_TRUE(StopMount(mount, local));
}

TEST(MountPermissions, GroupModeLetsTheGroupIn) {
  PG_NEEDS_ROOT();
  TempDir dir;
  ASSERT_TRUE(OpenToOthers(dir));
  UnixEchoServer server(dir.Join("srv.sock"));
  ASSERT_TRUE(server.ok()) << server.error();
  GatewayFixture gw(dir, WithExports({ExportSpec::Unix("echo", dir.Join("srv.sock"))}));
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("echo.sock");
  // A numeric gid works as well as a name; without --owner the owner stays root.
  Bridge mount(dir, {"mount", gw.Address("echo"), local, "--mode", "660", "--group",
                     std::to_string(kNogroup)});
  ASSERT_TRUE(StartMount(mount, local, /*want_fifo=*/false));
  const std::optional<Perms> perms = PermsOf(local);
  ASSERT_TRUE(perms.has_value());
  EXPECT_EQ(perms->mode, 0660u);
  EXPECT_EQ(perms->uid, 0u);
  EXPECT_EQ(perms->gid, kNogroup);
  EXPECT_EQ(RunAs(
                kStranger, kNogroup, [&] { return EchoThrough(local, "in the group\n"); },
                Duration(20000)),
            0)
      << mount.Describe();
  EXPECT_EQ(RunAs(
                kStranger, kStranger, [&] { return ConnectOnce(local); }, Duration(10000)),
            EACCES);
  EXPECT_TRUE(StopMount(mount, local));
}

TEST(MountPermissions, FifoExportGivenToNobodyIsReadableByNobodyOnly) {
  PG_NEEDS_ROOT();
  TempDir dir;
  ASSERT_TRUE(OpenToOthers(dir));
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("logs.local");
  Bridge mount(dir, {"mount", gw.Address("logs"), local, "--mode", "0660", "--owner", "nobody",
                     "--group", "nogroup"});
  ASSERT_TRUE(StartMount(mount, local, /*want_fifo=*/true));
  const std::optional<Perms> perms = PermsOf(local);
  ASSERT_TRUE(perms.has_value());
  EXPECT_EQ(perms->type, static_cast<mode_t>(S_IFIFO));
  EXPECT_EQ(perms->mode, 0660u);
  EXPECT_EQ(perms->uid, kNobody);
  EXPECT_EQ(perms->gid, kNogroup);

  // The gateway side writes a file into the exported FIFO; nobody reads it from the mount.
  const std::string source = dir.Join("source.bin");
  const std::string digest = WriteRandomFile(source, DataSize(4 << 20, 1 << 20), 11);
  Process writer({"sh", "-c", "cat \"$0\" > \"$1\"", source, gw.ExportPath("logs")});
  EXPECT_EQ(RunAs(
                kNobody, kNogroup, [&] { return ReadFifo(local, digest); }, Duration(30000)),
            0)
      << "nobody did not read the bytes through " << local << "; " << mount.Describe();
  EXPECT_EQ(writer.Wait(Duration(10000)), 0);
  EXPECT_EQ(RunAs(
                kStranger, kStranger, [&] { return OpenFifoOnce(local); }, Duration(10000)),
            EACCES);
  EXPECT_TRUE(mount.Running()) << mount.Describe();
  EXPECT_TRUE(StopMount(mount, local));  // Removed although nobody owns it now.
}

TEST(MountPermissions, FifoExportWithTheDefaultModeRefusesOtherUsers) {
  PG_NEEDS_ROOT();
  TempDir dir;
  ASSERT_TRUE(OpenToOthers(dir));
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("logs.local");
  Bridge mount(dir, {"mount", gw.Address("logs"), local});
  ASSERT_TRUE(StartMount(mount, local, /*want_fifo=*/true));
  const std::optional<Perms> perms = PermsOf(local);
  ASSERT_TRUE(perms.has_value());
  EXPECT_EQ(perms->mode, 0600u);
  EXPECT_EQ(perms->uid, 0u);
  EXPECT_EQ(RunAs(
                kNobody, kNogroup, [&] { return OpenFifoOnce(local); }, Duration(10000)),
            EACCES);
  EXPECT_TRUE(StopMount(mount, local));
}

// A crashed `mount --owner nobody` leaves a socket nobody owns; the next such mount replaces it
// (it would have made the same file), while a plain mount still refuses it.
TEST(MountPermissions, StaleSocketOfTheOwnerIsReplacedOnlyForThatOwner) {
  PG_NEEDS_ROOT();
  TempDir dir;
  UnixEchoServer server(dir.Join("srv.sock"));
  ASSERT_TRUE(server.ok()) << server.error();
  GatewayFixture gw(dir, WithExports({ExportSpec::Unix("echo", dir.Join("srv.sock"))}));
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("m.sock");
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, local.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::close(fd);
    ASSERT_EQ(::chown(local.c_str(), kNobody, kNogroup), 0);
  }
  const ClientResult plain = RunPipegate(dir, {"mount", gw.Address("echo"), local});
  EXPECT_TRUE(IsError(plain, 1, gw.Address("echo"),
                      "refusing to use socket '" + local + "': it is owned by uid 65534"));
  Bridge mount(dir, {"mount", gw.Address("echo"), local, "--owner", "nobody"});
  ASSERT_TRUE(mount.started());
  const ExchangeResult result = UnixExchange(local, "ping\n", Duration(10000));
  EXPECT_TRUE(result.ok) << result.error << "; " << mount.Describe();
  EXPECT_EQ(result.received, "ping\n");
  EXPECT_TRUE(StopMount(mount, local));
}

// Each bad value is refused before anything is made: exit 1, one line naming the value.
TEST(MountPermissions, BadValuesAreOneLineUsageErrors) {
  TempDir dir;
  const std::string local = dir.Join("never.sock");
  const std::string address = "pipe://127.0.0.1:1/echo";
  struct Case {
    std::vector<std::string> flags;
    std::string message;
  };
  const std::string mode_error =
      "--mode must be an octal mode of 3 or 4 digits (at most 0777) that gives the owner read "
      "and write, like 0660, not '";
  const std::vector<Case> cases = {
      {{"--mode", "0"}, mode_error + "0'"},
      {{"--mode", "66"}, mode_error + "66'"},
      {{"--mode", "0o660"}, mode_error + "0o660'"},
      {{"--mode", "0888"}, mode_error + "0888'"},
      {{"--mode", "1777"}, mode_error + "1777'"},
      {{"--mode", "00660"}, mode_error + "00660'"},
      {{"--mode", "rw-rw----"}, mode_error + "rw-rw----'"},
      {{"--mode", "0066"}, mode_error + "0066'"},
      {{"--mode", ""}, mode_error + "'"},
      {{"--owner", "no-such-user-pg"}, "--owner: no such user 'no-such-user-pg'"},
      {{"--group", "no-such-group-pg"}, "--group: no such group 'no-such-group-pg'"},
      {{"--owner", ""}, "--owner needs a name or a number, not ''"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"mount", address, local};
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    const ClientResult result = RunPipegate(dir, args);
    EXPECT_EQ(result.status, 1) << result.Describe();
    EXPECT_EQ(result.err, "pipegate: " + c.message + "\n") << result.Describe();
    EXPECT_FALSE(PathExists(local));
  }
}

}  // namespace
}  // namespace pipegate::testing
