// Loop tests of uvglue::StreamLink (src/uv/stream_link.cc) end to end: a client and a server
// Connection over loopback TCP on one uv loop, each side linking the stream to local pipes
// (socketpairs or FIFOs) as the bridge and the gateway do. The test drives the far ends of those
// pipes and checks every byte, EOF, back-pressure and a broken pipe. Every test ends with every
// handle closed and uv_loop_close() == 0; every wait is bounded by a timer.

#include "uv/stream_link.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <uv.h>

#include "pipegate/config.h"
#include "pipegate/mux.h"
#include "pipegate/tls.h"

#include "support/connection_pair.h"
#include "support/data.h"
#include "support/files.h"
#include "support/pki.h"
#include "support/process.h"
#include "support/timing.h"

namespace pipegate::uvglue {
namespace {

using ::pipegate::testing::Duration;
using ::pipegate::testing::QuietConnectionOptions;
using ::pipegate::testing::Scaled;

// What a link had done when its stream closed (the link itself is deleted then).
struct LinkResult {
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  bool local_eof = false;
  bool local_write_done = false;
  Status local_error;
};

// The handler of one side of the connection, linking each stream to local pipes as the gateway
// (Session) and the bridge (Client) do. Owned by the fixture; outlives its Connection.
class Side final : public ConnectionHandler, public StreamLinkOwner {
 public:
  // Server: gives a new stream's link its input and output pipes (either may be null).
  using AttachFn = std::function<StreamPipes(StreamLink*)>;

  explicit Side(const MuxOptions& options) : mux(options, this) {}

  // Client: opens a stream linked to @p in and @p out (made with this side's link as events
  // by @p attach).
  uint32_t Open(const std::string& name, Access access, const AttachFn& attach) {
    OpenPayload open;
    open.access = static_cast<uint8_t>(access);
    open.name = name;
    Result<uint32_t> id = mux.Open(open);
    EXPECT_TRUE(id) << id.error().message();
    if (!id) return 0;
    auto link = std::make_unique<StreamLink>(this, *id, name);
    link->Attach(attach(link.get()));
    links[*id] = std::move(link);
    FlushSoon();
    return *id;
  }

  StreamLink* Find(uint32_t id) {
    auto it = links.find(id);
    return it == links.end() ? nullptr : it->second.get();
  }

  // StreamLinkOwner.
  Mux* stream_mux() override { return &mux; }
  void FlushSoon() override {
    if (conn != nullptr) conn->Flush();
  }
  bool Backlogged() override { return conn == nullptr || conn->backlogged(); }
  void PauseForBackpressure(StreamLink* link) override {
    paused.push_back(link->id());
    if (conn != nullptr) conn->WantWritable();
  }

  // MuxCallbacks.
  void OnMuxReady() override { ready = true; }
  void OnOpenRequest(uint32_t id, const OpenPayload& open) override {
    if (!on_open) {
      ADD_FAILURE() << "unexpected OPEN of '" << open.name << "'";
      mux.Reject(id, ErrorCode::kNotFound, "no such export");
      FlushSoon();
      return;
    }
    auto link = std::make_unique<StreamLink>(this, id, open.name);
    link->Attach(on_open(link.get()));
    StreamLink* l = link.get();
    links[id] = std::move(link);
    mux.Accept(id, OpenOkPayload{1, open.access});
    l->StartReading();
    FlushSoon();
  }
  void OnOpenAccepted(uint32_t id, const OpenOkPayload& /*ok*/) override {
    if (StreamLink* l = Find(id)) l->StartReading();
  }
  void OnStreamData(uint32_t id, const uint8_t* data, size_t len) override {
    if (StreamLink* l = Find(id)) l->OnData(data, len);
  }
  void OnStreamFin(uint32_t id) override {
    ++fins;
    if (StreamLink* l = Find(id)) l->OnFin();
  }
  void OnStreamReset(uint32_t /*id*/, ErrorCode error, std::string_view /*reason*/) override {
    ++resets;
    reset_error = error;
  }
  void OnStreamStopped(uint32_t id, ErrorCode error, std::string_view /*reason*/) override {
    ++stops;
    stop_error = error;
    if (StreamLink* l = Find(id)) l->StopLocalReading();
  }
  void OnStreamWritable(uint32_t id) override {
    if (StreamLink* l = Find(id)) l->Resume();
  }
  void OnStreamClosed(uint32_t id) override {
    ++streams_closed;
    std::erase(paused, id);
    auto node = links.extract(id);
    if (node.empty()) return;
    const StreamLink& l = *node.mapped();
    results[id] = LinkResult{l.bytes_sent(), l.bytes_received(), l.local_eof(),
                             l.local_write_done(), l.local_error()};
  }  // Deletes the link, which closes its pipes.

  // ConnectionHandler.
  void OnConnectionWritable() override {
    std::vector<uint32_t> ids;
    ids.swap(paused);
    for (uint32_t id : ids) {
      if (StreamLink* l = Find(id)) l->Resume();
    }
  }
  void OnConnectionClosed(const Status& why) override {
    closed = true;
    close_why = why;
    paused.clear();
    links.clear();
  }
  void OnConnectionFreed() override {
    freed = true;
    conn = nullptr;
  }

  Mux mux;
  Connection* conn = nullptr;
  AttachFn on_open;  // Server: the pipes of each stream the peer opens.
  std::map<uint32_t, std::unique_ptr<StreamLink>> links;
  std::map<uint32_t, LinkResult> results;
  std::vector<uint32_t> paused;
  bool ready = false;
  int fins = 0;
  int resets = 0;
  ErrorCode reset_error = ErrorCode::kNoError;
  int stops = 0;
  ErrorCode stop_error = ErrorCode::kNoError;
  int streams_closed = 0;
  bool closed = false;
  Status close_why;
  bool freed = false;
};

// The test's end of a local pipe, driven by a LocalPipe of its own: sends a payload and then
// ends its write side, and reads everything to EOF. Owned by the test; Close() frees the pipe.
class Endpoint final : public LocalPipeEvents {
 public:
  Endpoint(uv_loop_t* loop, int fd, unsigned directions) {
    Result<LocalPipePtr> opened = LocalPipe::Open(loop, fd, directions, true, this);
    EXPECT_TRUE(opened);
    if (opened) pipe_ = std::move(*opened);
  }
  ~Endpoint() override { Close(); }
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  // Writes @p payload, then ends the write side: shutdown() on a socket; on a FIFO, whose
  // reader sees EOF only once the fd is closed, @p close_when_done closes the endpoint.
  void Send(const std::string& payload, bool close_when_done) {
    close_when_done_ = close_when_done;
    ssize_t r = pipe_->Write(reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
    ASSERT_GE(r, 0) << std::strerror(static_cast<int>(-r));
    written += static_cast<uint64_t>(r);
    pipe_->FinishWriting();
  }
  void StartReading() { pipe_->WantRead(true); }
  void Close() { pipe_.reset(); }  // Closes the pipe; it frees itself.
  LocalPipe* pipe() const { return pipe_.get(); }

  void OnLocalReadable() override {
    uint8_t buf[65536];
    for (;;) {
      ssize_t n = pipe_->Read(buf, sizeof buf);
      if (n > 0) {
        got.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
        continue;
      }
      if (n == 0) {
        eof = true;
        pipe_->WantRead(false);
      } else if (n != -EAGAIN) {
        ADD_FAILURE() << "read: " << std::strerror(static_cast<int>(-n));
        pipe_->WantRead(false);
      }
      return;
    }
  }
  void OnLocalWritten(size_t n) override { written += n; }
  void OnLocalWriteError(const Status& status) override { write_error = status; }
  void OnLocalWriteDone() override {
    write_done = true;
    if (close_when_done_) Close();
  }

  std::string got;
  bool eof = false;
  uint64_t written = 0;
  bool write_done = false;
  Status write_error;

 private:
  LocalPipePtr pipe_;
  bool close_when_done_ = false;
};

// A FIFO's two ends, opened non-blocking (the read end first, so the write end finds a reader).
struct Fifo {
  int read_fd = -1;
  int write_fd = -1;
};

class StreamLinkLoopTest : public ::pipegate::testing::ConnectionPairTest<Side> {
 protected:
  void SetUp() override {
    ::pipegate::testing::IgnoreSigpipe();
    ConnectionPairTest::SetUp();
  }
  void ReleaseLocalEnds() override { endpoints_.clear(); }  // Closes their pipes.
  void CheckSideAfterTest(Side& side) override {
    EXPECT_TRUE(side.links.empty()) << "a link outlived its connection";
  }

  // Connects a client and a server whose Mux has @p server_mux.
  void ConnectPair(const MuxOptions& server_mux) {
    ConnectionOptions server_options = QuietConnectionOptions(/*is_client=*/false);
    server_options.mux = server_mux;
    server_options.mux.is_client = false;
    ConnectionPairTest::ConnectPair(server_options);
  }

  // A socketpair: [0] for a link, [1] for the test. Neither is owned by the fixture.
  void SocketPair(int fds[2]) {
    ASSERT_EQ(0, ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
  }
  void MakeFifo(Fifo* fifo) {
    const std::string path = dir_.Unique("fifo");
    ASSERT_TRUE(::pipegate::testing::MakeFifo(path));
    fifo->read_fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    ASSERT_GE(fifo->read_fd, 0) << std::strerror(errno);
    fifo->write_fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    ASSERT_GE(fifo->write_fd, 0) << std::strerror(errno);
  }
  // A LocalPipe for a link (the link is its events, as the gateway and the bridge do it).
  LocalPipePtr LinkPipe(int fd, unsigned directions, StreamLink* link) {
    Result<LocalPipePtr> opened = LocalPipe::Open(&loop_, fd, directions, true, link);
    EXPECT_TRUE(opened);
    return opened ? std::move(*opened) : nullptr;
  }
  // A write stream from one FIFO to another: the test writes FIFO a through `writer`, the
  // client link reads it; the server link writes FIFO b, which the test reads through `reader`.
  struct FifoStream {
    uint32_t id = 0;
    Endpoint* writer = nullptr;
    Endpoint* reader = nullptr;
    LocalPipe* server_out = nullptr;  // The server link's pipe to b, once the OPEN arrived.
  };
  void OpenFifoStream(const std::string& name, FifoStream* stream) {
    Fifo a;
    Fifo b;
    ASSERT_NO_FATAL_FAILURE(MakeFifo(&a));
    ASSERT_NO_FATAL_FAILURE(MakeFifo(&b));
    stream->writer = AddEndpoint(a.write_fd, LocalPipe::kWrite);
    stream->reader = AddEndpoint(b.read_fd, LocalPipe::kRead);
    server_->on_open = [this, stream, fd = b.write_fd](StreamLink* link) {
      LocalPipePtr out = LinkPipe(fd, LocalPipe::kWrite, link);
      stream->server_out = out.get();  // Owned by the link from here on.
      return StreamPipes{nullptr, std::move(out)};
    };
    stream->id = client_->Open(name, Access::kWrite, [this, fd = a.read_fd](StreamLink* link) {
      return StreamPipes{LinkPipe(fd, LocalPipe::kRead, link), nullptr};
    });
    ASSERT_NE(0u, stream->id);
  }
  // A duplex stream between two socketpairs: the test drives `client_end` and `server_end`;
  // the client and server links own the other ends.
  struct SocketStream {
    uint32_t id = 0;
    Endpoint* client_end = nullptr;
    Endpoint* server_end = nullptr;
    LocalPipe* server_pipe = nullptr;  // The server link's pipe, once the OPEN arrived.
  };
  // @p server_sndbuf (0: the system's default) sets SO_SNDBUF on the server link's socket: how
  // much it can write before its reader reads.
  void OpenSocketStream(const std::string& name, SocketStream* stream, int server_sndbuf = 0) {
    constexpr unsigned kBoth = LocalPipe::kRead | LocalPipe::kWrite;
    int client_fds[2];
    int server_fds[2];
    ASSERT_NO_FATAL_FAILURE(SocketPair(client_fds));
    ASSERT_NO_FATAL_FAILURE(SocketPair(server_fds));
    if (server_sndbuf > 0) {
      ASSERT_EQ(0, ::setsockopt(server_fds[0], SOL_SOCKET, SO_SNDBUF, &server_sndbuf,
                                sizeof server_sndbuf))
          << std::strerror(errno);
    }
    stream->client_end = AddEndpoint(client_fds[1], kBoth);
    stream->server_end = AddEndpoint(server_fds[1], kBoth);
    server_->on_open = [this, stream, fd = server_fds[0]](StreamLink* link) {
      LocalPipePtr pipe = LinkPipe(fd, kBoth, link);
      stream->server_pipe = pipe.get();  // Owned by the link from here on.
      return StreamPipes::Duplex(std::move(pipe));
    };
    stream->id = client_->Open(name, Access::kDuplex, [this, fd = client_fds[0]](StreamLink* link) {
      return StreamPipes::Duplex(LinkPipe(fd, kBoth, link));
    });
    ASSERT_NE(0u, stream->id);
  }
  Endpoint* AddEndpoint(int fd, unsigned directions) {
    endpoints_.push_back(std::make_unique<Endpoint>(&loop_, fd, directions));
    return endpoints_.back().get();
  }

  ::pipegate::testing::TempDir dir_;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;  // Cleared in TearDown, on the open loop.
};

std::string Payload(size_t size, uint64_t seed) {
  return ::pipegate::testing::RandomStream(seed).Next(size);
}

// A duplex stream between two Unix sockets: several stream windows of bytes each way, EOF
// (shutdown) each way, then both sides close the stream and free its link.
TEST_F(StreamLinkLoopTest, DuplexBytesAndEofCrossBetweenSocketsBothWays) {
  ASSERT_NO_FATAL_FAILURE(ConnectPair(MuxOptions{}));
  SocketStream stream;
  ASSERT_NO_FATAL_FAILURE(OpenSocketStream("duplex", &stream));
  const uint32_t id = stream.id;
  Endpoint* client_end = stream.client_end;
  Endpoint* server_end = stream.server_end;

  const std::string up = Payload(3 << 20, 11);    // Client to server.
  const std::string down = Payload(2 << 20, 12);  // Server to client.
  client_end->StartReading();
  server_end->StartReading();
  ASSERT_NO_FATAL_FAILURE(client_end->Send(up, /*close_when_done=*/false));
  ASSERT_NO_FATAL_FAILURE(server_end->Send(down, /*close_when_done=*/false));

  ASSERT_TRUE(RunUntil([&] { return client_end->eof && server_end->eof; }, Duration(10000)))
      << "server end got " << server_end->got.size() << " of " << up.size() << " bytes (eof "
      << server_end->eof << "), client end got " << client_end->got.size() << " of " << down.size()
      << " (eof " << client_end->eof << ")";
  EXPECT_TRUE(server_end->got == up) << "the bytes to the server arrived altered";
  EXPECT_TRUE(client_end->got == down) << "the bytes to the client arrived altered";
  ASSERT_TRUE(RunUntil([&] { return client_->streams_closed == 1 && server_->streams_closed == 1; },
                       Duration(3000)));
  EXPECT_TRUE(client_->links.empty());
  EXPECT_TRUE(server_->links.empty());
  const LinkResult& c = client_->results[id];
  const LinkResult& s = server_->results[id];
  EXPECT_EQ(up.size(), c.bytes_sent);
  EXPECT_EQ(down.size(), c.bytes_received);
  EXPECT_EQ(down.size(), s.bytes_sent);
  EXPECT_EQ(up.size(), s.bytes_received);
  EXPECT_TRUE(c.local_eof && s.local_eof);
  EXPECT_TRUE(c.local_write_done && s.local_write_done);
  EXPECT_TRUE(c.local_error.ok()) << c.local_error.message();
  EXPECT_TRUE(s.local_error.ok()) << s.local_error.message();
  EXPECT_EQ(0, client_->resets + server_->resets + client_->stops + server_->stops);
  EXPECT_EQ(1, client_->fins);
  EXPECT_EQ(1, server_->fins);
  EXPECT_EQ(up.size(), client_end->written);
  EXPECT_EQ(down.size(), server_end->written);
}

// The stream ends inside the write that empties a link's queue: the server has sent its
// direction and holds the client's last bytes and FIN, unwritten, because its local reader does
// not read. When the reader reads, the write that drains the queue completes the stream, and
// the link is freed from inside it. The socket's write side is still shut down first, and the
// link reports it done.
TEST_F(StreamLinkLoopTest, TheWriteThatEndsTheStreamStillShutsTheSocketDown) {
  ASSERT_NO_FATAL_FAILURE(ConnectPair(MuxOptions{}));
  SocketStream stream;
  // The server's socket takes 64 KiB (doubled by the kernel) before its reader reads; up is
  // far more than that and less than a stream window, so all of it and the FIN reach the
  // server, and most of it waits in the link's queue, while its reader sleeps.
  ASSERT_NO_FATAL_FAILURE(OpenSocketStream("last-write", &stream, 64 << 10));

  const std::string up = Payload(768 << 10, 13);
  const std::string down = Payload(64 << 10, 14);
  stream.client_end->StartReading();
  ASSERT_NO_FATAL_FAILURE(stream.client_end->Send(up, /*close_when_done=*/false));
  ASSERT_NO_FATAL_FAILURE(stream.server_end->Send(down, /*close_when_done=*/false));
  ASSERT_TRUE(RunUntil(
      [&] {
        return stream.client_end->eof && server_->fins == 1 && stream.server_pipe != nullptr &&
               stream.server_pipe->queued() > 0;
      },
      Duration(10000)))
      << "client end got " << stream.client_end->got.size() << " of " << down.size() << " (eof "
      << stream.client_end->eof << "); server FINs " << server_->fins;
  EXPECT_EQ(0, server_->streams_closed) << "the stream ended with bytes still queued";

  stream.server_end->StartReading();
  ASSERT_TRUE(RunUntil([&] { return stream.server_end->eof && server_->streams_closed == 1; },
                       Duration(10000)))
      << "server end got " << stream.server_end->got.size() << " of " << up.size() << " (eof "
      << stream.server_end->eof << ")";
  EXPECT_TRUE(stream.server_end->got == up) << "the bytes to the server arrived altered";
  EXPECT_TRUE(stream.client_end->got == down) << "the bytes to the client arrived altered";
  const LinkResult& s = server_->results[stream.id];
  EXPECT_EQ(up.size(), s.bytes_received);
  EXPECT_TRUE(s.local_write_done) << "the link was freed before it ended its write side";
  EXPECT_TRUE(s.local_error.ok()) << s.local_error.message();
  EXPECT_EQ(0, client_->resets + server_->resets + client_->stops + server_->stops);
}

// FIFO to FIFO, one way: the client reads a FIFO the test writes and closes; the server writes
// a FIFO the test reads. The writer's EOF reaches the far reader: the server ends its FIFO's
// write side once every byte is in it, and its reader sees EOF once the link has let go of it.
TEST_F(StreamLinkLoopTest, FifoToFifoCarriesEveryByteAndTheWritersEof) {
  ASSERT_NO_FATAL_FAILURE(ConnectPair(MuxOptions{}));
  FifoStream stream;
  ASSERT_NO_FATAL_FAILURE(OpenFifoStream("fifo", &stream));
  const uint32_t id = stream.id;
  Endpoint* writer = stream.writer;
  Endpoint* reader = stream.reader;

  const std::string sent = Payload(5 << 20, 21);
  reader->StartReading();
  ASSERT_NO_FATAL_FAILURE(writer->Send(sent, /*close_when_done=*/true));
  ASSERT_TRUE(RunUntil([&] { return reader->eof; }, Duration(10000)))
      << "read " << reader->got.size() << " of " << sent.size() << " bytes, no EOF";
  EXPECT_TRUE(reader->got == sent) << "the bytes arrived altered";
  EXPECT_TRUE(writer->write_done);
  ASSERT_TRUE(RunUntil([&] { return client_->streams_closed == 1 && server_->streams_closed == 1; },
                       Duration(3000)));
  EXPECT_EQ(sent.size(), client_->results[id].bytes_sent);
  EXPECT_TRUE(client_->results[id].local_eof);
  EXPECT_EQ(sent.size(), server_->results[id].bytes_received);
  EXPECT_TRUE(server_->results[id].local_write_done);
  EXPECT_TRUE(server_->results[id].local_eof) << "the server link had no input: FIN at once";
}

// A local reader that does not read holds the remote sender to about one stream window: the
// server link acknowledges only bytes that reached its FIFO. Once the reader reads, every byte
// arrives.
TEST_F(StreamLinkLoopTest, ASlowLocalReaderHoldsTheSenderToOneWindow) {
  constexpr uint32_t kWindow = 256 * 1024;
  MuxOptions server_mux;
  server_mux.stream_window = kWindow;
  ASSERT_NO_FATAL_FAILURE(ConnectPair(server_mux));
  FifoStream stream;
  ASSERT_NO_FATAL_FAILURE(OpenFifoStream("slow", &stream));
  const uint32_t id = stream.id;
  Endpoint* writer = stream.writer;
  Endpoint* reader = stream.reader;
  const int pipe_capacity = fcntl(reader->pipe()->fd(), F_GETPIPE_SZ);
  ASSERT_GT(pipe_capacity, 0);
  LocalPipe* const& server_out = stream.server_out;  // Set when the OPEN reaches the server.

  const std::string sent = Payload(4 << 20, 31);
  ASSERT_NO_FATAL_FAILURE(writer->Send(sent, /*close_when_done=*/true));
  auto client_sent = [&] {
    StreamLink* l = client_->Find(id);
    return l != nullptr ? l->bytes_sent() : client_->results[id].bytes_sent;
  };
  ASSERT_TRUE(
      RunUntil([&] { return server_out != nullptr && server_out->queued() > 0; }, Duration(3000)))
      << "the server's FIFO never filled up";
  RunFor(Duration(300));  // Whatever credit was in flight is spent.
  const uint64_t held = client_sent();
  EXPECT_LE(held, uint64_t{kWindow} + static_cast<uint64_t>(pipe_capacity))
      << "the sender went past one window and what the FIFO holds";
  EXPECT_LE(server_out->queued(), size_t{kWindow});
  RunFor(Duration(200));
  EXPECT_EQ(held, client_sent()) << "the sender kept going while nobody read";

  reader->StartReading();
  ASSERT_TRUE(RunUntil([&] { return reader->eof; }, Duration(10000)))
      << "read " << reader->got.size() << " of " << sent.size() << " bytes, no EOF";
  EXPECT_TRUE(reader->got == sent) << "the bytes arrived altered";
  ASSERT_TRUE(RunUntil([&] { return client_->streams_closed == 1 && server_->streams_closed == 1; },
                       Duration(3000)));
  EXPECT_EQ(sent.size(), client_->results[id].bytes_sent);
}

// The server's local reader goes away mid-stream: its link turns EPIPE into STOP (broken pipe),
// the client's link stops reading its FIFO, and both sides close the stream.
TEST_F(StreamLinkLoopTest, ABrokenLocalPipeStopsTheRemoteSender) {
  ASSERT_NO_FATAL_FAILURE(ConnectPair(MuxOptions{}));
  FifoStream stream;
  ASSERT_NO_FATAL_FAILURE(OpenFifoStream("broken", &stream));
  const uint32_t id = stream.id;
  Endpoint* writer = stream.writer;
  Endpoint* reader = stream.reader;

  const std::string sent = Payload(8 << 20, 41);
  reader->StartReading();
  ASSERT_NO_FATAL_FAILURE(writer->Send(sent, /*close_when_done=*/true));
  ASSERT_TRUE(RunUntil([&] { return reader->got.size() >= 256 * 1024; }, Duration(5000)));
  reader->Close();  // The FIFO has no reader any more.

  ASSERT_TRUE(RunUntil([&] { return client_->streams_closed == 1 && server_->streams_closed == 1; },
                       Duration(5000)))
      << "client stops " << client_->stops << ", server closed " << server_->streams_closed;
  EXPECT_EQ(1, client_->stops);
  EXPECT_EQ(ErrorCode::kBrokenPipe, client_->stop_error);
  EXPECT_EQ(Code::kBrokenPipe, server_->results[id].local_error.code())
      << server_->results[id].local_error.message();
  EXPECT_LT(client_->results[id].bytes_sent, sent.size());
  EXPECT_FALSE(client_->results[id].local_eof);
  EXPECT_EQ(0, sent.compare(0, reader->got.size(), reader->got));
  // The connection survives a stream's broken pipe.
  EXPECT_FALSE(client_->closed);
  EXPECT_FALSE(server_->closed);
}

}  // namespace
}  // namespace pipegate::uvglue
