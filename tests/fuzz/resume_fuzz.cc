// Fuzz target for the resume request as the gateway handles it (gateway/session_resume.cc,
// SPEC §8), without the sockets and the proof check.
//
// An old session: a resumable client Mux and server Mux in memory, with streams, data both ways
// and some bytes lost in flight, then detached (the connection broke). A new connection: a fresh
// resumable server Mux is fed SETTINGS and the client's first frames. When it reports
// OnResumeRequest, the old server Mux is resumed as Session::Attach() does it: AdoptPeerSettings,
// SendResumeOk, ResumeWith(resume.streams, resume.last_id), then the bytes after the RESUME.
//
// Input: byte 0 shapes the old session (streams, data, what is lost). Byte 1 picks the mode:
//   even: "edit": the RESUME is the client's honest view (ResumeState) with the edits of the
//         following 4-byte groups applied (until a 0xFF byte), then the rest is fed as frames;
//   odd:  "raw": the rest are the connection's bytes after SETTINGS, RESUME included (so
//         DecodeResume sees arbitrary payloads).
// Invariants: no crash; errors are kProtocol with a message; an honest RESUME (no edits and
// nothing after it) is
// accepted and, after pumping both ways, each side received exactly the bytes the other sent on
// every stream that was not reset; an accepted resume leaves the Mux attached and its output
// well-formed, with contiguous DATA offsets.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "pipegate/buffer.h"
#include "pipegate/frame.h"
#include "pipegate/mux.h"
#include "pipegate/status.h"

namespace pipegate {
namespace {

[[noreturn]] void Fail(const char* what, int line) {
  std::fprintf(stderr, "resume_fuzz:%d: invariant failed: %s\n", line, what);
  std::abort();
}
#define FUZZ_CHECK(cond)                \
  do {                                  \
    if (!(cond)) Fail(#cond, __LINE__); \
  } while (0)

MuxOptions Options(bool client) {
  MuxOptions o;
  o.is_client = client;
  o.resumable = true;
  o.stream_window = 64;  // Small, so that short inputs reach flow control and partial replays.
  o.session_window = 256;
  o.max_streams = 4;
  return o;
}

uint8_t PatternByte(uint32_t id, uint64_t offset) {
  return static_cast<uint8_t>(id * 31 + offset * 7);
}

// One side's application: accepts every open, consumes everything, records what arrives.
class Side : public MuxCallbacks {
 public:
  explicit Side(bool client) : mux(Options(client), this) {}

  Mux mux;
  std::map<uint32_t, std::string> received;
  std::map<uint32_t, uint64_t> sent;
  std::set<uint32_t> broken;  ///< Streams reset, stopped or aborted: no exactness check.
  std::optional<ResumePayload> resume;

  // Sends up to @p n more pattern bytes on @p id.
  void Send(uint32_t id, size_t n) {
    uint8_t buf[256];
    n = std::min(n, sizeof buf);
    uint64_t& off = sent[id];
    for (size_t i = 0; i < n; ++i) buf[i] = PatternByte(id, off + i);
    off += mux.SendData(id, buf, n);
  }

  void OnMuxReady() override {}
  void OnOpenRequest(uint32_t id, const OpenPayload& open) override {
    mux.Accept(id, OpenOkPayload{1, open.access});
  }
  void OnStreamData(uint32_t id, const uint8_t* data, size_t len) override {
    received[id].append(reinterpret_cast<const char*>(data), len);
    mux.Consumed(id, len);
  }
  void OnStreamFin(uint32_t) override {}
  void OnStreamReset(uint32_t id, ErrorCode, std::string_view) override { broken.insert(id); }
  void OnStreamStopped(uint32_t id, ErrorCode, std::string_view) override { broken.insert(id); }
  void OnStreamWritable(uint32_t) override {}
  void OnStreamClosed(uint32_t) override {}
  void OnResumeRequest(const ResumePayload& r) override { resume = r; }
};

// Moves everything queued by @p from into @p to; false on a connection error.
bool Move(Side& from, Side& to, Status* st) {
  Buffer& out = from.mux.output();
  if (out.empty()) return false;
  std::vector<uint8_t> bytes(out.data(), out.data() + out.size());
  out.Clear();
  *st = to.mux.Feed(bytes.data(), bytes.size());
  return true;
}

Status Pump(Side& client, Side& server) {
  Status st;
  for (int round = 0; round < 1000; ++round) {
    bool moved = Move(client, server, &st);
    if (!st.ok()) return st;
    moved = Move(server, client, &st) || moved;
    if (!st.ok()) return st;
    if (!moved) return Status::Ok();
  }
  Fail("the pair never went quiet", __LINE__);
}

// Checks frames a Mux sent after the resume: well-formed, contiguous DATA offsets per stream.
void CheckOutput(const Buffer& out) {
  std::map<uint32_t, uint64_t> next;
  size_t i = 0;
  while (i < out.size()) {
    FUZZ_CHECK(out.size() - i >= kFrameHeaderSize);
    Result<FrameHeader> h = DecodeFrameHeader(out.data() + i, kMaxFramePayloadLimit);
    FUZZ_CHECK(h.has_value());
    FUZZ_CHECK(out.size() - i - kFrameHeaderSize >= h->length);
    const uint8_t* body = out.data() + i + kFrameHeaderSize;
    if (h->type == FrameType::kData) {
      FUZZ_CHECK(h->length >= kDataPrefixSize);
      uint64_t offset = GetU64(body);
      auto it = next.find(h->stream_id);
      if (it != next.end()) FUZZ_CHECK(offset == it->second);
      next[h->stream_id] = offset + h->length - kDataPrefixSize;
    } else if (h->type == FrameType::kResumeOk) {
      FUZZ_CHECK(DecodeResumeOk(body, h->length).has_value());
    }
    i += kFrameHeaderSize + h->length;
  }
}

// The old session: streams opened by the client, data both ways, some of it lost.
void BuildOldSession(uint8_t shape, Side& client, Side& server) {
  client.mux.Start();
  server.mux.Start();
  FUZZ_CHECK(Pump(client, server).ok());
  const uint32_t streams = 1 + (shape & 3);
  std::vector<uint32_t> ids;
  for (uint32_t i = 0; i < streams; ++i) {
    Result<uint32_t> id = client.mux.Open(OpenPayload{3, 0, 0, "p" + std::to_string(i)});
    FUZZ_CHECK(id.has_value());
    ids.push_back(*id);
  }
  FUZZ_CHECK(Pump(client, server).ok());
  const size_t up = 40 * ((shape >> 2) & 3);
  const size_t down = 50 * ((shape >> 4) & 1);
  for (uint32_t id : ids) {
    client.Send(id, up);
    server.Send(id, down);
  }
  if (streams >= 3 && (shape & 0x20)) client.mux.SendFin(ids[2]);
  if (streams >= 4) server.mux.Abort(ids[3], ErrorCode::kCancel, "fuzz abort");
  // Deliver the first round, then lose what each side queued next (shape bits 6, 7).
  FUZZ_CHECK(Pump(client, server).ok());
  for (uint32_t id : ids) {
    client.Send(id, up / 2 + 1);
    server.Send(id, down / 2 + 1);
  }
  Status st;
  if (!(shape & 0x40)) {
    Move(client, server, &st);
    FUZZ_CHECK(st.ok());
  }
  if (!(shape & 0x80)) {
    Move(server, client, &st);
    FUZZ_CHECK(st.ok());
  }
  client.mux.Detach();
  server.mux.Detach();
}

// Applies 4-byte edits (stream index, field, two value bytes) to the client's view.
bool ApplyEdits(const uint8_t*& p, const uint8_t* end, ResumePayload& r) {
  bool edited = false;
  while (end - p >= 4 && p[0] != 0xFF) {
    const uint8_t which = p[0], field = p[1];
    const uint16_t v = static_cast<uint16_t>(p[2] << 8 | p[3]);
    p += 4;
    edited = true;
    if (field % 8 == 7) {
      r.last_id = v;
      continue;
    }
    if (field % 8 == 6) {
      r.streams.push_back(ResumeStream{v, 0, 0, 0, ErrorCode::kNoError});
      continue;
    }
    if (r.streams.empty()) continue;
    ResumeStream& s = r.streams[which % r.streams.size()];
    switch (field % 8) {
      case 0:
        s.received += static_cast<int16_t>(v);
        break;
      case 1:
        s.delivered += static_cast<int16_t>(v);
        break;
      case 2:
        s.flags = static_cast<uint8_t>(v);
        break;
      case 3:
        s.error = static_cast<ErrorCode>(v);
        break;
      case 4:
        s.id = v;
        break;
      default:
        r.streams.erase(r.streams.begin() + which % r.streams.size());
        break;
    }
  }
  if (p < end && p[0] == 0xFF) ++p;
  return edited;
}

void Run(const uint8_t* data, size_t size) {
  if (size < 2) return;
  Side client(true);
  Side old_server(false);
  BuildOldSession(data[0], client, old_server);
  const bool raw = data[1] & 1;
  const uint8_t* p = data + 2;
  const uint8_t* end = data + size;

  // The client's new connection: SETTINGS, then RESUME and whatever follows.
  client.mux.Start();
  Buffer wire;
  wire.Append(client.mux.output().data(), client.mux.output().size());
  client.mux.output().Clear();
  bool honest = false;
  if (!raw) {
    ResumePayload r;
    std::memset(r.session_id, 0xAB, kSessionIdSize);
    r.last_id = client.mux.last_stream_id();
    r.streams = client.mux.ResumeState();
    honest = !ApplyEdits(p, end, r) && p == end;  // Frames after it could be anything.
    AppendResume(wire, r);
  }
  wire.Append(p, static_cast<size_t>(end - p));

  Side fresh(false);
  fresh.mux.Start();
  size_t consumed = 0;
  Status st = fresh.mux.Feed(wire.data(), wire.size(), &consumed);
  FUZZ_CHECK(consumed <= wire.size());
  if (!st.ok()) {
    FUZZ_CHECK(st.code() == Code::kProtocol && !st.message().empty());
    FUZZ_CHECK(!honest);
    return;
  }
  if (!fresh.resume) {
    FUZZ_CHECK(!honest);
    FUZZ_CHECK(!fresh.mux.resume_requested());
    return;
  }
  FUZZ_CHECK(fresh.mux.resume_requested());
  // What Session::Attach() does with the old session's Mux.
  Mux& mux = old_server.mux;
  mux.AdoptPeerSettings(fresh.mux.peer_settings());
  mux.SendResumeOk(ResumeOkPayload{mux.last_stream_id(), mux.ResumeState()});
  st = mux.ResumeWith(fresh.resume->streams, fresh.resume->last_id);
  if (!st.ok()) {
    FUZZ_CHECK(!st.message().empty());
    FUZZ_CHECK(!honest);
    return;
  }
  FUZZ_CHECK(!mux.detached());
  FUZZ_CHECK(mux.stream_count() <= 4);
  CheckOutput(mux.output());
  for (const ResumeStream& s : mux.ResumeState()) FUZZ_CHECK(s.delivered <= s.received);
  // The rest of the connection belongs to the resumed session.
  if (consumed < wire.size()) {
    st = mux.Feed(wire.data() + consumed, wire.size() - consumed);
    if (!st.ok()) {
      FUZZ_CHECK(st.code() == Code::kProtocol && !st.message().empty());
      return;
    }
  }
  if (!honest) return;

  // The client reads RESUME_OK and reconciles too; then everything must arrive exactly once.
  Buffer down;
  down.Append(mux.output().data(), mux.output().size());
  mux.output().Clear();
  FUZZ_CHECK(down.size() >= kFrameHeaderSize);
  Result<FrameHeader> h = DecodeFrameHeader(down.data(), kMaxFramePayloadLimit);
  FUZZ_CHECK(h && h->type == FrameType::kResumeOk);
  Result<ResumeOkPayload> ok = DecodeResumeOk(down.data() + kFrameHeaderSize, h->length);
  FUZZ_CHECK(ok.has_value());
  // The client's Mux saw no SETTINGS on this connection yet: give it the fresh mux's.
  Buffer settings;
  AppendSettings(settings, {{SettingId::kStreamWindow, 64},
                            {SettingId::kSessionWindow, 256},
                            {SettingId::kMaxStreams, 4}});
  FUZZ_CHECK(client.mux.Feed(settings.data(), settings.size()).ok());
  st = client.mux.ResumeWith(ok->streams, ok->last_id);
  FUZZ_CHECK(st.ok());
  const size_t rest = kFrameHeaderSize + h->length;
  st = client.mux.Feed(down.data() + rest, down.size() - rest);
  FUZZ_CHECK(st.ok());
  for (int round = 0; round < 64; ++round) {
    for (auto& [id, n] : client.sent) client.Send(id, 256);
    for (auto& [id, n] : old_server.sent) old_server.Send(id, 0);
    FUZZ_CHECK(Pump(client, old_server).ok());
  }
  for (const auto& [id, n] : client.sent) {
    if (client.broken.count(id) || old_server.broken.count(id)) continue;
    const std::string& got = old_server.received[id];
    FUZZ_CHECK(got.size() == n);
    for (size_t i = 0; i < got.size(); ++i) {
      FUZZ_CHECK(static_cast<uint8_t>(got[i]) == PatternByte(id, i));
    }
  }
  for (const auto& [id, n] : old_server.sent) {
    if (client.broken.count(id) || old_server.broken.count(id)) continue;
    const std::string& got = client.received[id];
    FUZZ_CHECK(got.size() == n);
    for (size_t i = 0; i < got.size(); ++i) {
      FUZZ_CHECK(static_cast<uint8_t>(got[i]) == PatternByte(id, i));
    }
  }
}

}  // namespace
}  // namespace pipegate

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pipegate::Run(data, size);
  // DecodeResume on its own: what decodes re-encodes to the same payload.
  if (pipegate::Result<pipegate::ResumePayload> r = pipegate::DecodeResume(data, size)) {
    pipegate::Buffer b;
    pipegate::AppendResume(b, *r);
    if (b.size() != pipegate::kFrameHeaderSize + size ||
        std::memcmp(b.data() + pipegate::kFrameHeaderSize, data, size) != 0) {
      std::fprintf(stderr, "resume_fuzz: DecodeResume does not round-trip\n");
      std::abort();
    }
  }
  return 0;
}
