#include "uv/local_pipe.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "pipegate/log.h"

namespace pipegate::uvglue {

Result<LocalPipe::Ptr> LocalPipe::Open(uv_loop_t* loop, int fd, unsigned directions, bool owns_fd,
                                       LocalPipeEvents* events) {
  return Ptr(new LocalPipe(loop, fd, directions, owns_fd, events));
}

LocalPipe::LocalPipe(uv_loop_t* loop, int fd, unsigned directions, bool owns_fd,
                     LocalPipeEvents* events)
    : loop_(loop), fd_(fd), directions_(directions), owns_fd_(owns_fd), events_(events) {
  int flags = 0;
  if ((directions & kNonBlockingSocket) != 0) {
    is_socket_ = true;
  } else {
    struct stat st {};
    if (fstat(fd_, &st) == 0) {
      is_socket_ = S_ISSOCK(st.st_mode);
      is_fifo_ = S_ISFIFO(st.st_mode);
    }
    flags = fcntl(fd_, F_GETFL);
    if (flags >= 0 && (flags & O_NONBLOCK) == 0) fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
  }
  // Regular files and some devices cannot be polled (epoll says EPERM): they are always ready,
  // so they are read from an idle handle and written synchronously.
  pollable_ = uv_poll_init(loop_, &poll_, fd_) == 0;
  if (pollable_) {
    poll_.data = this;
  } else {
    flags = fcntl(fd_, F_GETFL);
    if (flags >= 0) fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK);
  }
  uv_idle_init(loop_, &idle_);
  idle_.data = this;
  uv_timer_init(loop_, &hold_timer_);
  hold_timer_.data = this;
}

LocalPipe::~LocalPipe() {
  if (owns_fd_ && fd_ >= 0) ::close(fd_);
}

void LocalPipe::Close() {
  if (closing_) return;
  closing_ = true;
  events_ = nullptr;
  if (pollable_) {
    uvglue::CloseHandles<LocalPipe, &LocalPipe::closes_, &LocalPipe::OnAllClosed>(
        this, {AsHandle(&poll_), AsHandle(&idle_), AsHandle(&hold_timer_)});
  } else {
    uvglue::CloseHandles<LocalPipe, &LocalPipe::closes_, &LocalPipe::OnAllClosed>(
        this, {AsHandle(&idle_), AsHandle(&hold_timer_)});
  }
}

void LocalPipe::OnAllClosed() {
  delete this;  // The only delete of a LocalPipe.
}

void LocalPipe::WantRead(bool on) {
  if (closing_ || want_read_ == on) return;
  want_read_ = on;
  UpdatePoll();
}

void LocalPipe::WatchHangup(bool on) {
  if (closing_ || watch_hangup_ == on) return;
  watch_hangup_ = on;
  UpdatePoll();
}

void LocalPipe::UpdatePoll() {
  if (closing_) return;
  if (!pollable_) {
    if (want_read_) {
      uv_idle_start(&idle_, &LocalPipe::OnIdle);
    } else {
      uv_idle_stop(&idle_);
    }
    return;
  }
  int events = 0;
  if (want_read_) events |= UV_READABLE;
  if (!queue_.empty() && !holding_partial_ && !write_ended_) events |= UV_WRITABLE;
  if (watch_hangup_ && !write_ended_) events |= UV_DISCONNECT;
  // Every uv_poll_start costs epoll_ctl calls on the next loop turn, even for the same events.
  if (events == poll_events_) return;
  poll_events_ = events;
  if (events == 0) {
    uv_poll_stop(&poll_);
  } else {
    uv_poll_start(&poll_, events, &LocalPipe::OnPoll);
  }
}

void LocalPipe::OnIdle(uv_idle_t* handle) noexcept {
  auto* self = static_cast<LocalPipe*>(handle->data);
  if (self->events_ != nullptr && self->want_read_) self->events_->OnLocalReadable();
}

void LocalPipe::OnPoll(uv_poll_t* handle, int status, int events) noexcept {
  auto* self = static_cast<LocalPipe*>(handle->data);
  if (self->closing_) return;
  if (status < 0) {
    self->poll_events_ = 0;  // libuv stopped the watcher.
    // POLLERR: on a FIFO's write end it means the last reader went away; libuv has stopped
    // the watcher. Readers learn the rest from read().
    if ((self->directions_ & kWrite) != 0 && !self->write_ended_) {
      self->write_ended_ = true;
      if (self->events_ != nullptr) {
        self->events_->OnLocalWriteError(Status(Code::kBrokenPipe, "the local reader went away"));
      }
      return;
    }
    if (self->events_ != nullptr && self->want_read_) self->events_->OnLocalReadable();
    return;
  }
  if ((events & UV_WRITABLE) != 0) {
    self->FlushQueue();
    if (self->closing_) return;
  }
  if ((events & (UV_READABLE | UV_DISCONNECT)) != 0 && self->want_read_ &&
      self->events_ != nullptr) {
    self->events_->OnLocalReadable();
  }
}

ssize_t LocalPipe::Read(uint8_t* p, size_t n) {
  ssize_t r;
  do {
    r = ::read(fd_, p, n);
  } while (r < 0 && errno == EINTR);
  return r >= 0 ? r : -errno;
}

ssize_t LocalPipe::ReadMessage(uint8_t* p, size_t n) {
  ssize_t r;
  do {
    r = ::recv(fd_, p, n, MSG_TRUNC | MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  return r >= 0 ? r : -errno;
}

ssize_t LocalPipe::SendMessage(const uint8_t* p, size_t n) {
  ssize_t r;
  do {
    r = ::send(fd_, p, n, MSG_NOSIGNAL | MSG_DONTWAIT | MSG_EOR);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return -errno;
  written_ += static_cast<uint64_t>(r);
  return r;
}

ssize_t LocalPipe::WriteSome(const uint8_t* p, size_t n, bool final) {
  held_ = false;
  if (record_mode_ == RecordMode::kMessages) {
    // Whole queued messages, one send() each: a seqpacket send is all or nothing.
    size_t total = 0;
    for (size_t i = 0; i < message_lengths_.size() && total < n; ++i) {
      ssize_t r = SendMessage(p + total, message_lengths_[i]);
      if (r < 0) return total > 0 ? static_cast<ssize_t>(total) : r;
      total += static_cast<size_t>(r);
    }
    return static_cast<ssize_t>(total);
  }
  size_t total = 0;
  while (total < n) {
    const uint8_t* q = p + total;
    size_t left = n - total;
    size_t len = left;
    switch (record_mode_) {
      case RecordMode::kStream:
      case RecordMode::kMessages:  // Handled above.
        break;
      case RecordMode::kBlocks: {
        size_t block_left = kPipeBuf - static_cast<size_t>(written_ % kPipeBuf);
        if (left < block_left && !final && !force_partial_) {
          held_ = true;  // Wait for the rest of the block, so records inside it stay whole.
          return static_cast<ssize_t>(total);
        }
        if (block_left == kPipeBuf && left >= kPipeBuf) {
          // Several whole blocks in one write(). Linux fills a pipe page by page and, for a
          // non-blocking writer, never releases the pipe lock in the middle of a write(), so
          // a write of whole 4096-byte blocks that starts on a block boundary can only stop
          // (pipe full) at a block boundary and no other writer's bytes land inside a block.
          // pipe(7) promises only PIPE_BUF atomicity; this relies on the page-granular pipe
          // buffer that Linux has always had (see docs/architecture.md).
          len = std::min<size_t>(left - left % kPipeBuf, 64 * kPipeBuf);
        } else {
          len = std::min(left, block_left);
        }
        break;
      }
      case RecordMode::kLines: {
        size_t window = std::min(left, kPipeBuf);
        const void* nl = memrchr(q, '\n', window);
        if (nl != nullptr) {
          len = static_cast<size_t>(static_cast<const uint8_t*>(nl) - q) + 1;
        } else if (left >= kPipeBuf) {
          len = kPipeBuf;  // A line longer than PIPE_BUF cannot be atomic anyway.
        } else if (final) {
          len = left;
        } else {
          held_ = true;  // Hold the unfinished line.
          return static_cast<ssize_t>(total);
        }
        break;
      }
    }
    ssize_t r = ::write(fd_, q, len);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (total > 0) return static_cast<ssize_t>(total);
      return -errno;
    }
    total += static_cast<size_t>(r);
    written_ += static_cast<uint64_t>(r);
    if (static_cast<size_t>(r) < len) break;  // The pipe is full.
  }
  return static_cast<ssize_t>(total);
}

ssize_t LocalPipe::Write(const uint8_t* p, size_t n) {
  if (closing_ || write_ended_) return -EPIPE;
  if (n == 0) return 0;
  if (record_mode_ == RecordMode::kMessages) {
    if (queue_.empty()) {
      ssize_t r = SendMessage(p, n);
      if (r != -EAGAIN) return r;
    }
    queue_.Append(p, n);
    queued_recently_ = true;
    message_lengths_.push_back(n);
    UpdatePoll();
    return 0;
  }
  if (!queue_.empty()) {
    queue_.Append(p, n);
    queued_recently_ = true;
    // The new bytes may complete a held record: poll again. The hold measures a pause in the
    // stream, so it restarts from here if a record is still unfinished after the flush;
    // counted from the first hold, a busy stream whose writes end mid-block would be cut
    // inside a block whenever the timer happened to expire during one of its short holds.
    holding_partial_ = false;
    uv_timer_stop(&hold_timer_);
    UpdatePoll();
    return 0;
  }
  ssize_t r = WriteSome(p, n, false);
  if (r == -EAGAIN) r = 0;
  if (r < 0) return r;
  size_t done = static_cast<size_t>(r);
  if (done < n) {
    queue_.Append(p + done, n - done);
    queued_recently_ = true;
    holding_partial_ = held_;
    ArmHoldTimer();
    UpdatePoll();
  }
  return r;
}

void LocalPipe::ArmHoldTimer() {
  // A partial block is written after a short pause if nothing completes it, so a slow stream
  // without --lines is not held back indefinitely; a record torn that way had been sent torn.
  if (holding_partial_ && record_mode_ == RecordMode::kBlocks && !closing_ &&
      !uv_is_active(reinterpret_cast<uv_handle_t*>(&hold_timer_))) {
    uv_timer_start(&hold_timer_, &LocalPipe::OnHoldTimer, kBlockHoldMs, 0);
  }
}

void LocalPipe::OnHoldTimer(uv_timer_t* handle) noexcept {
  auto* self = static_cast<LocalPipe*>(handle->data);
  if (self->closing_ || !self->holding_partial_) return;
  self->force_partial_ = true;
  self->FlushQueue();
  self->force_partial_ = false;
}

void LocalPipe::FlushQueue() {
  size_t reported = 0;
  while (!queue_.empty()) {
    ssize_t r = WriteSome(queue_.data(), queue_.size(), finishing_);
    if (r > 0) {
      queue_.Consume(static_cast<size_t>(r));
      reported += static_cast<size_t>(r);
      for (size_t left = static_cast<size_t>(r); left > 0 && !message_lengths_.empty();) {
        left -= message_lengths_.front();  // Whole messages only (see WriteSome).
        message_lengths_.pop_front();
      }
    }
    holding_partial_ = held_ && !queue_.empty();
    if (r == -EAGAIN || r == 0 || holding_partial_) break;
    if (r < 0) {
      write_ended_ = true;
      queue_.Clear();
      message_lengths_.clear();
      UpdatePoll();
      if (events_ != nullptr) {
        events_->OnLocalWriteError(r == -EPIPE
                                       ? Status(Code::kBrokenPipe, "the local reader went away")
                                       : Status(Code::kIo, ErrnoText(static_cast<int>(-r))));
      }
      return;
    }
  }
  ArmHoldTimer();
  // The write side ends before the last bytes are reported: that report may end the stream
  // and free this pipe from inside it, and the peer must still read EOF from a shutdown.
  const bool ends_now = finishing_ && queue_.empty() && !write_ended_;
  if (ends_now) ShutWriteSide();
  if (reported > 0 && events_ != nullptr) {
    events_->OnLocalWritten(reported);
    if (closing_) return;
  }
  UpdatePoll();
  if (ends_now && events_ != nullptr) events_->OnLocalWriteDone();
}

void LocalPipe::ReleaseIdleMemory() noexcept {
  if (!queued_recently_) queue_.ShrinkIfEmpty();
  queued_recently_ = false;
}

void LocalPipe::FinishWriting() {
  if (closing_ || finishing_ || write_ended_) return;
  finishing_ = true;
  holding_partial_ = false;
  if (queue_.empty()) {
    EndWriteSide();
  } else {
    UpdatePoll();
    if (!pollable_) FlushQueue();
  }
}

void LocalPipe::AbortWriting() {
  if (closing_ || write_ended_) return;
  queue_ = Buffer();
  message_lengths_.clear();
  holding_partial_ = false;
  finishing_ = true;
  uv_timer_stop(&hold_timer_);
  EndWriteSide();
}

void LocalPipe::ShutWriteSide() {
  write_ended_ = true;
  if (is_socket_) ::shutdown(fd_, SHUT_WR);
}

void LocalPipe::EndWriteSide() {
  ShutWriteSide();
  UpdatePoll();
  if (events_ != nullptr) events_->OnLocalWriteDone();
}

}  // namespace pipegate::uvglue
