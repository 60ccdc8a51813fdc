#include "listeners.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <utility>

#include "pipegate/address.h"
#include "pipegate/local_path.h"
#include "pipegate/log.h"

namespace pipegate::gateway {

namespace {

constexpr int kBacklog = 511;

// Logs the address @p fd is bound to (the port chosen for port 0, for one).
void LogBound(int fd, std::string_view what) {
  sockaddr_storage bound{};
  socklen_t blen = sizeof bound;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &blen);
  char host[INET6_ADDRSTRLEN] = "?";
  if (bound.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&bound);
    ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    PG_LOG(kInfo, "{} [{}]:{}", what, host, ntohs(a->sin6_port));
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&bound);
    ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    PG_LOG(kInfo, "{} {}:{}", what, host, ntohs(a->sin_port));
  }
}

}  // namespace

ListenSockets::~ListenSockets() {
  for (int fd : fds_) ::close(fd);
}

Status ListenSockets::Bind(const std::vector<std::string>& listen, std::string_view what) {
  for (const std::string& spec : listen) {
    Result<std::pair<std::string, uint16_t>> hp = ParseHostPort(spec);
    if (!hp)
      return Status(Code::kUsage, fmt::format("listen '{}': {}", spec, hp.error().message()));
    sockaddr_storage ss{};
    if (!ParseNumericAddress(hp->first, hp->second, &ss)) {
      return Status(Code::kUsage, fmt::format("listen '{}': not an IP address", spec));
    }
    int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss.ss_family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    socklen_t len = ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, kBacklog) != 0) {
      Status failed(Code::kIo, fmt::format("cannot listen on {}: {}", spec, ErrnoText(errno)));
      ::close(fd);
      return failed;
    }
    LogBound(fd, what);
    fds_.push_back(fd);
  }
  return Status::Ok();
}

}  // namespace pipegate::gateway
