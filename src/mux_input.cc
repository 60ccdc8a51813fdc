// The receiving half of Mux: decoding the byte stream into frames, DATA straight through to the
// callbacks, control frames dispatched (SETTINGS, CREDIT, OPEN/OPEN_OK, RESET/STOP, EXIT, LIST,
// GOAWAY, PING). The sending half is mux.cc; resumption is mux_resume.cc.

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "pipegate/log.h"
#include "pipegate/mux.h"

namespace pipegate {
namespace {

Status ProtocolError(std::string what) { return Status(Code::kProtocol, std::move(what)); }

}  // namespace

// The input loop of the frame parser (header, DATA straight through, control payloads
// buffered): one loop so that every exit leaves *consumed exact (longer than 60 lines for that).
Status Mux::Feed(const uint8_t* data, size_t len, size_t* consumed) {
  const size_t total = len;
  if (consumed != nullptr) *consumed = 0;
  if (resume_requested_ && len > 0) {
    return ProtocolError("frames after RESUME reached the connection's discarded session");
  }
  while (len > 0) {
    if (resume_requested_) {
      // The rest belongs to the resumed session's Mux (the caller moves it there).
      if (consumed == nullptr) {
        return ProtocolError("frames after RESUME reached the connection's discarded session");
      }
      break;
    }
    switch (state_) {
      case DecodeState::kHeader: {
        size_t take = std::min(len, kFrameHeaderSize - header_have_);
        std::memcpy(header_ + header_have_, data, take);
        header_have_ += take;
        data += take;
        len -= take;
        if (header_have_ < kFrameHeaderSize) break;
        header_have_ = 0;
        Result<FrameHeader> h = DecodeFrameHeader(header_, options_.max_frame_payload);
        if (!h) return h.error();
        frame_ = *h;
        if (!peer_settings_ && frame_.type != FrameType::kSettings) {
          return ProtocolError("the first frame must be SETTINGS");
        }
        // RESUME is valid only as the very first frame after SETTINGS.
        frame_may_resume_ = resume_window_ && frame_.type == FrameType::kResume;
        if (frame_.type != FrameType::kSettings) resume_window_ = false;
        if (frame_.type == FrameType::kData) {
          prefix_have_ = 0;
          state_ = DecodeState::kDataPrefix;
        } else {
          control_.Clear();
          payload_left_ = frame_.length;
          state_ = DecodeState::kControl;
          if (payload_left_ == 0) {
            state_ = DecodeState::kHeader;
            Status st = OnFrame();
            if (!st.ok()) return st;
          }
        }
        break;
      }
      case DecodeState::kDataPrefix: {
        size_t take = std::min(len, kDataPrefixSize - prefix_have_);
        std::memcpy(prefix_ + prefix_have_, data, take);
        prefix_have_ += take;
        data += take;
        len -= take;
        if (prefix_have_ < kDataPrefixSize) break;
        payload_left_ = frame_.length - kDataPrefixSize;
        Status st = OnDataStart(GetU64(prefix_));
        if (!st.ok()) return st;
        state_ = DecodeState::kDataPayload;
        if (payload_left_ == 0) {
          state_ = DecodeState::kHeader;
          OnDataEnd();
        }
        break;
      }
      case DecodeState::kDataPayload: {
        size_t take = std::min(len, payload_left_);
        payload_left_ -= take;
        OnDataChunk(data, take);
        data += take;
        len -= take;
        if (payload_left_ == 0) {
          state_ = DecodeState::kHeader;
          OnDataEnd();
        }
        break;
      }
      case DecodeState::kControl: {
        size_t take = std::min(len, payload_left_);
        control_.Append(data, take);
        payload_left_ -= take;
        data += take;
        len -= take;
        if (payload_left_ == 0) {
          state_ = DecodeState::kHeader;
          Status st = OnFrame();
          if (!st.ok()) return st;
        }
        break;
      }
    }
  }
  if (consumed != nullptr) *consumed = total - len;
  return Status::Ok();
}

Status Mux::OnDataStart(uint64_t offset) {
  uint32_t id = frame_.stream_id;
  size_t len = frame_.length - kDataPrefixSize;
  // Session credit covers every DATA byte, whatever happens to its stream.
  if (session_received_ + len > session_recv_limit_) {
    return Status(Code::kProtocol, "the peer exceeded the connection's flow-control window");
  }
  session_received_ += len;
  discard_ = true;
  skip_left_ = 0;
  Stream* s = Find(id);
  if (s == nullptr) {
    if (!IsClosedId(id)) return ProtocolError(fmt::format("DATA on unopened stream {}", id));
    SessionConsumed(len);  // Late data for a closed stream: drop it, keep credit flowing.
    return Status::Ok();
  }
  if (s->recv_done) {
    SessionConsumed(len);
    // Bytes past a FIN are an error even once every byte before it was delivered; replays
    // (which end at or below the final size) are not.
    if (s->fin_received && len > 0 && (offset > UINT64_MAX - len || offset + len > s->received)) {
      StreamError(id, ErrorCode::kProtocol, "DATA after FIN");
    }
    return Status::Ok();
  }
  if (offset > UINT64_MAX - len || offset > s->received) {
    SessionConsumed(len);
    StreamError(id, ErrorCode::kProtocol,
                fmt::format("DATA at offset {} but {} expected", offset, s->received));
    return Status::Ok();
  }
  uint64_t end = offset + len;
  // After a reconnect the peer replays from the offset we reported; bytes below `received`
  // are duplicates and are dropped (offsets make replay idempotent).
  if ((len > 0 && end <= s->received) || (s->fin_received && end <= s->received)) {
    SessionConsumed(len);
    return Status::Ok();
  }
  if (s->fin_received) {
    SessionConsumed(len);
    StreamError(id, ErrorCode::kProtocol, "DATA after FIN");
    return Status::Ok();
  }
  if (end > s->recv_limit) {
    SessionConsumed(len);
    StreamError(id, ErrorCode::kFlowControl, "the peer exceeded the stream's window");
    return Status::Ok();
  }
  skip_left_ = static_cast<size_t>(s->received - offset);
  if (skip_left_ > 0) SessionConsumed(skip_left_);
  // `received` advances as payload bytes actually arrive (OnDataChunk), so a connection lost
  // in the middle of a frame reports only what was really received.
  discard_ = false;
  return Status::Ok();
}

void Mux::OnDataChunk(const uint8_t* p, size_t n) {
  if (n > 0 && skip_left_ > 0 && !discard_) {
    size_t skip = std::min(n, skip_left_);
    skip_left_ -= skip;
    p += skip;
    n -= skip;
  }
  if (n == 0) return;
  if (discard_) {
    // Counted as delivered at once (SessionConsumed in OnDataStart covered the whole frame).
    return;
  }
  Stream* s = Find(frame_.stream_id);
  if (s == nullptr || s->recv_done) {
    // The app closed the stream while this frame was arriving: drop the rest, keep the
    // connection's credit flowing.
    SessionConsumed(n);
    return;
  }
  s->received += n;
  if (!s->accepted && !options_.is_client) {
    s->held.Append(p, n);  // Early data, bounded by the early window; Accept() delivers it.
    return;
  }
  cb_->OnStreamData(frame_.stream_id, p, n);
}

void Mux::OnDataEnd() {
  if (discard_) return;
  uint32_t id = frame_.stream_id;
  Stream* s = Find(id);
  if (s == nullptr || s->recv_done) return;
  if (!s->accepted && !options_.is_client) {
    // Before Accept(): a FIN waits with the early data for Accept() to deliver it. A message
    // end has no meaning there (early data is a byte stream; EarlyDataFits).
    if ((frame_.flags & kFlagFin) != 0) s->fin_received = true;
    return;
  }
  if ((frame_.flags & kFlagMsgEnd) != 0) {
    // A replayed frame wholly below `received` was discarded above: its boundary was reported.
    cb_->OnStreamMessageEnd(id);
    s = Find(id);
    if (s == nullptr || s->recv_done) return;
  }
  if ((frame_.flags & kFlagFin) == 0) return;
  s->fin_received = true;
  cb_->OnStreamFin(id);
  s = Find(id);
  if (s != nullptr && !s->recv_done && s->delivered == s->received) FinishReceiving(id, *s);
}

Status Mux::FindForFrame(uint32_t id, const char* frame, Stream** out) {
  *out = Find(id);
  if (*out != nullptr || IsClosedId(id)) return Status::Ok();
  return ProtocolError(fmt::format("{} for unknown stream {}", frame, id));
}

// One case per frame type, each a few lines of checks then a callback: kept as one switch so
// the frame table of docs/protocol.md can be read against it top to bottom (longer than 60
// lines for that reason).
Status Mux::OnFrame() {
  const uint8_t* p = control_.data();
  size_t n = control_.size();
  uint32_t id = frame_.stream_id;
  switch (frame_.type) {
    case FrameType::kSettings: {
      if (peer_settings_) return ProtocolError("SETTINGS sent twice");
      Result<std::vector<Setting>> settings = DecodeSettings(p, n);
      if (!settings) return settings.error();
      Status st = ApplySettings(*settings);
      if (!st.ok()) return st;
      peer_settings_ = true;
      // Only a connection that has carried nothing yet may turn into another session.
      resume_window_ = !options_.is_client && last_peer_id_ == 0 && streams_.empty() &&
                       closed_.empty() && !resume_requested_;
      cb_->OnMuxReady();
      return Status::Ok();
    }
    case FrameType::kPing: {
      Result<uint64_t> opaque = DecodePing(p, n);
      if (!opaque) return opaque.error();
      if ((frame_.flags & kFlagAck) == 0) Ping(*opaque, /*ack=*/true);
      return Status::Ok();
    }
    case FrameType::kGoaway: {
      Result<GoawayPayload> g = DecodeGoaway(p, n);
      if (!g) return g.error();
      goaway_received_ = true;
      cb_->OnGoaway(*g);
      return Status::Ok();
    }
    case FrameType::kCredit: {
      Result<CreditPayload> c = DecodeCredit(p, n);
      if (!c) return c.error();
      return OnCredit(id, *c);
    }
    case FrameType::kOpen: {
      if (options_.is_client) return ProtocolError("a gateway may not open streams");
      if (!IsPeerId(id) || id <= last_peer_id_) {
        return ProtocolError(fmt::format("OPEN with bad stream id {}", id));
      }
      Result<OpenPayload> open = DecodeOpen(p, n);
      if (!open) return open.error();
      last_peer_id_ = id;
      if (goaway_sent_) {
        AppendReset(Out(), id, ResetPayload{ErrorCode::kShutdown, 0, "gateway is shutting down"});
        return Status::Ok();
      }
      if (streams_.size() >= options_.max_streams) {
        ++stream_errors_;
        AppendReset(Out(), id,
                    ResetPayload{ErrorCode::kLimit, 0,
                                 fmt::format("too many streams (limit {})", options_.max_streams)});
        return Status::Ok();
      }
      Stream& s = streams_[id];
      // No DATA before Accept(), unless the client asked for the early window we grant.
      s.early = (open->flags & kOpenFlagEarlyData) != 0 && options_.early_data > 0;
      s.recv_limit = s.early ? options_.early_data : 0;
      cb_->OnOpenRequest(id, *open);
      return Status::Ok();
    }
    case FrameType::kOpenOk: {
      if (!options_.is_client) return ProtocolError("OPEN_OK sent to a gateway");
      Result<OpenOkPayload> ok = DecodeOpenOk(p, n);
      if (!ok) return ok.error();
      Stream* s = nullptr;
      if (Status found = FindForFrame(id, "OPEN_OK", &s); !found.ok() || s == nullptr) return found;
      if (s->accepted) return Status::Ok();  // Replayed after a reconnect.
      s->accepted = true;
      s->send_limit = std::max<uint64_t>(s->send_limit, peer_stream_window_);
      cb_->OnOpenAccepted(id, *ok);
      return Status::Ok();
    }
    case FrameType::kReset: {
      Result<ResetPayload> r = DecodeReset(p, n);
      if (!r) return r.error();
      Stream* s = nullptr;
      if (Status found = FindForFrame(id, "RESET", &s); !found.ok() || s == nullptr) return found;
      // Before OPEN_OK, a RESET of a stream we opened is the refusal: nothing was sent either
      // way, so both directions end, even if we had already stopped reading. A RESET of a
      // stream the peer opened ends only the peer's direction; Accept() or Reject() still
      // answers the open.
      bool refused = !s->accepted && !IsPeerId(id);
      if (s->recv_done && !refused) return Status::Ok();
      if (!s->recv_done) DropReceiving(*s);
      if (refused) s->send_done = true;
      cb_->OnStreamReset(id, r->error, r->reason);
      MaybeClose(id);
      return Status::Ok();
    }
    case FrameType::kStop: {
      Result<StopPayload> st = DecodeStop(p, n);
      if (!st) return st.error();
      Stream* s = nullptr;
      if (Status found = FindForFrame(id, "STOP", &s); !found.ok() || s == nullptr) return found;
      if (s->stop_received) return Status::Ok();  // Replayed after a reconnect.
      s->stop_received = true;
      if (!s->send_done) {
        s->send_done = true;
        // Before OPEN_OK nothing was sent, and a RESET there would read as a refusal.
        if (s->accepted) {
          s->reset_sent = true;
          s->reset = ResetPayload{st->error, s->sent, "stopped by peer"};
          AppendReset(Out(), id, s->reset);
        }
      }
      if (s->end_error == ErrorCode::kNoError) s->end_error = st->error;
      cb_->OnStreamStopped(id, st->error, st->reason);
      MaybeClose(id);
      return Status::Ok();
    }
    case FrameType::kList: {
      if (options_.is_client) return ProtocolError("LIST sent to a client");
      cb_->OnListRequest();
      return Status::Ok();
    }
    case FrameType::kListReply: {
      if (!options_.is_client) return ProtocolError("LIST_REPLY sent to a gateway");
      Result<std::vector<ListEntry>> entries = DecodeListReply(p, n);
      if (!entries) return entries.error();
      cb_->OnListReply(*entries, (frame_.flags & kFlagMore) != 0);
      return Status::Ok();
    }
    case FrameType::kSession: {
      if (!options_.is_client) return ProtocolError("SESSION sent to a gateway");
      Result<SessionPayload> session = DecodeSession(p, n);
      if (!session) return session.error();
      cb_->OnSession(*session);
      return Status::Ok();
    }
    case FrameType::kResume: {
      if (options_.is_client) return ProtocolError("RESUME sent to a client");
      if (!frame_may_resume_) {
        return ProtocolError("RESUME is accepted only as the first frame after SETTINGS");
      }
      Result<ResumePayload> resume = DecodeResume(p, n);
      if (!resume) return resume.error();
      resume_requested_ = true;
      cb_->OnResumeRequest(*resume);
      return Status::Ok();
    }
    case FrameType::kResumeOk: {
      if (!options_.is_client) return ProtocolError("RESUME_OK sent to a gateway");
      Result<ResumeOkPayload> ok = DecodeResumeOk(p, n);
      if (!ok) return ok.error();
      cb_->OnResumeOk(*ok);
      return Status::Ok();
    }
    case FrameType::kExit: {
      if (!options_.is_client) return ProtocolError("EXIT sent to a gateway");
      Result<ExitPayload> exit = DecodeExit(p, n);
      if (!exit) return exit.error();
      Stream* s = nullptr;
      if (Status found = FindForFrame(id, "EXIT", &s); !found.ok() || s == nullptr) return found;
      // Replayed after a reconnect, it says the same again: reported each time, harmlessly.
      if (s->recv_done) return Status::Ok();
      cb_->OnStreamExit(id, *exit);
      return Status::Ok();
    }
    case FrameType::kData:
      break;
  }
  return ProtocolError("unexpected frame");
}

Status Mux::ApplySettings(const std::vector<Setting>& settings) {
  peer_stream_window_ = 256 * 1024;
  session_send_limit_ = 16u << 20;
  peer_max_streams_ = 100;
  peer_early_data_ = 0;
  for (const Setting& s : settings) {
    switch (s.id) {
      case SettingId::kMaxFramePayload:
        if (s.value < kDefaultMaxFramePayload || s.value > kMaxFramePayloadLimit) {
          return ProtocolError(fmt::format("SETTINGS max frame payload {} out of range", s.value));
        }
        peer_max_payload_ = s.value;
        break;
      case SettingId::kStreamWindow:
        peer_stream_window_ = s.value;
        break;
      case SettingId::kSessionWindow:
        session_send_limit_ = s.value;
        break;
      case SettingId::kMaxStreams:
        peer_max_streams_ = s.value;
        break;
      case SettingId::kEarlyData:
        peer_early_data_ = s.value;
        break;
      default:
        break;  // Unknown settings are ignored, so new ones can be added.
    }
  }
  return Status::Ok();
}

Status Mux::OnCredit(uint32_t id, const CreditPayload& c) {
  const uint64_t session_cap = options_.max_unacked_per_session;
  if (id == 0) {
    if (c.delivered > session_sent_) {
      return ProtocolError("session CREDIT acknowledges bytes never sent");
    }
    if (c.limit > session_send_limit_) {
      bool was_blocked = session_sent_ >= session_send_limit_;
      session_send_limit_ = c.limit;
      if (was_blocked) {
        // Wake every stream that has its own credit left.
        std::vector<uint32_t> ids;
        for (auto& [sid, s] : streams_) {
          if (!s.send_done && !s.fin_sent && MaySend(s) && s.sent < s.send_limit) {
            ids.push_back(sid);
          }
        }
        for (uint32_t sid : ids) {
          if (HasStream(sid)) cb_->OnStreamWritable(sid);
        }
      }
    }
    return Status::Ok();
  }
  Stream* s = nullptr;
  if (Status found = FindForFrame(id, "CREDIT", &s); !found.ok() || s == nullptr) return found;
  if (c.delivered > s->sent) {
    StreamError(id, ErrorCode::kProtocol, "CREDIT acknowledges bytes never sent");
    return Status::Ok();
  }
  // Absolute values: stale or duplicate updates never move anything backwards.
  const bool session_capped = session_cap != 0 && unacked_ >= session_cap;
  const size_t room_before = SendWindow(id);
  Ack(*s, c.delivered);
  s->send_limit = std::max(s->send_limit, c.limit);
  bool grew = SendWindow(id) > room_before;
  if (s->fin_sent && !s->send_done && s->acked == s->sent) {
    s->send_done = true;
    if (!s->delivered_reported) {
      s->delivered_reported = true;
      cb_->OnStreamDelivered(id);
    }
    MaybeClose(id);
    return Status::Ok();
  }
  if (session_capped && unacked_ < session_cap) {
    WakeWritable();  // Every stream waited for this acknowledgement's room.
    return Status::Ok();
  }
  if (grew && !s->send_done && !s->fin_sent) cb_->OnStreamWritable(id);
  return Status::Ok();
}

}  // namespace pipegate
