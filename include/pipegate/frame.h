#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pipegate/buffer.h"
#include "pipegate/status.h"

namespace pipegate {

// Wire format of pipegate/1; docs/protocol.md is the prose version of this header.
//
// Every frame starts with a 12-byte big-endian header:
//   type u8 | flags u8 | reserved u16 (0) | stream_id u32 | length u32 (payload bytes)
inline constexpr size_t kFrameHeaderSize = 12;
inline constexpr size_t kDataPrefixSize = 8;  ///< DATA payload starts with offset u64.
inline constexpr uint32_t kDefaultMaxFramePayload = 16384 + kDataPrefixSize;
inline constexpr uint32_t kMaxFramePayloadLimit = 1u << 20;  ///< Largest max_frame a peer may set.
inline constexpr size_t kMaxControlPayload = 16384;          ///< Non-DATA frames are never longer.
inline constexpr size_t kMaxReasonLength = 512;
inline constexpr const char* kAlpn = "pipegate/1";

enum class FrameType : uint8_t {
  kData = 0x0,
  kCredit = 0x1,
  kOpen = 0x2,
  kOpenOk = 0x3,
  kReset = 0x4,
  kStop = 0x5,
  kPing = 0x6,
  kSettings = 0x7,
  kGoaway = 0x8,
  kResume = 0x9,  ///< Client: resume a detached session on this new connection.
  kList = 0xA,
  kListReply = 0xB,
  kSession = 0xC,   ///< Gateway: the id of the session this connection carries.
  kResumeOk = 0xD,  ///< Gateway: the session is resumed; here is what it holds.
  kExit = 0xE,      ///< Gateway: how the process of an exec stream ended (before its FIN).
};
inline constexpr uint8_t kMaxFrameType = 0xE;

// Flags.
inline constexpr uint8_t kFlagFin = 0x1;  ///< DATA: last byte of this direction.
/// DATA: a message ends with this frame's last byte (message mode: SOCK_SEQPACKET exports).
inline constexpr uint8_t kFlagMsgEnd = 0x2;
inline constexpr uint8_t kFlagAck = 0x1;   ///< PING: this is the answer.
inline constexpr uint8_t kFlagMore = 0x1;  ///< LIST_REPLY: more entries follow.

/// @brief Error codes carried by RESET, STOP and GOAWAY.
enum class ErrorCode : uint32_t {
  kNoError = 0,
  kProtocol = 1,
  kAccessDenied = 2,
  kNotFound = 3,
  kBusy = 4,
  kNoReader = 5,
  kBrokenPipe = 6,
  kInternal = 7,
  kFlowControl = 8,
  kLimit = 9,
  kCancel = 10,
  kIo = 11,
  kShutdown = 12,
  kFrameSize = 13,
  kResumeRejected = 14,
};

/// @brief Maps a wire error to the user-facing Code (and so to an exit status).
Code CodeForError(ErrorCode error) noexcept;
/// @brief Maps a Code to the wire error that reports it.
ErrorCode ErrorForCode(Code code) noexcept;
const char* ErrorCodeName(ErrorCode error) noexcept;

/// @brief SETTINGS identifiers (id u16, value u32 pairs).
enum class SettingId : uint16_t {
  kMaxFramePayload = 1,  ///< Largest payload the sender accepts (≥ 16 KiB + 8).
  kStreamWindow = 2,     ///< Initial credit the sender grants each new stream.
  kSessionWindow = 3,    ///< Initial credit the sender grants the whole connection.
  kMaxStreams = 4,       ///< Concurrent streams the sender accepts.
  /// Gateway: DATA bytes it accepts on a stream opened with kOpenFlagEarlyData before it
  /// answers the OPEN (absent or 0: none).
  kEarlyData = 5,
};

/// @brief A decoded frame header.
struct FrameHeader {
  FrameType type = FrameType::kData;
  uint8_t flags = 0;
  uint32_t stream_id = 0;
  uint32_t length = 0;
};

/// @brief Writes @p h into 12 bytes at @p out.
void EncodeFrameHeader(uint8_t* out, const FrameHeader& h) noexcept;

/// @brief Reads and validates a header from 12 bytes. Checks the reserved field, the type, the
/// stream id rules of the type, and the length against @p max_payload (DATA) or
/// kMaxControlPayload (others). Errors are kProtocol with the reason.
Result<FrameHeader> DecodeFrameHeader(const uint8_t* in, uint32_t max_payload);

// Typed payloads of control frames.
struct OpenPayload {
  uint8_t access = 0;    ///< Access value (1 read, 2 write, 3 duplex).
  uint8_t flags = 0;     ///< kOpenFlagLines, kOpenFlagWaitOnlyWhileBusy, kOpenFlagFollow, ...
  uint32_t wait_ms = 0;  ///< How long the gateway may wait for busy/no reader.
  std::string name;
};
inline constexpr uint8_t kOpenFlagLines = 0x1;
/// wait_ms covers a busy export only; no reader is answered at once (a mounted socket's
/// connections: a local connect() to a socket nobody listens on is refused at once too).
inline constexpr uint8_t kOpenFlagWaitOnlyWhileBusy = 0x2;
/// A read of a FIFO export stays attached across the EOFs of its local writers (`cat
/// --follow`, like `tail -f`): the stream ends only when the client ends it.
inline constexpr uint8_t kOpenFlagFollow = 0x4;
/// DATA follows the OPEN before OPEN_OK, up to the gateway's kEarlyData setting, held by the
/// gateway until the local pipe is open (dropped on a refusal). Only for a byte stream the
/// client writes: a gateway refuses it for an export that would not grant the client's
/// direction or that carries messages.
inline constexpr uint8_t kOpenFlagEarlyData = 0x8;

struct OpenOkPayload {
  uint8_t kind = 0;          ///< ExportKind.
  uint8_t access = 0;        ///< Access granted.
  uint8_t flags = 0;         ///< kExportMessages.
  uint32_t max_message = 0;  ///< Message mode: the largest message either side may send.
};
/// OPEN_OK and LIST_REPLY: the export carries messages (DATA frames mark where each ends with
/// kFlagMsgEnd), not a byte stream.
inline constexpr uint8_t kExportMessages = 0x1;

/// @brief How the process behind an exec stream ended (EXIT frame).
enum class ExitHow : uint8_t {
  kExited = 1,    ///< It called exit(): `code` is its exit status (0-255).
  kSignaled = 2,  ///< A signal ended it: `code` is the signal number.
  kTimedOut = 3,  ///< It outlived the export's timeout and was killed: `code` is the timeout
                  ///< in seconds (rounded up).
};

/// @brief EXIT: `how u8 | reserved u8[3] (0) | code u32` (8 bytes exactly).
struct ExitPayload {
  ExitHow how = ExitHow::kExited;
  uint32_t code = 0;
};
inline constexpr size_t kExitPayloadSize = 8;

struct CreditPayload {
  uint64_t delivered = 0;  ///< Bytes written into the local pipe (the acknowledgement).
  uint64_t limit = 0;      ///< Absolute offset the sender may send up to.
};

struct ResetPayload {
  ErrorCode error = ErrorCode::kNoError;
  uint64_t final_offset = 0;
  std::string reason;
};

struct StopPayload {
  ErrorCode error = ErrorCode::kNoError;
  std::string reason;
};

struct GoawayPayload {
  uint32_t last_stream_id = 0;
  ErrorCode error = ErrorCode::kNoError;
  std::string reason;
};

struct Setting {
  SettingId id;
  uint32_t value;
};

inline constexpr size_t kSessionIdSize = 16;
inline constexpr size_t kResumeProofSize = 32;

/// @brief SESSION: sent once by the gateway on a fresh connection, after SETTINGS.
struct SessionPayload {
  uint8_t session_id[kSessionIdSize] = {};
  uint32_t ttl_ms = 0;  ///< How long the gateway keeps the session once detached.
};

/// @brief What one side holds of one stream, exchanged by RESUME and RESUME_OK.
struct ResumeStream {
  uint32_t id = 0;
  uint64_t received = 0;                  ///< Next offset expected from the peer.
  uint64_t delivered = 0;                 ///< Bytes of the peer's written into the local pipe.
  uint8_t flags = 0;                      ///< kResumeClosed, kResumeFinReceived.
  ErrorCode error = ErrorCode::kNoError;  ///< Why it ended, for a closed stream.
};
inline constexpr uint8_t kResumeClosed = 0x1;       ///< The stream is finished on this side.
inline constexpr uint8_t kResumeFinReceived = 0x2;  ///< The peer's FIN arrived.
inline constexpr uint8_t kResumeAccepted = 0x4;     ///< OPEN_OK was sent (gateway) or seen.
inline constexpr size_t kResumeStreamSize = 25;

struct ResumePayload {
  uint8_t session_id[kSessionIdSize] = {};
  uint8_t proof[kResumeProofSize] = {};
  uint32_t last_id = 0;  ///< Highest stream id the sender has seen or used.
  std::vector<ResumeStream> streams;
};

struct ResumeOkPayload {
  uint32_t last_id = 0;
  std::vector<ResumeStream> streams;
};

struct ListEntry {
  std::string name;
  uint8_t kind = 0;
  uint8_t access = 0;
  uint8_t flags = 0;         ///< kExportMessages.
  uint32_t clients = 0;      ///< Streams attached to the export now (all clients).
  uint32_t max_clients = 0;  ///< Its max_clients; 0 = unlimited.
  uint32_t max_message = 0;  ///< Message mode: the largest message; else 0.
};
/// Bytes of one LIST_REPLY entry besides its name: name length u8, kind u8, access u8,
/// flags u8, clients u32, max_clients u32, max_message u32.
inline constexpr size_t kListEntryFixedSize = 16;

// Encoders append a whole frame (header and payload) to @p out.
void AppendOpen(Buffer& out, uint32_t stream_id, const OpenPayload& p);
void AppendOpenOk(Buffer& out, uint32_t stream_id, const OpenOkPayload& p);
void AppendCredit(Buffer& out, uint32_t stream_id, const CreditPayload& p);
void AppendReset(Buffer& out, uint32_t stream_id, const ResetPayload& p);
void AppendStop(Buffer& out, uint32_t stream_id, const StopPayload& p);
void AppendPing(Buffer& out, uint8_t flags, uint64_t opaque);
void AppendSettings(Buffer& out, const std::vector<Setting>& settings);
void AppendGoaway(Buffer& out, const GoawayPayload& p);
void AppendList(Buffer& out);
void AppendListReply(Buffer& out, uint8_t flags, const std::vector<ListEntry>& entries);
void AppendSession(Buffer& out, const SessionPayload& p);
void AppendResume(Buffer& out, const ResumePayload& p);
void AppendResumeOk(Buffer& out, const ResumeOkPayload& p);
void AppendExit(Buffer& out, uint32_t stream_id, const ExitPayload& p);
/// @brief Appends a DATA frame by copying @p len bytes.
void AppendData(Buffer& out, uint32_t stream_id, uint8_t flags, uint64_t offset,
                const uint8_t* data, size_t len);

// Decoders check the exact layout; errors are kProtocol with the reason.
Result<OpenPayload> DecodeOpen(const uint8_t* p, size_t n);
Result<OpenOkPayload> DecodeOpenOk(const uint8_t* p, size_t n);
Result<CreditPayload> DecodeCredit(const uint8_t* p, size_t n);
Result<ResetPayload> DecodeReset(const uint8_t* p, size_t n);
Result<StopPayload> DecodeStop(const uint8_t* p, size_t n);
Result<uint64_t> DecodePing(const uint8_t* p, size_t n);
Result<std::vector<Setting>> DecodeSettings(const uint8_t* p, size_t n);
Result<GoawayPayload> DecodeGoaway(const uint8_t* p, size_t n);
Result<std::vector<ListEntry>> DecodeListReply(const uint8_t* p, size_t n);
Result<SessionPayload> DecodeSession(const uint8_t* p, size_t n);
Result<ResumePayload> DecodeResume(const uint8_t* p, size_t n);
Result<ResumeOkPayload> DecodeResumeOk(const uint8_t* p, size_t n);
/// @brief Checks the length and that `how` is known; an unknown `how` is malformed.
Result<ExitPayload> DecodeExit(const uint8_t* p, size_t n);

// Big-endian helpers.
inline void PutU16(uint8_t* p, uint16_t v) noexcept {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void PutU32(uint8_t* p, uint32_t v) noexcept {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}
inline void PutU64(uint8_t* p, uint64_t v) noexcept {
  PutU32(p, static_cast<uint32_t>(v >> 32));
  PutU32(p + 4, static_cast<uint32_t>(v));
}
inline uint16_t GetU16(const uint8_t* p) noexcept {
  return static_cast<uint16_t>((p[0] << 8) | p[1]);
}
inline uint32_t GetU32(const uint8_t* p) noexcept {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
inline uint64_t GetU64(const uint8_t* p) noexcept {
  return (uint64_t{GetU32(p)} << 32) | GetU32(p + 4);
}

}  // namespace pipegate
