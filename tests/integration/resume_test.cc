// Staying up (SPEC §8): a bridge that loses its connection reconnects and resumes every open
// stream from the last confirmed byte, so nothing is lost and nothing is delivered twice. The
// connection goes through a TcpProxy that the test resets mid-stream, or through a FaultRelay
// (tests/support/fault_relay.h) that cuts and stalls it at random points; the gateway is also
// killed, restarted and drained, and (as root) a veth link between network namespaces goes down.

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/data.h"
#include "support/fault_relay.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/gateway_probe.h"
#include "support/pipe_io.h"
#include "support/pki.h"
#include "support/proc_stats.h"
#include "support/process.h"
#include "support/tcp_proxy.h"
#include "support/timing.h"
#include "support/unix_socket.h"

namespace pipegate::testing {
namespace {

TEST(Resume, CatSurvivesAConnectionReset) {
  TempDir dir;
  const uint64_t size = DataSize(64 * kMiB, 16 * kMiB);
  constexpr uint64_t kSeed = 21;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("bulk")}));
  ASSERT_TRUE(gw.Start());
  TcpProxy proxy(gw.port());
  ASSERT_TRUE(proxy.ok());
  const std::string fifo = gw.ExportPath("bulk");
  const std::string out = dir.Join("out");
  Bridge cat(dir, {"cat", proxy.BaseAddress() + "/bulk"}, StdioSpec::Null(), out);
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !cat.Running(); },
                      Duration(10000)))
      << cat.Describe();
  const int writer = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  StreamFeeder feeder(writer, size, kSeed);

  ASSERT_TRUE(WaitFor([&] { return FileSize(out).value_or(0) >= size / 4 || !cat.Running(); },
                      Duration(30000)));
  feeder.Pause();  // Keep the stream open across the reset.
  ASSERT_TRUE(cat.Running()) << cat.Describe();
  EXPECT_EQ(proxy.DropAll(), 1);
  feeder.Resume();

  ASSERT_EQ(cat.Wait(Duration(60000)), 0) << cat.Describe();
  EXPECT_GE(proxy.accepted(), 2) << "the bridge never reconnected";
  EXPECT_EQ(feeder.error(), "");
  EXPECT_EQ(FileSize(out).value_or(0), size);
  EXPECT_EQ(Sha256Hex(out), RandomStreamSha256(size, kSeed));
}

TEST(Resume, WriteSurvivesConnectionResetsWithBytesInFlight) {
  TempDir dir;
  const uint64_t size = DataSize(64 * kMiB, 16 * kMiB);
  constexpr uint64_t kSeed = 22;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoWrite("sink")}));
  ASSERT_TRUE(gw.Start());
  TcpProxy proxy(gw.port());
  ASSERT_TRUE(proxy.ok());
  FifoReader reader(gw.ExportPath("sink"));
  ASSERT_TRUE(reader.ok()) << reader.error();
  Bridge write(dir, {"write", proxy.BaseAddress() + "/sink"}, StdioSpec::Pipe());
  ASSERT_TRUE(write.started());
  StreamFeeder feeder(write.process().TakeStdinFd(), size, kSeed);

  for (int drop = 1; drop <= 2; ++drop) {
    ASSERT_TRUE(WaitFor(
        [&] {
          return reader.bytes() >= size * static_cast<uint64_t>(drop) / 3 || !write.Running();
        },
        Duration(30000)))
        << "drop " << drop << ": reader has " << reader.bytes() << "; " << write.Describe();
    ASSERT_TRUE(write.Running()) << "drop " << drop << ": " << write.Describe();
    ASSERT_FALSE(feeder.done()) << "the transfer ended before drop " << drop;
    EXPECT_GE(proxy.DropAll(), 1) << "drop " << drop;
  }

  ASSERT_EQ(write.Wait(Duration(60000)), 0) << write.Describe();
  EXPECT_EQ(reader.DeliveredBytes(), size);
  ASSERT_TRUE(reader.WaitDone(Duration(30000)));
  EXPECT_GE(proxy.accepted(), 3) << "the bridge did not reconnect after each reset";
  EXPECT_EQ(reader.bytes(), size) << "bytes lost or duplicated across the resets";
  EXPECT_EQ(reader.Sha256Hex(), RandomStreamSha256(size, kSeed));
}

// ---- the fault-injecting relay, SIGKILL, SIGTERM, and network namespaces ----
//
// Measurements are printed as `[resume] ...` lines (and recorded as test properties): the
// longest outage survived, the memory held while disconnected, and the time from a restored
// link to data flowing again.

constexpr const char* kKeepalive = "0.5";  // Ping after 0.5 s; dead after 1.5 s of silence.

// `pipegate SUBCOMMAND --keepalive 0.5 REST...`.
std::vector<std::string> Fast(std::vector<std::string> args) {
  args.insert(args.begin() + 1, {"--keepalive", kKeepalive});
  return args;
}

void Report(const std::string& key, const std::string& value) {
  std::cout << "[resume] " << key << ": " << value << std::endl;
  ::testing::Test::RecordProperty(key, value);
}

std::string Summary(std::vector<int64_t> v) {
  if (v.empty()) {
    return "none";
  }
  std::sort(v.begin(), v.end());
  return "n=" + std::to_string(v.size()) + " median " + std::to_string(v[v.size() / 2]) +
         " ms, max " + std::to_string(v.back()) + " ms";
}

// 20 cuts and 5 stalls spread over the first 3/4 of `relay_bytes` (what the relay will forward,
// both directions, for the whole transfer). Stalls from 0.4 s (a pause the keepalive does not
// notice) to 2.6 s (longer than the 1.5 s keepalive timeout: the bridge declares the connection
// dead, and its reconnect is held by the stall too).
FaultRelay::Schedule FaultsOver(uint64_t relay_bytes, uint64_t seed) {
  FaultRelay::Schedule s;
  s.cuts = 20;
  s.stalls = 5;
  s.seed = seed;
  s.start_bytes = relay_bytes / 64;
  s.span_bytes = relay_bytes * 3 / 4;
  s.min_gap_bytes = relay_bytes / 200;
  s.stall_min = Duration(400);
  s.stall_max = Duration(2600);
  s.deadline = Duration(80000);
  return s;
}

// Checks that every scheduled fault hit during the transfer and reports how long recovery took.
void ExpectAllFaults(const FaultRelay& relay, const std::string& what, Clock::time_point start) {
  const FaultRelay::Stats s = relay.stats();
  EXPECT_TRUE(s.schedule_done) << relay.Describe();
  EXPECT_EQ(s.schedule_skipped, 0) << relay.Describe();
  EXPECT_GE(s.schedule_cuts, 20) << relay.Describe();
  EXPECT_GE(s.schedule_stalls, 5) << relay.Describe();
  EXPECT_GE(s.accepted, 21) << "the bridge did not reconnect after every cut; " << relay.Describe();
  Report(what, std::to_string(Since(start).count()) + " ms; " + relay.Describe());
  Report(what + " recovery after cut", Summary(s.recovery_after_cut_ms));
  Report(what + " recovery after stall", Summary(s.recovery_after_stall_ms));
}

TEST(ResumeFaults, CatOfAFifoExportThroughCutsAndStalls) {
  TempDir dir;
  const uint64_t size = DataSize(256 * kMiB, 32 * kMiB);
  constexpr uint64_t kSeed = 301;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("bulk")}));
  ASSERT_TRUE(gw.Start());
  FaultRelay relay(gw.port());
  ASSERT_TRUE(relay.ok());
  const std::string fifo = gw.ExportPath("bulk");
  const std::string out = dir.Join("out");
  const Clock::time_point start = Clock::now();
  Bridge cat(dir, Fast({"cat", relay.BaseAddress() + "/bulk"}), StdioSpec::Null(), out);
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !cat.Running(); },
                      Duration(10000)))
      << cat.Describe();
  const int writer = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  relay.StartSchedule(FaultsOver(size, kSeed));
  StreamFeeder feeder(writer, size, kSeed);

  const std::optional<int> status = cat.Wait(Duration(120000));
  ASSERT_EQ(status, 0) << cat.Describe() << "\n" << relay.Describe();
  EXPECT_EQ(feeder.error(), "");
  EXPECT_EQ(FileSize(out).value_or(0), size) << "bytes lost or duplicated";
  EXPECT_EQ(Sha256Hex(out), RandomStreamSha256(size, kSeed));
  ExpectAllFaults(relay, "cat " + std::to_string(size / kMiB) + " MiB", start);
}

TEST(ResumeFaults, WriteIntoAFifoExportThroughCutsAndStalls) {
  TempDir dir;
  const uint64_t size = DataSize(256 * kMiB, 32 * kMiB);
  constexpr uint64_t kSeed = 302;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoWrite("sink")}));
  ASSERT_TRUE(gw.Start());
  FaultRelay relay(gw.port());
  ASSERT_TRUE(relay.ok());
  FifoReader reader(gw.ExportPath("sink"));
  ASSERT_TRUE(reader.ok()) << reader.error();
  const Clock::time_point start = Clock::now();
  Bridge write(dir, Fast({"write", relay.BaseAddress() + "/sink"}), StdioSpec::Pipe());
  ASSERT_TRUE(write.started());
  relay.StartSchedule(FaultsOver(size, kSeed));
  StreamFeeder feeder(write.process().TakeStdinFd(), size, kSeed);

  const std::optional<int> status = write.Wait(Duration(120000));
  ASSERT_EQ(status, 0) << write.Describe() << "\n" << relay.Describe();
  // `write` exits 0 only once the gateway confirmed every byte delivered into the FIFO.
  EXPECT_EQ(reader.DeliveredBytes(), size);
  ASSERT_TRUE(reader.WaitDone(Duration(30000)));
  EXPECT_EQ(feeder.error(), "");
  EXPECT_EQ(reader.bytes(), size) << "bytes lost or duplicated";
  EXPECT_EQ(reader.Sha256Hex(), RandomStreamSha256(size, kSeed));
  ExpectAllFaults(relay, "write " + std::to_string(size / kMiB) + " MiB", start);
}

// One connection to a Unix socket on a thread: sends RandomStream(seed) while it reads the
// echo, half-closes, and reads until EOF. Bounded by a deadline.
class EchoClient {
 public:
  EchoClient(std::string path, uint64_t size, uint64_t seed)
      : path_(std::move(path)), size_(size), seed_(seed) {
    thread_ = std::thread([this] { Run(); });
  }
  ~EchoClient() {
    stop_ = true;
    thread_.join();
  }
  EchoClient(const EchoClient&) = delete;
  EchoClient& operator=(const EchoClient&) = delete;

  bool done() const { return done_.load(); }
  uint64_t received() const { return received_.load(); }
  // Valid once done().
  const std::string& error() const { return error_; }
  const std::string& digest() const { return digest_; }
  bool saw_eof() const { return eof_; }

 private:
  void Run() {
    const int fd = ConnectUnix(path_, Duration(10000));
    if (fd < 0) {
      error_ = "cannot connect to " + path_;
      done_ = true;
      return;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    RandomStream source(seed_);
    Sha256 hash;
    std::string chunk;
    size_t chunk_off = 0;
    uint64_t sent = 0;
    bool shut = false;
    std::vector<char> buf(256 * 1024);
    const Clock::time_point deadline = Clock::now() + Scaled(Duration(150000));
    while (!stop_ && !eof_) {
      if (Clock::now() > deadline) {
        error_ = "timed out: sent " + std::to_string(sent) + ", received " +
                 std::to_string(received_.load());
        break;
      }
      if (sent == size_ && !shut) {
        shutdown(fd, SHUT_WR);
        shut = true;
      }
      pollfd p{fd, static_cast<short>(POLLIN | (sent < size_ ? POLLOUT : 0)), 0};
      if (poll(&p, 1, 50) <= 0) {
        continue;
      }
      if ((p.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
        const ssize_t n = recv(fd, buf.data(), buf.size(), 0);
        if (n > 0) {
          hash.Update(buf.data(), static_cast<size_t>(n));
          received_ += static_cast<uint64_t>(n);
        } else if (n == 0) {
          eof_ = true;
        } else if (errno != EAGAIN && errno != EINTR) {
          error_ = std::string("recv: ") + std::strerror(errno);
          break;
        }
      }
      if (sent < size_ && (p.revents & POLLOUT) != 0) {
        if (chunk_off == chunk.size()) {
          chunk = source.Next(static_cast<size_t>(std::min<uint64_t>(64 * 1024, size_ - sent)));
          chunk_off = 0;
        }
        const ssize_t n =
            send(fd, chunk.data() + chunk_off, chunk.size() - chunk_off, MSG_NOSIGNAL);
        if (n > 0) {
          chunk_off += static_cast<size_t>(n);
          sent += static_cast<uint64_t>(n);
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
          error_ = std::string("send: ") + std::strerror(errno);
          break;
        }
      }
    }
    close(fd);
    digest_ = hash.HexDigest();
    done_ = true;
  }

  const std::string path_;
  const uint64_t size_;
  const uint64_t seed_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> done_{false};
  std::atomic<uint64_t> received_{0};
  bool eof_ = false;
  std::string error_;
  std::string digest_;
  std::thread thread_;
};

TEST(ResumeFaults, MountedUnixExportToAnEchoServerThroughCutsAndStalls) {
  TempDir dir;
  const uint64_t size = DataSize(256 * kMiB, 32 * kMiB);
  constexpr int kConnections = 4;
  const uint64_t each = size / kConnections;
  const std::string echo_path = dir.Join("echo.sock");
  UnixEchoServer echo(echo_path);
  ASSERT_TRUE(echo.ok()) << echo.error();
  GatewayFixture gw(dir, WithExports({ExportSpec::Unix("echo", echo_path)}));
  ASSERT_TRUE(gw.Start());
  FaultRelay relay(gw.port());
  ASSERT_TRUE(relay.ok());
  const std::string local = dir.Join("local.sock");
  const Clock::time_point start = Clock::now();
  Bridge mount(dir, Fast({"mount", relay.BaseAddress() + "/echo", local}));
  ASSERT_TRUE(StartMount(mount, local));
  // Every byte crosses the relay twice (there and back).
  relay.StartSchedule(FaultsOver(2 * size, 303));
  std::vector<std::unique_ptr<EchoClient>> clients;
  for (int i = 0; i < kConnections; ++i) {
    clients.push_back(std::make_unique<EchoClient>(local, each, 310 + static_cast<uint64_t>(i)));
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        for (auto& c : clients) {
          if (!c->done()) return false;
        }
        return true;
      },
      Duration(150000), Duration(50)))
      << relay.Describe() << "\n"
      << mount.Describe();
  for (int i = 0; i < kConnections; ++i) {
    SCOPED_TRACE("connection " + std::to_string(i));
    EchoClient& c = *clients[static_cast<size_t>(i)];
    EXPECT_EQ(c.error(), "");
    EXPECT_TRUE(c.saw_eof()) << "the echo server's half-close did not come through";
    EXPECT_EQ(c.received(), each) << "bytes lost or duplicated";
    EXPECT_EQ(c.digest(), RandomStreamSha256(each, 310 + static_cast<uint64_t>(i)));
  }
  EXPECT_TRUE(mount.Running()) << "the mount ended: " << mount.Describe();
  EXPECT_EQ(echo.accepted(), kConnections) << "a stream was opened twice at the gateway";
  EXPECT_EQ(echo.errors(), 0);
  ExpectAllFaults(relay, "mount echo 2x" + std::to_string(size / kMiB) + " MiB", start);
}

// The gateway keeps a detached session's streams with their local ends blocked, holding at most
// one stream window of replay each, and nothing grows with the outage's length.
TEST(ResumeFaults, DetachedStreamsHoldBoundedMemoryAndResume) {
  TempDir dir;
  constexpr int kStreams = 4;
  const uint64_t size = DataSize(48 * kMiB, 16 * kMiB);
  std::vector<ExportSpec> exports;
  for (int i = 0; i < kStreams; ++i) {
    exports.push_back(ExportSpec::FifoRead("f" + std::to_string(i)));
  }
  GatewayFixture gw(dir, WithExports(exports));
  ASSERT_TRUE(gw.Start());
  FaultRelay relay(gw.port());
  ASSERT_TRUE(relay.ok());
  const uint64_t rss_idle = ReadRssBytes(gw.pid()).value_or(0);
  std::vector<std::unique_ptr<Bridge>> cats;
  std::vector<std::unique_ptr<StreamFeeder>> feeders;
  for (int i = 0; i < kStreams; ++i) {
    const std::string name = "f" + std::to_string(i);
    cats.push_back(std::make_unique<Bridge>(dir, Fast({"cat", relay.BaseAddress() + "/" + name}),
                                            StdioSpec::Null(), dir.Join(name + ".out")));
  }
  // Every stream is open before any data flows, so they progress together.
  for (int i = 0; i < kStreams; ++i) {
    const std::string path = gw.ExportPath("f" + std::to_string(i));
    ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), path); }, Duration(10000)));
  }
  for (int i = 0; i < kStreams; ++i) {
    const int w =
        open(gw.ExportPath("f" + std::to_string(i)).c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    ASSERT_GE(w, 0);
    feeders.push_back(std::make_unique<StreamFeeder>(w, size, 400 + static_cast<uint64_t>(i)));
  }
  auto total_out = [&] {
    uint64_t t = 0;
    for (int i = 0; i < kStreams; ++i) {
      t += FileSize(dir.Join("f" + std::to_string(i) + ".out")).value_or(0);
    }
    return t;
  };
  // Data flows on every stream (half of one stream's size in all: none has finished yet).
  ASSERT_TRUE(WaitFor([&] { return total_out() >= size / 2; }, Duration(30000)));
  const uint64_t rss_streaming = ReadRssBytes(gw.pid()).value_or(0);

  // The gateway becomes unreachable: every connection is reset, reconnects are refused.
  relay.SetTarget(0);
  ASSERT_EQ(relay.Cut(), kStreams);
  const Clock::time_point lost = Clock::now();
  ASSERT_TRUE(WaitFor([&] { return ReadCounters(gw)["sessions_detached"] >= 1; }, Duration(5000)));
  // Measuring windows, not waits: the outage's length is what the RSS is compared across.
  std::this_thread::sleep_for(Duration(1500));
  const uint64_t rss_early = ReadRssBytes(gw.pid()).value_or(0);
  uint64_t fed_early = 0;
  for (auto& f : feeders) fed_early += f->written();
  const uint64_t out_early = total_out();
  std::this_thread::sleep_for(Duration(5000));
  const uint64_t rss_late = ReadRssBytes(gw.pid()).value_or(0);
  uint64_t fed_late = 0;
  for (auto& f : feeders) fed_late += f->written();
  EXPECT_EQ(total_out(), out_early) << "data flowed while the gateway was unreachable";
  // The local writers are blocked by back-pressure: at most what the FIFOs and the gateway's
  // buffers took in the first moments.
  EXPECT_LE(fed_late - fed_early, uint64_t{kStreams} * 2 * kMiB) << "writers were not blocked";
  EXPECT_LE(rss_late, rss_early + 2 * kMiB) << "gateway memory grew with the outage's length";
  Report("gateway RSS idle / streaming / detached at 1.5 s / detached at 6.5 s",
         std::to_string(rss_idle / 1024) + " / " + std::to_string(rss_streaming / 1024) + " / " +
             std::to_string(rss_early / 1024) + " / " + std::to_string(rss_late / 1024) +
             " KiB for " + std::to_string(kStreams) + " streams");
  Report(
      "gateway RSS per detached stream above idle",
      std::to_string((rss_late > rss_idle ? rss_late - rss_idle : 0) / kStreams / 1024) + " KiB");

  // The gateway is reachable again.
  relay.SetTarget(gw.port());
  const Clock::time_point restored = Clock::now();
  ASSERT_TRUE(WaitFor([&] { return total_out() > out_early + 64 * 1024; }, Duration(40000)))
      << relay.Describe();
  Report("outage (unreachable, connections reset)",
         std::to_string(Since(lost).count() - Since(restored).count()) + " ms");
  Report("restore to data flowing (bridge backoff included)",
         std::to_string(Since(restored).count()) + " ms");
  for (int i = 0; i < kStreams; ++i) {
    SCOPED_TRACE("stream " + std::to_string(i));
    ASSERT_EQ(cats[static_cast<size_t>(i)]->Wait(Duration(60000)), 0)
        << cats[static_cast<size_t>(i)]->Describe();
    const std::string out = dir.Join("f" + std::to_string(i) + ".out");
    EXPECT_EQ(FileSize(out).value_or(0), size);
    EXPECT_EQ(Sha256Hex(out), RandomStreamSha256(size, 400 + static_cast<uint64_t>(i)));
  }
  // Every session was kept once and resumed once.
  std::map<std::string, uint64_t> counters = ReadCounters(gw);
  EXPECT_EQ(counters["sessions_detached"], static_cast<uint64_t>(kStreams));
  EXPECT_EQ(counters["sessions_resumed"], static_cast<uint64_t>(kStreams));
  EXPECT_EQ(counters["sessions_expired"], 0u);
}

// The session is gone with the gateway process: the resume is refused, and `cat` says how far
// it got instead of ending as if the stream were whole.
TEST(ResumeFaults, GatewayKilledAndRestartedEndsTheCatWithExit6) {
  TempDir dir;
  constexpr uint64_t kSeed = 320;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("bulk")}));
  ASSERT_TRUE(gw.Start());
  FaultRelay relay(gw.port());
  ASSERT_TRUE(relay.ok());
  const std::string fifo = gw.ExportPath("bulk");
  const std::string out = dir.Join("out");
  Bridge cat(dir, Fast({"cat", relay.BaseAddress() + "/bulk"}), StdioSpec::Null(), out);
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !cat.Running(); },
                      Duration(10000)));
  const int writer = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  StreamFeeder feeder(writer, 1024 * kMiB, kSeed);
  ASSERT_TRUE(WaitFor([&] { return FileSize(out).value_or(0) >= 4 * kMiB; }, Duration(20000)));
  feeder.Pause();

  gw.Kill();
  std::this_thread::sleep_for(Duration(1000));  // The outage: the bridge must outlast it.
  EXPECT_TRUE(cat.Running()) << "the bridge gave up while the gateway was down: " << cat.Describe();
  ASSERT_TRUE(gw.Start());  // Same config, new process (and port: the relay follows it).
  relay.SetTarget(gw.port());
  const Clock::time_point restarted = Clock::now();
  // Documented bound: the next reconnect attempt (exponential backoff from 0.25 s, here at most
  // 2 s after a 1 s outage) plus one handshake; 10 s leaves room.
  const std::optional<int> status = cat.Wait(Duration(10000));
  const int64_t took = Since(restarted).count();
  ASSERT_EQ(status, 6) << cat.Describe();
  const ClientResult r = cat.Result();
  const uint64_t written = FileSize(out).value_or(0);
  EXPECT_GT(written, 0u);
  EXPECT_NE(r.err.find("could not be resumed"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("confirmed"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(std::to_string(written) + " byte(s) received were written out"),
            std::string::npos)
      << "the message should say exactly how many bytes reached stdout (" << written
      << "): " << r.err;
  EXPECT_NE(gw.Log().find("refused to resume"), std::string::npos) << gw.Log();
  Report("gateway restart to cat exit 6", std::to_string(took) + " ms");
  // What did arrive is an exact prefix of the stream.
  const std::string prefix = ReadFile(out);
  RandomStream expected(kSeed);
  EXPECT_TRUE(prefix == expected.Next(prefix.size())) << "the partial output is corrupt";
  feeder.Stop();
}

TEST(ResumeFaults, UnreachableForLongerThanTheSessionLifetimeExits6AndFreesTheSession) {
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::FifoRead("bulk")});
  options.extra_gateway_toml = "resume_ttl = 2\n";
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  FaultRelay relay(gw.port());
  const std::string fifo = gw.ExportPath("bulk");
  const std::string out = dir.Join("out");
  Bridge cat(dir, Fast({"cat", relay.BaseAddress() + "/bulk"}), StdioSpec::Null(), out);
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !cat.Running(); },
                      Duration(10000)));
  const int writer = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  StreamFeeder feeder(writer, 1024 * kMiB, 330);
  ASSERT_TRUE(WaitFor([&] { return FileSize(out).value_or(0) >= kMiB; }, Duration(20000)));
  relay.SetTarget(0);
  ASSERT_EQ(relay.Cut(), 1);
  const Clock::time_point lost = Clock::now();
  const std::optional<int> status = cat.Wait(Duration(10000));
  ASSERT_EQ(status, 6) << cat.Describe();
  const int64_t took = Since(lost).count();
  EXPECT_GE(took, 1800) << "gave up before the session lifetime (2 s) passed";
  EXPECT_LE(took, 5000);
  const ClientResult r = cat.Result();
  EXPECT_NE(r.err.find("confirmed"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(std::to_string(FileSize(out).value_or(0)) + " byte(s) received"),
            std::string::npos)
      << r.err;
  // The gateway lets the session go after its lifetime: the FIFO is closed, so the writer gets
  // EPIPE instead of blocking forever.
  EXPECT_TRUE(WaitFor([&] { return !ProcessHasFileOpen(gw.pid(), fifo); }, Duration(5000)))
      << gw.Log();
  std::map<std::string, uint64_t> counters = ReadCounters(gw);
  EXPECT_EQ(counters["sessions_detached"], 1u);
  EXPECT_EQ(counters["sessions_expired"], 1u);
  EXPECT_EQ(counters["sessions_resumed"], 0u);
  Report("unreachable, resume_ttl 2 s: cat exit 6 after", std::to_string(took) + " ms");
}

// CPU time (user + system) a process has used, in ms, from /proc/PID/stat.
int64_t CpuMs(pid_t pid) {
  const std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  const size_t close_paren = stat.rfind(')');
  if (close_paren == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close_paren + 2));
  std::string field;
  uint64_t utime = 0;
  uint64_t stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {  // Fields 14 and 15: utime, stime.
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<int64_t>((utime + stime) * 1000 / static_cast<uint64_t>(sysconf(_SC_CLK_TCK)));
}

TEST(ResumeFaults, AMountServesALocalClientThatConnectsWhileDisconnected) {
  // A local program connects to a mounted socket while the gateway is unreachable: it waits (the
  // mount neither refuses it nor spins on the pending connection), and is served after the
  // resume.
  TempDir dir;
  const std::string echo_path = dir.Join("echo.sock");
  UnixEchoServer echo(echo_path);
  ASSERT_TRUE(echo.ok()) << echo.error();
  GatewayFixture gw(dir, WithExports({ExportSpec::Unix("echo", echo_path)}));
  ASSERT_TRUE(gw.Start());
  FaultRelay relay(gw.port());
  const std::string local = dir.Join("local.sock");
  Bridge mount(dir, Fast({"mount", relay.BaseAddress() + "/echo", local}));
  ASSERT_TRUE(StartMount(mount, local));
  const ExchangeResult before = UnixExchange(local, "first", Duration(10000));
  ASSERT_TRUE(before.ok) << before.error;

  relay.SetTarget(0);
  ASSERT_EQ(relay.Cut(), 1);
  // Cut() returns once the connection is reset: the gateway is unreachable from here on,
  // whether or not the idle mount has noticed yet.
  const std::string payload = RandomStream(380).Next(200000);
  ExchangeResult during;
  std::thread client([&] { during = UnixExchange(local, payload, Duration(30000)); });
  // The CPU window below is the measurement; it opens once the client had time to connect
  // (connect() to the listening socket returns at once; nothing outside the mount shows it).
  std::this_thread::sleep_for(Duration(300));
  const int64_t cpu_before = CpuMs(mount.pid());
  std::this_thread::sleep_for(Duration(2000));
  const int64_t cpu_used = CpuMs(mount.pid()) - cpu_before;
  relay.SetTarget(gw.port());
  client.join();
  EXPECT_TRUE(during.ok) << during.error << "\n" << mount.Describe();
  EXPECT_TRUE(during.received == payload) << "got " << during.received.size() << " bytes";
  EXPECT_LT(cpu_used, 500) << "the mount used " << cpu_used
                           << " ms of CPU in 2 s while a local client waited: it spins";
  // And a program that comes later is served too, without the mount spinning meanwhile.
  const int64_t cpu_after_before = CpuMs(mount.pid());
  const Clock::time_point after_start = Clock::now();
  const ExchangeResult after = UnixExchange(local, "after", Duration(5000));
  const int64_t cpu_after = CpuMs(mount.pid()) - cpu_after_before;
  EXPECT_TRUE(after.ok) << after.error << "\n" << mount.Describe();
  EXPECT_EQ(after.received, "after");
  EXPECT_LT(cpu_after, Since(after_start).count() / 2 + 100) << "the mount spins";
  EXPECT_TRUE(mount.Running()) << mount.Describe();
  Report("mount CPU while a local client waits out an outage",
         std::to_string(cpu_used) + " ms in 2000 ms");
}

TEST(ResumeFaults, AMountStartsFreshStreamsAfterTheGatewayRestarts) {
  // The session dies with the gateway: the mount says so and serves new openers with fresh
  // streams on a new session.
  TempDir dir;
  const std::string echo_path = dir.Join("echo.sock");
  UnixEchoServer echo(echo_path);
  ASSERT_TRUE(echo.ok()) << echo.error();
  GatewayFixture gw(dir, WithExports({ExportSpec::Unix("echo", echo_path)}));
  ASSERT_TRUE(gw.Start());
  FaultRelay relay(gw.port());
  const std::string local = dir.Join("local.sock");
  Bridge mount(dir, Fast({"mount", relay.BaseAddress() + "/echo", local}));
  ASSERT_TRUE(StartMount(mount, local));
  // A stream open across the restart is lost (reset), not silently truncated.
  const int held = ConnectUnix(local, Duration(5000));
  ASSERT_GE(held, 0);
  ASSERT_TRUE(WaitFor([&] { return echo.accepted() == 1; }, Duration(5000)));
  gw.Kill();
  ASSERT_TRUE(gw.Start());
  relay.SetTarget(gw.port());
  ASSERT_TRUE(WaitFor([&] { return mount.Result().err.find("not resumed") != std::string::npos; },
                      Duration(10000)))
      << mount.Describe();
  // Bounded: a local end left open fails here, not at CTest's timeout.
  pollfd ready{held, POLLIN, 0};
  ASSERT_EQ(poll(&ready, 1, static_cast<int>(Scaled(Duration(5000)).count())), 1)
      << "the lost stream's local end was not closed";
  char c;
  EXPECT_LE(recv(held, &c, 1, MSG_DONTWAIT), 0) << "the lost stream's local end was not closed";
  close(held);
  const ExchangeResult after = UnixExchange(local, "fresh", Duration(5000));
  EXPECT_TRUE(after.ok) << after.error << "\n" << mount.Describe();
  EXPECT_EQ(after.received, "fresh");
  EXPECT_TRUE(mount.Running()) << mount.Describe();
}

// Targeted faults: a reply lost in flight at the worst moment. The relay holds what the gateway
// sends (a downstream stall) until the gateway has acted, then the connection is cut.

TEST(ResumeFaults, WriteWhoseOpenOkAndFinAreLostStillCompletes) {
  // The gateway answers a `write` OPEN with OPEN_OK and, at once, the FIN of its own (empty)
  // direction. Both are lost; after the resume the bridge must still learn of that FIN, or it
  // waits for it forever after its data is delivered.
  TempDir dir;
  constexpr uint64_t kSeed = 370;
  const uint64_t size = 2 * kMiB;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoWrite("sink")}));
  ASSERT_TRUE(gw.Start());
  FaultRelay relay(gw.port());
  ASSERT_TRUE(relay.ok());
  const std::string fifo = gw.ExportPath("sink");
  const std::string input = dir.Join("input");
  ASSERT_EQ(WriteRandomFile(input, size, kSeed), RandomStreamSha256(size, kSeed));
  // No reader yet: the gateway holds the OPEN (--wait) without answering.
  Bridge write(dir, Fast({"write", "--wait", "30", relay.BaseAddress() + "/sink"}),
               StdioSpec::File(input));
  ASSERT_TRUE(
      WaitFor([&] { return gw.Log().find("client 'alice' connected") != std::string::npos; },
              Duration(10000)));
  // The OPEN reaches the gateway and waits.
  ASSERT_TRUE(WaitFor([&] { return ReadCounters(gw)["opens_waited"] == 1; }, Duration(10000)))
      << write.Describe();
  relay.StallDownstream(Duration(10000));
  FifoReader reader(fifo);
  ASSERT_TRUE(reader.ok());
  // The gateway opens the FIFO and answers: OPEN_OK and its FIN, held by the relay.
  ASSERT_TRUE(WaitFor([&] { return relay.held_downstream() > 0; }, Duration(5000)))
      << "the gateway's answer never reached the relay; " << relay.Describe();
  ASSERT_TRUE(ProcessHasFileOpen(gw.pid(), fifo));
  ASSERT_EQ(relay.Cut(), 1);
  relay.StallDownstream(Duration(0));
  ASSERT_EQ(write.Wait(Duration(10000)), 0)
      << "the bridge did not finish (it never got the gateway's FIN): " << write.Describe();
  ASSERT_TRUE(reader.WaitDone(Duration(10000)));
  EXPECT_EQ(reader.bytes(), size);
  EXPECT_EQ(reader.Sha256Hex(), RandomStreamSha256(size, kSeed));
}

TEST(ResumeFaults, CatWhoseLastFinIsLostEndsCleanly) {
  // Every byte was acknowledged when the gateway's FIFO writer closes, so the gateway sends its
  // FIN with nothing outstanding and forgets the stream. That FIN is lost: after the resume,
  // `cat` must end with exit 0 (it has every byte), not report the stream lost.
  TempDir dir;
  constexpr uint64_t kSeed = 371;
  const uint64_t size = 256 * kKiB;  // One quarter of the 1 MiB stream window: a CREDIT.
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("bulk")}));
  ASSERT_TRUE(gw.Start());
  FaultRelay relay(gw.port());
  const std::string fifo = gw.ExportPath("bulk");
  const std::string out = dir.Join("out");
  Bridge cat(dir, Fast({"cat", relay.BaseAddress() + "/bulk"}), StdioSpec::Null(), out);
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !cat.Running(); },
                      Duration(10000)));
  const int writer = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  const std::string data = RandomStream(kSeed).Next(size);
  // From here the bridge sends nothing upstream but the one CREDIT it owes once it has written
  // all of it (a quarter of the window; keepalive PINGs go the other way: the gateway is
  // sending).
  const uint64_t up_before = relay.stats().up;
  ASSERT_EQ(write(writer, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ASSERT_TRUE(WaitFor([&] { return FileSize(out).value_or(0) == size; }, Duration(10000)));
  // The CREDIT for all of it passes the relay towards the gateway.
  ASSERT_TRUE(WaitFor([&] { return relay.stats().up > up_before; }, Duration(5000)))
      << relay.Describe();
  relay.StallDownstream(Duration(10000));
  close(writer);  // EOF: the gateway sends its FIN, held by the relay.
  ASSERT_TRUE(WaitFor([&] { return relay.held_downstream() > 0; }, Duration(5000)))
      << "the gateway's FIN never reached the relay; " << relay.Describe();
  ASSERT_EQ(relay.Cut(), 1);
  relay.StallDownstream(Duration(0));
  ASSERT_EQ(cat.Wait(Duration(10000)), 0) << cat.Describe();
  EXPECT_EQ(FileSize(out).value_or(0), size);
  EXPECT_EQ(Sha256Hex(out), Sha256HexOf(data));
}

// True if a TCP connect to 127.0.0.1:port is refused.
bool TcpConnectRefused(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  const bool refused =
      connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno == ECONNREFUSED;
  close(fd);
  return refused;
}

TEST(ResumeFaults, SigtermDrainsTheStreamInProgressThenExits0) {
  TempDir dir;
  const uint64_t size = DataSize(64 * kMiB, 16 * kMiB);
  constexpr uint64_t kSeed = 340;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("bulk")}));
  ASSERT_TRUE(gw.Start());
  const std::string fifo = gw.ExportPath("bulk");
  const std::string out = dir.Join("out");
  Bridge cat(dir, Fast({"cat", gw.Address("bulk")}), StdioSpec::Null(), out);
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !cat.Running(); },
                      Duration(10000)));
  const int writer = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  StreamFeeder feeder(writer, size, kSeed);
  ASSERT_TRUE(WaitFor([&] { return FileSize(out).value_or(0) >= size / 4; }, Duration(20000)));
  gw.Signal(SIGTERM);
  const Clock::time_point term = Clock::now();
  // Draining: the listener is closed, so new clients are refused.
  ASSERT_TRUE(
      WaitFor([&] { return gw.Log().find("draining") != std::string::npos; }, Duration(5000)));
  EXPECT_TRUE(WaitFor([&] { return TcpConnectRefused(gw.port()); }, Duration(5000)))
      << "the gateway still accepts connections while draining";
  // The stream in progress completes, then the gateway exits 0.
  ASSERT_EQ(cat.Wait(Duration(15000)), 0) << cat.Describe();
  EXPECT_EQ(FileSize(out).value_or(0), size);
  EXPECT_EQ(Sha256Hex(out), RandomStreamSha256(size, kSeed));
  ASSERT_TRUE(WaitFor([&] { return !gw.Running(); }, Duration(15000))) << Tail(gw.Log());
  EXPECT_EQ(gw.Stop(Duration(1000)), 0) << Tail(gw.Log());
  EXPECT_EQ(gw.Log().find("handles left open"), std::string::npos) << Tail(gw.Log());
  Report("SIGTERM to gateway exit (drain)", std::to_string(Since(term).count()) + " ms");
}

TEST(ResumeFaults, AClientKilledMidStreamLeavesTheGatewayServingOthers) {
  TempDir dir;
  GatewayOptions options =
      WithExports({ExportSpec::FifoRead("victim"), ExportSpec::FifoRead("other")});
  options.extra_gateway_toml = "resume_ttl = 2\n";
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  const uint64_t size = DataSize(48 * kMiB, 16 * kMiB);
  const std::string victim_fifo = gw.ExportPath("victim");
  const std::string other_fifo = gw.ExportPath("other");
  Bridge victim(dir, {"cat", gw.Address("victim")}, StdioSpec::Null(), dir.Join("victim.out"));
  Bridge other(dir, {"cat", gw.Address("other")}, StdioSpec::Null(), dir.Join("other.out"));
  ASSERT_TRUE(WaitFor(
      [&] {
        return ProcessHasFileOpen(gw.pid(), victim_fifo) &&
               ProcessHasFileOpen(gw.pid(), other_fifo);
      },
      Duration(10000)));
  const int vw = open(victim_fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  const int ow = open(other_fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(vw, 0);
  ASSERT_GE(ow, 0);
  StreamFeeder victim_feeder(vw, 1024 * kMiB, 350);
  StreamFeeder other_feeder(ow, size, 351);
  ASSERT_TRUE(WaitFor([&] { return FileSize(dir.Join("victim.out")).value_or(0) >= 2 * kMiB; },
                      Duration(20000)));
  victim.process().Kill();
  const Clock::time_point killed = Clock::now();

  // The others are served as before.
  ASSERT_EQ(other.Wait(Duration(60000)), 0) << other.Describe();
  EXPECT_EQ(Sha256Hex(dir.Join("other.out")), RandomStreamSha256(size, 351));
  const ClientResult ls = RunPipegate(dir, {"ls", gw.BaseAddress()});
  EXPECT_EQ(ls.status, 0) << ls.Describe();
  // The victim's session is kept for its lifetime (2 s), then freed with its FIFO.
  EXPECT_TRUE(WaitFor([&] { return !ProcessHasFileOpen(gw.pid(), victim_fifo); }, Duration(10000)))
      << Tail(gw.Log());
  const int64_t freed = Since(killed).count();
  EXPECT_GE(freed, 1500) << "the session was not kept for a resume";
  EXPECT_TRUE(WaitFor([&] { return victim_feeder.done(); }, Duration(5000)))
      << "the victim's writer is still blocked";
  // A new client of the same export is served.
  const std::string again = dir.Join("again.out");
  Bridge cat(dir, {"cat", gw.Address("victim")}, StdioSpec::Null(), again);
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), victim_fifo); }, Duration(10000)))
      << cat.Describe();
  const int w2 = open(victim_fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(w2, 0);
  StreamFeeder feeder2(w2, 4 * kMiB, 352);
  ASSERT_EQ(cat.Wait(Duration(30000)), 0) << cat.Describe();
  EXPECT_EQ(Sha256Hex(again), RandomStreamSha256(4 * kMiB, 352));
  EXPECT_TRUE(gw.Running());
  Report("client SIGKILL to session freed (resume_ttl 2 s)", std::to_string(freed) + " ms");
}

// ---- Network namespaces: a link that goes down and comes back ----

// Runs a command, returning its exit status (and output, for messages).
int Sh(const std::vector<std::string>& argv, std::string* output = nullptr) {
  TempDir scratch;
  CommandResult r = RunCommand(argv, scratch.path(), Duration(15000));
  if (output != nullptr) {
    *output = r.out + r.err;
  }
  return r.status.value_or(-1);
}

// Two namespaces joined by a veth pair with link-local addresses; removed in the destructor.
class NetnsPair {
 public:
  NetnsPair() {
    const std::string tag = std::to_string(getpid() % 100000);
    a_ = "pgresA" + tag;
    b_ = "pgresB" + tag;
    veth_a_ = "pgva" + tag;
    veth_b_ = "pgvb" + tag;
  }
  ~NetnsPair() {
    for (const std::string& ns : created_) {
      Sh({"ip", "netns", "del", ns});
    }
  }
  NetnsPair(const NetnsPair&) = delete;
  NetnsPair& operator=(const NetnsPair&) = delete;

  // @return Empty on success, else why namespaces cannot be used here.
  std::string Setup() {
    if (geteuid() != 0) {
      return "not running as root";
    }
    std::string why;
    for (const std::string& ns : {a_, b_}) {
      if (Sh({"ip", "netns", "add", ns}, &why) != 0) {
        return "`ip netns add` failed: " + why;
      }
      created_.push_back(ns);
    }
    const std::vector<std::vector<std::string>> steps = {
        {"ip", "link", "add", veth_a_, "type", "veth", "peer", "name", veth_b_},
        {"ip", "link", "set", veth_a_, "netns", a_},
        {"ip", "link", "set", veth_b_, "netns", b_},
        {"ip", "-n", a_, "addr", "add", std::string(kAddrA) + "/24", "dev", veth_a_},
        {"ip", "-n", b_, "addr", "add", std::string(kAddrB) + "/24", "dev", veth_b_},
        {"ip", "-n", a_, "link", "set", "lo", "up"},
        {"ip", "-n", b_, "link", "set", "lo", "up"},
        {"ip", "-n", a_, "link", "set", veth_a_, "up"},
        {"ip", "-n", b_, "link", "set", veth_b_, "up"},
    };
    for (const auto& step : steps) {
      if (Sh(step, &why) != 0) {
        return "network setup failed at `" + step[3] + " " + step[4] + "`: " + why;
      }
    }
    return "";
  }
  bool SetLink(bool up) {
    return Sh({"ip", "-n", a_, "link", "set", veth_a_, up ? "up" : "down"}) == 0;
  }
  std::vector<std::string> Exec(bool in_a, std::vector<std::string> argv) const {
    argv.insert(argv.begin(), {"ip", "netns", "exec", in_a ? a_ : b_});
    return argv;
  }

  static constexpr const char* kAddrA = "169.254.77.1";
  static constexpr const char* kAddrB = "169.254.77.2";

 private:
  std::string a_, b_, veth_a_, veth_b_;
  std::vector<std::string> created_;
};

TEST(ResumeNetns, LinkDownLongerThanTheKeepaliveTimeoutAndBack) {
  TempDir dir;
  const uint64_t size = DataSize(64 * kMiB, 16 * kMiB);
  constexpr uint64_t kSeed = 360;
  NetnsPair net;
  if (const std::string why = net.Setup(); !why.empty()) {
    std::cout << "[resume] skipping the network namespace test: " << why << std::endl;
    GTEST_SKIP() << why;
  }
  ASSERT_TRUE(EnsureTestPki());
  // The gateway listens on its end of the veth, inside its namespace.
  GatewayFixture spec(dir, WithExports({ExportSpec::FifoRead("bulk")}));
  const std::string config = dir.Join("netns-gw.toml");
  ASSERT_TRUE(WriteFile(
      config, ReplaceAll(spec.ConfigToml(), "127.0.0.1:0", std::string(NetnsPair::kAddrB) + ":0")));
  const std::string log = dir.Join("netns-gw.log");
  ProcessOptions gopts;
  gopts.argv = net.Exec(false, {BinPath("pipegated"), "--config", config});
  gopts.stdout_spec = StdioSpec::AppendFile(log);
  gopts.stderr_spec = StdioSpec::AppendFile(log);
  Process gateway(gopts);
  const std::regex listening(std::string(R"(listening on 169\.254\.77\.2:([0-9]+))"));
  std::smatch m;
  std::string text;
  ASSERT_TRUE(WaitFor(
      [&] {
        text = ReadFile(log);
        return std::regex_search(text, m, listening) || !gateway.Running();
      },
      Duration(15000)));
  ASSERT_FALSE(m.empty()) << text;
  const std::string port = m[1].str();
  const std::string fifo = spec.ExportPath("bulk");
  ASSERT_TRUE(WaitFor([&] { return IsFifo(fifo); }, Duration(5000)));

  const std::string out = dir.Join("out");
  ProcessOptions copts =
      PipegateOptions(dir, {"cat", "--keepalive", kKeepalive, "--servername", "localhost",
                            "pipe://" + std::string(NetnsPair::kAddrB) + ":" + port + "/bulk"});
  copts.argv = net.Exec(true, copts.argv);
  copts.stdout_spec = StdioSpec::File(out);
  const std::string err = dir.Join("cat.err");
  copts.stderr_spec = StdioSpec::File(err);
  Process cat(copts);
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gateway.pid(), fifo) || !cat.Running(); },
                      Duration(10000)))
      << ReadFile(err) << ReadFile(log);
  const int writer = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  StreamFeeder feeder(writer, size, kSeed);
  ASSERT_TRUE(WaitFor([&] { return FileSize(out).value_or(0) >= size / 4 || !cat.Running(); },
                      Duration(30000)));
  ASSERT_TRUE(cat.Running()) << ReadFile(err);

  // Down for 4 s: longer than the keepalive timeout (1.5 s, checked every second).
  ASSERT_TRUE(net.SetLink(false));
  const Clock::time_point down = Clock::now();
  std::this_thread::sleep_for(Duration(4000));
  const uint64_t during = FileSize(out).value_or(0);
  ASSERT_TRUE(net.SetLink(true));
  const Clock::time_point up = Clock::now();
  const int64_t outage = std::chrono::duration_cast<Duration>(up - down).count();
  ASSERT_TRUE(
      WaitFor([&] { return FileSize(out).value_or(0) > during + 64 * 1024 || !cat.Running(); },
              Duration(40000)))
      << ReadFile(err);
  const int64_t recovery = Since(up).count();
  ASSERT_EQ(cat.Wait(Duration(60000)), 0) << ReadFile(err) << Tail(ReadFile(log));
  EXPECT_EQ(FileSize(out).value_or(0), size);
  EXPECT_EQ(Sha256Hex(out), RandomStreamSha256(size, kSeed));
  // The gateway saw the bridge come back over a new connection and resume.
  EXPECT_NE(ReadFile(log).find("resumed"), std::string::npos) << Tail(ReadFile(log));
  Report("netns link down", std::to_string(outage) + " ms");
  Report("netns link up to data flowing", std::to_string(recovery) + " ms");
  gateway.Signal(SIGTERM);
  EXPECT_EQ(gateway.Wait(Duration(15000)), 0);
}
}  // namespace
}  // namespace pipegate::testing
