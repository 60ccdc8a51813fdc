#include "pipegate/frame.h"

#include <fmt/format.h>

namespace pipegate {
namespace {

Status Malformed(std::string what) { return Status(Code::kProtocol, std::move(what)); }

// Frame types that must name a stream (id != 0), and those that must not.
bool NeedsStream(FrameType t) {
  switch (t) {
    case FrameType::kData:
    case FrameType::kOpen:
    case FrameType::kOpenOk:
    case FrameType::kReset:
    case FrameType::kStop:
    case FrameType::kExit:
      return true;
    default:
      return false;
  }
}
bool NeedsSession(FrameType t) {
  switch (t) {
    case FrameType::kPing:
    case FrameType::kSettings:
    case FrameType::kGoaway:
    case FrameType::kResume:
    case FrameType::kList:
    case FrameType::kListReply:
    case FrameType::kSession:
    case FrameType::kResumeOk:
      return true;
    default:
      return false;
  }
}

uint8_t* AppendHeader(Buffer& out, FrameType type, uint8_t flags, uint32_t stream_id,
                      size_t length) {
  uint8_t* p = out.Prepare(kFrameHeaderSize + length);
  EncodeFrameHeader(p, FrameHeader{type, flags, stream_id, static_cast<uint32_t>(length)});
  out.Commit(kFrameHeaderSize + length);
  return p + kFrameHeaderSize;
}

std::string_view Clip(std::string_view s) {
  return s.size() > kMaxReasonLength ? s.substr(0, kMaxReasonLength) : s;
}

}  // namespace

Code CodeForError(ErrorCode error) noexcept {
  switch (error) {
    case ErrorCode::kNoError:
      return Code::kOk;
    case ErrorCode::kAccessDenied:
      return Code::kAccessDenied;
    case ErrorCode::kNotFound:
      return Code::kNotFound;
    case ErrorCode::kBusy:
      return Code::kBusy;
    case ErrorCode::kNoReader:
      return Code::kNoReader;
    case ErrorCode::kBrokenPipe:
      return Code::kBrokenPipe;
    case ErrorCode::kLimit:
      return Code::kLimit;
    case ErrorCode::kIo:
      return Code::kIo;
    case ErrorCode::kShutdown:
    case ErrorCode::kCancel:
      return Code::kStreamLost;
    case ErrorCode::kResumeRejected:
      return Code::kStreamLost;
    case ErrorCode::kProtocol:
    case ErrorCode::kFlowControl:
    case ErrorCode::kFrameSize:
      return Code::kProtocol;
    case ErrorCode::kInternal:
      return Code::kInternal;
  }
  return Code::kProtocol;
}

ErrorCode ErrorForCode(Code code) noexcept {
  switch (code) {
    case Code::kOk:
      return ErrorCode::kNoError;
    case Code::kAccessDenied:
      return ErrorCode::kAccessDenied;
    case Code::kNotFound:
      return ErrorCode::kNotFound;
    case Code::kBusy:
      return ErrorCode::kBusy;
    case Code::kNoReader:
      return ErrorCode::kNoReader;
    case Code::kBrokenPipe:
      return ErrorCode::kBrokenPipe;
    case Code::kLimit:
      return ErrorCode::kLimit;
    case Code::kIo:
      return ErrorCode::kIo;
    case Code::kProtocol:
      return ErrorCode::kProtocol;
    case Code::kStreamLost:
    case Code::kInterrupted:  // A stream given up by a stopped process is abandoned.
    case Code::kTerminated:
      return ErrorCode::kCancel;
    case Code::kUsage:
    case Code::kConnect:
    case Code::kTls:
    case Code::kInternal:
      return ErrorCode::kInternal;
  }
  return ErrorCode::kInternal;
}

const char* ErrorCodeName(ErrorCode error) noexcept {
  switch (error) {
    case ErrorCode::kNoError:
      return "no error";
    case ErrorCode::kProtocol:
      return "protocol error";
    case ErrorCode::kAccessDenied:
      return "access denied";
    case ErrorCode::kNotFound:
      return "no such pipe";
    case ErrorCode::kBusy:
      return "busy";
    case ErrorCode::kNoReader:
      return "no reader";
    case ErrorCode::kBrokenPipe:
      return "broken pipe";
    case ErrorCode::kInternal:
      return "internal error";
    case ErrorCode::kFlowControl:
      return "flow control violated";
    case ErrorCode::kLimit:
      return "limit reached";
    case ErrorCode::kCancel:
      return "cancelled";
    case ErrorCode::kIo:
      return "I/O error";
    case ErrorCode::kShutdown:
      return "gateway shutting down";
    case ErrorCode::kFrameSize:
      return "frame too large";
    case ErrorCode::kResumeRejected:
      return "the gateway no longer has the session";
  }
  return "unknown error";
}

void EncodeFrameHeader(uint8_t* out, const FrameHeader& h) noexcept {
  out[0] = static_cast<uint8_t>(h.type);
  out[1] = h.flags;
  out[2] = 0;
  out[3] = 0;
  PutU32(out + 4, h.stream_id);
  PutU32(out + 8, h.length);
}

Result<FrameHeader> DecodeFrameHeader(const uint8_t* in, uint32_t max_payload) {
  FrameHeader h;
  if (in[0] > kMaxFrameType) return Malformed(fmt::format("unknown frame type 0x{:x}", in[0]));
  h.type = static_cast<FrameType>(in[0]);
  h.flags = in[1];
  if (in[2] != 0 || in[3] != 0) return Malformed("reserved header bits are set");
  h.stream_id = GetU32(in + 4);
  h.length = GetU32(in + 8);
  if (NeedsStream(h.type) && h.stream_id == 0) {
    return Malformed(fmt::format("frame type 0x{:x} on stream 0", in[0]));
  }
  if (NeedsSession(h.type) && h.stream_id != 0) {
    return Malformed(fmt::format("frame type 0x{:x} on stream {}", in[0], h.stream_id));
  }
  if (h.type == FrameType::kData) {
    if (h.length > max_payload) {
      return Status(Code::kProtocol, fmt::format("DATA frame of {} bytes exceeds the maximum of {}",
                                                 h.length, max_payload));
    }
    if (h.length < kDataPrefixSize) return Malformed("DATA frame shorter than its offset");
  } else if (h.length > kMaxControlPayload) {
    return Malformed(fmt::format("control frame of {} bytes exceeds the maximum of {}", h.length,
                                 kMaxControlPayload));
  }
  return h;
}

void AppendOpen(Buffer& out, uint32_t stream_id, const OpenPayload& p) {
  uint8_t* b = AppendHeader(out, FrameType::kOpen, 0, stream_id, 7 + p.name.size());
  b[0] = p.access;
  b[1] = p.flags;
  PutU32(b + 2, p.wait_ms);
  b[6] = static_cast<uint8_t>(p.name.size());
  std::memcpy(b + 7, p.name.data(), p.name.size());
}

void AppendOpenOk(Buffer& out, uint32_t stream_id, const OpenOkPayload& p) {
  uint8_t* b = AppendHeader(out, FrameType::kOpenOk, 0, stream_id, 8);
  b[0] = p.kind;
  b[1] = p.access;
  b[2] = p.flags;
  b[3] = 0;
  PutU32(b + 4, p.max_message);
}

void AppendCredit(Buffer& out, uint32_t stream_id, const CreditPayload& p) {
  uint8_t* b = AppendHeader(out, FrameType::kCredit, 0, stream_id, 16);
  PutU64(b, p.delivered);
  PutU64(b + 8, p.limit);
}

void AppendReset(Buffer& out, uint32_t stream_id, const ResetPayload& p) {
  std::string_view reason = Clip(p.reason);
  uint8_t* b = AppendHeader(out, FrameType::kReset, 0, stream_id, 12 + reason.size());
  PutU32(b, static_cast<uint32_t>(p.error));
  PutU64(b + 4, p.final_offset);
  std::memcpy(b + 12, reason.data(), reason.size());
}

void AppendStop(Buffer& out, uint32_t stream_id, const StopPayload& p) {
  std::string_view reason = Clip(p.reason);
  uint8_t* b = AppendHeader(out, FrameType::kStop, 0, stream_id, 4 + reason.size());
  PutU32(b, static_cast<uint32_t>(p.error));
  std::memcpy(b + 4, reason.data(), reason.size());
}

void AppendPing(Buffer& out, uint8_t flags, uint64_t opaque) {
  PutU64(AppendHeader(out, FrameType::kPing, flags, 0, 8), opaque);
}

void AppendSettings(Buffer& out, const std::vector<Setting>& settings) {
  uint8_t* b = AppendHeader(out, FrameType::kSettings, 0, 0, settings.size() * 6);
  for (const Setting& s : settings) {
    PutU16(b, static_cast<uint16_t>(s.id));
    PutU32(b + 2, s.value);
    b += 6;
  }
}

void AppendGoaway(Buffer& out, const GoawayPayload& p) {
  std::string_view reason = Clip(p.reason);
  uint8_t* b = AppendHeader(out, FrameType::kGoaway, 0, 0, 8 + reason.size());
  PutU32(b, p.last_stream_id);
  PutU32(b + 4, static_cast<uint32_t>(p.error));
  std::memcpy(b + 8, reason.data(), reason.size());
}

void AppendList(Buffer& out) { AppendHeader(out, FrameType::kList, 0, 0, 0); }

void AppendListReply(Buffer& out, uint8_t flags, const std::vector<ListEntry>& entries) {
  size_t len = 0;
  for (const ListEntry& e : entries) len += kListEntryFixedSize + e.name.size();
  uint8_t* b = AppendHeader(out, FrameType::kListReply, flags, 0, len);
  for (const ListEntry& e : entries) {
    b[0] = static_cast<uint8_t>(e.name.size());
    std::memcpy(b + 1, e.name.data(), e.name.size());
    b += 1 + e.name.size();
    b[0] = e.kind;
    b[1] = e.access;
    b[2] = e.flags;
    PutU32(b + 3, e.clients);
    PutU32(b + 7, e.max_clients);
    PutU32(b + 11, e.max_message);
    b += kListEntryFixedSize - 1;
  }
}

void AppendData(Buffer& out, uint32_t stream_id, uint8_t flags, uint64_t offset,
                const uint8_t* data, size_t len) {
  uint8_t* b = AppendHeader(out, FrameType::kData, flags, stream_id, kDataPrefixSize + len);
  PutU64(b, offset);
  if (len > 0) std::memcpy(b + kDataPrefixSize, data, len);
}

namespace {

uint8_t* PutResumeStreams(uint8_t* b, const std::vector<ResumeStream>& streams) {
  for (const ResumeStream& r : streams) {
    PutU32(b, r.id);
    PutU64(b + 4, r.received);
    PutU64(b + 12, r.delivered);
    b[20] = r.flags;
    PutU32(b + 21, static_cast<uint32_t>(r.error));
    b += kResumeStreamSize;
  }
  return b;
}

Result<std::vector<ResumeStream>> GetResumeStreams(const uint8_t* p, size_t n) {
  if (n % kResumeStreamSize != 0) return Malformed("resume stream list has a partial entry");
  std::vector<ResumeStream> out;
  out.reserve(n / kResumeStreamSize);
  for (size_t i = 0; i < n; i += kResumeStreamSize) {
    ResumeStream r;
    r.id = GetU32(p + i);
    r.received = GetU64(p + i + 4);
    r.delivered = GetU64(p + i + 12);
    r.flags = p[i + 20];
    r.error = static_cast<ErrorCode>(GetU32(p + i + 21));
    if (r.id == 0) return Malformed("resume entry for stream 0");
    if (r.delivered > r.received) return Malformed("resume entry delivered more than received");
    out.push_back(r);
  }
  return out;
}

}  // namespace

void AppendSession(Buffer& out, const SessionPayload& p) {
  uint8_t* b = AppendHeader(out, FrameType::kSession, 0, 0, kSessionIdSize + 4);
  std::memcpy(b, p.session_id, kSessionIdSize);
  PutU32(b + kSessionIdSize, p.ttl_ms);
}

void AppendResume(Buffer& out, const ResumePayload& p) {
  size_t fixed = kSessionIdSize + kResumeProofSize + 4;
  uint8_t* b =
      AppendHeader(out, FrameType::kResume, 0, 0, fixed + p.streams.size() * kResumeStreamSize);
  std::memcpy(b, p.session_id, kSessionIdSize);
  std::memcpy(b + kSessionIdSize, p.proof, kResumeProofSize);
  PutU32(b + kSessionIdSize + kResumeProofSize, p.last_id);
  PutResumeStreams(b + fixed, p.streams);
}

void AppendResumeOk(Buffer& out, const ResumeOkPayload& p) {
  uint8_t* b =
      AppendHeader(out, FrameType::kResumeOk, 0, 0, 4 + p.streams.size() * kResumeStreamSize);
  PutU32(b, p.last_id);
  PutResumeStreams(b + 4, p.streams);
}

Result<SessionPayload> DecodeSession(const uint8_t* p, size_t n) {
  if (n != kSessionIdSize + 4) return Malformed("SESSION frame must be 20 bytes");
  SessionPayload s;
  std::memcpy(s.session_id, p, kSessionIdSize);
  s.ttl_ms = GetU32(p + kSessionIdSize);
  return s;
}

Result<ResumePayload> DecodeResume(const uint8_t* p, size_t n) {
  size_t fixed = kSessionIdSize + kResumeProofSize + 4;
  if (n < fixed) return Malformed("RESUME frame too short");
  ResumePayload r;
  std::memcpy(r.session_id, p, kSessionIdSize);
  std::memcpy(r.proof, p + kSessionIdSize, kResumeProofSize);
  r.last_id = GetU32(p + kSessionIdSize + kResumeProofSize);
  Result<std::vector<ResumeStream>> streams = GetResumeStreams(p + fixed, n - fixed);
  if (!streams) return streams.error();
  r.streams = std::move(*streams);
  return r;
}

Result<ResumeOkPayload> DecodeResumeOk(const uint8_t* p, size_t n) {
  if (n < 4) return Malformed("RESUME_OK frame too short");
  ResumeOkPayload r;
  r.last_id = GetU32(p);
  Result<std::vector<ResumeStream>> streams = GetResumeStreams(p + 4, n - 4);
  if (!streams) return streams.error();
  r.streams = std::move(*streams);
  return r;
}

Result<OpenPayload> DecodeOpen(const uint8_t* p, size_t n) {
  if (n < 7) return Malformed("OPEN frame too short");
  OpenPayload o;
  o.access = p[0];
  o.flags = p[1];
  o.wait_ms = GetU32(p + 2);
  size_t name_len = p[6];
  if (n != 7 + name_len) return Malformed("OPEN frame length does not match its name");
  o.name.assign(reinterpret_cast<const char*>(p + 7), name_len);
  return o;
}

void AppendExit(Buffer& out, uint32_t stream_id, const ExitPayload& p) {
  uint8_t* b = AppendHeader(out, FrameType::kExit, 0, stream_id, kExitPayloadSize);
  b[0] = static_cast<uint8_t>(p.how);
  b[1] = b[2] = b[3] = 0;
  PutU32(b + 4, p.code);
}

Result<ExitPayload> DecodeExit(const uint8_t* p, size_t n) {
  if (n != kExitPayloadSize) return Malformed("EXIT frame must be 8 bytes");
  if (p[0] < static_cast<uint8_t>(ExitHow::kExited) ||
      p[0] > static_cast<uint8_t>(ExitHow::kTimedOut)) {
    return Malformed(fmt::format("EXIT frame with unknown how {}", p[0]));
  }
  return ExitPayload{static_cast<ExitHow>(p[0]), GetU32(p + 4)};
}

Result<OpenOkPayload> DecodeOpenOk(const uint8_t* p, size_t n) {
  if (n != 8) return Malformed("OPEN_OK frame must be 8 bytes");
  return OpenOkPayload{p[0], p[1], p[2], GetU32(p + 4)};
}

Result<CreditPayload> DecodeCredit(const uint8_t* p, size_t n) {
  if (n != 16) return Malformed("CREDIT frame must be 16 bytes");
  CreditPayload c{GetU64(p), GetU64(p + 8)};
  if (c.delivered > c.limit) return Malformed("CREDIT delivered offset above its limit");
  return c;
}

Result<ResetPayload> DecodeReset(const uint8_t* p, size_t n) {
  if (n < 12) return Malformed("RESET frame too short");
  ResetPayload r;
  r.error = static_cast<ErrorCode>(GetU32(p));
  r.final_offset = GetU64(p + 4);
  r.reason.assign(reinterpret_cast<const char*>(p + 12), std::min(n - 12, kMaxReasonLength));
  return r;
}

Result<StopPayload> DecodeStop(const uint8_t* p, size_t n) {
  if (n < 4) return Malformed("STOP frame too short");
  StopPayload s;
  s.error = static_cast<ErrorCode>(GetU32(p));
  s.reason.assign(reinterpret_cast<const char*>(p + 4), std::min(n - 4, kMaxReasonLength));
  return s;
}

Result<uint64_t> DecodePing(const uint8_t* p, size_t n) {
  if (n != 8) return Malformed("PING frame must be 8 bytes");
  return GetU64(p);
}

Result<std::vector<Setting>> DecodeSettings(const uint8_t* p, size_t n) {
  if (n % 6 != 0) return Malformed("SETTINGS length is not a multiple of 6");
  std::vector<Setting> out;
  for (size_t i = 0; i < n; i += 6) {
    out.push_back(Setting{static_cast<SettingId>(GetU16(p + i)), GetU32(p + i + 2)});
  }
  return out;
}

Result<GoawayPayload> DecodeGoaway(const uint8_t* p, size_t n) {
  if (n < 8) return Malformed("GOAWAY frame too short");
  GoawayPayload g;
  g.last_stream_id = GetU32(p);
  g.error = static_cast<ErrorCode>(GetU32(p + 4));
  g.reason.assign(reinterpret_cast<const char*>(p + 8), std::min(n - 8, kMaxReasonLength));
  return g;
}

Result<std::vector<ListEntry>> DecodeListReply(const uint8_t* p, size_t n) {
  std::vector<ListEntry> out;
  size_t i = 0;
  while (i < n) {
    size_t len = p[i];
    if (i + kListEntryFixedSize + len > n) {
      return Malformed("LIST_REPLY entry runs past the frame");
    }
    ListEntry e;
    e.name.assign(reinterpret_cast<const char*>(p + i + 1), len);
    const uint8_t* f = p + i + 1 + len;
    e.kind = f[0];
    e.access = f[1];
    e.flags = f[2];
    e.clients = GetU32(f + 3);
    e.max_clients = GetU32(f + 7);
    e.max_message = GetU32(f + 11);
    out.push_back(std::move(e));
    i += kListEntryFixedSize + len;
  }
  return out;
}

}  // namespace pipegate
