#include "uv/stream_link.h"

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace pipegate::uvglue {

StreamLink::~StreamLink() {
  if (in_ != nullptr) in_->Close();
  if (out_ != nullptr && out_ != in_) out_->Close();
}

void StreamLink::Attach(LocalPipe* in, LocalPipe* out) {
  in_ = in;
  out_ = out;
}

void StreamLink::DropInput() {
  if (in_ != nullptr && in_ != out_) in_->Close();
  if (in_ != nullptr) in_->WantRead(false);
  in_ = nullptr;
}

void StreamLink::DropOutput() {
  if (out_ != nullptr && out_ != in_) out_->Close();
  out_ = nullptr;
}

void StreamLink::StartReading() {
  Mux* mux = owner_->stream_mux();
  if (mux == nullptr) return;
  if (in_ == nullptr) {
    local_eof_ = true;
    mux->SendFin(id_);  // Nothing to send this way.
    owner_->FlushSoon();
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

void StreamLink::OnLocalReadable() {
  Mux* m = owner_->stream_mux();
  if (m == nullptr || !reading_) return;
  Mux& mux = *m;
  // Bounded work per wake-up keeps one busy pipe from starving the others.
  for (int i = 0; i < 8; ++i) {
    if (owner_->Backlogged()) {
      in_->WantRead(false);
      owner_->PauseForBackpressure(this);
      break;
    }
    size_t room = 0;
    uint8_t* p = mux.BeginData(id_, &room);
    if (p == nullptr) {
      in_->WantRead(false);  // Credit is spent; OnStreamWritable resumes.
      break;
    }
    ssize_t r = in_->Read(p, room);
    if (r > 0) {
      bytes_sent_ += static_cast<uint64_t>(r);
      mux.CommitData(id_, static_cast<size_t>(r), false);
      if (!mux.HasStream(id_)) return;
      continue;
    }
    if (r == -EAGAIN) break;
    reading_ = false;
    in_->WantRead(false);
    if (r == 0) {
      local_eof_ = true;
      mux.CommitData(id_, 0, true);  // EOF travels.
    } else {
      local_error_ = Status(Code::kIo, fmt::format("reading failed: {}", std::strerror(static_cast<int>(-r))));
      mux.ResetSending(id_, ErrorCode::kIo, fmt::format("reading '{}' failed: {}", name_,
                                                        std::strerror(static_cast<int>(-r))));
    }
    break;
  }
  owner_->FlushSoon();
}

void StreamLink::OnData(const uint8_t* p, size_t n) {
  Mux* mux = owner_->stream_mux();
  if (mux == nullptr) return;
  bytes_received_ += n;
  if (out_ == nullptr) {
    mux->Consumed(id_, n);  // Nowhere to put them: dropped, and acknowledged.
    owner_->FlushSoon();
    return;
  }
  ssize_t r = out_->Write(p, n);
  if (r < 0) {
    OnLocalWriteError(r == -EPIPE ? Status(Code::kBrokenPipe, "the local reader went away")
                                  : Status(Code::kIo, std::strerror(static_cast<int>(-r))));
    return;
  }
  if (r > 0) mux->Consumed(id_, static_cast<size_t>(r));
  owner_->FlushSoon();
}

void StreamLink::OnFin() {
  if (out_ != nullptr) {
    out_->FinishWriting();
  } else {
    local_write_done_ = true;
  }
}

void StreamLink::OnLocalWritten(size_t n) {
  Mux* mux = owner_->stream_mux();
  if (mux == nullptr) return;
  mux->Consumed(id_, n);
  owner_->FlushSoon();
}

void StreamLink::OnLocalWriteError(const Status& status) {
  Mux* mux = owner_->stream_mux();
  local_error_ = status;
  if (mux == nullptr) return;
  if (status.code() == Code::kBrokenPipe) {
    mux->StopReading(id_, ErrorCode::kBrokenPipe,
                     fmt::format("broken pipe: the reader of '{}' went away", name_));
  } else {
    mux->StopReading(id_, ErrorCode::kIo,
                     fmt::format("writing '{}' failed: {}", name_, status.message()));
  }
  owner_->FlushSoon();
}

void StreamLink::OnLocalWriteDone() { local_write_done_ = true; }

}  // namespace pipegate::uvglue
