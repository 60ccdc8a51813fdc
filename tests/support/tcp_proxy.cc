#include "support/tcp_proxy.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "support/process.h"
#include "support/timing.h"

namespace pipegate::testing {
namespace {

constexpr int kPollMs = 20;
constexpr size_t kBuffer = 256 * 1024;

void ResetAndClose(int fd) {
  linger hard{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
  close(fd);
}

// Bytes read from one socket and not yet written to the other.
struct Direction {
  int from;
  int to;
  std::string buffer;
  bool eof = false;   // `from` said EOF.
  bool shut = false;  // EOF passed on to `to`.
};

}  // namespace

int BindOnLoopback(uint16_t* port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof addr;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
    if (fd >= 0) {
      close(fd);
    }
    return -1;
  }
  *port = ntohs(addr.sin_port);
  return fd;
}

int ConnectLoopback(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -1;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  // Blocking connect: on loopback it completes (or is refused) at once.
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int ListenOnLoopback(uint16_t* port) {
  const int fd = BindOnLoopback(port);
  if (fd >= 0 && listen(fd, 64) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

TcpProxy::TcpProxy(uint16_t target_port) : target_(target_port) {
  IgnoreSigpipe();
  listen_fd_ = ListenOnLoopback(&port_);
  if (listen_fd_ < 0) {
    return;
  }
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

TcpProxy::~TcpProxy() {
  stop_ = true;
  if (acceptor_.joinable()) {
    acceptor_.join();
  }
  std::vector<std::thread> relays;
  {
    std::lock_guard<std::mutex> lock(mu_);
    relays.swap(relays_);
  }
  for (auto& relay : relays) {
    relay.join();
  }
  if (listen_fd_ >= 0) {
    close(listen_fd_);
  }
}

std::string TcpProxy::BaseAddress() const { return "pipe://127.0.0.1:" + std::to_string(port_); }

int TcpProxy::DropAll() {
  int dropped = 0;
  uint64_t generation = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation = ++generation_;
    dropped = static_cast<int>(live_.size());
  }
  WaitFor(
      [&] {
        std::lock_guard<std::mutex> lock(mu_);
        for (const auto& [id, gen] : live_) {
          if (gen < generation) {
            return false;
          }
        }
        return true;
      },
      Duration(5000), Duration(2));
  return dropped;
}

void TcpProxy::AcceptLoop() {
  int next_id = 0;
  while (!stop_) {
    pollfd pfd{listen_fd_, POLLIN, 0};
    if (poll(&pfd, 1, kPollMs) <= 0) {
      continue;
    }
    const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (client < 0) {
      continue;
    }
    ++accepted_;
    const int server = ConnectLoopback(target_);
    if (server < 0) {
      ResetAndClose(client);
      continue;
    }
    fcntl(server, F_SETFL, fcntl(server, F_GETFL) | O_NONBLOCK);
    const int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::lock_guard<std::mutex> lock(mu_);
    const int id = next_id++;
    const uint64_t generation = generation_.load();
    live_[id] = generation;
    relays_.emplace_back(
        [this, id, client, server, generation] { Relay(id, client, server, generation); });
  }
}

void TcpProxy::Relay(int id, int client, int server, uint64_t generation) {
  Direction up{client, server, {}, false, false};
  Direction down{server, client, {}, false, false};
  bool failed = false;
  char chunk[64 * 1024];
  while (!stop_ && generation_.load() == generation && !failed && !(up.shut && down.shut)) {
    pollfd pfds[2] = {{client, 0, 0}, {server, 0, 0}};
    for (Direction* d : {&up, &down}) {
      pollfd& in = d->from == client ? pfds[0] : pfds[1];
      pollfd& out = d->to == client ? pfds[0] : pfds[1];
      if (!d->eof && d->buffer.size() < kBuffer) {
        in.events |= POLLIN;
      }
      if (!d->buffer.empty()) {
        out.events |= POLLOUT;
      }
    }
    if (poll(pfds, 2, kPollMs) <= 0) {
      continue;
    }
    for (Direction* d : {&up, &down}) {
      if (!d->eof && d->buffer.size() < kBuffer) {
        const ssize_t n = recv(d->from, chunk, sizeof chunk, 0);
        if (n > 0) {
          d->buffer.append(chunk, static_cast<size_t>(n));
        } else if (n == 0) {
          d->eof = true;
        } else if (errno != EAGAIN && errno != EINTR) {
          failed = true;
        }
      }
      if (!d->buffer.empty()) {
        const ssize_t n = send(d->to, d->buffer.data(), d->buffer.size(), MSG_NOSIGNAL);
        if (n > 0) {
          d->buffer.erase(0, static_cast<size_t>(n));
          relayed_ += static_cast<uint64_t>(n);
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
          failed = true;
        }
      }
      if (d->eof && d->buffer.empty() && !d->shut) {
        shutdown(d->to, SHUT_WR);
        d->shut = true;
      }
    }
  }
  if (failed || generation_.load() != generation || stop_) {
    ResetAndClose(client);
    ResetAndClose(server);
  } else {
    close(client);
    close(server);
  }
  std::lock_guard<std::mutex> lock(mu_);
  live_.erase(id);
}

}  // namespace pipegate::testing
