// Writes the seed corpus of mux_fuzz into the directory given as the only argument. Run once;
// the files are committed. Each seed is a short sequence of frames as a peer would send them
// (mux_fuzz.cc feeds a SETTINGS frame first unless the seed starts with its own).

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <string>

#include "pipegate/buffer.h"
#include "pipegate/frame.h"

namespace pipegate {
namespace {

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

void Data(Buffer& b, uint32_t id, uint64_t offset, const std::string& s, bool fin = false) {
  AppendData(b, id, fin ? kFlagFin : 0, offset, reinterpret_cast<const uint8_t*>(s.data()),
             s.size());
}

bool Write(const std::string& dir, const char* name, const Buffer& b) {
  std::ofstream out(dir + "/" + name, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  return static_cast<bool>(out);
}

}  // namespace
}  // namespace pipegate

int main(int argc, char** argv) {
  using namespace pipegate;  // NOLINT(google-build-using-namespace): a tiny generator.
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  bool ok = true;
  {
    // Open, data with FIN, credit: the happy path of a gateway stream.
    Buffer b;
    AppendOpen(b, 1, OpenPayload{3, 0, 0, "logs"});
    Data(b, 1, 0, "hello", true);
    AppendCredit(b, 1, CreditPayload{0, 1000});
    ok &= Write(dir, "open_data_fin", b);
  }
  {
    // Marked streams: the app stops reading (!) or aborts (#) at the next GOAWAY; more data for
    // them is then dropped. An empty name is rejected.
    Buffer b;
    AppendOpen(b, 1, OpenPayload{1, 0, 0, "a"});
    Data(b, 1, 0, "!stop");
    AppendOpen(b, 3, OpenPayload{2, 0, 0, "b"});
    Data(b, 3, 0, "#abort");
    AppendOpen(b, 5, OpenPayload{3, 0, 0, ""});
    AppendGoaway(b, GoawayPayload{0, ErrorCode::kNoError, "marks"});
    Data(b, 1, 5, "dropped", true);
    AppendPing(b, 0, 1);
    ok &= Write(dir, "stop_abort_reject", b);
  }
  {
    // 100 bytes into a 64-byte stream window: the stream is reset, the session carries on.
    Buffer b;
    AppendOpen(b, 1, OpenPayload{3, 0, 0, "x"});
    Data(b, 1, 0, std::string(100, 'z'));
    AppendOpen(b, 3, OpenPayload{3, 0, 0, "y"});
    Data(b, 3, 0, "ok", true);
    ok &= Write(dir, "stream_window_exceeded", b);
  }
  {
    // The peer's own SETTINGS, then a pending open (odd wait_ms), LIST and PING.
    Buffer b;
    AppendSettings(b, {{SettingId::kMaxFramePayload, kDefaultMaxFramePayload},
                       {SettingId::kStreamWindow, 10},
                       {SettingId::kSessionWindow, 20},
                       {SettingId::kMaxStreams, 1},
                       {static_cast<SettingId>(99), 5}});
    AppendOpen(b, 1, OpenPayload{3, kOpenFlagLines, 1001, "pending"});
    AppendList(b);
    AppendPing(b, 0, 0x0102030405060708ull);
    ok &= Write(dir, "own_settings", b);
  }
  {
    // Frames a gateway sends: answers for the client's streams 1, 3, 5 and its LIST.
    Buffer b;
    AppendOpenOk(b, 1, OpenOkPayload{1, 3});
    Data(b, 1, 0, "from the gateway");
    AppendOpenOk(b, 3, OpenOkPayload{2, 2});
    AppendOpenOk(b, 5, OpenOkPayload{2, 3, kExportMessages, 65536});
    AppendReset(b, 5, ResetPayload{ErrorCode::kNotFound, 0, "no such pipe"});
    AppendStop(b, 3, StopPayload{ErrorCode::kBrokenPipe, "reader gone"});
    AppendListReply(b, kFlagMore,
                    {{"logs", 1, 1, 0, 1, 1, 0}, {"events", 2, 3, kExportMessages, 2, 0, 65536}});
    AppendListReply(b, 0, {});
    AppendGoaway(b, GoawayPayload{0, ErrorCode::kShutdown, "restart"});
    ok &= Write(dir, "gateway_answers", b);
  }
  {
    // Frames for streams that are already closed must be ignored.
    Buffer b;
    AppendOpen(b, 1, OpenPayload{3, 0, 0, "z"});
    AppendReset(b, 1, ResetPayload{ErrorCode::kCancel, 0, ""});
    AppendStop(b, 1, StopPayload{ErrorCode::kCancel, ""});
    Data(b, 1, 0, "late", true);
    AppendCredit(b, 1, CreditPayload{0, 5});
    AppendPing(b, kFlagAck, 7);
    ok &= Write(dir, "late_frames", b);
  }
  {
    // Offsets and credit at the top of the u64 range.
    Buffer b;
    AppendOpen(b, 1, OpenPayload{3, 0, 0, "big"});
    AppendCredit(b, 0, CreditPayload{0, kU64Max});
    AppendCredit(b, 1, CreditPayload{0, kU64Max});
    Data(b, 1, kU64Max - 3, "tail");
    AppendOpen(b, 3, OpenPayload{3, 0, 0, "big2"});
    AppendCredit(b, 3, CreditPayload{kU64Max, kU64Max});
    ok &= Write(dir, "u64_edges", b);
  }
  {
    // An unknown frame type.
    Buffer b;
    uint8_t* p = b.Prepare(kFrameHeaderSize);
    EncodeFrameHeader(p, FrameHeader{FrameType::kPing, 0, 0, 0});
    p[0] = 0x42;
    b.Commit(kFrameHeaderSize);
    ok &= Write(dir, "unknown_type", b);
  }
  {
    // An OPEN whose header promises more than follows.
    Buffer b;
    AppendOpen(b, 1, OpenPayload{3, 0, 0, "truncated-name"});
    Buffer cut;
    cut.Append(b.data(), b.size() - 5);
    ok &= Write(dir, "truncated", cut);
  }
  {
    // DATA after FIN, then GOAWAY and an OPEN after it.
    Buffer b;
    AppendOpen(b, 1, OpenPayload{3, 0, 0, "f"});
    Data(b, 1, 0, "", true);
    Data(b, 1, 0, "more");
    AppendGoaway(b, GoawayPayload{1, ErrorCode::kNoError, ""});
    AppendOpen(b, 3, OpenPayload{3, 0, 0, "g"});
    ok &= Write(dir, "after_fin", b);
  }
  ok &= Write(dir, "empty", Buffer());
  if (!ok) {
    std::fprintf(stderr, "mux_corpus_gen: cannot write into %s\n", dir.c_str());
    return 1;
  }
  return 0;
}
