#include "session.h"

#include <fmt/format.h>

#include <utility>

#include "pipegate/log.h"

#include "gateway.h"
#include "worker.h"

namespace pipegate::gateway {

namespace {

constexpr uint64_t kBudgetRetryMs = 50;  // Retry of a send stalled by a shared replay budget.

}  // namespace

Session::Session(Worker* worker)
    : worker_(worker),
      budget_(&worker->gateway()->totals(), worker->gateway()->snapshot()->config.limits),
      retry_(worker->loop(), [this] { OnRetry(); }),
      ttl_(worker->loop(), [this] { OnTtl(); }),
      budget_timer_(worker->loop(), [this] { OnBudgetRetry(); }),
      reap_(worker->loop(), [this] { worker_->Forget(this); }) {
  // Streams, windows, frame size and replay caps from the [limits] table.
  MuxOptions options = MuxOptionsFor(worker_->gateway()->snapshot()->config.limits);
  options.is_client = false;
  options.resumable = true;
  options.replay_budget = &budget_;
  mux_ = std::make_unique<Mux>(options, this);
}

Session::~Session() = default;

Counters& Session::counters() { return worker_->gateway()->counters(); }

void Session::Goaway() {
  draining_ = true;
  if (conn_ == nullptr) {
    if (phase_ == Phase::kDetached) Finish("gateway is shutting down");
    return;
  }
  mux_->Goaway(ErrorCode::kShutdown, "gateway is shutting down");
  conn_->Flush();
  MaybeFinishDrain();
}

void Session::CloseNow() {
  draining_ = true;
  if (conn_ != nullptr) {
    conn_->Close(Status(Code::kStreamLost, "gateway is shutting down"));
  } else {
    Finish("gateway is shutting down");
  }
}

void Session::FlushSoon() {
  if (conn_ != nullptr) conn_->Flush();
  // A stream stalled by the identity's or the gateway's replay budget hears of no event when
  // another session gives budget back: look again shortly.
  if (mux_->TakeBudgetStall() && !finished() && !budget_timer_.active()) {
    budget_timer_.Start(kBudgetRetryMs);
  }
}

void Session::OnBudgetRetry() {
  if (finished()) return;
  mux_->WakeWritable();
  FlushSoon();
}

void Session::PauseForBackpressure(uvglue::StreamLink* link) {
  paused_.push_back(static_cast<ExportStream*>(link));
  if (conn_ != nullptr) conn_->WantWritable();
}

void Session::OnTlsEstablished(const PeerIdentity& peer) {
  peer_ = peer;
  usage_ = worker_->gateway()->identities().For(peer_.Name());
  budget_.Bind(usage_);
  PG_CONN_LOG(kInfo, conn_id_, "client '{}' connected from {}", peer_.Display(), peer_address_);
}

void Session::OnConnectionWritable() {
  std::vector<ExportStream*> paused;
  paused.swap(paused_);
  for (ExportStream* s : paused) {
    if (IsLive(s)) s->Resume();
  }
}

bool Session::IsLive(const ExportStream* s) const {
  for (const auto& [id, p] : streams_) {
    if (p.get() == s) return true;
  }
  return false;
}

void Session::OnStreamReset(uint32_t id, ErrorCode error, std::string_view reason) {
  PG_DEBUG(kMux, "[S{}] reset by client: {} {}", id, ErrorCodeName(error), SanitizeForLog(reason));
  if (ExportStream* s = Find(id)) s->OnPeerReset();
}

void Session::OnStreamClosed(uint32_t id) {
  auto node = streams_.extract(id);
  if (!node.empty()) std::erase(paused_, node.mapped().get());
  node = {};  // Deletes the stream.
  std::erase_if(pending_, [&](const PendingOpen& p) { return p.id == id; });
  MaybeFinishDrain();
}

void Session::OnListRequest() {
  std::shared_ptr<const Snapshot> snap = worker_->gateway()->snapshot();
  std::vector<ListEntry> entries;
  for (const ExportConfig& e : snap->config.exports) {
    if (!IsAllowed(e.allow, peer_)) continue;  // ls never shows what this identity can't use.
    ListEntry entry{e.name, static_cast<uint8_t>(e.kind), static_cast<uint8_t>(e.access)};
    if (e.socket_type == SocketType::kSeqpacket) {
      entry.flags = kExportMessages;
      entry.max_message = e.max_message_size;
    }
    entry.max_clients = e.max_clients;
    if (auto slot = snap->slots.find(e.name); slot != snap->slots.end()) {
      entry.clients = slot->second->in_use.load(std::memory_order_relaxed);
    }
    entries.push_back(std::move(entry));
  }
  PG_LOG(kInfo, "audit: decision=listed identity=\"{}\" from={} conn=C{} shown={} of={}",
         peer_.Display(), peer_address_, conn_id_, entries.size(), snap->config.exports.size());
  mux_->SendListReply(entries);
  FlushSoon();
}

// ---- reload_revokes ----

bool Session::RevokeIfCertificateRefused(const Snapshot& snap) {
  // A peer without a recorded chain is left alone.
  if (!snap.tls || peer_.chain_der.empty()) return false;
  Status cert = snap.tls->VerifyPeerAgain(peer_);
  if (cert.ok()) return false;
  std::string reason = cert.message();
  if (reason.rfind("TLS failed: ", 0) == 0) reason.erase(0, 12);
  const std::string why = fmt::format("access denied for '{}': {}", peer_.Display(), reason);
  counters().connections_revoked++;
  for (auto& [id, s] : streams_) {
    counters().streams_revoked++;
    Audit(AuditEvent{
        Verdict::kRevoked, &peer_, s->name(), "", peer_address_, conn_id_, id, reason, false, {}});
  }
  PG_CONN_LOG(kWarn, conn_id_, "ending the session of '{}' from {}: {}", peer_.Display(),
              peer_address_, reason);
  if (conn_ != nullptr) {
    std::vector<uint32_t> ids;
    for (auto& [id, s] : streams_) ids.push_back(id);
    for (uint32_t id : ids) mux_->Abort(id, ErrorCode::kAccessDenied, why);
    mux_->Goaway(ErrorCode::kAccessDenied, why);
    conn_->Close(Status(Code::kAccessDenied, why));
  } else {
    Finish(why);
  }
  return true;
}

void Session::RevokeUnallowed(const Snapshot& snap) {
  if (finished()) return;
  // A client whose certificate the new CA bundle or CRL refuses loses the whole session, as it
  // could not connect again.
  if (RevokeIfCertificateRefused(snap)) return;
  std::vector<std::pair<uint32_t, std::string>> victims;
  for (auto& [id, s] : streams_) {
    const ExportConfig* e = snap.config.Find(s->name());
    if (e == nullptr) {
      victims.emplace_back(id, fmt::format("access denied: '{}' is no longer exported", s->name()));
    } else if (!IsAllowed(e->allow, peer_)) {
      victims.emplace_back(id, fmt::format("access denied for '{}': no longer allowed on '{}'",
                                           peer_.Display(), e->name));
    }
  }
  for (auto& [id, why] : victims) {
    ExportStream* s = Find(id);
    if (s == nullptr) continue;
    counters().streams_revoked++;
    Audit(AuditEvent{Verdict::kRevoked,
                     &peer_,
                     s->name(),
                     "",
                     peer_address_,
                     conn_id_,
                     id,
                     "removed from the allow list by a reload",
                     false,
                     {}});
    mux_->Abort(id, ErrorCode::kAccessDenied, why);  // May delete the stream (OnStreamClosed).
  }
  if (!victims.empty()) FlushSoon();
}

// ---- End of life ----

void Session::DropStreams() {
  std::unordered_map<uint32_t, ExportStreamPtr> doomed;
  doomed.swap(streams_);
  doomed.clear();  // Deletes every stream; none calls back into the session.
  paused_.clear();
  pending_.clear();
}

void Session::Finish(const std::string& why) {
  if (finished()) return;
  EndDetached();
  phase_ = Phase::kFinished;
  DropStreams();
  if (registered_) worker_->gateway()->sessions().Unregister(session_id_, this);
  registered_ = false;
  if (conn_ != nullptr) conn_->Close(Status(Code::kStreamLost, why));
  MaybeDelete();
}

void Session::MaybeDelete() {
  if (phase_ != Phase::kFinished || live_conns_ > 0) return;
  phase_ = Phase::kDeleting;
  retry_.Close();
  ttl_.Close();
  budget_timer_.Close();
  reap_.Start(0);  // Worker::Forget() deletes this on the next loop turn.
}

}  // namespace pipegate::gateway
