// Abuse resistance: a running gateway on loopback against clients that misbehave on
// purpose, while an honest client keeps working. After each abuse the gateway's RSS must come
// back within a bound and `pipegate cat` must still complete promptly. The figures (connections
// held, RSS before/during/after) are printed and recorded as test properties.

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/data.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/gateway_probe.h"
#include "support/pipe_io.h"
#include "support/proc_stats.h"
#include "support/process.h"
#include "support/raw_client.h"
#include "support/timing.h"
#include "support/unix_socket.h"

namespace pipegate::testing {
namespace {

// A TCP connection to 127.0.0.1:port from `source` (any 127.x.y.z address works on Linux
// loopback), which never sends a byte. Returns the fd or -1.
int ConnectFrom(const std::string& source, uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in local{};
  local.sin_family = AF_INET;
  inet_pton(AF_INET, source.c_str(), &local.sin_addr);
  sockaddr_in remote{};
  remote.sin_family = AF_INET;
  remote.sin_port = htons(port);
  remote.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
      connect(fd, reinterpret_cast<sockaddr*>(&remote), sizeof remote) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// True once the gateway has closed `fd` (EOF or reset), without blocking.
bool ClosedByPeer(int fd) {
  pollfd pfd{fd, POLLIN, 0};
  if (poll(&pfd, 1, 0) <= 0) return false;
  char byte;
  ssize_t n = recv(fd, &byte, 1, MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN);
}

// The fixture (StartGateway, ExpectRecovered) lives in support/gateway_probe.h.
class AbuseTest : public AbuseFixture {};

// Slowloris: 500 connections that never start TLS are all held (from 10 source addresses, 50
// each, under the per-source limit) while an honest client still completes `cat` promptly.
TEST_F(AbuseTest, FiveHundredIdleConnectionsDoNotStarveAnHonestClient) {
  rlimit files{};
  getrlimit(RLIMIT_NOFILE, &files);
  if (files.rlim_cur < 1200) GTEST_SKIP() << "the open-file limit is below 1200";
  StartGateway("handshake_timeout = 30");
  const int sockets_before = CountSockets(gw_->pid());
  std::vector<int> idle;
  for (int i = 0; i < 500; ++i) {
    const int fd = ConnectFrom("127.0.0." + std::to_string(2 + i / 50), gw_->port());
    ASSERT_GE(fd, 0) << "connection " << i << ": " << std::strerror(errno);
    idle.push_back(fd);
  }
  ASSERT_TRUE(WaitFor([&] { return CountSockets(gw_->pid()) >= sockets_before + 500; },
                      Duration(10000), Duration(20)))
      << "the gateway holds " << CountSockets(gw_->pid()) - sockets_before << " of 500";
  const uint64_t during = Rss(*gw_);
  ::testing::AssertionResult honest = HonestCatWorks(dir_, *gw_, "logs", Duration(3000));
  EXPECT_TRUE(honest);
  int closed = 0;
  for (int fd : idle) closed += ClosedByPeer(fd) ? 1 : 0;
  EXPECT_EQ(closed, 0) << "idle connections were dropped before the handshake timeout";
  Report("slowloris",
         "500 idle connections held (" + std::to_string(CountSockets(gw_->pid()) - sockets_before) +
             " sockets), honest cat in " + honest.message() + ", RSS with them " + MiB(during));
  for (int fd : idle) close(fd);
  ASSERT_TRUE(WaitFor([&] { return CountSockets(gw_->pid()) <= sockets_before; }, Duration(10000),
                      Duration(20)));
  ExpectRecovered("slowloris");
}

// Connections that never finish the handshake are dropped at handshake_timeout.
TEST_F(AbuseTest, HandshakeTimeoutDropsSilentConnections) {
  StartGateway("handshake_timeout = 1");
  std::vector<int> idle;
  for (int i = 0; i < 20; ++i) idle.push_back(ConnectFrom("127.0.0.2", gw_->port()));
  EXPECT_TRUE(WaitFor(
      [&] {
        int closed = 0;
        for (int fd : idle) closed += ClosedByPeer(fd) ? 1 : 0;
        return closed == 20;
      },
      Duration(5000), Duration(50)));
  for (int fd : idle) close(fd);
  ExpectRecovered("handshake_timeout");
}

// With idle_timeout, a connection without streams is closed (GOAWAY "idle timeout"); one
// with a stream is not.
TEST_F(AbuseTest, IdleTimeoutClosesConnectionsWithoutStreams) {
  StartGateway("idle_timeout = 1", {ExportSpec::FifoRead("busy")});
  std::string error;
  std::unique_ptr<RawClient> idle = RawClient::Connect(gw_->port(), Alice(), &error);
  ASSERT_TRUE(idle) << error;
  std::unique_ptr<RawClient> working = RawClient::Connect(gw_->port(), Alice(), &error);
  ASSERT_TRUE(working) << error;
  ASSERT_TRUE(working->SendOpen(1, "busy", 1));
  ASSERT_TRUE(working->WaitFor(FrameType::kOpenOk, 1, Duration(5000)));
  const Clock::time_point start = Clock::now();
  EXPECT_TRUE(idle->WaitClosed(Duration(5000)));
  EXPECT_EQ(idle->goaway_reason(), "idle timeout");
  EXPECT_GE(Since(start), Duration(500));
  EXPECT_FALSE(working->WaitClosed(Duration(1500))) << "a connection with a stream was closed";
  working.reset();
  ExpectRecovered("idle_timeout");
}

// Past max_connections_per_source a source's connections are closed at once (and counted);
// other sources, and the total limit, are unaffected until they are reached.
TEST_F(AbuseTest, ConnectionLimitsRefuseTheExcess) {
  StartGateway("max_connections_per_source = 20\nmax_connections = 35\nhandshake_timeout = 30");
  std::vector<int> flood;
  for (int i = 0; i < 40; ++i) flood.push_back(ConnectFrom("127.0.0.20", gw_->port()));
  std::map<std::string, uint64_t> k;
  ASSERT_TRUE(WaitFor(
      [&] {
        k = ReadCounters(*gw_);
        return k["refused_per_source"] >= 20;
      },
      Duration(5000), Duration(50)));
  EXPECT_EQ(k["refused_per_source"], 20u);
  int closed = 0;
  WaitFor(
      [&] {
        closed = 0;
        for (int fd : flood) closed += ClosedByPeer(fd) ? 1 : 0;
        return closed >= 20;
      },
      Duration(5000));
  EXPECT_EQ(closed, 20);
  // The honest client comes from 127.0.0.1: its own source has room.
  const int sockets_before_honest = CountSockets(gw_->pid());
  EXPECT_TRUE(HonestCatWorks(dir_, *gw_));
  // Its connection is gone from the gateway too (the cat's exit does not wait for that).
  ASSERT_TRUE(WaitFor([&] { return CountSockets(gw_->pid()) <= sockets_before_honest; },
                      Duration(5000), Duration(20)));
  // 20 held from .20; 15 more from .21 reach the total of 35.
  std::vector<int> more;
  for (int i = 0; i < 20; ++i) more.push_back(ConnectFrom("127.0.0.21", gw_->port()));
  ASSERT_TRUE(WaitFor(
      [&] {
        k = ReadCounters(*gw_);
        return k["refused_max_connections"] >= 5;
      },
      Duration(5000), Duration(50)));
  EXPECT_EQ(k["refused_max_connections"], 5u);
  Report("connection_limits", "per source 20: 20 of 40 held; total 35: 15 of 20 more held");
  for (int fd : flood) close(fd);
  for (int fd : more) close(fd);
  ExpectRecovered("connection_limits");
}

// Random bytes (and an HTTP request) instead of a ClientHello: each connection is closed, the
// refusals are counted as not-TLS, nothing else is disturbed.
TEST_F(AbuseTest, RandomBytesInsteadOfTls) {
  StartGateway("");
  RandomStream random(7);
  constexpr int kConnections = 60;
  std::vector<int> fds;
  for (int i = 0; i < kConnections; ++i) {
    const int fd = ConnectFrom("127.0.0.3", gw_->port());
    ASSERT_GE(fd, 0);
    std::string junk =
        i % 3 == 0 ? std::string("GET / HTTP/1.1\r\nHost: x\r\n\r\n") : random.Next(4096);
    if (i % 3 == 1) junk[0] = 0x16;  // Looks like a handshake record, but is not one.
    ASSERT_EQ(send(fd, junk.data(), junk.size(), MSG_NOSIGNAL), static_cast<ssize_t>(junk.size()));
    fds.push_back(fd);
  }
  EXPECT_TRUE(WaitFor(
      [&] {
        int closed = 0;
        for (int fd : fds) closed += ClosedByPeer(fd) ? 1 : 0;
        return closed == kConnections;
      },
      Duration(10000), Duration(20)))
      << "the gateway kept a connection that sent garbage";
  std::map<std::string, uint64_t> k = ReadCounters(*gw_);
  EXPECT_EQ(k["tls_not_tls"] + k["tls_other"], static_cast<uint64_t>(kConnections));
  EXPECT_GE(k["tls_not_tls"], static_cast<uint64_t>(kConnections) * 2 / 3);
  Report("random_bytes", std::to_string(kConnections) + " connections, " +
                             std::to_string(k["tls_not_tls"]) + " counted as not TLS");
  for (int fd : fds) close(fd);
  ExpectRecovered("random_bytes");
}

// A valid client that opens streams without limit: past max_streams_per_connection each OPEN
// is refused (RESET "too many streams"); what was granted keeps working, as do other clients.
TEST_F(AbuseTest, StreamFloodIsRefusedPastTheLimit) {
  const std::string server_path = dir_.Join("svc.sock");
  UnixEchoServer server(server_path);
  ASSERT_TRUE(server.ok()) << server.error();
  ExportSpec svc = ExportSpec::Unix("svc", server_path);
  StartGateway("max_streams_per_connection = 16", {svc});
  std::string error;
  std::unique_ptr<RawClient> hostile = RawClient::Connect(gw_->port(), Alice(), &error);
  ASSERT_TRUE(hostile) << error;
  constexpr uint32_t kOpens = 300;
  for (uint32_t i = 0; i < kOpens; ++i) {
    ASSERT_TRUE(hostile->SendOpen(2 * i + 1, "svc", 3)) << "stream " << i;
  }
  int accepted = 0;
  int limited = 0;
  std::string limit_reason;
  while (accepted + limited < static_cast<int>(kOpens)) {
    std::optional<RawFrame> f = hostile->NextFrame(Duration(10000));
    ASSERT_TRUE(f) << accepted << " accepted and " << limited << " refused so far";
    if (f->header.type == FrameType::kOpenOk) ++accepted;
    if (f->header.type == FrameType::kReset) {
      auto [code, reason] = DecodeResetReason(*f);
      EXPECT_EQ(code, ErrorCode::kLimit) << reason;
      limit_reason = reason;
      ++limited;
    }
  }
  EXPECT_EQ(accepted, 16);
  EXPECT_EQ(limited, static_cast<int>(kOpens) - 16);
  EXPECT_EQ(limit_reason, "too many streams (limit 16)");
  EXPECT_TRUE(WaitFor([&] { return server.accepted() == 16; }, Duration(5000)))
      << server.accepted();
  // Another connection has its own budget, and the gateway still serves everyone.
  const ExchangeResult echo = UnixExchange(server_path, "direct", Duration(5000));
  EXPECT_TRUE(echo.ok) << echo.error;
  const ClientResult connect = RunPipegate(dir_, {"connect", gw_->Address("svc")});
  EXPECT_EQ(connect.status, 0) << connect.Describe();
  Report("stream_flood", std::to_string(kOpens) + " OPENs: " + std::to_string(accepted) +
                             " granted, " + std::to_string(limited) + " refused (limit 16)");
  hostile.reset();
  ExpectRecovered("stream_flood");
}

// A client that grants a huge window and then never reads: the gateway's memory stays bounded
// (back-pressure on the local FIFO) while another client streams at full speed.
TEST_F(AbuseTest, ClientThatNeverReadsDoesNotSlowOthers) {
  StartGateway("", {ExportSpec::FifoRead("flood"), ExportSpec::FifoRead("bulk")});
  RawClient::Settings greedy;
  greedy.stream_window = 0xffffffffu;
  greedy.session_window = 0xffffffffu;
  std::string error;
  std::unique_ptr<RawClient> stalled = RawClient::Connect(gw_->port(), Alice(), &error, greedy);
  ASSERT_TRUE(stalled) << error;
  ASSERT_TRUE(stalled->SendOpen(1, "flood", 1));
  const std::string flood_fifo = gw_->ExportPath("flood");
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw_->pid(), flood_fifo); }, Duration(5000)));
  const int flood_fd = open(flood_fifo.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(flood_fd, 0);
  StreamFeeder flood(flood_fd, 4ull << 30, 11);  // Far more than any buffer holds.
  // The stalled client's stream stops taking bytes once the buffers fill. A quiet spell that is
  // not yet the stall only moves stalled_at: what follows may add at most 4 MiB, which is
  // more than the buffers hold but far less than a stream that keeps flowing.
  ASSERT_TRUE(WaitFor([&] { return Since(flood.last_progress()) > Scaled(Duration(500)); },
                      Duration(15000), Duration(50)));
  const uint64_t stalled_at = flood.written();

  // Meanwhile, 64 MiB at full speed to an honest client.
  const uint64_t size = DataSize(64 * kMiB, 8 * kMiB);
  const std::string bulk_fifo = gw_->ExportPath("bulk");
  const std::string out = dir_.Join("bulk.out");
  const Clock::time_point start = Clock::now();
  Bridge cat(dir_, {"cat", gw_->Address("bulk")}, StdioSpec::Null(), out);
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw_->pid(), bulk_fifo) || !cat.Running(); },
                      Duration(10000)));
  const int bulk_fd = open(bulk_fifo.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(bulk_fd, 0);
  uint64_t peak_rss = 0;
  {
    StreamFeeder bulk(bulk_fd, size, 12);
    WaitFor(
        [&] {
          peak_rss = std::max(peak_rss, Rss(*gw_));
          return bulk.done();
        },
        Duration(30000), Duration(20));
    EXPECT_TRUE(bulk.done()) << bulk.written() << " of " << size;
    EXPECT_TRUE(bulk.error().empty()) << bulk.error();
  }
  EXPECT_EQ(cat.Wait(Duration(30000)), 0) << cat.Describe();
  const Duration took = Since(start);
  EXPECT_EQ(FileSize(out).value_or(0), size);
  EXPECT_EQ(Sha256Hex(out), RandomStreamSha256(size, 12));
  EXPECT_LT(took, Scaled(Duration(20000)));
  // The stalled stream did not move while the other one ran, and memory stayed bounded.
  EXPECT_LT(flood.written() - stalled_at, 4 * kMiB);
  if (kCheckRss) {
    EXPECT_LT(peak_rss, baseline_rss_ + 48 * kMiB) << "peak " << MiB(peak_rss);
  }
  const double mib_per_s =
      static_cast<double>(size) / kMiB / (static_cast<double>(took.count()) / 1000.0);
  char figures[200];
  snprintf(figures, sizeof figures,
           "stalled reader pinned %.1f MiB; honest cat %.0f MiB in %lld ms (%.0f MiB/s); peak "
           "RSS %s",
           static_cast<double>(stalled_at) / kMiB, static_cast<double>(size) / kMiB,
           static_cast<long long>(took.count()), mib_per_s, MiB(peak_rss).c_str());
  Report("never_reads", figures);
  // The lost connection's session is kept for resumption (SPEC §8), FIFO included; the
  // writer stops on its own here.
  stalled.reset();
  flood.Stop();
  ExpectRecovered("never_reads");
}

// Names the SPEC forbids, sent raw (the bridge refuses them before connecting): each OPEN is
// refused as no such pipe, and the connection lives on. A 10 KiB OPEN does not even parse.
TEST_F(AbuseTest, HostileNamesAreRefused) {
  StartGateway("max_name_length = 64");
  std::string error;
  std::unique_ptr<RawClient> client = RawClient::Connect(gw_->port(), Alice(), &error);
  ASSERT_TRUE(client) << error;
  // Each name with the reason its RESET must give: the character and where, the rule, the limit.
  const std::string kAllowed = " (allowed: A-Z a-z 0-9 . _ -)";
  const std::vector<std::pair<std::string, std::string>> names = {
      {"a/b", "invalid character '/' at position 2 in pipe name \"a/b\"" + kAllowed},
      {"../logs", "invalid character '/' at position 3 in pipe name \"../logs\"" + kAllowed},
      {"..", "pipe name \"..\" is not allowed"},
      {".", "pipe name \".\" is not allowed"},
      {"", "pipe name is empty"},
      {std::string("lo\0gs", 5),
       "invalid character '\\x00' at position 3 in pipe name \"lo\\x00gs\"" + kAllowed},
      {"logs\n", "invalid character '\\x0a' at position 5 in pipe name \"logs\\x0a\"" + kAllowed},
      {"l o g s", "invalid character ' ' at position 2 in pipe name \"l o g s\"" + kAllowed},
      {std::string(65, 'x'), "pipe names are at most 64 characters here"},        // max_name_length
      {std::string(255, 'y'), "pipe name is 255 characters long (at most 128)"},  // SPEC's limit
      {"\xff\xfe",
       "invalid character '\\xff' at position 1 in pipe name \"\\xff\\xfe\"" + kAllowed}};
  uint32_t id = 1;
  for (const auto& [name, why] : names) {
    ASSERT_TRUE(client->SendOpen(id, name, 1));
    std::optional<RawFrame> reset = client->WaitFor(FrameType::kReset, id, Duration(5000));
    ASSERT_TRUE(reset) << "no answer to OPEN of a " << name.size() << "-byte name";
    auto [code, reason] = DecodeResetReason(*reset);
    EXPECT_EQ(code, ErrorCode::kNotFound) << reason;
    EXPECT_EQ(reason, why);
    id += 2;
  }
  std::map<std::string, uint64_t> k = ReadCounters(*gw_);
  EXPECT_EQ(k["invalid_names"], names.size());
  EXPECT_EQ(k["streams_opened"], 1u);  // The honest client's.
  // A 10 KiB name cannot be encoded; an OPEN frame of 10 KiB is malformed: GOAWAY and close.
  std::string payload(7, '\0');
  payload[0] = 1;
  payload[6] = static_cast<char>(255);
  payload += std::string(10 * 1024 - 7, 'n');
  ASSERT_TRUE(
      client->SendRaw(FrameType::kOpen, 0, id, static_cast<uint32_t>(payload.size()), payload));
  EXPECT_TRUE(client->WaitClosed(Duration(5000)));
  EXPECT_EQ(client->goaway_reason(), "OPEN frame length does not match its name");
  ExpectRecovered("hostile_names");
}

// DATA frames at the announced maximum are accepted; one byte more closes the connection.
// Control frames above their fixed maximum do too.
TEST_F(AbuseTest, FramesAtAndAboveTheMaximumSize) {
  StartGateway("max_frame_size = 16384", {ExportSpec::FifoWrite("sink")});
  FifoReader reader(gw_->ExportPath("sink"));
  ASSERT_TRUE(reader.ok()) << reader.error();
  std::string error;
  std::unique_ptr<RawClient> client = RawClient::Connect(gw_->port(), Alice(), &error);
  ASSERT_TRUE(client) << error;
  ASSERT_TRUE(client->SendOpen(1, "sink", 2));
  ASSERT_TRUE(client->WaitFor(FrameType::kOpenOk, 1, Duration(5000)));
  const uint32_t max_payload = 16384 + kDataPrefixSize;
  std::string at_max(max_payload, 'd');
  for (int i = 0; i < 8; ++i) at_max[static_cast<size_t>(i)] = 0;  // Offset 0.
  ASSERT_TRUE(client->SendRaw(FrameType::kData, 0, 1, max_payload, at_max));
  EXPECT_TRUE(WaitFor([&] { return reader.bytes() == 16384; }, Duration(5000))) << reader.bytes();
  // One byte above: a frame-size error for the whole connection.
  std::string above(max_payload + 1, 'd');
  for (int i = 0; i < 8; ++i) above[static_cast<size_t>(i)] = 0;
  above[6] = 0x40;  // Offset 16384, where the stream stands.
  ASSERT_TRUE(client->SendRaw(FrameType::kData, 0, 1, max_payload + 1, above));
  EXPECT_TRUE(client->WaitClosed(Duration(5000)));
  EXPECT_EQ(reader.bytes(), 16384u);

  // A control frame longer than any control frame may be.
  std::unique_ptr<RawClient> second = RawClient::Connect(gw_->port(), Alice(), &error);
  ASSERT_TRUE(second) << error;
  ASSERT_TRUE(second->SendRaw(FrameType::kPing, 0, 0, kMaxControlPayload + 1,
                              std::string(kMaxControlPayload + 1, 'p')));
  EXPECT_TRUE(second->WaitClosed(Duration(5000)));
  // A header that announces 4 GiB and then stops.
  std::unique_ptr<RawClient> third = RawClient::Connect(gw_->port(), Alice(), &error);
  ASSERT_TRUE(third) << error;
  ASSERT_TRUE(third->SendRaw(FrameType::kData, 0, 1, 0xffffffffu, ""));
  EXPECT_TRUE(third->WaitClosed(Duration(5000)));
  // Exactly the three connections above, each counted once (the count may trail the close).
  uint64_t protocol_errors = 0;
  EXPECT_TRUE(WaitFor(
      [&] {
        protocol_errors = ReadCounters(*gw_)["protocol_errors"];
        return protocol_errors >= 3;
      },
      Duration(5000)))
      << protocol_errors;
  EXPECT_EQ(protocol_errors, 3u);
  ExpectRecovered("frame_sizes");
}

// A client may not have more than max_bytes_in_flight_per_connection in flight: with a local
// reader that reads nothing, the gateway holds at most the window and refuses a byte more.
TEST_F(AbuseTest, BytesInFlightAreBoundedByTheWindow) {
  StartGateway("max_bytes_in_flight_per_connection = \"64K\"\nmax_frame_size = 16384",
               {ExportSpec::FifoWrite("sink"), ExportSpec::FifoWrite("other")});
  FifoReader stalled(gw_->ExportPath("sink"), FifoReaderOptions::Paused());
  ASSERT_TRUE(stalled.ok()) << stalled.error();
  std::string error;
  std::unique_ptr<RawClient> client = RawClient::Connect(gw_->port(), Alice(), &error);
  ASSERT_TRUE(client) << error;
  ASSERT_TRUE(client->SendOpen(1, "sink", 2));
  ASSERT_TRUE(client->WaitFor(FrameType::kOpenOk, 1, Duration(5000)));
  // Four full frames fill the 64 KiB window exactly; the FIFO (1 MiB) takes them, so the
  // window comes back as CREDIT.
  uint64_t offset = 0;
  auto data = [&](size_t n) {
    std::string payload(8 + n, 'w');
    for (int i = 0; i < 8; ++i) {
      payload[static_cast<size_t>(i)] = static_cast<char>(offset >> (56 - 8 * i));
    }
    offset += n;
    return client->SendRaw(FrameType::kData, 0, 1, static_cast<uint32_t>(payload.size()), payload);
  };
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(data(16384));
  ASSERT_TRUE(client->WaitFor(FrameType::kCredit, 1, Duration(5000)))
      << "no credit for bytes that reached the FIFO";
  // Ignoring credit: far past what was granted. The connection is closed with a flow-control
  // error, and the gateway never took more than it granted: what reached the FIFO is at most
  // its 1 MiB buffer, and what it took from the client at most that plus one window.
  for (int i = 0; i < 300 && !client->closed(); ++i) data(16384);
  EXPECT_TRUE(client->WaitClosed(Duration(5000))) << "the gateway kept taking bytes";
  // (The GOAWAY that says why may be lost to the reset of a socket still full of our bytes.)
  EXPECT_LE(stalled.DeliveredBytes(), uint64_t{1} << 20);
  std::map<std::string, uint64_t> k = ReadCounters(*gw_);
  EXPECT_EQ(k["protocol_errors"], 1u);
  EXPECT_LE(k["bytes_from_clients"], (uint64_t{1} << 20) + 64 * 1024);
  ExpectRecovered("window");
}

// Early data (protocol.md, "Early data"): what a client sends behind an OPEN is held only up
// to its allowance while the OPEN waits, refused where it would have nowhere to go, and handed
// to the local socket once the open is granted.
TEST_F(AbuseTest, EarlyDataIsHeldWithinItsAllowanceAndOnlyWhereItFits) {
  const std::string server_path = dir_.Join("svc.sock");
  UnixEchoServer server(server_path);
  ASSERT_TRUE(server.ok()) << server.error();
  ExportSpec svc = ExportSpec::Unix("svc", server_path);
  svc.max_clients = 1;  // A second open waits: its early data is held meanwhile.
  StartGateway("", {svc});
  std::string error;
  std::unique_ptr<RawClient> client = RawClient::Connect(gw_->port(), Alice(), &error);
  ASSERT_TRUE(client) << error;
  auto early_open = [&](uint32_t id, const std::string& name, uint32_t wait_ms) {
    std::string payload{char{3}, static_cast<char>(kOpenFlagEarlyData)};  // Duplex.
    for (int shift = 24; shift >= 0; shift -= 8) payload += static_cast<char>(wait_ms >> shift);
    payload += static_cast<char>(name.size());
    payload += name;
    return client->SendRaw(FrameType::kOpen, 0, id, static_cast<uint32_t>(payload.size()), payload);
  };
  auto data = [&](uint32_t id, uint64_t offset, const std::string& bytes, bool fin = false) {
    std::string payload(8, '\0');
    for (int i = 0; i < 8; ++i)
      payload[static_cast<size_t>(i)] = static_cast<char>(offset >> (56 - 8 * i));
    payload += bytes;
    return client->SendRaw(FrameType::kData, fin ? kFlagFin : 0, id,
                           static_cast<uint32_t>(payload.size()), payload);
  };

  // A read-only FIFO would drop the client's bytes: refused, and the connection goes on.
  ASSERT_TRUE(early_open(1, "logs", 0));
  ASSERT_TRUE(data(1, 0, "lost"));
  std::optional<RawFrame> refused = client->WaitFor(FrameType::kReset, 1, Duration(5000));
  ASSERT_TRUE(refused);
  auto [code, reason] = DecodeResetReason(*refused);
  EXPECT_EQ(code, ErrorCode::kProtocol);
  EXPECT_EQ(reason, "early data needs a byte stream the client writes: 'logs' is read-only");

  // Stream 3 takes the export's only instance; 5 and 7 wait for it with early data.
  ASSERT_TRUE(client->SendOpen(3, "svc", 3));
  ASSERT_TRUE(client->WaitFor(FrameType::kOpenOk, 3, Duration(5000)));
  ASSERT_TRUE(early_open(5, "svc", 20000));
  ASSERT_TRUE(data(5, 0, std::string(64 * 1024, 'e')));  // Exactly the allowance: held.
  ASSERT_TRUE(data(5, 64 * 1024, "!"));                  // One byte more: that stream ends.
  std::optional<RawFrame> over = client->WaitFor(FrameType::kReset, 5, Duration(5000));
  ASSERT_TRUE(over);
  EXPECT_EQ(DecodeResetReason(*over).first, ErrorCode::kFlowControl);
  std::string request(4000, '\0');
  for (size_t i = 0; i < request.size(); ++i) request[i] = static_cast<char>(i * 131 + i / 7);
  ASSERT_TRUE(early_open(7, "svc", 20000));
  ASSERT_TRUE(data(7, 0, request, /*fin=*/true));
  // Ending stream 3 frees the instance: 7 is granted, and its held bytes reach the echo server
  // and come back whole.
  ASSERT_TRUE(data(3, 0, "", /*fin=*/true));
  ASSERT_TRUE(client->WaitFor(FrameType::kOpenOk, 7, Duration(10000)));
  std::string echoed;
  bool fin = false;
  while (!fin) {
    std::optional<RawFrame> f = client->NextFrame(Duration(10000));
    ASSERT_TRUE(f) << "echoed " << echoed.size() << " of " << request.size();
    if (f->header.type != FrameType::kData || f->header.stream_id != 7) continue;
    echoed += f->payload.substr(8);
    fin = (f->header.flags & kFlagFin) != 0;
  }
  EXPECT_EQ(Sha256HexOf(echoed), Sha256HexOf(request));
  std::map<std::string, uint64_t> k = ReadCounters(*gw_);
  EXPECT_EQ(k["protocol_errors"], 0u);  // Each abuse cost only its own stream.
  EXPECT_EQ(k["early_data_streams"], 1u);
  ExpectRecovered("early data");
}

// A client sends a stream's whole window to a service that reads nothing, then RESETs the
// stream: the RESET gives the window's connection credit back, so the gateway must drop what it
// still queued for the service, or the client could make it hold a window per stream, over and
// over, past every documented cap. 64 such streams send 64 MiB; the gateway's RSS settles.
TEST_F(AbuseTest, AResetStreamDropsWhatItsLocalPipeHadNotTaken) {
  // The service: a listening socket nobody accepts on. Connects succeed; nothing is read.
  const std::string deaf_path = dir_.Join("deaf.sock");
  const int deaf = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(deaf, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", deaf_path.c_str());
  ASSERT_EQ(bind(deaf, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(deaf, 256), 0);
  StartGateway("", {ExportSpec::Unix("deaf", deaf_path)});
  std::string error;
  std::unique_ptr<RawClient> client = RawClient::Connect(gw_->port(), Alice(), &error);
  ASSERT_TRUE(client) << error;

  constexpr uint64_t kWindow = 4 * kMiB;  // max_bytes_in_flight_per_connection's default
  constexpr uint32_t kStreams = 64;
  constexpr size_t kChunk = 32 * 1024;
  uint64_t session_limit = kWindow, session_sent = 0;
  std::set<uint32_t> accepted;
  // Reads one frame: a connection CREDIT raises the limit, an OPEN_OK marks its stream.
  auto read_one = [&]() -> bool {
    std::optional<RawFrame> f = client->NextFrame(Duration(10000));
    if (!f) return false;
    if (f->header.type == FrameType::kCredit && f->header.stream_id == 0 &&
        f->payload.size() == 16) {
      uint64_t limit = 0;
      for (int i = 8; i < 16; ++i) limit = limit << 8 | static_cast<uint8_t>(f->payload[i]);
      session_limit = std::max(session_limit, limit);
    } else if (f->header.type == FrameType::kOpenOk) {
      accepted.insert(f->header.stream_id);
    }
    return true;
  };
  const std::string zeros(kChunk, '\0');
  for (uint32_t n = 0; n < kStreams; ++n) {
    const uint32_t id = 2 * n + 1;
    ASSERT_TRUE(client->SendOpen(id, "deaf", 3));
    while (accepted.count(id) == 0) ASSERT_TRUE(read_one()) << "no OPEN_OK for stream " << id;
    for (uint64_t offset = 0; offset < kMiB; offset += kChunk) {
      while (session_sent + kChunk > session_limit) {
        ASSERT_TRUE(read_one()) << "no connection credit after " << session_sent << " bytes";
      }
      std::string payload(8, '\0');
      for (int i = 0; i < 8; ++i)
        payload[static_cast<size_t>(i)] = static_cast<char>(offset >> (56 - 8 * i));
      payload += zeros;
      ASSERT_TRUE(
          client->SendRaw(FrameType::kData, 0, id, static_cast<uint32_t>(payload.size()), payload));
      session_sent += kChunk;
    }
    std::string reset(12, '\0');
    reset[3] = static_cast<char>(ErrorCode::kCancel);
    ASSERT_TRUE(client->SendRaw(FrameType::kReset, 0, id, 12, reset));
  }
  // Every byte was sent within the connection window, which the RESETs kept handing back.
  EXPECT_EQ(session_sent, uint64_t{kStreams} * kMiB);
  std::map<std::string, uint64_t> k = ReadCounters(*gw_);
  EXPECT_EQ(k["protocol_errors"], 0u);
  Report("reset_streams", std::to_string(kStreams) + " streams sent a 1 MiB window each to a " +
                              "service that reads nothing, then reset; RSS " + MiB(Rss(*gw_)) +
                              " (baseline " + MiB(baseline_rss_) + ")");
  ExpectRecovered("reset streams");  // RSS back within 16 MiB of the baseline.
  client.reset();
  close(deaf);
}

struct BadCertificate {
  std::string label;
  std::string stem;          // Client certificate, relative to the PKI.
  std::string client_says;   // What `pipegate` must print (regex).
  std::string gateway_says;  // What the gateway must log.
  std::string counter;       // The refusal counter that must go up by one.
};

// Each bad client certificate is refused with the right message on both sides and the right
// counter; afterwards the gateway is as before.
TEST_F(AbuseTest, BadClientCertificatesAreRefusedWithTheRightMessage) {
  const std::vector<BadCertificate> cases = {
      {"expired", "expired", "rejected our client certificate: it has expired",
       "client certificate has expired", "tls_expired"},
      {"not_yet_valid", "notyet", "rejected our client certificate: it is not yet valid",
       "client certificate is not yet valid", "tls_not_yet_valid"},
      {"wrong_eku", "wrongeku", "rejected our client certificate: it is not valid for client use",
       "client certificate is not valid for client use (extended key usage)", "tls_wrong_usage"},
      {"revoked", "mallory", "rejected our client certificate: it has been revoked",
       "client certificate has been revoked (CRL)", "tls_revoked"},
      {"foreign_ca", "other/alice", "rejected our client certificate \\(unknown CA\\)",
       "client certificate is not signed by a trusted CA", "tls_unknown_ca"},
  };
  ExportSpec open_to_all = ExportSpec::FifoRead("any");
  open_to_all.allow = {"*"};
  StartGateway("", {open_to_all}, "crl = \"" + PkiPath("crl.pem") + "\"\n");
  for (const BadCertificate& c : cases) {
    SCOPED_TRACE(c.label);
    const std::map<std::string, uint64_t> before = ReadCounters(*gw_);
    const size_t log_before = gw_->Log().size();
    const ClientResult result =
        RunPipegate(dir_, {"cat", gw_->Address("any")}, ClientOptions::As(Identity::Of(c.stem)));
    EXPECT_TRUE(IsError(result, 2, gw_->Address("any"), c.client_says));
    EXPECT_TRUE(
        WaitFor([&] { return gw_->Log().find(c.gateway_says, log_before) != std::string::npos; },
                Duration(5000)))
        << "the gateway did not log '" << c.gateway_says << "'";
    std::map<std::string, uint64_t> after = ReadCounters(*gw_);
    EXPECT_EQ(after[c.counter], before.at(c.counter) + 1);
    EXPECT_EQ(after["streams_opened"], before.at("streams_opened"));
  }
  ExpectRecovered("bad_certificates");
}

}  // namespace
}  // namespace pipegate::testing
