// Fuzz target for the frame codec and the stream multiplexer.
//
// The input is a sequence of frames as a peer would send them. It goes
//   1. through DecodeFrameHeader and every typed decoder (what decodes must re-encode the same),
//   and
//   2. into a server Mux and a client Mux, after a valid SETTINGS frame unless the input starts
//      with its own SETTINGS. Each Mux is fed the input whole, one byte at a time and in 7-byte
//      pieces: the events, the bytes delivered and the final status must not depend on the
//      chunking. Everything a Mux sends must be well-formed, with contiguous DATA offsets.
// The callbacks react like an application would: accept or reject opens, consume data, stop or
// abort streams marked by their first byte, answer FIN, and write whenever there is credit. They
// consume in fixed blocks and stop only between frames, so that the credit they grant does not
// depend on the chunking either.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
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
  std::fprintf(stderr, "mux_fuzz:%d: invariant failed: %s\n", line, what);
  std::abort();
}
#define FUZZ_CHECK(cond)                \
  do {                                  \
    if (!(cond)) Fail(#cond, __LINE__); \
  } while (0)

// ---- 1. The decoders on their own ----

bool SameBytes(const Buffer& b, const uint8_t* p, size_t n) {
  return b.size() == kFrameHeaderSize + n &&
         (n == 0 || std::memcmp(b.data() + kFrameHeaderSize, p, n) == 0);
}

void FuzzDecoders(const uint8_t* data, size_t size) {
  if (size < kFrameHeaderSize) return;
  Result<FrameHeader> h = DecodeFrameHeader(data, kMaxFramePayloadLimit);
  if (h) {
    FUZZ_CHECK(static_cast<uint8_t>(h->type) <= kMaxFrameType);
    FUZZ_CHECK(h->length <=
               (h->type == FrameType::kData ? kMaxFramePayloadLimit : kMaxControlPayload));
    uint8_t again[kFrameHeaderSize];
    EncodeFrameHeader(again, *h);
    FUZZ_CHECK(std::memcmp(again, data, kFrameHeaderSize) == 0);
  } else {
    FUZZ_CHECK(h.error().code() == Code::kProtocol);
    FUZZ_CHECK(!h.error().message().empty());
  }

  const uint8_t* p = data + kFrameHeaderSize;
  size_t n = size - kFrameHeaderSize;
  if (Result<OpenPayload> o = DecodeOpen(p, n)) {
    Buffer b;
    AppendOpen(b, 1, *o);
    FUZZ_CHECK(SameBytes(b, p, n));
  }
  if (Result<OpenOkPayload> ok = DecodeOpenOk(p, n)) {
    Buffer b;
    AppendOpenOk(b, 1, *ok);
    Result<OpenOkPayload> again = DecodeOpenOk(b.data() + kFrameHeaderSize, 8);
    FUZZ_CHECK(again && again->kind == ok->kind && again->access == ok->access &&
               again->flags == ok->flags && again->max_message == ok->max_message);
  }
  if (Result<CreditPayload> c = DecodeCredit(p, n)) {
    FUZZ_CHECK(c->delivered <= c->limit);
    Buffer b;
    AppendCredit(b, 1, *c);
    FUZZ_CHECK(SameBytes(b, p, n));
  }
  if (Result<ResetPayload> r = DecodeReset(p, n)) {
    FUZZ_CHECK(r->reason.size() <= kMaxReasonLength);
    Buffer b;
    AppendReset(b, 1, *r);
    Result<ResetPayload> again = DecodeReset(b.data() + kFrameHeaderSize, b.size() - 12);
    FUZZ_CHECK(again && again->error == r->error && again->final_offset == r->final_offset &&
               again->reason == r->reason);
  }
  if (Result<StopPayload> s = DecodeStop(p, n)) {
    FUZZ_CHECK(s->reason.size() <= kMaxReasonLength);
    Buffer b;
    AppendStop(b, 1, *s);
    Result<StopPayload> again = DecodeStop(b.data() + kFrameHeaderSize, b.size() - 12);
    FUZZ_CHECK(again && again->error == s->error && again->reason == s->reason);
  }
  if (Result<uint64_t> v = DecodePing(p, n)) {
    Buffer b;
    AppendPing(b, 0, *v);
    FUZZ_CHECK(SameBytes(b, p, n));
  }
  if (Result<std::vector<Setting>> s = DecodeSettings(p, n)) {
    FUZZ_CHECK(s->size() * 6 == n);
    Buffer b;
    AppendSettings(b, *s);
    FUZZ_CHECK(SameBytes(b, p, n));
  }
  if (Result<GoawayPayload> g = DecodeGoaway(p, n)) {
    Buffer b;
    AppendGoaway(b, *g);
    Result<GoawayPayload> again = DecodeGoaway(b.data() + kFrameHeaderSize, b.size() - 12);
    FUZZ_CHECK(again && again->last_stream_id == g->last_stream_id && again->error == g->error &&
               again->reason == g->reason);
  }
  if (Result<std::vector<ListEntry>> e = DecodeListReply(p, n)) {
    Buffer b;
    AppendListReply(b, 0, *e);
    FUZZ_CHECK(SameBytes(b, p, n));
  }
}

// ---- 2. A Mux fed by the fuzzer ----

constexpr uint32_t kPeerMaxFrame = kDefaultMaxFramePayload;
constexpr uint32_t kStreamWindow = 64;
constexpr uint32_t kSessionWindow = 256;
// The Mux sends credit once a quarter of a window has been consumed since the last update.
constexpr size_t kConsumeBlock = kSessionWindow / 4;
static_assert(kConsumeBlock >= kStreamWindow / 4 && kConsumeBlock <= kStreamWindow);

MuxOptions FuzzOptions(bool client) {
  MuxOptions o;
  o.is_client = client;
  o.max_frame_payload = kDefaultMaxFramePayload;
  o.stream_window = kStreamWindow;  // Small, so that tiny inputs reach the flow-control paths.
  o.session_window = kSessionWindow;
  o.max_streams = 3;
  return o;
}

class FuzzCallbacks : public MuxCallbacks {
 public:
  explicit FuzzCallbacks(bool client) : client_(client) {}
  void Attach(Mux* mux) { mux_ = mux; }

  std::vector<std::string> events;
  std::map<uint32_t, size_t> received;

  void OnMuxReady() override { Log("ready", 0); }
  void OnOpenRequest(uint32_t id, const OpenPayload& open) override {
    FUZZ_CHECK(!client_);
    Seen(id);
    Log("open", id);
    FUZZ_CHECK(mux_->HasStream(id));
    if (open.name.empty()) {
      mux_->Reject(id, ErrorCode::kNotFound, "no such pipe");
    } else if ((open.wait_ms & 1) == 0) {
      mux_->Accept(id, OpenOkPayload{1, open.access});
      Send(id);
    }
    // An odd wait_ms leaves the open unanswered, like a gateway waiting for a busy pipe.
  }
  void OnOpenAccepted(uint32_t id, const OpenOkPayload&) override {
    FUZZ_CHECK(client_);
    Seen(id);
    Log("accepted", id);
    Send(id);
  }
  void OnStreamData(uint32_t id, const uint8_t* data, size_t len) override {
    Seen(id);
    FUZZ_CHECK(len > 0);
    FUZZ_CHECK(mux_->HasStream(id));
    size_t& total = received[id];
    // A stream whose first byte is '!' or '#' is stopped or aborted at the next GOAWAY, LIST or
    // LIST_REPLY: between frames, so that what happens does not depend on the chunking (a stop
    // in the middle of a frame returns connection credit at chunking-dependent points).
    if (total == 0 && (data[0] == '!' || data[0] == '#')) marks_[id] = static_cast<char>(data[0]);
    total += len;
    // Consume in whole blocks of kConsumeBlock. Each such call crosses both credit thresholds,
    // so the credit state at every frame boundary does not depend on how the frame was split.
    size_t& pending = unconsumed_[id];
    pending += len;
    size_t blocks = pending / kConsumeBlock * kConsumeBlock;
    if (blocks > 0) {
      pending -= blocks;
      mux_->Consumed(id, blocks);
    }
  }
  void OnStreamFin(uint32_t id) override {
    Seen(id);
    Log("fin", id);
    size_t rest = unconsumed_[id];
    unconsumed_[id] = 0;
    if (rest > 0) mux_->Consumed(id, rest);
    if (id % 4 == 3) {
      mux_->ResetSending(id, ErrorCode::kIo, "fuzz reset");
    } else {
      Send(id);
      mux_->SendFin(id);
    }
  }
  void OnStreamReset(uint32_t id, ErrorCode error, std::string_view) override {
    Seen(id);
    Log("reset", id, static_cast<uint32_t>(error));
  }
  void OnStreamStopped(uint32_t id, ErrorCode error, std::string_view) override {
    Seen(id);
    Log("stopped", id, static_cast<uint32_t>(error));
  }
  void OnStreamWritable(uint32_t id) override {
    Seen(id);
    Log("writable", id);
    Send(id);
  }
  void OnStreamDelivered(uint32_t id) override {
    Seen(id);
    Log("delivered", id);
  }
  void OnStreamClosed(uint32_t id) override {
    Seen(id);
    FUZZ_CHECK(!mux_->HasStream(id));
    closed_.insert(id);
    Log("closed", id);
  }
  void OnListRequest() override {
    FUZZ_CHECK(!client_);
    Log("list", 0);
    mux_->SendListReply({{"a", 1, 1}, {"bb", 2, 3}});
    ApplyMarks();
  }
  void OnListReply(const std::vector<ListEntry>& entries, bool more) override {
    FUZZ_CHECK(client_);
    Log("list_reply", static_cast<uint32_t>(entries.size()), more);
    ApplyMarks();
  }
  void OnGoaway(const GoawayPayload& g) override {
    Log("goaway", g.last_stream_id);
    ApplyMarks();
  }

 private:
  void ApplyMarks() {
    std::map<uint32_t, char> marks;
    marks.swap(marks_);
    for (auto [id, mark] : marks) {
      if (closed_.count(id) != 0) continue;
      Log(mark == '!' ? "stop" : "abort", id);
      if (mark == '!') {
        mux_->StopReading(id, ErrorCode::kBrokenPipe, "fuzz stop");
      } else {
        mux_->Abort(id, ErrorCode::kCancel, "fuzz abort");
      }
    }
  }

  // No event may name a stream after OnStreamClosed: the app has forgotten it.
  void Seen(uint32_t id) { FUZZ_CHECK(closed_.count(id) == 0); }
  void Log(const char* what, uint32_t id, uint32_t extra = 0) {
    events.push_back(std::string(what) + " " + std::to_string(id) + " " + std::to_string(extra));
  }
  void Send(uint32_t id) {
    static const uint8_t kBytes[100] = {};
    size_t window = mux_->SendWindow(id);
    size_t n = mux_->SendData(id, kBytes, sizeof kBytes);
    FUZZ_CHECK(n <= window);
    FUZZ_CHECK(n == std::min(window, sizeof kBytes));
  }

  bool client_;
  Mux* mux_ = nullptr;
  std::set<uint32_t> closed_;
  std::map<uint32_t, size_t> unconsumed_;
  std::map<uint32_t, char> marks_;
};

// Checks what a Mux sent: well-formed frames, contiguous DATA offsets, nothing after FIN.
class OutputChecker {
 public:
  explicit OutputChecker(uint32_t peer_max_frame) : peer_max_frame_(peer_max_frame) {}

  void Take(Buffer& out) {
    const uint8_t* p = out.data();
    size_t n = out.size();
    size_t i = 0;
    while (i < n) {
      FUZZ_CHECK(n - i >= kFrameHeaderSize);
      Result<FrameHeader> h = DecodeFrameHeader(p + i, peer_max_frame_);
      FUZZ_CHECK(h.has_value());
      FUZZ_CHECK(n - i - kFrameHeaderSize >= h->length);
      const uint8_t* body = p + i + kFrameHeaderSize;
      Check(*h, body, h->length);
      i += kFrameHeaderSize + h->length;
    }
    out.Clear();
  }

 private:
  void Check(const FrameHeader& h, const uint8_t* body, size_t n) {
    if (first_) FUZZ_CHECK(h.type == FrameType::kSettings);
    first_ = false;
    switch (h.type) {
      case FrameType::kData: {
        uint64_t offset = GetU64(body);
        FUZZ_CHECK(fin_.count(h.stream_id) == 0);
        FUZZ_CHECK(offset == next_[h.stream_id]);
        next_[h.stream_id] += n - kDataPrefixSize;
        if (h.flags & kFlagFin) fin_.insert(h.stream_id);
        break;
      }
      case FrameType::kCredit:
        FUZZ_CHECK(DecodeCredit(body, n).has_value());
        break;
      case FrameType::kOpen:
        FUZZ_CHECK(DecodeOpen(body, n).has_value());
        break;
      case FrameType::kOpenOk:
        FUZZ_CHECK(DecodeOpenOk(body, n).has_value());
        break;
      case FrameType::kReset: {
        Result<ResetPayload> r = DecodeReset(body, n);
        FUZZ_CHECK(r.has_value());
        FUZZ_CHECK(r->final_offset == next_[h.stream_id]);
        fin_.insert(h.stream_id);
        break;
      }
      case FrameType::kStop:
        FUZZ_CHECK(DecodeStop(body, n).has_value());
        break;
      case FrameType::kExit:
        // Only a gateway sends EXIT, and always before the FIN of its direction.
        FUZZ_CHECK(DecodeExit(body, n).has_value());
        FUZZ_CHECK(fin_.count(h.stream_id) == 0);
        break;
      case FrameType::kPing:
        FUZZ_CHECK(DecodePing(body, n).has_value());
        break;
      case FrameType::kSettings:
        FUZZ_CHECK(DecodeSettings(body, n).has_value());
        break;
      case FrameType::kGoaway:
        FUZZ_CHECK(DecodeGoaway(body, n).has_value());
        break;
      case FrameType::kListReply:
        FUZZ_CHECK(DecodeListReply(body, n).has_value());
        break;
      case FrameType::kList:
        break;
      case FrameType::kSession:
        FUZZ_CHECK(DecodeSession(body, n).has_value());
        break;
      case FrameType::kResume:
        FUZZ_CHECK(DecodeResume(body, n).has_value());
        break;
      case FrameType::kResumeOk:
        FUZZ_CHECK(DecodeResumeOk(body, n).has_value());
        break;
    }
  }

  uint32_t peer_max_frame_;
  bool first_ = true;
  std::map<uint32_t, uint64_t> next_;
  std::set<uint32_t> fin_;
};

struct Outcome {
  bool ok = true;
  std::string message;
  std::vector<std::string> events;
  std::map<uint32_t, size_t> received;

  bool operator==(const Outcome& o) const {
    return ok == o.ok && message == o.message && events == o.events && received == o.received;
  }
};

Outcome RunMux(bool client, const uint8_t* data, size_t size, size_t chunk) {
  FuzzCallbacks cb(client);
  Mux mux(FuzzOptions(client), &cb);
  cb.Attach(&mux);
  bool own_settings = size > 0 && data[0] == static_cast<uint8_t>(FrameType::kSettings);
  OutputChecker checker(own_settings ? kMaxFramePayloadLimit : kPeerMaxFrame);
  mux.Start();
  if (client) {
    for (const char* name : {"a", "b", ""}) FUZZ_CHECK(mux.Open(OpenPayload{3, 0, 0, name}));
    mux.RequestList();
  }
  checker.Take(mux.output());
  Status st;
  if (!own_settings) {
    Buffer prefix;
    AppendSettings(prefix, {{SettingId::kMaxFramePayload, kPeerMaxFrame},
                            {SettingId::kStreamWindow, 64},
                            {SettingId::kSessionWindow, 256},
                            {SettingId::kMaxStreams, 4}});
    st = mux.Feed(prefix.data(), prefix.size());
    FUZZ_CHECK(st.ok());
    checker.Take(mux.output());
  }
  size_t i = 0;
  while (st.ok() && i < size) {
    size_t n = chunk == 0 ? size - i : std::min(chunk, size - i);
    st = mux.Feed(data + i, n);
    i += n;
    if (st.ok()) checker.Take(mux.output());
  }
  if (!st.ok()) {
    FUZZ_CHECK(!st.message().empty());
    FUZZ_CHECK(st.code() == Code::kProtocol);
  }
  // Never more streams than the limit (server) or than were opened (client).
  FUZZ_CHECK(mux.stream_count() <= 3);
  Outcome out;
  out.ok = st.ok();
  out.message = st.message();
  out.events = std::move(cb.events);
  out.received = std::move(cb.received);
  return out;
}

void Print(const char* label, const Outcome& o) {
  std::fprintf(stderr, "%s: %s \"%s\"\n", label, o.ok ? "ok" : "error", o.message.c_str());
  for (const std::string& e : o.events) std::fprintf(stderr, "  %s\n", e.c_str());
  for (const auto& [id, n] : o.received) std::fprintf(stderr, "  stream %u: %zu bytes\n", id, n);
}

// The outcome may not depend on how the input was split.
void ExpectSame(const Outcome& whole, const Outcome& split, size_t chunk, bool client) {
  if (whole == split) return;
  std::fprintf(stderr, "%s mux: fed whole and in %zu-byte pieces, the outcomes differ\n",
               client ? "client" : "server", chunk);
  Print("whole", whole);
  Print("split", split);
  Fail("whole == split", __LINE__);
}

void FuzzMux(bool client, const uint8_t* data, size_t size) {
  Outcome whole = RunMux(client, data, size, 0);
  ExpectSame(whole, RunMux(client, data, size, 7), 7, client);
  if (size <= 16384) ExpectSame(whole, RunMux(client, data, size, 1), 1, client);
}

}  // namespace
}  // namespace pipegate

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pipegate::FuzzDecoders(data, size);
  pipegate::FuzzMux(/*client=*/false, data, size);
  pipegate::FuzzMux(/*client=*/true, data, size);
  return 0;
}
