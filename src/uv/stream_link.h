#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "pipegate/buffer.h"
#include "pipegate/status.h"

#include "uv/connection.h"
#include "uv/local_pipe.h"

namespace pipegate::uvglue {

/// @brief Running byte totals that several streams add to (an export's, for metrics).
///
/// Thread: any (relaxed atomics: totals, not synchronisation).
struct StreamByteTotals {
  std::atomic<uint64_t> sent{0};      ///< Read locally and sent into streams.
  std::atomic<uint64_t> received{0};  ///< Received from streams (written locally or dropped).
};

class StreamLink;

/// @brief What a StreamLink needs from whoever holds its connection.
class StreamLinkOwner {
 public:
  virtual ~StreamLinkOwner() = default;
  /// @return The session's multiplexer (it outlives connections, so streams survive a
  /// reconnect), or nullptr once the session is gone.
  virtual Mux* stream_mux() = 0;
  /// @brief Sends what the mux queued, if a connection is attached.
  virtual void FlushSoon() = 0;
  /// @return True while the connection's write backlog is full.
  virtual bool Backlogged() = 0;
  /// @brief Called when a link paused for back-pressure; call @p link->Resume() later.
  virtual void PauseForBackpressure(StreamLink* link) = 0;
};

/// @brief The local end(s) of one stream: the pipe read from and the pipe written to, either
/// of which may be null, or one pipe used both ways (a Unix socket).
struct StreamPipes {
  LocalPipePtr in;
  LocalPipePtr out;
  bool duplex = false;  ///< `in` is also written to; `out` is null.

  static StreamPipes Duplex(LocalPipePtr pipe) { return {std::move(pipe), nullptr, true}; }
};

/// @brief How one side of a message-mode stream (an export with `socket = "seqpacket"`) meets
/// its local pipe. Each local message travels as DATA frames whose last carries kFlagMsgEnd.
enum class MessageFraming : uint8_t {
  kNone,    ///< A byte stream (not message mode).
  kSocket,  ///< A SOCK_SEQPACKET socket: one send()/recv() per message.
  kRaw,     ///< In: each read() is one message (up to the maximum); out: messages back to back.
  kLength,  ///< stdio: each message preceded by its length, 4 bytes big-endian.
  kLines,   ///< stdio: each line (without its newline) is one message; out: message + '\n'.
};

/// @brief Moves bytes between one mux stream and its local pipes: local reads go straight into
/// DATA frames (BeginData/Read/CommitData, no copy), stream data goes into the local write queue
/// and is acknowledged (Consumed) only once it reached the fd. Shared by the gateway's export
/// streams and the bridge's streams.
///
/// Ownership: owned by its owner's stream table; owns its LocalPipes (StreamPipes), which
/// close when it is destroyed or drops them.
/// Thread: the loop thread. Re-entrancy: every method may end in mux calls that close the
/// stream; the owner deletes the link from OnStreamClosed, never from inside a link method.
class StreamLink : public LocalPipeEvents {
 public:
  StreamLink(StreamLinkOwner* owner, uint32_t id, std::string name)
      : owner_(owner), id_(id), name_(std::move(name)) {}
  ~StreamLink() override;
  StreamLink(const StreamLink&) = delete;
  StreamLink& operator=(const StreamLink&) = delete;

  /// @brief Takes the stream's local pipes and sends their events to this link.
  void Attach(StreamPipes pipes);
  /// @brief Stops using the input pipe (closing it unless it is also the output).
  void DropInput();
  /// @brief Stops using the output pipe (closing it unless it is also the input).
  void DropOutput();
  /// @brief Starts pumping local reads into the stream (after the stream is accepted). With no
  /// input pipe, ends our direction at once.
  void StartReading();
  /// @brief Resumes reads paused by back-pressure or spent credit.
  void Resume();
  /// @brief The peer stopped reading: stop reading locally.
  void StopLocalReading();
  /// @brief Ends our direction now, as if the input had reached EOF: stops reading, lets the
  /// input go and sends FIN (this may end the stream). Nothing if it already ended.
  void EndInput();
  /// @brief Stream bytes arrived: write them locally.
  void OnData(const uint8_t* p, size_t n);
  /// @brief Message mode: the bytes since the last boundary are one message: write it.
  void OnMessageEnd();
  /// @brief Makes this a message-mode stream (before StartReading): local reads become
  /// messages as @p in says, messages are written locally as @p out says, and a message longer
  /// than @p max_message either way ends the stream with a kLimit error, never split.
  void SetMessageMode(MessageFraming in, MessageFraming out, uint32_t max_message);
  bool message_mode() const noexcept { return max_message_ != 0; }
  /// @brief The peer's FIN: end the local write side once the queue drains.
  void OnFin();
  /// @brief The peer's RESET of its direction: what it sent and the local pipe has not taken
  /// yet is dropped (its connection credit went back with the RESET, so keeping it would let
  /// the peer make this side hold more than its windows), and the local write side ends.
  void OnPeerReset();

  uint32_t id() const noexcept { return id_; }
  const std::string& name() const noexcept { return name_; }
  uint64_t bytes_sent() const noexcept { return bytes_sent_; }
  /// @brief Also adds every byte this stream moves to @p totals (null: none), which must
  /// outlive the stream.
  void set_byte_totals(StreamByteTotals* totals) noexcept { totals_ = totals; }
  uint64_t bytes_received() const noexcept { return bytes_received_; }
  /// True once the local output holds every byte and its write side has ended (or the stream
  /// has no output). Already true when the last bytes' Consumed() ends the stream.
  bool local_write_done() const noexcept { return local_write_done_; }
  bool local_eof() const noexcept { return local_eof_; }
  LocalPipe* output() const noexcept { return out_; }
  /// @return The local error that ended the stream, if any.
  const Status& local_error() const noexcept { return local_error_; }

  // LocalPipeEvents.
  void OnLocalReadable() override;
  void OnLocalWritten(size_t n) override;
  void OnLocalWriteError(const Status& status) override;
  void OnLocalWriteDone() override;

 protected:
  /// @brief What the end of file of the input means: OK for a plain end (FIN), or why the
  /// stream is cut short, sent as a RESET with the status's code and message instead. Called
  /// once, on the loop thread, when the input reads end of file.
  virtual Status InputEndStatus() const { return Status(); }
  /// @brief The input reached EOF and the input pipe was let go; FIN is about to be sent.
  /// Return true to hold the FIN back: the subclass sends it later (Mux::SendFin). It may
  /// queue frames of its own first (Mux::SendExit), but must not end the stream here.
  virtual bool HoldFin() { return false; }

  StreamLinkOwner* owner_;
  uint32_t id_;
  std::string name_;
  LocalPipePtr in_pipe_;      ///< Owns the input pipe, or the duplex pipe while it is read.
  LocalPipePtr out_pipe_;     ///< Owns the output pipe unless in_pipe_ does (duplex).
  LocalPipe* in_ = nullptr;   ///< The pipe read from, if any (owned above).
  LocalPipe* out_ = nullptr;  ///< The pipe written to, if any (owned above).
  bool reading_ = false;
  bool local_eof_ = false;
  bool local_write_done_ = false;
  uint64_t bytes_sent_ = 0;
  uint64_t bytes_received_ = 0;
  StreamByteTotals* totals_ = nullptr;
  Status local_error_;

 private:
  void ReadMessages();
  /// @brief Sends what is left of the staged message; false while credit is short.
  bool SendStaged();
  /// @brief Takes the next complete message out of parse_ (kLength, kLines); at EOF also an
  /// unfinished last line. @return kTaken, kNeedMore, or kTooLong / kTruncated (errors).
  enum class Parse { kTaken, kNeedMore, kTooLong, kTruncated };
  Parse ParseMessage(bool eof);
  void MessageError(std::string why);
  /// @return Bytes of incoming_ that are not stream bytes (the kLength prefix).
  size_t IncomingHeader() const { return out_framing_ == MessageFraming::kLength ? 4 : 0; }
  /// @brief Acknowledges written local bytes of framed messages to the mux.
  void CountWritten(size_t n);

  // Message mode (max_message_ != 0). Bounded: each buffer holds at most one message (plus a
  // read's worth in parse_); received bytes are acknowledged only once written locally.
  MessageFraming in_framing_ = MessageFraming::kNone;
  MessageFraming out_framing_ = MessageFraming::kNone;
  uint32_t max_message_ = 0;
  Buffer staged_;  ///< A local message being sent: what is not yet in DATA frames.
  Buffer parse_;   ///< kLength/kLines: bytes read, not yet a message.
  bool parse_eof_ = false;
  /// The message arriving from the stream; with kLength output, after 4 bytes kept for its
  /// length (filled in when it ends).
  Buffer incoming_;
  /// Framed messages handed to the local pipe: {local bytes left, stream bytes}.
  std::deque<std::pair<size_t, size_t>> written_;
};

}  // namespace pipegate::uvglue
