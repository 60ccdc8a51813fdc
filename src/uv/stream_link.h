#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <utility>

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
  /// @brief The peer's FIN: end the local write side once the queue drains.
  void OnFin();

  uint32_t id() const noexcept { return id_; }
  const std::string& name() const noexcept { return name_; }
  uint64_t bytes_sent() const noexcept { return bytes_sent_; }
  /// @brief Also adds every byte this stream moves to @p totals (null: none), which must
  /// outlive the stream.
  void set_byte_totals(StreamByteTotals* totals) noexcept { totals_ = totals; }
  uint64_t bytes_received() const noexcept { return bytes_received_; }
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
};

}  // namespace pipegate::uvglue
