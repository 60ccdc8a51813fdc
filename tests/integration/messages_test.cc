// Message mode (`socket = "seqpacket"`): a unix export whose every message keeps its boundaries
// end to end, through `pipegate mount` (a local SOCK_SEQPACKET socket) and `pipegate connect
// --messages` (length-prefixed or line framing on stdio). The oracle is the kernel's own
// seqpacket socket: what one send() wrote is what one recv() gets, whole, on the far side.

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "pipegate/local_path.h"

#include "support/bridge_client.h"
#include "support/data.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/process.h"
#include "support/timing.h"

namespace pipegate::testing {
namespace {

// Waits up to @p ms for @p events on @p fd; true if they came.
bool PollFor(int fd, short events, int ms) {
  pollfd p{fd, events, 0};
  return ::poll(&p, 1, ms) == 1;
}

// A SOCK_SEQPACKET service on threads of the test process: each connection gets `greeting` (if
// any) as one message, then every message it receives is sent back as one message; it records
// the size of each. EOF from the client closes the connection. Every wait is a poll() of at
// most 50 ms that checks the stop flag. Ownership: owns its sockets and threads.
class SeqpacketServer {
 public:
  explicit SeqpacketServer(std::string path, std::string greeting = "")
      : path_(std::move(path)), greeting_(std::move(greeting)) {
    fd_ = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un sun = *UnixAddress(path_);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0 || ::listen(fd_, 16) != 0) {
      ::close(fd_);
      fd_ = -1;
      return;
    }
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }
  ~SeqpacketServer() {
    stop_ = true;
    if (acceptor_.joinable()) acceptor_.join();
    std::lock_guard<std::mutex> lock(mu_);
    for (std::thread& t : workers_) t.join();
    if (fd_ >= 0) ::close(fd_);
    ::unlink(path_.c_str());
  }
  bool ok() const { return fd_ >= 0; }
  std::vector<size_t> sizes() {
    std::lock_guard<std::mutex> lock(mu_);
    return sizes_;
  }
  size_t largest() {
    std::vector<size_t> s = sizes();
    return s.empty() ? 0 : *std::max_element(s.begin(), s.end());
  }

 private:
  void AcceptLoop() {
    while (!stop_) {
      if (!PollFor(fd_, POLLIN, 50)) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      std::lock_guard<std::mutex> lock(mu_);
      workers_.emplace_back([this, c] { Serve(c); });
    }
  }
  void Serve(int c) {
    timeval tv{10, 0};  // A peer that stops reading cannot hold a send() forever.
    ::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (!greeting_.empty()) (void)::send(c, greeting_.data(), greeting_.size(), MSG_NOSIGNAL);
    std::vector<char> buf(2 << 20);
    while (!stop_) {
      if (!PollFor(c, POLLIN, 50)) continue;
      ssize_t n = ::recv(c, buf.data(), buf.size(), MSG_TRUNC);
      if (n <= 0) break;
      {
        std::lock_guard<std::mutex> lock(mu_);
        sizes_.push_back(static_cast<size_t>(n));
      }
      if (::send(c, buf.data(), static_cast<size_t>(n), MSG_NOSIGNAL) != n) break;
    }
    ::close(c);
  }

  std::string path_;
  std::string greeting_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<size_t> sizes_;
  std::vector<std::thread> workers_;
  std::thread acceptor_;
};

// Connects a SOCK_SEQPACKET socket to @p path, retrying until it listens (nominal timeout).
int ConnectSeqpacket(const std::string& path, Duration timeout) {
  const Clock::time_point end = Clock::now() + Scaled(timeout);
  sockaddr_un sun = *UnixAddress(path);
  while (Clock::now() < end) {
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0) return fd;
    ::close(fd);
    WaitFor([] { return false; }, Duration(20));
  }
  return -1;
}

ExportSpec Seqpacket(const std::string& name, const std::string& path, uint32_t max = 0) {
  ExportSpec spec = ExportSpec::Unix(name, path);
  spec.extra_toml = "socket = \"seqpacket\"\n";
  if (max != 0) spec.extra_toml += "max_message_size = " + std::to_string(max) + "\n";
  return spec;
}

// Starts a mount of @p address at @p local and waits for the socket to appear.
::testing::AssertionResult Mounted(Bridge& mount, const std::string& local) {
  if (::testing::AssertionResult up = StartMount(mount, local); !up) return up;
  int type = 0;
  socklen_t len = sizeof type;
  int probe = ConnectSeqpacket(local, Duration(5000));
  if (probe < 0 || ::getsockopt(probe, SOL_SOCKET, SO_TYPE, &type, &len) != 0 ||
      type != SOCK_SEQPACKET) {
    if (probe >= 0) ::close(probe);
    return ::testing::AssertionFailure() << local << " is not a seqpacket socket";
  }
  ::close(probe);
  return ::testing::AssertionSuccess();
}

// 10,000 messages of 1 byte to 64 KiB (log-uniform, both ends included) go out through a mount
// and come back from the service's echo: each arrives whole, in order, as one recv().
TEST(MessageMode, TenThousandMessagesKeepEveryBoundaryBothWays) {
  TempDir dir;
  SeqpacketServer server(dir.Join("svc.sock"));
  ASSERT_TRUE(server.ok());
  GatewayFixture gw(dir, WithExports({Seqpacket("events", dir.Join("svc.sock"))}));
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("events.sock");
  Bridge mount(dir, {"mount", gw.Address("events"), local});
  ASSERT_TRUE(Mounted(mount, local));

  constexpr int kMessages = 10000;
  std::vector<size_t> sizes(kMessages);
  std::mt19937 rng(20261206);
  for (size_t& n : sizes) n = std::clamp<size_t>(std::exp2(rng() % 1601 / 100.0), 1, 65536);
  sizes[0] = 1;
  sizes[1] = 65536;
  const int fd = ConnectSeqpacket(local, Duration(5000));
  ASSERT_GE(fd, 0);
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::atomic<int> sent{0};
  std::thread sender([&] {
    for (int i = 0; i < kMessages; ++i) {
      const std::string m = RandomStream(static_cast<uint32_t>(i)).Next(sizes[i]);
      if (::send(fd, m.data(), m.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(m.size())) return;
      sent = i + 1;
    }
  });
  std::vector<char> buf(256 * 1024);
  int received = 0;
  int mismatches = 0;
  const Clock::time_point end = Clock::now() + Scaled(Duration(120000));
  while (received < kMessages && Clock::now() < end) {
    if (!PollFor(fd, POLLIN, 100)) continue;
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_TRUNC);
    if (n <= 0) break;
    const std::string want = RandomStream(static_cast<uint32_t>(received)).Next(sizes[received]);
    if (static_cast<size_t>(n) != want.size() || std::memcmp(buf.data(), want.data(), n) != 0) {
      if (++mismatches <= 3) {
        ADD_FAILURE() << "message " << received << ": got " << n << " bytes, want " << want.size();
      }
    }
    ++received;
  }
  ::shutdown(fd, SHUT_RDWR);
  sender.join();
  ::close(fd);
  EXPECT_EQ(sent.load(), kMessages);
  EXPECT_EQ(received, kMessages) << mount.Describe();
  EXPECT_EQ(mismatches, 0);
  const std::vector<size_t> at_service = server.sizes();
  ASSERT_EQ(at_service.size(), sizes.size()) << "the service saw other message boundaries";
  EXPECT_EQ(at_service, sizes);
}

// A local program's message longer than max_message_size is refused, not split: the connection
// ends, the mount says why, and the service never sees a piece of it.
TEST(MessageMode, AnOversizedLocalMessageIsRefusedNotSplit) {
  TempDir dir;
  SeqpacketServer server(dir.Join("svc.sock"));
  ASSERT_TRUE(server.ok());
  GatewayFixture gw(dir, WithExports({Seqpacket("events", dir.Join("svc.sock"), 1024)}));
  ASSERT_TRUE(gw.Start());
  const std::string local = dir.Join("events.sock");
  Bridge mount(dir, {"mount", gw.Address("events"), local});
  ASSERT_TRUE(Mounted(mount, local));
  const int fd = ConnectSeqpacket(local, Duration(5000));
  ASSERT_GE(fd, 0);
  const std::string fits = RandomStream(1).Next(1024);
  ASSERT_EQ(::send(fd, fits.data(), fits.size(), MSG_NOSIGNAL), 1024);
  char buf[4096];
  ASSERT_TRUE(PollFor(fd, POLLIN, static_cast<int>(Scaled(Duration(10000)).count())));
  ASSERT_EQ(::recv(fd, buf, sizeof buf, 0), 1024);
  const std::string too_long = RandomStream(2).Next(1025);
  ASSERT_EQ(::send(fd, too_long.data(), too_long.size(), MSG_NOSIGNAL), 1025);
  // The refusal closes this connection: recv() sees the end (EOF or reset), not a reply.
  ASSERT_TRUE(PollFor(fd, POLLIN | POLLHUP, static_cast<int>(Scaled(Duration(10000)).count())));
  EXPECT_LE(::recv(fd, buf, sizeof buf, MSG_DONTWAIT), 0);
  ::close(fd);
  EXPECT_TRUE(WaitFor(
      [&] {
        return mount.Result().err.find(
                   "1025 bytes for 'events' is longer than its maximum of "
                   "1024 bytes") != std::string::npos;
      },
      Duration(5000)))
      << mount.Describe();
  EXPECT_EQ(server.largest(), 1024u) << "a piece of the oversized message reached the service";
  // The mount keeps serving other connections.
  const int again = ConnectSeqpacket(local, Duration(5000));
  ASSERT_GE(again, 0);
  ASSERT_EQ(::send(again, "ok", 2, MSG_NOSIGNAL), 2);
  ASSERT_TRUE(PollFor(again, POLLIN, static_cast<int>(Scaled(Duration(10000)).count())));
  EXPECT_EQ(::recv(again, buf, sizeof buf, 0), 2);
  ::close(again);
}

// The service's message longer than max_message_size is refused by the gateway: the client
// (`connect --messages length`) fails with the limit's exit status and the cause.
TEST(MessageMode, AnOversizedServiceMessageIsRefusedAtTheGateway) {
  TempDir dir;
  SeqpacketServer server(dir.Join("svc.sock"), RandomStream(3).Next(4096));
  ASSERT_TRUE(server.ok());
  GatewayFixture gw(dir, WithExports({Seqpacket("events", dir.Join("svc.sock"), 1024)}));
  ASSERT_TRUE(gw.Start());
  // stdin stays open (the test holds the FIFO's write side): the refusal, not EOF, ends it.
  const std::string fifo = dir.Join("stdin.fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const int hold = ::open(fifo.c_str(), O_RDWR | O_CLOEXEC);
  ClientResult r = RunPipegate(dir, {"connect", "--messages", "length", gw.Address("events")},
                               ClientOptions::Stdin(fifo));
  ::close(hold);
  EXPECT_TRUE(IsError(r, 5, gw.Address("events"), "longer than its maximum of 1024 bytes"))
      << r.Describe();
  EXPECT_TRUE(r.out.empty()) << "part of the oversized message was written";
  EXPECT_NE(gw.Log().find("4096 bytes for 'events' is longer than its maximum"), std::string::npos)
      << gw.Log();
}

// `connect --messages lines`: each stdin line is one message (without its newline) and each
// message comes out as one line; `--messages length`: 4-byte big-endian length, then the bytes.
TEST(MessageMode, ConnectFramesMessagesAsLinesOrLengths) {
  TempDir dir;
  SeqpacketServer server(dir.Join("svc.sock"));
  ASSERT_TRUE(server.ok());
  GatewayFixture gw(dir, WithExports({Seqpacket("events", dir.Join("svc.sock"))}));
  ASSERT_TRUE(gw.Start());
  const std::string lines = "alpha\nbeta\n" + std::string(70000 - 1, 'z').substr(0, 60000) + "\n";
  ASSERT_TRUE(WriteFile(dir.Join("lines.txt"), lines));
  ClientResult r = RunPipegate(dir, {"connect", "--messages", "lines", gw.Address("events")},
                               ClientOptions::Stdin(dir.Join("lines.txt")));
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_TRUE(r.out == lines) << "got " << r.out.size() << " bytes: " << r.out.substr(0, 40)
                              << "; stderr " << r.err;
  EXPECT_EQ(server.sizes(), (std::vector<size_t>{5, 4, 60000}));

  std::string framed;
  std::vector<size_t> want;
  for (size_t n : {1, 3, 65536, 17, 40000}) {
    const std::string m = RandomStream(static_cast<uint32_t>(n)).Next(n);
    framed += std::string{static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                          static_cast<char>(n >> 8), static_cast<char>(n)} +
              m;
    want.push_back(n);
  }
  ASSERT_TRUE(WriteFile(dir.Join("framed.bin"), framed));
  ClientResult f = RunPipegate(dir, {"connect", "--messages", "length", gw.Address("events")},
                               ClientOptions::Stdin(dir.Join("framed.bin")));
  ASSERT_EQ(f.status, 0) << f.Describe();
  EXPECT_TRUE(f.out == framed) << "framed output differs (" << f.out.size() << " bytes, want "
                               << framed.size() << ")";
  std::vector<size_t> seen = server.sizes();
  ASSERT_GE(seen.size(), want.size());
  EXPECT_EQ(std::vector<size_t>(seen.end() - static_cast<ptrdiff_t>(want.size()), seen.end()),
            want);
}

// --messages on a byte-stream export is a usage error, and a message export cannot be mounted
// as a FIFO.
TEST(MessageMode, MessagesNeedAMessageExport) {
  TempDir dir;
  SeqpacketServer server(dir.Join("svc.sock"));
  ASSERT_TRUE(server.ok());
  GatewayFixture gw(
      dir, WithExports({Seqpacket("events", dir.Join("svc.sock")), ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  ClientResult r = RunPipegate(dir, {"connect", "--messages", "lines", gw.Address("logs")});
  EXPECT_TRUE(IsError(r, 1, gw.Address("logs"), "needs a message-mode export")) << r.Describe();
  ClientResult m =
      RunPipegate(dir, {"mount", gw.Address("events"), dir.Join("ev.fifo"), "--as", "fifo"});
  EXPECT_TRUE(IsError(m, 1, gw.Address("events"), "cannot be presented as a FIFO")) << m.Describe();
  EXPECT_FALSE(PathExists(dir.Join("ev.fifo")));
}

}  // namespace
}  // namespace pipegate::testing
