// Loop tests of uvglue::Connection (src/uv/connection.cc): two real connections over loopback
// TCP on one uv loop, or one against a hand-driven TlsSession client on a thread. Every test
// ends with every handle closed and uv_loop_close() == 0; every wait is bounded by a timer.

#include "uv/connection.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <uv.h>

#include "pipegate/frame.h"
#include "pipegate/mux.h"
#include "pipegate/tls.h"

#include "support/connection_pair.h"
#include "support/pki.h"
#include "support/tcp_proxy.h"
#include "support/timing.h"

namespace pipegate::uvglue {
namespace {

using ::pipegate::testing::Duration;
using ::pipegate::testing::QuietConnectionOptions;
using ::pipegate::testing::Scaled;

// One end of a connection: its Mux and what its handler has heard. Owned by the fixture and
// outlives its Connection (conn is null once OnConnectionFreed() came).
class Side final : public ConnectionHandler {
 public:
  explicit Side(const MuxOptions& options) : mux(options, this) {}

  void Flush() {
    if (conn != nullptr) conn->Flush();
  }

  void OnMuxReady() override { ready = true; }
  void OnOpenRequest(uint32_t id, const OpenPayload& open) override {
    stream = id;
    mux.Accept(id, OpenOkPayload{1, open.access});
    Flush();
  }
  void OnOpenAccepted(uint32_t id, const OpenOkPayload& /*ok*/) override {
    stream = id;
    if (on_open_accepted) on_open_accepted(id);
  }
  void OnStreamData(uint32_t id, const uint8_t* data, size_t len) override {
    received_bytes += len;
    if (keep_data) received.append(reinterpret_cast<const char*>(data), len);
    mux.Consumed(id, len);
    Flush();
  }
  void OnStreamFin(uint32_t id) override {
    fin = true;
    if (on_fin) on_fin(id);
  }
  void OnStreamReset(uint32_t /*id*/, ErrorCode /*error*/, std::string_view reason) override {
    ADD_FAILURE() << "unexpected RESET: " << reason;
  }
  void OnStreamStopped(uint32_t /*id*/, ErrorCode /*error*/, std::string_view reason) override {
    ADD_FAILURE() << "unexpected STOP: " << reason;
  }
  void OnStreamWritable(uint32_t /*id*/) override {}
  void OnStreamDelivered(uint32_t /*id*/) override {}
  void OnStreamClosed(uint32_t /*id*/) override { ++streams_closed; }
  void OnListRequest() override { ++list_requests; }
  void OnListReply(const std::vector<ListEntry>& /*entries*/, bool /*more*/) override {}
  void OnGoaway(const GoawayPayload& /*goaway*/) override {}

  void OnConnectionWritable() override {
    ++writable;
    backlogged_when_writable = conn != nullptr && conn->backlogged();
    if (on_writable) on_writable();
  }
  void OnConnectionClosed(const Status& why) override {
    closed = true;
    close_why = why;
  }
  void OnConnectionFreed() override {
    freed = true;
    conn = nullptr;
  }

  Mux mux;
  Connection* conn = nullptr;
  bool ready = false;
  uint32_t stream = 0;
  bool keep_data = true;
  std::string received;
  uint64_t received_bytes = 0;
  bool fin = false;
  int streams_closed = 0;
  uint64_t list_requests = 0;
  int writable = 0;
  bool backlogged_when_writable = false;
  bool closed = false;
  Status close_why;
  bool freed = false;
  std::function<void(uint32_t)> on_open_accepted;
  std::function<void(uint32_t)> on_fin;
  std::function<void()> on_writable;
};

using ConnectionLoopTest = ::pipegate::testing::ConnectionPairTest<Side>;

// The lost wake-up: WantWritable() on a connection whose backlog is already below kLowMark sees
// no write completion to wait for, and must still answer with one OnConnectionWritable(), from
// the loop rather than from inside the call (the caller is pausing a stream right then).
TEST_F(ConnectionLoopTest, WantWritableWhenAlreadyLowNotifiesOnceFromTheLoop) {
  ASSERT_NO_FATAL_FAILURE(ConnectPair(QuietConnectionOptions(/*is_client=*/false)));
  ASSERT_FALSE(client_->conn->backlogged());
  RunFor(Duration(50));  // Whatever the handshake queued has gone out.

  client_->conn->WantWritable();
  EXPECT_EQ(0, client_->writable) << "OnConnectionWritable() ran inside WantWritable()";
  ASSERT_TRUE(RunUntil([&] { return client_->writable > 0; }, Duration(2000)))
      << "OnConnectionWritable() never came: the wake-up was lost";
  RunFor(Duration(100));
  EXPECT_EQ(1, client_->writable);
  EXPECT_FALSE(client_->backlogged_when_writable);

  // Each WantWritable() earns one notification, not more and not fewer.
  client_->conn->WantWritable();
  client_->conn->WantWritable();
  EXPECT_EQ(1, client_->writable);
  ASSERT_TRUE(RunUntil([&] { return client_->writable > 1; }, Duration(2000)));
  RunFor(Duration(100));
  EXPECT_EQ(2, client_->writable);
  EXPECT_EQ(0, server_->writable);
}

// The ordinary case: a burst large enough that backlogged() holds; WantWritable() then waits
// for the socket, and OnConnectionWritable() comes once the peer has read enough of it.
TEST_F(ConnectionLoopTest, WritableFollowsBacklogOnceThePeerReads) {
  constexpr size_t kBurst = 8u << 20;
  ConnectionOptions server_options = QuietConnectionOptions(/*is_client=*/false);
  server_options.mux.stream_window = kBurst;  // The whole burst fits one window.
  server_options.mux.session_window = 2 * kBurst;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(server_options, /*socket_buffer=*/64 * 1024));
  server_->keep_data = false;

  size_t sent = 0;
  client_->on_open_accepted = [&](uint32_t id) {
    const std::string block(64 * 1024, 'b');
    while (sent < kBurst) {
      size_t n = client_->mux.SendData(id, reinterpret_cast<const uint8_t*>(block.data()),
                                       std::min(block.size(), kBurst - sent));
      if (n == 0) break;
      sent += n;
    }
    if (sent == kBurst) client_->mux.SendFin(id);
    client_->Flush();
  };
  ASSERT_TRUE(client_->mux.Open(OpenPayload{2, 0, 0, "burst"}));
  client_->Flush();
  ASSERT_TRUE(RunUntil([&] { return client_->conn->backlogged(); }, Duration(3000)))
      << "the burst never made the connection backlogged (sent " << sent << ")";
  ASSERT_EQ(kBurst, sent);

  uint64_t server_had = server_->received_bytes;
  uint64_t server_at_writable = 0;
  client_->on_writable = [&] { server_at_writable = server_->received_bytes; };
  client_->conn->WantWritable();
  EXPECT_EQ(0, client_->writable);
  ASSERT_TRUE(RunUntil([&] { return client_->writable > 0; }, Duration(4000)))
      << "no OnConnectionWritable() after the backlog (server got " << server_->received_bytes
      << " of " << kBurst << ")";
  EXPECT_FALSE(client_->backlogged_when_writable);
  EXPECT_GT(server_at_writable, server_had) << "writable before the peer read anything";
  ASSERT_TRUE(RunUntil([&] { return server_->fin; }, Duration(4000)));
  EXPECT_EQ(kBurst, server_->received_bytes);
  RunFor(Duration(50));
  EXPECT_EQ(1, client_->writable);
}

// A peer that sends PINGs and LISTs but never reads: the ACKs pile up in the server's write
// backlog, and past max_write_backlog the server stops reading, so the peer's sends block
// instead of the server's memory growing. Once the peer reads, the server reads again.
// Progress is measured by the LIST frames the server's Mux has delivered (one per chunk).
struct FloodState {
  std::atomic<bool> blocked{false};
  std::atomic<bool> finished{false};
  std::atomic<uint64_t> chunks{0};
  std::atomic<uint64_t> acks{0};
  std::promise<void> read;
  std::string error;           // Written before finished is set.
  uv_async_t* wake = nullptr;  // Wakes the loop to look at blocked and finished.
};

constexpr uint64_t kPingsPerChunk = 512;  // 10 KiB of PINGs, then one LIST.
constexpr uint64_t kExtraChunks = 4;

// The flooding peer, on its own thread: the library's TlsSession over a non-blocking socket
// with small kernel buffers. (RawClient cannot serve here: its reads stop to flush pending
// output first, and the server that waits for it to read would wait for it too.)
void Flood(uint16_t port, std::shared_ptr<const TlsContext> context, FloodState* state) {
  auto finish = [&](std::string error) {
    state->error = std::move(error);
    state->finished = true;
    uv_async_send(state->wake);
  };
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int small = 16 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  sockaddr_in addr{};
  uv_ip4_addr("127.0.0.1", port, &addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return finish("connect failed");
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  TlsSession tls(std::move(context), "127.0.0.1");
  Buffer out;
  Buffer plain;
  // One poll round: writes what the socket takes and, if @p reading, reads and counts PING
  // ACKs. @return 0 if nothing happened within @p wait_ms, -1 on an error, else 1.
  auto pump = [&](bool reading, int wait_ms) {
    tls.DrainCiphertext(out);
    const auto events = static_cast<short>((reading ? POLLIN : 0) | (out.empty() ? 0 : POLLOUT));
    pollfd pfd{fd, events, 0};
    int rc = poll(&pfd, 1, wait_ms);
    if (rc <= 0) return rc;
    if ((pfd.revents & POLLOUT) != 0) {
      ssize_t n = write(fd, out.data(), out.size());
      if (n < 0 && errno != EAGAIN) return -1;
      if (n > 0) out.Consume(static_cast<size_t>(n));
    }
    if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      uint8_t buf[65536];
      ssize_t n = read(fd, buf, sizeof buf);
      if (n == 0 || (n < 0 && errno != EAGAIN)) return -1;
      if (n > 0) tls.FeedCiphertext(buf, static_cast<size_t>(n));
      if (!tls.Advance(plain).ok()) return -1;
      while (plain.size() >= kFrameHeaderSize) {
        const uint8_t* p = plain.data();
        const size_t size = kFrameHeaderSize + GetU32(p + 8);
        if (plain.size() < size) break;
        if (p[0] == static_cast<uint8_t>(FrameType::kPing) && (p[1] & kFlagAck) != 0) ++state->acks;
        plain.Consume(size);
      }
    }
    return 1;
  };
  auto give_up = ::pipegate::testing::Clock::now() + Scaled(Duration(4000));
  auto in_time = [&] { return ::pipegate::testing::Clock::now() < give_up; };
  (void)tls.Advance(plain);  // The ClientHello.
  while (!tls.established() && in_time()) {
    if (pump(/*reading=*/true, 100) < 0) break;
  }
  if (!tls.established()) {
    close(fd);
    return finish("TLS handshake failed");
  }
  Buffer frames;
  AppendSettings(frames, {{SettingId::kMaxFramePayload, kDefaultMaxFramePayload}});
  Buffer chunk;
  for (uint64_t i = 0; i < kPingsPerChunk; ++i) AppendPing(chunk, 0, i);
  AppendList(chunk);
  auto send = [&](const Buffer& b) { return tls.WritePlaintext(b.data(), b.size()).ok(); };
  bool ok = send(frames);
  // Flood, never reading, until the socket takes nothing for 300 ms.
  while (ok && !state->blocked && in_time()) {
    if (out.size() < 64 * 1024) {
      ok = send(chunk);
      ++state->chunks;
    }
    int rc = pump(/*reading=*/false, static_cast<int>(Scaled(Duration(300)).count()));
    if (rc < 0) ok = false;
    if (rc == 0) {
      state->blocked = true;
      uv_async_send(state->wake);
    }
  }
  std::future<void> go = state->read.get_future();
  if (ok && state->blocked && go.wait_for(Scaled(Duration(5000))) == std::future_status::ready) {
    // Read every answer, then send a few more chunks and read theirs.
    give_up = ::pipegate::testing::Clock::now() + Scaled(Duration(4000));
    for (uint64_t extra = 0; ok && extra <= kExtraChunks; ++extra) {
      while (ok && state->acks < state->chunks * kPingsPerChunk && in_time()) {
        ok = pump(/*reading=*/true, 50) >= 0;
      }
      if (extra < kExtraChunks) {
        ok = ok && send(chunk);
        ++state->chunks;
      }
    }
  }
  close(fd);
  if (!state->blocked) return finish("the sends never blocked: the server kept reading");
  if (state->acks != state->chunks * kPingsPerChunk) return finish("not every PING was answered");
  finish("");
}

TEST_F(ConnectionLoopTest, StopsReadingPastMaxWriteBacklogAndResumesWhenThePeerReads) {
  ConnectionOptions options = QuietConnectionOptions(/*is_client=*/false);
  options.max_write_backlog = 64 * 1024;
  server_ = std::make_unique<Side>(options.mux);
  ASSERT_NO_FATAL_FAILURE(Listen(options, /*socket_buffer=*/32 * 1024));

  FloodState state;
  state.wake = &wake_;
  std::thread flooder(Flood, port_, tls_.client, &state);
  bool released = false;
  auto release = [&] {
    if (!released) state.read.set_value();
    released = true;
  };
  // Whatever fails below, the flooder is released, ends within its own bounds, and is joined.
  struct Joiner {
    std::function<void()> fn;
    ~Joiner() { fn(); }
  } joiner{[&] {
    release();
    RunUntil([&] { return state.finished.load(); }, Duration(10000));
    flooder.join();
  }};

  ASSERT_TRUE(RunUntil([&] { return state.blocked || state.finished; }, Duration(5000)));
  ASSERT_TRUE(state.blocked) << state.error;
  const uint64_t seen = server_->list_requests;
  RunFor(Duration(300));
  EXPECT_EQ(seen, server_->list_requests) << "the server kept reading a peer that does not read";
  EXPECT_LT(seen, state.chunks.load()) << "nothing was left unread";
  EXPECT_FALSE(server_->closed) << server_->close_why.message();

  release();
  ASSERT_TRUE(RunUntil([&] { return state.finished.load(); }, Duration(5000)))
      << "acks " << state.acks << " of " << state.chunks * kPingsPerChunk << ", server saw "
      << server_->list_requests << " of " << state.chunks << " chunks (" << seen << " when paused)";
  EXPECT_EQ("", state.error);
  EXPECT_EQ(state.chunks.load(), server_->list_requests);
  EXPECT_EQ(state.chunks * kPingsPerChunk, state.acks.load());
}

// The whole life of a stream and a connection: OPEN, OPEN_OK, data and FIN each way, both
// sides see the stream closed, a graceful close reaches the peer as an orderly end, and both
// connections free every handle.
TEST_F(ConnectionLoopTest, StreamRoundTripAndCleanClose) {
  ASSERT_NO_FATAL_FAILURE(ConnectPair(QuietConnectionOptions(/*is_client=*/false)));
  const std::string request = "hello from the client";
  const std::string reply = "hello from the gateway";
  client_->on_open_accepted = [&](uint32_t id) {
    client_->mux.SendData(id, reinterpret_cast<const uint8_t*>(request.data()), request.size());
    client_->mux.SendFin(id);
    client_->Flush();
  };
  server_->on_fin = [&](uint32_t id) {
    server_->mux.SendData(id, reinterpret_cast<const uint8_t*>(reply.data()), reply.size());
    server_->mux.SendFin(id);
    server_->Flush();
  };
  Result<uint32_t> id = client_->mux.Open(OpenPayload{3, 0, 0, "echo"});
  ASSERT_TRUE(id);
  client_->Flush();

  ASSERT_TRUE(RunUntil([&] { return client_->streams_closed == 1 && server_->streams_closed == 1; },
                       Duration(3000)))
      << "client got '" << client_->received << "', server got '" << server_->received << "'";
  EXPECT_EQ(*id, server_->stream);
  EXPECT_EQ(request, server_->received);
  EXPECT_EQ(reply, client_->received);
  EXPECT_TRUE(client_->fin);
  EXPECT_EQ(0u, client_->mux.stream_count());
  EXPECT_EQ(0u, server_->mux.stream_count());

  client_->conn->Close(Status(Code::kOk, "done"));
  ASSERT_TRUE(RunUntil([&] { return client_->freed && server_->freed; }, Duration(3000)));
  EXPECT_TRUE(client_->closed);
  EXPECT_TRUE(server_->closed);
  EXPECT_TRUE(server_->close_why.ok()) << server_->close_why.message();
  EXPECT_EQ(0, client_->writable + server_->writable);
}

// A numeric address is dialled without the resolver: a refused dial reaches the handler after
// Connect() returned (the caller stores the pointer it returns), with the address in the reason.
// (libuv reports ECONNREFUSED from the loop in any case; a dial that fails inside
// uv_tcp_connect, such as an unroutable address, cannot be made on loopback.)
TEST_F(ConnectionLoopTest, ARefusedDialOfANumericAddressIsReportedFromTheLoop) {
  uint16_t port = 0;
  const int held = ::pipegate::testing::BindOnLoopback(&port);  // Refuses while it is open.
  ASSERT_GE(held, 0);

  const ConnectionOptions options = QuietConnectionOptions(/*is_client=*/true);
  client_ = std::make_unique<Side>(options.mux);
  client_->conn = Connection::Connect(&loop_, "127.0.0.1", port, tls_.client, options,
                                      client_.get(), &client_->mux);
  EXPECT_FALSE(client_->closed) << "the handler heard of the dial inside Connect()";
  ASSERT_TRUE(RunUntil([&] { return client_->freed; }, Duration(3000)));
  ::close(held);
  EXPECT_TRUE(client_->closed);
  EXPECT_EQ(Code::kConnect, client_->close_why.code());
  EXPECT_NE(
      client_->close_why.message().find("could not connect to 127.0.0.1:" + std::to_string(port)),
      std::string::npos)
      << client_->close_why.message();
  EXPECT_FALSE(client_->ready);
}

// A resolver that refuses at once (libuv checks a host name's IDNA form before its thread pool
// sees it: invalid UTF-8 is EINVAL) is reported from the loop too, not from inside Connect().
TEST_F(ConnectionLoopTest, AResolverThatRefusesAtOnceIsReportedFromTheLoop) {
  const ConnectionOptions options = QuietConnectionOptions(/*is_client=*/true);
  client_ = std::make_unique<Side>(options.mux);
  client_->conn = Connection::Connect(&loop_, "bad\xff.invalid", 7445, tls_.client, options,
                                      client_.get(), &client_->mux);
  EXPECT_FALSE(client_->closed) << "the handler heard of the failure inside Connect()";
  ASSERT_TRUE(RunUntil([&] { return client_->freed; }, Duration(3000)));
  EXPECT_TRUE(client_->closed);
  EXPECT_EQ(Code::kConnect, client_->close_why.code());
  EXPECT_NE(client_->close_why.message().find("cannot resolve"), std::string::npos)
      << client_->close_why.message();
}

}  // namespace
}  // namespace pipegate::uvglue
