#include "pipegate/frame.h"

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "pipegate/buffer.h"
#include "pipegate/status.h"

namespace pipegate {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();

std::vector<uint8_t> Bytes(const Buffer& b) { return {b.data(), b.data() + b.size()}; }

// A 12-byte header with every field given, reserved bytes included.
std::vector<uint8_t> RawHeader(uint8_t type, uint8_t flags, uint16_t reserved, uint32_t stream,
                               uint32_t length) {
  std::vector<uint8_t> h(kFrameHeaderSize);
  h[0] = type;
  h[1] = flags;
  PutU16(h.data() + 2, reserved);
  PutU32(h.data() + 4, stream);
  PutU32(h.data() + 8, length);
  return h;
}

Result<FrameHeader> Decode(const std::vector<uint8_t>& h,
                           uint32_t max_payload = kDefaultMaxFramePayload) {
  return DecodeFrameHeader(h.data(), max_payload);
}

// Decodes the header at the front of an encoded frame and checks that the payload length matches
// the bytes that follow it.
FrameHeader HeaderOf(const Buffer& b) {
  EXPECT_GE(b.size(), kFrameHeaderSize);
  Result<FrameHeader> h = DecodeFrameHeader(b.data(), kMaxFramePayloadLimit);
  EXPECT_TRUE(h.has_value()) << h.error().message();
  if (!h) return {};
  EXPECT_EQ(h->length, b.size() - kFrameHeaderSize);
  return *h;
}

const uint8_t* PayloadOf(const Buffer& b) { return b.data() + kFrameHeaderSize; }
size_t PayloadSize(const Buffer& b) { return b.size() - kFrameHeaderSize; }

void ExpectMalformed(const Status& st, const std::string& what) {
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kProtocol);
  EXPECT_THAT(st.message(), HasSubstr(what));
}

// ---- Big-endian helpers ----

TEST(FrameBytes, PutAndGetAreBigEndian) {
  uint8_t b[8] = {};
  PutU16(b, 0x1234);
  EXPECT_THAT(std::vector<uint8_t>(b, b + 2), ElementsAre(0x12, 0x34));
  EXPECT_EQ(GetU16(b), 0x1234);
  PutU32(b, 0xdeadbeef);
  EXPECT_THAT(std::vector<uint8_t>(b, b + 4), ElementsAre(0xde, 0xad, 0xbe, 0xef));
  EXPECT_EQ(GetU32(b), 0xdeadbeefu);
  PutU64(b, 0x0102030405060708ull);
  EXPECT_THAT(std::vector<uint8_t>(b, b + 8), ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));
  EXPECT_EQ(GetU64(b), 0x0102030405060708ull);
  PutU64(b, kU64Max);
  EXPECT_EQ(GetU64(b), kU64Max);
  PutU16(b, 0xffff);
  EXPECT_EQ(GetU16(b), 0xffff);
}

// ---- Header ----

TEST(FrameHeader, EncodesTheDocumentedLayout) {
  uint8_t b[kFrameHeaderSize];
  EncodeFrameHeader(b, FrameHeader{FrameType::kListReply, 0xa5, 0x01020304, 0x0a0b0c0d});
  EXPECT_THAT(std::vector<uint8_t>(b, b + kFrameHeaderSize),
              ElementsAre(0x0b, 0xa5, 0, 0, 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d));
}

TEST(FrameHeader, RoundTripsEveryTypeOnItsKindOfStream) {
  struct Case {
    FrameType type;
    uint32_t stream;
    uint32_t length;
  };
  const Case cases[] = {
      {FrameType::kData, 1, 8},     {FrameType::kData, 0xfffffffe, kDefaultMaxFramePayload},
      {FrameType::kCredit, 0, 16},  {FrameType::kCredit, 7, 16},
      {FrameType::kOpen, 3, 10},    {FrameType::kOpenOk, 3, 4},
      {FrameType::kReset, 5, 12},   {FrameType::kStop, 5, 4},
      {FrameType::kPing, 0, 8},     {FrameType::kSettings, 0, 24},
      {FrameType::kGoaway, 0, 8},   {FrameType::kResume, 0, 0},
      {FrameType::kList, 0, 0},     {FrameType::kListReply, 0, kMaxControlPayload},
      {FrameType::kSession, 0, 20}, {FrameType::kResumeOk, 0, 4},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(static_cast<int>(c.type));
    uint8_t b[kFrameHeaderSize];
    EncodeFrameHeader(b, FrameHeader{c.type, 0x3, c.stream, c.length});
    Result<FrameHeader> h = DecodeFrameHeader(b, kDefaultMaxFramePayload);
    ASSERT_TRUE(h.has_value()) << h.error().message();
    EXPECT_EQ(h->type, c.type);
    EXPECT_EQ(h->flags, 0x3);
    EXPECT_EQ(h->stream_id, c.stream);
    EXPECT_EQ(h->length, c.length);
  }
}

TEST(FrameHeader, RejectsUnknownTypes) {
  for (int type : {0x0f, 0x10, 0x7f, 0x80, 0xff}) {
    SCOPED_TRACE(type);
    Result<FrameHeader> h = Decode(RawHeader(static_cast<uint8_t>(type), 0, 0, 0, 0));
    ASSERT_FALSE(h.has_value());
    ExpectMalformed(h.error(), "unknown frame type");
  }
  Result<FrameHeader> h = Decode(RawHeader(0x0f, 0, 0, 0, 0));
  ASSERT_FALSE(h.has_value());
  EXPECT_EQ(h.error().message(), "unknown frame type 0xf");
}

TEST(FrameHeader, RejectsReservedBits) {
  for (uint16_t reserved : {0x0001, 0x0100, 0x8000, 0xffff}) {
    SCOPED_TRACE(reserved);
    Result<FrameHeader> h = Decode(RawHeader(0x6, 0, reserved, 0, 8));
    ASSERT_FALSE(h.has_value());
    ExpectMalformed(h.error(), "reserved header bits are set");
  }
}

TEST(FrameHeader, RejectsStreamTypesOnStreamZero) {
  for (FrameType t : {FrameType::kData, FrameType::kOpen, FrameType::kOpenOk, FrameType::kReset,
                      FrameType::kStop, FrameType::kExit}) {
    SCOPED_TRACE(static_cast<int>(t));
    Result<FrameHeader> h = Decode(RawHeader(static_cast<uint8_t>(t), 0, 0, 0, 16));
    ASSERT_FALSE(h.has_value());
    ExpectMalformed(h.error(), "on stream 0");
  }
}

TEST(FrameHeader, RejectsSessionTypesOnAStream) {
  for (FrameType t :
       {FrameType::kPing, FrameType::kSettings, FrameType::kGoaway, FrameType::kResume,
        FrameType::kList, FrameType::kListReply, FrameType::kSession, FrameType::kResumeOk}) {
    SCOPED_TRACE(static_cast<int>(t));
    Result<FrameHeader> h = Decode(RawHeader(static_cast<uint8_t>(t), 0, 0, 5, 8));
    ASSERT_FALSE(h.has_value());
    ExpectMalformed(h.error(), "on stream 5");
  }
}

TEST(FrameHeader, AcceptsCreditOnTheSessionAndOnAStream) {
  EXPECT_TRUE(Decode(RawHeader(0x1, 0, 0, 0, 16)).has_value());
  EXPECT_TRUE(Decode(RawHeader(0x1, 0, 0, 0xffffffff, 16)).has_value());
}

TEST(FrameHeader, LimitsDataToTheGivenMaximum) {
  EXPECT_TRUE(Decode(RawHeader(0x0, 0, 0, 1, 1000), 1000).has_value());
  Result<FrameHeader> h = Decode(RawHeader(0x0, 0, 0, 1, 1001), 1000);
  ASSERT_FALSE(h.has_value());
  EXPECT_EQ(h.error().code(), Code::kProtocol);
  EXPECT_EQ(h.error().message(), "DATA frame of 1001 bytes exceeds the maximum of 1000");
  // The largest length field is refused too, whatever the maximum.
  EXPECT_FALSE(Decode(RawHeader(0x0, 0, 0, 1, 0xffffffff), kMaxFramePayloadLimit).has_value());
  // The DATA limit does not apply to control frames, nor the reverse.
  EXPECT_TRUE(Decode(RawHeader(0x0, 0, 0, 1, kMaxControlPayload + 100), kMaxControlPayload + 100)
                  .has_value());
  EXPECT_TRUE(Decode(RawHeader(0x1, 0, 0, 1, 16), 8).has_value());
}

TEST(FrameHeader, LimitsControlFramesTo16KiB) {
  const uint32_t at = static_cast<uint32_t>(kMaxControlPayload);
  for (uint8_t type = 0x1; type <= kMaxFrameType; ++type) {
    SCOPED_TRACE(static_cast<int>(type));
    uint32_t stream = (type == 0x1 || (type >= 0x2 && type <= 0x5) || type == 0xE) ? 1 : 0;
    EXPECT_TRUE(Decode(RawHeader(type, 0, 0, stream, at), kMaxFramePayloadLimit).has_value());
    Result<FrameHeader> h = Decode(RawHeader(type, 0, 0, stream, at + 1), kMaxFramePayloadLimit);
    ASSERT_FALSE(h.has_value());
    EXPECT_EQ(h.error().message(), "control frame of 16385 bytes exceeds the maximum of 16384");
  }
}

TEST(FrameHeader, RejectsDataShorterThanItsOffset) {
  for (uint32_t len : {0u, 1u, 7u}) {
    SCOPED_TRACE(len);
    Result<FrameHeader> h = Decode(RawHeader(0x0, kFlagFin, 0, 1, len));
    ASSERT_FALSE(h.has_value());
    ExpectMalformed(h.error(), "DATA frame shorter than its offset");
  }
  EXPECT_TRUE(Decode(RawHeader(0x0, kFlagFin, 0, 1, 8)).has_value());
}

TEST(FrameHeader, ChecksTypeBeforeReservedBitsAndStream) {
  // An unknown type is reported as such even when other fields are bad too.
  Result<FrameHeader> h = Decode(RawHeader(0x20, 0, 0xffff, 0, 0));
  ASSERT_FALSE(h.has_value());
  EXPECT_THAT(h.error().message(), HasSubstr("unknown frame type 0x20"));
}

// ---- Typed payloads: encode, then decode ----

TEST(FrameOpen, RoundTrips) {
  Buffer b;
  AppendOpen(b, 7, OpenPayload{3, kOpenFlagLines, 0xa1b2c3d4, "logs.app-1"});
  FrameHeader h = HeaderOf(b);
  EXPECT_EQ(h.type, FrameType::kOpen);
  EXPECT_EQ(h.stream_id, 7u);
  EXPECT_EQ(h.flags, 0);
  EXPECT_EQ(h.length, 7u + 10u);
  Result<OpenPayload> o = DecodeOpen(PayloadOf(b), PayloadSize(b));
  ASSERT_TRUE(o.has_value()) << o.error().message();
  EXPECT_EQ(o->access, 3);
  EXPECT_EQ(o->flags, kOpenFlagLines);
  EXPECT_EQ(o->wait_ms, 0xa1b2c3d4u);
  EXPECT_EQ(o->name, "logs.app-1");
  EXPECT_THAT(std::vector<uint8_t>(PayloadOf(b), PayloadOf(b) + 7),
              ElementsAre(3, kOpenFlagLines, 0xa1, 0xb2, 0xc3, 0xd4, 10));
}

TEST(FrameOpen, RoundTripsEmptyAndLongestNames) {
  for (size_t len : {size_t{0}, size_t{1}, size_t{255}}) {
    SCOPED_TRACE(len);
    Buffer b;
    AppendOpen(b, 1, OpenPayload{1, 0, 0, std::string(len, 'x')});
    ASSERT_EQ(HeaderOf(b).length, 7 + len);
    Result<OpenPayload> o = DecodeOpen(PayloadOf(b), PayloadSize(b));
    ASSERT_TRUE(o.has_value());
    EXPECT_EQ(o->name, std::string(len, 'x'));
  }
}

TEST(FrameOpen, RejectsBadLengths) {
  uint8_t p[32] = {1, 0, 0, 0, 0, 0, 4, 'a', 'b', 'c', 'd', 'e'};
  for (size_t n = 0; n < 7; ++n) {
    SCOPED_TRACE(n);
    Result<OpenPayload> o = DecodeOpen(p, n);
    ASSERT_FALSE(o.has_value());
    ExpectMalformed(o.error(), "OPEN frame too short");
  }
  EXPECT_TRUE(DecodeOpen(p, 11).has_value());
  for (size_t n : {7, 10, 12, 32}) {
    SCOPED_TRACE(n);
    Result<OpenPayload> o = DecodeOpen(p, n);
    ASSERT_FALSE(o.has_value());
    ExpectMalformed(o.error(), "OPEN frame length does not match its name");
  }
}

TEST(FrameOpenOk, RoundTrips) {
  Buffer b;
  AppendOpenOk(b, 9, OpenOkPayload{2, 3});
  FrameHeader h = HeaderOf(b);
  EXPECT_EQ(h.type, FrameType::kOpenOk);
  EXPECT_EQ(h.stream_id, 9u);
  EXPECT_THAT(Bytes(b), ElementsAre(0x3, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 8, 2, 3, 0, 0, 0, 0, 0, 0));
  Result<OpenOkPayload> ok = DecodeOpenOk(PayloadOf(b), PayloadSize(b));
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->kind, 2);
  EXPECT_EQ(ok->access, 3);
}

TEST(FrameOpenOk, RejectsBadLengths) {
  uint8_t p[12] = {};
  for (size_t n : {0, 3, 4, 7, 9, 12}) {
    SCOPED_TRACE(n);
    Result<OpenOkPayload> ok = DecodeOpenOk(p, n);
    ASSERT_FALSE(ok.has_value());
    ExpectMalformed(ok.error(), "OPEN_OK frame must be 8 bytes");
  }
}

TEST(FrameCredit, RoundTripsIncludingTheLargestOffsets) {
  const CreditPayload cases[] = {{0, 0}, {1, 2}, {kU64Max - 1, kU64Max}, {kU64Max, kU64Max}};
  for (const CreditPayload& c : cases) {
    Buffer b;
    AppendCredit(b, 0, c);
    FrameHeader h = HeaderOf(b);
    EXPECT_EQ(h.type, FrameType::kCredit);
    EXPECT_EQ(h.stream_id, 0u);
    EXPECT_EQ(h.length, 16u);
    Result<CreditPayload> d = DecodeCredit(PayloadOf(b), PayloadSize(b));
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->delivered, c.delivered);
    EXPECT_EQ(d->limit, c.limit);
  }
}

TEST(FrameCredit, RejectsBadLengthsAndDeliveredAboveLimit) {
  uint8_t p[20] = {};
  for (size_t n : {0, 8, 15, 17, 20}) {
    SCOPED_TRACE(n);
    Result<CreditPayload> c = DecodeCredit(p, n);
    ASSERT_FALSE(c.has_value());
    ExpectMalformed(c.error(), "CREDIT frame must be 16 bytes");
  }
  PutU64(p, 101);
  PutU64(p + 8, 100);
  Result<CreditPayload> c = DecodeCredit(p, 16);
  ASSERT_FALSE(c.has_value());
  ExpectMalformed(c.error(), "CREDIT delivered offset above its limit");
}

TEST(FrameReset, RoundTrips) {
  Buffer b;
  AppendReset(b, 11, ResetPayload{ErrorCode::kBrokenPipe, 0x0102030405060708ull, "reader gone"});
  FrameHeader h = HeaderOf(b);
  EXPECT_EQ(h.type, FrameType::kReset);
  EXPECT_EQ(h.stream_id, 11u);
  EXPECT_EQ(h.length, 12u + 11u);
  Result<ResetPayload> r = DecodeReset(PayloadOf(b), PayloadSize(b));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->error, ErrorCode::kBrokenPipe);
  EXPECT_EQ(r->final_offset, 0x0102030405060708ull);
  EXPECT_EQ(r->reason, "reader gone");
}

TEST(FrameReset, ClipsTheReasonOnBothSides) {
  Buffer b;
  AppendReset(b, 1, ResetPayload{ErrorCode::kIo, 0, std::string(1000, 'r')});
  EXPECT_EQ(HeaderOf(b).length, 12u + kMaxReasonLength);
  // A peer may send a longer reason; the decoder keeps the first kMaxReasonLength bytes.
  std::vector<uint8_t> p(12 + 2000, 'q');
  PutU32(p.data(), 6);
  PutU64(p.data() + 4, 9);
  Result<ResetPayload> r = DecodeReset(p.data(), p.size());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->reason, std::string(kMaxReasonLength, 'q'));
  EXPECT_EQ(r->final_offset, 9u);
}

TEST(FrameReset, RejectsShortPayloads) {
  uint8_t p[12] = {};
  for (size_t n : {0, 4, 11}) {
    Result<ResetPayload> r = DecodeReset(p, n);
    ASSERT_FALSE(r.has_value());
    ExpectMalformed(r.error(), "RESET frame too short");
  }
  Result<ResetPayload> r = DecodeReset(p, 12);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->reason, "");
}

TEST(FrameReset, KeepsUnknownErrorCodes) {
  uint8_t p[12] = {};
  PutU32(p, 0xfffffff0);
  Result<ResetPayload> r = DecodeReset(p, 12);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(static_cast<uint32_t>(r->error), 0xfffffff0u);
  EXPECT_STREQ(ErrorCodeName(r->error), "unknown error");
  EXPECT_EQ(CodeForError(r->error), Code::kProtocol);
}

TEST(FrameStop, RoundTrips) {
  Buffer b;
  AppendStop(b, 4, StopPayload{ErrorCode::kNoReader, "no reader"});
  FrameHeader h = HeaderOf(b);
  EXPECT_EQ(h.type, FrameType::kStop);
  EXPECT_EQ(h.stream_id, 4u);
  EXPECT_EQ(h.length, 4u + 9u);
  Result<StopPayload> s = DecodeStop(PayloadOf(b), PayloadSize(b));
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->error, ErrorCode::kNoReader);
  EXPECT_EQ(s->reason, "no reader");

  Buffer clipped;
  AppendStop(clipped, 4, StopPayload{ErrorCode::kIo, std::string(600, 'z')});
  EXPECT_EQ(HeaderOf(clipped).length, 4u + kMaxReasonLength);
}

TEST(FrameStop, RejectsShortPayloads) {
  uint8_t p[4] = {};
  for (size_t n : {0, 1, 3}) {
    Result<StopPayload> s = DecodeStop(p, n);
    ASSERT_FALSE(s.has_value());
    ExpectMalformed(s.error(), "STOP frame too short");
  }
  EXPECT_TRUE(DecodeStop(p, 4).has_value());
}

TEST(FramePing, RoundTripsWithAndWithoutAck) {
  for (uint8_t flags : {uint8_t{0}, kFlagAck}) {
    Buffer b;
    AppendPing(b, flags, 0xfeedfacecafebeefull);
    FrameHeader h = HeaderOf(b);
    EXPECT_EQ(h.type, FrameType::kPing);
    EXPECT_EQ(h.flags, flags);
    EXPECT_EQ(h.stream_id, 0u);
    Result<uint64_t> v = DecodePing(PayloadOf(b), PayloadSize(b));
    ASSERT_TRUE(v.has_value());
    EXPECT_EQ(*v, 0xfeedfacecafebeefull);
  }
}

TEST(FramePing, RejectsBadLengths) {
  uint8_t p[9] = {};
  for (size_t n : {0, 7, 9}) {
    Result<uint64_t> v = DecodePing(p, n);
    ASSERT_FALSE(v.has_value());
    ExpectMalformed(v.error(), "PING frame must be 8 bytes");
  }
}

TEST(FrameSettings, RoundTripsIncludingUnknownIds) {
  Buffer b;
  AppendSettings(b, {{SettingId::kMaxFramePayload, 16392},
                     {SettingId::kStreamWindow, 0xffffffff},
                     {SettingId::kSessionWindow, 0},
                     {SettingId::kMaxStreams, 100},
                     {static_cast<SettingId>(0xbeef), 42}});
  FrameHeader h = HeaderOf(b);
  EXPECT_EQ(h.type, FrameType::kSettings);
  EXPECT_EQ(h.length, 30u);
  Result<std::vector<Setting>> s = DecodeSettings(PayloadOf(b), PayloadSize(b));
  ASSERT_TRUE(s.has_value());
  ASSERT_EQ(s->size(), 5u);
  EXPECT_EQ((*s)[0].id, SettingId::kMaxFramePayload);
  EXPECT_EQ((*s)[0].value, 16392u);
  EXPECT_EQ((*s)[1].id, SettingId::kStreamWindow);
  EXPECT_EQ((*s)[1].value, 0xffffffffu);
  EXPECT_EQ((*s)[2].id, SettingId::kSessionWindow);
  EXPECT_EQ((*s)[2].value, 0u);
  EXPECT_EQ((*s)[3].id, SettingId::kMaxStreams);
  EXPECT_EQ((*s)[3].value, 100u);
  EXPECT_EQ(static_cast<uint16_t>((*s)[4].id), 0xbeef);
  EXPECT_EQ((*s)[4].value, 42u);
}

TEST(FrameSettings, EmptyIsValid) {
  Buffer b;
  AppendSettings(b, {});
  EXPECT_EQ(HeaderOf(b).length, 0u);
  Result<std::vector<Setting>> s = DecodeSettings(nullptr, 0);
  ASSERT_TRUE(s.has_value());
  EXPECT_TRUE(s->empty());
}

TEST(FrameSettings, RejectsLengthsThatAreNotAMultipleOfSix) {
  uint8_t p[13] = {};
  for (size_t n : {1, 5, 7, 11, 13}) {
    SCOPED_TRACE(n);
    Result<std::vector<Setting>> s = DecodeSettings(p, n);
    ASSERT_FALSE(s.has_value());
    ExpectMalformed(s.error(), "SETTINGS length is not a multiple of 6");
  }
}

TEST(FrameGoaway, RoundTrips) {
  Buffer b;
  AppendGoaway(b, GoawayPayload{41, ErrorCode::kShutdown, "maintenance"});
  FrameHeader h = HeaderOf(b);
  EXPECT_EQ(h.type, FrameType::kGoaway);
  EXPECT_EQ(h.stream_id, 0u);
  EXPECT_EQ(h.length, 8u + 11u);
  Result<GoawayPayload> g = DecodeGoaway(PayloadOf(b), PayloadSize(b));
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->last_stream_id, 41u);
  EXPECT_EQ(g->error, ErrorCode::kShutdown);
  EXPECT_EQ(g->reason, "maintenance");

  Buffer clipped;
  AppendGoaway(clipped, GoawayPayload{0, ErrorCode::kNoError, std::string(513, 'g')});
  EXPECT_EQ(HeaderOf(clipped).length, 8u + kMaxReasonLength);
}

TEST(FrameGoaway, RejectsShortPayloads) {
  uint8_t p[8] = {};
  for (size_t n : {0, 4, 7}) {
    Result<GoawayPayload> g = DecodeGoaway(p, n);
    ASSERT_FALSE(g.has_value());
    ExpectMalformed(g.error(), "GOAWAY frame too short");
  }
  EXPECT_TRUE(DecodeGoaway(p, 8).has_value());
}

TEST(FrameList, IsAnEmptySessionFrame) {
  Buffer b;
  AppendList(b);
  EXPECT_THAT(Bytes(b), ElementsAre(0xa, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0));
}

TEST(FrameListReply, RoundTrips) {
  Buffer b;
  std::vector<ListEntry> entries = {{"logs", 1, 1}, {"", 2, 3}, {std::string(255, 'n'), 2, 2}};
  AppendListReply(b, kFlagMore, entries);
  FrameHeader h = HeaderOf(b);
  EXPECT_EQ(h.type, FrameType::kListReply);
  EXPECT_EQ(h.flags, kFlagMore);
  EXPECT_EQ(h.length, 3 * kListEntryFixedSize + 4u + 255u);
  Result<std::vector<ListEntry>> d = DecodeListReply(PayloadOf(b), PayloadSize(b));
  ASSERT_TRUE(d.has_value());
  ASSERT_EQ(d->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*d)[i].name, entries[i].name);
    EXPECT_EQ((*d)[i].kind, entries[i].kind);
    EXPECT_EQ((*d)[i].access, entries[i].access);
  }
  Buffer empty;
  AppendListReply(empty, 0, {});
  EXPECT_EQ(HeaderOf(empty).length, 0u);
  EXPECT_TRUE(DecodeListReply(nullptr, 0)->empty());
}

TEST(FrameListReply, RejectsEntriesThatRunPastTheFrame) {
  // name length 4, "logs", kind, access, flags, clients, max_clients, max_message: 20 bytes.
  const uint8_t ok[] = {4, 'l', 'o', 'g', 's', 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0};
  ASSERT_TRUE(DecodeListReply(ok, sizeof ok).has_value());
  for (size_t n = 1; n < sizeof ok; ++n) {
    SCOPED_TRACE(n);
    Result<std::vector<ListEntry>> d = DecodeListReply(ok, n);
    ASSERT_FALSE(d.has_value());
    ExpectMalformed(d.error(), "LIST_REPLY entry runs past the frame");
  }
  // A good entry followed by a truncated one.
  const uint8_t two[] = {1, 'a', 1, 1, 9, 'b'};
  EXPECT_FALSE(DecodeListReply(two, sizeof two).has_value());
}

TEST(FrameData, RoundTripsWithOffsetAndFlags) {
  const uint8_t bytes[] = {'h', 'e', 'l', 'l', 'o'};
  Buffer b;
  AppendData(b, 3, kFlagFin | kFlagMsgEnd, kU64Max - 5, bytes, sizeof bytes);
  FrameHeader h = HeaderOf(b);
  EXPECT_EQ(h.type, FrameType::kData);
  EXPECT_EQ(h.flags, kFlagFin | kFlagMsgEnd);
  EXPECT_EQ(h.stream_id, 3u);
  EXPECT_EQ(h.length, kDataPrefixSize + 5);
  EXPECT_EQ(GetU64(PayloadOf(b)), kU64Max - 5);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(PayloadOf(b) + kDataPrefixSize), 5), "hello");
}

TEST(FrameData, EmptyFinIsJustTheOffset) {
  Buffer b;
  AppendData(b, 1, kFlagFin, 42, nullptr, 0);
  EXPECT_THAT(Bytes(b),
              ElementsAre(0, kFlagFin, 0, 0, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 42));
  EXPECT_TRUE(DecodeFrameHeader(b.data(), kDefaultMaxFramePayload).has_value());
}

TEST(FrameEncoders, AppendBehindExistingBytes) {
  Buffer b;
  AppendPing(b, 0, 1);
  AppendList(b);
  AppendCredit(b, 5, CreditPayload{1, 2});
  ASSERT_EQ(b.size(), (12u + 8u) + 12u + (12u + 16u));
  EXPECT_EQ(b.data()[0], static_cast<uint8_t>(FrameType::kPing));
  EXPECT_EQ(b.data()[20], static_cast<uint8_t>(FrameType::kList));
  EXPECT_EQ(b.data()[32], static_cast<uint8_t>(FrameType::kCredit));
  EXPECT_EQ(GetU32(b.data() + 36), 5u);
}

// ---- Resumption frames ----

TEST(FrameSession, RoundTrips) {
  SessionPayload p;
  for (size_t i = 0; i < kSessionIdSize; ++i) p.session_id[i] = static_cast<uint8_t>(0xa0 + i);
  p.ttl_ms = 300000;
  Buffer b;
  AppendSession(b, p);
  FrameHeader h = HeaderOf(b);
  EXPECT_EQ(h.type, FrameType::kSession);
  EXPECT_EQ(h.stream_id, 0u);
  EXPECT_EQ(h.length, 20u);
  Result<SessionPayload> d = DecodeSession(PayloadOf(b), PayloadSize(b));
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(std::memcmp(d->session_id, p.session_id, kSessionIdSize), 0);
  EXPECT_EQ(d->ttl_ms, 300000u);
}

TEST(FrameSession, RejectsBadLengths) {
  uint8_t p[24] = {};
  for (size_t n : {0, 16, 19, 21, 24}) {
    SCOPED_TRACE(n);
    Result<SessionPayload> d = DecodeSession(p, n);
    ASSERT_FALSE(d.has_value());
    ExpectMalformed(d.error(), "SESSION frame must be 20 bytes");
  }
}

ResumeStream Entry(uint32_t id, uint64_t received, uint64_t delivered, uint8_t flags,
                   ErrorCode error = ErrorCode::kNoError) {
  ResumeStream r;
  r.id = id;
  r.received = received;
  r.delivered = delivered;
  r.flags = flags;
  r.error = error;
  return r;
}

void ExpectSameEntries(const std::vector<ResumeStream>& a, const std::vector<ResumeStream>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(a[i].id, b[i].id);
    EXPECT_EQ(a[i].received, b[i].received);
    EXPECT_EQ(a[i].delivered, b[i].delivered);
    EXPECT_EQ(a[i].flags, b[i].flags);
    EXPECT_EQ(a[i].error, b[i].error);
  }
}

TEST(FrameResume, RoundTrips) {
  ResumePayload p;
  for (size_t i = 0; i < kSessionIdSize; ++i) p.session_id[i] = static_cast<uint8_t>(i);
  for (size_t i = 0; i < kResumeProofSize; ++i) p.proof[i] = static_cast<uint8_t>(0xff - i);
  p.last_id = 41;
  p.streams = {Entry(1, 100, 90, kResumeAccepted),
               Entry(3, kU64Max, kU64Max, kResumeClosed | kResumeFinReceived),
               Entry(5, 0, 0, kResumeClosed, ErrorCode::kBrokenPipe)};
  Buffer b;
  AppendResume(b, p);
  FrameHeader h = HeaderOf(b);
  EXPECT_EQ(h.type, FrameType::kResume);
  EXPECT_EQ(h.length, kSessionIdSize + kResumeProofSize + 4 + 3 * kResumeStreamSize);
  Result<ResumePayload> d = DecodeResume(PayloadOf(b), PayloadSize(b));
  ASSERT_TRUE(d.has_value()) << d.error().message();
  EXPECT_EQ(std::memcmp(d->session_id, p.session_id, kSessionIdSize), 0);
  EXPECT_EQ(std::memcmp(d->proof, p.proof, kResumeProofSize), 0);
  EXPECT_EQ(d->last_id, 41u);
  ExpectSameEntries(d->streams, p.streams);
}

TEST(FrameResume, RejectsMalformedPayloads) {
  constexpr size_t kFixed = kSessionIdSize + kResumeProofSize + 4;
  std::vector<uint8_t> p(kFixed + kResumeStreamSize, 0);
  for (size_t n : {size_t{0}, size_t{4}, kFixed - 1}) {
    Result<ResumePayload> d = DecodeResume(p.data(), n);
    ASSERT_FALSE(d.has_value());
    ExpectMalformed(d.error(), "RESUME frame too short");
  }
  EXPECT_TRUE(DecodeResume(p.data(), kFixed).has_value());  // No streams.
  Result<ResumePayload> partial = DecodeResume(p.data(), kFixed + 1);
  ASSERT_FALSE(partial.has_value());
  ExpectMalformed(partial.error(), "resume stream list has a partial entry");
  // An entry for stream 0.
  Result<ResumePayload> zero = DecodeResume(p.data(), p.size());
  ASSERT_FALSE(zero.has_value());
  ExpectMalformed(zero.error(), "resume entry for stream 0");
  // delivered above received.
  PutU32(p.data() + kFixed, 1);
  PutU64(p.data() + kFixed + 4, 10);
  PutU64(p.data() + kFixed + 12, 11);
  Result<ResumePayload> more = DecodeResume(p.data(), p.size());
  ASSERT_FALSE(more.has_value());
  ExpectMalformed(more.error(), "resume entry delivered more than received");
  PutU64(p.data() + kFixed + 12, 10);
  EXPECT_TRUE(DecodeResume(p.data(), p.size()).has_value());
}

TEST(FrameResumeOk, RoundTripsAndRejectsMalformedPayloads) {
  ResumeOkPayload p;
  p.last_id = 7;
  p.streams = {Entry(2, 5, 5, 0), Entry(4, 9, 1, kResumeFinReceived)};
  Buffer b;
  AppendResumeOk(b, p);
  FrameHeader h = HeaderOf(b);
  EXPECT_EQ(h.type, FrameType::kResumeOk);
  EXPECT_EQ(h.length, 4 + 2 * kResumeStreamSize);
  Result<ResumeOkPayload> d = DecodeResumeOk(PayloadOf(b), PayloadSize(b));
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->last_id, 7u);
  ExpectSameEntries(d->streams, p.streams);

  uint8_t short_payload[3] = {};
  Result<ResumeOkPayload> s = DecodeResumeOk(short_payload, 3);
  ASSERT_FALSE(s.has_value());
  ExpectMalformed(s.error(), "RESUME_OK frame too short");
  Result<ResumeOkPayload> partial = DecodeResumeOk(PayloadOf(b), PayloadSize(b) - 1);
  ASSERT_FALSE(partial.has_value());
  ExpectMalformed(partial.error(), "partial entry");
}

// ---- Error codes ----

TEST(FrameErrors, MapWireErrorsToCodes) {
  struct Case {
    ErrorCode error;
    Code code;
    const char* name;
  };
  const Case cases[] = {
      {ErrorCode::kNoError, Code::kOk, "no error"},
      {ErrorCode::kProtocol, Code::kProtocol, "protocol error"},
      {ErrorCode::kAccessDenied, Code::kAccessDenied, "access denied"},
      {ErrorCode::kNotFound, Code::kNotFound, "no such pipe"},
      {ErrorCode::kBusy, Code::kBusy, "busy"},
      {ErrorCode::kNoReader, Code::kNoReader, "no reader"},
      {ErrorCode::kBrokenPipe, Code::kBrokenPipe, "broken pipe"},
      {ErrorCode::kInternal, Code::kInternal, "internal error"},
      {ErrorCode::kFlowControl, Code::kProtocol, "flow control violated"},
      {ErrorCode::kLimit, Code::kLimit, "limit reached"},
      {ErrorCode::kCancel, Code::kStreamLost, "cancelled"},
      {ErrorCode::kIo, Code::kIo, "I/O error"},
      {ErrorCode::kShutdown, Code::kStreamLost, "gateway shutting down"},
      {ErrorCode::kFrameSize, Code::kProtocol, "frame too large"},
      {ErrorCode::kResumeRejected, Code::kStreamLost, "the gateway no longer has the session"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(CodeForError(c.error), c.code);
    EXPECT_STREQ(ErrorCodeName(c.error), c.name);
  }
}

TEST(FrameErrors, MapCodesToWireErrorsAndBack) {
  const Code codes[] = {
      Code::kOk,           Code::kUsage,      Code::kConnect,     Code::kTls,
      Code::kAccessDenied, Code::kNotFound,   Code::kBusy,        Code::kNoReader,
      Code::kBrokenPipe,   Code::kStreamLost, Code::kProtocol,    Code::kIo,
      Code::kLimit,        Code::kInternal,   Code::kInterrupted, Code::kTerminated};
  for (Code c : codes) {
    SCOPED_TRACE(CodeName(c));
    ErrorCode e = ErrorForCode(c);
    switch (c) {
      case Code::kUsage:
      case Code::kConnect:
      case Code::kTls:
        // Local failures have no wire meaning of their own.
        EXPECT_EQ(e, ErrorCode::kInternal);
        break;
      case Code::kInterrupted:
      case Code::kTerminated:
        // A process stopped by a signal abandons its streams.
        EXPECT_EQ(e, ErrorCode::kCancel);
        break;
      default:
        // Everything else survives the trip over the wire.
        EXPECT_EQ(CodeForError(e), c);
    }
  }
  EXPECT_EQ(ErrorForCode(Code::kStreamLost), ErrorCode::kCancel);
}

}  // namespace
}  // namespace pipegate
