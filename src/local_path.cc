#include "pipegate/local_path.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <system_error>

namespace pipegate {

namespace {

constexpr int kOpenSafe = O_NOFOLLOW | O_NOCTTY | O_CLOEXEC;

Status Refuse(const std::string& path, std::string_view what, std::string_view why) {
  return Status(Code::kUsage, fmt::format("refusing to use {} '{}': {}", what, path, why));
}

std::string Mode(mode_t mode) { return fmt::format("{:04o}", mode & 07777); }

std::string GroupLabel(gid_t gid) {
  group gr{};
  group* found = nullptr;
  char buf[1024];
  if (getgrgid_r(gid, &gr, buf, sizeof buf, &found) == 0 && found != nullptr) {
    return fmt::format("gid {} ({})", gid, found->gr_name);
  }
  return fmt::format("gid {}", gid);
}

// How many temporary names Staging tries before giving up (each taken one is a leftover).
constexpr int kStagingAttempts = 8;
std::atomic<unsigned> staging_counter{0};

// Makes a file appear at its path only once it is finished (owner, group, mode): the file is
// made at a temporary name in the same directory, finished there, then link()ed to its final
// name, which never replaces anything. The directory is reached through a descriptor, so that
// a directory renamed meanwhile cannot redirect any of these steps. The temporary name is
// removed in any case, but only while it still names the file that was made.
//
// Owns the directory descriptor. Not thread-safe; one per file being made.
class Staging {
 public:
  explicit Staging(const std::string& path) {
    const std::filesystem::path p(path);
    name_ = p.filename().string();
    dir_path_ = p.has_parent_path() ? p.parent_path().string() : ".";
    if (name_.empty()) {
      error_ = EISDIR;
      return;
    }
    dir_ = ::open(dir_path_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir_ < 0) error_ = errno;
  }
  ~Staging() {
    Discard();
    if (dir_ >= 0) ::close(dir_);
  }
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;

  /// @return 0, or the errno that keeps the directory from being used.
  int error() const { return error_; }
  int dir() const { return dir_; }
  const std::string& temp() const { return temp_; }

  /// @brief Picks the next temporary name, for the caller to make the file under (on EEXIST,
  /// call again).
  const std::string& NextTemp() {
    temp_ = fmt::format(".pipegate-{}-{}", ::getpid(), staging_counter++);
    made_.reset();
    return temp_;
  }
  /// @return The temporary name as a path for bind(): through /proc/self/fd when there is one,
  /// so that it is the directory held here and its length does not depend on the directory's.
  std::string TempPath() const {
    if (::access("/proc/self/fd", X_OK) == 0)
      return fmt::format("/proc/self/fd/{}/{}", dir_, temp_);
    return dir_path_ + "/" + temp_;
  }
  /// @brief Records @p st as the file made under the temporary name (lstat), so that only it
  /// is ever removed.
  void Made(const struct stat& st) { made_ = FileId::Of(st); }
  /// @return The file recorded by Made(), if any.
  std::optional<FileId> made() const { return made_; }
  /// @brief Links the finished file to its final name and removes the temporary one.
  /// @return 0, or link()'s errno (EEXIST: something is already at the path).
  int Publish() {
    if (::linkat(dir_, temp_.c_str(), dir_, name_.c_str(), 0) != 0) return errno;
    Discard();
    return 0;
  }

 private:
  void Discard() {
    if (!made_) return;
    struct stat st {};
    if (::fstatat(dir_, temp_.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && FileId::Of(st) == *made_) {
      ::unlinkat(dir_, temp_.c_str(), 0);
    }
    made_.reset();
  }

  int dir_ = -1;
  int error_ = 0;
  std::string name_;
  std::string dir_path_;
  std::string temp_;
  std::optional<FileId> made_;
};

// Gives the file open as @p fd (a FIFO, or an O_PATH descriptor) to @p owner; never through a
// path, so never through a symlink.
Status GiveTo(int fd, const std::string& path, const FileOwner& owner) {
  if (!owner.uid && !owner.gid) return Status::Ok();
  if (::fchownat(fd, "", owner.uid.value_or(static_cast<uid_t>(-1)),
                 owner.gid.value_or(static_cast<gid_t>(-1)), AT_EMPTY_PATH) == 0) {
    return Status::Ok();
  }
  const int err = errno;
  std::string whom = owner.uid ? UserLabel(*owner.uid) : "";
  if (owner.gid) whom += (whom.empty() ? "" : " and ") + GroupLabel(*owner.gid);
  return Status(Code::kUsage, fmt::format("cannot give {} to {}: {}", path, whom, ErrnoText(err)));
}

}  // namespace

std::string UserLabel(uid_t uid) {
  passwd pw{};
  passwd* found = nullptr;
  char buf[1024];
  if (getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found != nullptr) {
    return fmt::format("uid {} ({})", uid, found->pw_name);
  }
  return fmt::format("uid {}", uid);
}

Status CheckAdoptable(const std::string& path, const struct stat& st, bool want_fifo,
                      const AdoptRule& rule) {
  const std::string_view what = want_fifo ? "FIFO" : "socket";
  if (S_ISLNK(st.st_mode)) {
    return Refuse(path, what, "it is a symbolic link, which pipegate does not follow");
  }
  if (want_fifo ? !S_ISFIFO(st.st_mode) : !S_ISSOCK(st.st_mode)) {
    return Refuse(path, what, fmt::format("it exists and is not a {}", what));
  }
  if (std::find(rule.owners.begin(), rule.owners.end(), st.st_uid) == rule.owners.end()) {
    std::string expected;
    for (uid_t uid : rule.owners) {
      expected += (expected.empty() ? "" : " or ") + UserLabel(uid);
    }
    return Refuse(path, what,
                  fmt::format("it is owned by {}, not by {}, so someone else made it (remove it "
                              "or choose another path)",
                              UserLabel(st.st_uid), expected));
  }
  // A socket is replaced by a fresh one, so its old mode gives nobody anything.
  const mode_t extra = st.st_mode & 077 & ~rule.mode;
  if (want_fifo && extra != 0) {
    return Refuse(path, what,
                  fmt::format("its mode {} gives group or others more access than {} (remove it, "
                              "or fix with: chmod {} '{}')",
                              Mode(st.st_mode), Mode(rule.mode), Mode(st.st_mode & ~extra), path));
  }
  return Status::Ok();
}

Result<int> LocalPath::Reopen(int flags) const {
  // Checked before the open too, so that a swapped path is noticed while a FIFO has no reader
  // (the open would fail with ENXIO and say nothing about which file it reached).
  struct stat st {};
  if (::lstat(path_.c_str(), &st) != 0) {
    return Status(Code::kUsage, fmt::format("{} is gone ({}); not recreating it behind the user's "
                                            "back",
                                            path_, ErrnoText(errno)));
  }
  auto replaced = [this](bool link) {
    return Status(Code::kUsage,
                  fmt::format("{} was replaced by {} (device/inode changed); refusing to use it",
                              path_, link ? "a symbolic link" : "another file"));
  };
  if (!Same(st)) return replaced(S_ISLNK(st.st_mode));
  int fd = ::open(path_.c_str(), flags | kOpenSafe);
  if (fd < 0) {
    const int err = errno;
    if (err == ENXIO) return Status(Code::kNoReader, fmt::format("{} has no reader", path_));
    if (err == ELOOP) return replaced(true);
    if (err == ENOENT) return Status(Code::kUsage, fmt::format("{} is gone", path_));
    return Status(Code::kIo, fmt::format("cannot open {}: {}", path_, ErrnoText(err)));
  }
  if (::fstat(fd, &st) != 0 || !Same(st)) {
    ::close(fd);
    return replaced(false);
  }
  return fd;
}

void LocalPath::RemoveIfOurs() {
  if (!created_) return;
  created_ = false;
  struct stat st {};
  // Only what we made, and only if it is still the file we made.
  if (::lstat(path_.c_str(), &st) == 0 && Same(st)) ::unlink(path_.c_str());
}

namespace {

// Makes the FIFO for CreateOrAdoptFifo. @return The prepared FIFO, or nullopt when something
// appeared at @p path meanwhile (for the caller to judge).
Result<std::optional<PreparedFifo>> CreateFifo(const std::string& path, const AdoptRule& rule,
                                               const FileOwner& owner, bool keep_open) {
  auto cannot = [&path](int err) {
    return Status(Code::kUsage, fmt::format("cannot create FIFO {}: {}", path, ErrnoText(err)));
  };
  Staging staging(path);
  if (staging.error() != 0) return cannot(staging.error());
  // Owner-only at first; the owner and mode are set on the open FIFO below.
  int made = -1;
  for (int attempt = 0; attempt < kStagingAttempts && made != 0; ++attempt) {
    made = ::mkfifoat(staging.dir(), staging.NextTemp().c_str(), 0600);
    if (made != 0 && errno != EEXIST) break;
  }
  struct stat st {};
  if (made != 0) return cannot(errno);
  if (::fstatat(staging.dir(), staging.temp().c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    staging.Made(st);
  }
  const int fd = ::openat(staging.dir(), staging.temp().c_str(), O_RDONLY | O_NONBLOCK | kOpenSafe);
  if (fd < 0) {
    return Status(Code::kUsage,
                  fmt::format("cannot open the FIFO just made for {}: {}", path, ErrnoText(errno)));
  }
  // Whoever can rename in the directory could have swapped the FIFO between mkfifo() and
  // open(); theirs would not be owned by us.
  if (::fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode) || st.st_uid != ::geteuid() ||
      staging.made() != FileId::Of(st)) {
    ::close(fd);
    return Status(
        Code::kUsage,
        fmt::format("{} was replaced while it was being created; refusing to use it", path));
  }
  Status finished = GiveTo(fd, path, owner);
  // After the chown, which may clear set-id bits; not subject to the umask.
  if (finished.ok() && ::fchmod(fd, rule.mode) != 0) {
    finished = Status(Code::kUsage, fmt::format("cannot chmod {}: {}", path, ErrnoText(errno)));
  }
  if (finished.ok() && ::fstat(fd, &st) != 0) finished = cannot(errno);
  if (!finished.ok()) {
    ::close(fd);
    return finished;
  }
  // Closed before the FIFO appears at its path when the caller does not want it: open, it
  // would let a non-blocking writer who finds the path in that moment in without ENXIO.
  int kept = fd;
  if (!keep_open) {
    ::close(fd);
    kept = -1;
  }
  if (const int err = staging.Publish(); err != 0) {
    if (kept >= 0) ::close(kept);
    if (err == EEXIST) return std::optional<PreparedFifo>();
    return cannot(err);
  }
  return std::optional<PreparedFifo>(PreparedFifo{LocalPath(path, st, true), kept});
}

}  // namespace

Result<PreparedFifo> CreateOrAdoptFifo(const std::string& path, const AdoptRule& rule,
                                       const FileOwner& owner, bool keep_open) {
  struct stat st {};
  int found = ::lstat(path.c_str(), &st);
  if (found != 0 && errno == ENOENT) {
    Result<std::optional<PreparedFifo>> made = CreateFifo(path, rule, owner, keep_open);
    if (!made) return std::move(made).error();
    if (made->has_value()) return std::move(**made);
    // Something appeared at the path meanwhile: judged below like anything found there.
    found = ::lstat(path.c_str(), &st);
  }
  if (found != 0) {
    return Status(Code::kUsage, fmt::format("cannot use {}: {}", path, ErrnoText(errno)));
  }
  if (Status ok = CheckAdoptable(path, st, /*want_fifo=*/true, rule); !ok.ok()) return ok;
  // Pin what was checked without opening the FIFO itself, and check it again on the descriptor.
  const int pin = ::open(path.c_str(), O_PATH | kOpenSafe);
  struct stat pinned {};
  if (pin < 0 || ::fstat(pin, &pinned) != 0) {
    const int err = errno;
    if (pin >= 0) ::close(pin);
    return Status(Code::kUsage, fmt::format("cannot use {}: {}", path, ErrnoText(err)));
  }
  ::close(pin);
  if (FileId::Of(pinned) != FileId::Of(st)) {
    return Status(Code::kUsage, fmt::format("{} changed while it was checked", path));
  }
  if (Status ok = CheckAdoptable(path, pinned, /*want_fifo=*/true, rule); !ok.ok()) return ok;
  return PreparedFifo{LocalPath(path, pinned, false), -1};
}

Result<sockaddr_un> UnixAddress(const std::string& path) {
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (path.size() >= sizeof sun.sun_path) {
    return Status(Code::kUsage, fmt::format("socket path too long: {}", path));
  }
  std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
  return sun;
}

// Bind under a temporary name, set owner and mode, listen, then rename into place, undoing each
// step on failure: the steps share the descriptor and the temporary path, so they stay in one
// function (longer than 60 lines for that reason).
Result<ListeningSocket> ListenUnixAt(const std::string& path, const AdoptRule& rule, int backlog,
                                     const FileOwner& owner, int type) {
  Result<sockaddr_un> address = UnixAddress(path);
  if (!address) return std::move(address).error();
  sockaddr_un sun = *address;
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (Status ok = CheckAdoptable(path, st, /*want_fifo=*/false, rule); !ok.ok()) return ok;
    // A socket nobody answers on is stale (a crashed run): replace it. A live one is not ours.
    const int probe = ::socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    const int rc = ::connect(probe, reinterpret_cast<sockaddr*>(&sun), sizeof sun);
    const int err = errno;
    ::close(probe);
    if (rc == 0 || err != ECONNREFUSED) {
      return Status(Code::kUsage, fmt::format("{} is in use by a running program", path));
    }
    ::unlink(path.c_str());
  }
  Staging staging(path);
  if (staging.error() != 0) {
    return Status(Code::kUsage,
                  fmt::format("cannot listen on {}: {}", path, ErrnoText(staging.error())));
  }
  const int fd = ::socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status(Code::kIo, fmt::format("socket: {}", ErrnoText(errno)));
  auto refuse = [fd, &path](std::string message) {
    ::close(fd);
    return Status(Code::kUsage, std::move(message));
  };
  int bound = -1;
  int bind_err = 0;
  for (int attempt = 0; attempt < kStagingAttempts && bound != 0; ++attempt) {
    staging.NextTemp();
    Result<sockaddr_un> at = UnixAddress(staging.TempPath());
    if (!at) return refuse(fmt::format("cannot listen on {}: {}", path, at.error().message()));
    // bind() creates the file with 0777 & ~umask; there is no fchmod for it, hence the umask
    // (as ssh's StreamLocalBindMask). bind() never follows or replaces an existing name.
    const mode_t old_mask = ::umask(static_cast<mode_t>(~rule.mode & 0777));
    bound = ::bind(fd, reinterpret_cast<sockaddr*>(&*at), sizeof *at);
    bind_err = errno;
    ::umask(old_mask);
    if (bound != 0 && bind_err != EADDRINUSE) break;
  }
  if (bound != 0 || ::listen(fd, backlog) != 0) {
    const int err = bound != 0 ? bind_err : errno;
    return refuse(fmt::format("cannot listen on {}: {}", path, ErrnoText(err)));
  }
  auto replaced = [&] {
    return refuse(
        fmt::format("{} was replaced while it was being created; refusing to use it", path));
  };
  if (::fstatat(staging.dir(), staging.temp().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
      !S_ISSOCK(st.st_mode) || st.st_uid != ::geteuid()) {
    return replaced();
  }
  staging.Made(st);
  if (owner.uid || owner.gid) {
    // A socket file cannot be opened; an O_PATH descriptor pins it for fchownat().
    const int pin = ::openat(staging.dir(), staging.temp().c_str(), O_PATH | kOpenSafe);
    struct stat pinned {};
    if (pin < 0 || ::fstat(pin, &pinned) != 0 || FileId::Of(pinned) != FileId::Of(st)) {
      if (pin >= 0) ::close(pin);
      return replaced();
    }
    Status given = GiveTo(pin, path, owner);
    if (given.ok() && ::fstat(pin, &st) != 0) given = Status(Code::kIo, ErrnoText(errno));
    ::close(pin);
    if (!given.ok()) return refuse(given.message());
  }
  if (const int err = staging.Publish(); err != 0) {
    return refuse(err == EEXIST
                      ? fmt::format("{} appeared while the socket was being made; refusing to "
                                    "replace it",
                                    path)
                      : fmt::format("cannot listen on {}: {}", path, ErrnoText(err)));
  }
  return ListeningSocket{LocalPath(path, st, true), fd};
}

// ---- StrictModes ----

namespace {

// Who may own a checked file or directory: root or the effective user, as OpenSSH's
// secure_permissions() (which names the target user; here the process acts for itself).
bool TrustedOwner(uid_t uid) { return uid == 0 || uid == ::geteuid(); }

std::string TrustedOwners() {
  const uid_t euid = ::geteuid();
  return euid == 0 ? "root" : "root or " + UserLabel(euid);
}

// Checks one file or directory met on the way. @p subject says what it is in the message ("it",
// "its directory '/x'", "its target '/y'"); @p at is its path, for the fix.
Status CheckOne(const std::string& path, std::string_view what, const std::string& subject,
                const std::string& at, const struct stat& st) {
  auto refuse = [&](const std::string& why) {
    return Status(Code::kUsage,
                  fmt::format("refusing to use {} '{}': {} {}", what, path, subject, why));
  };
  if (!TrustedOwner(st.st_uid)) {
    return refuse(fmt::format("is owned by {}, not by {} (fix with: chown {} '{}')",
                              UserLabel(st.st_uid), TrustedOwners(),
                              ::geteuid() == 0 ? "root" : std::to_string(::geteuid()), at));
  }
  const bool group = (st.st_mode & S_IWGRP) != 0;
  const bool world = (st.st_mode & S_IWOTH) != 0;
  if (!group && !world) return Status::Ok();
  const char* writable = group && world ? "world-writable and group-writable"
                         : world        ? "world-writable"
                                        : "group-writable";
  const char* bits = group && world ? "go-w" : world ? "o-w" : "g-w";
  if (S_ISDIR(st.st_mode)) {
    // Only the owner of a file (or of the directory) may rename or remove it in a sticky one.
    if ((st.st_mode & S_ISVTX) != 0) return Status::Ok();
    return refuse(fmt::format("is {}, so others may replace the file (fix with: chmod {} '{}')",
                              writable, bits, at));
  }
  return refuse(fmt::format("is {} (fix with: chmod {} '{}')", writable, bits, at));
}

// Checks every directory above @p file (lexically, up to /). A directory reached through a
// symlink is checked where the link leads (lstat of a deeper prefix follows it), and the link
// itself, which nobody can change but its directory's writers, is skipped.
Status CheckParents(const std::string& path, std::string_view what,
                    const std::filesystem::path& file) {
  for (std::filesystem::path dir = file.parent_path();; dir = dir.parent_path()) {
    struct stat st {};
    if (::lstat(dir.c_str(), &st) != 0) {
      return Status(Code::kUsage, fmt::format("cannot use {} '{}': {}: {}", what, path,
                                              dir.string(), ErrnoText(errno)));
    }
    if (!S_ISLNK(st.st_mode)) {
      Status ok =
          CheckOne(path, what, fmt::format("its directory '{}'", dir.string()), dir.string(), st);
      if (!ok.ok()) return ok;
    }
    if (dir == dir.root_path() || !dir.has_relative_path()) return Status::Ok();
  }
}

}  // namespace

Status CheckFilePermissions(const std::string& path, std::string_view what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Status(Code::kUsage,
                  fmt::format("cannot use {} '{}': {}", what, path, ErrnoText(errno)));
  }
  std::error_code ec;
  std::filesystem::path at = std::filesystem::absolute(path, ec);
  if (ec)
    return Status(Code::kUsage, fmt::format("cannot use {} '{}': {}", what, path, ec.message()));
  // Each hop of a symlink chain: whoever may write a link's directory may point it elsewhere.
  for (int hops = 0;; ++hops) {
    if (Status ok = CheckParents(path, what, at); !ok.ok()) return ok;
    struct stat link {};
    if (::lstat(at.c_str(), &link) != 0 || !S_ISLNK(link.st_mode)) break;
    if (hops == 40) {
      return Status(Code::kUsage,
                    fmt::format("cannot use {} '{}': too many symbolic links", what, path));
    }
    std::filesystem::path next = std::filesystem::read_symlink(at, ec);
    if (ec)
      return Status(Code::kUsage, fmt::format("cannot use {} '{}': {}", what, path, ec.message()));
    at = next.is_absolute() ? next : at.parent_path() / next;
  }
  // What is finally opened: the fully resolved file and its real directories.
  std::filesystem::path real = std::filesystem::canonical(path, ec);
  if (ec)
    return Status(Code::kUsage, fmt::format("cannot use {} '{}': {}", what, path, ec.message()));
  const bool via_link = real != std::filesystem::absolute(path, ec).lexically_normal();
  Status ok = CheckOne(path, what, via_link ? fmt::format("its target '{}'", real.string()) : "it",
                       via_link ? real.string() : path, st);
  if (!ok.ok()) return ok;
  return via_link ? CheckParents(path, what, real) : Status::Ok();
}

}  // namespace pipegate
