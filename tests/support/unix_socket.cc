#include "support/unix_socket.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "support/process.h"

namespace pipegate::testing {
namespace {

constexpr size_t kBuffer = 64 * 1024;
constexpr int kPollMs = 50;

bool FillAddress(const std::string& path, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (path.size() >= sizeof addr->sun_path) {
    return false;
  }
  std::memcpy(addr->sun_path, path.c_str(), path.size() + 1);
  return true;
}

void SetNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

}  // namespace

UnixEchoServer::UnixEchoServer(std::string path, Mode mode) : path_(std::move(path)), mode_(mode) {
  IgnoreSigpipe();
  sockaddr_un addr{};
  if (!FillAddress(path_, &addr)) {
    error_ = "socket path too long: " + path_;
    return;
  }
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    error_ = std::string("socket: ") + std::strerror(errno);
    return;
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, 64) != 0) {
    error_ = "bind/listen " + path_ + ": " + std::strerror(errno);
    close(fd);
    return;
  }
  listen_fd_ = fd;
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

UnixEchoServer::~UnixEchoServer() {
  stop_ = true;
  if (acceptor_.joinable()) {
    acceptor_.join();
  }
  std::vector<std::thread> workers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    workers.swap(workers_);
  }
  for (auto& worker : workers) {
    worker.join();
  }
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    unlink(path_.c_str());
  }
}

void UnixEchoServer::AcceptLoop() {
  while (!stop_) {
    pollfd pfd{listen_fd_, POLLIN, 0};
    if (poll(&pfd, 1, kPollMs) <= 0) {
      continue;
    }
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      continue;
    }
    ++accepted_;
    std::lock_guard<std::mutex> lock(mu_);
    workers_.emplace_back([this, fd] { Serve(fd); });
  }
}

void UnixEchoServer::Serve(int fd) {
  std::string pending;  // Bytes received and not yet sent back.
  size_t sent = 0;
  bool eof = false;
  bool failed = false;
  char buffer[kBuffer];
  while (!stop_) {
    const bool want_read = !eof && (mode_ == Mode::kReplyAfterEof || pending.size() < 4 * kBuffer);
    const bool may_write = mode_ == Mode::kEcho || eof;
    const bool want_write = may_write && sent < pending.size();
    if (eof && !want_write) {
      shutdown(fd, SHUT_WR);
      break;
    }
    pollfd pfd{fd, static_cast<short>((want_read ? POLLIN : 0) | (want_write ? POLLOUT : 0)), 0};
    if (poll(&pfd, 1, kPollMs) <= 0) {
      continue;
    }
    if (want_read && (pfd.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
      if (n > 0) {
        pending.append(buffer, static_cast<size_t>(n));
      } else if (n == 0) {
        eof = true;
        ++half_closes_;
      } else if (errno != EAGAIN && errno != EINTR) {
        failed = true;
        break;
      }
    }
    if (want_write && (pfd.revents & (POLLOUT | POLLERR)) != 0) {
      const ssize_t n = send(fd, pending.data() + sent, pending.size() - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<size_t>(n);
        if (sent == pending.size()) {
          pending.clear();
          sent = 0;
        } else if (sent > 4 * kBuffer) {
          pending.erase(0, sent);
          sent = 0;
        }
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        failed = true;
        break;
      }
    }
  }
  if (failed) {
    ++errors_;
  }
  close(fd);
}

int ConnectUnix(const std::string& path, Duration timeout) {
  sockaddr_un addr{};
  if (!FillAddress(path, &addr)) {
    return -1;
  }
  int result = -1;
  WaitFor(
      [&] {
        const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
          return false;
        }
        if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
          result = fd;
          return true;
        }
        close(fd);
        return false;
      },
      timeout);
  return result;
}

ExchangeResult UnixExchange(const std::string& path, const std::string& payload, Duration timeout) {
  IgnoreSigpipe();
  ExchangeResult result;
  const auto deadline = Clock::now() + Scaled(timeout);
  const int fd = ConnectUnix(path, timeout);
  if (fd < 0) {
    result.error = "cannot connect to " + path;
    return result;
  }
  SetNonBlocking(fd);
  size_t sent = 0;
  bool write_closed = payload.empty();
  if (write_closed) {
    shutdown(fd, SHUT_WR);
  }
  char buffer[kBuffer];
  while (true) {
    if (Clock::now() >= deadline) {
      result.error = "timed out after sending " + std::to_string(sent) + " and receiving " +
                     std::to_string(result.received.size()) + " bytes";
      break;
    }
    pollfd pfd{fd, static_cast<short>(POLLIN | (write_closed ? 0 : POLLOUT)), 0};
    if (poll(&pfd, 1, kPollMs) <= 0) {
      continue;
    }
    if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
      if (n > 0) {
        result.received.append(buffer, static_cast<size_t>(n));
      } else if (n == 0) {
        if (!write_closed) {
          result.error = "EOF from peer after sending only " + std::to_string(sent) + " bytes";
          break;
        }
        result.ok = true;
        break;
      } else if (errno != EAGAIN && errno != EINTR) {
        result.error = std::string("recv: ") + std::strerror(errno);
        break;
      }
    }
    if (!write_closed && (pfd.revents & POLLOUT) != 0) {
      const ssize_t n = send(fd, payload.data() + sent, payload.size() - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<size_t>(n);
        if (sent == payload.size()) {
          shutdown(fd, SHUT_WR);
          write_closed = true;
        }
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        result.error = std::string("send: ") + std::strerror(errno);
        break;
      }
    }
  }
  close(fd);
  return result;
}

}  // namespace pipegate::testing
