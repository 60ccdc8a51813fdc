#pragma once

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pipegate/status.h"

namespace pipegate {

/// @brief The address of the Unix socket at @p path, for bind() or connect().
/// @return The address, or kUsage ("socket path too long: PATH") if @p path does not fit in
/// sun_path with its terminating NUL.
Result<sockaddr_un> UnixAddress(const std::string& path);

/// @brief A user id as messages show it: "uid 65534 (nobody)", or "uid 4242" without a name.
std::string UserLabel(uid_t uid);

/// @brief Device and inode: what "the same file" means for a path this process made or adopted.
struct FileId {
  uint64_t dev = 0;
  uint64_t ino = 0;

  /// @return The id of the file @p st describes.
  static FileId Of(const struct stat& st) {
    return FileId{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
  }
  friend bool operator==(const FileId&, const FileId&) = default;
};

/// @brief When a FIFO or socket found where we would create one may be used instead.
struct AdoptRule {
  /// Owners that are accepted: the user we act for (and, for the gateway, an export's owner).
  std::vector<uid_t> owners;
  /// The mode we would create with. An existing file whose group or other bits give more than
  /// this is refused: someone else could read or write it without our say.
  mode_t mode = 0600;
};

/// @brief Who a FIFO or socket this process creates is given to, as chown(1) USER:GROUP does.
/// An empty field keeps the creating process's effective user (or group). Changing the user
/// needs CAP_CHOWN; changing the group needs membership of it (or CAP_CHOWN).
struct FileOwner {
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
};

/// @brief Decides whether the existing file @p st (from lstat or fstat) at @p path may be used as
/// a FIFO (@p want_fifo) or replaced as a stale socket. Pure: no I/O but a user-name lookup for
/// the message. Sockets are only ever replaced, never reused, so for them only the owner counts.
/// @return OK, or kUsage naming the path and the cause ("it is owned by uid 65534 (nobody) ...").
Status CheckAdoptable(const std::string& path, const struct stat& st, bool want_fifo,
                      const AdoptRule& rule);

/// @brief A FIFO or socket path this process created or adopted, remembered by device and inode,
/// so that later opens and the final removal touch that file and no other.
///
/// A value type with no resources (descriptors are handed to the caller). Not thread-safe; used
/// by one thread at a time.
class LocalPath {
 public:
  LocalPath() = default;
  /// @param st The file as made or adopted (lstat or fstat).
  /// @param created True when this process made the file, so it is ours to remove.
  LocalPath(std::string path, const struct stat& st, bool created)
      : path_(std::move(path)),
        id_(FileId::Of(st)),
        owner_(st.st_uid),
        type_(st.st_mode & S_IFMT),
        created_(created) {}

  /// @return The path as given.
  const std::string& path() const { return path_; }
  /// @return Device and inode recorded when the path was made or adopted.
  FileId id() const { return id_; }
  /// @return True when this process made the file (and RemoveIfOurs() has not run).
  bool created() const { return created_; }

  /// @brief Opens the path again, never following a symlink (O_NOFOLLOW, O_NOCTTY, O_CLOEXEC
  /// are added to @p flags), and checks both before and after the open that it is still the
  /// same device and inode (and, as an inode number freed by a removal may be reused, the same
  /// owner and file type). The caller owns the returned descriptor.
  /// @return The descriptor; kNoReader when a FIFO has no reader yet (ENXIO, worth retrying);
  /// kUsage when the path was removed or replaced (a symlink, another file), naming both; kIo
  /// for other open errors.
  Result<int> Reopen(int flags) const;

  /// @brief Unlinks the path if this process created it and it is still the same file; the
  /// path is forgotten either way. Idempotent.
  void RemoveIfOurs();

 private:
  /// @return True when @p st is the file recorded here.
  bool Same(const struct stat& st) const {
    return FileId::Of(st) == id_ && st.st_uid == owner_ && (st.st_mode & S_IFMT) == type_;
  }

  std::string path_;
  FileId id_;
  uid_t owner_ = 0;
  mode_t type_ = 0;
  bool created_ = false;
};

/// @brief Refuses a file that someone other than root or this process's effective user could
/// change, as OpenSSH's StrictModes does: the file must be owned by root or the effective user
/// and not be group- or world-writable, and so must every directory above it up to / (a
/// directory that others may write to is accepted only with the sticky bit, like /tmp). A
/// symlink is followed one hop at a time and each link's directories, the final target and the
/// target's directories are all checked. Used for the config file, certificates, keys, CA
/// bundles and CRLs.
/// @param what Names the file in the message ("private key").
/// @return OK, or kUsage with a message that names the path and says how to fix it.
Status CheckFilePermissions(const std::string& path, std::string_view what);

/// @brief What CreateOrAdoptFifo made ready.
struct PreparedFifo {
  LocalPath path;
  /// For a FIFO just created with keep_open: a descriptor on it (O_RDONLY | O_NONBLOCK, owned by
  /// the caller, who closes it) to finish it with, e.g. fchown. -1 without keep_open, and for an
  /// adopted FIFO, which is left as it is and not opened at all (an open would release writers
  /// blocked in open()). path.created() tells which it was.
  int fd = -1;
};

/// @brief Makes a FIFO at @p path, finished before it appears there: it is made exclusively at
/// a temporary name in the same directory (mkfifo neither follows nor replaces anything),
/// opened (O_NOFOLLOW) and checked to be a FIFO owned by the effective user, given @p owner and
/// exactly @p rule.mode (not subject to the umask) through that descriptor, and then linked to
/// @p path (link() never replaces anything) and its temporary name removed. So no one ever sees
/// the path with another owner or mode. If something exists at @p path, it is used as it is,
/// only if it is a FIFO that passes CheckAdoptable; a symlink is never followed.
/// @param keep_open For a FIFO it creates: true returns the descriptor it finished the FIFO
/// through (PreparedFifo::fd); false closes it before the FIFO appears at @p path, so that no
/// one who finds the path finds it open (a non-blocking writer must get ENXIO; a mount that
/// hands each opener its own open wants this).
/// @return The FIFO (its LocalPath records the final owner), or kUsage naming the path and the
/// cause (including a refused chown: "cannot give PATH to uid 65534 (nobody): ...").
Result<PreparedFifo> CreateOrAdoptFifo(const std::string& path, const AdoptRule& rule,
                                       const FileOwner& owner = {}, bool keep_open = true);

/// @brief What ListenUnixAt made.
struct ListeningSocket {
  LocalPath path;
  int fd = -1;  ///< Listening, non-blocking, close-on-exec; owned by the caller.
};

/// @brief Binds and listens on a Unix stream socket at @p path with exactly @p rule.mode (the
/// umask is set around bind(), so call it before other threads create files) and @p owner. As
/// for CreateOrAdoptFifo, the socket is bound at a temporary name in the same directory, given
/// its owner there, and then linked to @p path, so it appears there finished and listening. A
/// socket already there that nobody answers on (left by a crashed run) is replaced if one of
/// @p rule.owners owns it; a live one, another owner's, a symlink or any other file is refused.
/// @return The socket (its LocalPath records the final owner), or kUsage naming the path and
/// the cause.
/// @param type SOCK_STREAM, or SOCK_SEQPACKET for a message-mode export.
Result<ListeningSocket> ListenUnixAt(const std::string& path, const AdoptRule& rule, int backlog,
                                     const FileOwner& owner = {}, int type = SOCK_STREAM);

}  // namespace pipegate
