// Bulk data through the gateway and the bridge, verified by SHA-256 end to end (SPEC §3):
// fifo read and write exports, many streams on one connection, and backpressure.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/data.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/pipe_io.h"
#include "support/proc_stats.h"
#include "support/process.h"
#include "support/timing.h"
#include "support/unix_socket.h"

namespace pipegate::testing {
namespace {

std::string MiB(uint64_t bytes) { return std::to_string(bytes / kMiB) + " MiB"; }

// Starts `pipegate cat` of the FIFO read export "bulk" into @p out, waits until the gateway has
// opened the FIFO for it, and writes @p source into the FIFO; then both must end with status 0.
// @p address replaces gw.Address("bulk") when given.
void CatFromFifoExport(TempDir& dir, GatewayFixture& gw, const std::string& source,
                       const std::string& out, const std::string& address = "") {
  const std::string fifo = gw.ExportPath("bulk");
  Bridge cat(dir, {"cat", address.empty() ? gw.Address("bulk") : address}, StdioSpec::Null(), out);
  ASSERT_TRUE(cat.started());
  // The gateway opens the FIFO for reading once the remote reader is attached.
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !cat.Running(); },
                      Duration(10000)))
      << "the gateway never opened " << fifo << " for the remote reader; " << cat.Describe();
  ASSERT_TRUE(cat.Running()) << "cat ended before any local writer came: " << cat.Describe();

  ProcessOptions writer_options = ProcessOptions::Of({"cat", source});
  writer_options.stdout_spec = StdioSpec::File(fifo);
  Process writer(std::move(writer_options));
  ASSERT_TRUE(writer.started()) << writer.error();
  EXPECT_EQ(writer.Wait(Duration(60000)), 0) << "local writer";
  ASSERT_EQ(cat.Wait(Duration(60000)), 0) << cat.Describe();
}

// Local writer -> FIFO -> gateway -> TLS -> `pipegate cat` -> file.
TEST(Transfer, FifoReadExportDelivers64MiBToCat) {
  TempDir dir;
  const uint64_t size = DataSize(64 * kMiB, 16 * kMiB);
  const std::string source = dir.Join("source");
  const std::string sha = WriteRandomFile(source, size, 1);
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("bulk")}));
  ASSERT_TRUE(gw.Start());

  const std::string out = dir.Join("out");
  const auto start = Clock::now();
  ASSERT_NO_FATAL_FAILURE(CatFromFifoExport(dir, gw, source, out));
  const Duration took = Since(start);
  EXPECT_EQ(FileSize(out).value_or(0), size);
  EXPECT_EQ(Sha256Hex(out), sha);
  ::testing::Test::RecordProperty("mib_per_s",
                                  std::to_string(static_cast<double>(size) / kMiB /
                                                 (static_cast<double>(took.count()) / 1000.0)));
}

// The same over IPv6 loopback: the gateway listens on [::1] only, and the address names it in
// brackets (the test certificate has ::1 among its names).
TEST(Transfer, AGatewayListeningOnIpv6LoopbackServesCat) {
  TempDir dir;
  const std::string source = dir.Join("source");
  const std::string sha = WriteRandomFile(source, 4 * kMiB, 9);
  GatewayOptions options = WithExports({ExportSpec::FifoRead("bulk")});
  options.listen = "[::1]:0";
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  EXPECT_EQ(gw.Address("bulk"), "pipe://[::1]:" + std::to_string(gw.port()) + "/bulk");

  const std::string out = dir.Join("out");
  ASSERT_NO_FATAL_FAILURE(CatFromFifoExport(dir, gw, source, out));
  EXPECT_EQ(Sha256Hex(out), sha);
  EXPECT_NE(gw.Log().find("listening on [::1]:"), std::string::npos) << gw.Log();
}

// A host name goes through the resolver (a numeric address does not): `localhost` reaches the
// gateway on 127.0.0.1, and the certificate's DNS name localhost is what is verified.
TEST(Transfer, AGatewayNamedByHostNameIsResolved) {
  TempDir dir;
  const std::string source = dir.Join("source");
  const std::string sha = WriteRandomFile(source, 4 * kMiB, 10);
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("bulk")}));
  ASSERT_TRUE(gw.Start());

  // localhost may resolve to ::1 first (Debian's /etc/hosts names both); the gateway listens
  // on 127.0.0.1 only, so this also passes only if the client goes on to the next address.
  const std::string out = dir.Join("out");
  ASSERT_NO_FATAL_FAILURE(CatFromFifoExport(
      dir, gw, source, out, "pipe://localhost:" + std::to_string(gw.port()) + "/bulk"));
  EXPECT_EQ(Sha256Hex(out), sha);
}

// Runs a command where "localhost" resolves to ::1 and 127.0.0.1 (in the resolver's order),
// through a hosts file of the test's own bound over /etc/hosts in a private mount namespace
// (root only).
struct TwoAddressHost {
  std::vector<std::string> wrapper;  // argv prefix that enters the namespace
  bool v6_first = false;             // the resolver gives ::1 first
  std::string why_not;               // set when no such namespace can be had here

  explicit TwoAddressHost(TempDir& dir) {
    const std::string hosts = dir.Join("hosts");
    if (!WriteFile(hosts, "127.0.0.1 localhost\n::1 localhost\n")) {
      why_not = "cannot write " + hosts;
      return;
    }
    wrapper = {"unshare", "--mount", "sh", "-c", "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
               hosts};
    std::vector<std::string> getent = wrapper;
    getent.insert(getent.end(), {"getent", "ahosts", "localhost"});
    const CommandResult order = RunCommand(getent, dir.path(), Duration(10000));
    if (order.status != 0 || order.out.find("::1") == std::string::npos ||
        order.out.find("127.0.0.1") == std::string::npos) {
      why_not =
          "no private mount namespace with both loopback addresses here: " + order.err + order.out;
      return;
    }
    v6_first = order.out.rfind("::1", 0) == 0;
  }
  // The address the resolver gives second, where the tests' gateway listens.
  std::string SecondListen() const { return v6_first ? "127.0.0.1:0" : "[::1]:0"; }
};

// A gateway with an echo export, listening only on the address "localhost" resolves to second.
class Dial : public ::testing::Test {
 protected:
  void SetUp() override {
    host_ = std::make_unique<TwoAddressHost>(dir_);
    if (!host_->why_not.empty()) GTEST_SKIP() << host_->why_not;
    server_ = std::make_unique<UnixEchoServer>(dir_.Join("echo.sock"));
    ASSERT_TRUE(server_->ok()) << server_->error();
    GatewayOptions options = WithExports({ExportSpec::Unix("echo", dir_.Join("echo.sock"))});
    options.listen = host_->SecondListen();
    gw_ = std::make_unique<GatewayFixture>(dir_, options);
    ASSERT_TRUE(gw_->Start());
  }

  TempDir dir_;
  std::unique_ptr<TwoAddressHost> host_;
  std::unique_ptr<UnixEchoServer> server_;
  std::unique_ptr<GatewayFixture> gw_;
};

// A name with two addresses, the first refusing: the client connects to the second, as ssh and
// curl do, and when both refuse it names both.
TEST_F(Dial, AHostNameWhoseFirstAddressRefusesIsDialledAtItsNextAddress) {
  const std::string input = dir_.Join("input");
  const std::string sha = WriteRandomFile(input, 1 * kMiB, 11);
  ClientOptions client = ClientOptions::Stdin(input);
  client.wrapper = host_->wrapper;
  const std::string port = std::to_string(gw_->port());
  ClientResult echoed =
      RunPipegate(dir_, {"connect", "pipe://localhost:" + port + "/echo"}, client);
  ASSERT_EQ(echoed.status, 0) << echoed.Describe();
  EXPECT_EQ(Sha256HexOf(echoed.out), sha);

  gw_->Stop();
  ClientResult refused = RunPipegate(dir_, {"ls", "pipe://localhost:" + port}, client);
  EXPECT_TRUE(IsError(refused, 2, "pipe://localhost:" + port,
                      "could not connect to 'localhost' \\((\\[::1\\]|127\\.0\\.0\\.1):" + port +
                          ": connection refused; (\\[::1\\]|127\\.0\\.0\\.1):" + port +
                          ": connection refused\\)",
                      /*exact_address=*/false))
      << refused.Describe();
}

// The first address takes the SYN and never answers (a full accept queue drops it, as a
// firewall that drops packets would): after its share of the 10 s connect time (5 s of two
// addresses) the client moves on to the second, instead of spending all of it on the first.
TEST_F(Dial, AHostNameWhoseFirstAddressNeverAnswersIsDialledAtItsNextAddressInTime) {
  // The first address: a listener on the gateway's port with an accept queue of one, filled.
  const bool v6 = host_->v6_first;
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    a->sin6_port = htons(gw_->port());
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->sin_port = htons(gw_->port());
    len = sizeof *a;
  }
  const int deaf = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(deaf, 0);
  const int one = 1;
  if (v6) setsockopt(deaf, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  ASSERT_EQ(bind(deaf, reinterpret_cast<sockaddr*>(&ss), len), 0) << std::strerror(errno);
  ASSERT_EQ(listen(deaf, 0), 0);
  std::vector<int> fillers;
  bool dropping = false;
  for (int i = 0; i < 4 && !dropping; ++i) {
    const int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    fillers.push_back(fd);
    if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0) continue;
    ASSERT_EQ(errno, EINPROGRESS) << std::strerror(errno);
    pollfd p{fd, POLLOUT, 0};
    dropping = poll(&p, 1, 300) == 0;  // No answer to this SYN: the queue is full.
  }
  if (!dropping) {
    for (int fd : fillers) close(fd);
    close(deaf);
    GTEST_SKIP() << "a full accept queue does not drop connections here";
  }

  const std::string input = dir_.Join("input");
  const std::string sha = WriteRandomFile(input, 256 * 1024, 12);
  ClientOptions client = ClientOptions::Stdin(input);
  client.wrapper = host_->wrapper;
  const std::string port = std::to_string(gw_->port());
  const Clock::time_point start = Clock::now();
  ClientResult echoed =
      RunPipegate(dir_, {"connect", "pipe://localhost:" + port + "/echo"}, client);
  const auto took = std::chrono::duration_cast<Duration>(Clock::now() - start);
  for (int fd : fillers) close(fd);
  close(deaf);
  ASSERT_EQ(echoed.status, 0) << echoed.Describe();
  EXPECT_EQ(Sha256HexOf(echoed.out), sha);
  EXPECT_GE(took, Duration(4000)) << "the first address was not tried first";
}

// `pipegate write` < file -> TLS -> gateway -> FIFO -> local reader. Exit 0 must mean that every
// byte is already in the FIFO (SPEC §3 "Delivery is confirmed").
TEST(Transfer, WriteDelivers64MiBIntoFifoWriteExportBeforeExiting) {
  TempDir dir;
  const uint64_t size = DataSize(64 * kMiB, 16 * kMiB);
  const std::string source = dir.Join("source");
  const std::string sha = WriteRandomFile(source, size, 2);
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoWrite("sink")}));
  ASSERT_TRUE(gw.Start());

  FifoReaderOptions reader_options;
  reader_options.copy_to = dir.Join("out");
  FifoReader reader(gw.ExportPath("sink"), reader_options);
  ASSERT_TRUE(reader.ok()) << reader.error();

  Bridge write(dir, {"write", gw.Address("sink")}, StdioSpec::File(source));
  ASSERT_TRUE(write.started());
  ASSERT_EQ(write.Wait(Duration(60000)), 0) << write.Describe();
  const uint64_t delivered = reader.DeliveredBytes();
  EXPECT_EQ(delivered, size) << "`pipegate write` exited 0 when only " << delivered << " of "
                             << size << " bytes were in the local FIFO";

  ASSERT_TRUE(reader.WaitDone(Duration(30000)))
      << "the local reader saw no EOF after the remote writer finished; read " << reader.bytes();
  EXPECT_TRUE(reader.saw_eof());
  EXPECT_EQ(reader.error(), "");
  EXPECT_EQ(reader.bytes(), size);
  EXPECT_EQ(reader.Sha256Hex(), sha);
  EXPECT_EQ(Sha256Hex(dir.Join("out")), sha);
}

// Eight local clients of a mounted unix export, at once; all streams share one TLS connection.
TEST(Transfer, MountedUnixExportCarriesEightConcurrentStreamsOnOneConnection) {
  TempDir dir;
  const std::string server_path = dir.Join("echo.sock");
  UnixEchoServer server(server_path, UnixEchoServer::Mode::kEcho);
  ASSERT_TRUE(server.ok()) << server.error();
  GatewayFixture gw(dir, WithExports({ExportSpec::Unix("echo", server_path)}));
  ASSERT_TRUE(gw.Start());

  const std::string local = dir.Join("m.sock");
  Bridge mount(dir, {"mount", gw.Address("echo"), local});
  ASSERT_TRUE(StartMount(mount, local));

  constexpr int kStreams = 8;
  const size_t size = DataSize(4 * kMiB, 1 * kMiB);
  std::vector<std::string> payloads;
  for (int i = 0; i < kStreams; ++i) {
    payloads.push_back(RandomStream(100 + static_cast<uint64_t>(i)).Next(size));
  }
  std::vector<ExchangeResult> results(kStreams);
  std::atomic<int> finished{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&, i] {
      results[static_cast<size_t>(i)] =
          UnixExchange(local, payloads[static_cast<size_t>(i)], Duration(30000));
      ++finished;
    });
  }
  int max_connections = 0;
  const bool all_done = WaitFor(
      [&] {
        max_connections = std::max(max_connections, CountTcpConnections(mount.pid(), gw.port()));
        return finished.load() == kStreams;
      },
      Duration(20000), Duration(20));
  if (!all_done) {
    ADD_FAILURE() << "streams stalled: " << finished.load() << " of " << kStreams
                  << " finished after 20 s; sockets (gateway " << gw.pid() << ", mount "
                  << mount.pid() << ", test " << getpid() << "):\n"
                  << SocketReport({gw.pid(), mount.pid(), getpid()});
  }
  for (auto& client : clients) {
    client.join();
  }
  for (int i = 0; i < kStreams; ++i) {
    const auto& result = results[static_cast<size_t>(i)];
    EXPECT_TRUE(result.ok) << "stream " << i << ": " << result.error;
    EXPECT_EQ(result.received.size(), size) << "stream " << i;
    EXPECT_EQ(Sha256HexOf(result.received), Sha256HexOf(payloads[static_cast<size_t>(i)]))
        << "stream " << i;
  }
  EXPECT_EQ(server.accepted(), kStreams);
  EXPECT_EQ(server.half_closes(), kStreams) << "half-close did not reach the unix server";
  if (::testing::Test::HasFailure()) {
    ADD_FAILURE() << "mount: " << mount.Describe();
  }
  EXPECT_LE(max_connections, 1) << "the mount opened " << max_connections << " TCP connections for "
                                << kStreams << " streams";

  EXPECT_TRUE(StopMount(mount, local));
}

// The gateway connects to a socket export through /proc/self/fd (what it connects to is the
// file it checked). Where it has no /proc (a container or chroot without one), the connect
// through it fails and the gateway connects by path after its lstat() check instead. The
// gateway runs in its own mount namespace with an empty tmpfs on /proc; a byte stream must
// still pass both ways, checked by SHA-256.
TEST(Transfer, ASocketExportIsReachedByAGatewayWithoutProc) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for a mount namespace";
  ProcessOptions probe_options = ProcessOptions::Of({"unshare", "-m", "true"});
  Process probe(std::move(probe_options));
  if (!probe.started() || probe.Wait(Duration(10000)) != 0) {
    GTEST_SKIP() << "unshare -m does not work here: " << probe.error();
  }
  TempDir dir;
  const std::string server_path = dir.Join("echo.sock");
  UnixEchoServer server(server_path, UnixEchoServer::Mode::kEcho);
  ASSERT_TRUE(server.ok()) << server.error();
  GatewayOptions options = WithExports({ExportSpec::Unix("echo", server_path)});
  // The gateway starts only if /proc/self is really gone in its namespace.
  options.wrapper = {"unshare", "-m", "sh", "-c",
                     "mount -t tmpfs none /proc && test ! -e /proc/self && exec \"$0\" \"$@\""};
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());

  const std::string local = dir.Join("m.sock");
  Bridge mount(dir, {"mount", gw.Address("echo"), local});
  ASSERT_TRUE(StartMount(mount, local));
  const std::string payload = RandomStream(77).Next(256 * 1024);
  const ExchangeResult result = UnixExchange(local, payload, Duration(30000));
  EXPECT_TRUE(result.ok) << result.error << "; " << mount.Describe();
  EXPECT_EQ(Sha256HexOf(result.received), Sha256HexOf(payload));
  EXPECT_EQ(server.accepted(), 1);
}

// A remote writer faster than the local reader is slowed down, and the gateway's memory stays
// bounded while it waits (SPEC §3 "Backpressure, not buffering").
TEST(Transfer, StalledLocalReaderBlocksRemoteWriterWithBoundedGatewayMemory) {
  TempDir dir;
  const uint64_t size = DataSize(256 * kMiB, 64 * kMiB);
  constexpr uint64_t kSeed = 3;
  constexpr uint64_t kRssAllowance = 64 * kMiB;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoWrite("slow")}));
  ASSERT_TRUE(gw.Start());

  FifoReader reader(gw.ExportPath("slow"), FifoReaderOptions::Paused());
  ASSERT_TRUE(reader.ok()) << reader.error();
  const uint64_t baseline = ReadRssBytes(gw.pid()).value_or(0);
  ASSERT_GT(baseline, 0u);

  Bridge write(dir, {"write", gw.Address("slow")}, StdioSpec::Pipe());
  ASSERT_TRUE(write.started());
  StreamFeeder feeder(write.process().TakeStdinFd(), size, kSeed);

  uint64_t peak = baseline;
  auto sample = [&] { peak = std::max<uint64_t>(peak, ReadRssBytes(gw.pid()).value_or(0)); };
  // Wait until the source stops making progress: every buffer between it and the FIFO is full.
  // The pause that counts as the stall is scaled for slow builds: a shorter one, taken for the
  // stall too early, would fail the check below (the source moving on while it is watched).
  const bool stalled = WaitFor(
      [&] {
        sample();
        return feeder.done() || !write.Running() ||
               (feeder.written() > 0 && Since(feeder.last_progress()) > Scaled(Duration(750)) &&
                CountTcpConnections(write.pid(), gw.port()) == 1);
      },
      Duration(60000), Duration(20));
  ASSERT_TRUE(stalled) << "the source never stalled; written " << feeder.written();
  ASSERT_TRUE(write.Running()) << "pipegate write ended while the reader stalled: "
                               << write.Describe();
  ASSERT_FALSE(feeder.done()) << "all " << MiB(size)
                              << " were accepted while the local reader read nothing";
  const uint64_t in_flight = feeder.written();
  // Stay stalled a little longer and watch the gateway's memory.
  const auto observe_until = Clock::now() + Duration(1500);
  WaitFor(
      [&] {
        sample();
        return Clock::now() >= observe_until;
      },
      Duration(5000), Duration(50));
  EXPECT_TRUE(write.Running());
  EXPECT_LT(feeder.written() - in_flight, 1 * kMiB) << "the source kept going while stalled";
  EXPECT_LE(peak, baseline + kRssAllowance)
      << "gateway RSS grew from " << MiB(baseline) << " to " << MiB(peak) << " with "
      << MiB(in_flight) << " accepted from the source while the reader stalled";
  ::testing::Test::RecordProperty("stalled_in_flight_bytes", std::to_string(in_flight));
  ::testing::Test::RecordProperty("gateway_rss_growth_bytes", std::to_string(peak - baseline));

  reader.Resume();
  ASSERT_TRUE(WaitFor(
      [&] {
        sample();
        return !write.Running();
      },
      Duration(120000), Duration(20)))
      << "pipegate write did not finish after the reader drained; reader has " << reader.bytes();
  EXPECT_EQ(write.Wait(Duration(1000)), 0) << write.Describe();
  ASSERT_TRUE(reader.WaitDone(Duration(30000))) << "reader saw no EOF; read " << reader.bytes();
  EXPECT_EQ(feeder.error(), "");
  EXPECT_EQ(reader.bytes(), size);
  EXPECT_EQ(reader.Sha256Hex(), RandomStreamSha256(size, kSeed));
  EXPECT_LE(peak, baseline + kRssAllowance)
      << "gateway RSS peaked at " << MiB(peak) << " (baseline " << MiB(baseline) << ")";
}

}  // namespace
}  // namespace pipegate::testing
