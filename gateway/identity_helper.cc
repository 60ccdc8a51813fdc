// The identity helper (docs/security.md §11): the gateway's client side, and the helper
// process's loop. One request, one reply, over a SOCK_SEQPACKET socketpair; a reply to an open
// carries the descriptor (SCM_RIGHTS).

#include "identity_helper.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <vector>

#include "pipegate/log.h"

#include "export_open.h"

namespace pipegate::gateway {

namespace {

constexpr int kHelperFd = 3;  // The helper's end of the socketpair, in the helper process.
constexpr uint32_t kMagic = 0x50474831;  // "PGH1": the request format's version.
constexpr uint8_t kOpOpen = 1;
constexpr uint8_t kOpReload = 2;
constexpr size_t kMaxMessage = 16384;   // A request: header, name (≤ 128) and path.
constexpr size_t kMaxReplyText = 2048;  // Longer reasons are cut.

struct RequestHeader {
  uint32_t magic;
  uint32_t seq;
  uint8_t op;
  uint8_t follow;
  uint16_t name_len;
  uint16_t path_len;
  uint16_t reserved;
  uint32_t uid;
  uint32_t gid;
};

struct ReplyHeader {
  uint32_t seq;
  int32_t code;
  uint32_t text_len;
};

// Sends @p bytes as one message, with @p fd attached when >= 0.
ssize_t SendMessage(int sock, const std::string& bytes, int fd, int flags) {
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  ssize_t n;
  do {
    n = ::sendmsg(sock, &msg, flags | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n;
}

// Receives one message into @p bytes; a descriptor that came with it goes to @p fd (close-on-
// exec), else -1. @return As recvmsg; a truncated message is EMSGSIZE.
ssize_t ReceiveMessage(int sock, std::string* bytes, int* fd) {
  bytes->resize(kMaxMessage);
  iovec iov{bytes->data(), bytes->size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  *fd = -1;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int got = -1;
      std::memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof got);
      if (*fd < 0) {
        *fd = got;
      } else {
        ::close(got);  // One descriptor per message; anything more is dropped.
      }
    }
  }
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
    errno = EMSGSIZE;
    return -1;
  }
  bytes->resize(static_cast<size_t>(n));
  return n;
}

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {}", WTERMSIG(status));
  return "stopped";
}

}  // namespace

Result<std::unique_ptr<IdentityHelper>> IdentityHelper::Start(const std::string& config_path,
                                                              std::atomic<uint64_t>* failures) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return Status(Code::kUsage, fmt::format("identity helper: socketpair: {}", ErrnoText(errno)));
  }
  // Everything the child needs is made before fork(): after it, only async-signal-safe calls.
  std::string arg0 = "pipegated";
  std::string arg1 = "--identity-helper";
  std::string arg2 = "--config";
  std::string arg3 = config_path;
  char* argv[] = {arg0.data(), arg1.data(), arg2.data(), arg3.data(), nullptr};
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(sv[0]);
    ::close(sv[1]);
    return Status(Code::kUsage, fmt::format("identity helper: fork: {}", ErrnoText(err)));
  }
  if (pid == 0) {
    // The helper dies with the gateway, even if the gateway is killed without closing its end.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    // main() blocked the gateway's signals; the helper wants their default actions back.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (sv[1] == kHelperFd) {
      ::fcntl(kHelperFd, F_SETFD, 0);
    } else if (::dup2(sv[1], kHelperFd) != kHelperFd) {
      ::_exit(127);
    }
    const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
      ::dup2(null, 0);
      ::dup2(null, 1);
    }
    // Only stdin/stdout (/dev/null), stderr (the log) and the socketpair cross the exec:
    // no listening socket, FIFO or key file of the gateway.
    ::close_range(kHelperFd + 1, ~0U, 0);
    ::execv("/proc/self/exe", argv);
    ::_exit(127);
  }
  ::close(sv[1]);
  std::unique_ptr<IdentityHelper> helper(new IdentityHelper(sv[0], pid, failures));
  if (Status loaded = helper->Reload(); !loaded.ok()) {
    ::kill(pid, SIGKILL);  // Still root here: the helper is ours to stop.
    return Status(Code::kUsage, "identity helper: " + loaded.message());
  }
  PG_LOG(kInfo, "identity helper started (pid {})", pid);
  return helper;
}

IdentityHelper::~IdentityHelper() {
  ::close(fd_);  // EOF: the helper exits.
  mu_.Lock();
  Held held(&mu_);
  if (gone_) return;  // Reaped already.
  // A helper that is stopped or stuck cannot be killed by an unprivileged gateway; it is left
  // to PR_SET_PDEATHSIG once this process exits. Bounded: 200 × 10 ms.
  for (int i = 0; i < 200; ++i) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) != 0) return;
    timespec pause{0, 10 * 1000 * 1000};
    ::nanosleep(&pause, nullptr);
  }
}

Status IdentityHelper::Gone(const std::string& why) {
  if (!gone_) {
    gone_ = true;
    int status = 0;
    std::string how;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) how = " (it " + DescribeExit(status) + ")";
    PG_LOG(kError,
           "identity helper (pid {}) {}{}: exports with an identity map are unavailable until "
           "pipegated restarts; other exports are served",
           pid_, why, how);
  }
  return Status(Code::kIo, "the identity helper has exited (see the gateway log)");
}

Result<IdentityHelper::Reply> IdentityHelper::Receive(uint32_t seq, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  // Each round either returns or consumes one message; at most one late reply is ever owed
  // (no request is sent while one is), so a few rounds suffice.
  for (int round = 0; round < 8; ++round) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd_, POLLIN, 0};
    int ready = ::poll(&p, 1, std::max<int>(0, static_cast<int>(left.count())));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) break;
    std::string bytes;
    int fd = -1;
    ssize_t n = ReceiveMessage(fd_, &bytes, &fd);
    if (n == 0) return Gone("closed its socket");
    if (n < 0) {
      if (errno == EAGAIN) continue;
      return Gone("failed: " + ErrnoText(errno));
    }
    ReplyHeader h{};
    if (bytes.size() < sizeof h) {
      if (fd >= 0) ::close(fd);
      return Gone("sent a malformed reply");
    }
    std::memcpy(&h, bytes.data(), sizeof h);
    if (h.seq != seq) {
      if (fd >= 0) ::close(fd);  // A late reply to a request that timed out.
      continue;
    }
    Reply reply;
    reply.code = static_cast<Code>(h.code);
    reply.message = bytes.substr(sizeof h, std::min<size_t>(h.text_len, kMaxReplyText));
    reply.fd = fd;
    return reply;
  }
  return Status(Code::kIo,
                fmt::format("the identity helper did not answer within {} ms", timeout_ms));
}

Result<IdentityHelper::Reply> IdentityHelper::Call(uint8_t op, const std::string& name,
                                                   const std::string& path, uint32_t uid,
                                                   uint32_t gid, bool follow, int timeout_ms) {
  if (!mu_.TryLockFor(std::chrono::milliseconds(timeout_ms))) {
    return Status(Code::kIo, "the identity helper is busy (waited too long for it)");
  }
  Held held(&mu_);
  if (gone_) return Status(Code::kIo, "the identity helper has exited (see the gateway log)");
  if (stuck_seq_ != 0) {
    // Not a single new request until the late reply has come: a stuck helper costs nothing more.
    Result<Reply> late = Receive(stuck_seq_, 0);
    if (!late) {
      if (gone_) return late.error();
      return Status(Code::kIo, "the identity helper is not answering");
    }
    if (late->fd >= 0) ::close(late->fd);
    stuck_seq_ = 0;
    PG_LOG(kInfo, "identity helper (pid {}) answers again", pid_);
  }
  if (name.size() > 0xffff || path.size() > kMaxMessage - sizeof(RequestHeader) - name.size()) {
    return Status(Code::kIo, "identity helper: request too long");
  }
  const uint32_t seq = ++seq_ == 0 ? ++seq_ : seq_;
  RequestHeader h{kMagic,
                  seq,
                  op,
                  static_cast<uint8_t>(follow ? 1 : 0),
                  static_cast<uint16_t>(name.size()),
                  static_cast<uint16_t>(path.size()),
                  0,
                  uid,
                  gid};
  std::string bytes(reinterpret_cast<const char*>(&h), sizeof h);
  bytes += name;
  bytes += path;
  if (SendMessage(fd_, bytes, -1, MSG_DONTWAIT) < 0) {
    if (errno == EPIPE || errno == ECONNRESET) return Gone("closed its socket");
    return Status(Code::kIo, "identity helper: send: " + ErrnoText(errno));
  }
  Result<Reply> reply = Receive(seq, timeout_ms);
  if (!reply && !gone_) {
    stuck_seq_ = seq;
    PG_LOG(kWarn,
           "identity helper (pid {}) did not answer within {} ms: mapped opens fail until it "
           "does",
           pid_, timeout_ms);
  }
  return reply;
}

Result<int> IdentityHelper::Open(const ExportConfig& e, const MappedAccount& as, bool follow) {
  Result<Reply> reply = Call(kOpOpen, e.name, e.path, as.uid, as.gid, follow, kReplyTimeoutMs);
  if (!reply) {
    if (failures_ != nullptr) failures_->fetch_add(1, std::memory_order_relaxed);
    return Status(Code::kIo,
                  fmt::format("pipe '{}' is not available: {}", e.name, reply.error().message()));
  }
  if (reply->code == Code::kOk) {
    if (reply->fd >= 0) return reply->fd;
    return Status(Code::kIo,
                  fmt::format("pipe '{}': the identity helper sent no descriptor", e.name));
  }
  if (reply->fd >= 0) ::close(reply->fd);
  return Status(reply->code, reply->message);
}

Status IdentityHelper::Reload() {
  Result<Reply> reply = Call(kOpReload, "", "", 0, 0, false, kReloadTimeoutMs);
  if (!reply) return reply.error();
  if (reply->fd >= 0) ::close(reply->fd);
  if (reply->code != Code::kOk) return Status(reply->code, reply->message);
  return Status::Ok();
}

// ---- The helper process ----

namespace {

class Helper {
 public:
  explicit Helper(std::string config_path) : config_path_(std::move(config_path)) {}

  int Run() {
    for (;;) {
      std::string bytes;
      int stray = -1;
      ssize_t n = ReceiveMessage(kHelperFd, &bytes, &stray);
      if (stray >= 0) ::close(stray);  // The gateway never sends descriptors.
      if (n == 0) return 0;            // The gateway is gone.
      if (n < 0) {
        if (errno == EMSGSIZE) continue;
        PG_LOG(kError, "identity helper: receive: {}", ErrnoText(errno));
        return 1;
      }
      RequestHeader h{};
      if (bytes.size() < sizeof h) continue;
      std::memcpy(&h, bytes.data(), sizeof h);
      if (h.magic != kMagic || sizeof h + h.name_len + h.path_len != bytes.size()) {
        Reply(h.seq, Code::kProtocol, "malformed request");
        continue;
      }
      const std::string name = bytes.substr(sizeof h, h.name_len);
      const std::string path = bytes.substr(sizeof h + h.name_len, h.path_len);
      if (h.op == kOpReload) {
        Status loaded = Load();
        Reply(h.seq, loaded.code(), loaded.message());
      } else if (h.op == kOpOpen) {
        Open(h.seq, name, path, h.uid, h.gid, h.follow != 0);
      } else {
        Reply(h.seq, Code::kProtocol, "unknown request");
      }
    }
  }

 private:
  Status Load() {
    ConfigParseResult parsed = LoadGatewayConfig(config_path_);
    if (!parsed.config) {
      return Status(Code::kUsage, FormatConfigErrors(config_path_, parsed.errors));
    }
    if (std::vector<ConfigError> errors = ResolveIdentityMaps(*parsed.config); !errors.empty()) {
      return Status(Code::kUsage, FormatConfigErrors(config_path_, errors));
    }
    config_ = std::move(*parsed.config);
    return Status::Ok();
  }

  // Serves an open only for what the file itself maps: export @p name at @p path, for an
  // entry resolving to @p uid and @p gid, with that entry's groups (never the gateway's word).
  void Open(uint32_t seq, const std::string& name, const std::string& path, uint32_t uid,
            uint32_t gid, bool follow) {
    const ExportConfig* e = config_ ? config_->Find(name) : nullptr;
    if (e == nullptr || e->path != path) {
      Reply(seq, Code::kIo,
            fmt::format("the identity helper does not know export '{}' at {}", name, path));
      return;
    }
    const IdentityMapping* m = nullptr;
    for (const IdentityMapping& candidate : e->identity_map) {
      if (candidate.resolved && candidate.uid == uid && candidate.gid == gid) {
        m = &candidate;
        break;
      }
    }
    if (m == nullptr || uid == 0 || gid == 0) {
      Reply(seq, Code::kIo,
            fmt::format("the identity helper's configuration does not map export '{}' to uid {} "
                        "gid {}",
                        name, uid, gid));
      return;
    }
    const MappedAccount as{m->user, m->uid, m->gid, m->groups};
    // Effective ids only (real and saved stay root, to come back): SO_PEERCRED records the
    // connecting task's effective ids, and file permission checks use the fsuid, which
    // follows the effective uid.
    std::vector<gid_t> groups(m->groups.begin(), m->groups.end());
    if (::setgroups(groups.size(), groups.data()) != 0 || ::setresgid(-1, gid, -1) != 0 ||
        ::setresuid(-1, uid, -1) != 0) {
      const int err = errno;
      BackToRoot();
      Reply(
          seq, Code::kIo,
          fmt::format("the identity helper cannot switch to {}: {}", as.Display(), ErrnoText(err)));
      return;
    }
    Result<int> fd = OpenExport(*e, nullptr, follow, &as);
    BackToRoot();
    if (!fd) {
      Reply(seq, fd.error().code(), fd.error().message());
      return;
    }
    Reply(seq, Code::kOk, "", *fd);
    ::close(*fd);
  }

  // Back to root, or out: a helper that cannot restore its own ids must not serve again.
  static void BackToRoot() {
    if (::setresuid(-1, 0, -1) != 0 || ::setresgid(-1, 0, -1) != 0 ||
        ::setgroups(0, nullptr) != 0) {
      PG_LOG(kError, "identity helper: cannot return to root: {}", ErrnoText(errno));
      ::_exit(2);
    }
  }

  static void Reply(uint32_t seq, Code code, const std::string& text, int fd = -1) {
    ReplyHeader h{seq, static_cast<int32_t>(code),
                  static_cast<uint32_t>(std::min(text.size(), kMaxReplyText))};
    std::string bytes(reinterpret_cast<const char*>(&h), sizeof h);
    bytes.append(text, 0, h.text_len);
    if (SendMessage(kHelperFd, bytes, fd, 0) < 0) {
      PG_LOG(kError, "identity helper: send: {}", ErrnoText(errno));
    }
  }

  std::string config_path_;
  std::optional<GatewayConfig> config_;
};

}  // namespace

int RunIdentityHelper(const std::string& config_path) {
  if (::geteuid() != 0) {
    PG_LOG(kError, "the identity helper runs only as root, started by pipegated");
    return 1;
  }
  int type = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(kHelperFd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_SEQPACKET) {
    PG_LOG(kError, "the identity helper runs only as started by pipegated (no socket on fd 3)");
    return 1;
  }
  ::fcntl(kHelperFd, F_SETFD, FD_CLOEXEC);
  return Helper(config_path).Run();
}

}  // namespace pipegate::gateway
