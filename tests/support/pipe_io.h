#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>
#include <string>
#include <thread>

#include "support/data.h"
#include "support/timing.h"

namespace pipegate::testing {

/// @brief How a FifoReader behaves.
struct FifoReaderOptions {
  /// Open the FIFO at once but read nothing until Resume(): a stalled reader.
  bool start_paused = false;
  /// Stop at the first EOF (every writer closed). When false, keep reading across EOFs, as a
  /// reader that outlives several writers would, until Stop().
  bool stop_at_eof = true;
  /// Close the FIFO after this many bytes: a reader that goes away mid-stream.
  uint64_t close_after = std::numeric_limits<uint64_t>::max();
  /// Also keep every byte in memory (data()).
  bool keep_data = false;
  /// Also copy every byte to this file, if not empty.
  std::string copy_to;

  /// @brief A reader that opens the FIFO but reads nothing until Resume().
  static FifoReaderOptions Paused() {
    FifoReaderOptions options;
    options.start_paused = true;
    return options;
  }
  /// @brief A reader that closes the FIFO after `bytes`.
  static FifoReaderOptions CloseAfter(uint64_t bytes) {
    FifoReaderOptions options;
    options.close_after = bytes;
    return options;
  }
};

/// @brief A local reader of a FIFO, on a thread of the test process.
///
/// The constructor opens the FIFO for reading (non-blocking, close-on-exec), so from then on the
/// FIFO has a reader: a gateway's `write` export sees one at once. The thread waits with poll(),
/// which on Linux reports POLLHUP only after a writer has come and gone, so a reader that starts
/// before any writer waits for one, like a blocking `cat FIFO` would.
///
/// Ownership: owns the descriptor and the thread; the destructor stops and joins. Thread: the
/// accessors may be called from any thread.
class FifoReader {
 public:
  FifoReader(std::string path, FifoReaderOptions options = {});
  ~FifoReader();
  FifoReader(const FifoReader&) = delete;
  FifoReader& operator=(const FifoReader&) = delete;

  /// @return True if the FIFO was opened.
  bool ok() const { return started_; }
  /// @return The open or read error, if any.
  std::string error() const;

  /// @brief Starts reading (after FifoReaderOptions::start_paused).
  void Resume();
  /// @brief Stops the thread and closes the FIFO. Idempotent.
  void Stop();

  /// @return Bytes read so far.
  uint64_t bytes() const { return bytes_.load(); }
  /// @return True once the reader finished: EOF (with stop_at_eof), close_after, or an error.
  bool done() const { return done_.load(); }
  /// @return True if an EOF was seen at least once.
  bool saw_eof() const { return saw_eof_.load(); }
  /// @brief Waits until done(). @param timeout Nominal. @return done().
  bool WaitDone(Duration timeout) const;

  /// @brief Bytes read plus bytes waiting in the FIFO (FIONREAD), measured atomically with
  /// respect to the reader thread: everything a writer has delivered into the pipe so far.
  uint64_t DeliveredBytes();

  /// @brief SHA-256 of everything read. Call after done() or Stop().
  std::string Sha256Hex();
  /// @return A copy of everything read (keep_data only).
  std::string data() const;

 private:
  void Run();

  const std::string path_;
  const FifoReaderOptions options_;
  int fd_ = -1;
  bool started_ = false;
  mutable std::mutex mu_;
  std::condition_variable resume_cv_;
  bool paused_;
  std::string error_;
  std::string data_;
  int copy_fd_ = -1;
  Sha256 sha_;
  std::string digest_;
  std::atomic<uint64_t> bytes_{0};
  std::atomic<bool> done_{false};
  std::atomic<bool> saw_eof_{false};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// @brief Feeds RandomStream(seed) into a pipe or socket on a thread, then closes it.
///
/// Used to drive a child's stdin with more data than is sensible to keep on disk, and to observe
/// backpressure: written() stops growing when the consumer stalls.
///
/// Ownership: takes `fd` and closes it when all bytes are written, on error, or on Stop().
class StreamFeeder {
 public:
  StreamFeeder(int fd, uint64_t total, uint64_t seed);
  ~StreamFeeder();
  StreamFeeder(const StreamFeeder&) = delete;
  StreamFeeder& operator=(const StreamFeeder&) = delete;

  /// @return Bytes written so far.
  uint64_t written() const { return written_.load(); }
  /// @return When written() last grew (or when the feeder started).
  Clock::time_point last_progress() const;
  /// @return True once everything was written and the fd closed, or on error.
  bool done() const { return done_.load(); }
  /// @return The write error (e.g. EPIPE when the consumer went away), or empty.
  std::string error() const;
  /// @brief Stops writing and closes the fd. Idempotent.
  void Stop();
  /// @brief Holds further writes until Resume() (the fd stays open).
  void Pause() { paused_ = true; }
  /// @brief Continues after Pause().
  void Resume() { paused_ = false; }

 private:
  void Run();

  int fd_;
  const uint64_t total_;
  const uint64_t seed_;
  std::atomic<uint64_t> written_{0};
  std::atomic<int64_t> last_progress_ns_;
  std::atomic<bool> done_{false};
  std::atomic<bool> stop_{false};
  std::atomic<bool> paused_{false};
  mutable std::mutex mu_;
  std::string error_;
  std::thread thread_;
};

}  // namespace pipegate::testing
