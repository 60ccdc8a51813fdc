// Golden bytes of pipegate/1: every frame type written out by hand from docs/protocol.md §2–§3,
// §8 and §11, byte by byte, then encoded with the codec and compared, and decoded and compared
// field by field. The round-trip tests in frame_test.cc use one codec on both sides, so a
// mistake that both halves share (a swapped field, a wrong width, little-endian) would pass
// there; here the expected bytes come from the specification, not from the code.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "pipegate/buffer.h"
#include "pipegate/frame.h"

namespace pipegate {
namespace {

// Bytes from a hex string; spaces and '|' separate fields for the reader and are skipped.
std::vector<uint8_t> Hex(const std::string& text) {
  std::vector<uint8_t> out;
  int high = -1;
  for (char c : text) {
    int v;
    if (c >= '0' && c <= '9') {
      v = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      v = c - 'a' + 10;
    } else {
      EXPECT_TRUE(c == ' ' || c == '|') << "bad character in golden hex: " << c;
      continue;
    }
    if (high < 0) {
      high = v;
    } else {
      out.push_back(static_cast<uint8_t>(high << 4 | v));
      high = -1;
    }
  }
  EXPECT_LT(high, 0) << "odd number of hex digits";
  return out;
}

// Hex of a string's bytes, for names and reasons.
std::string HexOf(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 0xf];
  }
  return out;
}

std::vector<uint8_t> Bytes(const Buffer& b) { return {b.data(), b.data() + b.size()}; }

// Decodes the header of @p frame and checks it; returns the payload.
std::vector<uint8_t> Payload(const std::vector<uint8_t>& frame, FrameType type, uint8_t flags,
                             uint32_t stream_id) {
  EXPECT_GE(frame.size(), kFrameHeaderSize);
  if (frame.size() < kFrameHeaderSize) return {};
  Result<FrameHeader> h = DecodeFrameHeader(frame.data(), kMaxFramePayloadLimit);
  EXPECT_TRUE(h) << h.error().message();
  if (!h) return {};
  EXPECT_EQ(h->type, type);
  EXPECT_EQ(h->flags, flags);
  EXPECT_EQ(h->stream_id, stream_id);
  EXPECT_EQ(h->length, frame.size() - kFrameHeaderSize);
  return {frame.begin() + kFrameHeaderSize, frame.end()};
}

// type | flags | reserved | stream_id | length
TEST(FrameGolden, HeaderLayoutIsBigEndianWithReservedZero) {
  const std::vector<uint8_t> golden = Hex("07 | 00 | 0000 | 00000000 | 00000000");
  Buffer b;
  AppendSettings(b, {});
  EXPECT_EQ(Bytes(b), golden);
  uint8_t out[kFrameHeaderSize];
  EncodeFrameHeader(out, FrameHeader{FrameType::kData, kFlagFin, 0x01020304, 0x0a0b0c0d});
  EXPECT_EQ(std::vector<uint8_t>(out, out + kFrameHeaderSize),
            Hex("00 | 01 | 0000 | 01020304 | 0a0b0c0d"));
  // A non-zero reserved field is refused (§2).
  std::vector<uint8_t> bad = Hex("06 | 00 | 0001 | 00000000 | 00000008");
  EXPECT_FALSE(DecodeFrameHeader(bad.data(), kMaxFramePayloadLimit));
}

// DATA (0x0): offset u64 | data; FIN is flag 0x1.
TEST(FrameGolden, Data) {
  const std::vector<uint8_t> golden =
      Hex("00 | 01 | 0000 | 00000003 | 0000000b | 0000000100000002 | 616263");
  Buffer b;
  const uint8_t abc[] = {'a', 'b', 'c'};
  AppendData(b, 3, kFlagFin, 0x0000000100000002ULL, abc, sizeof abc);
  EXPECT_EQ(Bytes(b), golden);
  std::vector<uint8_t> p = Payload(golden, FrameType::kData, kFlagFin, 3);
  ASSERT_EQ(p.size(), 11u);
  EXPECT_EQ(GetU64(p.data()), 0x0000000100000002ULL);
  EXPECT_EQ(std::string(p.begin() + 8, p.end()), "abc");
}

// CREDIT (0x1): delivered u64 | limit u64, on a stream or on stream 0.
TEST(FrameGolden, Credit) {
  const std::vector<uint8_t> golden =
      Hex("01 | 00 | 0000 | 00000005 | 00000010 | 0000000000001000 | 0000000000101000");
  Buffer b;
  AppendCredit(b, 5, CreditPayload{0x1000, 0x101000});
  EXPECT_EQ(Bytes(b), golden);
  std::vector<uint8_t> p = Payload(golden, FrameType::kCredit, 0, 5);
  Result<CreditPayload> c = DecodeCredit(p.data(), p.size());
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->delivered, 0x1000u);
  EXPECT_EQ(c->limit, 0x101000u);

  const std::vector<uint8_t> connection =
      Hex("01 | 00 | 0000 | 00000000 | 00000010 | 0000000000000000 | 0000000001000000");
  Buffer b0;
  AppendCredit(b0, 0, CreditPayload{0, 0x1000000});
  EXPECT_EQ(Bytes(b0), connection);
}

// OPEN (0x2): access u8 | flags u8 | wait_ms u32 | name_len u8 | name.
TEST(FrameGolden, Open) {
  const std::vector<uint8_t> golden = Hex("02 | 00 | 0000 | 00000001 | 0000000b | 02 | 01 | " +
                                          std::string("00007530 | 04 | ") + HexOf("logs"));
  Buffer b;
  AppendOpen(b, 1, OpenPayload{2, kOpenFlagLines, 30000, "logs"});
  EXPECT_EQ(Bytes(b), golden);
  std::vector<uint8_t> p = Payload(golden, FrameType::kOpen, 0, 1);
  Result<OpenPayload> o = DecodeOpen(p.data(), p.size());
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_EQ(o->access, 2);
  EXPECT_EQ(o->flags, kOpenFlagLines);
  EXPECT_EQ(o->wait_ms, 30000u);
  EXPECT_EQ(o->name, "logs");
  // The length must be exactly 7 + name_len.
  std::vector<uint8_t> longer = p;
  longer.push_back(0);
  EXPECT_FALSE(DecodeOpen(longer.data(), longer.size()));
}

// OPEN_OK (0x3): kind u8 | access u8 | flags u8 (MESSAGES 0x1) | reserved u8 | max_message u32.
TEST(FrameGolden, OpenOk) {
  const std::vector<uint8_t> golden =
      Hex("03 | 00 | 0000 | 00000007 | 00000008 | 02 | 03 | 01 | 00 | 00010000");
  Buffer b;
  AppendOpenOk(b, 7, OpenOkPayload{2, 3, kExportMessages, 65536});
  EXPECT_EQ(Bytes(b), golden);
  std::vector<uint8_t> p = Payload(golden, FrameType::kOpenOk, 0, 7);
  Result<OpenOkPayload> ok = DecodeOpenOk(p.data(), p.size());
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(ok->kind, 2);
  EXPECT_EQ(ok->access, 3);
  EXPECT_EQ(ok->flags, kExportMessages);
  EXPECT_EQ(ok->max_message, 65536u);
}

// EXIT (0xE): how u8 | reserved u8[3] | code u32 (8 bytes), on the stream.
TEST(FrameGolden, Exit) {
  const std::vector<uint8_t> golden =
      Hex("0e | 00 | 0000 | 00000005 | 00000008 | 02 | 000000 | 00000009");
  Buffer b;
  AppendExit(b, 5, ExitPayload{ExitHow::kSignaled, 9});
  EXPECT_EQ(Bytes(b), golden);
  std::vector<uint8_t> p = Payload(golden, FrameType::kExit, 0, 5);
  Result<ExitPayload> e = DecodeExit(p.data(), p.size());
  ASSERT_TRUE(e) << e.error().message();
  EXPECT_EQ(e->how, ExitHow::kSignaled);
  EXPECT_EQ(e->code, 9u);
  // The exact length, and a known `how`.
  EXPECT_FALSE(DecodeExit(p.data(), p.size() - 1));
  const std::vector<uint8_t> unknown = Hex("04 000000 00000000");
  EXPECT_FALSE(DecodeExit(unknown.data(), unknown.size()));
}

// RESET (0x4): error u32 | final_offset u64 | reason.
TEST(FrameGolden, Reset) {
  const std::vector<uint8_t> golden = Hex("04 | 00 | 0000 | 00000009 | 00000010 | 00000004 | " +
                                          std::string("0000000000000400 | ") + HexOf("busy"));
  Buffer b;
  AppendReset(b, 9, ResetPayload{ErrorCode::kBusy, 0x400, "busy"});
  EXPECT_EQ(Bytes(b), golden);
  std::vector<uint8_t> p = Payload(golden, FrameType::kReset, 0, 9);
  Result<ResetPayload> r = DecodeReset(p.data(), p.size());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->error, ErrorCode::kBusy);
  EXPECT_EQ(r->final_offset, 0x400u);
  EXPECT_EQ(r->reason, "busy");
}

// STOP (0x5): error u32 | reason.
TEST(FrameGolden, Stop) {
  const std::vector<uint8_t> golden =
      Hex("05 | 00 | 0000 | 0000000b | 00000006 | 00000006 | " + HexOf("ep"));
  Buffer b;
  AppendStop(b, 11, StopPayload{ErrorCode::kBrokenPipe, "ep"});
  EXPECT_EQ(Bytes(b), golden);
  std::vector<uint8_t> p = Payload(golden, FrameType::kStop, 0, 11);
  Result<StopPayload> s = DecodeStop(p.data(), p.size());
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->error, ErrorCode::kBrokenPipe);
  EXPECT_EQ(s->reason, "ep");
}

// PING (0x6): opaque u64; ACK is flag 0x1.
TEST(FrameGolden, Ping) {
  const std::vector<uint8_t> golden =
      Hex("06 | 01 | 0000 | 00000000 | 00000008 | 0102030405060708");
  Buffer b;
  AppendPing(b, kFlagAck, 0x0102030405060708ULL);
  EXPECT_EQ(Bytes(b), golden);
  std::vector<uint8_t> p = Payload(golden, FrameType::kPing, kFlagAck, 0);
  Result<uint64_t> opaque = DecodePing(p.data(), p.size());
  ASSERT_TRUE(opaque) << opaque.error().message();
  EXPECT_EQ(*opaque, 0x0102030405060708ULL);
}

// SETTINGS (0x7): (id u16 | value u32)*, with the values §4 says pipegate sends.
TEST(FrameGolden, Settings) {
  const std::vector<uint8_t> golden =
      Hex("07 | 00 | 0000 | 00000000 | 00000018 | 0001 00010008 | 0002 00100000 | 0003 01000000 | "
          "0004 00000100");
  Buffer b;
  AppendSettings(b, {{SettingId::kMaxFramePayload, 65544},
                     {SettingId::kStreamWindow, 1048576},
                     {SettingId::kSessionWindow, 16777216},
                     {SettingId::kMaxStreams, 256}});
  EXPECT_EQ(Bytes(b), golden);
  std::vector<uint8_t> p = Payload(golden, FrameType::kSettings, 0, 0);
  Result<std::vector<Setting>> s = DecodeSettings(p.data(), p.size());
  ASSERT_TRUE(s) << s.error().message();
  ASSERT_EQ(s->size(), 4u);
  EXPECT_EQ((*s)[0].id, SettingId::kMaxFramePayload);
  EXPECT_EQ((*s)[0].value, 65544u);
  EXPECT_EQ((*s)[3].id, SettingId::kMaxStreams);
  EXPECT_EQ((*s)[3].value, 256u);
  // A length that is not a multiple of 6 is refused.
  EXPECT_FALSE(DecodeSettings(p.data(), 5));
}

// GOAWAY (0x8): last_stream_id u32 | error u32 | reason.
TEST(FrameGolden, Goaway) {
  const std::vector<uint8_t> golden =
      Hex("08 | 00 | 0000 | 00000000 | 0000000b | 00000011 | 0000000c | " + HexOf("bye"));
  Buffer b;
  AppendGoaway(b, GoawayPayload{17, ErrorCode::kShutdown, "bye"});
  EXPECT_EQ(Bytes(b), golden);
  std::vector<uint8_t> p = Payload(golden, FrameType::kGoaway, 0, 0);
  Result<GoawayPayload> g = DecodeGoaway(p.data(), p.size());
  ASSERT_TRUE(g) << g.error().message();
  EXPECT_EQ(g->last_stream_id, 17u);
  EXPECT_EQ(g->error, ErrorCode::kShutdown);
  EXPECT_EQ(g->reason, "bye");
}

// LIST (0xA): empty; LIST_REPLY (0xB): (name_len u8 | name | kind u8 | access u8 | flags u8 |
// clients u32 | max_clients u32 | max_message u32)*, MORE 0x1.
TEST(FrameGolden, ListAndListReply) {
  Buffer list;
  AppendList(list);
  EXPECT_EQ(Bytes(list), Hex("0a | 00 | 0000 | 00000000 | 00000000"));

  const std::vector<uint8_t> golden =
      Hex("0b | 01 | 0000 | 00000000 | 0000002a | 04 " + HexOf("logs") +
          " 01 01 00 00000001 00000001 00000000 | 06 " + HexOf("docker") +
          " 02 03 01 00000002 00000000 00001000");
  Buffer b;
  AppendListReply(b, kFlagMore,
                  {{"logs", 1, 1, 0, 1, 1, 0}, {"docker", 2, 3, kExportMessages, 2, 0, 4096}});
  EXPECT_EQ(Bytes(b), golden);
  std::vector<uint8_t> p = Payload(golden, FrameType::kListReply, kFlagMore, 0);
  Result<std::vector<ListEntry>> entries = DecodeListReply(p.data(), p.size());
  ASSERT_TRUE(entries) << entries.error().message();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[1].name, "docker");
  EXPECT_EQ((*entries)[1].flags, kExportMessages);
  EXPECT_EQ((*entries)[1].clients, 2u);
  EXPECT_EQ((*entries)[1].max_message, 4096u);
  EXPECT_EQ((*entries)[0].max_clients, 1u);
  EXPECT_EQ((*entries)[1].kind, 2);
  EXPECT_EQ((*entries)[1].access, 3);
}

// SESSION (0xC): session_id [16] | ttl_ms u32.
TEST(FrameGolden, Session) {
  const std::vector<uint8_t> golden =
      Hex("0c | 00 | 0000 | 00000000 | 00000014 | 000102030405060708090a0b0c0d0e0f | 000493e0");
  SessionPayload s;
  for (uint8_t i = 0; i < kSessionIdSize; ++i) s.session_id[i] = i;
  s.ttl_ms = 300000;
  Buffer b;
  AppendSession(b, s);
  EXPECT_EQ(Bytes(b), golden);
  std::vector<uint8_t> p = Payload(golden, FrameType::kSession, 0, 0);
  Result<SessionPayload> d = DecodeSession(p.data(), p.size());
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(std::memcmp(d->session_id, s.session_id, kSessionIdSize), 0);
  EXPECT_EQ(d->ttl_ms, 300000u);
}

// RESUME (0x9): session_id [16] | proof [32] | last_id u32 | stream_state*, and
// stream_state := id u32 | received u64 | delivered u64 | flags u8 | error u32 (25 bytes).
TEST(FrameGolden, ResumeAndResumeOk) {
  ResumePayload r;
  std::memset(r.session_id, 0xaa, kSessionIdSize);
  std::memset(r.proof, 0xbb, kResumeProofSize);
  r.last_id = 5;
  r.streams.push_back(
      ResumeStream{3, 0x20, 0x10, kResumeFinReceived | kResumeAccepted, ErrorCode::kNoError});
  const std::string state = "00000003 | 0000000000000020 | 0000000000000010 | 06 | 00000000";
  const std::vector<uint8_t> golden =
      Hex("09 | 00 | 0000 | 00000000 | 0000004d | " + std::string(32, 'a') + " | " +
          std::string(64, 'b') + " | 00000005 | " + state);
  Buffer b;
  AppendResume(b, r);
  EXPECT_EQ(Bytes(b), golden);
  std::vector<uint8_t> p = Payload(golden, FrameType::kResume, 0, 0);
  Result<ResumePayload> d = DecodeResume(p.data(), p.size());
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->last_id, 5u);
  ASSERT_EQ(d->streams.size(), 1u);
  EXPECT_EQ(d->streams[0].id, 3u);
  EXPECT_EQ(d->streams[0].received, 0x20u);
  EXPECT_EQ(d->streams[0].delivered, 0x10u);
  EXPECT_EQ(d->streams[0].flags, kResumeFinReceived | kResumeAccepted);

  ResumeOkPayload ok;
  ok.last_id = 7;
  ok.streams.push_back(ResumeStream{1, 0x100, 0x80, kResumeClosed, ErrorCode::kBrokenPipe});
  const std::vector<uint8_t> ok_golden =
      Hex("0d | 00 | 0000 | 00000000 | 0000001d | 00000007 | 00000001 | 0000000000000100 | "
          "0000000000000080 | 01 | 00000006");
  Buffer okb;
  AppendResumeOk(okb, ok);
  EXPECT_EQ(Bytes(okb), ok_golden);
  std::vector<uint8_t> okp = Payload(ok_golden, FrameType::kResumeOk, 0, 0);
  Result<ResumeOkPayload> okd = DecodeResumeOk(okp.data(), okp.size());
  ASSERT_TRUE(okd) << okd.error().message();
  ASSERT_EQ(okd->streams.size(), 1u);
  EXPECT_EQ(okd->streams[0].error, ErrorCode::kBrokenPipe);
  EXPECT_EQ(okd->streams[0].flags, kResumeClosed);
  // delivered > received is refused (§3).
  std::vector<uint8_t> bad = okp;
  PutU64(bad.data() + 4 + 4, 0x10);  // received below delivered (0x80).
  EXPECT_FALSE(DecodeResumeOk(bad.data(), bad.size()));
}

}  // namespace
}  // namespace pipegate
