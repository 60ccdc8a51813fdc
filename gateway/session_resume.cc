// Session: naming a session, detaching it when its connection is lost, and resuming it on a
// new connection (SPEC §8).
#include <cstring>
#include <utility>

#include "pipegate/log.h"

#include "gateway.h"
#include "session.h"
#include "worker.h"

namespace pipegate::gateway {

using uvglue::Connection;

void Session::OnMuxReady() {
  if (phase_ == Phase::kStarting) phase_ = Phase::kServing;
  if (registered_ || conn_ == nullptr) return;
  // Name the session so that the client can resume it over a new connection.
  SessionPayload sp;
  session_id_ = NewSessionId();
  std::memcpy(sp.session_id, session_id_.data(), kSessionIdSize);
  sp.ttl_ms = worker_->gateway()->resume_ttl_ms();
  SessionRecord record{worker_, this, DeriveResumeKey(conn_->tls(), sp.session_id),
                       conn_->tls().peer_spki_sha256(), peer_.All()};
  if (record.key.empty()) return;
  worker_->gateway()->sessions().Register(session_id_, record);
  registered_ = true;
  mux_->SendSession(sp);
  FlushSoon();
}

void Session::OnConnectionClosed(const Status& why) {
  if (replacing_) return;  // A stale connection being dropped for a resumed one.
  if (phase_ != Phase::kStarting) {
    PG_CONN_LOG(kInfo, conn_id_, "client '{}' from {} closed: {}", peer_.Display(), peer_address_,
                why.message());
  } else {
    counters().tls_handshake_failed++;
    PG_CONN_LOG(kWarn, conn_id_, "connection from {} failed: {}", peer_address_, why.message());
  }
  if (why.code() == Code::kProtocol) counters().protocol_errors++;
  conn_ = nullptr;
  bool lost = why.code() == Code::kStreamLost || why.code() == Code::kTls;
  // A session without streams is kept too: a mount may open streams while it is disconnected,
  // and they must be sent on the resumed session.
  bool keep = lost && registered_ && !draining_ && !finished();
  Gateway* gw = worker_->gateway();
  if (keep && !gw->sessions().TryDetach(usage_.get(), gw->snapshot()->config.limits)) {
    keep = false;
    counters().sessions_not_kept++;
    PG_CONN_LOG(kInfo, conn_id_, "session of '{}' not kept for a resume: too many detached",
                peer_.Display());
  }
  if (!keep) {
    Finish(why.message());
    return;
  }
  // Keep the streams: their local ends just see back-pressure until the client resumes.
  phase_ = Phase::kDetached;
  mux_->Detach();
  counters().sessions_detached++;
  uint32_t ttl = gw->resume_ttl_ms();
  PG_CONN_LOG(kInfo, conn_id_, "session of '{}' detached: keeping {} stream(s) for {} s",
              peer_.Display(), streams_.size(), ttl / 1000);
  ttl_.Start(ttl);
}

void Session::OnTtl() {
  if (phase_ != Phase::kDetached) return;
  counters().sessions_expired++;
  PG_CONN_LOG(kInfo, conn_id_, "session of '{}' expired after detaching; ending {} stream(s)",
              peer_.Display(), streams_.size());
  Finish("the session expired");
}

void Session::EndDetached() {
  if (phase_ != Phase::kDetached) return;
  worker_->gateway()->sessions().Reattached(usage_.get());
  phase_ = Phase::kServing;
}

void Session::RejectResume(const std::string& why) {
  counters().resume_rejected++;
  PG_CONN_LOG(kInfo, conn_id_, "refused to resume a session for '{}' from {}: {}", peer_.Display(),
              peer_address_, why);
  if (conn_ == nullptr) return;
  mux_->Goaway(ErrorCode::kResumeRejected, why);
  conn_->Close(Status(Code::kOk, "resume refused"));
}

void Session::OnResumeRequest(const ResumePayload& resume) {
  PG_DEBUG(kMux, "[C{}] RESUME with {} stream(s)", conn_id_, resume.streams.size());
  if (conn_ == nullptr) return;
  std::string id(reinterpret_cast<const char*>(resume.session_id), kSessionIdSize);
  SessionRecord record;
  if (!worker_->gateway()->sessions().Find(id, &record)) {
    RejectResume("unknown or expired session");
    return;
  }
  if (record.session == this) {
    counters().resume_protocol_errors++;
    RejectResume("a connection cannot resume its own session");
    return;
  }
  // Only the same client key, over this new mutually authenticated connection, and with a
  // proof bound to it (a RESUME replayed on another connection fails here).
  if (record.spki != conn_->tls().peer_spki_sha256()) {
    RejectResume("the session belongs to another client key");
    return;
  }
  // The session keeps the identities it was created with: a new certificate for the same key
  // that names other identities is a new client.
  if (record.identities != conn_->tls().peer_identity().All()) {
    RejectResume("the certificate names other identities than the session's");
    return;
  }
  if (!VerifyResumeProof(record.key, conn_->tls(), resume.proof)) {
    RejectResume("the resume proof is wrong");
    return;
  }
  resume_ = ResumeDecision{id, record, resume};  // Carried out in OnInputYielded().
}

void Session::OnInputYielded() {
  if (!resume_ || conn_ == nullptr) return;
  ResumeDecision decision = std::move(*resume_);
  resume_.reset();
  const SessionRecord& record = decision.record;
  // This connection's own fresh session is not needed any more.
  if (registered_) worker_->gateway()->sessions().Unregister(session_id_, this);
  registered_ = false;
  Mux::PeerSettings peer = mux_->peer_settings();
  Connection* conn = conn_;
  conn_ = nullptr;
  PG_DEBUG(kMux, "[C{}] resume proof verified; session on {} worker", conn_id_,
           record.worker == worker_ ? "this" : "another");
  if (record.worker == worker_) {
    --live_conns_;  // The connection now belongs to the resumed session.
    record.session->Attach(conn, decision.resume, peer);
  } else {
    Connection::Released released = conn->Release();
    if (!released.tls) {
      conn_ = conn;
      RejectResume("busy, try again");
      return;
    }
    if (!record.worker->Post(
            Worker::Handoff{decision.session_id, std::move(released), decision.resume, peer})) {
      PG_CONN_LOG(kInfo, conn_id_, "resume from {} dropped: the gateway is shutting down",
                  peer_address_);
    }
  }
  // Not Finish(): this session was never detached, and its registration is already gone.
  phase_ = Phase::kFinished;
  DropStreams();
  MaybeDelete();
}

void Session::Attach(Connection* conn, const ResumePayload& resume, const Mux::PeerSettings& peer) {
  if (conn_ != nullptr) {
    // The old connection is stale (the client already moved on): drop it, keep the session.
    Connection* old = conn_;
    conn_ = nullptr;
    replacing_ = true;
    old->Abort(Status(Code::kStreamLost, "replaced by a resumed connection"));
    replacing_ = false;
  }
  if (phase_ != Phase::kDetached) mux_->Detach();  // A stale attachment: the same reset.
  conn->Rebind(this, mux_.get());
  set_connection(conn);
  ttl_.Stop();
  EndDetached();
  mux_->AdoptPeerSettings(peer);
  mux_->SendResumeOk(ResumeOkPayload{mux_->last_stream_id(), mux_->ResumeState()});
  Status st = mux_->ResumeWith(resume.streams, resume.last_id);
  if (!st.ok()) {
    RejectResume(st.message());
    Finish(st.message());
    return;
  }
  // Ratchet the key: a leaked old key cannot resume again.
  uint8_t sid[kSessionIdSize];
  std::memcpy(sid, session_id_.data(), kSessionIdSize);
  worker_->gateway()->sessions().UpdateKey(session_id_, DeriveResumeKey(conn->tls(), sid));
  counters().sessions_resumed++;
  PG_CONN_LOG(kInfo, conn_id_, "session of '{}' resumed from {} with {} stream(s)", peer_.Display(),
              peer_address_, streams_.size());
  OnConnectionWritable();
  FlushSoon();
}

}  // namespace pipegate::gateway
