#include "pipegate/mux.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "pipegate/buffer.h"
#include "pipegate/frame.h"
#include "pipegate/status.h"

#include "mocks/mux_callbacks_mock.h"

namespace pipegate {
namespace {

using ::testing::_;
using ::testing::AnyNumber;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::InSequence;
using ::testing::Invoke;
using ::testing::IsEmpty;
using ::testing::StrictMock;

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

// ---- Wire helpers ----

const char* ErrName(ErrorCode e) {
  switch (e) {
    case ErrorCode::kNoError:
      return "none";
    case ErrorCode::kProtocol:
      return "protocol";
    case ErrorCode::kAccessDenied:
      return "denied";
    case ErrorCode::kNotFound:
      return "not_found";
    case ErrorCode::kBusy:
      return "busy";
    case ErrorCode::kNoReader:
      return "no_reader";
    case ErrorCode::kBrokenPipe:
      return "broken_pipe";
    case ErrorCode::kInternal:
      return "internal";
    case ErrorCode::kFlowControl:
      return "flow";
    case ErrorCode::kLimit:
      return "limit";
    case ErrorCode::kCancel:
      return "cancel";
    case ErrorCode::kIo:
      return "io";
    case ErrorCode::kShutdown:
      return "shutdown";
    case ErrorCode::kFrameSize:
      return "frame_size";
    case ErrorCode::kResumeRejected:
      return "resume_rejected";
  }
  return "?";
}

struct WireFrame {
  FrameHeader h;
  std::vector<uint8_t> payload;
};

// Splits encoded frames; a malformed or truncated one fails the test.
std::vector<WireFrame> ParseFrames(const uint8_t* p, size_t n) {
  std::vector<WireFrame> out;
  size_t i = 0;
  while (i < n) {
    if (n - i < kFrameHeaderSize) {
      ADD_FAILURE() << "truncated frame header";
      break;
    }
    Result<FrameHeader> h = DecodeFrameHeader(p + i, kMaxFramePayloadLimit);
    if (!h) {
      ADD_FAILURE() << h.error().message();
      break;
    }
    if (n - i - kFrameHeaderSize < h->length) {
      ADD_FAILURE() << "truncated frame payload";
      break;
    }
    const uint8_t* body = p + i + kFrameHeaderSize;
    out.push_back(WireFrame{*h, std::vector<uint8_t>(body, body + h->length)});
    i += kFrameHeaderSize + h->length;
  }
  return out;
}

// One line per frame, e.g. `DATA 1 @0 +5 FIN` or `RESET 1 flow @0 "why"`.
std::string Describe(const WireFrame& f) {
  const uint8_t* p = f.payload.data();
  size_t n = f.payload.size();
  std::string id = std::to_string(f.h.stream_id);
  switch (f.h.type) {
    case FrameType::kData: {
      std::string s = "DATA " + id + " @" + std::to_string(GetU64(p)) + " +" +
                      std::to_string(n - kDataPrefixSize);
      if (f.h.flags & kFlagFin) s += " FIN";
      return s;
    }
    case FrameType::kCredit: {
      Result<CreditPayload> c = DecodeCredit(p, n);
      if (!c) return "bad CREDIT";
      return "CREDIT " + id + " " + std::to_string(c->delivered) + "/" + std::to_string(c->limit);
    }
    case FrameType::kOpen: {
      Result<OpenPayload> o = DecodeOpen(p, n);
      return o ? "OPEN " + id + " " + o->name : "bad OPEN";
    }
    case FrameType::kOpenOk:
      return "OPEN_OK " + id;
    case FrameType::kReset: {
      Result<ResetPayload> r = DecodeReset(p, n);
      if (!r) return "bad RESET";
      return "RESET " + id + " " + ErrName(r->error) + " @" + std::to_string(r->final_offset) +
             " \"" + r->reason + "\"";
    }
    case FrameType::kStop: {
      Result<StopPayload> s = DecodeStop(p, n);
      if (!s) return "bad STOP";
      return "STOP " + id + " " + ErrName(s->error) + " \"" + s->reason + "\"";
    }
    case FrameType::kPing: {
      Result<uint64_t> v = DecodePing(p, n);
      if (!v) return "bad PING";
      return std::string((f.h.flags & kFlagAck) ? "PING ACK " : "PING ") + std::to_string(*v);
    }
    case FrameType::kSettings: {
      Result<std::vector<Setting>> s = DecodeSettings(p, n);
      if (!s) return "bad SETTINGS";
      std::string out = "SETTINGS";
      for (const Setting& e : *s) {
        out += " " + std::to_string(static_cast<int>(e.id)) + "=" + std::to_string(e.value);
      }
      return out;
    }
    case FrameType::kGoaway: {
      Result<GoawayPayload> g = DecodeGoaway(p, n);
      if (!g) return "bad GOAWAY";
      return "GOAWAY last=" + std::to_string(g->last_stream_id) + " " + ErrName(g->error) + " \"" +
             g->reason + "\"";
    }
    case FrameType::kResume:
      return "RESUME";
    case FrameType::kSession:
      return "SESSION";
    case FrameType::kResumeOk:
      return "RESUME_OK";
    case FrameType::kExit: {
      Result<ExitPayload> e = DecodeExit(p, n);
      if (!e) return "bad EXIT";
      return "EXIT " + id + " " + std::to_string(static_cast<int>(e->how)) + " " +
             std::to_string(e->code);
    }
    case FrameType::kList:
      return "LIST";
    case FrameType::kListReply: {
      Result<std::vector<ListEntry>> e = DecodeListReply(p, n);
      if (!e) return "bad LIST_REPLY";
      std::string s = "LIST_REPLY " + std::to_string(e->size());
      if (f.h.flags & kFlagMore) s += " MORE";
      return s;
    }
  }
  return "?";
}

std::vector<std::string> Describe(const Buffer& b) {
  std::vector<std::string> out;
  for (const WireFrame& f : ParseFrames(b.data(), b.size())) out.push_back(Describe(f));
  return out;
}

// Describes and drops what @p mux has queued.
std::vector<std::string> Sent(Mux& mux) {
  std::vector<std::string> out = Describe(mux.output());
  mux.output().Clear();
  return out;
}

std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (char& c : s) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

const uint8_t* U8(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

// Frames written by hand, as a misbehaving or hand-driven peer would send them.
class Wire {
 public:
  Wire& Settings(const std::vector<Setting>& s = {}) {
    AppendSettings(b_, s);
    return *this;
  }
  Wire& Open(uint32_t id, const std::string& name = "logs") {
    AppendOpen(b_, id, OpenPayload{3, 0, 0, name});
    return *this;
  }
  Wire& Open(uint32_t id, const OpenPayload& open) {
    AppendOpen(b_, id, open);
    return *this;
  }
  Wire& OpenOk(uint32_t id) {
    AppendOpenOk(b_, id, OpenOkPayload{1, 3});
    return *this;
  }
  Wire& Data(uint32_t id, uint64_t offset, const std::string& bytes, bool fin = false) {
    AppendData(b_, id, fin ? kFlagFin : 0, offset, U8(bytes), bytes.size());
    return *this;
  }
  Wire& Zeros(uint32_t id, uint64_t offset, size_t n, bool fin = false) {
    return Data(id, offset, std::string(n, '\0'), fin);
  }
  Wire& Credit(uint32_t id, uint64_t delivered, uint64_t limit) {
    AppendCredit(b_, id, CreditPayload{delivered, limit});
    return *this;
  }
  Wire& Reset(uint32_t id, ErrorCode e, const std::string& reason = "") {
    AppendReset(b_, id, ResetPayload{e, 0, reason});
    return *this;
  }
  Wire& Stop(uint32_t id, ErrorCode e, const std::string& reason = "") {
    AppendStop(b_, id, StopPayload{e, reason});
    return *this;
  }
  Wire& Ping(uint64_t v, bool ack = false) {
    AppendPing(b_, ack ? kFlagAck : 0, v);
    return *this;
  }
  Wire& Goaway(uint32_t last, ErrorCode e, const std::string& reason) {
    AppendGoaway(b_, GoawayPayload{last, e, reason});
    return *this;
  }
  Wire& List() {
    AppendList(b_);
    return *this;
  }
  Wire& ListReply(const std::vector<ListEntry>& entries, bool more = false) {
    AppendListReply(b_, more ? kFlagMore : 0, entries);
    return *this;
  }
  // A frame with any header and payload, valid or not.
  Wire& Raw(uint8_t type, uint8_t flags, uint32_t stream, const std::vector<uint8_t>& payload) {
    uint8_t* p = b_.Prepare(kFrameHeaderSize + payload.size());
    p[0] = type;
    p[1] = flags;
    p[2] = p[3] = 0;
    PutU32(p + 4, stream);
    PutU32(p + 8, static_cast<uint32_t>(payload.size()));
    if (!payload.empty()) std::memcpy(p + kFrameHeaderSize, payload.data(), payload.size());
    b_.Commit(kFrameHeaderSize + payload.size());
    return *this;
  }

  Buffer& buffer() { return b_; }

 private:
  Buffer b_;
};

MuxOptions Options(bool client, uint32_t stream_window = 1u << 20,
                   uint32_t session_window = 16u << 20, uint32_t max_streams = 256,
                   uint32_t max_frame = 65536 + kDataPrefixSize) {
  MuxOptions o;
  o.is_client = client;
  o.stream_window = stream_window;
  o.session_window = session_window;
  o.max_streams = max_streams;
  o.max_frame_payload = max_frame;
  return o;
}

// ---- A single Mux driven by hand-written frames, with a StrictMock ----

struct Endpoint {
  explicit Endpoint(const MuxOptions& o) : mux(o, &cb) {
    mux.Start();
    mux.output().Clear();
  }
  // Feeds everything in @p w (in chunks of @p chunk bytes, 0 = at once) and empties it.
  Status Feed(Wire& w, size_t chunk = 0) {
    Buffer& b = w.buffer();
    size_t i = 0;
    Status st;
    while (i < b.size() && st.ok()) {
      size_t n = chunk == 0 ? b.size() - i : std::min(chunk, b.size() - i);
      st = mux.Feed(b.data() + i, n);
      i += n;
    }
    b.Clear();
    return st;
  }
  Status Feed(Wire&& w, size_t chunk = 0) { return Feed(w, chunk); }
  // Peer SETTINGS: stream window 1000, session window 100000.
  void Handshake(const std::vector<Setting>& settings = {{SettingId::kStreamWindow, 1000},
                                                         {SettingId::kSessionWindow, 100000}}) {
    EXPECT_CALL(cb, OnMuxReady());
    ASSERT_TRUE(Feed(Wire().Settings(settings)).ok());
    ASSERT_TRUE(mux.ready());
    ::testing::Mock::VerifyAndClearExpectations(&cb);
  }
  // Server: the peer opens @p id and we accept it.
  void OpenAndAccept(uint32_t id) {
    EXPECT_CALL(cb, OnOpenRequest(id, _));
    ASSERT_TRUE(Feed(Wire().Open(id)).ok());
    mux.Accept(id, OpenOkPayload{1, 3});
    EXPECT_THAT(Sent(mux), ElementsAre("OPEN_OK " + std::to_string(id)));
    ::testing::Mock::VerifyAndClearExpectations(&cb);
  }
  // Collects OnStreamData bytes of every stream into received[id].
  void CollectData() {
    EXPECT_CALL(cb, OnStreamData(_, _, _))
        .WillRepeatedly(Invoke([this](uint32_t id, const uint8_t* p, size_t n) {
          received[id].append(reinterpret_cast<const char*>(p), n);
        }));
  }

  StrictMock<MockMuxCallbacks> cb;
  Mux mux;
  std::map<uint32_t, std::string> received;
};

std::unique_ptr<Endpoint> Server(uint32_t stream_window = 1000, uint32_t session_window = 100000,
                                 uint32_t max_streams = 4) {
  return std::make_unique<Endpoint>(Options(false, stream_window, session_window, max_streams));
}

void ExpectConnectionError(const Status& st, const std::string& what) {
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kProtocol);
  EXPECT_THAT(st.message(), HasSubstr(what));
}

// ---- The streaming decoder ----

TEST(MuxDecoder, SendsItsSettingsFirst) {
  StrictMock<MockMuxCallbacks> cb;
  Mux mux(Options(true, 4096, 65536, 7, 16392), &cb);
  EXPECT_TRUE(mux.output().empty());
  mux.Start();
  EXPECT_THAT(Sent(mux), ElementsAre("SETTINGS 1=16392 2=4096 3=65536 4=7"));
  EXPECT_FALSE(mux.ready());
}

TEST(MuxDecoder, WaitsForAWholeHeaderAndPayload) {
  std::unique_ptr<Endpoint> e(Server());
  Wire w;
  w.Settings({{SettingId::kStreamWindow, 1}});
  ASSERT_EQ(w.buffer().size(), kFrameHeaderSize + 6);
  const uint8_t* p = w.buffer().data();
  // A short header, then a header without its payload: nothing happens yet.
  ASSERT_TRUE(e->mux.Feed(p, 11).ok());
  ASSERT_TRUE(e->mux.Feed(p + 11, 1).ok());
  ASSERT_TRUE(e->mux.Feed(p + 12, 5).ok());
  EXPECT_FALSE(e->mux.ready());
  EXPECT_CALL(e->cb, OnMuxReady());
  ASSERT_TRUE(e->mux.Feed(p + 17, 1).ok());
  EXPECT_TRUE(e->mux.ready());
  // An empty Feed is harmless.
  EXPECT_TRUE(e->mux.Feed(p, 0).ok());
}

TEST(MuxDecoder, SameEventsWhateverTheChunking) {
  for (size_t chunk : {size_t{0}, size_t{1}, size_t{2}, size_t{7}, size_t{13}, size_t{4096}}) {
    SCOPED_TRACE(chunk);
    std::unique_ptr<Endpoint> e(Server());
    EXPECT_CALL(e->cb, OnStreamData(1, _, _))
        .WillRepeatedly(Invoke([&](uint32_t id, const uint8_t* p, size_t n) {
          e->received[id].append(reinterpret_cast<const char*>(p), n);
          e->mux.Consumed(id, n);
        }));
    InSequence seq;
    EXPECT_CALL(e->cb, OnMuxReady());
    EXPECT_CALL(e->cb, OnOpenRequest(1, Field(&OpenPayload::name, "pipe-one")))
        .WillOnce(Invoke([&](uint32_t id, const OpenPayload&) {
          e->mux.Accept(id, OpenOkPayload{1, 3});
        }));
    EXPECT_CALL(e->cb, OnStreamFin(1));
    EXPECT_CALL(e->cb, OnListRequest());
    Wire w;
    w.Settings().Open(1, "pipe-one").Data(1, 0, "abc").Ping(9).Data(1, 3, "defgh", true).List();
    ASSERT_TRUE(e->Feed(w, chunk).ok());
    EXPECT_EQ(e->received[1], "abcdefgh");
    EXPECT_THAT(Sent(e->mux), ElementsAre("OPEN_OK 1", "PING ACK 9", "CREDIT 1 8/1008"));
  }
}

TEST(MuxDecoder, RejectsEveryFrameBeforeSettings) {
  std::vector<Wire> cases(7);
  cases[0].Ping(1);
  cases[1].Open(1);
  cases[2].Data(1, 0, "x");
  cases[3].List();
  cases[4].Credit(0, 0, 10);
  cases[5].Goaway(0, ErrorCode::kNoError, "");
  cases[6].Raw(0x9, 0, 0, {});
  for (Wire& w : cases) {
    std::unique_ptr<Endpoint> e(Server());
    ExpectConnectionError(e->Feed(w), "the first frame must be SETTINGS");
    EXPECT_FALSE(e->mux.ready());
  }
}

TEST(MuxDecoder, RejectsSettingsTwice) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  ExpectConnectionError(e->Feed(Wire().Settings()), "SETTINGS sent twice");
}

TEST(MuxDecoder, ValidatesSettings) {
  {
    std::unique_ptr<Endpoint> e(Server());
    ExpectConnectionError(e->Feed(Wire().Raw(0x7, 0, 0, std::vector<uint8_t>(7))),
                          "SETTINGS length is not a multiple of 6");
  }
  for (uint32_t bad : {0u, kDefaultMaxFramePayload - 1, kMaxFramePayloadLimit + 1}) {
    std::unique_ptr<Endpoint> e(Server());
    Status st = e->Feed(Wire().Settings({{SettingId::kMaxFramePayload, bad}}));
    ExpectConnectionError(st,
                          "SETTINGS max frame payload " + std::to_string(bad) + " out of range");
    EXPECT_FALSE(e->mux.ready());
  }
  for (uint32_t good : {kDefaultMaxFramePayload, kMaxFramePayloadLimit}) {
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake({{SettingId::kMaxFramePayload, good}});
  }
  // Unknown settings are ignored.
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake({{static_cast<SettingId>(0x77), 1}, {static_cast<SettingId>(0), 0}});
}

TEST(MuxDecoder, ReportsMalformedHeadersAsConnectionErrors) {
  {
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake();
    ExpectConnectionError(e->Feed(Wire().Raw(0xf, 0, 0, {})), "unknown frame type 0xf");
  }
  {
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake();
    // Our max_frame_payload is 65544: one byte more is refused before any payload arrives.
    Wire w;
    w.Zeros(1, 0, 65537);
    Status st = e->mux.Feed(w.buffer().data(), kFrameHeaderSize);
    ExpectConnectionError(st, "DATA frame of 65545 bytes exceeds the maximum of 65544");
  }
  {
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake();
    ExpectConnectionError(e->Feed(Wire().Raw(0x6, 0, 3, std::vector<uint8_t>(8))), "on stream 3");
  }
  {
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake();
    ExpectConnectionError(e->Feed(Wire().Raw(0x6, 0, 0, std::vector<uint8_t>(7))),
                          "PING frame must be 8 bytes");
  }
  {
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake();
    ExpectConnectionError(e->Feed(Wire().Raw(0x2, 0, 1, {3, 0, 0, 0, 0, 0, 9, 'x'})),
                          "OPEN frame length does not match its name");
  }
  {
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake();
    ExpectConnectionError(e->Feed(Wire().Raw(0x1, 0, 0, std::vector<uint8_t>(15))),
                          "CREDIT frame must be 16 bytes");
  }
}

TEST(MuxDecoder, ResumeFramesGoOnlyTheirWay) {
  ResumePayload resume;
  resume.session_id[0] = 0x5a;
  resume.last_id = 9;
  resume.streams.push_back(ResumeStream{1, 10, 4, kResumeAccepted, ErrorCode::kNoError});
  {
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake();
    EXPECT_CALL(e->cb, OnResumeRequest(_)).WillOnce(Invoke([](const ResumePayload& r) {
      EXPECT_EQ(r.session_id[0], 0x5a);
      EXPECT_EQ(r.last_id, 9u);
      ASSERT_EQ(r.streams.size(), 1u);
      EXPECT_EQ(r.streams[0].received, 10u);
      EXPECT_EQ(r.streams[0].delivered, 4u);
    }));
    Wire w;
    AppendResume(w.buffer(), resume);
    ASSERT_TRUE(e->Feed(w).ok());
    // Whatever follows a RESUME belongs to the resumed session, never to this Mux.
    Wire ping;
    ping.Ping(1);
    ExpectConnectionError(e->Feed(ping), "frames after RESUME");
  }
  {
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake();
    Wire session;
    AppendSession(session.buffer(), SessionPayload{});
    ExpectConnectionError(e->Feed(session), "SESSION sent to a gateway");
  }
  {
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake();
    Wire w;
    AppendResumeOk(w.buffer(), ResumeOkPayload{});
    ExpectConnectionError(e->Feed(w), "RESUME_OK sent to a gateway");
  }
  {
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake();
    Wire w;
    AppendResume(w.buffer(), resume);
    w.buffer().data()[11] += 1;  // One byte longer than its entries: a partial entry.
    w.buffer().Append("x", 1);
    ExpectConnectionError(e->Feed(w), "resume stream list has a partial entry");
  }
  {
    Endpoint c(Options(true));
    c.Handshake();
    SessionPayload session;
    session.ttl_ms = 60000;
    EXPECT_CALL(c.cb, OnSession(Field(&SessionPayload::ttl_ms, 60000u)));
    EXPECT_CALL(c.cb, OnResumeOk(Field(&ResumeOkPayload::last_id, 4u)));
    Wire w;
    AppendSession(w.buffer(), session);
    AppendResumeOk(w.buffer(), ResumeOkPayload{4, {}});
    ASSERT_TRUE(c.Feed(w).ok());
    Wire back;
    AppendResume(back.buffer(), resume);
    ExpectConnectionError(c.Feed(back), "RESUME sent to a client");
  }
}

// ---- Opening streams ----

TEST(MuxOpen, RejectsBadOpenIds) {
  {
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake();
    ExpectConnectionError(e->Feed(Wire().Open(2)), "OPEN with bad stream id 2");
  }
  {
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake();
    EXPECT_CALL(e->cb, OnOpenRequest(5, _));
    ASSERT_TRUE(e->Feed(Wire().Open(5)).ok());
    ExpectConnectionError(e->Feed(Wire().Open(3)), "OPEN with bad stream id 3");
  }
  {
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake();
    EXPECT_CALL(e->cb, OnOpenRequest(5, _));
    ASSERT_TRUE(e->Feed(Wire().Open(5)).ok());
    ExpectConnectionError(e->Feed(Wire().Open(5)), "OPEN with bad stream id 5");
  }
  {
    Endpoint c(Options(true));
    c.Handshake();
    ExpectConnectionError(c.Feed(Wire().Open(2)), "a gateway may not open streams");
  }
}

TEST(MuxOpen, PassesTheOpenPayloadThrough) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  OpenPayload seen;
  EXPECT_CALL(e->cb, OnOpenRequest(1, _)).WillOnce(Invoke([&](uint32_t, const OpenPayload& o) {
    seen = o;
  }));
  Wire w;
  AppendOpen(w.buffer(), 1, OpenPayload{2, kOpenFlagLines, 30000, "docker"});
  ASSERT_TRUE(e->Feed(w).ok());
  EXPECT_EQ(seen.access, 2);
  EXPECT_EQ(seen.flags, kOpenFlagLines);
  EXPECT_EQ(seen.wait_ms, 30000u);
  EXPECT_EQ(seen.name, "docker");
  EXPECT_EQ(e->mux.last_peer_stream(), 1u);
  EXPECT_TRUE(e->mux.HasStream(1));
  EXPECT_EQ(e->mux.SendWindow(1), 0u);  // Not accepted yet.
}

TEST(MuxOpen, ClientOpensOddIdsInOrder) {
  Endpoint c(Options(true));
  for (uint32_t want : {1u, 3u, 5u}) {
    Result<uint32_t> id = c.mux.Open(OpenPayload{1, 0, 0, "p"});
    ASSERT_TRUE(id.has_value());
    EXPECT_EQ(*id, want);
  }
  EXPECT_THAT(Sent(c.mux), ElementsAre("OPEN 1 p", "OPEN 3 p", "OPEN 5 p"));
  EXPECT_EQ(c.mux.stream_count(), 3u);
}

TEST(MuxOpen, OnlyClientsOpen) {
  std::unique_ptr<Endpoint> e(Server());
  Result<uint32_t> id = e->mux.Open(OpenPayload{});
  ASSERT_FALSE(id.has_value());
  EXPECT_EQ(id.error().code(), Code::kInternal);
  EXPECT_TRUE(e->mux.output().empty());
}

TEST(MuxOpen, ClientHonoursThePeersStreamLimit) {
  Endpoint c(Options(true));
  c.Handshake({{SettingId::kMaxStreams, 1}});
  ASSERT_TRUE(c.mux.Open(OpenPayload{1, 0, 0, "a"}).has_value());
  Result<uint32_t> second = c.mux.Open(OpenPayload{1, 0, 0, "b"});
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), Code::kLimit);
  EXPECT_EQ(second.error().message(), "too many streams (gateway limit 1)");
  EXPECT_THAT(Sent(c.mux), ElementsAre("OPEN 1 a"));
}

TEST(MuxOpen, ServerRefusesStreamsAboveItsLimit) {
  std::unique_ptr<Endpoint> e(Server(1000, 100000, /*max_streams=*/2));
  e->Handshake();
  EXPECT_CALL(e->cb, OnOpenRequest(1, _));
  EXPECT_CALL(e->cb, OnOpenRequest(3, _));
  ASSERT_TRUE(e->Feed(Wire().Open(1).Open(3).Open(5)).ok());
  EXPECT_THAT(Sent(e->mux), ElementsAre("RESET 5 limit @0 \"too many streams (limit 2)\""));
  EXPECT_EQ(e->mux.stream_errors(), 1u);
  EXPECT_FALSE(e->mux.HasStream(5));
  // Late frames for the refused id are ignored (StrictMock: no callback).
  ASSERT_TRUE(e->Feed(Wire().Data(5, 0, "late").Reset(5, ErrorCode::kCancel)).ok());
  // A slot frees up when a stream closes.
  EXPECT_CALL(e->cb, OnStreamClosed(1));
  e->mux.Reject(1, ErrorCode::kAccessDenied, "no");
  EXPECT_THAT(Sent(e->mux), ElementsAre("RESET 1 denied @0 \"no\""));
  EXPECT_CALL(e->cb, OnOpenRequest(7, _));
  ASSERT_TRUE(e->Feed(Wire().Open(7)).ok());
  EXPECT_THAT(Sent(e->mux), IsEmpty());
}

TEST(MuxOpen, OpenOkIsForClientsOnlyAndCountsOnce) {
  {
    Endpoint c(Options(true));
    c.Handshake();
    ASSERT_EQ(*c.mux.Open(OpenPayload{1, 0, 0, "p"}), 1u);
    EXPECT_CALL(c.cb, OnOpenAccepted(1, _)).WillOnce(Invoke([](uint32_t, const OpenOkPayload& ok) {
      EXPECT_EQ(ok.kind, 1);
      EXPECT_EQ(ok.access, 3);
    }));
    ASSERT_TRUE(c.Feed(Wire().OpenOk(1)).ok());
    EXPECT_EQ(c.mux.SendWindow(1), 1000u);  // The peer's stream window.
    EXPECT_CALL(c.cb, OnStreamWritable(1));
    ASSERT_TRUE(c.Feed(Wire().Credit(1, 0, 5000)).ok());
    // A second OPEN_OK (a replay after a reconnect) is ignored: no second OnOpenAccepted
    // (StrictMock), and the window does not fall back to the initial one.
    ASSERT_TRUE(c.Feed(Wire().OpenOk(1)).ok());
    EXPECT_EQ(c.mux.SendWindow(1), 5000u);
  }
  {
    Endpoint c(Options(true));
    c.Handshake();
    ExpectConnectionError(c.Feed(Wire().OpenOk(3)), "OPEN_OK for unknown stream 3");
  }
  {
    Endpoint c(Options(true));
    c.Handshake();
    ExpectConnectionError(c.Feed(Wire().OpenOk(2)), "OPEN_OK for unknown stream 2");
  }
  {
    Endpoint c(Options(true));
    c.Handshake();
    ASSERT_EQ(*c.mux.Open(OpenPayload{1, 0, 0, "p"}), 1u);
    ExpectConnectionError(c.Feed(Wire().Raw(0x3, 0, 1, {1, 2, 3})),
                          "OPEN_OK frame must be 8 bytes");
  }
  {
    // A client may not answer its own open: the gateway would think it had accepted.
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake();
    EXPECT_CALL(e->cb, OnOpenRequest(1, _));
    ASSERT_TRUE(e->Feed(Wire().Open(1)).ok());
    ExpectConnectionError(e->Feed(Wire().OpenOk(1)), "OPEN_OK sent to a gateway");
  }
}

TEST(MuxOpen, RejectAndAcceptAreAnsweredOnce) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  EXPECT_CALL(e->cb, OnOpenRequest(1, _));
  EXPECT_CALL(e->cb, OnOpenRequest(3, _));
  ASSERT_TRUE(e->Feed(Wire().Open(1).Open(3)).ok());
  e->mux.Accept(1, OpenOkPayload{2, 1});
  e->mux.Accept(1, OpenOkPayload{2, 1});       // Twice: no second OPEN_OK.
  e->mux.Reject(1, ErrorCode::kBusy, "late");  // After Accept: ignored.
  EXPECT_CALL(e->cb, OnStreamClosed(3));
  e->mux.Reject(3, ErrorCode::kNotFound, "no such pipe 'x'");
  e->mux.Accept(3, OpenOkPayload{});  // After Reject: ignored.
  EXPECT_THAT(Sent(e->mux), ElementsAre("OPEN_OK 1", "RESET 3 not_found @0 \"no such pipe 'x'\""));
  EXPECT_TRUE(e->mux.HasStream(1));
  EXPECT_FALSE(e->mux.HasStream(3));
  EXPECT_EQ(e->mux.SendWindow(1), 1000u);
}

TEST(MuxOpen, CallsOnUnknownStreamsAreHarmless) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->mux.Accept(9, OpenOkPayload{});
  e->mux.Reject(9, ErrorCode::kBusy, "");
  e->mux.Consumed(9, 100);
  e->mux.StopReading(9, ErrorCode::kIo, "");
  e->mux.ResetSending(9, ErrorCode::kIo, "");
  e->mux.Abort(9, ErrorCode::kIo, "");
  e->mux.SendFin(9);
  e->mux.CommitData(9, 0, true);
  size_t room = 123;
  EXPECT_EQ(e->mux.BeginData(9, &room), nullptr);
  EXPECT_EQ(room, 0u);
  EXPECT_EQ(e->mux.SendWindow(9), 0u);
  EXPECT_EQ(e->mux.SendData(9, U8("abc"), 3), 0u);
  EXPECT_TRUE(e->mux.output().empty());
}

// ---- Receiving DATA ----

TEST(MuxData, DataBeforeAcceptResetsOnlyThatStream) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  EXPECT_CALL(e->cb, OnOpenRequest(1, _));
  ASSERT_TRUE(e->Feed(Wire().Open(1)).ok());
  {
    InSequence seq;  // The error is reported before the id is forgotten.
    EXPECT_CALL(e->cb,
                OnStreamReset(1, ErrorCode::kFlowControl, "the peer exceeded the stream's window"));
    EXPECT_CALL(e->cb, OnStreamClosed(1));
  }
  ASSERT_TRUE(e->Feed(Wire().Data(1, 0, "x")).ok());
  EXPECT_THAT(Sent(e->mux),
              ElementsAre("STOP 1 flow \"the peer exceeded the stream's window\"",
                          "RESET 1 flow @0 \"the peer exceeded the stream's window\""));
  EXPECT_EQ(e->mux.stream_errors(), 1u);
  EXPECT_FALSE(e->mux.HasStream(1));
  e->mux.Accept(1, OpenOkPayload{});  // Too late: nothing is sent.
  // The connection carries on.
  ASSERT_TRUE(e->Feed(Wire().Ping(5)).ok());
  EXPECT_THAT(Sent(e->mux), ElementsAre("PING ACK 5"));
}

TEST(MuxData, EmptyFinBeforeAcceptWaitsForTheAccept) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  EXPECT_CALL(e->cb, OnOpenRequest(1, _));
  ASSERT_TRUE(e->Feed(Wire().Open(1).Data(1, 0, "", true)).ok());
  // No stream exists for the app yet: the FIN is held (StrictMock: no OnStreamFin now).
  EXPECT_THAT(Sent(e->mux), IsEmpty());
  EXPECT_CALL(e->cb, OnStreamFin(1));
  e->mux.Accept(1, OpenOkPayload{1, 1});
  // The empty direction is delivered: credit confirms it right after the OPEN_OK.
  EXPECT_THAT(Sent(e->mux), ElementsAre("OPEN_OK 1", "CREDIT 1 0/1000"));
  EXPECT_TRUE(e->mux.HasStream(1));
}

TEST(MuxData, DataBeyondTheStreamWindowResetsTheStreamNotTheSession) {
  std::unique_ptr<Endpoint> e(Server(/*stream_window=*/1000));
  e->Handshake();
  e->OpenAndAccept(1);
  e->OpenAndAccept(3);
  e->CollectData();
  // Exactly the window is fine.
  ASSERT_TRUE(e->Feed(Wire().Zeros(1, 0, 600).Zeros(1, 600, 400)).ok());
  EXPECT_EQ(e->received[1].size(), 1000u);
  EXPECT_THAT(Sent(e->mux), IsEmpty());
  {
    InSequence seq;
    EXPECT_CALL(e->cb, OnStreamReset(1, ErrorCode::kFlowControl, _));
    EXPECT_CALL(e->cb, OnStreamClosed(1));
  }
  ASSERT_TRUE(e->Feed(Wire().Zeros(1, 1000, 1)).ok());
  EXPECT_THAT(Sent(e->mux),
              ElementsAre("STOP 1 flow \"the peer exceeded the stream's window\"",
                          "RESET 1 flow @0 \"the peer exceeded the stream's window\""));
  EXPECT_EQ(e->received[1].size(), 1000u);  // The excess byte was not delivered.
  // Stream 3 and the session are fine; so is a later stream.
  ASSERT_TRUE(e->Feed(Wire().Data(3, 0, "still here")).ok());
  EXPECT_EQ(e->received[3], "still here");
  e->OpenAndAccept(5);
  e->CollectData();
  ASSERT_TRUE(e->Feed(Wire().Data(5, 0, "new")).ok());
  EXPECT_EQ(e->received[5], "new");
  EXPECT_EQ(e->mux.stream_errors(), 1u);
}

TEST(MuxData, OneFrameOverTheWindowIsDroppedWhole) {
  std::unique_ptr<Endpoint> e(Server(/*stream_window=*/1000));
  e->Handshake();
  e->OpenAndAccept(1);
  // StrictMock: no OnStreamData at all, though the first 1000 bytes would have fit.
  EXPECT_CALL(e->cb, OnStreamReset(1, ErrorCode::kFlowControl, _));
  EXPECT_CALL(e->cb, OnStreamClosed(1));
  ASSERT_TRUE(e->Feed(Wire().Zeros(1, 0, 1001, true), 3).ok());
}

TEST(MuxData, DataAtTheWrongOffsetResetsTheStream) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->OpenAndAccept(1);
  e->CollectData();
  ASSERT_TRUE(e->Feed(Wire().Data(1, 0, "abc")).ok());
  {
    InSequence seq;
    EXPECT_CALL(e->cb, OnStreamReset(1, ErrorCode::kProtocol, "DATA at offset 5 but 3 expected"));
    EXPECT_CALL(e->cb, OnStreamClosed(1));
  }
  // A gap: bytes 3 and 4 never came.
  ASSERT_TRUE(e->Feed(Wire().Data(1, 5, "f")).ok());
  EXPECT_EQ(e->received[1], "abc");
}

TEST(MuxData, OverlappingDataIsDeliveredOnce) {
  std::unique_ptr<Endpoint> e(Server(/*stream_window=*/1000, /*session_window=*/40));
  e->Handshake();
  e->OpenAndAccept(1);
  e->CollectData();
  // Offsets make a replay idempotent: bytes below what arrived are dropped.
  ASSERT_TRUE(e->Feed(Wire().Data(1, 0, "abc").Data(1, 1, "bcde").Data(1, 0, "ab")).ok());
  EXPECT_EQ(e->received[1], "abcde");
  // Duplicates count as delivered at once: 4 bytes so far, below a quarter (10) of the
  // session window.
  EXPECT_THAT(Sent(e->mux), IsEmpty());
  ASSERT_TRUE(e->Feed(Wire().Data(1, 0, "abcde")).ok());  // 9 now.
  EXPECT_THAT(Sent(e->mux), IsEmpty());
  e->mux.Consumed(1, 1);  // 10.
  EXPECT_THAT(Sent(e->mux), ElementsAre("CREDIT 0 10/50"));
  EXPECT_EQ(e->received[1], "abcde");
}

TEST(MuxData, DataAfterFinResetsTheStream) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->OpenAndAccept(1);
  e->CollectData();
  EXPECT_CALL(e->cb, OnStreamFin(1));
  ASSERT_TRUE(e->Feed(Wire().Data(1, 0, "ab", true)).ok());
  EXPECT_THAT(Sent(e->mux), IsEmpty());  // Not consumed yet: no credit.
  {
    InSequence seq;
    EXPECT_CALL(e->cb, OnStreamReset(1, ErrorCode::kProtocol, "DATA after FIN"));
    EXPECT_CALL(e->cb, OnStreamClosed(1));
  }
  ASSERT_TRUE(e->Feed(Wire().Data(1, 2, "c")).ok());
  // Our direction is reset; no STOP, since the peer's direction had ended.
  EXPECT_THAT(Sent(e->mux), ElementsAre("RESET 1 protocol @0 \"DATA after FIN\""));
  EXPECT_EQ(e->received[1], "ab");
}

TEST(MuxData, DataAfterADeliveredFinResetsTheStream) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->OpenAndAccept(1);
  EXPECT_CALL(e->cb, OnStreamData(1, _, 2))
      .WillOnce(Invoke([&](uint32_t id, const uint8_t*, size_t n) { e->mux.Consumed(id, n); }));
  EXPECT_CALL(e->cb, OnStreamFin(1));
  ASSERT_TRUE(e->Feed(Wire().Data(1, 0, "ab", true)).ok());
  EXPECT_THAT(Sent(e->mux), ElementsAre("CREDIT 1 2/1002"));
  EXPECT_TRUE(e->mux.HasStream(1));  // Our direction is still open.
  {
    InSequence seq;
    EXPECT_CALL(e->cb, OnStreamReset(1, ErrorCode::kProtocol, "DATA after FIN"));
    EXPECT_CALL(e->cb, OnStreamClosed(1));
  }
  ASSERT_TRUE(e->Feed(Wire().Data(1, 2, "c")).ok());
  EXPECT_THAT(Sent(e->mux), ElementsAre("RESET 1 protocol @0 \"DATA after FIN\""));
}

TEST(MuxData, ReplaysUpToADeliveredFinAreIgnored) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->OpenAndAccept(1);
  EXPECT_CALL(e->cb, OnStreamData(1, _, 2))
      .WillOnce(Invoke([&](uint32_t id, const uint8_t*, size_t n) { e->mux.Consumed(id, n); }));
  EXPECT_CALL(e->cb, OnStreamFin(1));
  ASSERT_TRUE(e->Feed(Wire().Data(1, 0, "ab", true)).ok());
  Sent(e->mux);
  // StrictMock: no callback for a replay of bytes or of the FIN itself.
  ASSERT_TRUE(e->Feed(Wire().Data(1, 0, "ab", true).Data(1, 1, "b").Data(1, 2, "", true)).ok());
  EXPECT_THAT(Sent(e->mux), IsEmpty());
  EXPECT_TRUE(e->mux.HasStream(1));
}

TEST(MuxData, DataOnAStreamNeverOpenedIsAConnectionError) {
  {
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake();
    ExpectConnectionError(e->Feed(Wire().Data(5, 0, "x")), "DATA on unopened stream 5");
  }
  {
    Endpoint c(Options(true));
    c.Handshake();
    ExpectConnectionError(c.Feed(Wire().Data(2, 0, "x")), "DATA on unopened stream 2");
  }
}

TEST(MuxData, SessionWindowOverflowIsAConnectionError) {
  std::unique_ptr<Endpoint> e(Server(/*stream_window=*/1u << 20, /*session_window=*/100000));
  e->Handshake();
  e->OpenAndAccept(1);
  e->OpenAndAccept(3);
  e->CollectData();
  ASSERT_TRUE(e->Feed(Wire().Zeros(1, 0, 65536).Zeros(3, 0, 34464)).ok());
  EXPECT_THAT(Sent(e->mux), IsEmpty());
  ExpectConnectionError(e->Feed(Wire().Zeros(3, 34464, 1)),
                        "the peer exceeded the connection's flow-control window");
}

TEST(MuxData, DiscardedDataStillReturnsSessionCredit) {
  std::unique_ptr<Endpoint> e(Server(/*stream_window=*/1000, /*session_window=*/40000));
  e->Handshake();
  e->OpenAndAccept(1);
  EXPECT_CALL(e->cb, OnStreamReset(1, ErrorCode::kFlowControl, _));
  EXPECT_CALL(e->cb, OnStreamClosed(1));
  ASSERT_TRUE(e->Feed(Wire().Zeros(1, 0, 12000)).ok());
  EXPECT_THAT(
      Sent(e->mux),
      ElementsAre("CREDIT 0 12000/52000", "STOP 1 flow \"the peer exceeded the stream's window\"",
                  "RESET 1 flow @0 \"the peer exceeded the stream's window\""));
  // Bytes that were in flight for the closed stream count as delivered too.
  ASSERT_TRUE(e->Feed(Wire().Zeros(1, 12000, 12000)).ok());
  EXPECT_THAT(Sent(e->mux), ElementsAre("CREDIT 0 24000/64000"));
}

TEST(MuxData, AbortWhileAFrameArrivesDropsTheRestAndReturnsItsCredit) {
  std::unique_ptr<Endpoint> e(Server(/*stream_window=*/40000, /*session_window=*/40000));
  e->Handshake();
  e->OpenAndAccept(1);
  size_t delivered = 0;
  EXPECT_CALL(e->cb, OnStreamData(1, _, _))
      .WillOnce(Invoke([&](uint32_t id, const uint8_t*, size_t n) {
        delivered += n;
        e->mux.StopReading(id, ErrorCode::kBrokenPipe, "reader gone");
      }));
  Wire w;
  w.Zeros(1, 0, 12000, true);
  // The frame arrives in pieces; the app stops reading after the first.
  ASSERT_TRUE(e->Feed(w, 5000).ok());
  EXPECT_EQ(delivered, 5000u - kFrameHeaderSize - kDataPrefixSize);
  // No OnStreamFin (StrictMock). All 12000 bytes are credited back to the session: those that
  // had arrived when the app stopped, and the rest of the frame as it arrived.
  EXPECT_THAT(Sent(e->mux),
              ElementsAre("STOP 1 broken_pipe \"reader gone\"", "CREDIT 0 12000/52000"));
  EXPECT_TRUE(e->mux.HasStream(1));  // Our direction is still open.
}

// ---- Credit ----

TEST(MuxCredit, LimitsAreAbsoluteAndNeverMoveBackwards) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake({{SettingId::kStreamWindow, 1000}, {SettingId::kSessionWindow, 1u << 30}});
  e->OpenAndAccept(1);
  EXPECT_EQ(e->mux.SendWindow(1), 1000u);
  EXPECT_CALL(e->cb, OnStreamWritable(1));
  ASSERT_TRUE(e->Feed(Wire().Credit(1, 0, 5000)).ok());
  EXPECT_EQ(e->mux.SendWindow(1), 5000u);
  ::testing::Mock::VerifyAndClearExpectations(&e->cb);
  // Stale and duplicate updates change nothing and wake nobody (StrictMock).
  ASSERT_TRUE(e->Feed(Wire().Credit(1, 0, 3000).Credit(1, 0, 5000).Credit(1, 0, 0)).ok());
  EXPECT_EQ(e->mux.SendWindow(1), 5000u);
  std::string bytes = Pattern(6000, 1);
  EXPECT_EQ(e->mux.SendData(1, U8(bytes), bytes.size()), 5000u);
  EXPECT_EQ(e->mux.SendWindow(1), 0u);
  EXPECT_THAT(Sent(e->mux), ElementsAre("DATA 1 @0 +5000"));
  ASSERT_TRUE(e->Feed(Wire().Credit(1, 5000, 5000).Credit(1, 4000, 4500)).ok());
  EXPECT_EQ(e->mux.SendWindow(1), 0u);
  EXPECT_CALL(e->cb, OnStreamWritable(1));
  ASSERT_TRUE(e->Feed(Wire().Credit(1, 5000, 6000)).ok());
  EXPECT_EQ(e->mux.SendWindow(1), 1000u);
}

TEST(MuxCredit, SessionLimitsAreAbsoluteAndWakeBlockedStreams) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake({{SettingId::kStreamWindow, 1u << 20}, {SettingId::kSessionWindow, 2000}});
  e->OpenAndAccept(1);
  e->OpenAndAccept(3);
  EXPECT_EQ(e->mux.SendWindow(1), 2000u);
  ASSERT_TRUE(e->Feed(Wire().Credit(0, 0, 1500)).ok());  // Stale.
  EXPECT_EQ(e->mux.SendWindow(1), 2000u);
  ASSERT_TRUE(e->Feed(Wire().Credit(0, 0, 4000)).ok());  // Not blocked: nobody is woken.
  EXPECT_EQ(e->mux.SendWindow(3), 4000u);
  std::string bytes = Pattern(5000, 2);
  EXPECT_EQ(e->mux.SendData(1, U8(bytes), 3000), 3000u);
  EXPECT_EQ(e->mux.SendData(3, U8(bytes), 3000), 1000u);
  EXPECT_EQ(e->mux.SendWindow(1), 0u);
  EXPECT_EQ(e->mux.SendWindow(3), 0u);
  EXPECT_THAT(Sent(e->mux), ElementsAre("DATA 1 @0 +3000", "DATA 3 @0 +1000"));
  // Blocked on the session: more session credit wakes both streams.
  EXPECT_CALL(e->cb, OnStreamWritable(1));
  EXPECT_CALL(e->cb, OnStreamWritable(3));
  ASSERT_TRUE(e->Feed(Wire().Credit(0, 4000, 6000)).ok());
  EXPECT_EQ(e->mux.SendWindow(1), 2000u);
  EXPECT_EQ(e->mux.SendWindow(3), 2000u);
}

TEST(MuxCredit, StreamCreditForUnsentBytesResetsTheStream) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->OpenAndAccept(1);
  EXPECT_EQ(e->mux.SendData(1, U8("0123456789"), 10), 10u);
  Sent(e->mux);
  {
    InSequence seq;
    EXPECT_CALL(e->cb,
                OnStreamReset(1, ErrorCode::kProtocol, "CREDIT acknowledges bytes never sent"));
    EXPECT_CALL(e->cb, OnStreamClosed(1));
  }
  ASSERT_TRUE(e->Feed(Wire().Credit(1, 11, 2000)).ok());
  EXPECT_THAT(Sent(e->mux),
              ElementsAre("STOP 1 protocol \"CREDIT acknowledges bytes never sent\"",
                          "RESET 1 protocol @10 \"CREDIT acknowledges bytes never sent\""));
  ASSERT_TRUE(e->Feed(Wire().Ping(1)).ok());  // The session survives.
}

TEST(MuxCredit, SessionCreditForUnsentBytesIsAConnectionError) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->OpenAndAccept(1);
  EXPECT_EQ(e->mux.SendData(1, U8("0123456789"), 10), 10u);
  ASSERT_TRUE(e->Feed(Wire().Credit(0, 10, 100000)).ok());
  ExpectConnectionError(e->Feed(Wire().Credit(0, 11, 100000)),
                        "session CREDIT acknowledges bytes never sent");
}

TEST(MuxCredit, CreditForUnknownStreamsIsAConnectionError) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  ExpectConnectionError(e->Feed(Wire().Credit(1, 0, 10)), "CREDIT for unknown stream 1");
}

TEST(MuxCredit, OffsetsNear2To64DoNotOverflow) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->OpenAndAccept(1);
  // The stream credit grew: one wake-up. The session was not blocked: none for that.
  EXPECT_CALL(e->cb, OnStreamWritable(1));
  ASSERT_TRUE(e->Feed(Wire().Credit(1, 0, kU64Max).Credit(0, 0, kU64Max)).ok());
  EXPECT_EQ(e->mux.SendWindow(1), static_cast<size_t>(kU64Max));
  size_t room = 0;
  ASSERT_NE(e->mux.BeginData(1, &room), nullptr);
  EXPECT_EQ(room, kDefaultMaxFramePayload - kDataPrefixSize);  // The peer's frame limit.
  std::string bytes = Pattern(40000, 3);
  EXPECT_EQ(e->mux.SendData(1, U8(bytes), bytes.size()), 40000u);
  EXPECT_THAT(Sent(e->mux),
              ElementsAre("DATA 1 @0 +16384", "DATA 1 @16384 +16384", "DATA 1 @32768 +7232"));
  EXPECT_EQ(e->mux.SendWindow(1), static_cast<size_t>(kU64Max - 40000));
  // A DATA offset near 2^64 is simply the wrong offset.
  {
    InSequence seq;
    EXPECT_CALL(e->cb,
                OnStreamReset(1, ErrorCode::kProtocol,
                              "DATA at offset " + std::to_string(kU64Max - 3) + " but 0 expected"));
    EXPECT_CALL(e->cb, OnStreamClosed(1));
  }
  ASSERT_TRUE(e->Feed(Wire().Zeros(1, kU64Max - 3, 8)).ok());
  EXPECT_THAT(Sent(e->mux),
              ElementsAre("STOP 1 protocol \"DATA at offset 18446744073709551612 but 0 expected\"",
                          "RESET 1 protocol @40000 \"DATA at offset 18446744073709551612 but 0 "
                          "expected\""));
  // An acknowledgement of 2^64-1 bytes on a new stream is refused, not wrapped.
  e->OpenAndAccept(3);
  EXPECT_CALL(e->cb, OnStreamReset(3, ErrorCode::kProtocol, _));
  EXPECT_CALL(e->cb, OnStreamClosed(3));
  ASSERT_TRUE(e->Feed(Wire().Credit(3, kU64Max, kU64Max)).ok());
}

TEST(MuxCredit, ReceiverGrantsCreditAsTheAppConsumes) {
  std::unique_ptr<Endpoint> e(Server(/*stream_window=*/1000, /*session_window=*/8000));
  e->Handshake();
  e->OpenAndAccept(1);
  e->CollectData();
  ASSERT_TRUE(e->Feed(Wire().Zeros(1, 0, 1000)).ok());
  e->mux.Consumed(1, 249);  // Below a quarter of the window: no update yet.
  EXPECT_THAT(Sent(e->mux), IsEmpty());
  e->mux.Consumed(1, 1);
  EXPECT_THAT(Sent(e->mux), ElementsAre("CREDIT 1 250/1250"));
  e->mux.Consumed(1, 750);
  // The session window's quarter (2000) has not been reached.
  EXPECT_THAT(Sent(e->mux), ElementsAre("CREDIT 1 1000/2000"));
  ASSERT_TRUE(e->Feed(Wire().Zeros(1, 1000, 1000)).ok());
  e->mux.Consumed(1, 1000);
  EXPECT_THAT(Sent(e->mux), ElementsAre("CREDIT 0 2000/10000", "CREDIT 1 2000/3000"));
}

// ---- Sending ----

TEST(MuxSend, SendWindowIsTheSmallerOfStreamAndSessionCredit) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake({{SettingId::kStreamWindow, 700}, {SettingId::kSessionWindow, 1000}});
  e->OpenAndAccept(1);
  e->OpenAndAccept(3);
  EXPECT_EQ(e->mux.SendWindow(1), 700u);
  std::string bytes = Pattern(2000, 4);
  EXPECT_EQ(e->mux.SendData(1, U8(bytes), bytes.size()), 700u);
  EXPECT_EQ(e->mux.SendWindow(1), 0u);
  EXPECT_EQ(e->mux.SendWindow(3), 300u);
  EXPECT_EQ(e->mux.SendData(3, U8(bytes), bytes.size()), 300u);
  EXPECT_EQ(e->mux.SendData(3, U8(bytes), bytes.size()), 0u);
  EXPECT_THAT(Sent(e->mux), ElementsAre("DATA 1 @0 +700", "DATA 3 @0 +300"));
}

TEST(MuxSend, BeginAndCommitWriteInPlace) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->OpenAndAccept(1);
  size_t room = 0;
  uint8_t* p = e->mux.BeginData(1, &room);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(room, 1000u);
  std::memcpy(p, "in place", 8);
  e->mux.CommitData(1, 8, false);
  e->mux.CommitData(1, 0, false);  // Nothing and no FIN: no frame.
  EXPECT_EQ(e->mux.SendWindow(1), 992u);
  Buffer& out = e->mux.output();
  ASSERT_EQ(out.size(), kFrameHeaderSize + kDataPrefixSize + 8);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(out.data()) + 20, 8), "in place");
  EXPECT_THAT(Sent(e->mux), ElementsAre("DATA 1 @0 +8"));
  p = e->mux.BeginData(1, &room);
  ASSERT_NE(p, nullptr);
  std::memcpy(p, "end", 3);
  e->mux.CommitData(1, 3, true);
  EXPECT_THAT(Sent(e->mux), ElementsAre("DATA 1 @8 +3 FIN"));
  EXPECT_EQ(e->mux.SendWindow(1), 0u);
  EXPECT_EQ(e->mux.BeginData(1, &room), nullptr);
  EXPECT_EQ(room, 0u);
  e->mux.SendFin(1);
  e->mux.CommitData(1, 0, true);
  EXPECT_THAT(Sent(e->mux), IsEmpty());
}

TEST(MuxSend, NothingIsSentBeforeAccept) {
  Endpoint c(Options(true));
  c.Handshake();
  ASSERT_EQ(*c.mux.Open(OpenPayload{1, 0, 0, "p"}), 1u);
  Sent(c.mux);
  EXPECT_EQ(c.mux.SendWindow(1), 0u);
  EXPECT_EQ(c.mux.SendData(1, U8("x"), 1), 0u);
  size_t room = 7;
  EXPECT_EQ(c.mux.BeginData(1, &room), nullptr);
  EXPECT_EQ(room, 0u);
  EXPECT_THAT(Sent(c.mux), IsEmpty());
}

#ifndef NDEBUG
TEST(MuxSendDeathTest, CommitBeyondTheWindowIsABug) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->OpenAndAccept(1);
  size_t room = 0;
  ASSERT_NE(e->mux.BeginData(1, &room), nullptr);
  EXPECT_DEATH(e->mux.CommitData(1, room + 1, false), "");
}
#endif

TEST(MuxSend, PeerFrameLimitCapsOurDataFrames) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake({{SettingId::kStreamWindow, 1u << 20},
                {SettingId::kMaxFramePayload, 65536 + kDataPrefixSize}});
  e->OpenAndAccept(1);
  std::string bytes = Pattern(100000, 5);
  EXPECT_EQ(e->mux.SendData(1, U8(bytes), bytes.size()), 100000u);
  EXPECT_THAT(Sent(e->mux), ElementsAre("DATA 1 @0 +65536", "DATA 1 @65536 +34464"));
}

// ---- Reset, stop, half-close ----

TEST(MuxStop, StopResetsOurDirectionAutomatically) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->OpenAndAccept(1);
  std::string bytes = Pattern(300, 6);
  EXPECT_EQ(e->mux.SendData(1, U8(bytes), bytes.size()), 300u);
  Sent(e->mux);
  EXPECT_CALL(e->cb, OnStreamStopped(1, ErrorCode::kBrokenPipe, "gone"));
  ASSERT_TRUE(e->Feed(Wire().Stop(1, ErrorCode::kBrokenPipe, "gone")).ok());
  EXPECT_THAT(Sent(e->mux), ElementsAre("RESET 1 broken_pipe @300 \"stopped by peer\""));
  EXPECT_EQ(e->mux.SendWindow(1), 0u);
  EXPECT_EQ(e->mux.SendData(1, U8(bytes), bytes.size()), 0u);
  e->mux.SendFin(1);
  EXPECT_THAT(Sent(e->mux), IsEmpty());
  // The peer's direction finishes normally and then the stream closes.
  EXPECT_CALL(e->cb, OnStreamFin(1));
  EXPECT_CALL(e->cb, OnStreamClosed(1));
  ASSERT_TRUE(e->Feed(Wire().Data(1, 0, "", true)).ok());
  EXPECT_THAT(Sent(e->mux), ElementsAre("CREDIT 1 0/1000"));
  EXPECT_EQ(e->mux.stream_count(), 0u);
}

TEST(MuxStop, StopAfterFinPreemptsDelivery) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->OpenAndAccept(1);
  EXPECT_EQ(e->mux.SendData(1, U8("abcd"), 4), 4u);
  e->mux.SendFin(1);
  EXPECT_THAT(Sent(e->mux), ElementsAre("DATA 1 @0 +4", "DATA 1 @4 +0 FIN"));
  // No OnStreamDelivered (StrictMock): the peer never took the bytes.
  EXPECT_CALL(e->cb, OnStreamStopped(1, ErrorCode::kNoReader, ""));
  ASSERT_TRUE(e->Feed(Wire().Stop(1, ErrorCode::kNoReader)).ok());
  EXPECT_THAT(Sent(e->mux), ElementsAre("RESET 1 no_reader @4 \"stopped by peer\""));
  ASSERT_TRUE(e->Feed(Wire().Credit(1, 4, 1004)).ok());
}

TEST(MuxStop, StopBeforeAcceptSendsNoReset) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  EXPECT_CALL(e->cb, OnOpenRequest(1, _));
  EXPECT_CALL(e->cb, OnStreamStopped(1, ErrorCode::kCancel, "write only"));
  ASSERT_TRUE(e->Feed(Wire().Open(1).Stop(1, ErrorCode::kCancel, "write only")).ok());
  // A RESET before OPEN_OK would read as a refusal of the open.
  EXPECT_THAT(Sent(e->mux), IsEmpty());
  e->mux.Accept(1, OpenOkPayload{1, 2});
  EXPECT_THAT(Sent(e->mux), ElementsAre("OPEN_OK 1"));
  EXPECT_EQ(e->mux.SendWindow(1), 0u);
  e->CollectData();
  EXPECT_CALL(e->cb, OnStreamFin(1));
  EXPECT_CALL(e->cb, OnStreamClosed(1));
  ASSERT_TRUE(e->Feed(Wire().Data(1, 0, "payload", true)).ok());
  e->mux.Consumed(1, 7);
  EXPECT_THAT(Sent(e->mux), ElementsAre("CREDIT 1 7/1007"));
}

TEST(MuxStop, StopForUnknownStreamIsAConnectionError) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  ExpectConnectionError(e->Feed(Wire().Stop(3, ErrorCode::kIo)), "STOP for unknown stream 3");
  std::unique_ptr<Endpoint> f(Server());
  f->Handshake();
  ExpectConnectionError(f->Feed(Wire().Reset(3, ErrorCode::kIo)), "RESET for unknown stream 3");
}

TEST(MuxReset, ResetAfterAcceptEndsOnlyThePeersDirection) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->OpenAndAccept(1);
  e->CollectData();
  ASSERT_TRUE(e->Feed(Wire().Data(1, 0, "part")).ok());
  EXPECT_CALL(e->cb, OnStreamReset(1, ErrorCode::kIo, "disk full"));
  ASSERT_TRUE(e->Feed(Wire().Reset(1, ErrorCode::kIo, "disk full")).ok());
  // The unconsumed bytes were returned to the session; nothing else is sent.
  EXPECT_THAT(Sent(e->mux), IsEmpty());
  e->mux.Consumed(1, 4);  // Too late; harmless.
  EXPECT_THAT(Sent(e->mux), IsEmpty());
  ASSERT_TRUE(e->Feed(Wire().Reset(1, ErrorCode::kIo, "again")).ok());  // A repeat is ignored.
  EXPECT_EQ(e->mux.SendData(1, U8("reply"), 5), 5u);
  e->mux.SendFin(1);
  EXPECT_THAT(Sent(e->mux), ElementsAre("DATA 1 @0 +5", "DATA 1 @5 +0 FIN"));
  {
    InSequence seq;
    EXPECT_CALL(e->cb, OnStreamDelivered(1));
    EXPECT_CALL(e->cb, OnStreamClosed(1));
  }
  ASSERT_TRUE(e->Feed(Wire().Credit(1, 5, 1005)).ok());
}

TEST(MuxReset, ResetBeforeAcceptLeavesTheOpenToBeAnswered) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  EXPECT_CALL(e->cb, OnOpenRequest(1, _));
  EXPECT_CALL(e->cb, OnStreamReset(1, ErrorCode::kCancel, "nothing to send"));
  ASSERT_TRUE(e->Feed(Wire().Open(1).Reset(1, ErrorCode::kCancel, "nothing to send")).ok());
  EXPECT_TRUE(e->mux.HasStream(1));
  EXPECT_THAT(Sent(e->mux), IsEmpty());
  e->mux.Accept(1, OpenOkPayload{1, 1});
  EXPECT_EQ(e->mux.SendData(1, U8("data"), 4), 4u);
  e->mux.SendFin(1);
  EXPECT_THAT(Sent(e->mux), ElementsAre("OPEN_OK 1", "DATA 1 @0 +4", "DATA 1 @4 +0 FIN"));
  {
    InSequence seq;
    EXPECT_CALL(e->cb, OnStreamDelivered(1));
    EXPECT_CALL(e->cb, OnStreamClosed(1));
  }
  ASSERT_TRUE(e->Feed(Wire().Credit(1, 4, 1004)).ok());
}

TEST(MuxReset, RefusalClosesOurOpenEvenAfterWeStoppedReading) {
  Endpoint c(Options(true));
  c.Handshake();
  ASSERT_EQ(*c.mux.Open(OpenPayload{2, 0, 0, "p"}), 1u);
  c.mux.StopReading(1, ErrorCode::kCancel, "write only");
  EXPECT_THAT(Sent(c.mux), ElementsAre("OPEN 1 p", "STOP 1 cancel \"write only\""));
  {
    InSequence seq;
    EXPECT_CALL(c.cb, OnStreamReset(1, ErrorCode::kAccessDenied, "access denied for 'alice'"));
    EXPECT_CALL(c.cb, OnStreamClosed(1));
  }
  ASSERT_TRUE(c.Feed(Wire().Reset(1, ErrorCode::kAccessDenied, "access denied for 'alice'")).ok());
  EXPECT_EQ(c.mux.stream_count(), 0u);
}

TEST(MuxReset, ReentrantAbortFromTheResetCallbackIsSafe) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->OpenAndAccept(1);
  {
    InSequence seq;
    EXPECT_CALL(e->cb, OnStreamReset(1, ErrorCode::kFlowControl, _))
        .WillOnce(Invoke([&](uint32_t id, ErrorCode, std::string_view) {
          e->mux.Abort(id, ErrorCode::kCancel, "app gives up");
        }));
    EXPECT_CALL(e->cb, OnStreamClosed(1));
  }
  ASSERT_TRUE(e->Feed(Wire().Zeros(1, 0, 1001)).ok());
  // The mux's frames went out before the callback; the app's Abort found nothing left to do.
  EXPECT_THAT(Sent(e->mux),
              ElementsAre("STOP 1 flow \"the peer exceeded the stream's window\"",
                          "RESET 1 flow @0 \"the peer exceeded the stream's window\""));
  EXPECT_EQ(e->mux.stream_count(), 0u);
}

TEST(MuxReset, LocalResetStopAndAbortSendTheirFrames) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->OpenAndAccept(1);
  e->OpenAndAccept(3);
  EXPECT_EQ(e->mux.SendData(1, U8("xyz"), 3), 3u);
  Sent(e->mux);
  e->mux.ResetSending(1, ErrorCode::kIo, "read failed");
  e->mux.ResetSending(1, ErrorCode::kIo, "twice");
  EXPECT_THAT(Sent(e->mux), ElementsAre("RESET 1 io @3 \"read failed\""));
  EXPECT_CALL(e->cb, OnStreamClosed(1));
  e->mux.StopReading(1, ErrorCode::kBrokenPipe, "epipe");
  e->mux.StopReading(1, ErrorCode::kBrokenPipe, "twice");
  EXPECT_THAT(Sent(e->mux), ElementsAre("STOP 1 broken_pipe \"epipe\""));
  EXPECT_CALL(e->cb, OnStreamClosed(3));
  e->mux.Abort(3, ErrorCode::kShutdown, "bye");
  EXPECT_THAT(Sent(e->mux), ElementsAre("STOP 3 shutdown \"bye\"", "RESET 3 shutdown @0 \"bye\""));
  EXPECT_EQ(e->mux.stream_count(), 0u);
}

TEST(MuxClosed, LateFramesForClosedStreamsAreIgnored) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->OpenAndAccept(1);
  EXPECT_CALL(e->cb, OnStreamClosed(1));
  e->mux.Abort(1, ErrorCode::kCancel, "bye");
  Sent(e->mux);
  // StrictMock: none of these may reach the app, and none is a connection error.
  Wire w;
  w.Data(1, 0, "late", true)
      .Credit(1, 0, 99999)
      .Reset(1, ErrorCode::kIo)
      .Stop(1, ErrorCode::kIo)
      .Zeros(1, 4, 100);
  ASSERT_TRUE(e->Feed(w).ok());
  EXPECT_THAT(Sent(e->mux), IsEmpty());
  ASSERT_TRUE(e->Feed(Wire().Ping(77)).ok());
  EXPECT_THAT(Sent(e->mux), ElementsAre("PING ACK 77"));
}

TEST(MuxClosed, LateFramesForClosedClientStreamsAreIgnored) {
  Endpoint c(Options(true));
  c.Handshake();
  ASSERT_EQ(*c.mux.Open(OpenPayload{3, 0, 0, "p"}), 1u);
  EXPECT_CALL(c.cb, OnStreamClosed(1));
  c.mux.Abort(1, ErrorCode::kCancel, "ctrl-c");
  Sent(c.mux);
  Wire w;
  w.OpenOk(1)
      .Data(1, 0, "late")
      .Credit(1, 0, 5)
      .Reset(1, ErrorCode::kNoError)
      .Stop(1, ErrorCode::kNoError);
  ASSERT_TRUE(c.Feed(w).ok());
  EXPECT_THAT(Sent(c.mux), IsEmpty());
  // An id we never used is still an error.
  ExpectConnectionError(c.Feed(Wire().Reset(3, ErrorCode::kIo)), "RESET for unknown stream 3");
}

// ---- Session frames ----

TEST(MuxSession, PingIsAnsweredOnceWithTheSameOpaque) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  ASSERT_TRUE(e->Feed(Wire().Ping(0x1122334455667788ull)).ok());
  EXPECT_THAT(Sent(e->mux), ElementsAre("PING ACK 1234605616436508552"));
  ASSERT_TRUE(e->Feed(Wire().Ping(5, /*ack=*/true)).ok());
  EXPECT_THAT(Sent(e->mux), IsEmpty());
  e->mux.Ping(9);
  e->mux.Ping(10, true);
  EXPECT_THAT(Sent(e->mux), ElementsAre("PING 9", "PING ACK 10"));
}

TEST(MuxSession, GoawayRefusesLaterOpens) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->OpenAndAccept(1);
  e->mux.Goaway(ErrorCode::kShutdown, "maintenance");
  e->mux.Goaway(ErrorCode::kInternal, "twice");
  EXPECT_THAT(Sent(e->mux), ElementsAre("GOAWAY last=1 shutdown \"maintenance\""));
  // StrictMock: no OnOpenRequest.
  ASSERT_TRUE(e->Feed(Wire().Open(3)).ok());
  EXPECT_THAT(Sent(e->mux), ElementsAre("RESET 3 shutdown @0 \"gateway is shutting down\""));
  EXPECT_EQ(e->mux.last_peer_stream(), 3u);
  ASSERT_TRUE(e->Feed(Wire().Data(3, 0, "late")).ok());
  // Stream 1 carries on.
  e->CollectData();
  ASSERT_TRUE(e->Feed(Wire().Data(1, 0, "ok")).ok());
  EXPECT_EQ(e->received[1], "ok");
}

TEST(MuxSession, ClientStopsOpeningAfterGoaway) {
  Endpoint c(Options(true));
  c.Handshake();
  GoawayPayload seen;
  EXPECT_CALL(c.cb, OnGoaway(_)).WillOnce(Invoke([&](const GoawayPayload& g) { seen = g; }));
  ASSERT_TRUE(c.Feed(Wire().Goaway(7, ErrorCode::kShutdown, "restart")).ok());
  EXPECT_EQ(seen.last_stream_id, 7u);
  EXPECT_EQ(seen.error, ErrorCode::kShutdown);
  EXPECT_EQ(seen.reason, "restart");
  EXPECT_TRUE(c.mux.goaway_received());
  Result<uint32_t> id = c.mux.Open(OpenPayload{1, 0, 0, "p"});
  ASSERT_FALSE(id.has_value());
  EXPECT_EQ(id.error().code(), Code::kStreamLost);
  EXPECT_EQ(id.error().message(), "the gateway is going away");
  EXPECT_TRUE(c.mux.output().empty());
  ExpectConnectionError(c.Feed(Wire().Raw(0x8, 0, 0, {0, 0, 0})), "GOAWAY frame too short");
}

TEST(MuxSession, ListGoesOnlyFromClientToServer) {
  {
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake();
    EXPECT_CALL(e->cb, OnListRequest());
    ASSERT_TRUE(e->Feed(Wire().List()).ok());
    ExpectConnectionError(e->Feed(Wire().ListReply({})), "LIST_REPLY sent to a gateway");
  }
  {
    Endpoint c(Options(true));
    c.Handshake();
    EXPECT_CALL(c.cb, OnListReply(ElementsAre(Field(&ListEntry::name, "a")), true));
    ASSERT_TRUE(c.Feed(Wire().ListReply({{"a", 1, 1}}, true)).ok());
    ExpectConnectionError(c.Feed(Wire().Raw(0xb, 0, 0, {5, 'a'})),
                          "LIST_REPLY entry runs past the frame");
  }
  {
    Endpoint c(Options(true));
    c.Handshake();
    ExpectConnectionError(c.Feed(Wire().List()), "LIST sent to a client");
  }
}

TEST(MuxSession, ListReplyIsPagedBelowTheControlLimit) {
  std::unique_ptr<Endpoint> e(Server());
  // 128 entries of 16 + 112 bytes fill a frame exactly.
  std::vector<ListEntry> exact;
  for (int i = 0; i < 129; ++i) exact.push_back({std::string(112, 'a'), 1, 1});
  e->mux.SendListReply(std::vector<ListEntry>(exact.begin(), exact.begin() + 128));
  EXPECT_THAT(Sent(e->mux), ElementsAre("LIST_REPLY 128"));
  e->mux.SendListReply(exact);
  EXPECT_THAT(Sent(e->mux), ElementsAre("LIST_REPLY 128 MORE", "LIST_REPLY 1"));
  e->mux.SendListReply({});
  EXPECT_THAT(Sent(e->mux), ElementsAre("LIST_REPLY 0"));
}

// ---- Early data: DATA behind an OPEN, before OPEN_OK ----

OpenPayload EarlyOpen(const std::string& name = "db") {
  return OpenPayload{3, kOpenFlagEarlyData, 0, name};
}

// A server that grants @p early_data bytes of early data (stream window 1000), after SETTINGS.
std::unique_ptr<Endpoint> EarlyServer(uint32_t early_data, uint32_t session_window = 100000) {
  MuxOptions o = Options(false, 1000, session_window, 4);
  o.early_data = early_data;
  auto e = std::make_unique<Endpoint>(o);
  e->Handshake();
  return e;
}

TEST(MuxEarly, OnlyAGatewayOffersAnEarlyWindow) {
  MuxOptions server = Options(false);
  server.early_data = 4096;
  Endpoint s(server);
  s.mux.Start();
  EXPECT_THAT(Sent(s.mux), ElementsAre("SETTINGS 1=65544 2=1048576 3=16777216 4=256 5=4096"));
  server.early_data = 0;
  Endpoint none(server);
  none.mux.Start();
  EXPECT_THAT(Sent(none.mux), ElementsAre("SETTINGS 1=65544 2=1048576 3=16777216 4=256"));
  Endpoint c(Options(true));
  c.mux.Start();
  EXPECT_THAT(Sent(c.mux), ElementsAre("SETTINGS 1=65544 2=1048576 3=16777216 4=256"));
}

TEST(MuxEarly, AClientSendsEarlyOnlyWhatTheGatewayOffered) {
  {
    Endpoint c(Options(true));
    c.Handshake({{SettingId::kStreamWindow, 1000}, {SettingId::kEarlyData, 100}});
    ASSERT_EQ(*c.mux.Open(EarlyOpen()), 1u);
    EXPECT_EQ(c.mux.SendWindow(1), 100u);
    const std::string bytes(150, 'q');
    EXPECT_EQ(c.mux.SendData(1, U8(bytes), bytes.size()), 100u);
    EXPECT_THAT(Sent(c.mux), ElementsAre("OPEN 1 db", "DATA 1 @0 +100"));
    EXPECT_EQ(c.mux.SendWindow(1), 0u);
    // OPEN_OK opens the stream's whole window, counted from the same offsets.
    EXPECT_CALL(c.cb, OnOpenAccepted(1, _));
    ASSERT_TRUE(c.Feed(Wire().OpenOk(1)).ok());
    EXPECT_EQ(c.mux.SendWindow(1), 900u);
  }
  {
    // An older gateway (no early window): the flag is not sent and nothing goes early.
    Endpoint c(Options(true));
    c.Handshake();
    ASSERT_EQ(*c.mux.Open(EarlyOpen()), 1u);
    EXPECT_EQ(c.mux.SendWindow(1), 0u);
    Buffer& out = c.mux.output();
    Result<FrameHeader> h = DecodeFrameHeader(out.data(), kDefaultMaxFramePayload);
    ASSERT_TRUE(h.has_value());
    Result<OpenPayload> open = DecodeOpen(out.data() + kFrameHeaderSize, h->length);
    ASSERT_TRUE(open.has_value());
    EXPECT_EQ(open->flags & kOpenFlagEarlyData, 0);
  }
}

TEST(MuxEarly, TheGatewayHoldsEarlyDataAndItsFinUntilItAccepts) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  EXPECT_CALL(e->cb, OnOpenRequest(1, _));
  ASSERT_TRUE(
      e->Feed(Wire().Open(1, EarlyOpen()).Data(1, 0, "GET ").Data(1, 4, "key\n", /*fin=*/true))
          .ok());
  EXPECT_THAT(Sent(e->mux), IsEmpty());  // StrictMock: nothing reached the app either.
  {
    InSequence seq;  // OPEN_OK first, then the bytes in order, then the FIN.
    // The local pipe takes the bytes at once, from inside the callback: the FIN is still
    // reported after them, and delivery is confirmed as for any other bytes.
    EXPECT_CALL(e->cb, OnStreamData(1, _, 8))
        .WillOnce(Invoke([&e](uint32_t id, const uint8_t* p, size_t n) {
          EXPECT_EQ(std::string(reinterpret_cast<const char*>(p), n), "GET key\n");
          e->mux.Consumed(id, n);
        }));
    EXPECT_CALL(e->cb, OnStreamFin(1));
  }
  EXPECT_EQ(e->mux.Accept(1, OpenOkPayload{2, 3}), 8u);
  EXPECT_THAT(Sent(e->mux), ElementsAre("OPEN_OK 1", "CREDIT 1 8/1008"));
}

TEST(MuxEarly, MoreThanTheEarlyWindowResetsTheStream) {
  std::unique_ptr<Endpoint> e = EarlyServer(100);
  EXPECT_CALL(e->cb, OnOpenRequest(1, _));
  {
    InSequence seq;
    EXPECT_CALL(e->cb, OnStreamReset(1, ErrorCode::kFlowControl, _));
    EXPECT_CALL(e->cb, OnStreamClosed(1));
  }
  ASSERT_TRUE(e->Feed(Wire().Open(1, EarlyOpen()).Zeros(1, 0, 100).Zeros(1, 100, 1)).ok());
  EXPECT_THAT(Sent(e->mux),
              ElementsAre("STOP 1 flow \"the peer exceeded the stream's window\"",
                          "RESET 1 flow @0 \"the peer exceeded the stream's window\""));
  EXPECT_FALSE(e->mux.HasStream(1));
}

TEST(MuxEarly, AGatewayWithoutAnEarlyWindowTreatsItAsDataBeforeAccept) {
  std::unique_ptr<Endpoint> e = EarlyServer(0);
  EXPECT_CALL(e->cb, OnOpenRequest(1, _));
  EXPECT_CALL(e->cb, OnStreamReset(1, ErrorCode::kFlowControl, _));
  EXPECT_CALL(e->cb, OnStreamClosed(1));
  ASSERT_TRUE(e->Feed(Wire().Open(1, EarlyOpen()).Data(1, 0, "x")).ok());
  EXPECT_FALSE(e->mux.HasStream(1));
}

TEST(MuxEarly, ARefusalDropsHeldBytesAndGivesTheirConnectionCreditBack) {
  // Session window 400: its CREDIT goes out once 100 bytes count as delivered.
  std::unique_ptr<Endpoint> e = EarlyServer(100, /*session_window=*/400);
  EXPECT_CALL(e->cb, OnOpenRequest(1, _));
  ASSERT_TRUE(e->Feed(Wire().Open(1, EarlyOpen()).Zeros(1, 0, 100)).ok());
  EXPECT_THAT(Sent(e->mux), IsEmpty());
  EXPECT_CALL(e->cb, OnStreamClosed(1));
  e->mux.Reject(1, ErrorCode::kNoReader, "nobody listens");
  EXPECT_THAT(Sent(e->mux),
              ElementsAre("RESET 1 no_reader @0 \"nobody listens\"", "CREDIT 0 100/500"));
}

TEST(MuxEarly, AClientResetBeforeTheAcceptDropsWhatWasHeld) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  EXPECT_CALL(e->cb, OnOpenRequest(1, _));
  EXPECT_CALL(e->cb, OnStreamReset(1, ErrorCode::kCancel, _));
  ASSERT_TRUE(e->Feed(Wire().Open(1, EarlyOpen()).Data(1, 0, "abc")).ok());
  EXPECT_GE(e->mux.early_data_capacity(), 3u);
  ASSERT_TRUE(e->Feed(Wire().Reset(1, ErrorCode::kCancel)).ok());
  // The RESET gave the bytes' connection credit back: they are freed with it, not kept until
  // an accept (which a busy export may never give), or a client could refill the window.
  EXPECT_EQ(e->mux.early_data_capacity(), 0u);
  // The open is still answered, and nothing held reaches the app (StrictMock: no data).
  e->mux.Accept(1, OpenOkPayload{2, 3});
  EXPECT_THAT(Sent(e->mux), ElementsAre("OPEN_OK 1"));
}

// Early data is the client's: a CREDIT it sends before OPEN_OK lets the gateway send nothing
// until it has accepted.
TEST(MuxEarly, AGatewaySendsNothingBeforeItsAcceptWhateverTheClientCredits) {
  std::unique_ptr<Endpoint> e = EarlyServer(100);
  EXPECT_CALL(e->cb, OnOpenRequest(1, _));
  ASSERT_TRUE(e->Feed(Wire().Open(1, EarlyOpen()).Credit(1, 0, 1u << 20)).ok());
  EXPECT_EQ(e->mux.SendWindow(1), 0u);
  e->mux.Accept(1, OpenOkPayload{2, 3});
  EXPECT_GT(e->mux.SendWindow(1), 0u);
}

// A client that opens with early data and resets, over and over, while the opens wait: what the
// gateway holds stays within the connection window, however often the window is reused.
TEST(MuxEarly, RepeatedResetsBeforeTheAcceptHoldNothing) {
  MuxOptions o = Options(false, /*stream_window=*/1u << 20, /*session_window=*/256u << 10,
                         /*max_streams=*/64);
  o.early_data = 64u << 10;
  ::testing::NiceMock<MockMuxCallbacks> cb;
  Mux mux(o, &cb);
  mux.Start();
  mux.output().Clear();
  Wire settings;
  settings.Settings();
  ASSERT_TRUE(mux.Feed(settings.buffer().data(), settings.buffer().size()).ok());
  constexpr uint32_t kStreams = 32;  // 32 x 64 KiB: eight times the connection window.
  for (uint32_t id = 1; id < 2 * kStreams; id += 2) {
    Wire f;
    f.Open(id, EarlyOpen()).Zeros(id, 0, 64u << 10).Reset(id, ErrorCode::kCancel);
    ASSERT_TRUE(mux.Feed(f.buffer().data(), f.buffer().size()).ok()) << "stream " << id;
    EXPECT_EQ(mux.early_data_capacity(), 0u) << "stream " << id;
  }
  for (uint32_t id = 1; id < 2 * kStreams; id += 2) mux.Accept(id, OpenOkPayload{2, 3});
  EXPECT_EQ(mux.early_data_capacity(), 0u);
}

// ---- Two Muxes back to back ----

enum class Chunking { kWhole, kOneByte, kRandom };

std::string ChunkingName(const ::testing::TestParamInfo<Chunking>& info) {
  switch (info.param) {
    case Chunking::kWhole:
      return "Whole";
    case Chunking::kOneByte:
      return "OneByte";
    case Chunking::kRandom:
      return "Random";
  }
  return "?";
}

// Records events as strings; data events of a stream are merged while nothing else happens.
class Recorder : public MuxCallbacks {
 public:
  void Attach(Mux* mux) { mux_ = mux; }

  bool auto_consume = true;                  ///< Consumed() as soon as data arrives.
  std::optional<OpenOkPayload> auto_accept;  ///< Server: Accept() every open at once.

  std::vector<std::string> events;
  std::map<uint32_t, std::string> received;
  std::map<uint32_t, size_t> unconsumed;
  std::map<uint32_t, int> writable;
  std::vector<OpenPayload> opens;
  std::vector<ListEntry> listing;

  std::vector<std::string> Take() {
    std::vector<std::string> out;
    out.swap(events);
    return out;
  }
  void ConsumeAll(uint32_t id) { Consume(id, unconsumed[id]); }
  void Consume(uint32_t id, size_t n) {
    ASSERT_LE(n, unconsumed[id]);
    unconsumed[id] -= n;
    mux_->Consumed(id, n);
  }

  void OnMuxReady() override { events.push_back("ready"); }
  void OnOpenRequest(uint32_t id, const OpenPayload& open) override {
    opens.push_back(open);
    events.push_back("open " + std::to_string(id) + " " + open.name);
    if (auto_accept) mux_->Accept(id, *auto_accept);
  }
  void OnOpenAccepted(uint32_t id, const OpenOkPayload& ok) override {
    events.push_back("accepted " + std::to_string(id) + " " + std::to_string(ok.kind) + "/" +
                     std::to_string(ok.access));
  }
  void OnStreamData(uint32_t id, const uint8_t* data, size_t len) override {
    EXPECT_GT(len, 0u);
    received[id].append(reinterpret_cast<const char*>(data), len);
    std::string ev = "data " + std::to_string(id);
    if (events.empty() || events.back() != ev) events.push_back(ev);
    if (auto_consume) {
      mux_->Consumed(id, len);
    } else {
      unconsumed[id] += len;
    }
  }
  void OnStreamFin(uint32_t id) override { events.push_back("fin " + std::to_string(id)); }
  void OnStreamReset(uint32_t id, ErrorCode error, std::string_view reason) override {
    events.push_back("reset " + std::to_string(id) + " " + ErrName(error) + " " +
                     std::string(reason));
  }
  void OnStreamStopped(uint32_t id, ErrorCode error, std::string_view reason) override {
    events.push_back("stopped " + std::to_string(id) + " " + ErrName(error) + " " +
                     std::string(reason));
  }
  void OnStreamWritable(uint32_t id) override { ++writable[id]; }
  void OnStreamDelivered(uint32_t id) override {
    events.push_back("delivered " + std::to_string(id));
  }
  void OnStreamClosed(uint32_t id) override { events.push_back("closed " + std::to_string(id)); }
  void OnListRequest() override { events.push_back("list"); }
  void OnListReply(const std::vector<ListEntry>& entries, bool more) override {
    listing.insert(listing.end(), entries.begin(), entries.end());
    events.push_back("list_reply " + std::to_string(entries.size()) + (more ? " more" : ""));
  }
  void OnGoaway(const GoawayPayload& g) override {
    events.push_back("goaway " + std::to_string(g.last_stream_id) + " " + ErrName(g.error) + " " +
                     g.reason);
  }

 private:
  Mux* mux_ = nullptr;
};

// A client and a server Mux; each one's output is fed to the other in chunks.
class MuxPair {
 public:
  MuxPair(const MuxOptions& client_options, const MuxOptions& server_options, Chunking chunking,
          uint32_t seed = 1)
      : client(WithRole(client_options, true), &client_cb),
        server(WithRole(server_options, false), &server_cb),
        chunking_(chunking),
        rng_(seed) {
    client_cb.Attach(&client);
    server_cb.Attach(&server);
  }

  // Starts both sides and exchanges SETTINGS.
  ::testing::AssertionResult Start() {
    client.Start();
    server.Start();
    ::testing::AssertionResult r = Pump();
    if (!r) return r;
    client_cb.Take();
    server_cb.Take();
    if (!client.ready() || !server.ready()) return ::testing::AssertionFailure() << "not ready";
    return ::testing::AssertionSuccess();
  }

  // Moves bytes both ways until neither side has anything to send.
  ::testing::AssertionResult Pump() {
    for (int round = 0; round < 1000000; ++round) {
      bool moved = false;
      if (!client.output().empty()) {
        moved = true;
        Status st = Transfer(client, server);
        if (!st.ok()) return ::testing::AssertionFailure() << "server: " << st.message();
      }
      if (!server.output().empty()) {
        moved = true;
        Status st = Transfer(server, client);
        if (!st.ok()) return ::testing::AssertionFailure() << "client: " << st.message();
      }
      if (!moved) return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure() << "the pair never went quiet";
  }

  // Moves only what @p from has queued now into @p to.
  Status Transfer(Mux& from, Mux& to) {
    std::vector<uint8_t> bytes(from.output().data(), from.output().data() + from.output().size());
    from.output().Clear();
    size_t i = 0;
    while (i < bytes.size()) {
      size_t n = NextChunk(bytes.size() - i);
      Status st = to.Feed(bytes.data() + i, n);
      if (!st.ok()) return st;
      i += n;
    }
    return Status::Ok();
  }

  Recorder client_cb;
  Recorder server_cb;
  Mux client;
  Mux server;

 private:
  static MuxOptions WithRole(MuxOptions o, bool client) {
    o.is_client = client;
    return o;
  }
  size_t NextChunk(size_t left) {
    switch (chunking_) {
      case Chunking::kWhole:
        return left;
      case Chunking::kOneByte:
        return 1;
      case Chunking::kRandom:
        break;
    }
    static constexpr size_t kMax[] = {1, 16, 1024, 70000};
    size_t max = kMax[rng_() % 4];
    return std::min(left, 1 + static_cast<size_t>(rng_() % max));
  }

  Chunking chunking_;
  std::mt19937 rng_;
};

class MuxPairTest : public ::testing::TestWithParam<Chunking> {
 protected:
  std::unique_ptr<MuxPair> NewPair(const MuxOptions& c = Options(true),
                                   const MuxOptions& s = Options(false), uint32_t seed = 1) {
    return std::make_unique<MuxPair>(c, s, GetParam(), seed);
  }
};

INSTANTIATE_TEST_SUITE_P(Chunking, MuxPairTest,
                         ::testing::Values(Chunking::kWhole, Chunking::kOneByte, Chunking::kRandom),
                         ChunkingName);

TEST_P(MuxPairTest, SettingsMakeBothSidesReady) {
  auto p = NewPair();
  p->client.Start();
  p->server.Start();
  EXPECT_THAT(Describe(p->client.output()),
              ElementsAre("SETTINGS 1=65544 2=1048576 3=16777216 4=256"));
  EXPECT_FALSE(p->client.ready());
  ASSERT_TRUE(p->Pump());
  EXPECT_TRUE(p->client.ready());
  EXPECT_TRUE(p->server.ready());
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("ready"));
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("ready"));
}

TEST_P(MuxPairTest, FullLifecycleInBothDirections) {
  auto p = NewPair();
  ASSERT_TRUE(p->Start());
  Result<uint32_t> id = p->client.Open(OpenPayload{3, kOpenFlagLines, 1500, "logs"});
  ASSERT_TRUE(id.has_value());
  ASSERT_EQ(*id, 1u);
  EXPECT_EQ(p->client.SendWindow(1), 0u);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("open 1 logs"));
  ASSERT_EQ(p->server_cb.opens.size(), 1u);
  EXPECT_EQ(p->server_cb.opens[0].access, 3);
  EXPECT_EQ(p->server_cb.opens[0].flags, kOpenFlagLines);
  EXPECT_EQ(p->server_cb.opens[0].wait_ms, 1500u);
  EXPECT_THAT(p->client_cb.Take(), IsEmpty());

  p->server.Accept(1, OpenOkPayload{1, 3});
  EXPECT_EQ(p->server.SendWindow(1), 1u << 20);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("accepted 1 1/3"));
  EXPECT_EQ(p->client.SendWindow(1), 1u << 20);

  EXPECT_EQ(p->client.SendData(1, U8("hello"), 5), 5u);
  EXPECT_EQ(p->server.SendData(1, U8("world!"), 6), 6u);
  ASSERT_TRUE(p->Pump());
  EXPECT_EQ(p->server_cb.received[1], "hello");
  EXPECT_EQ(p->client_cb.received[1], "world!");
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("data 1"));
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("data 1"));

  p->client.SendFin(1);
  EXPECT_EQ(p->client.SendWindow(1), 0u);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("fin 1"));
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("delivered 1"));
  EXPECT_TRUE(p->client.HasStream(1));
  EXPECT_TRUE(p->server.HasStream(1));

  p->server.SendFin(1);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("fin 1", "closed 1"));
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("delivered 1", "closed 1"));
  EXPECT_EQ(p->client.stream_count(), 0u);
  EXPECT_EQ(p->server.stream_count(), 0u);
  EXPECT_EQ(p->client.stream_errors(), 0u);
  EXPECT_EQ(p->server.stream_errors(), 0u);
  EXPECT_EQ(p->client.SendData(1, U8("x"), 1), 0u);
}

TEST_P(MuxPairTest, EarlyDataGoesWithTheOpenAndIsDeliveredOnceAccepted) {
  auto p = NewPair();
  ASSERT_TRUE(p->Start());
  ASSERT_EQ(*p->client.Open(EarlyOpen()), 1u);
  EXPECT_EQ(p->client.SendWindow(1), 64u << 10);  // MuxOptions::early_data by default.
  EXPECT_EQ(p->client.SendData(1, U8("PING\r\n"), 6), 6u);
  p->client.SendFin(1);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("open 1 db"));
  EXPECT_TRUE(p->server_cb.received.empty());
  p->server.Accept(1, OpenOkPayload{2, 3});
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("data 1", "fin 1"));
  EXPECT_EQ(p->server_cb.received[1], "PING\r\n");
  EXPECT_EQ(p->server.SendData(1, U8("+PONG\r\n"), 7), 7u);
  p->server.SendFin(1);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->client_cb.Take(),
              ElementsAre("accepted 1 2/3", "delivered 1", "data 1", "fin 1", "closed 1"));
  EXPECT_EQ(p->client_cb.received[1], "+PONG\r\n");
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("delivered 1", "closed 1"));
  EXPECT_EQ(p->client.stream_errors() + p->server.stream_errors(), 0u);
}

TEST_P(MuxPairTest, DeliveryIsConfirmedOnlyAfterThePeerConsumedEverything) {
  auto p = NewPair();
  p->server_cb.auto_consume = false;
  p->server_cb.auto_accept = OpenOkPayload{1, 2};
  ASSERT_TRUE(p->Start());
  ASSERT_EQ(*p->client.Open(OpenPayload{2, 0, 0, "sink"}), 1u);
  ASSERT_TRUE(p->Pump());
  std::string bytes = Pattern(1000, 7);
  EXPECT_EQ(p->client.SendData(1, U8(bytes), bytes.size()), 1000u);
  p->client.SendFin(1);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("open 1 sink", "data 1", "fin 1"));
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("accepted 1 1/2"));
  EXPECT_EQ(p->server_cb.received[1], bytes);

  p->server_cb.Consume(1, 999);
  EXPECT_TRUE(p->server.output().empty());  // Nothing to confirm yet.
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->client_cb.Take(), IsEmpty());

  p->server_cb.Consume(1, 1);
  EXPECT_THAT(Describe(p->server.output()), ElementsAre("CREDIT 1 1000/1049576"));
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("delivered 1"));
  EXPECT_TRUE(p->client.HasStream(1));  // The server's direction is still open.

  p->server.SendFin(1);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("fin 1", "closed 1"));
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("delivered 1", "closed 1"));
}

TEST_P(MuxPairTest, CreditFlowsAsTheReaderConsumes) {
  auto p = NewPair(Options(true, /*stream_window=*/4096));
  p->client_cb.auto_consume = false;
  p->server_cb.auto_accept = OpenOkPayload{1, 1};
  ASSERT_TRUE(p->Start());
  ASSERT_EQ(*p->client.Open(OpenPayload{1, 0, 0, "logs"}), 1u);
  ASSERT_TRUE(p->Pump());
  std::string bytes = Pattern(10000, 8);
  size_t sent = p->server.SendData(1, U8(bytes), bytes.size());
  EXPECT_EQ(sent, 4096u);
  EXPECT_EQ(p->server.SendWindow(1), 0u);
  ASSERT_TRUE(p->Pump());
  EXPECT_EQ(p->client_cb.unconsumed[1], 4096u);

  p->client_cb.Consume(1, 1023);
  EXPECT_TRUE(p->client.output().empty());
  p->client_cb.Consume(1, 1);
  EXPECT_THAT(Describe(p->client.output()), ElementsAre("CREDIT 1 1024/5120"));
  ASSERT_TRUE(p->Pump());
  EXPECT_EQ(p->server.SendWindow(1), 1024u);
  EXPECT_EQ(p->server_cb.writable[1], 1);

  while (sent < bytes.size()) {
    p->client_cb.ConsumeAll(1);
    ASSERT_TRUE(p->Pump());
    size_t window = p->server.SendWindow(1);
    ASSERT_GT(window, 0u);
    size_t n = p->server.SendData(1, U8(bytes) + sent, bytes.size() - sent);
    EXPECT_EQ(n, std::min(window, bytes.size() - sent));
    sent += n;
    ASSERT_TRUE(p->Pump());
  }
  p->server.SendFin(1);
  ASSERT_TRUE(p->Pump());
  EXPECT_EQ(p->client_cb.received[1], bytes);
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("open 1 logs"));  // Not delivered yet.
  p->client_cb.ConsumeAll(1);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("delivered 1"));
}

TEST_P(MuxPairTest, ClientHalfClosesFirst) {
  auto p = NewPair();
  p->server_cb.auto_accept = OpenOkPayload{1, 3};
  ASSERT_TRUE(p->Start());
  ASSERT_EQ(*p->client.Open(OpenPayload{1, 0, 0, "logs"}), 1u);
  ASSERT_TRUE(p->Pump());
  p->client_cb.Take();
  // Nothing was sent, so the empty direction is delivered at once.
  p->client.SendFin(1);
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("delivered 1"));
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("open 1 logs", "fin 1"));
  std::string all;
  for (int i = 0; i < 3; ++i) {
    std::string part = Pattern(5000, 20 + i);
    all += part;
    EXPECT_EQ(p->server.SendData(1, U8(part), part.size()), part.size());
    ASSERT_TRUE(p->Pump());
  }
  EXPECT_EQ(p->client_cb.received[1], all);
  p->server.SendFin(1);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("data 1", "fin 1", "closed 1"));
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("delivered 1", "closed 1"));
}

TEST_P(MuxPairTest, ServerHalfClosesFirst) {
  auto p = NewPair();
  p->server_cb.auto_accept = OpenOkPayload{1, 3};
  ASSERT_TRUE(p->Start());
  ASSERT_EQ(*p->client.Open(OpenPayload{3, 0, 0, "sock"}), 1u);
  ASSERT_TRUE(p->Pump());
  EXPECT_EQ(p->server.SendData(1, U8("banner"), 6), 6u);
  p->server.SendFin(1);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("accepted 1 1/3", "data 1", "fin 1"));
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("open 1 sock", "delivered 1"));
  std::string upload = Pattern(300000, 9);
  EXPECT_EQ(p->client.SendData(1, U8(upload), upload.size()), upload.size());
  ASSERT_TRUE(p->Pump());
  p->client.SendFin(1);
  ASSERT_TRUE(p->Pump());
  EXPECT_EQ(p->server_cb.received[1], upload);
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("data 1", "fin 1", "closed 1"));
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("delivered 1", "closed 1"));
}

TEST_P(MuxPairTest, RejectClosesTheStreamOnBothSides) {
  auto p = NewPair();
  ASSERT_TRUE(p->Start());
  ASSERT_EQ(*p->client.Open(OpenPayload{1, 0, 0, "secret"}), 1u);
  ASSERT_TRUE(p->Pump());
  p->server.Reject(1, ErrorCode::kAccessDenied, "access denied for 'alice'");
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("open 1 secret", "closed 1"));
  EXPECT_THAT(p->client_cb.Take(),
              ElementsAre("reset 1 denied access denied for 'alice'", "closed 1"));
  EXPECT_EQ(p->client.stream_count(), 0u);
  EXPECT_EQ(p->server.stream_count(), 0u);
  // The connection is fine.
  ASSERT_EQ(*p->client.Open(OpenPayload{1, 0, 0, "public"}), 3u);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("open 3 public"));
}

TEST_P(MuxPairTest, ClientResetBeforeAcceptKeepsTheServerDirection) {
  auto p = NewPair();
  ASSERT_TRUE(p->Start());
  ASSERT_EQ(*p->client.Open(OpenPayload{3, 0, 0, "logs"}), 1u);
  p->client.ResetSending(1, ErrorCode::kCancel, "read only");
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("open 1 logs", "reset 1 cancel read only"));
  EXPECT_TRUE(p->server.HasStream(1));
  p->server.Accept(1, OpenOkPayload{1, 1});
  EXPECT_EQ(p->server.SendData(1, U8("lines\n"), 6), 6u);
  p->server.SendFin(1);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("accepted 1 1/1", "data 1", "fin 1", "closed 1"));
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("delivered 1", "closed 1"));
  EXPECT_EQ(p->client_cb.received[1], "lines\n");
}

TEST_P(MuxPairTest, ClientAbortBeforeAcceptClosesBothSides) {
  auto p = NewPair();
  ASSERT_TRUE(p->Start());
  ASSERT_EQ(*p->client.Open(OpenPayload{3, 0, 0, "logs"}), 1u);
  ASSERT_TRUE(p->Pump());
  p->client.Abort(1, ErrorCode::kCancel, "ctrl-c");
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("closed 1"));
  ASSERT_TRUE(p->Transfer(p->client, p->server).ok());
  EXPECT_TRUE(p->server.output().empty());  // No RESET before OPEN_OK.
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("open 1 logs", "stopped 1 cancel ctrl-c",
                                               "reset 1 cancel ctrl-c", "closed 1"));
  p->server.Accept(1, OpenOkPayload{1, 3});
  EXPECT_TRUE(p->server.output().empty());
}

TEST_P(MuxPairTest, ResetAfterAcceptIsAHalfClose) {
  auto p = NewPair();
  p->server_cb.auto_accept = OpenOkPayload{2, 3};
  ASSERT_TRUE(p->Start());
  ASSERT_EQ(*p->client.Open(OpenPayload{3, 0, 0, "sock"}), 1u);
  ASSERT_TRUE(p->Pump());
  p->server.ResetSending(1, ErrorCode::kIo, "local read failed");
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("accepted 1 2/3", "reset 1 io local read failed"));
  EXPECT_EQ(p->client.SendData(1, U8("still writing"), 13), 13u);
  p->client.SendFin(1);
  ASSERT_TRUE(p->Pump());
  EXPECT_EQ(p->server_cb.received[1], "still writing");
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("open 1 sock", "data 1", "fin 1", "closed 1"));
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("delivered 1", "closed 1"));
}

TEST_P(MuxPairTest, StopMakesThePeerResetItsDirection) {
  auto p = NewPair();
  p->server_cb.auto_accept = OpenOkPayload{2, 3};
  ASSERT_TRUE(p->Start());
  ASSERT_EQ(*p->client.Open(OpenPayload{3, 0, 0, "sock"}), 1u);
  ASSERT_TRUE(p->Pump());
  std::string bytes = Pattern(100, 10);
  EXPECT_EQ(p->server.SendData(1, U8(bytes), bytes.size()), 100u);
  ASSERT_TRUE(p->Pump());
  p->client.StopReading(1, ErrorCode::kBrokenPipe, "reader gone");
  EXPECT_THAT(Describe(p->client.output()), ElementsAre("STOP 1 broken_pipe \"reader gone\""));
  ASSERT_TRUE(p->Transfer(p->client, p->server).ok());
  EXPECT_THAT(Describe(p->server.output()),
              ElementsAre("RESET 1 broken_pipe @100 \"stopped by peer\""));
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("open 1 sock", "stopped 1 broken_pipe reader gone"));
  EXPECT_EQ(p->server.SendWindow(1), 0u);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("accepted 1 2/3", "data 1"));  // RESET ignored.
  EXPECT_EQ(p->client.SendData(1, U8("bye"), 3), 3u);
  p->client.SendFin(1);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("data 1", "fin 1", "closed 1"));
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("delivered 1", "closed 1"));
}

TEST_P(MuxPairTest, StopBeforeAcceptThenAccept) {
  auto p = NewPair();
  ASSERT_TRUE(p->Start());
  ASSERT_EQ(*p->client.Open(OpenPayload{2, 0, 0, "sink"}), 1u);
  p->client.StopReading(1, ErrorCode::kNoError, "write only");
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("open 1 sink", "stopped 1 none write only"));
  p->server.Accept(1, OpenOkPayload{1, 2});
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("accepted 1 1/2"));
  EXPECT_EQ(p->client.SendData(1, U8("payload"), 7), 7u);
  p->client.SendFin(1);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("data 1", "fin 1", "closed 1"));
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("delivered 1", "closed 1"));
}

TEST_P(MuxPairTest, StopBeforeAcceptThenReject) {
  auto p = NewPair();
  ASSERT_TRUE(p->Start());
  ASSERT_EQ(*p->client.Open(OpenPayload{2, 0, 0, "sink"}), 1u);
  p->client.StopReading(1, ErrorCode::kNoError, "write only");
  ASSERT_TRUE(p->Pump());
  p->server.Reject(1, ErrorCode::kBusy, "every instance is taken");
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("reset 1 busy every instance is taken", "closed 1"));
  EXPECT_EQ(p->client.stream_count(), 0u);
  EXPECT_EQ(p->server.stream_count(), 0u);
}

TEST_P(MuxPairTest, StreamLimitOnBothSides) {
  auto p = NewPair(Options(true), Options(false, 1u << 20, 16u << 20, /*max_streams=*/2));
  p->client.Start();
  p->server.Start();
  // Before the gateway's SETTINGS arrive the client cannot know the limit.
  for (uint32_t want : {1u, 3u, 5u}) ASSERT_EQ(*p->client.Open(OpenPayload{1, 0, 0, "p"}), want);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("ready", "open 1 p", "open 3 p"));
  EXPECT_THAT(p->client_cb.Take(),
              ElementsAre("ready", "reset 5 limit too many streams (limit 2)", "closed 5"));
  EXPECT_EQ(p->server.stream_errors(), 1u);
  Result<uint32_t> refused = p->client.Open(OpenPayload{1, 0, 0, "p"});
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), Code::kLimit);
  p->server.Reject(1, ErrorCode::kNotFound, "gone");
  ASSERT_TRUE(p->Pump());
  ASSERT_EQ(*p->client.Open(OpenPayload{1, 0, 0, "q"}), 7u);
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("closed 1", "open 7 q"));
}

TEST_P(MuxPairTest, GoawayDrainsTheConnection) {
  auto p = NewPair();
  p->server_cb.auto_accept = OpenOkPayload{1, 3};
  ASSERT_TRUE(p->Start());
  ASSERT_EQ(*p->client.Open(OpenPayload{3, 0, 0, "a"}), 1u);
  ASSERT_TRUE(p->Pump());
  p->server.Goaway(ErrorCode::kShutdown, "maintenance");
  ASSERT_EQ(*p->client.Open(OpenPayload{3, 0, 0, "b"}), 3u);  // Crosses the GOAWAY.
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->client_cb.Take(),
              ElementsAre("accepted 1 1/3", "goaway 1 shutdown maintenance",
                          "reset 3 shutdown gateway is shutting down", "closed 3"));
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("open 1 a"));
  EXPECT_TRUE(p->client.goaway_received());
  EXPECT_FALSE(p->client.Open(OpenPayload{3, 0, 0, "c"}).has_value());
  // The stream opened before the GOAWAY finishes normally.
  EXPECT_EQ(p->client.SendData(1, U8("last words"), 10), 10u);
  p->client.SendFin(1);
  p->server.SendFin(1);
  ASSERT_TRUE(p->Pump());
  EXPECT_EQ(p->server_cb.received[1], "last words");
  EXPECT_EQ(p->client.stream_count(), 0u);
  EXPECT_EQ(p->server.stream_count(), 0u);
}

TEST_P(MuxPairTest, PingIsAnsweredAutomatically) {
  auto p = NewPair();
  ASSERT_TRUE(p->Start());
  p->client.Ping(0xabcdef);
  ASSERT_TRUE(p->Transfer(p->client, p->server).ok());
  EXPECT_THAT(Describe(p->server.output()), ElementsAre("PING ACK 11259375"));
  ASSERT_TRUE(p->Transfer(p->server, p->client).ok());
  EXPECT_TRUE(p->client.output().empty());
  EXPECT_THAT(p->client_cb.Take(), IsEmpty());
  EXPECT_THAT(p->server_cb.Take(), IsEmpty());
}

TEST_P(MuxPairTest, ListIsPaged) {
  auto p = NewPair();
  ASSERT_TRUE(p->Start());
  p->client.RequestList();
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->server_cb.Take(), ElementsAre("list"));
  std::vector<ListEntry> entries;
  for (int i = 0; i < 200; ++i) {
    std::string name = "export-" + std::to_string(i);
    name.resize(100, 'x');
    entries.push_back({name, static_cast<uint8_t>(1 + i % 2), static_cast<uint8_t>(1 + i % 3)});
  }
  p->server.SendListReply(entries);
  EXPECT_THAT(Describe(p->server.output()), ElementsAre("LIST_REPLY 141 MORE", "LIST_REPLY 59"));
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("list_reply 141 more", "list_reply 59"));
  ASSERT_EQ(p->client_cb.listing.size(), entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    EXPECT_EQ(p->client_cb.listing[i].name, entries[i].name);
    EXPECT_EQ(p->client_cb.listing[i].kind, entries[i].kind);
    EXPECT_EQ(p->client_cb.listing[i].access, entries[i].access);
  }
  p->client.RequestList();
  ASSERT_TRUE(p->Pump());
  p->server.SendListReply({});
  ASSERT_TRUE(p->Pump());
  EXPECT_THAT(p->client_cb.Take(), ElementsAre("list_reply 0"));
}

TEST_P(MuxPairTest, SessionWindowBlocksAndWakesStreams) {
  auto p = NewPair(Options(true, /*stream_window=*/1u << 20, /*session_window=*/10000));
  p->client_cb.auto_consume = false;
  p->server_cb.auto_accept = OpenOkPayload{1, 1};
  ASSERT_TRUE(p->Start());
  ASSERT_EQ(*p->client.Open(OpenPayload{1, 0, 0, "a"}), 1u);
  ASSERT_EQ(*p->client.Open(OpenPayload{1, 0, 0, "b"}), 3u);
  ASSERT_TRUE(p->Pump());
  std::string bytes = Pattern(20000, 11);
  EXPECT_EQ(p->server.SendData(1, U8(bytes), bytes.size()), 10000u);
  EXPECT_EQ(p->server.SendWindow(3), 0u);
  ASSERT_TRUE(p->Pump());
  p->client_cb.Consume(1, 2499);
  EXPECT_TRUE(p->client.output().empty());
  p->client_cb.Consume(1, 1);
  EXPECT_THAT(Describe(p->client.output()), ElementsAre("CREDIT 0 2500/12500"));
  ASSERT_TRUE(p->Pump());
  EXPECT_EQ(p->server_cb.writable[1], 1);
  EXPECT_EQ(p->server_cb.writable[3], 1);
  EXPECT_EQ(p->server.SendWindow(3), 2500u);
  EXPECT_EQ(p->server.SendData(3, U8(bytes), bytes.size()), 2500u);
  ASSERT_TRUE(p->Pump());
  EXPECT_EQ(p->client_cb.received[3], bytes.substr(0, 2500));
}

TEST_P(MuxPairTest, OneMebibyteEachWay) {
  auto p = NewPair();
  p->server_cb.auto_accept = OpenOkPayload{2, 3};
  ASSERT_TRUE(p->Start());
  ASSERT_EQ(*p->client.Open(OpenPayload{3, 0, 0, "sock"}), 1u);
  ASSERT_TRUE(p->Pump());
  std::string up = Pattern(1u << 20, 12);
  std::string down = Pattern(1u << 20, 13);
  size_t up_sent = 0;
  size_t down_sent = 0;
  while (up_sent < up.size() || down_sent < down.size()) {
    size_t a = p->client.SendData(1, U8(up) + up_sent, up.size() - up_sent);
    size_t b = p->server.SendData(1, U8(down) + down_sent, down.size() - down_sent);
    ASSERT_GT(a + b, 0u) << "stalled at " << up_sent << "/" << down_sent;
    up_sent += a;
    down_sent += b;
    ASSERT_TRUE(p->Pump());
  }
  p->client.SendFin(1);
  p->server.SendFin(1);
  ASSERT_TRUE(p->Pump());
  EXPECT_TRUE(p->server_cb.received[1] == up);
  EXPECT_TRUE(p->client_cb.received[1] == down);
  EXPECT_EQ(p->client.stream_count(), 0u);
  EXPECT_EQ(p->server.stream_count(), 0u);
}

// Random traffic on several streams with small windows and a slow, random reader. The sender
// may never have more credit than the reader granted, and no side may see a violation.
TEST_P(MuxPairTest, RandomTrafficNeverViolatesFlowControl) {
  constexpr uint32_t kStreamWindow = 8192;
  constexpr uint32_t kSessionWindow = 24576;
  constexpr int kStreams = 4;
  constexpr size_t kBytesPerDirection = 60000;
  for (uint32_t seed = 1; seed <= 3; ++seed) {
    SCOPED_TRACE(seed);
    auto p = NewPair(Options(true, kStreamWindow, kSessionWindow),
                     Options(false, kStreamWindow, kSessionWindow), seed);
    p->client_cb.auto_consume = false;
    p->server_cb.auto_consume = false;
    p->server_cb.auto_accept = OpenOkPayload{2, 3};
    ASSERT_TRUE(p->Start());
    std::mt19937 rng(seed);
    struct Direction {
      Mux* sender;
      Recorder* reader;
      std::map<uint32_t, std::string> data;
      std::map<uint32_t, size_t> sent;
      std::map<uint32_t, size_t> consumed;
    };
    Direction up{&p->client, &p->server_cb, {}, {}, {}};
    Direction down{&p->server, &p->client_cb, {}, {}, {}};
    std::vector<uint32_t> ids;
    for (int i = 0; i < kStreams; ++i) {
      Result<uint32_t> id = p->client.Open(OpenPayload{3, 0, 0, "s" + std::to_string(i)});
      ASSERT_TRUE(id.has_value());
      ids.push_back(*id);
      up.data[*id] = Pattern(kBytesPerDirection, seed * 100 + static_cast<uint32_t>(i));
      down.data[*id] = Pattern(kBytesPerDirection, seed * 200 + static_cast<uint32_t>(i));
    }
    ASSERT_TRUE(p->Pump());
    auto check_credit = [&](Direction& d) {
      size_t total_sent = 0;
      size_t total_consumed = 0;
      for (uint32_t id : ids) {
        // What the sender may still send never reaches past what the reader granted.
        EXPECT_LE(d.sent[id] + d.sender->SendWindow(id), d.consumed[id] + kStreamWindow);
        total_sent += d.sent[id];
        total_consumed += d.consumed[id];
      }
      EXPECT_LE(total_sent, total_consumed + kSessionWindow);
    };
    bool done = false;
    for (int step = 0; step < 100000 && !done; ++step) {
      for (Direction* d : {&up, &down}) {
        uint32_t id = ids[rng() % ids.size()];
        size_t left = d->data[id].size() - d->sent[id];
        if (left > 0) {
          size_t want = std::min<size_t>(left, 1 + rng() % 5000);
          size_t n = d->sender->SendData(id, U8(d->data[id]) + d->sent[id], want);
          EXPECT_LE(n, want);
          d->sent[id] += n;
          if (d->sent[id] == d->data[id].size()) d->sender->SendFin(id);
        }
        uint32_t rid = ids[rng() % ids.size()];
        size_t pending = d->reader->unconsumed[rid];
        if (pending > 0) {
          size_t n = rng() % 3 == 0 ? pending : std::min<size_t>(pending, 1 + rng() % 3000);
          d->reader->Consume(rid, n);
          d->consumed[rid] += n;
        }
      }
      ASSERT_TRUE(p->Pump());
      check_credit(up);
      check_credit(down);
      done = p->client.stream_count() == 0 && p->server.stream_count() == 0;
    }
    ASSERT_TRUE(done) << "streams left: " << p->client.stream_count() << "/"
                      << p->server.stream_count();
    EXPECT_EQ(p->client.stream_errors(), 0u);
    EXPECT_EQ(p->server.stream_errors(), 0u);
    for (uint32_t id : ids) {
      EXPECT_TRUE(p->server_cb.received[id] == up.data[id]) << id;
      EXPECT_TRUE(p->client_cb.received[id] == down.data[id]) << id;
    }
    int delivered = 0;
    int closed = 0;
    for (const std::string& ev : p->client_cb.events) {
      delivered += ev.rfind("delivered ", 0) == 0;
      closed += ev.rfind("closed ", 0) == 0;
      EXPECT_EQ(ev.rfind("reset", 0), std::string::npos) << ev;
    }
    EXPECT_EQ(delivered, kStreams);
    EXPECT_EQ(closed, kStreams);
  }
}

}  // namespace
}  // namespace pipegate

namespace pipegate {
namespace {

// ---- What a hostile client can make a server Mux hold ----

ResumePayload SomeResume() {
  ResumePayload resume;
  resume.session_id[0] = 0x5a;
  return resume;
}

TEST(MuxResumeGate, ResumeIsAcceptedOnlyAsTheFirstFrameAfterSettings) {
  Endpoint e(Options(false));
  e.Handshake();
  Wire w;
  w.Ping(7);
  AppendResume(w.buffer(), SomeResume());
  ExpectConnectionError(e.Feed(w), "only as the first frame after SETTINGS");
}

TEST(MuxResumeGate, ResumeAfterAnOpenIsRefused) {
  Endpoint e(Options(false));
  e.Handshake();
  e.OpenAndAccept(1);
  Wire w;
  AppendResume(w.buffer(), SomeResume());
  ExpectConnectionError(e.Feed(w), "only as the first frame after SETTINGS");
}

TEST(MuxResumeGate, AMuxThatAdoptedASessionRefusesResume) {
  Endpoint e(Options(false));
  e.mux.AdoptPeerSettings(Mux::PeerSettings{true, kDefaultMaxFramePayload, 1000, 10, 100000});
  Wire w;
  AppendResume(w.buffer(), SomeResume());
  ExpectConnectionError(e.Feed(w), "only as the first frame after SETTINGS");
}

TEST(MuxResumeGate, FeedStopsRightAfterResumeAndReportsWhatItConsumed) {
  Endpoint e(Options(false));
  e.Handshake();
  Wire w;
  AppendResume(w.buffer(), SomeResume());
  const size_t resume_size = w.buffer().size();
  w.Ping(1).Ping(2);
  EXPECT_CALL(e.cb, OnResumeRequest(_));
  size_t consumed = 0;
  ASSERT_TRUE(e.mux.Feed(w.buffer().data(), w.buffer().size(), &consumed).ok());
  EXPECT_EQ(consumed, resume_size);
  EXPECT_TRUE(e.mux.resume_requested());
  EXPECT_THAT(Sent(e.mux), IsEmpty());  // The PINGs were not answered by this Mux.
}

TEST(MuxResumeGate, ResumeSplitAcrossFeedsStillStopsAtItsEnd) {
  Endpoint e(Options(false));
  e.Handshake();
  Wire w;
  AppendResume(w.buffer(), SomeResume());
  const size_t resume_size = w.buffer().size();
  w.Ping(1);
  EXPECT_CALL(e.cb, OnResumeRequest(_));
  size_t consumed = 0;
  ASSERT_TRUE(e.mux.Feed(w.buffer().data(), 5, &consumed).ok());
  EXPECT_EQ(consumed, 5u);
  ASSERT_TRUE(e.mux.Feed(w.buffer().data() + 5, w.buffer().size() - 5, &consumed).ok());
  EXPECT_EQ(consumed, resume_size - 5);
}

// A client that grants huge windows and never acknowledges: what the server keeps for replay
// is bounded by its own caps, not by the client's advertisements.
TEST(MuxReplayCaps, HugeWindowsAreClampedPerStreamAndPerSession) {
  MuxOptions o = Options(false);
  o.resumable = true;
  o.max_unacked_per_stream = 64 * 1024;
  o.max_unacked_per_session = 100 * 1024;
  Endpoint e(o);
  e.Handshake({{SettingId::kStreamWindow, 0x7fffffff}, {SettingId::kSessionWindow, 0x7fffffff}});
  e.OpenAndAccept(1);
  e.OpenAndAccept(3);
  const std::string big(1 << 20, 'x');
  EXPECT_EQ(e.mux.SendData(1, U8(big), big.size()), 64u * 1024);
  EXPECT_EQ(e.mux.SendData(3, U8(big), big.size()), 36u * 1024);  // The session's rest.
  EXPECT_EQ(e.mux.replay_bytes(), 100u * 1024);
  e.mux.output().Clear();
  // Raising the credit limit without acknowledging anything frees nothing.
  EXPECT_CALL(e.cb, OnStreamWritable(_)).Times(0);
  ASSERT_TRUE(e.Feed(Wire().Credit(1, 0, uint64_t{1} << 40).Credit(0, 0, uint64_t{1} << 40)).ok());
  EXPECT_EQ(e.mux.SendWindow(1), 0u);
  EXPECT_EQ(e.mux.SendWindow(3), 0u);
  ::testing::Mock::VerifyAndClearExpectations(&e.cb);
  // An acknowledgement on stream 1 frees session room for stream 3 as well.
  EXPECT_CALL(e.cb, OnStreamWritable(1));
  EXPECT_CALL(e.cb, OnStreamWritable(3));
  ASSERT_TRUE(e.Feed(Wire().Credit(1, 32 * 1024, uint64_t{1} << 40)).ok());
  EXPECT_EQ(e.mux.replay_bytes(), 68u * 1024);
  EXPECT_EQ(e.mux.SendWindow(1), 32u * 1024);
}

// Acknowledged replay storage stays while a stream keeps sending (no allocation per frame) and
// is freed once the stream has been idle for a whole ReleaseIdleMemory() period.
TEST(MuxReplayCaps, IdleStreamsGiveTheirReplayStorageBack) {
  MuxOptions o = Options(false);
  o.resumable = true;
  Endpoint e(o);
  e.Handshake({{SettingId::kStreamWindow, 1u << 20}, {SettingId::kSessionWindow, 1u << 24}});
  e.OpenAndAccept(1);
  EXPECT_CALL(e.cb, OnStreamWritable(_)).Times(::testing::AnyNumber());
  const std::string chunk(16 * 1024, 'x');
  ASSERT_EQ(e.mux.SendData(1, U8(chunk), chunk.size()), chunk.size());
  e.mux.output().Clear();
  ASSERT_TRUE(e.Feed(Wire().Credit(1, chunk.size(), 1u << 20)).ok());
  EXPECT_EQ(e.mux.replay_bytes(), 0u);
  EXPECT_GE(e.mux.replay_capacity(), chunk.size());  // Kept for the next bytes.
  e.mux.ReleaseIdleMemory();                         // It sent in this period: kept.
  EXPECT_GE(e.mux.replay_capacity(), chunk.size());
  e.mux.ReleaseIdleMemory();  // A whole period without sending: freed.
  EXPECT_EQ(e.mux.replay_capacity(), 0u);
  // Bytes still unacknowledged are never dropped, however idle the stream.
  ASSERT_EQ(e.mux.SendData(1, U8(chunk), chunk.size()), chunk.size());
  e.mux.ReleaseIdleMemory();
  e.mux.ReleaseIdleMemory();
  EXPECT_EQ(e.mux.replay_bytes(), chunk.size());
  EXPECT_GE(e.mux.replay_capacity(), chunk.size());
}

class CountingBudget final : public ReplayBudget {
 public:
  explicit CountingBudget(uint64_t cap) : cap_(cap) {}
  uint64_t Available() const override { return cap_ > taken_ ? cap_ - taken_ : 0; }
  void Take(uint64_t n) override { taken_ += n; }
  void Give(uint64_t n) override {
    ASSERT_LE(n, taken_);
    taken_ -= n;
  }
  uint64_t taken() const { return taken_; }

 private:
  uint64_t cap_;
  uint64_t taken_ = 0;
};

TEST(MuxReplayCaps, ASharedBudgetStallsAndIsGivenBackOnAckAndDestruction) {
  CountingBudget budget(10000);
  {
    MuxOptions o = Options(false);
    o.resumable = true;
    o.replay_budget = &budget;
    Endpoint e(o);
    e.Handshake({{SettingId::kStreamWindow, 1 << 20}, {SettingId::kSessionWindow, 1 << 24}});
    e.OpenAndAccept(1);
    const std::string big(50000, 'x');
    EXPECT_EQ(e.mux.SendData(1, U8(big), big.size()), 10000u);
    EXPECT_EQ(budget.taken(), 10000u);
    EXPECT_EQ(e.mux.SendWindow(1), 0u);
    EXPECT_TRUE(e.mux.TakeBudgetStall());
    EXPECT_FALSE(e.mux.TakeBudgetStall());  // Reported once.
    e.mux.output().Clear();
    EXPECT_CALL(e.cb, OnStreamWritable(1));
    ASSERT_TRUE(e.Feed(Wire().Credit(1, 4000, 1 << 20)).ok());
    EXPECT_EQ(budget.taken(), 6000u);
    EXPECT_EQ(e.mux.SendWindow(1), 4000u);
  }
  EXPECT_EQ(budget.taken(), 0u);  // The Mux gave back what it still held.
}

TEST(MuxReplayCaps, AStreamThatEndsGivesItsReplayBack) {
  CountingBudget budget(1 << 20);
  MuxOptions o = Options(false);
  o.resumable = true;
  o.replay_budget = &budget;
  Endpoint e(o);
  e.Handshake();
  e.OpenAndAccept(1);
  const std::string bytes(500, 'x');
  EXPECT_EQ(e.mux.SendData(1, U8(bytes), bytes.size()), 500u);
  EXPECT_EQ(budget.taken(), 500u);
  EXPECT_CALL(e.cb, OnStreamClosed(1));
  e.mux.Abort(1, ErrorCode::kCancel, "gone");
  EXPECT_EQ(budget.taken(), 0u);
}

}  // namespace
}  // namespace pipegate

namespace pipegate {
namespace {

using ::testing::_;
using ::testing::Field;

// EXIT (exec exports) goes right before the FIN of the gateway's direction, and that FIN is
// done only once the client confirms it, even with nothing outstanding: the stream must live
// until the client surely has the EXIT, since a resume replays it from there.
TEST(MuxExit, GoesBeforeTheFinWhichWaitsForConfirmation) {
  std::unique_ptr<Endpoint> e(Server());
  e->Handshake();
  e->OpenAndAccept(1);
  e->mux.StopReading(1, ErrorCode::kNoError, "the process exited");
  e->mux.SendExit(1, ExitPayload{ExitHow::kExited, 7});
  e->mux.SendFin(1);
  EXPECT_THAT(Sent(e->mux),
              ElementsAre("STOP 1 none \"the process exited\"", "EXIT 1 1 7", "DATA 1 @0 +0 FIN"));
  EXPECT_TRUE(e->mux.HasStream(1));
  EXPECT_CALL(e->cb, OnStreamDelivered(1));
  EXPECT_CALL(e->cb, OnStreamClosed(1));
  ASSERT_TRUE(e->Feed(Wire().Credit(1, 0, 1000)).ok());
  EXPECT_FALSE(e->mux.HasStream(1));
}

TEST(MuxExit, OnlyAGatewaySendsItAndTheClientHearsIt) {
  {
    std::unique_ptr<Endpoint> e(Server());
    e->Handshake();
    e->OpenAndAccept(1);
    ExpectConnectionError(e->Feed(Wire().Raw(0xE, 0, 1, {1, 0, 0, 0, 0, 0, 0, 3})),
                          "EXIT sent to a gateway");
  }
  Endpoint c(Options(true));
  c.Handshake();
  ASSERT_EQ(*c.mux.Open(OpenPayload{3, 0, 0, "p"}), 1u);
  EXPECT_CALL(c.cb, OnOpenAccepted(1, _));
  ASSERT_TRUE(c.Feed(Wire().OpenOk(1)).ok());
  EXPECT_CALL(c.cb, OnStreamExit(1, Field(&ExitPayload::code, 143u)));
  ASSERT_TRUE(c.Feed(Wire().Raw(0xE, 0, 1, {2, 0, 0, 0, 0, 0, 0, 143})).ok());
  ExpectConnectionError(c.Feed(Wire().Raw(0xE, 0, 1, {9, 0, 0, 0, 0, 0, 0, 0})),
                        "EXIT frame with unknown how 9");
}

}  // namespace
}  // namespace pipegate
