#include "uv/stream_link.h"

#include <fmt/format.h>

#include <cerrno>

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
  if (reading_ && in_ != nullptr) in_->WantRead(true);
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
    if (r == 0) {
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
  mux->Consumed(id_, n);
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
