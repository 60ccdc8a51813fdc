#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "pipegate/acl.h"
#include "pipegate/frame.h"
#include "pipegate/mux.h"
#include "pipegate/resume.h"

#include "audit.h"
#include "counters.h"
#include "export_stream.h"
#include "replay_budget.h"
#include "session_registry.h"
#include "snapshot.h"
#include "uv/connection.h"
#include "uv/handles.h"
#include "uv/stream_link.h"

namespace pipegate::gateway {

class Worker;

/// @brief A stream whose open waits for a free instance or a local reader (--wait).
struct PendingOpen {
  static constexpr uint64_t kFirstRetryMs = 20;  ///< First retry of an open that waits...
  static constexpr uint64_t kMaxRetryMs = 500;   ///< ...doubling up to this: waiting is cheap.

  uint32_t id = 0;
  OpenPayload open;
  uint64_t deadline_ms = 0;
  uint64_t next_try_ms = 0;
  uint64_t interval_ms = kFirstRetryMs;  ///< Doubles after each failed try, up to kMaxRetryMs.
};

/// @brief A client's session: access control, the stream table and the multiplexer. It
/// outlives its connection: when the connection is lost it detaches and keeps its streams for
/// the resume lifetime, and a RESUME on a new connection attaches it again (SPEC §8).
///
/// Ownership: owned by its Worker (Worker::NewSession). Once finished and no connection refers
/// to it, it asks the worker to delete it from a timer of its own (MaybeDelete), never
/// synchronously, so callers that hold a Session* during one loop callback stay valid.
/// Thread: its worker's loop. Re-entrancy: mux and connection callbacks may end the session
/// (Finish); every entry point re-checks the phase.
class Session final : public uvglue::ConnectionHandler, public uvglue::StreamLinkOwner {
 public:
  explicit Session(Worker* worker);
  ~Session() override;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void set_connection(uvglue::Connection* c) {
    conn_ = c;
    conn_id_ = c->id();
    peer_address_ = c->peer_address();
    ++live_conns_;
  }
  Mux* mux() { return mux_.get(); }
  /// @brief A connection that failed before set_connection() will still be freed.
  void ExpectConnection() { ++live_conns_; }
  Counters& counters();
  /// @brief Drains: GOAWAY to the client, then close once no stream is left.
  void Goaway();
  /// @brief Closes at once (the drain's grace period is over).
  void CloseNow();
  /// @brief Attaches a new connection to this (detached or stale) session after a verified
  /// RESUME.
  void Attach(uvglue::Connection* conn, const ResumePayload& resume, const Mux::PeerSettings& peer);
  /// @brief Answers a RESUME that cannot be honoured, and closes.
  void RejectResume(const std::string& why);
  /// @brief Ends (reload_revokes) every stream whose export is gone or no longer
  /// allows this identity ("access denied"), and the whole session if the new CA bundle or CRL
  /// refuses its certificate.
  void RevokeUnallowed(const Snapshot& snap);

  // StreamLinkOwner.
  Mux* stream_mux() override { return finished() ? nullptr : mux_.get(); }
  void FlushSoon() override;
  bool Backlogged() override { return conn_ == nullptr || conn_->backlogged(); }
  void PauseForBackpressure(uvglue::StreamLink* link) override;

  // ConnectionHandler.
  void OnTlsEstablished(const PeerIdentity& peer) override;
  void OnInputYielded() override;
  void OnConnectionWritable() override;
  // The worker's own tick trims the thread's Buffer cache (Worker::OnTick).
  void OnHousekeeping(uint64_t /*now_ms*/) override {
    for (auto& [id, stream] : streams_) {
      if (uvglue::LocalPipe* out = stream->output()) out->ReleaseIdleMemory();
    }
  }
  void OnConnectionClosed(const Status& why) override;
  void OnConnectionFreed() override {
    --live_conns_;
    MaybeDelete();
  }

  // MuxCallbacks.
  void OnMuxReady() override;
  void OnOpenRequest(uint32_t id, const OpenPayload& open) override;
  void OnStreamData(uint32_t id, const uint8_t* data, size_t len) override {
    if (ExportStream* s = Find(id)) s->OnData(data, len);
  }
  void OnStreamMessageEnd(uint32_t id) override {
    if (ExportStream* s = Find(id)) s->OnMessageEnd();
  }
  void OnStreamFin(uint32_t id) override {
    if (ExportStream* s = Find(id)) s->OnFin();
  }
  void OnStreamReset(uint32_t id, ErrorCode error, std::string_view reason) override;
  void OnStreamStopped(uint32_t id, ErrorCode, std::string_view) override {
    if (ExportStream* s = Find(id)) s->StopLocalReading();
  }
  void OnStreamWritable(uint32_t id) override {
    if (ExportStream* s = Find(id)) s->Resume();
  }
  void OnStreamClosed(uint32_t id) override;
  void OnListRequest() override;
  void OnResumeRequest(const ResumePayload& resume) override;

 private:
  /// @brief One life cycle; the flags below the phase are independent of it.
  enum class Phase {
    kStarting,  ///< Before OnMuxReady(): a close now is a failed connection.
    kServing,   ///< The client is (or was just) attached.
    kDetached,  ///< The connection was lost; kept for resume_ttl, counted by TryDetach().
    kFinished,  ///< Ended: no streams; waits for its connections to be freed.
    kDeleting,  ///< The worker deletes it on the next loop turn.
  };
  bool finished() const noexcept { return phase_ >= Phase::kFinished; }

  bool IsLive(const ExportStream* s) const;
  ExportStream* Find(uint32_t id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
  }

  // Opening streams (session_open.cc).
  /// @brief Tries to open; returns true if the request is finished (accepted or rejected).
  bool TryOpen(uint32_t id, const OpenPayload& open, bool last_try);
  /// @brief Counts the stream against the identity's and the gateway's caps, or refuses it.
  std::optional<StreamCharge> ChargeStream(uint32_t id, const OpenPayload& open,
                                           const Limits& limits);
  /// @brief Answers an open whose local end could not be opened; false to retry later.
  /// @param as The mapped account the open was tried as (for the audit line), or "".
  bool RefuseUnopened(uint32_t id, const OpenPayload& open, const Status& error, bool last_try,
                      std::string_view as = {});
  /// @brief Wraps the opened @p fd in a stream, accepts the open and starts reading.
  /// @param fanout For a fan-out export, the reader whose socket pair @p fd is one end of.
  bool StartStream(uint32_t id, const OpenPayload& open, const ExportConfig& e, int fd,
                   ExportInstance instance, StreamCharge charge, std::string_view as = {},
                   FanoutSubscriptionPtr fanout = nullptr);
  /// @brief As above with the stream made already; it takes @p fd as its local pipe.
  bool StartStream(uint32_t id, const OpenPayload& open, const ExportConfig& e, int fd,
                   ExportStreamPtr stream, std::string_view as = {});
  /// @brief Attaches the stream to the export's fan-out hub (which opens the FIFO for its first
  /// reader), then StartStream; refuses as RefuseUnopened does.
  bool StartFanoutStream(uint32_t id, const OpenPayload& open, const ExportConfig& e,
                         const Snapshot& snap, bool follow, ExportInstance instance,
                         StreamCharge charge, bool last_try);
  /// @brief An exec export: takes a process slot (max_exec_processes), starts the process
  /// and its stream, or refuses the open. @p mapped_user becomes PIPEGATE_USER.
  bool StartExecStream(uint32_t id, const OpenPayload& open, const ExportConfig& e,
                       const Limits& limits, ExportInstance instance, StreamCharge charge,
                       const std::optional<std::string>& mapped_user);
  void AuditOpen(uint32_t id, const OpenPayload& open, Verdict verdict, std::string_view detail,
                 bool hidden = false, std::string_view as = {});
  bool Refuse(uint32_t id, ErrorCode code, std::string_view reason) {
    mux_->Reject(id, code, reason);
    return true;
  }
  /// @brief Arms the retry timer for the earliest pending open.
  void ScheduleRetry();
  void OnRetry();
  void OnBudgetRetry();

  // Revocation (session.cc).
  /// @return True if the new CA bundle or CRL refuses the client: the session is ending.
  bool RevokeIfCertificateRefused(const Snapshot& snap);

  // Detaching and resuming (session_resume.cc).
  void OnTtl();
  /// @brief The session stops waiting for a resume (resumed or finished): uncounts it.
  void EndDetached();

  void MaybeFinishDrain() {
    if (draining_ && conn_ != nullptr && streams_.empty() && pending_.empty()) {
      conn_->Close(Status(Code::kOk, "gateway is shutting down"));
    }
  }
  /// @brief Ends the session: every stream, its registration, and (soon) the object.
  void Finish(const std::string& why);
  void DropStreams();
  /// @brief Once finished and no connection is left, has the worker delete this soon.
  void MaybeDelete();

  Worker* worker_;
  SessionReplayBudget budget_;  ///< Declared before mux_, which uses it until destroyed.
  std::unique_ptr<Mux> mux_;
  std::shared_ptr<IdentityUsage> usage_;  ///< Set once TLS names the client.
  uvglue::Connection* conn_ = nullptr;
  int live_conns_ = 0;  ///< Connections whose handler is this session.
  PeerIdentity peer_;
  Phase phase_ = Phase::kStarting;
  /// In the session registry under session_id_. Not implied by the phase: a serving session
  /// whose resume key could not be derived is never registered.
  bool registered_ = false;
  /// The gateway is shutting down: close once the last stream ends. Any phase.
  bool draining_ = false;
  /// Set only while Attach() aborts a stale connection, whose close must not end the session.
  bool replacing_ = false;
  std::string session_id_;
  uint64_t conn_id_ = 0;        ///< Of the connection attached last, for logs.
  std::string peer_address_;    ///< Of the connection attached last, for logs.
  uvglue::Timer retry_;         ///< Pending opens.
  uvglue::Timer ttl_;           ///< How long a detached session waits.
  uvglue::Timer budget_timer_;  ///< A send stalled by a shared replay budget.
  uvglue::Timer reap_;          ///< Deferred deletion (MaybeDelete).
  /// A RESUME whose proof checked out, carried out once the Mux has stopped feeding
  /// (OnInputYielded), so that bytes after it reach the resumed session.
  struct ResumeDecision {
    std::string session_id;
    SessionRecord record;
    ResumePayload resume;
  };
  std::optional<ResumeDecision> resume_;
  std::unordered_map<uint32_t, ExportStreamPtr> streams_;
  std::vector<ExportStream*> paused_;  ///< Observers into streams_; checked with IsLive().
  std::vector<PendingOpen> pending_;
};

}  // namespace pipegate::gateway
