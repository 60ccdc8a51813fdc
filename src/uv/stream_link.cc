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
      // A short read took all there was: reading again now would only return EAGAIN (one
      // wasted syscall per small message, on the latency path). The poll is level-triggered,
      // so bytes that come meanwhile wake this stream again.
      if (static_cast<size_t>(r) < room) break;
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
    const size_t header = IncomingHeader();
    if (incoming_.empty() && header > 0) {
      incoming_.Prepare(header);  // The length prefix, filled in by OnMessageEnd.
      incoming_.Commit(header);
    }
    if (incoming_.size() - header + n > max_message_) {
      MessageError(fmt::format("a message for '{}' is longer than its maximum of {} bytes", name_,
                               max_message_));
      return;
    }
    incoming_.Append(p, n);  // Acknowledged once written (OnMessageEnd).
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
    const size_t part = incoming_.size() - IncomingHeader();
    PG_LOG(kWarn, "stream {}: '{}' ended inside a message; its {} bytes are dropped", id_, name_,
           part);
    if (Mux* mux = owner_->stream_mux()) mux->Consumed(id_, part);
    incoming_.Clear();
  }
  if (out_ != nullptr) {
    out_->FinishWriting();
  } else {
    local_write_done_ = true;
  }
}

void StreamLink::OnPeerReset() {
  incoming_ = Buffer();
  if (out_ != nullptr) {
    out_->AbortWriting();
  } else {
    local_write_done_ = true;
  }
}

void StreamLink::OnLocalWritten(size_t n) {
  StreamLinkOwner* owner = owner_;
  Mux* mux = owner->stream_mux();
  // Consumed() below may end the stream and free this link before OnLocalWriteDone() comes.
  if (out_ != nullptr && out_->write_ended()) local_write_done_ = true;
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
  if (incoming_.empty())
    return;  // Empty messages are not carried (a seqpacket recv() of 0 is EOF).
  const size_t n = incoming_.size() - IncomingHeader();
  if (out_framing_ == MessageFraming::kLength) {
    uint8_t* prefix = incoming_.data();
    prefix[0] = static_cast<uint8_t>(n >> 24);
    prefix[1] = static_cast<uint8_t>(n >> 16);
    prefix[2] = static_cast<uint8_t>(n >> 8);
    prefix[3] = static_cast<uint8_t>(n);
  } else if (out_framing_ == MessageFraming::kLines) {
    incoming_.Append("\n", 1);
  }
  written_.emplace_back(incoming_.size(), n);
  ssize_t r = out_->Write(incoming_.data(), incoming_.size());
  incoming_.Clear();
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

void StreamLink::MessageError(std::string why) {
  StreamLinkOwner* owner = owner_;
  Mux* mux = owner->stream_mux();
  PG_LOG(kWarn, "stream {}: {}", id_, why);
  local_error_ = Status(Code::kLimit, why);
  reading_ = false;
  if (in_ != nullptr) in_->WantRead(false);
  if (mux == nullptr) return;
  mux->Abort(id_, ErrorCode::kLimit, why);  // May end the stream: nothing of this link after.
  owner->FlushSoon();
}

bool StreamLink::SendStaged() {
  Mux* mux = owner_->stream_mux();
  if (mux == nullptr) return false;
  const size_t left = staged_.size();
  const size_t n = mux->SendData(id_, staged_.data(), left, /*msg_end=*/true);
  staged_.Consume(n);
  bytes_sent_ += n;
  if (totals_ != nullptr) totals_->sent.fetch_add(n, std::memory_order_relaxed);
  return n == left;
}

StreamLink::Parse StreamLink::ParseMessage(bool eof) {
  const uint8_t* p = parse_.data();
  const size_t have = parse_.size();
  if (in_framing_ == MessageFraming::kLength) {
    if (have < 4) return eof && have > 0 ? Parse::kTruncated : Parse::kNeedMore;
    const size_t len = (size_t{p[0]} << 24) | (size_t{p[1]} << 16) | (size_t{p[2]} << 8) | p[3];
    if (len > max_message_) return Parse::kTooLong;
    if (have < 4 + len) return eof ? Parse::kTruncated : Parse::kNeedMore;
    staged_.Append(p + 4, len);
    parse_.Consume(4 + len);
  } else {
    if (have == 0) return Parse::kNeedMore;  // memchr must not see a null pointer.
    const void* nl = std::memchr(p, '\n', have);
    size_t len = nl != nullptr ? static_cast<size_t>(static_cast<const uint8_t*>(nl) - p) : have;
    if (len > max_message_) return Parse::kTooLong;
    if (nl == nullptr && !eof) return Parse::kNeedMore;
    staged_.Append(p, len);  // An empty message (a blank line) is not carried.
    parse_.Consume(nl != nullptr ? len + 1 : len);
  }
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
    if (!staged_.empty()) {
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
                         : fmt::format("the input for '{}' ended inside a message", name_));
        return;
      }
      if (!parse_eof_) {
        constexpr size_t kChunk = 64 * 1024;
        r = in_->Read(parse_.Prepare(kChunk), kChunk);
        if (r > 0) {
          parse_.Commit(static_cast<size_t>(r));
          continue;
        }
        if (r == 0) {
          parse_eof_ = true;
          continue;  // An unfinished last line is still a message.
        }
      }
    } else {
      uint8_t* room = staged_.Prepare(max_message_);  // staged_ is empty here.
      r = in_framing_ == MessageFraming::kSocket ? in_->ReadMessage(room, max_message_)
                                                 : in_->Read(room, max_message_);
      if (r > static_cast<ssize_t>(max_message_)) {
        MessageError(
            fmt::format("a message of {} bytes for '{}' is longer than its maximum of "
                        "{} bytes; it was not sent",
                        r, name_, max_message_));
        return;
      }
      if (r > 0) {
        staged_.Commit(static_cast<size_t>(r));
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
