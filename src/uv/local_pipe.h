#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>

#include <uv.h>

#include "pipegate/buffer.h"
#include "pipegate/status.h"

#include "uv/handles.h"

namespace pipegate::uvglue {

/// @brief How writes are cut so that records stay whole (SPEC §3 "atomic small writes").
enum class RecordMode {
  kStream,  ///< Write as much as fits.
  kBlocks,  ///< Each write() is one 4096-byte block aligned to the stream offset (or less).
  kLines,   ///< Each write() holds whole lines, ≤ 4096 bytes, unless a line is longer.
  /// Each Write() is one message, sent with one send() (a SOCK_SEQPACKET socket); queued
  /// messages keep their boundaries.
  kMessages,
};

inline constexpr size_t kPipeBuf = 4096;  // PIPE_BUF on Linux.

/// @brief Events of a LocalPipe. Called on the loop thread; the owner may Close() the pipe
/// from any of them.
class LocalPipeEvents {
 public:
  virtual ~LocalPipeEvents() = default;
  /// @brief The fd may have bytes to Read() (or EOF).
  virtual void OnLocalReadable() = 0;
  /// @brief @p n queued bytes reached the fd. (A pipe that is only read from, or only
  /// watched, need not override this or the next two.)
  virtual void OnLocalWritten(size_t n) { (void)n; }
  /// @brief Writing failed (EPIPE: the reader went away) or the write side hung up.
  virtual void OnLocalWriteError(const Status& status) { (void)status; }
  /// @brief FinishWriting() completed: every byte is written and the write side is ended.
  virtual void OnLocalWriteDone() {}
};

/// @brief One local file descriptor (FIFO end, Unix socket, stdin/stdout, or a regular file)
/// driven by a uv_poll_t, with a bounded write queue that respects record boundaries.
///
/// Ownership: Open() returns it in a LocalPipe::Ptr, a unique_ptr whose deleter is Close():
/// libuv frees handles only after their close callbacks, so releasing the Ptr closes the pipe
/// at once (no event is called afterwards) and the pipe deletes itself in its last close
/// callback (the only delete). It owns the fd when told so. Thread: its loop's thread.
/// Sync/async: Write() writes what it can at once and returns that count; the rest completes
/// later with OnLocalWritten().
class LocalPipe {
 public:
  enum Direction : unsigned { kRead = 1, kWrite = 2 };
  /// A hint with the directions: the fd is a socket already non-blocking (from accept4() or
  /// socket() with SOCK_NONBLOCK), so Open() asks the kernel neither (one syscall each, per
  /// connection of a mount or a socket export).
  static constexpr unsigned kNonBlockingSocket = 4;

  /// @brief The deleter of Ptr: Close(), which frees the pipe after its close callbacks.
  struct Closer {
    void operator()(LocalPipe* pipe) const noexcept { pipe->Close(); }
  };
  /// @brief The owner of a LocalPipe.
  using Ptr = std::unique_ptr<LocalPipe, Closer>;

  /// @brief Wraps @p fd (made non-blocking). Regular files and other unpollable fds work too:
  /// they are read on an idle handle and written synchronously.
  static Result<Ptr> Open(uv_loop_t* loop, int fd, unsigned directions, bool owns_fd,
                          LocalPipeEvents* events);

  LocalPipe(const LocalPipe&) = delete;
  LocalPipe& operator=(const LocalPipe&) = delete;

  /// @brief Starts or stops OnLocalReadable notifications.
  void WantRead(bool on);
  /// @brief Reads up to @p n bytes: >0 bytes, 0 at EOF, -EAGAIN if none now, else -errno.
  ssize_t Read(uint8_t* p, size_t n);
  /// @brief Reads one message of a SOCK_SEQPACKET socket into @p p: its whole length (more
  /// than @p n when it did not fit: the message is then consumed and lost), 0 at EOF (or an
  /// empty message, which a seqpacket socket cannot tell apart), -EAGAIN, else -errno.
  ssize_t ReadMessage(uint8_t* p, size_t n);

  /// @brief Writes @p n bytes in record mode; returns how many reached the fd now (or -errno
  /// if writing failed, e.g. -EPIPE). The rest is queued (copied) and reported by
  /// OnLocalWritten() as it drains.
  ssize_t Write(const uint8_t* p, size_t n);
  /// @return Bytes queued and not yet written.
  size_t queued() const noexcept { return queue_.size(); }
  /// @return The write queue's allocated size (for memory accounting and tests).
  size_t queue_capacity() const noexcept { return queue_.capacity(); }
  /// @brief Frees the write queue's storage if nothing was queued since the last call. A busy
  /// stream keeps it, so a reader that keeps catching up does not make every burst allocate
  /// (and fault in) its queue afresh; an idle one gives it back. Called about once a second
  /// by the stream's owner.
  void ReleaseIdleMemory() noexcept;
  void set_record_mode(RecordMode mode) noexcept { record_mode_ = mode; }
  /// How long an unfinished 4096-byte block (RecordMode::kBlocks) waits for its rest before it
  /// is written anyway, counted from the last bytes that arrived: a writer that stops mid-block
  /// without EOF still gets its bytes through. Writing it splits the block, so another writer's
  /// bytes may land inside it: this must be longer than any ordinary gap in a busy stream (a
  /// credit round trip on a loaded machine). 10 ms tore aligned records under ASan with four
  /// concurrent writers on two cores.
  static constexpr uint64_t kBlockHoldMs = 250;
  /// @brief After the queue drains, ends the write side: later Write() calls fail with
  /// -EPIPE, and OnLocalWriteDone() follows (from inside this call if nothing is queued).
  /// Pending partial lines and blocks are flushed first. On a socket this is
  /// shutdown(SHUT_WR), so the peer reads EOF. Any other fd (a FIFO) stays open: its reader
  /// sees EOF only once Close() has freed the pipe and, with it, the fd it owns.
  void FinishWriting();
  /// @brief Ends the write side now and frees what is queued, unwritten (the peer withdrew
  /// it): as FinishWriting() on an empty queue.
  void AbortWriting();
  /// @brief Watches for the reader of a write-only FIFO going away (POLLERR) while idle.
  void WatchHangup(bool on);

  /// @brief Stops everything and frees the pipe soon. Events are never called again. Called
  /// by Ptr's deleter; idempotent.
  void Close();

  /// @brief Sends future events to @p events (hand-over from a waiting owner to a stream).
  void set_events(LocalPipeEvents* events) noexcept {
    if (!closing_) events_ = events;
  }

  int fd() const noexcept { return fd_; }
  bool is_socket() const noexcept { return is_socket_; }
  /// True once the write side has ended (FinishWriting() drained, AbortWriting(), or a write
  /// error). When the queue drains after FinishWriting(), it is already true inside the
  /// OnLocalWritten() of the last bytes, which comes before OnLocalWriteDone().
  bool write_ended() const noexcept { return write_ended_; }

 private:
  LocalPipe(uv_loop_t* loop, int fd, unsigned directions, bool owns_fd, LocalPipeEvents* events);
  ~LocalPipe();

  static void OnPoll(uv_poll_t* handle, int status, int events) noexcept;
  static void OnIdle(uv_idle_t* handle) noexcept;
  void OnAllClosed();
  static void OnHoldTimer(uv_timer_t* handle) noexcept;
  void ArmHoldTimer();

  /// @brief One send() of a whole message; returns its length or -errno.
  ssize_t SendMessage(const uint8_t* p, size_t n);
  /// @brief Writes from @p p as the record mode allows; returns bytes written, or -errno.
  ssize_t WriteSome(const uint8_t* p, size_t n, bool final);
  void FlushQueue();
  void UpdatePoll();
  /// @brief Marks the write side ended and, on a socket, shuts it down; reports nothing.
  void ShutWriteSide();
  /// @brief ShutWriteSide(), then OnLocalWriteDone().
  void EndWriteSide();

  uv_loop_t* loop_;
  uv_poll_t poll_{};
  uv_idle_t idle_{};
  uv_timer_t hold_timer_{};
  int fd_;
  unsigned directions_;
  bool owns_fd_;
  bool pollable_ = true;
  bool is_socket_ = false;
  bool is_fifo_ = false;
  LocalPipeEvents* events_;
  bool want_read_ = false;
  int poll_events_ = 0;  ///< What the poll watcher watches now (UV_READABLE, ...).
  bool watch_hangup_ = false;
  bool finishing_ = false;
  bool write_ended_ = false;
  bool closing_ = false;
  bool holding_partial_ = false;  ///< The queue holds only an unfinished record.
  bool held_ = false;             ///< The last WriteSome() stopped at a record boundary.
  bool force_partial_ = false;    ///< Write a held partial block anyway (hold timer).
  CloseCount<LocalPipe> closes_;  ///< Handles closing; OnAllClosed() deletes after the last.
  RecordMode record_mode_ = RecordMode::kStream;
  uint64_t written_ = 0;  ///< Stream offset of the next byte to write (for block alignment).
  Buffer queue_;
  bool queued_recently_ = false;  ///< Write() queued bytes since the last ReleaseIdleMemory().
  std::deque<size_t> message_lengths_;  ///< RecordMode::kMessages: the messages in queue_.
};

using LocalPipePtr = LocalPipe::Ptr;

}  // namespace pipegate::uvglue
