// src/local_path.cc: the mount's and the gateway's created paths (exclusive create, safe adopt,
// O_NOFOLLOW reopen with a device/inode check, remove-if-still-ours) and the StrictModes-style
// checks of config, key, certificate, CA and CRL files. Ownership cases chown to nobody (65534)
// and so need root; they skip otherwise.

#include "pipegate/local_path.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/files.h"

namespace pipegate {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr uid_t kNobody = 65534;

#define PG_NEEDS_ROOT() \
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown to another user)"

AdoptRule Mine(mode_t mode = 0600) { return AdoptRule{{::geteuid()}, mode}; }

mode_t ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// Binds a socket at @p path and closes it: the file a crashed run leaves behind.
void MakeStaleSocket(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);
  ::close(fd);
}

// ---- CheckAdoptable (pure) ----

TEST(CheckAdoptable, OwnerAndModeDecide) {
  struct stat st {};
  st.st_mode = S_IFIFO | 0600;
  st.st_uid = 1000;
  EXPECT_TRUE(CheckAdoptable("/p", st, true, AdoptRule{{1000}, 0600}).ok());
  EXPECT_TRUE(CheckAdoptable("/p", st, true, AdoptRule{{0, 1000}, 0600}).ok());
  // Owner bits beyond the mode give no one else anything.
  st.st_mode = S_IFIFO | 0700;
  EXPECT_TRUE(CheckAdoptable("/p", st, true, AdoptRule{{1000}, 0600}).ok());
  st.st_mode = S_IFIFO | 0640;
  EXPECT_TRUE(CheckAdoptable("/p", st, true, AdoptRule{{1000}, 0660}).ok());
  Status open = CheckAdoptable("/p", st, true, AdoptRule{{1000}, 0600});
  EXPECT_EQ(open.code(), Code::kUsage);
  EXPECT_EQ(open.message(),
            "refusing to use FIFO '/p': its mode 0640 gives group or others more access than "
            "0600 (remove it, or fix with: chmod 0600 '/p')");
  st.st_mode = S_IFIFO | 0600;
  EXPECT_THAT(CheckAdoptable("/p", st, true, AdoptRule{{0}, 0600}).message(),
              HasSubstr("refusing to use FIFO '/p': it is owned by uid 1000"));
}

TEST(CheckAdoptable, SocketsAreJudgedByOwnerOnly) {
  struct stat st {};
  st.st_mode = S_IFSOCK | 0777;  // Replaced by a fresh socket: its old mode does not matter.
  st.st_uid = 0;
  EXPECT_TRUE(CheckAdoptable("/s", st, false, AdoptRule{{0}, 0600}).ok());
  st.st_uid = kNobody;
  EXPECT_THAT(CheckAdoptable("/s", st, false, AdoptRule{{0}, 0600}).message(),
              HasSubstr("refusing to use socket '/s': it is owned by uid 65534"));
  st.st_mode = S_IFIFO | 0600;
  st.st_uid = 0;
  EXPECT_EQ(CheckAdoptable("/s", st, false, AdoptRule{{0}, 0600}).message(),
            "refusing to use socket '/s': it exists and is not a socket");
  st.st_mode = S_IFLNK | 0777;
  EXPECT_THAT(CheckAdoptable("/s", st, true, AdoptRule{{0}, 0600}).message(),
              HasSubstr("it is a symbolic link, which pipegate does not follow"));
}

// ---- CreateOrAdoptFifo ----

TEST(CreateOrAdoptFifo, CreatesExclusivelyWithExactlyTheMode) {
  testing::TempDir dir;
  const std::string path = dir.Join("f");
  const mode_t old_mask = ::umask(077);  // The mode is not subject to the umask.
  Result<PreparedFifo> fifo = CreateOrAdoptFifo(path, Mine(0660));
  ::umask(old_mask);
  ASSERT_TRUE(fifo.has_value()) << fifo.error().message();
  EXPECT_TRUE(fifo->path.created());
  ASSERT_GE(fifo->fd, 0);
  ::close(fifo->fd);
  EXPECT_TRUE(testing::IsFifo(path));
  EXPECT_EQ(ModeOf(path), 0660u);
}

// Without keep_open the FIFO appears already closed: a non-blocking writer who finds the path
// gets ENXIO, as with any FIFO nobody reads (the mount hands each opener its own open).
TEST(CreateOrAdoptFifo, WithoutKeepOpenTheFifoAppearsWithNoReader) {
  testing::TempDir dir;
  const std::string path = dir.Join("f");
  Result<PreparedFifo> fifo = CreateOrAdoptFifo(path, Mine(0600), {}, /*keep_open=*/false);
  ASSERT_TRUE(fifo.has_value()) << fifo.error().message();
  EXPECT_TRUE(fifo->path.created());
  EXPECT_EQ(fifo->fd, -1);
  EXPECT_EQ(ModeOf(path), 0600u);
  const int writer = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  const int err = errno;
  if (writer >= 0) ::close(writer);
  EXPECT_EQ(writer, -1);
  EXPECT_EQ(err, ENXIO) << std::strerror(err);
}

TEST(CreateOrAdoptFifo, AdoptsOwnFifoNoMoreOpenThanTheMode) {
  testing::TempDir dir;
  const std::string path = dir.Join("f");
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  Result<PreparedFifo> fifo = CreateOrAdoptFifo(path, Mine());
  ASSERT_TRUE(fifo.has_value()) << fifo.error().message();
  EXPECT_FALSE(fifo->path.created());  // Not ours to remove.
  EXPECT_EQ(fifo->fd, -1);             // Left as it is, not even opened.
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_EQ(fifo->path.id(), FileId::Of(st));
}

TEST(CreateOrAdoptFifo, RefusesAFifoMoreOpenThanTheMode) {
  testing::TempDir dir;
  const std::string path = dir.Join("f");
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  ASSERT_EQ(::chmod(path.c_str(), 0666), 0);
  Result<PreparedFifo> fifo = CreateOrAdoptFifo(path, Mine());
  ASSERT_FALSE(fifo.has_value());
  EXPECT_EQ(fifo.error().code(), Code::kUsage);
  EXPECT_THAT(fifo.error().message(),
              HasSubstr("refusing to use FIFO '" + path +
                        "': its mode 0666 gives group or others more access than 0600"));
  EXPECT_EQ(ModeOf(path), 0666u);  // Left alone.
}

TEST(CreateOrAdoptFifo, RefusesAFifoAnotherUserMade) {
  PG_NEEDS_ROOT();
  testing::TempDir dir;
  const std::string path = dir.Join("f");
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  ASSERT_EQ(::chown(path.c_str(), kNobody, kNobody), 0);
  Result<PreparedFifo> fifo = CreateOrAdoptFifo(path, Mine());
  ASSERT_FALSE(fifo.has_value());
  EXPECT_THAT(fifo.error().message(),
              StartsWith("refusing to use FIFO '" + path + "': it is owned by uid 65534"));
  // The configured export owner is accepted, as for the gateway.
  EXPECT_TRUE(CreateOrAdoptFifo(path, AdoptRule{{::geteuid(), kNobody}, 0600}).has_value());
}

TEST(CreateOrAdoptFifo, NeverFollowsASymlinkNorTakesAnotherFile) {
  testing::TempDir dir;
  const std::string target = dir.Join("precious");
  ASSERT_TRUE(testing::WriteFile(target, "keep\n"));
  const std::string link = dir.Join("link");
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  Result<PreparedFifo> via_link = CreateOrAdoptFifo(link, Mine());
  ASSERT_FALSE(via_link.has_value());
  EXPECT_THAT(via_link.error().message(), HasSubstr("'" + link + "': it is a symbolic link"));
  // A dangling symlink is not created through either.
  const std::string dangling = dir.Join("dangling");
  ASSERT_EQ(::symlink(dir.Join("nowhere").c_str(), dangling.c_str()), 0);
  EXPECT_FALSE(CreateOrAdoptFifo(dangling, Mine()).has_value());
  EXPECT_FALSE(testing::PathExists(dir.Join("nowhere")));
  Result<PreparedFifo> file = CreateOrAdoptFifo(target, Mine());
  ASSERT_FALSE(file.has_value());
  EXPECT_THAT(file.error().message(), HasSubstr("it exists and is not a FIFO"));
  EXPECT_EQ(testing::ReadFile(target), "keep\n");
}

// ---- LocalPath::Reopen and RemoveIfOurs ----

TEST(LocalPath, ReopenOpensTheSameFifoAndSaysWhenNobodyReads) {
  testing::TempDir dir;
  Result<PreparedFifo> fifo = CreateOrAdoptFifo(dir.Join("f"), Mine());
  ASSERT_TRUE(fifo.has_value());
  ::close(fifo->fd);
  Result<int> none = fifo->path.Reopen(O_WRONLY | O_NONBLOCK);
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), Code::kNoReader);
  Result<int> reader = fifo->path.Reopen(O_RDONLY | O_NONBLOCK);
  ASSERT_TRUE(reader.has_value()) << reader.error().message();
  Result<int> writer = fifo->path.Reopen(O_WRONLY | O_NONBLOCK);
  ASSERT_TRUE(writer.has_value()) << writer.error().message();
  EXPECT_EQ(::fcntl(*writer, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  ::close(*writer);
  ::close(*reader);
}

TEST(LocalPath, ReopenRefusesASymlinkSwappedIn) {
  testing::TempDir dir;
  const std::string path = dir.Join("f");
  Result<PreparedFifo> fifo = CreateOrAdoptFifo(path, Mine());
  ASSERT_TRUE(fifo.has_value());
  ::close(fifo->fd);
  const std::string target = dir.Join("precious");
  ASSERT_TRUE(testing::WriteFile(target, "keep\n"));
  ASSERT_EQ(::rename(path.c_str(), dir.Join("moved").c_str()), 0);
  ASSERT_EQ(::symlink(target.c_str(), path.c_str()), 0);
  Result<int> fd = fifo->path.Reopen(O_WRONLY | O_NONBLOCK);
  ASSERT_FALSE(fd.has_value());
  EXPECT_EQ(fd.error().code(), Code::kUsage);
  EXPECT_EQ(fd.error().message(),
            path + " was replaced by a symbolic link (device/inode changed); refusing to use it");
  EXPECT_EQ(testing::ReadFile(target), "keep\n");
  // The symlink is not ours: it stays, and so does the target.
  fifo->path.RemoveIfOurs();
  EXPECT_TRUE(testing::PathExists(path));
  EXPECT_TRUE(testing::IsFifo(dir.Join("moved")));
}

TEST(LocalPath, ReopenRefusesAnotherFifoOrAMissingPath) {
  testing::TempDir dir;
  const std::string path = dir.Join("f");
  Result<PreparedFifo> fifo = CreateOrAdoptFifo(path, Mine());
  ASSERT_TRUE(fifo.has_value());
  ::close(fifo->fd);
  // Moved away, not unlinked: a freed inode number may be reused by the next mkfifo.
  ASSERT_EQ(::rename(path.c_str(), dir.Join("moved").c_str()), 0);
  Result<int> gone = fifo->path.Reopen(O_RDONLY | O_NONBLOCK);
  ASSERT_FALSE(gone.has_value());
  EXPECT_EQ(gone.error().code(), Code::kUsage);
  EXPECT_THAT(gone.error().message(), StartsWith(path + " is gone"));
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);  // Same name, another inode.
  Result<int> other = fifo->path.Reopen(O_RDONLY | O_NONBLOCK);
  ASSERT_FALSE(other.has_value());
  EXPECT_THAT(other.error().message(), HasSubstr("was replaced by another file"));
  fifo->path.RemoveIfOurs();
  EXPECT_TRUE(testing::IsFifo(path));  // Not the FIFO we made.
}

TEST(LocalPath, RemovesOnlyWhatItCreated) {
  testing::TempDir dir;
  const std::string made = dir.Join("made");
  Result<PreparedFifo> fifo = CreateOrAdoptFifo(made, Mine());
  ASSERT_TRUE(fifo.has_value());
  ::close(fifo->fd);
  fifo->path.RemoveIfOurs();
  EXPECT_FALSE(testing::PathExists(made));
  EXPECT_FALSE(fifo->path.created());
  fifo->path.RemoveIfOurs();  // Idempotent.

  const std::string found = dir.Join("found");
  ASSERT_EQ(::mkfifo(found.c_str(), 0600), 0);
  Result<PreparedFifo> adopted = CreateOrAdoptFifo(found, Mine());
  ASSERT_TRUE(adopted.has_value());
  adopted->path.RemoveIfOurs();
  EXPECT_TRUE(testing::IsFifo(found));
}

// ---- ListenUnixAt ----

TEST(ListenUnixAt, BindsWithExactlyTheModeAndReplacesOwnStaleSocket) {
  testing::TempDir dir;
  const std::string path = dir.Join("s");
  MakeStaleSocket(path);
  const mode_t old_mask = ::umask(0);
  Result<ListeningSocket> sock = ListenUnixAt(path, Mine(0600), 16);
  const mode_t restored = ::umask(old_mask);
  EXPECT_EQ(restored, 0u);  // Put back after bind().
  ASSERT_TRUE(sock.has_value()) << sock.error().message();
  EXPECT_TRUE(sock->path.created());
  EXPECT_EQ(ModeOf(path), 0600u);
  ::close(sock->fd);
  sock->path.RemoveIfOurs();
  EXPECT_FALSE(testing::PathExists(path));
}

TEST(ListenUnixAt, RefusesALiveSocketAnotherUsersSocketAndOtherFiles) {
  testing::TempDir dir;
  const std::string live = dir.Join("live");
  Result<ListeningSocket> first = ListenUnixAt(live, Mine(), 16);
  ASSERT_TRUE(first.has_value());
  Result<ListeningSocket> second = ListenUnixAt(live, Mine(), 16);
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().message(), live + " is in use by a running program");
  ::close(first->fd);

  const std::string file = dir.Join("file");
  ASSERT_TRUE(testing::WriteFile(file, "keep\n"));
  EXPECT_THAT(ListenUnixAt(file, Mine(), 16).error().message(),
              HasSubstr("it exists and is not a socket"));
  EXPECT_EQ(testing::ReadFile(file), "keep\n");

  if (::geteuid() != 0) return;
  const std::string theirs = dir.Join("theirs");
  MakeStaleSocket(theirs);
  ASSERT_EQ(::chown(theirs.c_str(), kNobody, kNobody), 0);
  Result<ListeningSocket> refused = ListenUnixAt(theirs, Mine(), 16);
  ASSERT_FALSE(refused.has_value());
  EXPECT_THAT(refused.error().message(),
              StartsWith("refusing to use socket '" + theirs + "': it is owned by uid 65534"));
  EXPECT_TRUE(testing::IsSocket(theirs));  // Not removed.
}

// ---- Giving what is created to another owner ----

// Nothing but @p names in @p dir: no temporary name is left behind.
::testing::AssertionResult OnlyEntries(const testing::TempDir& dir,
                                       std::vector<std::string> names) {
  std::vector<std::string> found;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    found.push_back(entry.path().filename().string());
  }
  std::sort(found.begin(), found.end());
  std::sort(names.begin(), names.end());
  if (found == names) return ::testing::AssertionSuccess();
  std::string listed;
  for (const std::string& name : found) listed += " " + name;
  return ::testing::AssertionFailure() << "the directory holds:" << listed;
}

TEST(CreateOrAdoptFifo, GivesTheFifoToTheOwnerAndStillKnowsItAsItsOwn) {
  PG_NEEDS_ROOT();
  testing::TempDir dir;
  const std::string path = dir.Join("f");
  Result<PreparedFifo> fifo =
      CreateOrAdoptFifo(path, Mine(0660), FileOwner{kNobody, static_cast<gid_t>(kNobody)});
  ASSERT_TRUE(fifo.has_value()) << fifo.error().message();
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_uid, kNobody);
  EXPECT_EQ(st.st_gid, static_cast<gid_t>(kNobody));
  EXPECT_TRUE(OnlyEntries(dir, {"f"}));
  ::close(fifo->fd);
  // The recorded file is the one given away: reopened and removed as ours.
  Result<int> reader = fifo->path.Reopen(O_RDONLY | O_NONBLOCK);
  ASSERT_TRUE(reader.has_value()) << reader.error().message();
  ::close(*reader);
  fifo->path.RemoveIfOurs();
  EXPECT_FALSE(testing::PathExists(path));
}

TEST(CreateOrAdoptFifo, AGroupAloneLeavesTheOwner) {
  testing::TempDir dir;
  const std::string path = dir.Join("f");
  Result<PreparedFifo> fifo = CreateOrAdoptFifo(path, Mine(0640), FileOwner{{}, ::getegid()});
  ASSERT_TRUE(fifo.has_value()) << fifo.error().message();
  ::close(fifo->fd);
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, ::geteuid());
  EXPECT_EQ(st.st_gid, ::getegid());
  EXPECT_EQ(st.st_mode & 07777, 0640u);
}

TEST(CreateOrAdoptFifo, AnExistingFifoIsUsedAsItIs) {
  PG_NEEDS_ROOT();
  testing::TempDir dir;
  const std::string path = dir.Join("f");
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  Result<PreparedFifo> fifo = CreateOrAdoptFifo(path, Mine(0660), FileOwner{kNobody, {}});
  ASSERT_TRUE(fifo.has_value()) << fifo.error().message();
  EXPECT_EQ(fifo->fd, -1);
  EXPECT_FALSE(fifo->path.created());
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST(CreateOrAdoptFifo, ARefusedChownLeavesNothingBehind) {
  testing::TempDir dir;
  const std::string path = dir.Join("f");
  // Giving a file to a group one is not in needs CAP_CHOWN; as root, try it as nobody.
  auto attempt = [&path] {
    Result<PreparedFifo> fifo = CreateOrAdoptFifo(path, Mine(), FileOwner{{}, 4343});
    return !fifo.has_value() &&
                   fifo.error().message().rfind("cannot give " + path + " to gid 4343", 0) == 0
               ? 0
               : 1;
  };
  int refused = 0;
  if (::geteuid() == 0) {
    ASSERT_EQ(::chown(dir.path().c_str(), kNobody, kNobody), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      const gid_t nogroup = kNobody;
      if (::setgroups(0, nullptr) != 0 || ::setresgid(nogroup, nogroup, nogroup) != 0 ||
          ::setresuid(kNobody, kNobody, kNobody) != 0) {
        ::_exit(2);
      }
      ::_exit(attempt());
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    refused = WIFEXITED(status) ? WEXITSTATUS(status) : 3;
  } else {
    refused = attempt();
  }
  EXPECT_EQ(refused, 0);
  EXPECT_TRUE(OnlyEntries(dir, {}));
}

TEST(ListenUnixAt, GivesTheSocketToTheOwnerAndStillKnowsItAsItsOwn) {
  PG_NEEDS_ROOT();
  testing::TempDir dir;
  const std::string path = dir.Join("s");
  Result<ListeningSocket> sock =
      ListenUnixAt(path, Mine(0660), 16, FileOwner{kNobody, static_cast<gid_t>(kNobody)});
  ASSERT_TRUE(sock.has_value()) << sock.error().message();
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_uid, kNobody);
  EXPECT_EQ(st.st_gid, static_cast<gid_t>(kNobody));
  EXPECT_TRUE(OnlyEntries(dir, {"s"}));
  // Listening under its final name (it was bound under a temporary one).
  const int client = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  Result<sockaddr_un> address = UnixAddress(path);
  ASSERT_TRUE(address.has_value());
  EXPECT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&*address), sizeof *address), 0)
      << std::strerror(errno);
  ::close(client);
  ::close(sock->fd);
  sock->path.RemoveIfOurs();
  EXPECT_FALSE(testing::PathExists(path));
}

TEST(ListenUnixAt, ALongPathStillFits) {
  // The temporary name is reached through /proc/self/fd, so it fits whenever the path does.
  testing::TempDir dir;
  const std::string path =
      dir.Join(std::string(sizeof(sockaddr_un::sun_path) - 2 - dir.path().size(), 'x'));
  ASSERT_EQ(path.size(), sizeof(sockaddr_un::sun_path) - 1);
  Result<ListeningSocket> sock = ListenUnixAt(path, Mine(), 16);
  ASSERT_TRUE(sock.has_value()) << sock.error().message();
  EXPECT_TRUE(testing::IsSocket(path));
  ::close(sock->fd);
  sock->path.RemoveIfOurs();
  EXPECT_TRUE(OnlyEntries(dir, {}));
}

// ---- CheckFilePermissions (StrictModes) ----

class StrictModes : public ::testing::Test {
 protected:
  // A file with @p mode under a fresh 0755 directory chain in the temp dir.
  std::string Make(const std::string& rel, mode_t mode) {
    const std::string path = dir_.Join(rel);
    std::string at = dir_.path();
    for (size_t pos = rel.find('/'); pos != std::string::npos; pos = rel.find('/', pos + 1)) {
      at = dir_.Join(rel.substr(0, pos));
      EXPECT_TRUE(::mkdir(at.c_str(), 0755) == 0 || errno == EEXIST) << at;
      EXPECT_EQ(::chmod(at.c_str(), 0755), 0);
    }
    EXPECT_TRUE(testing::WriteFile(path, "data\n"));
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);
    return path;
  }
  testing::TempDir dir_;
};

TEST_F(StrictModes, AcceptsAPrivateFileInASafeChain) {
  EXPECT_TRUE(CheckFilePermissions(Make("a/b/key.pem", 0600), "private key").ok());
  EXPECT_TRUE(CheckFilePermissions(Make("a/b/c/ca.crt", 0644), "CA bundle").ok());
}

TEST_F(StrictModes, RefusesAGroupWritableFile) {
  const std::string path = Make("ca.crt", 0664);
  EXPECT_EQ(CheckFilePermissions(path, "CA bundle").message(),
            "refusing to use CA bundle '" + path +
                "': it is group-writable (fix with: chmod g-w '" + path + "')");
}

TEST_F(StrictModes, RefusesAFileAnotherUserOwns) {
  PG_NEEDS_ROOT();
  const std::string path = Make("ca.crt", 0644);
  ASSERT_EQ(::chown(path.c_str(), kNobody, kNobody), 0);
  Status st = CheckFilePermissions(path, "CA bundle");
  EXPECT_EQ(st.code(), Code::kUsage);
  EXPECT_EQ(st.message(), "refusing to use CA bundle '" + path +
                              "': it is owned by uid 65534 (nobody), not by root (fix with: chown "
                              "root '" +
                              path + "')");
}

TEST_F(StrictModes, RefusesAnyParentOthersMayWriteOrOwn) {
  const std::string path = Make("a/b/c/gw.toml", 0600);
  const std::string a = dir_.Join("a");
  ASSERT_EQ(::chmod(a.c_str(), 0775), 0);  // Two levels up.
  EXPECT_THAT(
      CheckFilePermissions(path, "configuration file").message(),
      HasSubstr("its directory '" + a +
                "' is group-writable, so others may replace the file (fix with: chmod g-w '" + a +
                "')"));
  // The sticky bit (as on /tmp) stops others from renaming or removing what is not theirs.
  ASSERT_EQ(::chmod(a.c_str(), 01777), 0);
  EXPECT_TRUE(CheckFilePermissions(path, "configuration file").ok());
  ASSERT_EQ(::chmod(a.c_str(), 0755), 0);
  if (::geteuid() != 0) return;
  const std::string b = dir_.Join("a/b");
  ASSERT_EQ(::chown(b.c_str(), kNobody, kNobody), 0);
  EXPECT_THAT(CheckFilePermissions(path, "configuration file").message(),
              HasSubstr("its directory '" + b + "' is owned by uid 65534 (nobody)"));
}

TEST_F(StrictModes, ChecksASymlinksTargetAndTheTargetsDirectories) {
  const std::string target = Make("real/ca.crt", 0644);
  const std::string link = dir_.Join("ca.link");
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  EXPECT_TRUE(CheckFilePermissions(link, "CA bundle").ok());
  ASSERT_EQ(::chmod(target.c_str(), 0666), 0);
  EXPECT_EQ(CheckFilePermissions(link, "CA bundle").message(),
            "refusing to use CA bundle '" + link + "': its target '" + target +
                "' is world-writable and group-writable (fix with: chmod go-w '" + target + "')");
  ASSERT_EQ(::chmod(target.c_str(), 0644), 0);
  const std::string real = dir_.Join("real");
  ASSERT_EQ(::chmod(real.c_str(), 0777), 0);
  EXPECT_THAT(CheckFilePermissions(link, "CA bundle").message(),
              HasSubstr("its directory '" + real + "' is world-writable and group-writable"));
}

TEST_F(StrictModes, ChecksWhereEachLinkOfAChainLives) {
  const std::string target = Make("real/key.pem", 0600);
  Make("open/placeholder", 0600);
  const std::string open = dir_.Join("open");
  const std::string hop = open + "/hop";  // The middle link, in a directory anyone may write.
  ASSERT_EQ(::symlink(target.c_str(), hop.c_str()), 0);
  const std::string link = dir_.Join("key.link");
  ASSERT_EQ(::symlink(hop.c_str(), link.c_str()), 0);
  EXPECT_TRUE(CheckFilePermissions(link, "private key").ok());
  ASSERT_EQ(::chmod(open.c_str(), 0757), 0);
  EXPECT_THAT(CheckFilePermissions(link, "private key").message(),
              HasSubstr("its directory '" + open + "' is world-writable"));
}

}  // namespace
}  // namespace pipegate
