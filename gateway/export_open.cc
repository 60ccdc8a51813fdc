#include "export_open.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "pipegate/address.h"

#include "identity_helper.h"
#include "privilege.h"

namespace pipegate::gateway {

namespace {

constexpr int kFifoPipeSize = 1 << 20;  // F_SETPIPE_SZ on exported FIFOs, for throughput.

// The last component of an export's path is never followed when it is a symlink
// (lstat + O_NOFOLLOW, and for sockets an O_PATH descriptor that connect() goes through), so
// whoever can write to the export's directory cannot point the gateway somewhere else.
Status SymlinkRefused(const ExportConfig& e) {
  return Status(Code::kNotFound,
                fmt::format("pipe '{}' is not available: {} is a symbolic link, which pipegate "
                            "does not follow",
                            e.name, e.path));
}

// The export's file does not exist (yet): nothing has made the FIFO or bound the socket. That is
// "no reader" (SPEC §7), which a client's --wait waits out like any other missing reader.
Status NotThereYet(const ExportConfig& e) {
  return Status(Code::kNoReader, fmt::format("no reader: {} does not exist (yet)", e.path));
}

// The mapped account may not open the local pipe: the local permissions said no, which is
// "access denied" for the client (exit 3), naming the account but not the path.
Status MappedDenied(const ExportConfig& e, const MappedAccount& as, int err) {
  return Status(Code::kAccessDenied,
                fmt::format("access denied: local account '{}' may not open '{}' ({})", as.user,
                            e.name, ErrnoText(err)));
}

OpenDecision Refused(Verdict verdict, ErrorCode error, std::string reason, std::string audit_detail,
                     bool hidden = false) {
  OpenDecision d;
  d.verdict = verdict;
  d.error = error;
  d.reason = std::move(reason);
  d.audit_detail = std::move(audit_detail);
  d.hidden = hidden;
  return d;
}

}  // namespace

OpenOkPayload GrantFor(const ExportConfig& e) {
  auto granted = static_cast<uint8_t>(e.kind == ExportKind::kFifo ? e.access : Access::kDuplex);
  OpenOkPayload ok{static_cast<uint8_t>(e.kind), granted};
  if (e.socket_type == SocketType::kSeqpacket) {
    ok.flags = kExportMessages;
    ok.max_message = e.max_message_size;
  }
  return ok;
}

OpenDecision Authorize(const Snapshot& snap, const PeerIdentity& peer, const OpenPayload& open) {
  const Limits& limits = snap.config.limits;
  Status valid = ValidatePipeName(open.name);
  if (valid.ok() && open.name.size() > limits.max_name_length) {
    valid = Status(Code::kNotFound, fmt::format("pipe names are at most {} characters here",
                                                limits.max_name_length));
  }
  if (!valid.ok()) {
    return Refused(Verdict::kInvalidName, ErrorCode::kNotFound, valid.message(), valid.message());
  }
  std::string no_such_pipe = fmt::format("no such pipe '{}'", open.name);
  const ExportConfig* e = snap.config.Find(open.name);
  if (e == nullptr) {
    return Refused(Verdict::kNoSuchPipe, ErrorCode::kNotFound, std::move(no_such_pipe), "");
  }
  if (!IsAllowed(e->allow, peer)) {
    // hide_existence: the answer is the one an unknown name gets, word for word.
    if (snap.config.hide_existence) {
      return Refused(Verdict::kAccessDenied, ErrorCode::kNotFound, std::move(no_such_pipe),
                     "not on the allow list", /*hidden=*/true);
    }
    return Refused(Verdict::kAccessDenied, ErrorCode::kAccessDenied,
                   fmt::format("access denied for '{}'", peer.Display()), "not on the allow list");
  }
  // A fifo export serves one direction; "duplex" (connect, mount) is granted that direction.
  auto want = static_cast<Access>(open.access);
  if (e->kind == ExportKind::kFifo && want != e->access && want != Access::kDuplex) {
    std::string why = fmt::format("access denied: '{}' is {}-only", e->name,
                                  e->access == Access::kRead ? "read" : "write");
    return Refused(Verdict::kWrongAccess, ErrorCode::kAccessDenied, why, why);
  }
  if ((open.flags & kOpenFlagEarlyData) != 0 && !EarlyDataFits(GrantFor(*e))) {
    std::string why =
        fmt::format("early data needs a byte stream the client writes: '{}' is {}", e->name,
                    e->socket_type == SocketType::kSeqpacket ? "a message export" : "read-only");
    return Refused(Verdict::kWrongAccess, ErrorCode::kProtocol, why, why);
  }
  OpenDecision granted;
  if (!e->identity_map.empty()) {
    std::optional<MappedAccount> account = MapIdentity(*e, peer);
    if (!account) {
      OpenDecision d =
          snap.config.hide_existence
              ? Refused(Verdict::kAccessDenied, ErrorCode::kNotFound, std::move(no_such_pipe),
                        "no identity map entry matches", /*hidden=*/true)
              : Refused(Verdict::kAccessDenied, ErrorCode::kAccessDenied,
                        fmt::format("access denied for '{}': no local account is mapped to it",
                                    peer.Display()),
                        "no identity map entry matches");
      d.unmapped = true;
      return d;
    }
    granted.account = std::move(*account);
  }
  granted.export_config = e;
  return granted;
}

std::optional<ExportInstance> ExportInstance::TryAcquire(std::shared_ptr<ExportSlot> slot,
                                                         uint32_t max_clients) {
  uint32_t before = slot->in_use.fetch_add(1);
  if (max_clients != 0 && before >= max_clients) {
    slot->in_use.fetch_sub(1);
    return std::nullopt;
  }
  return ExportInstance(std::move(slot));
}

namespace {

// Opens a FIFO export whose path lstat() found to be @p st. @p rule is checked on the opened
// file, so a FIFO another user made or opened up is never served, whenever it appeared.
Result<int> OpenFifo(const ExportConfig& e, const struct stat& st, const AdoptRule* rule,
                     bool follow, const MappedAccount* as) {
  if (!S_ISFIFO(st.st_mode)) {
    return Status(Code::kNotFound,
                  fmt::format("pipe '{}' is not available: {} is not a FIFO", e.name, e.path));
  }
  // A follow stream holds a write end too (Linux allows O_RDWR on a FIFO): the pipe then never
  // reports EOF when its local writers close, and the next writer's open() finds a reader.
  const int direction = e.access != Access::kRead ? O_WRONLY : follow ? O_RDWR : O_RDONLY;
  int flags = direction | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY;
  int fd = ::open(e.path.c_str(), flags);
  if (fd < 0) {
    if (errno == ELOOP) return SymlinkRefused(e);
    if (errno == ENOENT) return NotThereYet(e);  // Removed since lstat().
    if (errno == ENXIO) {
      return Status(Code::kNoReader,
                    fmt::format("no reader: nothing has '{}' open for reading", e.name));
    }
    if (as != nullptr && (errno == EACCES || errno == EPERM)) return MappedDenied(e, *as, errno);
    return Status(Code::kIo, fmt::format("cannot open {}: {}", e.path, ErrnoText(errno)));
  }
  return CheckOpenedFifo(e, fd, rule);
}

// Connects to a Unix socket export whose path lstat() found to be @p st.
Result<int> ConnectSocket(const ExportConfig& e, const struct stat& st, const MappedAccount* as) {
  if (!S_ISSOCK(st.st_mode)) {
    return Status(Code::kNotFound,
                  fmt::format("pipe '{}' is not available: {} is not a socket", e.name, e.path));
  }
  // Pin the socket file without following a symlink, then connect through /proc/self/fd so
  // that what is connected to is what was checked (no window to swap in a symlink).
  int path_fd = ::open(e.path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (path_fd < 0) {
    if (errno == ELOOP) return SymlinkRefused(e);
    if (errno == ENOENT) return NotThereYet(e);  // Removed since lstat().
    return Status(Code::kNotFound, fmt::format("pipe '{}' is not available: {}: {}", e.name, e.path,
                                               ErrnoText(errno)));
  }
  struct stat pst {};
  if (::fstat(path_fd, &pst) != 0 || S_ISLNK(pst.st_mode) || !S_ISSOCK(pst.st_mode)) {
    ::close(path_fd);
    return Status(Code::kNotFound,
                  fmt::format("pipe '{}' is not available: {} is not a socket", e.name, e.path));
  }
  const int type = e.socket_type == SocketType::kSeqpacket ? SOCK_SEQPACKET : SOCK_STREAM;
  // One connect() of a new socket to @p via: the socket, or -errno.
  auto attempt = [&](const std::string& via) {
    Result<sockaddr_un> address = UnixAddress(via);
    if (!address) return -ENAMETOOLONG;
    int fd = ::socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    sockaddr_un sun = *address;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0 || errno == EINPROGRESS) {
      return fd;
    }
    int err = errno;
    ::close(fd);
    return -err;
  };
  int fd = attempt(fmt::format("/proc/self/fd/{}", path_fd));
  // A privilege drop (setresuid) can make /proc/self/fd unsearchable, and /proc may be absent:
  // then the connect fails as if the socket were, and the path is used instead (the lstat
  // check above). Asked only after a failure, so a working open costs no extra system call.
  if ((fd == -EACCES || fd == -EPERM || fd == -ENOENT || fd == -ENOTDIR) &&
      ::access("/proc/self/fd", X_OK) != 0) {
    fd = attempt(e.path);
  }
  ::close(path_fd);
  if (fd == -ENAMETOOLONG) {
    return Status(Code::kIo, fmt::format("socket path too long: {}", e.path));
  }
  if (fd < 0) {
    const int err = -fd;
    if (err == EAGAIN) return Status(Code::kBusy, fmt::format("busy: {} backlog is full", e.path));
    if (err == EPROTOTYPE) {
      return Status(Code::kNotFound,
                    fmt::format("pipe '{}' is not available: {} is not a {} socket", e.name, e.path,
                                e.socket_type == SocketType::kSeqpacket ? "seqpacket" : "stream"));
    }
    if (err == ECONNREFUSED || err == ENOENT) {
      return Status(Code::kNoReader,
                    fmt::format("no reader: nothing is listening on '{}'", e.name));
    }
    if (as != nullptr && (err == EACCES || err == EPERM)) return MappedDenied(e, *as, err);
    return Status(Code::kIo, fmt::format("cannot connect to {}: {}", e.path, ErrnoText(err)));
  }
  return fd;
}

}  // namespace

Result<int> OpenExport(const ExportConfig& e, const AdoptRule* rule, bool follow,
                       const MappedAccount* as) {
  struct stat st {};
  if (::lstat(e.path.c_str(), &st) != 0) {
    if (errno == ENOENT) return NotThereYet(e);
    if (as != nullptr && errno == EACCES) return MappedDenied(e, *as, errno);
    return Status(Code::kNotFound, fmt::format("pipe '{}' is not available: {}: {}", e.name, e.path,
                                               ErrnoText(errno)));
  }
  if (S_ISLNK(st.st_mode)) return SymlinkRefused(e);
  return e.kind == ExportKind::kFifo ? OpenFifo(e, st, rule, follow, as) : ConnectSocket(e, st, as);
}

Result<int> CheckOpenedFifo(const ExportConfig& e, int fd, const AdoptRule* rule) {
  struct stat fst {};
  if (::fstat(fd, &fst) != 0 || !S_ISFIFO(fst.st_mode)) {
    ::close(fd);
    return Status(Code::kNotFound, fmt::format("{} is not a FIFO", e.path));
  }
  if (rule != nullptr) {
    if (Status ok = CheckAdoptable(e.path, fst, /*want_fifo=*/true, *rule); !ok.ok()) {
      ::close(fd);
      return Status(Code::kNotFound,
                    fmt::format("pipe '{}' is not available: {}", e.name, ok.message()));
    }
  }
  (void)fcntl(fd, F_SETPIPE_SZ, kFifoPipeSize);  // Best effort; the default 64 KiB works.
  return fd;
}

Result<int> OpenExportAs(const ExportConfig& e, const AdoptRule* rule, bool follow,
                         const MappedAccount& as, const MappedAccount& own,
                         IdentityHelper* helper) {
  if (!NeedsHelper(as, own)) return OpenExport(e, rule, follow, &as);
  if (helper == nullptr) {
    // The loader refuses such a map when no helper runs; this is the belt to those braces.
    return Status(Code::kIo, fmt::format("pipe '{}' is not available: no identity helper runs "
                                         "to open it as {}",
                                         e.name, as.Display()));
  }
  Result<int> fd = helper->Open(e, as, follow);
  if (!fd) return fd;
  // What the helper sent is checked here again: the right kind of file, and for a created
  // FIFO the adoption rule, as for an open the gateway made itself.
  if (e.kind == ExportKind::kFifo) return CheckOpenedFifo(e, *fd, rule);
  struct stat st {};
  if (::fstat(*fd, &st) != 0 || !S_ISSOCK(st.st_mode)) {
    ::close(*fd);
    return Status(Code::kIo, fmt::format("pipe '{}': the identity helper sent no socket", e.name));
  }
  // The helper makes it non-blocking (OpenExport); made sure of here, as the contract says.
  const int flags = ::fcntl(*fd, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK) == 0) (void)::fcntl(*fd, F_SETFL, flags | O_NONBLOCK);
  return fd;
}

// Who may own a `create = true` FIFO found in place: the gateway's effective user now, the user
// it runs as (after dropping privileges), and the export's owner. CheckAccounts has already
// resolved the names.
AdoptRule FifoRule(const GatewayConfig& config, const ExportConfig& e) {
  AdoptRule rule;
  rule.mode = static_cast<mode_t>(e.mode);
  rule.owners.push_back(::geteuid());
  for (const std::string& user : {config.user, e.owner}) {
    if (user.empty()) continue;
    Result<Account> account = ResolveAccount(user, "");
    if (account && account->uid) rule.owners.push_back(*account->uid);
  }
  return rule;
}

}  // namespace pipegate::gateway
