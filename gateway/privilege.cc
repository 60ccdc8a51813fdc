// Privilege dropping, file-descriptor limits and FIFO ownership for pipegated.

#include "privilege.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <grp.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "pipegate/local_path.h"
#include "pipegate/log.h"

namespace pipegate {
namespace {

bool IsNumber(const std::string& text) {
  return !text.empty() && text.find_first_not_of("0123456789") == std::string::npos &&
         text.size() <= 9;
}

}  // namespace

Status CheckAccounts(const GatewayConfig& config) {
  if (Result<Account> a = ResolveAccount(config.user, config.group); !a) {
    return Status(Code::kUsage, "gateway: " + a.error().message());
  }
  for (const ExportConfig& e : config.exports) {
    if (Result<Account> a = ResolveAccount(e.owner, e.group); !a) {
      return Status(Code::kUsage, fmt::format("export '{}': {}", e.name, a.error().message()));
    }
  }
  return Status::Ok();
}

Status DropPrivileges(const GatewayConfig& config) {
  if (config.user.empty() && config.group.empty()) return Status::Ok();
  Result<Account> account = ResolveAccount(config.user, config.group);
  if (!account) return account.error();
  const uid_t uid = account->uid.value_or(getuid());
  const gid_t gid = account->gid.value_or(getgid());
  if (geteuid() != 0) {
    // Not root: nothing to drop, but the configured account must be the one we run as, or the
    // operator's intent (run as X) is not met.
    if (uid != geteuid() || gid != getegid()) {
      return Status(Code::kUsage,
                    fmt::format("cannot switch to user '{}' and group '{}': pipegated is not "
                                "running as root (uid {})",
                                config.user.empty() ? "-" : config.user,
                                config.group.empty() ? "-" : config.group, geteuid()));
    }
    return Status::Ok();
  }
  // Supplementary groups first (they need root), then the group, then the user.
  int rc = !account->user_name.empty() && !config.user.empty() && !IsNumber(config.user)
               ? initgroups(account->user_name.c_str(), gid)
               : setgroups(1, &gid);
  if (rc != 0) return Status(Code::kUsage, "cannot set supplementary groups: " + ErrnoText(errno));
  if (setresgid(gid, gid, gid) != 0) {
    return Status(Code::kUsage, fmt::format("cannot switch to gid {}: {}", gid, ErrnoText(errno)));
  }
  if (setresuid(uid, uid, uid) != 0) {
    return Status(Code::kUsage, fmt::format("cannot switch to uid {}: {}", uid, ErrnoText(errno)));
  }
  // Belt and braces: with every id changed, root must be out of reach for good.
  if (uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
    return Status(Code::kInternal, "privileges could be regained after dropping them");
  }
  PG_LOG(kInfo, "dropped privileges: now uid {} ({}), gid {}", uid,
         config.user.empty() ? "-" : config.user, gid);
  return Status::Ok();
}

uint64_t RaiseFileLimit(const Limits& limits) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return UINT64_MAX;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  if (limit.rlim_cur == RLIM_INFINITY) return UINT64_MAX;
  // One descriptor per connection plus at least one per stream; 64 for the rest.
  const uint64_t want = uint64_t{limits.max_connections} * 2 + 64;
  if (limit.rlim_cur < want) {
    PG_LOG(kWarn,
           "the open-file limit ({}) is low for max_connections = {}: raise it (LimitNOFILE= in "
           "the systemd unit) or lower max_connections",
           static_cast<uint64_t>(limit.rlim_cur), limits.max_connections);
  }
  return static_cast<uint64_t>(limit.rlim_cur);
}

uint32_t StreamsTheFileLimitAllows(const Limits& limits, uint64_t file_limit) {
  const uint64_t reserved = uint64_t{limits.max_connections} + 64;
  const uint64_t room = file_limit > reserved + 1 ? file_limit - reserved : 1;
  return static_cast<uint32_t>(std::min<uint64_t>(limits.max_streams, room));
}

Status SetFifoModeAndOwner(int fd, const std::string& path, uint32_t mode, const std::string& owner,
                           const std::string& group) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) {
    return Status(Code::kIo, fmt::format("{} is no longer the FIFO just made", path));
  }
  Status result = Status::Ok();
  Result<Account> account = ResolveAccount(owner, group);
  if (!account) {
    result = account.error();
  } else if ((account->uid || account->gid) &&
             ::fchown(fd, account->uid.value_or(static_cast<uid_t>(-1)),
                      account->gid ? *account->gid : static_cast<gid_t>(-1)) != 0) {
    result = Status(Code::kIo,
                    fmt::format("cannot give {} to {}:{}: {}", path, owner.empty() ? "-" : owner,
                                group.empty() ? "-" : group, ErrnoText(errno)));
  }
  // After fchown, which may clear set-id bits; not subject to the umask.
  if (::fchmod(fd, static_cast<mode_t>(mode)) != 0 && result.ok()) {
    result = Status(Code::kIo, fmt::format("cannot chmod {}: {}", path, ErrnoText(errno)));
  }
  return result;
}

Status SetFifoModeAndOwner(const std::string& path, uint32_t mode, const std::string& owner,
                           const std::string& group) {
  // O_RDONLY|O_NONBLOCK opens a FIFO at once, writer or not; O_NOFOLLOW refuses a symlink.
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return Status(Code::kIo, fmt::format("cannot open {}: {}", path, ErrnoText(errno)));
  Status result = SetFifoModeAndOwner(fd, path, mode, owner, group);
  ::close(fd);
  return result;
}

}  // namespace pipegate
