#include "support/raw_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "pipegate/resume.h"

namespace pipegate::testing {
namespace {

int PollMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

}  // namespace

RawClient::RawClient(int fd, std::shared_ptr<const TlsContext> context)
    : fd_(fd), tls_(std::move(context), "127.0.0.1") {}

RawClient::~RawClient() {
  if (fd_ >= 0) close(fd_);
}

std::unique_ptr<RawClient> RawClient::Connect(uint16_t port, const Identity& identity,
                                              std::string* error,
                                              std::optional<Settings> settings) {
  TlsClientOptions options;
  options.cert = identity.cert;
  options.key = identity.key;
  options.ca = identity.ca;
  Result<std::shared_ptr<const TlsContext>> context = TlsContext::NewClient(options);
  if (!context) {
    *error = context.error().message();
    return nullptr;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    *error = std::string("connect: ") + std::strerror(errno);
    if (fd >= 0) close(fd);
    return nullptr;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  std::unique_ptr<RawClient> client(new RawClient(fd, *context));
  const Clock::time_point deadline = Clock::now() + Scaled(Duration(10000));
  Status st = client->tls_.Advance(client->plain_);
  while (st.ok() && !client->tls_.established() && Clock::now() < deadline) {
    client->tls_.DrainCiphertext(client->cipher_out_);
    if (!client->Flush(Duration(5000))) break;
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, PollMs(deadline)) <= 0) break;
    uint8_t buf[16384];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    client->tls_.FeedCiphertext(buf, static_cast<size_t>(n));
    st = client->tls_.Advance(client->plain_);
  }
  if (!client->tls_.established()) {
    *error = st.ok() ? "TLS handshake did not finish" : st.message();
    return nullptr;
  }
  if (settings) {
    Buffer frames;
    AppendSettings(frames, {{SettingId::kMaxFramePayload, settings->max_frame_payload},
                            {SettingId::kStreamWindow, settings->stream_window},
                            {SettingId::kSessionWindow, settings->session_window},
                            {SettingId::kMaxStreams, settings->max_streams}});
    if (!client->Send(frames)) {
      *error = "cannot send SETTINGS";
      return nullptr;
    }
  }
  return client;
}

bool RawClient::Flush(Duration timeout) {
  const Clock::time_point deadline = Clock::now() + Scaled(timeout);
  while (!cipher_out_.empty()) {
    ssize_t n = write(fd_, cipher_out_.data(), cipher_out_.size());
    if (n > 0) {
      cipher_out_.Consume(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      closed_ = true;
      close_reason_ = std::string("write: ") + std::strerror(errno);
      return false;
    }
    pollfd pfd{fd_, POLLOUT, 0};
    if (poll(&pfd, 1, PollMs(deadline)) <= 0) {
      close_reason_ = "the gateway took no bytes in time";  // Not closed: the caller decides.
      return false;
    }
  }
  return true;
}

bool RawClient::Send(const Buffer& frames) { return Send(frames, Duration(10000)); }

bool RawClient::Send(const Buffer& frames, Duration stall) {
  if (closed_) return false;
  Status st = tls_.WritePlaintext(frames.data(), frames.size());
  if (!st.ok()) {
    closed_ = true;
    close_reason_ = st.message();
    return false;
  }
  tls_.DrainCiphertext(cipher_out_);
  return Flush(stall);
}

bool RawClient::SendResume(const std::string& session_id, const std::string& key, Buffer* also) {
  ResumePayload resume;
  if (session_id.size() != kSessionIdSize) return false;
  std::memcpy(resume.session_id, session_id.data(), kSessionIdSize);
  if (!ComputeResumeProof(key, tls_, resume.proof)) return false;
  Buffer frames;
  AppendResume(frames, resume);
  if (also != nullptr) frames.Append(also->data(), also->size());
  return Send(frames);
}

std::string RawClient::WaitSession(Duration timeout) {
  std::optional<RawFrame> frame = WaitFor(FrameType::kSession, 0, timeout);
  if (!frame) return "";
  Result<SessionPayload> session =
      DecodeSession(reinterpret_cast<const uint8_t*>(frame->payload.data()), frame->payload.size());
  if (!session) return "";
  return std::string(reinterpret_cast<const char*>(session->session_id), kSessionIdSize);
}

std::string RawClient::ResumeKey(const std::string& session_id) const {
  uint8_t sid[kSessionIdSize] = {};
  std::memcpy(sid, session_id.data(), std::min(session_id.size(), kSessionIdSize));
  return DeriveResumeKey(tls_, sid);
}

bool RawClient::SendOpen(uint32_t id, const std::string& name, uint8_t access, uint32_t wait_ms) {
  Buffer frames;
  OpenPayload open;
  open.access = access;
  open.wait_ms = wait_ms;
  open.name = name;
  AppendOpen(frames, id, open);
  return Send(frames);
}

bool RawClient::SendRaw(FrameType type, uint8_t flags, uint32_t stream_id, uint32_t length,
                        const std::string& payload) {
  Buffer frames;
  uint8_t header[kFrameHeaderSize];
  FrameHeader h;
  h.type = type;
  h.flags = flags;
  h.stream_id = stream_id;
  h.length = length;
  EncodeFrameHeader(header, h);
  frames.Append(header, sizeof header);
  frames.Append(payload.data(), payload.size());
  return Send(frames);
}

bool RawClient::ReadSome(Duration timeout) {
  if (closed_) return false;
  pollfd pfd{fd_, POLLIN, 0};
  int rc = poll(&pfd, 1, static_cast<int>(timeout.count()));  // Callers scaled it already.
  if (rc <= 0) return false;
  uint8_t buf[65536];
  ssize_t n = read(fd_, buf, sizeof buf);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
    closed_ = true;
    close_reason_ = n == 0 ? "EOF" : std::string("read: ") + std::strerror(errno);
    return false;
  }
  if (n < 0) return true;
  tls_.FeedCiphertext(buf, static_cast<size_t>(n));
  Status st = tls_.Advance(plain_);
  tls_.DrainCiphertext(cipher_out_);
  Flush(Duration(1000));
  if (!st.ok() || tls_.peer_closed()) {
    closed_ = true;
    close_reason_ = st.ok() ? "close_notify" : st.message();
  }
  return true;
}

std::optional<RawFrame> RawClient::TakeFrame() {
  if (plain_.size() < kFrameHeaderSize) return std::nullopt;
  const uint8_t* p = plain_.data();
  RawFrame frame;
  frame.header.type = static_cast<FrameType>(p[0]);
  frame.header.flags = p[1];
  frame.header.stream_id = GetU32(p + 4);
  frame.header.length = GetU32(p + 8);
  if (plain_.size() < kFrameHeaderSize + frame.header.length) return std::nullopt;
  frame.payload.assign(reinterpret_cast<const char*>(p + kFrameHeaderSize), frame.header.length);
  plain_.Consume(kFrameHeaderSize + frame.header.length);
  if (frame.header.type == FrameType::kGoaway) {
    Result<GoawayPayload> g =
        DecodeGoaway(reinterpret_cast<const uint8_t*>(frame.payload.data()), frame.payload.size());
    if (g) goaway_reason_ = g->reason;
  }
  return frame;
}

std::optional<RawFrame> RawClient::NextFrame(Duration timeout) {
  const Clock::time_point deadline = Clock::now() + Scaled(timeout);
  for (;;) {
    if (std::optional<RawFrame> frame = TakeFrame()) return frame;
    if (closed_ || Clock::now() >= deadline) return std::nullopt;
    ReadSome(Duration(std::max<int64_t>(1, PollMs(deadline))));
  }
}

std::optional<RawFrame> RawClient::WaitFor(FrameType type, uint32_t stream_id, Duration timeout) {
  const Clock::time_point deadline = Clock::now() + Scaled(timeout);
  while (Clock::now() < deadline) {
    std::optional<RawFrame> frame = NextFrame(Duration(std::max<int64_t>(1, PollMs(deadline))));
    if (!frame) return std::nullopt;
    if (frame->header.type == type && frame->header.stream_id == stream_id) return frame;
  }
  return std::nullopt;
}

bool RawClient::WaitClosed(Duration timeout) {
  const Clock::time_point deadline = Clock::now() + Scaled(timeout);
  while (!closed_ && Clock::now() < deadline) {
    while (TakeFrame()) {
    }
    ReadSome(Duration(std::max<int64_t>(1, PollMs(deadline))));
  }
  while (TakeFrame()) {  // What came with the close (GOAWAY) still counts.
  }
  return closed_;
}

std::pair<ErrorCode, std::string> DecodeResetReason(const RawFrame& frame) {
  Result<ResetPayload> r =
      DecodeReset(reinterpret_cast<const uint8_t*>(frame.payload.data()), frame.payload.size());
  if (!r) return {ErrorCode::kInternal, "undecodable RESET"};
  return {r->error, r->reason};
}

}  // namespace pipegate::testing
