// The sending half of Mux: stream open/accept/close, data and control frames out, per-stream and
// per-session credit. Decoding and dispatching incoming frames is mux_input.cc; resumption is
// mux_resume.cc.

#include "pipegate/mux.h"

#include <fmt/format.h>

#include <algorithm>

#include "pipegate/log.h"

namespace pipegate {

Mux::Mux(const MuxOptions& options, MuxCallbacks* callbacks) : options_(options), cb_(callbacks) {
  next_id_ = options_.is_client ? 1 : 2;
  session_recv_limit_ = options_.session_window;
}

Mux::~Mux() {
  if (options_.replay_budget != nullptr && budget_taken_ > 0) {
    options_.replay_budget->Give(budget_taken_);
  }
}

void Mux::ReleaseReplay(uint64_t n) {
  n = std::min(n, budget_taken_);
  if (n == 0 || options_.replay_budget == nullptr) return;
  budget_taken_ -= n;
  options_.replay_budget->Give(n);
}

void Mux::EraseStream(uint32_t id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  unacked_ -= std::min(unacked_, it->second.sent - it->second.acked);
  ReleaseReplay(it->second.replay.size());
  streams_.erase(it);
}

void Mux::Start() {
  out_.Clear();  // SETTINGS open every connection; nothing queued before them is valid.
  std::vector<Setting> settings{{SettingId::kMaxFramePayload, options_.max_frame_payload},
                                {SettingId::kStreamWindow, options_.stream_window},
                                {SettingId::kSessionWindow, options_.session_window},
                                {SettingId::kMaxStreams, options_.max_streams}};
  if (!options_.is_client && options_.early_data > 0) {
    settings.push_back({SettingId::kEarlyData, options_.early_data});
  }
  AppendSettings(out_, settings);
}

Mux::Stream* Mux::Find(uint32_t id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : &it->second;
}

const Mux::Stream* Mux::Find(uint32_t id) const {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : &it->second;
}

bool Mux::IsClosedId(uint32_t id) const {
  // An id we (or the peer) used before and that is no longer in the table.
  if (IsPeerId(id)) return id <= last_peer_id_;
  return id < next_id_;
}

void Mux::WakeWritable() {
  std::vector<uint32_t> writable;
  for (auto& [id, st] : streams_) {
    if (SendWindow(id) > 0) writable.push_back(id);
  }
  for (uint32_t id : writable) {
    if (HasStream(id)) cb_->OnStreamWritable(id);
  }
}

size_t Mux::SendWindow(uint32_t id) const {
  uint64_t room = OwnSendWindow(id);
  if (room > 0 && options_.resumable && options_.replay_budget != nullptr) {
    const uint64_t available = options_.replay_budget->Available();
    if (available == 0) budget_stalled_ = true;
    room = std::min(room, available);
  }
  return static_cast<size_t>(room);
}

uint64_t Mux::OwnSendWindow(uint32_t id) const {
  const Stream* s = Find(id);
  if (detached_ || s == nullptr || !MaySend(*s) || s->send_done || s->fin_sent) {
    return 0;
  }
  // The peer's windows, clamped to what this side is willing to hold unacknowledged.
  uint64_t limit = s->send_limit;
  if (options_.max_unacked_per_stream != 0) {
    limit = std::min(limit, s->acked + options_.max_unacked_per_stream);
  }
  uint64_t room = limit > s->sent ? limit - s->sent : 0;
  uint64_t session_room =
      session_send_limit_ > session_sent_ ? session_send_limit_ - session_sent_ : 0;
  room = std::min(room, session_room);
  if (options_.max_unacked_per_session != 0) {
    const uint64_t cap = options_.max_unacked_per_session;
    room = std::min(room, cap > unacked_ ? cap - unacked_ : 0);
  }
  return room;
}

uint8_t* Mux::BeginData(uint32_t id, size_t* room) {
  size_t window = SendWindow(id);
  size_t max = std::min<size_t>(window, peer_max_payload_ - kDataPrefixSize);
  *room = max;
  if (max == 0) return nullptr;
  uint8_t* p = out_.Prepare(kFrameHeaderSize + kDataPrefixSize + max);
  return p + kFrameHeaderSize + kDataPrefixSize;
}

void Mux::CommitData(uint32_t id, size_t n, bool fin, bool msg_end) {
  Stream* s = Find(id);
  if (s == nullptr || s->send_done || s->fin_sent) return;
  if (n == 0 && !fin) return;
  // Not SendWindow(): a budget shared with other threads may shrink between BeginData() and
  // here, which lets this frame pass it (documented: by at most one frame per session).
  PG_DCHECK(detached_ || n <= OwnSendWindow(id));
  Buffer& out = Out();
  uint8_t* p = out.Prepare(kFrameHeaderSize + kDataPrefixSize + n);
  const auto flags = static_cast<uint8_t>((fin ? kFlagFin : 0) | (msg_end ? kFlagMsgEnd : 0));
  EncodeFrameHeader(
      p, FrameHeader{FrameType::kData, flags, id, static_cast<uint32_t>(kDataPrefixSize + n)});
  PutU64(p + kFrameHeaderSize, s->sent);
  if (options_.resumable && n > 0) {
    s->replay.Append(p + kFrameHeaderSize + kDataPrefixSize, n);  // Kept until acknowledged.
    if (options_.replay_budget != nullptr) {
      options_.replay_budget->Take(n);
      budget_taken_ += n;
    }
  }
  out.Commit(kFrameHeaderSize + kDataPrefixSize + n);
  s->sent += n;
  s->sent_recently = true;
  if (options_.resumable && msg_end && n > 0) s->msg_ends.push_back(s->sent);
  session_sent_ += n;
  unacked_ += n;
  if (fin) {
    s->fin_sent = true;
    // A FIN after EXIT waits for the peer's CREDIT even with nothing outstanding: until the
    // peer confirms the FIN it may not have the EXIT either, and the stream (which a resume
    // would replay it from) must outlive that.
    if (s->acked == s->sent && !s->exit_sent) {
      // Nothing outstanding (e.g. an empty direction): delivered at once.
      s->send_done = true;
      s->delivered_reported = true;
      cb_->OnStreamDelivered(id);
      MaybeClose(id);
    }
  }
}

size_t Mux::SendData(uint32_t id, const uint8_t* data, size_t len, bool msg_end) {
  size_t total = 0;
  while (total < len) {
    size_t room = 0;
    uint8_t* p = BeginData(id, &room);
    if (p == nullptr) break;
    size_t n = std::min(room, len - total);
    std::memcpy(p, data + total, n);
    total += n;
    CommitData(id, n, false, msg_end && total == len);
  }
  return total;
}

void Mux::SendExit(uint32_t id, const ExitPayload& exit) {
  Stream* s = Find(id);
  if (options_.is_client || s == nullptr || s->fin_sent || s->send_done) return;
  s->exit_sent = true;
  s->exit = exit;
  AppendExit(Out(), id, exit);
}

void Mux::SendFin(uint32_t id) {
  Stream* s = Find(id);
  if (s == nullptr || s->fin_sent || s->send_done) return;
  CommitData(id, 0, true);
}

void Mux::Consumed(uint32_t id, size_t n) {
  Stream* s = Find(id);
  if (s == nullptr || s->recv_done) return;
  PG_DCHECK(s->delivered + n <= s->received);
  s->delivered += n;
  SessionConsumed(n);
  if (s->fin_received && s->delivered == s->received) {
    FinishReceiving(id, *s);
    return;
  }
  MaybeSendCredit(id, *s, /*force=*/false);
}

void Mux::MaybeSendCredit(uint32_t id, Stream& s, bool force) {
  uint64_t since = s.delivered - s.credited;
  if (!force && since < options_.stream_window / 4) return;
  if (since == 0 && !force) return;
  s.credited = s.delivered;
  s.recv_limit = s.delivered + options_.stream_window;
  AppendCredit(Out(), id, CreditPayload{s.delivered, s.recv_limit});
}

void Mux::SessionConsumed(size_t n) {
  // Bytes that arrived on an earlier connection were never counted by this one.
  uint64_t from_carry = std::min<uint64_t>(n, session_carry_);
  session_carry_ -= from_carry;
  session_delivered_ += n - from_carry;
  MaybeSendSessionCredit();
}

void Mux::MaybeSendSessionCredit() {
  if (session_delivered_ - session_credited_ < options_.session_window / 4) return;
  session_credited_ = session_delivered_;
  // Never below what was allowed before: after a resume the limit also covers replays, and the
  // sender may still use all of it.
  session_recv_limit_ = std::max(session_recv_limit_, session_delivered_ + options_.session_window);
  AppendCredit(Out(), 0, CreditPayload{session_delivered_, session_recv_limit_});
}

void Mux::StopReading(uint32_t id, ErrorCode error, std::string_view reason) {
  Stream* s = Find(id);
  if (s == nullptr || s->recv_done) return;
  DropReceiving(*s);
  if (s->end_error == ErrorCode::kNoError) s->end_error = error;
  if (!s->fin_received) {
    s->stop_sent = true;
    s->stop = StopPayload{error, std::string(reason)};
    AppendStop(Out(), id, s->stop);
  }
  MaybeClose(id);
}

void Mux::ResetSending(uint32_t id, ErrorCode error, std::string_view reason) {
  Stream* s = Find(id);
  if (s == nullptr || s->send_done) return;
  s->send_done = true;
  if (s->end_error == ErrorCode::kNoError) s->end_error = error;
  s->reset_sent = true;
  s->reset = ResetPayload{error, s->sent, std::string(reason)};
  AppendReset(Out(), id, s->reset);
  MaybeClose(id);
}

void Mux::Abort(uint32_t id, ErrorCode error, std::string_view reason) {
  Stream* s = Find(id);
  if (s == nullptr) return;
  EndBothDirections(id, *s, error, reason);
  MaybeClose(id);
}

void Mux::StreamError(uint32_t id, ErrorCode error, std::string_view reason) {
  ++stream_errors_;
  PG_DEBUG(kMux, "stream {} error: {}", id, reason);
  Stream* s = Find(id);
  if (s == nullptr) return;
  // As Abort(), but OnStreamReset comes before OnStreamClosed: the app reads the error when
  // the stream closes, and the id is forgotten after OnStreamClosed.
  EndBothDirections(id, *s, error, reason);
  cb_->OnStreamReset(id, error, reason);
  MaybeClose(id);
}

void Mux::EndBothDirections(uint32_t id, Stream& s, ErrorCode error, std::string_view reason) {
  if (s.end_error == ErrorCode::kNoError) s.end_error = error;
  if (!s.recv_done) {
    DropReceiving(s);
    if (!s.fin_received) {
      s.stop_sent = true;
      s.stop = StopPayload{error, std::string(reason)};
      AppendStop(Out(), id, s.stop);
    }
  }
  if (!s.send_done) {
    s.send_done = true;
    s.reset_sent = true;
    s.reset = ResetPayload{error, s.sent, std::string(reason)};
    AppendReset(Out(), id, s.reset);
  }
}

void Mux::MaybeClose(uint32_t id) {
  Stream* s = Find(id);
  if (s == nullptr || !s->send_done || !s->recv_done) return;
  Tombstone(id, *s, s->end_error);
  EraseStream(id);
  cb_->OnStreamClosed(id);
}

Result<uint32_t> Mux::Open(const OpenPayload& open) {
  if (!options_.is_client) return Status(Code::kInternal, "only clients open streams");
  if (goaway_received_) return Status(Code::kStreamLost, "the gateway is going away");
  if (peer_settings_ && streams_.size() >= peer_max_streams_) {
    return Status(Code::kLimit,
                  fmt::format("too many streams (gateway limit {})", peer_max_streams_));
  }
  if (next_id_ >= 0x7fffffff) return Status(Code::kLimit, "stream ids exhausted");
  uint32_t id = next_id_;
  next_id_ += 2;
  Stream& s = streams_[id];
  s.recv_limit = options_.stream_window;
  s.open = open;
  if ((open.flags & kOpenFlagEarlyData) != 0) {
    // Granted by the gateway's SETTINGS of this connection; without them, the stream waits for
    // OPEN_OK as any other (and the gateway is not asked to hold anything).
    s.early = peer_settings_ && peer_early_data_ > 0;
    if (s.early) {
      s.send_limit = peer_early_data_;
    } else {
      s.open.flags &= static_cast<uint8_t>(~kOpenFlagEarlyData);
    }
  }
  if (!detached_) AppendOpen(Out(), id, s.open);  // Else ResumeWith() sends it.
  return id;
}

void Mux::RequestList() { AppendList(out_); }

size_t Mux::Accept(uint32_t id, const OpenOkPayload& ok) {
  Stream* s = Find(id);
  if (s == nullptr || s->accepted) return 0;
  PG_DCHECK(!s->early || EarlyDataFits(ok));
  s->accepted = true;
  s->ok = ok;
  s->send_limit = peer_stream_window_;
  s->recv_limit = std::max(s->recv_limit, s->delivered + options_.stream_window);
  AppendOpenOk(Out(), id, ok);
  const size_t early = s->recv_done ? 0 : s->held.size();
  if (s->received > 0 || s->fin_received) DeliverHeld(id);
  return early;
}

void Mux::DeliverHeld(uint32_t id) {
  Stream* s = Find(id);
  if (s == nullptr || s->recv_done) return;
  Buffer held = std::move(s->held);  // Callbacks may end the stream; the bytes stay valid.
  // As on the wire, the FIN counts as arrived only after the bytes before it: a Consumed()
  // from inside OnStreamData must not end the direction before OnStreamFin reports it.
  const bool fin = std::exchange(s->fin_received, false);
  if (held.size() > 0) {
    cb_->OnStreamData(id, held.data(), held.size());
    s = Find(id);
    if (s == nullptr || s->recv_done) return;
  }
  if (!fin) return;
  s->fin_received = true;
  cb_->OnStreamFin(id);
  s = Find(id);
  if (s != nullptr && !s->recv_done && s->delivered == s->received) FinishReceiving(id, *s);
}

void Mux::DropReceiving(Stream& s) {
  PG_DCHECK(!s.recv_done);
  s.recv_done = true;
  SessionConsumed(static_cast<size_t>(s.received - s.delivered));
  s.held = Buffer();
}

void Mux::FinishReceiving(uint32_t id, Stream& s) {
  MaybeSendCredit(id, s, /*force=*/true);
  s.recv_done = true;
  MaybeClose(id);
}

void Mux::Reject(uint32_t id, ErrorCode error, std::string_view reason) {
  Stream* s = Find(id);
  if (s == nullptr || s->accepted) return;
  // Early data it held is dropped: counted as delivered, so the connection's credit flows on.
  const uint64_t dropped = s->recv_done ? 0 : s->received - s->delivered;
  Tombstone(id, *s, error);
  EraseStream(id);
  AppendReset(Out(), id, ResetPayload{error, 0, std::string(reason)});
  SessionConsumed(static_cast<size_t>(dropped));
  cb_->OnStreamClosed(id);
}

void Mux::SendListReply(const std::vector<ListEntry>& entries) {
  // Page so that no LIST_REPLY frame exceeds kMaxControlPayload.
  std::vector<ListEntry> page;
  size_t bytes = 0;
  for (const ListEntry& e : entries) {
    size_t need = kListEntryFixedSize + e.name.size();
    if (bytes + need > kMaxControlPayload) {
      AppendListReply(Out(), kFlagMore, page);
      page.clear();
      bytes = 0;
    }
    page.push_back(e);
    bytes += need;
  }
  AppendListReply(Out(), 0, page);
}

void Mux::Goaway(ErrorCode error, std::string_view reason) {
  if (goaway_sent_) return;
  goaway_sent_ = true;
  AppendGoaway(Out(), GoawayPayload{last_peer_id_, error, std::string(reason)});
}

void Mux::Ping(uint64_t opaque, bool ack) { AppendPing(Out(), ack ? kFlagAck : 0, opaque); }

}  // namespace pipegate
