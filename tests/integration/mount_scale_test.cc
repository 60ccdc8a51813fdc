// One `pipegate mount` of a Unix socket export carries every local connection of a program with
// a pool, with the default limits: 10,000 concurrent connections, each a live stream to the
// service, and the gateway's memory per idle stream measured and bounded.

#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/gateway_probe.h"
#include "support/process.h"
#include "support/timing.h"

namespace pipegate::testing {
namespace {

// An echo server for many connections in one process (the test process could not hold both
// ends of 10,000 connections under a 20,000 open-file limit). It exits by itself after 600 s.
constexpr const char* kEchoServer = R"(
import resource, selectors, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(sys.argv[1])
srv.listen(4096)
srv.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(srv, selectors.EVENT_READ)
end = time.monotonic() + 600
while time.monotonic() < end:
    for key, _ in sel.select(timeout=1):
        s = key.fileobj
        if s is srv:
            for _ in range(1024):
                try:
                    c, _ = srv.accept()
                except BlockingIOError:
                    break
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ)
            continue
        try:
            data = s.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b''
        if data:
            s.send(data)
        else:
            sel.unregister(s)
            s.close()
)";

// Connects to the Unix socket at @p path; a full backlog makes connect() wait (at most 10 s).
int ConnectUnix(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval timeout{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Closes the descriptors it holds.
struct Fds {
  std::vector<int> fds;
  ~Fds() {
    for (int fd : fds) ::close(fd);
  }
};

TEST(MountScale, TenThousandConcurrentLocalConnectionsThroughOneMount) {
  const size_t n = DataSize(10000, 1000);
  RaiseFdLimit(static_cast<rlim_t>(n + 512));
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  ASSERT_GE(limit.rlim_cur, n + 256) << "this test needs an open-file limit of at least " << n + 256
                                     << " (ulimit -n); it is " << limit.rlim_cur;
  TempDir dir;
  const std::string svc = dir.Join("svc.sock");
  Process server({"/usr/bin/python3", "-c", kEchoServer, svc});
  ASSERT_TRUE(WaitFor([&] { return IsSocket(svc) || !server.Running(); }, Duration(10000)))
      << "the echo server did not start";
  ASSERT_TRUE(server.Running());

  GatewayFixture gw(dir, WithExports({ExportSpec::Unix("svc", svc)}));  // Default limits.
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("mnt.sock");
  Bridge mount(dir, {"mount", gw.Address("svc"), local});
  ASSERT_TRUE(StartMount(mount, local));

  // One exchange first, so that the baseline has the mount's connection and a stream's code
  // paths warmed.
  {
    const int fd = ConnectUnix(local);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    char byte = 'w';
    ASSERT_EQ(::write(fd, &byte, 1), 1);
    pollfd p{fd, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, static_cast<int>(Scaled(Duration(10000)).count())), 1);
    ASSERT_EQ(::read(fd, &byte, 1), 1);
    ::close(fd);
  }
  const uint64_t rss_before = Rss(gw);

  // n connections at once, each sending one byte that must come back through its own stream.
  Fds clients;
  const Clock::time_point start = Clock::now();
  for (size_t i = 0; i < n; ++i) {
    const int fd = ConnectUnix(local);
    ASSERT_GE(fd, 0) << "connection " << i << ": " << std::strerror(errno) << "; "
                     << mount.Describe();
    clients.fds.push_back(fd);
    const char byte = static_cast<char>('a' + i % 26);
    ASSERT_EQ(::write(fd, &byte, 1), 1) << "connection " << i;
  }
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(ep, 0);
  for (size_t i = 0; i < n; ++i) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, clients.fds[i], &ev), 0);
  }
  size_t echoed = 0;
  size_t wrong = 0;
  const Clock::time_point deadline = Clock::now() + Scaled(Duration(120000));
  std::vector<epoll_event> events(1024);
  while (echoed + wrong < n && Clock::now() < deadline) {
    const int k = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), 100);
    for (int e = 0; e < k; ++e) {
      const size_t i = events[static_cast<size_t>(e)].data.u64;
      char byte = 0;
      const ssize_t r = ::read(clients.fds[i], &byte, 1);
      ::epoll_ctl(ep, EPOLL_CTL_DEL, clients.fds[i], nullptr);
      if (r == 1 && byte == static_cast<char>('a' + i % 26)) {
        ++echoed;
      } else {
        ++wrong;
      }
    }
  }
  ::close(ep);
  const auto took = std::chrono::duration_cast<Duration>(Clock::now() - start);
  EXPECT_EQ(echoed, n) << wrong << " connection(s) got EOF or a wrong byte; " << mount.Describe();

  // Every stream is idle now and still open: the gateway's memory for them.
  const uint64_t rss_after = Rss(gw);
  const uint64_t per_stream = rss_after > rss_before ? (rss_after - rss_before) / n : 0;
  Report("mount_scale",
         std::to_string(n) + " concurrent connections through one mount, all echoed in " +
             std::to_string(took.count()) + " ms; gateway RSS " + MiB(rss_before) + " -> " +
             MiB(rss_after) + ", " + std::to_string(per_stream) + " bytes per idle stream");
  if (kCheckRss) {
    EXPECT_LE(per_stream, 10u * 1024) << "bytes of gateway memory per idle stream";
  }
  EXPECT_TRUE(mount.Running()) << mount.Describe();
  mount.process().Signal(SIGTERM);
  EXPECT_EQ(mount.Wait(Duration(20000)), 128 + SIGTERM) << mount.Describe();
}

}  // namespace
}  // namespace pipegate::testing
