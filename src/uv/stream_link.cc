#include "uv/stream_link.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "pipegate/log.h"

namespace pipegate::uvglue {

StreamLink::~StreamLink() = default;  // The Ptrs close the pipes.

void StreamLink::Attach(StreamPipes pipes) {
  in_pipe_ = std::move(pipes.in);
  out_pipe_ = std::move(pipes.out);
  in_ = in_pipe_.get();
  out_ = pipes.duplex ? in_ : out_pipe_.get();
  if (in_ != nullptr) in_->set_events(this);
  if (out_ != nullptr) out_->set_events(this);
}

void StreamLink::DropInput() {
  if (in_ == nullptr) return;
  in_->WantRead(false);
  if (in_ == out_) {
    out_pipe_ = std::move(in_pipe_);  // The duplex pipe is still written to.
  } else {
    in_pipe_.reset();  // Closes it.
  }
  in_ = nullptr;
}

void StreamLink::DropOutput() {
  if (out_ == nullptr) return;
  if (out_ != in_) out_pipe_.reset();  // Closes it; a duplex pipe stays with the input.
  out_ = nullptr;
}

void StreamLink::StartReading() {
  StreamLinkOwner* owner = owner_;
  Mux* mux = owner->stream_mux();
  if (mux == nullptr) return;
  if (in_ == nullptr) {
    local_eof_ = true;
    mux->SendFin(id_);  // Nothing to send this way (this may end the stream).
    owner->FlushSoon();
    return;
  }
  reading_ = true;
  in_->WantRead(true);
}

void StreamLink::Resume() {
  if (!reading_ || in_ == nullptr) return;
  if (message_mode()) {
    ReadMessages();  // A staged or parsed message may wait for this credit, not for the fd.
    return;
  }
  in_->WantRead(true);
}

void StreamLink::StopLocalReading() {
  reading_ = false;
  if (in_ != nullptr) in_->WantRead(false);
}

void StreamLink::EndInput() {
  if (local_eof_ || !local_error_.ok()) return;
  StreamLinkOwner* owner = owner_;
  Mux* mux = owner->stream_mux();
  if (mux == nullptr) return;
  reading_ = false;
  local_eof_ = true;
  DropInput();
  mux->SendFin(id_);  // May end the stream: nothing of this link is used after it.
  owner->FlushSoon();
}

// Any mux call below may end the stream, and the owner then deletes this link: after one,
// only the locals `owner` and `id` are used.
void StreamLink::OnLocalReadable() {
  if (message_mode()) {
    ReadMessages();
    return;
  }
  StreamLinkOwner* owner = owner_;
  uint32_t id = id_;
  Mux* m = owner->stream_mux();
  if (m == nullptr || !reading_) return;
  Mux& mux = *m;
  // Bounded work per wake-up keeps one busy pipe from starving the others.
  for (int i = 0; i < 8; ++i) {
    if (owner->Backlogged()) {
      in_->WantRead(false);
      owner->PauseForBackpressure(this);
      break;
    }
    size_t room = 0;
    uint8_t* p = mux.BeginData(id, &room);
    if (p == nullptr) {
      in_->WantRead(false);  // Credit is spent; OnStreamWritable resumes.
      break;
    }
    // A frame that ends on a 4096-byte stream offset lets a FIFO write export pass its blocks
    // on whole (RecordMode::kBlocks) instead of holding the tail of one until the next frame;
    // a read then comes up short only when the source has nothing more for now.
    if (room > kPipeBuf) room -= static_cast<size_t>((bytes_sent_ + room) % kPipeBuf);
    ssize_t r = in_->Read(p, room);
    if (r > 0) {
      bytes_sent_ += static_cast<uint64_t>(r);
      if (totals_ != nullptr)
        totals_->sent.fetch_add(static_cast<uint64_t>(r), std::memory_order_relaxed);
      mux.CommitData(id, static_cast<size_t>(r), false);
      continue;
    }
    if (r == -EAGAIN) break;
    reading_ = false;
    in_->WantRead(false);
    if (r == 0 && !InputEndStatus().ok()) {
      // The source gave up on this stream (a fan-out reader that was dropped): the client must
      // not take what it got for the whole stream.
      local_error_ = InputEndStatus();
      const std::string why = local_error_.message();  // This link may be gone after the reset.
      DropInput();
      mux.ResetSending(id, ErrorForCode(local_error_.code()), why);
    } else if (r == 0) {
      local_eof_ = true;
      // Nothing more comes this way: a FIFO's read end is let go at once, so that a writer
      // who opens it next blocks (or gets ENXIO) instead of writing into a pipe nobody reads.
      DropInput();
      if (!HoldFin()) mux.CommitData(id, 0, true);  // EOF travels.
    } else {
      std::string why = ErrnoText(static_cast<int>(-r));
      PG_LOG(kWarn, "stream {}: local read of {} bytes failed: {}", id, room, why);
      local_error_ = Status(Code::kIo, fmt::format("reading failed: {}", why));
      mux.ResetSending(id, ErrorCode::kIo, fmt::format("reading '{}' failed: {}", name_, why));
    }
    break;
  }
  owner->FlushSoon();
}

void StreamLink::OnData(const uint8_t* p, size_t n) {
  StreamLinkOwner* owner = owner_;
  Mux* mux = owner->stream_mux();
  if (mux == nullptr) return;
  bytes_received_ += n;
  if (totals_ != nullptr) totals_->received.fetch_add(n, std::memory_order_relaxed);
  if (out_ == nullptr) {
    mux->Consumed(id_, n);  // Nowhere to put them: dropped, and acknowledged.
    owner->FlushSoon();
    return;
  }
  if (message_mode()) {
    if (incoming_.size() + n > max_message_) {
      MessageError(fmt::format("a message for '{}' is longer than its maximum of {} bytes", name_,
                               max_message_),
                   /*sending=*/false);
      return;
    }
    incoming_.insert(incoming_.end(), p, p + n);  // Acknowledged once written (OnMessageEnd).
    return;
  }
  ssize_t r = out_->Write(p, n);
  if (r < 0) {
    OnLocalWriteError(r == -EPIPE ? Status(Code::kBrokenPipe, "the local reader went away")
                                  : Status(Code::kIo, ErrnoText(static_cast<int>(-r))));
    return;
  }
  if (r > 0) mux->Consumed(id_, static_cast<size_t>(r));
  owner->FlushSoon();
}

void StreamLink::OnFin() {
  if (!incoming_.empty()) {
    // The peer ended its direction inside a message: the part is not a message, and is
    // dropped rather than passed on as one.
    PG_LOG(kWarn, "stream {}: '{}' ended inside a message; its {} bytes are dropped", id_, name_,
           incoming_.size());
    if (Mux* mux = owner_->stream_mux()) mux->Consumed(id_, incoming_.size());
    incoming_.clear();
  }
  if (out_ != nullptr) {
    out_->FinishWriting();
  } else {
    local_write_done_ = true;
  }
}

void StreamLink::OnLocalWritten(size_t n) {
  StreamLinkOwner* owner = owner_;
  Mux* mux = owner->stream_mux();
  if (mux == nullptr) return;
  if (message_mode()) {
    CountWritten(n);
  } else {
    mux->Consumed(id_, n);
  }
  owner->FlushSoon();
}

// ---- message mode ----

void StreamLink::SetMessageMode(MessageFraming in, MessageFraming out, uint32_t max_message) {
  in_framing_ = in;
  out_framing_ = out;
  max_message_ = max_message;
  if (out_ != nullptr && out == MessageFraming::kSocket) {
    out_->set_record_mode(RecordMode::kMessages);
  }
}

void StreamLink::OnMessageEnd() {
  StreamLinkOwner* owner = owner_;
  Mux* mux = owner->stream_mux();
  if (mux == nullptr || out_ == nullptr || !message_mode()) return;
  const size_t n = incoming_.size();
  if (n == 0) return;  // Empty messages are not carried (a seqpacket recv() of 0 is EOF).
  switch (out_framing_) {
    case MessageFraming::kLength: {
      uint8_t prefix[4] = {static_cast<uint8_t>(n >> 24), static_cast<uint8_t>(n >> 16),
                           static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n)};
      incoming_.insert(incoming_.begin(), prefix, prefix + 4);
      break;
    }
    case MessageFraming::kLines:
      incoming_.push_back('\n');
      break;
    default:
      break;
  }
  written_.emplace_back(incoming_.size(), n);
  ssize_t r = out_->Write(incoming_.data(), incoming_.size());
  incoming_.clear();
  if (r < 0) {
    OnLocalWriteError(r == -EPIPE ? Status(Code::kBrokenPipe, "the local reader went away")
                                  : Status(Code::kIo, ErrnoText(static_cast<int>(-r))));
    return;
  }
  CountWritten(static_cast<size_t>(r));
  owner->FlushSoon();
}

void StreamLink::CountWritten(size_t n) {
  size_t messages = 0;
  while (n > 0 && !written_.empty()) {
    auto& [left, bytes] = written_.front();
    size_t take = std::min(n, left);
    left -= take;
    n -= take;
    if (left > 0) break;
    messages += bytes;
    written_.pop_front();
  }
  if (messages == 0) return;
  if (Mux* mux = owner_->stream_mux()) mux->Consumed(id_, messages);
}

void StreamLink::MessageError(std::string why, bool sending) {
  StreamLinkOwner* owner = owner_;
  Mux* mux = owner->stream_mux();
  PG_LOG(kWarn, "stream {}: {}", id_, why);
  local_error_ = Status(Code::kLimit, why);
  reading_ = false;
  if (in_ != nullptr) in_->WantRead(false);
  (void)sending;
  if (mux == nullptr) return;
  mux->Abort(id_, ErrorCode::kLimit, why);  // May end the stream: nothing of this link after.
  owner->FlushSoon();
}

bool StreamLink::SendStaged() {
  Mux* mux = owner_->stream_mux();
  if (mux == nullptr) return false;
  const size_t left = staged_.size() - staged_sent_;
  const size_t n = mux->SendData(id_, staged_.data() + staged_sent_, left, /*msg_end=*/true);
  staged_sent_ += n;
  bytes_sent_ += n;
  if (totals_ != nullptr) totals_->sent.fetch_add(n, std::memory_order_relaxed);
  if (n < left) return false;
  has_staged_ = false;
  staged_sent_ = 0;
  staged_.clear();
  return true;
}

StreamLink::Parse StreamLink::ParseMessage(bool eof) {
  const uint8_t* p = parse_.data() + parse_pos_;
  const size_t have = parse_.size() - parse_pos_;
  if (in_framing_ == MessageFraming::kLength) {
    if (have < 4) return eof && have > 0 ? Parse::kTruncated : Parse::kNeedMore;
    const size_t len = (size_t{p[0]} << 24) | (size_t{p[1]} << 16) | (size_t{p[2]} << 8) | p[3];
    if (len > max_message_) return Parse::kTooLong;
    if (have < 4 + len) return eof ? Parse::kTruncated : Parse::kNeedMore;
    staged_.assign(p + 4, p + 4 + len);
    parse_pos_ += 4 + len;
  } else {
    if (have == 0) return Parse::kNeedMore;  // memchr must not see a null pointer.
    const void* nl = std::memchr(p, '\n', have);
    size_t len = nl != nullptr ? static_cast<size_t>(static_cast<const uint8_t*>(nl) - p) : have;
    if (len > max_message_) return Parse::kTooLong;
    if (nl == nullptr && (!eof || have == 0)) return Parse::kNeedMore;
    staged_.assign(p, p + len);
    parse_pos_ += nl != nullptr ? len + 1 : len;
  }
  has_staged_ = !staged_.empty();  // An empty message (a blank line) is not carried.
  staged_sent_ = 0;
  return Parse::kTaken;
}

// As OnLocalReadable: a mux call may end the stream, and then only the locals are used.
void StreamLink::ReadMessages() {
  StreamLinkOwner* owner = owner_;
  uint32_t id = id_;
  Mux* mux = owner->stream_mux();
  if (mux == nullptr || !reading_ || in_ == nullptr) return;
  in_->WantRead(true);
  const bool framed =
      in_framing_ == MessageFraming::kLength || in_framing_ == MessageFraming::kLines;
  for (int i = 0; i < 64; ++i) {
    if (owner->Backlogged()) {
      in_->WantRead(false);
      owner->PauseForBackpressure(this);
      break;
    }
    if (has_staged_) {
      if (!SendStaged()) {
        in_->WantRead(false);  // Credit is spent; OnStreamWritable resumes.
        break;
      }
      continue;
    }
    ssize_t r = 0;
    if (framed) {
      Parse parsed = ParseMessage(parse_eof_);
      if (parsed == Parse::kTaken) continue;
      if (parsed != Parse::kNeedMore) {
        MessageError(parsed == Parse::kTooLong
                         ? fmt::format("a message for '{}' is longer than its maximum of {} bytes",
                                       name_, max_message_)
                         : fmt::format("the input for '{}' ended inside a message", name_),
                     /*sending=*/true);
        return;
      }
      if (!parse_eof_) {
        parse_.erase(parse_.begin(), parse_.begin() + static_cast<ptrdiff_t>(parse_pos_));
        parse_pos_ = 0;
        constexpr size_t kChunk = 64 * 1024;
        const size_t old = parse_.size();
        parse_.resize(old + kChunk);
        r = in_->Read(parse_.data() + old, kChunk);
        parse_.resize(old + static_cast<size_t>(std::max<ssize_t>(r, 0)));
        if (r > 0) continue;
        if (r == 0) {
          parse_eof_ = true;
          continue;  // An unfinished last line is still a message.
        }
      }
    } else {
      staged_.resize(max_message_);
      r = in_framing_ == MessageFraming::kSocket ? in_->ReadMessage(staged_.data(), max_message_)
                                                 : in_->Read(staged_.data(), max_message_);
      if (r > static_cast<ssize_t>(max_message_)) {
        MessageError(fmt::format("a message of {} bytes for '{}' is longer than its maximum of "
                                 "{} bytes; it was not sent",
                                 r, name_, max_message_),
                     /*sending=*/true);
        return;
      }
      staged_.resize(static_cast<size_t>(std::max<ssize_t>(r, 0)));
      if (r > 0) {
        has_staged_ = true;
        staged_sent_ = 0;
        continue;
      }
    }
    if (r == -EAGAIN) break;
    reading_ = false;
    in_->WantRead(false);
    if (r == 0) {
      local_eof_ = true;
      DropInput();
      mux->CommitData(id, 0, true);  // EOF travels; this may end the stream.
    } else {
      std::string why = ErrnoText(static_cast<int>(-r));
      local_error_ = Status(Code::kIo, fmt::format("reading failed: {}", why));
      mux->ResetSending(id, ErrorCode::kIo, fmt::format("reading '{}' failed: {}", name_, why));
    }
    break;
  }
  owner->FlushSoon();
}

void StreamLink::OnLocalWriteError(const Status& status) {
  StreamLinkOwner* owner = owner_;
  Mux* mux = owner->stream_mux();
  local_error_ = status;
  if (mux == nullptr) return;
  if (status.code() == Code::kBrokenPipe) {
    mux->StopReading(id_, ErrorCode::kBrokenPipe,
                     fmt::format("broken pipe: the reader of '{}' went away", name_));
  } else {
    mux->StopReading(id_, ErrorCode::kIo,
                     fmt::format("writing '{}' failed: {}", name_, status.message()));
  }
  owner->FlushSoon();
}

void StreamLink::OnLocalWriteDone() { local_write_done_ = true; }

}  // namespace pipegate::uvglue
