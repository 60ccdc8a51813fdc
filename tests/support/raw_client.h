#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pipegate/buffer.h"
#include "pipegate/frame.h"
#include "pipegate/tls.h"

#include "support/pki.h"
#include "support/timing.h"

namespace pipegate::testing {

/// @brief One decoded pipegate/1 frame (DATA payloads keep their 8-byte offset prefix).
struct RawFrame {
  FrameHeader header;
  std::string payload;
};

/// @brief What a RawClient announces in its SETTINGS.
struct RawClientSettings {
  uint32_t max_frame_payload = kDefaultMaxFramePayload;
  uint32_t stream_window = 1u << 20;
  uint32_t session_window = 16u << 20;
  uint32_t max_streams = 256;
};

/// @brief A deliberately misbehaving pipegate/1 client for abuse tests: real TLS (the library's
/// TlsSession over a blocking loopback socket), but frames written by hand, so that it can do
/// what the bridge never does (open streams past the limit, never read, send oversized or
/// malformed frames).
///
/// Ownership: owns its socket. Thread: one thread. Every wait is bounded by a (scaled) timeout.
class RawClient {
 public:
  using Settings = RawClientSettings;

  /// @brief Connects to 127.0.0.1:@p port as @p identity, completes TLS and sends SETTINGS
  /// (unless @p settings is nullopt). Returns null with @p error set on failure.
  static std::unique_ptr<RawClient> Connect(uint16_t port, const Identity& identity,
                                            std::string* error,
                                            std::optional<Settings> settings = Settings{});
  ~RawClient();
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  /// @brief Encrypts and sends raw frame bytes. @return False if the connection is gone.
  bool Send(const Buffer& frames);
  /// @brief As Send(), but gives up when the socket takes nothing for @p stall (the gateway
  /// stopped reading). @return False then, or if the connection is gone.
  bool Send(const Buffer& frames, Duration stall);
  /// @brief Sends RESUME for @p session_id with a proof computed from @p key over this
  /// connection (see include/pipegate/resume.h), listing no streams.
  bool SendResume(const std::string& session_id, const std::string& key, Buffer* also = nullptr);
  /// @brief Waits for the gateway's SESSION frame. @return The session id, empty on timeout.
  std::string WaitSession(Duration timeout);
  /// @return The resume key of @p session_id as derived from this connection.
  std::string ResumeKey(const std::string& session_id) const;
  /// @brief Sends OPEN for stream @p id.
  bool SendOpen(uint32_t id, const std::string& name, uint8_t access, uint32_t wait_ms = 0);
  /// @brief Sends a frame header with any type, flags and length, and @p payload.
  bool SendRaw(FrameType type, uint8_t flags, uint32_t stream_id, uint32_t length,
               const std::string& payload);

  /// @brief The next frame from the gateway, skipping none; nullopt on timeout or close.
  std::optional<RawFrame> NextFrame(Duration timeout);
  /// @brief Reads until a frame of @p type for @p stream_id arrives (others are dropped).
  std::optional<RawFrame> WaitFor(FrameType type, uint32_t stream_id, Duration timeout);
  /// @brief Reads (dropping frames) until the gateway closes the connection.
  /// @return True if it closed within the timeout.
  bool WaitClosed(Duration timeout);
  /// @return True once the gateway closed the connection (EOF, close_notify or error).
  bool closed() const { return closed_; }
  /// @return Why the last Send() failed or the connection counts as closed (EOF, a write or
  /// TLS error, close_notify, or no bytes taken in time).
  const std::string& close_reason() const { return close_reason_; }
  /// @return The GOAWAY reason, if one arrived.
  const std::string& goaway_reason() const { return goaway_reason_; }
  /// @return The socket, e.g. to stop reading it altogether.
  int fd() const { return fd_; }

 private:
  RawClient(int fd, std::shared_ptr<const TlsContext> context);
  bool Flush(Duration timeout);
  bool ReadSome(Duration timeout);
  std::optional<RawFrame> TakeFrame();

  int fd_;
  TlsSession tls_;
  Buffer plain_;
  Buffer cipher_out_;
  bool closed_ = false;
  std::string goaway_reason_;
  std::string close_reason_;
};

/// @brief Decodes the error code and reason of a RESET payload.
std::pair<ErrorCode, std::string> DecodeResetReason(const RawFrame& frame);

}  // namespace pipegate::testing
