// The resume state machine of the sans-I/O core (SPEC §8): two resumable Mux objects,
// a client and a server, wired back to back in memory. A "disconnect" is Detach() on both with
// whatever was in flight dropped; a "reconnect" is Start() (SETTINGS) on both, then each side's
// ResumeState() handed to the other's ResumeWith(), as RESUME and RESUME_OK do. Also the resume
// secrets of include/pipegate/resume.h on TLS sessions wired in memory.

#include "pipegate/resume.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "pipegate/buffer.h"
#include "pipegate/config.h"
#include "pipegate/frame.h"
#include "pipegate/mux.h"
#include "pipegate/status.h"
#include "pipegate/tls.h"

#include "support/pki.h"

namespace pipegate {
namespace {

std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 12345;
  for (char& c : s) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

const uint8_t* Bytes(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

MuxOptions Resumable(bool client, uint32_t stream_window = 64 * 1024,
                     uint32_t session_window = 1 << 20) {
  MuxOptions o;
  o.is_client = client;
  o.resumable = true;
  o.stream_window = stream_window;
  o.session_window = session_window;
  o.max_frame_payload = 16384 + kDataPrefixSize;
  return o;
}

// One side's application: records what the Mux reports, and acts like the local pipe.
class Side : public MuxCallbacks {
 public:
  explicit Side(const MuxOptions& options) : mux(options, this) {}

  Mux mux;
  bool auto_consume = true;  ///< Consumed() as soon as data arrives (a pipe with room).
  bool auto_accept = true;   ///< Server: Accept() every OPEN at once.
  OpenOkPayload ok{1, 3};

  std::map<uint32_t, std::string> received;
  std::map<uint32_t, size_t> unconsumed;
  std::map<uint32_t, int> opens, accepted, fins, delivered, closed, writable;
  std::map<uint32_t, std::vector<ErrorCode>> resets, stops;
  int ready = 0;

  void ConsumeAll(uint32_t id) {
    size_t n = unconsumed[id];
    unconsumed[id] = 0;
    mux.Consumed(id, n);
  }

  void OnMuxReady() override { ++ready; }
  void OnOpenRequest(uint32_t id, const OpenPayload&) override {
    ++opens[id];
    if (auto_accept) mux.Accept(id, ok);
  }
  void OnOpenAccepted(uint32_t id, const OpenOkPayload&) override { ++accepted[id]; }
  void OnStreamData(uint32_t id, const uint8_t* data, size_t len) override {
    received[id].append(reinterpret_cast<const char*>(data), len);
    if (auto_consume) {
      mux.Consumed(id, len);
    } else {
      unconsumed[id] += len;
    }
  }
  void OnStreamFin(uint32_t id) override { ++fins[id]; }
  void OnStreamMessageEnd(uint32_t id) override { message_ends[id].push_back(received[id].size()); }
  std::map<uint32_t, std::vector<size_t>> message_ends;  ///< received[id].size() at each end.
  void OnStreamReset(uint32_t id, ErrorCode error, std::string_view) override {
    resets[id].push_back(error);
  }
  void OnStreamStopped(uint32_t id, ErrorCode error, std::string_view) override {
    stops[id].push_back(error);
  }
  void OnStreamWritable(uint32_t id) override { ++writable[id]; }
  void OnStreamDelivered(uint32_t id) override { ++delivered[id]; }
  void OnStreamClosed(uint32_t id) override { ++closed[id]; }
  void OnListRequest() override {}
  void OnListReply(const std::vector<ListEntry>&, bool) override {}
  void OnGoaway(const GoawayPayload&) override {}
};

// A client and a server Mux; bytes move only when the test says so.
class Pair {
 public:
  explicit Pair(uint32_t stream_window = 64 * 1024, uint32_t session_window = 1 << 20,
                uint32_t seed = 1)
      : client(Resumable(true, stream_window, session_window)),
        server(Resumable(false, stream_window, session_window)),
        rng_(seed) {}

  Side client;
  Side server;

  ::testing::AssertionResult Connect() {
    client.mux.Start();
    server.mux.Start();
    return Pump();
  }

  // Moves bytes both ways, in random chunks, until neither side has anything to send.
  ::testing::AssertionResult Pump() {
    for (int round = 0; round < 100000; ++round) {
      bool moved = false;
      for (auto [from, to] : {std::pair{&client, &server}, std::pair{&server, &client}}) {
        if (from->mux.output().empty()) continue;
        moved = true;
        Status st = Deliver(*from, *to, from->mux.output().size());
        if (!st.ok()) {
          return ::testing::AssertionFailure()
                 << (to == &server ? "server" : "client") << ": " << st.message();
        }
      }
      if (!moved) return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure() << "the pair never went quiet";
  }

  // Feeds the first @p n queued bytes of @p from into @p to (in random chunks); the rest stays
  // queued (and is lost at the next Disconnect()).
  Status Deliver(Side& from, Side& to, size_t n) {
    Buffer& out = from.mux.output();
    n = std::min(n, out.size());
    std::vector<uint8_t> bytes(out.data(), out.data() + n);
    out.Consume(n);
    size_t i = 0;
    while (i < bytes.size()) {
      size_t chunk = std::min<size_t>(bytes.size() - i, 1 + rng_() % 20000);
      Status st = to.mux.Feed(bytes.data() + i, chunk);
      if (!st.ok()) return st;
      i += chunk;
    }
    return Status::Ok();
  }

  // The connection breaks: everything queued on either side is lost.
  void Disconnect() {
    client.mux.Detach();
    server.mux.Detach();
    EXPECT_TRUE(client.mux.detached());
    EXPECT_TRUE(server.mux.detached());
    EXPECT_TRUE(client.mux.output().empty());
    EXPECT_TRUE(server.mux.output().empty());
  }

  // A new connection: SETTINGS both ways, then RESUME (the client's view) and RESUME_OK (the
  // server's view), each reconciled by the other side.
  ::testing::AssertionResult Reconnect() {
    client.mux.Start();
    server.mux.Start();
    if (auto r = Pump(); !r) return r;
    if (!client.mux.ready() || !server.mux.ready()) {
      return ::testing::AssertionFailure() << "SETTINGS did not arrive";
    }
    client_view = client.mux.ResumeState();
    server_view = server.mux.ResumeState();
    const uint32_t client_last = client.mux.last_stream_id();
    const uint32_t server_last = server.mux.last_stream_id();
    Status s = server.mux.ResumeWith(client_view, client_last);
    if (!s.ok()) return ::testing::AssertionFailure() << "server ResumeWith: " << s.message();
    Status c = client.mux.ResumeWith(server_view, server_last);
    if (!c.ok()) return ::testing::AssertionFailure() << "client ResumeWith: " << c.message();
    if (client.mux.detached() || server.mux.detached()) {
      return ::testing::AssertionFailure() << "still detached after ResumeWith";
    }
    return Pump();
  }

  // Opens a stream from the client and lets the server accept it.
  uint32_t Open(const std::string& name = "pipe", uint8_t access = 3) {
    OpenPayload open;
    open.access = access;
    open.name = name;
    Result<uint32_t> id = client.mux.Open(open);
    EXPECT_TRUE(id.has_value());
    return id ? *id : 0;
  }

  // Sends as much of @p data from @p offset as the window allows; returns the new offset.
  static size_t SendSome(Side& side, uint32_t id, const std::string& data, size_t offset,
                         size_t max = SIZE_MAX) {
    size_t n = std::min(max, data.size() - offset);
    return offset + side.mux.SendData(id, Bytes(data) + offset, n);
  }

  std::vector<ResumeStream> client_view;
  std::vector<ResumeStream> server_view;

 private:
  std::mt19937 rng_;
};

const ResumeStream* FindView(const std::vector<ResumeStream>& view, uint32_t id) {
  for (const ResumeStream& r : view) {
    if (r.id == id) return &r;
  }
  return nullptr;
}

// ---- Data in flight ----

TEST(ResumeMux, DataLostInFlightIsReplayedExactlyOnce) {
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open();
  ASSERT_TRUE(p.Pump());
  ASSERT_EQ(p.client.accepted[id], 1);
  const std::string down = Pattern(48 * 1024, 1);
  size_t sent = Pair::SendSome(p.server, id, down, 0);
  ASSERT_EQ(sent, down.size());
  // Only part of it arrives (a cut in the middle of a frame), the rest is lost.
  ASSERT_TRUE(p.Deliver(p.server, p.client, 20000).ok());
  const size_t got_before = p.client.received[id].size();
  EXPECT_GT(got_before, 0u);
  EXPECT_LT(got_before, down.size());
  p.Disconnect();
  ASSERT_TRUE(p.Reconnect());
  EXPECT_EQ(p.client.received[id], down) << "bytes lost or duplicated across the reconnect";
  // CREDIT goes out every quarter window, so at most that much is still held for replay.
  EXPECT_LE(p.server.mux.replay_bytes(), 16u * 1024);
  EXPECT_TRUE(p.client.resets.empty());
  EXPECT_TRUE(p.server.resets.empty());
}

TEST(ResumeMux, ACutAtEveryPointOfAFrameLosesNothing) {
  // One 16 KiB DATA frame, cut after every possible prefix length of the wire bytes (header,
  // offset prefix, and payload). This is where an overstated "received" would lose bytes.
  const std::string down = Pattern(16384, 2);
  for (size_t cut = 0; cut <= kFrameHeaderSize + kDataPrefixSize + down.size(); cut += 97) {
    SCOPED_TRACE("cut after " + std::to_string(cut) + " wire bytes");
    Pair p(64 * 1024, 1 << 20, static_cast<uint32_t>(cut) + 1);
    ASSERT_TRUE(p.Connect());
    const uint32_t id = p.Open();
    ASSERT_TRUE(p.Pump());
    ASSERT_EQ(Pair::SendSome(p.server, id, down, 0), down.size());
    ASSERT_EQ(p.server.mux.output().size(), kFrameHeaderSize + kDataPrefixSize + down.size());
    ASSERT_TRUE(p.Deliver(p.server, p.client, cut).ok());
    p.Disconnect();
    ASSERT_TRUE(p.Reconnect());
    ASSERT_EQ(p.client.received[id].size(), down.size());
    ASSERT_EQ(p.client.received[id], down);
  }
}

TEST(ResumeMux, BothDirectionsAcrossManyDisconnects) {
  Pair p(32 * 1024, 256 * 1024, 3);
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open();
  ASSERT_TRUE(p.Pump());
  const std::string up = Pattern(300 * 1024, 3);
  const std::string down = Pattern(280 * 1024, 4);
  size_t up_sent = 0;
  size_t down_sent = 0;
  std::mt19937 rng(5);
  int reconnects = 0;
  for (int round = 0; round < 2000 && (p.client.received[id].size() < down.size() ||
                                       p.server.received[id].size() < up.size());
       ++round) {
    up_sent = Pair::SendSome(p.client, id, up, up_sent, 1 + rng() % 20000);
    down_sent = Pair::SendSome(p.server, id, down, down_sent, 1 + rng() % 20000);
    if (rng() % 3 == 0) {
      // Part of what is queued gets through, then the connection breaks.
      ASSERT_TRUE(p.Deliver(p.client, p.server, rng() % 30000).ok());
      ASSERT_TRUE(p.Deliver(p.server, p.client, rng() % 30000).ok());
      p.Disconnect();
      // Sending while detached queues nothing: the window is closed.
      EXPECT_EQ(p.client.mux.SendWindow(id), 0u);
      EXPECT_EQ(Pair::SendSome(p.client, id, up, up_sent), up_sent);
      ASSERT_TRUE(p.Reconnect());
      ++reconnects;
    } else {
      ASSERT_TRUE(p.Pump());
    }
  }
  EXPECT_GE(reconnects, 5);
  EXPECT_EQ(p.client.received[id], down);
  EXPECT_EQ(p.server.received[id], up);
  EXPECT_TRUE(p.client.resets.empty());
  EXPECT_TRUE(p.server.resets.empty());
}

// Message mode: every boundary (kFlagMsgEnd) arrives exactly once, at its offset, through cuts
// anywhere, including inside messages that span several frames.
TEST(ResumeMux, MessageBoundariesSurviveManyDisconnects) {
  Pair p(128 * 1024, 1 << 20, 9);
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open();
  ASSERT_TRUE(p.Pump());
  std::mt19937 rng(11);
  std::vector<std::string> messages;
  std::vector<size_t> ends;
  size_t total = 0;
  for (int i = 0; i < 300; ++i) {
    // 1 byte to 64 KiB, log-uniform: most are small, some span four 16 KiB frames.
    const size_t size = std::max<size_t>(1, static_cast<size_t>(std::exp2(rng() % 1700 / 100.0)));
    messages.push_back(Pattern(std::min<size_t>(size, 65536), static_cast<uint32_t>(i)));
    total += messages.back().size();
    ends.push_back(total);
  }
  size_t next = 0;    // The message being sent.
  size_t offset = 0;  // Of it, bytes sent.
  int reconnects = 0;
  for (int round = 0; round < 5000 && p.client.received[id].size() < total; ++round) {
    if (next < messages.size()) {
      const std::string& m = messages[next];
      offset += p.server.mux.SendData(id, Bytes(m) + offset, m.size() - offset, /*msg_end=*/true);
      if (offset == m.size()) {
        ++next;
        offset = 0;
      }
    }
    if (rng() % 4 == 0) {
      ASSERT_TRUE(p.Deliver(p.server, p.client, rng() % 40000).ok());
      ASSERT_TRUE(p.Deliver(p.client, p.server, rng() % 40000).ok());
      p.Disconnect();
      ASSERT_TRUE(p.Reconnect());
      ++reconnects;
    } else {
      ASSERT_TRUE(p.Pump());
    }
  }
  EXPECT_GE(reconnects, 5);
  std::string all;
  for (const std::string& m : messages) all += m;
  EXPECT_EQ(p.client.received[id], all);
  EXPECT_EQ(p.client.message_ends[id], ends) << "a boundary was lost, moved or repeated";
}

TEST(ResumeMux, DuplicatesAreDropped) {
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open();
  ASSERT_TRUE(p.Pump());
  const std::string down = Pattern(10000, 6);
  ASSERT_EQ(Pair::SendSome(p.server, id, down, 0), down.size());
  ASSERT_TRUE(p.Pump());
  ASSERT_EQ(p.client.received[id], down);

  // The same bytes again (a replay from an older offset), and an overlapping frame: only the
  // new tail is delivered.
  Buffer replay;
  AppendData(replay, id, 0, 0, Bytes(down), 4000);
  AppendData(replay, id, 0, 9000, Bytes(down) + 9000, 1000);
  const std::string more = Pattern(500, 7);
  std::string overlap = down.substr(9800) + more;
  AppendData(replay, id, 0, 9800, Bytes(overlap), overlap.size());
  ASSERT_TRUE(p.client.mux.Feed(replay.data(), replay.size()).ok());
  EXPECT_EQ(p.client.received[id], down + more);
  EXPECT_EQ(p.client.mux.stream_errors(), 0u);
}

TEST(ResumeMux, AStaleReceivedOffsetMakesTheSenderResendWhatIsThenDropped) {
  // The client reports less than it has (as a RESUME built before late bytes arrived would):
  // the server resends from there, and the client drops the duplicates.
  Pair p;
  ASSERT_TRUE(p.Connect());
  p.client.auto_consume = false;  // Nothing acknowledged yet, so the server keeps it all.
  const uint32_t id = p.Open();
  ASSERT_TRUE(p.Pump());
  const std::string down = Pattern(30000, 8);
  ASSERT_EQ(Pair::SendSome(p.server, id, down, 0), down.size());
  ASSERT_TRUE(p.Pump());
  ASSERT_EQ(p.client.received[id], down);
  p.Disconnect();
  p.client.mux.Start();
  p.server.mux.Start();
  ASSERT_TRUE(p.Pump());
  std::vector<ResumeStream> view = p.client.mux.ResumeState();
  for (ResumeStream& r : view) {
    if (r.id == id) r.received = 1000;
  }
  ASSERT_TRUE(p.server.mux.ResumeWith(view, p.client.mux.last_stream_id()).ok());
  ASSERT_TRUE(p.client.mux.ResumeWith(p.server.mux.ResumeState(), 0).ok());
  ASSERT_TRUE(p.Pump());
  EXPECT_EQ(p.client.received[id], down) << "the resent bytes were delivered twice";
  p.client.ConsumeAll(id);
  ASSERT_TRUE(p.Pump());
  EXPECT_EQ(p.server.mux.replay_bytes(), 0u);
}

// ---- FIN, CREDIT and OPEN lost ----

TEST(ResumeMux, FinLostIsReplayedAndTheStreamCloses) {
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open("pipe", 1);
  ASSERT_TRUE(p.Pump());
  p.client.mux.SendFin(id);  // A `cat`: nothing to send.
  ASSERT_TRUE(p.Pump());
  const std::string down = Pattern(5000, 9);
  ASSERT_EQ(Pair::SendSome(p.server, id, down, 0), down.size());
  ASSERT_TRUE(p.Pump());
  p.server.mux.SendFin(id);
  ASSERT_FALSE(p.server.mux.output().empty());
  p.Disconnect();  // The FIN is lost.
  EXPECT_EQ(p.client.fins[id], 0);
  ASSERT_TRUE(p.Reconnect());
  EXPECT_EQ(p.client.fins[id], 1);
  EXPECT_EQ(p.client.received[id], down);
  EXPECT_EQ(p.client.closed[id], 1);
  EXPECT_EQ(p.server.delivered[id], 1);
  EXPECT_EQ(p.server.closed[id], 1);
  EXPECT_EQ(p.client.mux.stream_count(), 0u);
  EXPECT_EQ(p.server.mux.stream_count(), 0u);
}

TEST(ResumeMux, FinArrivedButItsAcknowledgementWasLost) {
  // The client delivered everything and the FIN, closed the stream, and its last CREDIT was
  // lost: the server learns from the client's tombstone that all was delivered.
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open("pipe", 1);
  ASSERT_TRUE(p.Pump());
  p.client.mux.SendFin(id);
  ASSERT_TRUE(p.Pump());
  const std::string down = Pattern(7000, 10);
  ASSERT_EQ(Pair::SendSome(p.server, id, down, 0), down.size());
  p.server.mux.SendFin(id);
  ASSERT_TRUE(p.Deliver(p.server, p.client, SIZE_MAX).ok());
  EXPECT_EQ(p.client.closed[id], 1);
  EXPECT_FALSE(p.client.mux.output().empty()) << "the final CREDIT is queued";
  p.Disconnect();
  EXPECT_EQ(p.server.delivered[id], 0);
  ASSERT_TRUE(p.Reconnect());
  const ResumeStream* tomb = FindView(p.client_view, id);
  ASSERT_NE(tomb, nullptr);
  EXPECT_NE(tomb->flags & kResumeClosed, 0);
  EXPECT_NE(tomb->flags & kResumeFinReceived, 0);
  EXPECT_EQ(tomb->error, ErrorCode::kNoError);
  EXPECT_EQ(p.server.delivered[id], 1);
  EXPECT_EQ(p.server.closed[id], 1);
  EXPECT_TRUE(p.server.resets.empty());
  EXPECT_EQ(p.client.fins[id], 1) << "the FIN is delivered once";
  EXPECT_EQ(p.client.received[id], down);
}

TEST(ResumeMux, FinOfAnEmptyDirectionLostWithTheOpenOkIsResent) {
  // `pipegate write`: the gateway accepts and at once ends its own (empty) direction. A cut
  // before OPEN_OK and that FIN arrive must not leave the client waiting for the FIN forever.
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open("pipe", 2);
  ASSERT_TRUE(p.Deliver(p.client, p.server, SIZE_MAX).ok());
  ASSERT_EQ(p.server.opens[id], 1);
  p.server.mux.SendFin(id);  // Nothing outstanding: the Mux reports it delivered at once.
  p.Disconnect();            // OPEN_OK and FIN are lost.
  ASSERT_TRUE(p.Reconnect());
  EXPECT_EQ(p.client.accepted[id], 1);
  EXPECT_EQ(p.client.fins[id], 1) << "the FIN of the empty direction was never resent";
  const std::string up = Pattern(5000, 23);
  ASSERT_EQ(Pair::SendSome(p.client, id, up, 0), up.size());
  p.client.mux.SendFin(id);
  ASSERT_TRUE(p.Pump());
  EXPECT_EQ(p.server.received[id], up);
  EXPECT_EQ(p.client.closed[id], 1) << "the client's stream never ends (`write` would hang)";
  EXPECT_EQ(p.server.closed[id], 1);
}

TEST(ResumeMux, ClientFinOfAnEmptyDirectionLostIsResent) {
  // `pipegate cat`: the client ends its empty direction as soon as the stream is accepted.
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open("pipe", 1);
  ASSERT_TRUE(p.Pump());
  p.client.mux.SendFin(id);
  p.Disconnect();  // The FIN is lost.
  ASSERT_TRUE(p.Reconnect());
  EXPECT_EQ(p.server.fins[id], 1) << "the client's FIN was never resent";
  const std::string down = Pattern(3000, 24);
  ASSERT_EQ(Pair::SendSome(p.server, id, down, 0), down.size());
  p.server.mux.SendFin(id);
  ASSERT_TRUE(p.Pump());
  EXPECT_EQ(p.client.closed[id], 1);
  EXPECT_EQ(p.server.closed[id], 1) << "the gateway's stream never ends";
}

TEST(ResumeMux, LastFinLostAfterThePeerForgotTheStream) {
  // Everything the server sent was acknowledged, it got the client's FIN, then it sends its own
  // FIN with nothing outstanding and forgets the stream at once. The FIN is lost: the client
  // must still see a clean end, not "the stream was lost across the reconnect".
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open("pipe", 2);
  ASSERT_TRUE(p.Pump());
  const std::string up = Pattern(20000, 25);
  ASSERT_EQ(Pair::SendSome(p.client, id, up, 0), up.size());
  p.client.mux.SendFin(id);
  ASSERT_TRUE(p.Pump());
  ASSERT_EQ(p.client.delivered[id], 1);
  p.server.mux.SendFin(id);
  EXPECT_EQ(p.server.closed[id], 1);
  p.Disconnect();  // The server's FIN is lost.
  ASSERT_TRUE(p.Reconnect());
  EXPECT_TRUE(p.client.resets[id].empty())
      << "a stream that ended cleanly was reported lost (error "
      << (p.client.resets[id].empty() ? 0 : static_cast<int>(p.client.resets[id][0])) << ")";
  EXPECT_EQ(p.client.fins[id], 1);
  EXPECT_EQ(p.client.closed[id], 1);
}

TEST(ResumeMux, CreditLostIsReplayedAndUnblocksTheSender) {
  Pair p(16 * 1024);
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open();
  ASSERT_TRUE(p.Pump());
  const std::string down = Pattern(64 * 1024, 11);
  size_t sent = Pair::SendSome(p.server, id, down, 0);
  EXPECT_EQ(sent, 16u * 1024) << "the window bounds what is sent";
  EXPECT_EQ(p.server.mux.SendWindow(id), 0u);
  ASSERT_TRUE(p.Deliver(p.server, p.client, SIZE_MAX).ok());
  EXPECT_FALSE(p.client.mux.output().empty()) << "the client's CREDIT is queued";
  p.Disconnect();  // ... and lost.
  EXPECT_EQ(p.server.mux.Progress(id).first, 0u);
  const int writable_before = p.server.writable[id];
  ASSERT_TRUE(p.Reconnect());
  EXPECT_EQ(p.server.mux.Progress(id).first, sent) << "the acknowledgement came with RESUME";
  EXPECT_GT(p.server.writable[id], writable_before);
  EXPECT_GT(p.server.mux.SendWindow(id), 0u);
  while (sent < down.size()) {
    size_t next = Pair::SendSome(p.server, id, down, sent);
    ASSERT_GT(next, sent);
    sent = next;
    ASSERT_TRUE(p.Pump());
  }
  EXPECT_EQ(p.client.received[id], down);
}

TEST(ResumeMux, OpenLostIsResent) {
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open();
  ASSERT_FALSE(p.client.mux.output().empty());
  p.Disconnect();  // The OPEN never reached the server.
  ASSERT_TRUE(p.Reconnect());
  EXPECT_EQ(FindView(p.server_view, id), nullptr);
  EXPECT_EQ(p.server.opens[id], 1);
  EXPECT_EQ(p.client.accepted[id], 1);
  EXPECT_TRUE(p.client.resets.empty());
  const std::string up = Pattern(20000, 12);
  ASSERT_EQ(Pair::SendSome(p.client, id, up, 0), up.size());
  ASSERT_TRUE(p.Pump());
  EXPECT_EQ(p.server.received[id], up);
}

TEST(ResumeMux, OpenWhileDetachedIsSentAfterTheResume) {
  Pair p;
  ASSERT_TRUE(p.Connect());
  p.Disconnect();
  const uint32_t id = p.Open();
  EXPECT_TRUE(p.client.mux.output().empty());
  ASSERT_TRUE(p.Reconnect());
  EXPECT_EQ(p.server.opens[id], 1);
  EXPECT_EQ(p.client.accepted[id], 1);
}

TEST(ResumeMux, SeveralLostOpensAreResentInIdOrder) {
  // A mount whose local clients connected just before (or while) the connection broke: the
  // gateway requires stream ids to increase, so the OPENs must be resent in id order.
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t first = p.Open();
  ASSERT_TRUE(p.Pump());
  std::vector<uint32_t> lost;
  for (int i = 0; i < 5; ++i) lost.push_back(p.Open());
  p.Disconnect();                                        // Their OPENs are lost.
  for (int i = 0; i < 3; ++i) lost.push_back(p.Open());  // Opened while detached.
  ASSERT_TRUE(p.Reconnect());
  EXPECT_EQ(p.server.opens[first], 1);
  for (uint32_t id : lost) {
    EXPECT_EQ(p.server.opens[id], 1) << "stream " << id;
    EXPECT_EQ(p.client.accepted[id], 1) << "stream " << id;
  }
}

TEST(ResumeMux, EarlyDataCutAnywhereBeforeTheAcceptArrivesWholeAndOnce) {
  // A mount's connection: the OPEN, early data and FIN go out together, and the connection
  // breaks somewhere in them before the gateway accepted (it may have held part of it).
  const std::string up = Pattern(3000, 21);
  for (size_t cut : {size_t{0}, size_t{5}, size_t{40}, size_t{100}, size_t{1500}, SIZE_MAX}) {
    Pair p;
    p.server.auto_accept = false;
    ASSERT_TRUE(p.Connect());
    Result<uint32_t> id = p.client.mux.Open(OpenPayload{3, kOpenFlagEarlyData, 0, "pipe"});
    ASSERT_TRUE(id.has_value());
    ASSERT_EQ(Pair::SendSome(p.client, *id, up, 0), up.size()) << "cut " << cut;
    p.client.mux.SendFin(*id);
    ASSERT_TRUE(p.Deliver(p.client, p.server, cut).ok()) << "cut " << cut;
    p.Disconnect();
    ASSERT_TRUE(p.Reconnect()) << "cut " << cut;
    EXPECT_EQ(p.server.opens[*id], 1) << "cut " << cut;
    EXPECT_TRUE(p.server.received[*id].empty()) << "held until the accept; cut " << cut;
    p.server.mux.Accept(*id, p.server.ok);
    ASSERT_TRUE(p.Pump()) << "cut " << cut;
    EXPECT_EQ(p.server.received[*id], up) << "cut " << cut;
    EXPECT_EQ(p.server.fins[*id], 1) << "cut " << cut;
    EXPECT_EQ(p.client.accepted[*id], 1) << "cut " << cut;
    EXPECT_EQ(p.client.delivered[*id], 1) << "cut " << cut;
    EXPECT_TRUE(p.client.resets.empty() && p.server.resets.empty()) << "cut " << cut;
  }
}

// Opens wait at the gateway (a busy export) with early data held, which fills the connection
// window; their client side ends, with a RESET the gateway gets or one the cut loses. After the
// resume, a fresh stream must have the whole window: the held bytes' credit came back when the
// streams ended and must not be withheld again as carry.
TEST(ResumeMux, EarlyDataOfStreamsThatEndedBeforeTheResumeIsNotCarried) {
  for (bool reset_arrives : {true, false}) {
    SCOPED_TRACE(reset_arrives ? "RESET arrives before the cut" : "RESET lost in the cut");
    Pair p(/*stream_window=*/8192, /*session_window=*/8192);
    p.server.auto_accept = false;
    ASSERT_TRUE(p.Connect());
    const std::string early = Pattern(2048, 7);
    std::vector<uint32_t> waiting;
    for (int i = 0; i < 4; ++i) {
      Result<uint32_t> id = p.client.mux.Open(OpenPayload{3, kOpenFlagEarlyData, 0, "busy"});
      ASSERT_TRUE(id.has_value());
      ASSERT_EQ(Pair::SendSome(p.client, *id, early, 0), early.size());
      ASSERT_TRUE(p.Pump());
      waiting.push_back(*id);
    }
    for (uint32_t id : waiting) {
      if (reset_arrives) {
        p.client.mux.ResetSending(id, ErrorCode::kCancel, "local program went away");
        ASSERT_TRUE(p.Pump());
      } else {
        p.client.mux.Abort(id, ErrorCode::kCancel, "gone");
      }
    }
    p.Disconnect();
    ASSERT_TRUE(p.Reconnect());
    if (!reset_arrives) {
      for (uint32_t id : waiting) EXPECT_FALSE(p.server.mux.HasStream(id)) << "stream " << id;
    }
    EXPECT_EQ(p.server.mux.early_data_capacity(), 0u);
    p.server.auto_accept = true;
    const uint32_t id = p.Open();
    ASSERT_TRUE(p.Pump());
    ASSERT_EQ(p.client.accepted[id], 1);
    const std::string up = Pattern(64 * 1024, 8);
    size_t off = 0;
    for (int round = 0; round < 1000 && off < up.size(); ++round) {
      off = Pair::SendSome(p.client, id, up, off);
      ASSERT_TRUE(p.Pump());
    }
    EXPECT_EQ(p.server.received[id].size(), up.size())
        << "stalled after " << off << " bytes: connection credit withheld";
  }
}

TEST(ResumeMux, OpenOkLostIsResent) {
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open();
  ASSERT_TRUE(p.Deliver(p.client, p.server, SIZE_MAX).ok());
  EXPECT_EQ(p.server.opens[id], 1);
  const std::string down = Pattern(3000, 13);
  ASSERT_EQ(Pair::SendSome(p.server, id, down, 0), down.size());
  p.Disconnect();  // OPEN_OK and the data are lost.
  ASSERT_TRUE(p.Reconnect());
  EXPECT_EQ(p.client.accepted[id], 1);
  EXPECT_EQ(p.server.opens[id], 1) << "the server saw the OPEN once";
  EXPECT_EQ(p.client.received[id], down);
}

// ---- Streams that end around a disconnect ----

TEST(ResumeMux, StreamAbortedOnTheServerWhileDisconnected) {
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open();
  ASSERT_TRUE(p.Pump());
  p.Disconnect();
  // The local end of the export broke while the client was away.
  p.server.mux.Abort(id, ErrorCode::kBrokenPipe, "broken pipe");
  EXPECT_EQ(p.server.closed[id], 1);
  ASSERT_TRUE(p.Reconnect());
  ASSERT_EQ(p.client.resets[id].size(), 1u);
  EXPECT_EQ(p.client.resets[id][0], ErrorCode::kBrokenPipe);
  EXPECT_EQ(p.client.closed[id], 1);
  EXPECT_EQ(p.client.mux.stream_count(), 0u);
}

TEST(ResumeMux, StreamAbortedOnTheClientWhileDisconnected) {
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open();
  ASSERT_TRUE(p.Pump());
  p.Disconnect();
  p.client.mux.Abort(id, ErrorCode::kCancel, "interrupted");
  EXPECT_EQ(p.client.closed[id], 1);
  ASSERT_TRUE(p.Reconnect());
  EXPECT_EQ(p.server.closed[id], 1);
  ASSERT_FALSE(p.server.resets[id].empty());
  EXPECT_EQ(p.server.resets[id][0], ErrorCode::kCancel);
  EXPECT_EQ(p.server.mux.stream_count(), 0u);
}

TEST(ResumeMux, StreamFinishedCleanlyOnBothSidesIsForgotten) {
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open("pipe", 2);
  ASSERT_TRUE(p.Pump());
  const std::string up = Pattern(4000, 14);
  ASSERT_EQ(Pair::SendSome(p.client, id, up, 0), up.size());
  p.client.mux.SendFin(id);
  p.server.mux.SendFin(id);
  ASSERT_TRUE(p.Pump());
  EXPECT_EQ(p.client.closed[id], 1);
  EXPECT_EQ(p.server.closed[id], 1);
  p.Disconnect();
  ASSERT_TRUE(p.Reconnect());
  EXPECT_TRUE(p.client.resets.empty());
  EXPECT_TRUE(p.server.resets.empty());
  EXPECT_EQ(p.server.received[id], up);
  EXPECT_EQ(p.server.fins[id], 1);
}

TEST(ResumeMux, StopLostIsReplayed) {
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open();
  ASSERT_TRUE(p.Pump());
  p.client.mux.StopReading(id, ErrorCode::kBrokenPipe, "stdout closed");
  ASSERT_FALSE(p.client.mux.output().empty());
  p.Disconnect();  // The STOP is lost.
  EXPECT_TRUE(p.server.stops[id].empty());
  ASSERT_TRUE(p.Reconnect());
  ASSERT_EQ(p.server.stops[id].size(), 1u);
  EXPECT_EQ(p.server.stops[id][0], ErrorCode::kBrokenPipe);
  // The server's direction was reset by the STOP; the client's direction still works.
  EXPECT_EQ(p.server.mux.SendWindow(id), 0u);
  const std::string up = Pattern(3000, 15);
  ASSERT_EQ(Pair::SendSome(p.client, id, up, 0), up.size());
  p.client.mux.SendFin(id);
  ASSERT_TRUE(p.Pump());
  EXPECT_EQ(p.server.received[id], up);
  EXPECT_EQ(p.client.closed[id], 1);
  EXPECT_EQ(p.server.closed[id], 1);
}

TEST(ResumeMux, ResetLostIsReplayed) {
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open();
  ASSERT_TRUE(p.Pump());
  const std::string up = Pattern(2000, 16);
  ASSERT_EQ(Pair::SendSome(p.client, id, up, 0), up.size());
  p.client.mux.ResetSending(id, ErrorCode::kIo, "stdin failed");
  p.Disconnect();  // The data and the RESET are lost.
  ASSERT_TRUE(p.Reconnect());
  ASSERT_EQ(p.server.resets[id].size(), 1u);
  EXPECT_EQ(p.server.resets[id][0], ErrorCode::kIo);
  EXPECT_EQ(p.server.fins[id], 0);
  // The server's direction is unaffected.
  const std::string down = Pattern(1000, 17);
  ASSERT_EQ(Pair::SendSome(p.server, id, down, 0), down.size());
  p.server.mux.SendFin(id);
  ASSERT_TRUE(p.Pump());
  EXPECT_EQ(p.client.received[id], down);
  EXPECT_EQ(p.client.closed[id], 1);
  EXPECT_EQ(p.server.closed[id], 1);
}

TEST(ResumeMux, ResetAndStopReplayedTwiceAreHarmless) {
  // A disconnect right after the replay: RESET and STOP are sent again, and ignored.
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open();
  ASSERT_TRUE(p.Pump());
  p.client.mux.StopReading(id, ErrorCode::kBrokenPipe, "gone");
  p.Disconnect();
  ASSERT_TRUE(p.Reconnect());
  p.Disconnect();
  ASSERT_TRUE(p.Reconnect());
  EXPECT_EQ(p.server.stops[id].size(), 1u);
  EXPECT_EQ(p.client.mux.stream_errors(), 0u);
  EXPECT_EQ(p.server.mux.stream_errors(), 0u);
}

TEST(ResumeMux, AStreamThePeerNoLongerHasEndsWithCancel) {
  // The server lost every record of an accepted stream (tombstones are bounded): the client's
  // stream ends with an error instead of waiting forever.
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open();
  ASSERT_TRUE(p.Pump());
  p.Disconnect();
  p.client.mux.Start();
  p.server.mux.Start();
  ASSERT_TRUE(p.Pump());
  ASSERT_TRUE(p.client.mux.ResumeWith({}, id).ok());
  ASSERT_EQ(p.client.resets[id].size(), 1u);
  EXPECT_EQ(p.client.resets[id][0], ErrorCode::kCancel);
  EXPECT_EQ(p.client.closed[id], 1);
}

// ---- Views that cannot be reconciled ----

TEST(ResumeMux, APeerClaimingBytesNeverSentIsAnError) {
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open();
  ASSERT_TRUE(p.Pump());
  const std::string down = Pattern(1000, 18);
  ASSERT_EQ(Pair::SendSome(p.server, id, down, 0), down.size());
  ASSERT_TRUE(p.Pump());
  const uint64_t acked = p.server.mux.Progress(id).first;
  p.Disconnect();
  p.client.mux.Start();
  p.server.mux.Start();
  ASSERT_TRUE(p.Pump());
  std::vector<ResumeStream> lie = p.client.mux.ResumeState();
  ASSERT_NE(FindView(lie, id), nullptr);
  for (ResumeStream& r : lie) {
    if (r.id == id) r.received = down.size() + 1;
  }
  Status st = p.server.mux.ResumeWith(lie, p.client.mux.last_stream_id());
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kProtocol);
  EXPECT_NE(st.message().find("only 1000 were sent"), std::string::npos) << st.message();
  EXPECT_TRUE(p.server.mux.detached()) << "a refused view changes nothing";
  EXPECT_EQ(p.server.mux.Progress(id).first, acked);
}

TEST(ResumeMux, APeerThatLostAcknowledgedBytesIsAnError) {
  Pair p;
  ASSERT_TRUE(p.Connect());
  const uint32_t id = p.Open();
  ASSERT_TRUE(p.Pump());
  const std::string down = Pattern(40000, 19);  // Past a quarter window: CREDIT goes out.
  ASSERT_EQ(Pair::SendSome(p.server, id, down, 0), down.size());
  ASSERT_TRUE(p.Pump());
  ASSERT_GE(p.server.mux.Progress(id).first, 16u * 1024);  // Acknowledged and freed.
  p.Disconnect();
  p.client.mux.Start();
  p.server.mux.Start();
  ASSERT_TRUE(p.Pump());
  std::vector<ResumeStream> lie = p.client.mux.ResumeState();
  for (ResumeStream& r : lie) {
    if (r.id == id) r.received = 100;  // Below what it acknowledged: not held any more.
  }
  Status st = p.server.mux.ResumeWith(lie, p.client.mux.last_stream_id());
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kProtocol);
}

TEST(ResumeMux, ResumeBeforeSettingsIsAnError) {
  Pair p;
  ASSERT_TRUE(p.Connect());
  p.Open();
  ASSERT_TRUE(p.Pump());
  p.Disconnect();
  Status st = p.server.mux.ResumeWith(p.client.mux.ResumeState(), 1);
  EXPECT_FALSE(st.ok());
}

// ---- Memory ----

TEST(ResumeMux, ReplayIsBoundedByTheWindowAndDoesNotGrowWhileDetached) {
  constexpr uint32_t kWindow = 64 * 1024;
  Pair p(kWindow, 1 << 20);
  ASSERT_TRUE(p.Connect());
  p.client.auto_consume = false;  // A local pipe that is full: nothing is acknowledged.
  std::vector<uint32_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(p.Open());
  ASSERT_TRUE(p.Pump());
  const std::string down = Pattern(4 * kWindow, 20);
  for (uint32_t id : ids) {
    EXPECT_EQ(Pair::SendSome(p.server, id, down, 0), kWindow) << "stream " << id;
  }
  EXPECT_EQ(p.server.mux.replay_bytes(), 4u * kWindow);
  p.Disconnect();
  for (int i = 0; i < 100; ++i) {
    for (uint32_t id : ids) EXPECT_EQ(p.server.mux.SendData(id, Bytes(down), 1000), 0u);
  }
  EXPECT_EQ(p.server.mux.replay_bytes(), 4u * kWindow) << "replay grew while disconnected";
  ASSERT_TRUE(p.Reconnect());
  EXPECT_EQ(p.server.mux.replay_bytes(), 4u * kWindow);
  for (uint32_t id : ids) p.client.ConsumeAll(id);
  ASSERT_TRUE(p.Pump());
  EXPECT_EQ(p.server.mux.replay_bytes(), 0u);
  for (uint32_t id : ids) EXPECT_EQ(p.client.received[id], down.substr(0, kWindow));
}

TEST(ResumeMux, ReplayIsBoundedByTheSessionWindow) {
  Pair p(64 * 1024, 128 * 1024);
  ASSERT_TRUE(p.Connect());
  p.client.auto_consume = false;
  std::vector<uint32_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(p.Open());
  ASSERT_TRUE(p.Pump());
  const std::string down = Pattern(64 * 1024, 21);
  for (uint32_t id : ids) Pair::SendSome(p.server, id, down, 0);
  EXPECT_LE(p.server.mux.replay_bytes(), 128u * 1024);
  p.Disconnect();
  ASSERT_TRUE(p.Reconnect());
  for (uint32_t id : ids) Pair::SendSome(p.server, id, down, p.client.received[id].size());
  ASSERT_TRUE(p.Pump());
  // After a reconnect the session window starts afresh, yet replay stays within the stream
  // windows.
  EXPECT_LE(p.server.mux.replay_bytes(), 4u * 64 * 1024);
}

TEST(ResumeMux, SessionCreditAfterAResumeNeverShrinksWhatWasAllowed) {
  // After a resume the sender may use the fresh connection window plus what it replays, and the
  // receiver allows the fresh window plus every stream's remaining window. The receiver's next
  // session CREDIT must not take back what it allowed while the sender may still use it.
  constexpr uint32_t kStreamWindow = 64 * 1024;
  constexpr uint32_t kSessionWindow = 128 * 1024;
  Pair p(kStreamWindow, kSessionWindow);
  ASSERT_TRUE(p.Connect());
  p.server.auto_consume = false;  // The gateway's local ends are slow.
  std::vector<uint32_t> ids;
  for (int i = 0; i < 8; ++i) ids.push_back(p.Open());
  ASSERT_TRUE(p.Pump());
  const std::string up = Pattern(kStreamWindow, 26);
  for (uint32_t id : {ids[0], ids[1]}) {
    ASSERT_EQ(Pair::SendSome(p.client, id, up, 0), kStreamWindow);
  }
  EXPECT_EQ(p.client.mux.SendWindow(ids[2]), 0u) << "the session window is spent";
  p.Disconnect();  // All of it is lost.
  ASSERT_TRUE(p.Reconnect());
  ASSERT_EQ(p.server.received[ids[0]].size(), kStreamWindow);
  ASSERT_EQ(p.server.received[ids[1]].size(), kStreamWindow);
  // A quarter of the session window reaches the local pipe: session CREDIT.
  p.server.unconsumed[ids[0]] -= kSessionWindow / 4;
  p.server.mux.Consumed(ids[0], kSessionWindow / 4);
  ASSERT_TRUE(p.Pump());
  // The client uses the rest of the credit it was given.
  for (size_t i = 2; i < ids.size(); ++i) Pair::SendSome(p.client, ids[i], up, 0);
  ASSERT_TRUE(p.Pump()) << "the client kept to the credit it had, yet the server refused it";
}

TEST(ResumeMux, NonResumableMuxKeepsNothing) {
  MuxOptions c = Resumable(true);
  MuxOptions s = Resumable(false);
  c.resumable = s.resumable = false;
  Side client(c);
  Side server(s);
  client.mux.Start();
  server.mux.Start();
  client.auto_consume = false;
  auto move = [](Side& from, Side& to) {
    Buffer& out = from.mux.output();
    ASSERT_TRUE(to.mux.Feed(out.data(), out.size()).ok());
    out.Clear();
  };
  move(client, server);
  move(server, client);
  OpenPayload open;
  open.access = 3;
  open.name = "x";
  uint32_t id = *client.mux.Open(open);
  move(client, server);
  move(server, client);
  const std::string down = Pattern(30000, 22);
  server.mux.SendData(id, Bytes(down), down.size());
  EXPECT_EQ(server.mux.replay_bytes(), 0u);
}

// ---- Random interleavings ----

class ResumeInterleavings : public ::testing::TestWithParam<uint32_t> {};

TEST_P(ResumeInterleavings, EverythingArrivesOnceWhateverTheOrder) {
  const uint32_t seed = GetParam();
  std::mt19937 rng(seed);
  Pair p(16 * 1024 + rng() % 65536, 64 * 1024 + rng() % (1 << 20), seed);
  ASSERT_TRUE(p.Connect());
  p.client.auto_consume = rng() % 2 == 0;
  p.server.auto_consume = rng() % 2 == 0;
  struct Flow {
    uint32_t id;
    std::string up, down;
    size_t up_sent = 0, down_sent = 0;
    bool up_fin = false, down_fin = false;
  };
  std::vector<Flow> flows;
  for (int i = 0; i < 3; ++i) {
    Flow f;
    f.id = p.Open();
    f.up = Pattern(rng() % (200 * 1024), seed * 10 + static_cast<uint32_t>(i));
    f.down = Pattern(rng() % (200 * 1024), seed * 10 + 5 + static_cast<uint32_t>(i));
    flows.push_back(f);
  }
  int disconnects = 0;
  for (int step = 0; step < 5000; ++step) {
    bool done = true;
    for (Flow& f : flows) {
      if (!f.up_fin || !f.down_fin || p.client.closed[f.id] == 0 || p.server.closed[f.id] == 0) {
        done = false;
      }
    }
    if (done) break;
    switch (rng() % 8) {
      case 0:
      case 1: {  // The client sends (or finishes).
        Flow& f = flows[rng() % flows.size()];
        if (p.client.accepted[f.id] == 0 || f.up_fin) break;
        f.up_sent = Pair::SendSome(p.client, f.id, f.up, f.up_sent, 1 + rng() % 30000);
        if (f.up_sent == f.up.size()) {
          p.client.mux.SendFin(f.id);
          f.up_fin = true;
        }
        break;
      }
      case 2:
      case 3: {  // The server sends (or finishes).
        Flow& f = flows[rng() % flows.size()];
        if (!p.server.mux.HasStream(f.id) || f.down_fin) break;
        f.down_sent = Pair::SendSome(p.server, f.id, f.down, f.down_sent, 1 + rng() % 30000);
        if (f.down_sent == f.down.size()) {
          p.server.mux.SendFin(f.id);
          f.down_fin = true;
        }
        break;
      }
      case 4: {  // The local pipes drain.
        for (Flow& f : flows) {
          if (rng() % 2) p.client.ConsumeAll(f.id);
          if (rng() % 2) p.server.ConsumeAll(f.id);
        }
        break;
      }
      case 5: {  // Some bytes cross.
        ASSERT_TRUE(p.Deliver(p.client, p.server, rng() % 40000).ok());
        ASSERT_TRUE(p.Deliver(p.server, p.client, rng() % 40000).ok());
        break;
      }
      case 6: {  // Everything crosses.
        ASSERT_TRUE(p.Pump());
        break;
      }
      case 7: {  // The connection breaks; things happen while detached; it resumes.
        if (rng() % 2) {
          ASSERT_TRUE(p.Deliver(p.client, p.server, rng() % 40000).ok());
        }
        if (rng() % 2) {
          ASSERT_TRUE(p.Deliver(p.server, p.client, rng() % 40000).ok());
        }
        p.Disconnect();
        ++disconnects;
        if (flows.size() < 6 && rng() % 3 == 0) {  // A new stream opened while detached.
          Flow f;
          f.id = p.Open();
          f.up = Pattern(rng() % (64 * 1024), seed * 10 + static_cast<uint32_t>(flows.size()));
          f.down = Pattern(rng() % (64 * 1024), seed * 20 + static_cast<uint32_t>(flows.size()));
          flows.push_back(f);
        }
        for (Flow& f : flows) {
          if (rng() % 2) p.client.ConsumeAll(f.id);
          if (rng() % 2) p.server.ConsumeAll(f.id);
        }
        ASSERT_TRUE(p.Reconnect()) << "disconnect " << disconnects;
        break;
      }
    }
    if (::testing::Test::HasFatalFailure()) return;
  }
  // Drain what is left.
  p.client.auto_consume = p.server.auto_consume = true;
  for (int i = 0; i < 1000; ++i) {
    bool more = false;
    for (Flow& f : flows) {
      p.client.ConsumeAll(f.id);
      p.server.ConsumeAll(f.id);
      if (p.client.accepted[f.id] && !f.up_fin) {
        f.up_sent = Pair::SendSome(p.client, f.id, f.up, f.up_sent);
        if (f.up_sent == f.up.size()) {
          p.client.mux.SendFin(f.id);
          f.up_fin = true;
        }
      }
      if (p.server.mux.HasStream(f.id) && !f.down_fin) {
        f.down_sent = Pair::SendSome(p.server, f.id, f.down, f.down_sent);
        if (f.down_sent == f.down.size()) {
          p.server.mux.SendFin(f.id);
          f.down_fin = true;
        }
      }
      more = more || !f.up_fin || !f.down_fin;
    }
    ASSERT_TRUE(p.Pump());
    if (!more && p.client.mux.stream_count() == 0 && p.server.mux.stream_count() == 0) break;
  }
  for (Flow& f : flows) {
    SCOPED_TRACE("stream " + std::to_string(f.id));
    EXPECT_EQ(p.server.received[f.id].size(), f.up.size());
    EXPECT_TRUE(p.server.received[f.id] == f.up) << "upstream bytes differ";
    EXPECT_EQ(p.client.received[f.id].size(), f.down.size());
    EXPECT_TRUE(p.client.received[f.id] == f.down) << "downstream bytes differ";
    EXPECT_EQ(p.client.fins[f.id], 1);
    EXPECT_EQ(p.server.fins[f.id], 1);
    EXPECT_EQ(p.client.closed[f.id], 1);
    EXPECT_EQ(p.server.closed[f.id], 1);
    EXPECT_TRUE(p.client.resets[f.id].empty());
    EXPECT_TRUE(p.server.resets[f.id].empty());
  }
  EXPECT_EQ(p.client.mux.stream_errors() + p.server.mux.stream_errors(), 0u);
  EXPECT_EQ(p.client.mux.replay_bytes() + p.server.mux.replay_bytes(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Seeds, ResumeInterleavings, ::testing::Range(1u, 41u));

// ---- The detached-session lifetime in the gateway config ----

TEST(ResumeConfig, ResumeTtlIsSecondsWithADefaultOf300) {
  constexpr std::string_view kHeader =
      "[gateway]\ncert = \"/c/gw.crt\"\nkey = \"/c/gw.key\"\nclient_ca = \"/c/ca.crt\"\n";
  ConfigParseResult plain = ParseGatewayConfig(kHeader, "/etc/pipegate");
  ASSERT_TRUE(plain.config.has_value());
  EXPECT_EQ(plain.config->resume_ttl_s, 300u);
  ConfigParseResult set = ParseGatewayConfig(std::string(kHeader) + "resume_ttl = 5\n", "/etc");
  ASSERT_TRUE(set.config.has_value()) << (set.errors.empty() ? "" : set.errors[0].message);
  EXPECT_EQ(set.config->resume_ttl_s, 5u);
  for (const char* bad : {"resume_ttl = 0\n", "resume_ttl = 86401\n", "resume_ttl = \"5\"\n"}) {
    ConfigParseResult r = ParseGatewayConfig(std::string(kHeader) + bad, "/etc");
    EXPECT_FALSE(r.config.has_value()) << bad;
    ASSERT_EQ(r.errors.size(), 1u) << bad;
    EXPECT_EQ(r.errors[0].line, 5) << bad;
    EXPECT_NE(r.errors[0].message.find("resume_ttl"), std::string::npos) << r.errors[0].message;
  }
}

// ---- Resume secrets (include/pipegate/resume.h) ----

using ContextPtr = std::shared_ptr<const TlsContext>;

// A client and a server TlsSession wired back to back in memory (as in tls_test.cc).
struct TlsPair {
  TlsPair(ContextPtr c, ContextPtr s)
      : client(std::move(c), "localhost"), server(std::move(s), "") {}

  bool Handshake() {
    Buffer plain;
    for (int round = 0; round < 100; ++round) {
      if (!client.Advance(plain).ok() || !server.Advance(plain).ok()) return false;
      bool moved = Move(client, server);
      moved = Move(server, client) || moved;
      if (!moved && client.established() && server.established()) return true;
    }
    return false;
  }
  static bool Move(TlsSession& from, TlsSession& to) {
    Buffer b;
    from.DrainCiphertext(b);
    if (b.empty()) return false;
    to.FeedCiphertext(b.data(), b.size());
    return true;
  }

  TlsSession client;
  TlsSession server;
};

class ResumeSecrets : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(testing::EnsureTestPki());
    TlsServerOptions so;
    so.cert = testing::PkiPath("gateway.crt");
    so.key = testing::PkiPath("gateway.key");
    so.client_ca = testing::PkiPath("ca.crt");
    TlsClientOptions co;
    co.cert = testing::PkiPath("alice.crt");
    co.key = testing::PkiPath("alice.key");
    co.ca = testing::PkiPath("ca.crt");
    Result<ContextPtr> s = TlsContext::NewServer(so);
    Result<ContextPtr> c = TlsContext::NewClient(co);
    ASSERT_TRUE(s.has_value()) << s.error().message();
    ASSERT_TRUE(c.has_value()) << c.error().message();
    server_ctx_ = *s;
    client_ctx_ = *c;
  }
  std::unique_ptr<TlsPair> NewPair() {
    auto p = std::make_unique<TlsPair>(client_ctx_, server_ctx_);
    EXPECT_TRUE(p->Handshake());
    return p;
  }
  static void SessionId(const std::string& id, uint8_t (&out)[kSessionIdSize]) {
    std::memcpy(out, id.data(), kSessionIdSize);
  }

  ContextPtr server_ctx_;
  ContextPtr client_ctx_;
};

TEST_F(ResumeSecrets, SessionIdsAreRandom) {
  const std::string a = NewSessionId();
  const std::string b = NewSessionId();
  EXPECT_EQ(a.size(), kSessionIdSize);
  EXPECT_NE(a, b);
}

TEST_F(ResumeSecrets, BothEndsDeriveTheSameKeyBoundToTheConnectionAndSession) {
  auto first = NewPair();
  auto second = NewPair();
  uint8_t sid[kSessionIdSize];
  SessionId(NewSessionId(), sid);
  uint8_t other_sid[kSessionIdSize];
  SessionId(NewSessionId(), other_sid);
  const std::string client_key = DeriveResumeKey(first->client, sid);
  const std::string server_key = DeriveResumeKey(first->server, sid);
  ASSERT_EQ(client_key.size(), 32u);
  EXPECT_EQ(client_key, server_key);
  EXPECT_NE(DeriveResumeKey(first->server, other_sid), server_key);
  EXPECT_NE(DeriveResumeKey(second->server, sid), server_key) << "keys must differ per connection";
}

TEST_F(ResumeSecrets, ProofVerifiesOnItsOwnConnectionOnly) {
  // The session was made on `original`; the client resumes over `fresh`; an attacker replays
  // the captured RESUME over `replay` (a connection of its own, same client key even).
  auto original = NewPair();
  auto fresh = NewPair();
  auto replay = NewPair();
  uint8_t sid[kSessionIdSize];
  SessionId(NewSessionId(), sid);
  const std::string client_key = DeriveResumeKey(original->client, sid);
  const std::string server_key = DeriveResumeKey(original->server, sid);

  uint8_t proof[kResumeProofSize];
  ASSERT_TRUE(ComputeResumeProof(client_key, fresh->client, proof));
  EXPECT_TRUE(VerifyResumeProof(server_key, fresh->server, proof));
  EXPECT_FALSE(VerifyResumeProof(server_key, replay->server, proof))
      << "a RESUME replayed on another connection was accepted";
  EXPECT_FALSE(VerifyResumeProof(server_key, original->server, proof));

  uint8_t tampered[kResumeProofSize];
  for (size_t i = 0; i < kResumeProofSize; ++i) {
    std::memcpy(tampered, proof, kResumeProofSize);
    tampered[i] ^= 0x01;
    EXPECT_FALSE(VerifyResumeProof(server_key, fresh->server, tampered)) << "byte " << i;
  }
  // A wrong key (another session's) fails, and an empty one never proves anything.
  uint8_t other_sid[kSessionIdSize];
  SessionId(NewSessionId(), other_sid);
  EXPECT_FALSE(
      VerifyResumeProof(DeriveResumeKey(original->server, other_sid), fresh->server, proof));
  uint8_t empty_proof[kResumeProofSize];
  EXPECT_FALSE(ComputeResumeProof("", fresh->client, empty_proof));
  EXPECT_FALSE(VerifyResumeProof("", fresh->server, proof));
}

TEST_F(ResumeSecrets, TheRatchetedKeyRetiresTheOldOne) {
  auto original = NewPair();
  auto fresh = NewPair();
  auto next = NewPair();
  uint8_t sid[kSessionIdSize];
  SessionId(NewSessionId(), sid);
  const std::string k0 = DeriveResumeKey(original->server, sid);
  // After resuming over `fresh`, both sides move to K1 from the fresh connection.
  const std::string k1_client = DeriveResumeKey(fresh->client, sid);
  const std::string k1_server = DeriveResumeKey(fresh->server, sid);
  ASSERT_EQ(k1_client, k1_server);
  EXPECT_NE(k0, k1_server);
  uint8_t stale[kResumeProofSize];
  ASSERT_TRUE(ComputeResumeProof(DeriveResumeKey(original->client, sid), next->client, stale));
  EXPECT_FALSE(VerifyResumeProof(k1_server, next->server, stale)) << "K0 still resumes";
  uint8_t good[kResumeProofSize];
  ASSERT_TRUE(ComputeResumeProof(k1_client, next->client, good));
  EXPECT_TRUE(VerifyResumeProof(k1_server, next->server, good));
}

TEST_F(ResumeSecrets, NothingIsDerivedBeforeTheHandshake) {
  TlsPair p(client_ctx_, server_ctx_);
  uint8_t sid[kSessionIdSize] = {};
  EXPECT_TRUE(DeriveResumeKey(p.server, sid).empty());
  uint8_t proof[kResumeProofSize];
  EXPECT_FALSE(ComputeResumeProof(std::string(32, 'k'), p.client, proof));
  EXPECT_FALSE(VerifyResumeProof(std::string(32, 'k'), p.server, proof));
}

}  // namespace
}  // namespace pipegate
