// The resumption half of Mux (docs/protocol.md, "Resumption"): acknowledgments that release
// replay data, tombstones of ended streams, detaching from a lost connection, and resuming on a
// new one by resending what the peer did not receive. The frame and credit half is mux.cc.

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "pipegate/mux.h"

namespace pipegate {
namespace {

Status ProtocolError(std::string what) { return Status(Code::kProtocol, std::move(what)); }

}  // namespace

void Mux::Ack(Stream& s, uint64_t delivered) {
  if (delivered <= s.acked) return;
  if (options_.resumable) {
    const size_t n = std::min<size_t>(static_cast<size_t>(delivered - s.acked), s.replay.size());
    s.replay.Consume(n);  // The storage stays for the next bytes (ReleaseIdleMemory frees it).
    ReleaseReplay(n);
  }
  while (!s.msg_ends.empty() && s.msg_ends.front() <= delivered) s.msg_ends.pop_front();
  unacked_ -= std::min(unacked_, delivered - s.acked);
  s.acked = delivered;
}

void Mux::Tombstone(uint32_t id, const Stream& s, ErrorCode error) {
  if (!options_.resumable) return;
  constexpr size_t kMaxTombstones = 256;
  if (closed_.size() >= kMaxTombstones) closed_.erase(closed_.begin());
  uint8_t flags = kResumeClosed | (s.fin_received ? kResumeFinReceived : 0) |
                  (s.accepted ? kResumeAccepted : 0);
  closed_.push_back(ResumeStream{id, s.received, s.delivered, flags, error});
}

void Mux::Detach() {
  detached_ = true;
  state_ = DecodeState::kHeader;
  header_have_ = prefix_have_ = payload_left_ = skip_left_ = 0;
  discard_ = false;
  control_.Clear();
  out_.Clear();
  peer_settings_ = false;
  // Connection-level credit belongs to one connection; the next one starts afresh.
  session_sent_ = session_send_limit_ = 0;
  session_received_ = session_delivered_ = session_credited_ = 0;
  session_recv_limit_ = options_.session_window;
  session_carry_ = 0;
  for (auto& [id, st] : streams_) {
    // A direction that ended gave the credit of its undelivered bytes back already.
    if (!st.recv_done) session_carry_ += st.received - st.delivered;
  }
}

std::vector<ResumeStream> Mux::ResumeState() const {
  std::vector<ResumeStream> out = closed_;
  for (const auto& [id, st] : streams_) {
    uint8_t flags =
        (st.fin_received ? kResumeFinReceived : 0) | (st.accepted ? kResumeAccepted : 0);
    out.push_back(ResumeStream{id, st.received, st.delivered, flags, ErrorCode::kNoError});
  }
  return out;
}

void Mux::SendSession(const SessionPayload& session) { AppendSession(out_, session); }
void Mux::SendResume(const ResumePayload& resume) { AppendResume(out_, resume); }
void Mux::SendResumeOk(const ResumeOkPayload& ok) { AppendResumeOk(out_, ok); }

size_t Mux::replay_bytes() const {
  size_t total = 0;
  for (const auto& [id, st] : streams_) total += st.replay.size();
  return total;
}

size_t Mux::early_data_capacity() const {
  size_t total = 0;
  for (const auto& [id, st] : streams_) total += st.held.capacity();
  return total;
}

size_t Mux::replay_capacity() const {
  size_t total = 0;
  for (const auto& [id, st] : streams_) total += st.replay.capacity();
  return total;
}

void Mux::ReleaseIdleMemory() {
  for (auto& [id, st] : streams_) {
    if (!st.sent_recently) st.replay.ShrinkIfEmpty();
    st.sent_recently = false;
  }
}

void Mux::SendRecorded(uint32_t id, Stream& s) {
  if (s.reset_sent) AppendReset(Out(), id, s.reset);
  if (s.stop_sent) AppendStop(Out(), id, s.stop);
}

void Mux::ResendData(uint32_t id, Stream& s, uint64_t from, bool widened) {
  uint64_t pos = from;
  size_t max = peer_max_payload_ - kDataPrefixSize;
  auto next_end = s.msg_ends.begin();  // Message boundaries are replayed where they were.
  while (pos < s.sent) {
    while (next_end != s.msg_ends.end() && *next_end <= pos) ++next_end;
    uint64_t stop = next_end != s.msg_ends.end() ? std::min(*next_end, s.sent) : s.sent;
    size_t n = static_cast<size_t>(std::min<uint64_t>(stop - pos, max));
    const bool msg_end = next_end != s.msg_ends.end() && pos + n == *next_end;
    AppendData(Out(), id, msg_end ? kFlagMsgEnd : 0, pos, s.replay.data() + (pos - s.acked), n);
    pos += n;
    session_sent_ += n;
    if (widened) session_send_limit_ += n;
  }
  if (s.fin_sent && !s.reset_sent) {
    if (s.exit_sent) AppendExit(Out(), id, s.exit);  // The EXIT goes right before its FIN.
    AppendData(Out(), id, kFlagFin, s.sent, nullptr, 0);
  }
}

// The resume handshake's checks and the replay they lead to, in the order docs/protocol.md
// gives them: split up, each step would need the whole per-stream state passed along (longer
// than 60 lines for that reason).
Status Mux::ResumeWith(const std::vector<ResumeStream>& peer, uint32_t peer_last_id) {
  if (!peer_settings_) return ProtocolError("resume before SETTINGS");
  std::unordered_map<uint32_t, const ResumeStream*> by_id;
  for (const ResumeStream& r : peer) by_id[r.id] = &r;
  // First check that the views can be reconciled at all, before changing anything.
  for (auto& [id, st] : streams_) {
    auto it = by_id.find(id);
    if (it == by_id.end() || (it->second->flags & kResumeClosed) != 0) continue;
    const ResumeStream& r = *it->second;
    if (r.received > st.sent) {
      return Status(Code::kProtocol, fmt::format("the peer claims byte {} of stream {}, but only "
                                                 "{} were sent",
                                                 r.received, id, st.sent));
    }
    if (r.received < st.acked) {
      return Status(Code::kProtocol,
                    fmt::format("the peer lost bytes of stream {} that it had acknowledged", id));
    }
  }
  detached_ = false;
  // The receiver side: allow the replays on top of a fresh connection window.
  for (auto& [id, st] : streams_) session_recv_limit_ += st.recv_limit - st.received;
  // In id order: the gateway requires the ids of re-sent OPENs to increase.
  std::vector<uint32_t> ids;
  ids.reserve(streams_.size());
  for (const auto& entry : streams_) ids.push_back(entry.first);
  std::sort(ids.begin(), ids.end());
  std::vector<uint32_t> ended;
  std::vector<uint32_t> fins;  // The peer ended its direction cleanly; its FIN may be lost.
  std::vector<std::pair<uint32_t, ErrorCode>> resets;
  for (uint32_t id : ids) {
    Stream& st = streams_.at(id);
    auto it = by_id.find(id);
    bool ours = !IsPeerId(id);
    if (it == by_id.end()) {
      if (ours && id > peer_last_id && !st.accepted) {
        AppendOpen(Out(), id, st.open);  // The OPEN never arrived: send it again,
        // with its early data, which the peer's fresh session window covers as new bytes.
        if (st.sent > 0 || st.fin_sent) ResendData(id, st, 0, /*widened=*/false);
        continue;
      }
      resets.emplace_back(id, ErrorCode::kCancel);  // The peer no longer knows this stream.
      continue;
    }
    const ResumeStream& r = *it->second;
    if ((r.flags & kResumeClosed) != 0) {
      if (r.error != ErrorCode::kNoError) {
        resets.emplace_back(id, r.error);
        continue;
      }
      // Finished cleanly there: it delivered everything and our FIN, and we had its FIN.
      Ack(st, std::min(r.delivered, st.sent));
      if (st.fin_sent && st.acked == st.sent) st.send_done = true;
      // A peer closes cleanly only once we delivered all it sent, so only its FIN can be
      // missing here.
      bool fin_lost = !st.recv_done && st.delivered == st.received;
      if (!st.send_done || (!st.recv_done && !fin_lost)) {
        resets.emplace_back(id, ErrorCode::kCancel);
        continue;
      }
      if (fin_lost) fins.push_back(id);
      ended.push_back(id);
      continue;
    }
    if (!options_.is_client && st.accepted && (r.flags & kResumeAccepted) == 0) {
      AppendOpenOk(Out(), id, st.ok);
    }
    Ack(st, r.delivered);
    if (!st.send_done) {
      ResendData(id, st, r.received);
    } else if (st.fin_sent && !st.reset_sent && (r.flags & kResumeFinReceived) == 0) {
      // A FIN sent with nothing outstanding counted as delivered at once; it may be lost.
      if (st.exit_sent) AppendExit(Out(), id, st.exit);
      AppendData(Out(), id, kFlagFin, st.sent, nullptr, 0);
    }
    SendRecorded(id, st);
    if (st.accepted || !options_.is_client) {
      AppendCredit(Out(), id, CreditPayload{st.delivered, st.recv_limit});
    }
  }
  for (uint32_t id : fins) {
    Stream* st = Find(id);
    if (st == nullptr || st->recv_done) continue;
    st->fin_received = true;
    cb_->OnStreamFin(id);
    st = Find(id);
    if (st != nullptr) st->recv_done = true;
  }
  for (uint32_t id : ended) {
    Stream* st = Find(id);
    if (st == nullptr) continue;
    if (st->fin_sent && !st->delivered_reported) {
      st->delivered_reported = true;
      cb_->OnStreamDelivered(id);
    }
    MaybeClose(id);
  }
  for (auto [id, error] : resets) {
    Stream* st = Find(id);
    if (st == nullptr) continue;
    // As a RESET on the wire would: what it received and never delivered (early data held for
    // an OPEN still waiting) gives its connection credit back.
    if (!st->recv_done) DropReceiving(*st);
    st->send_done = true;
    if (st->end_error == ErrorCode::kNoError) st->end_error = error;
    cb_->OnStreamReset(id, error,
                       error == ErrorCode::kCancel ? "the stream was lost across the reconnect"
                                                   : ErrorCodeName(error));
    MaybeClose(id);
  }
  WakeWritable();  // Streams with credit left may send again.
  return Status::Ok();
}

}  // namespace pipegate
