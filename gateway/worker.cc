#include "worker.h"

#include <unistd.h>

#include <chrono>
#include <utility>

#include "pipegate/buffer.h"
#include "pipegate/log.h"

#include "gateway.h"
#include "session.h"

namespace pipegate::gateway {

using uvglue::Connection;

Worker::Worker(Gateway* gateway, int index)
    : gateway_(gateway),
      index_(index),
      async_(loop_, [this] { OnAsync(); }),
      grace_(loop_, [this] { OnGrace(); }),
      ticks_(loop_, [this](uint64_t) { OnTick(); }) {}

Worker::~Worker() = default;

namespace {

uint64_t SteadyMicros() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

void Worker::Start(const std::vector<int>& listen_fds, bool measure_lag) {
  measure_lag_ = measure_lag;
  ticks_.Start();
  for (int fd : listen_fds) {
    const size_t slot = listeners_.size();  // Only opened listeners are kept: slot is its index.
    Result<std::unique_ptr<uvglue::Listener>> listener = uvglue::Listener::Open(
        loop_, fd, [this, slot](const Status& status) { OnConnection(slot, status); });
    if (!listener) {
      PG_LOG(kError, "worker {}: {}", index_, listener.error().message());
      continue;
    }
    listeners_.push_back(std::move(*listener));
  }
  thread_ = std::thread([this] {
    loop_.Run();
    if (!loop_.Close()) PG_LOG(kError, "worker {}: handles left open at exit", index_);
  });
}

Session* Worker::NewSession() {
  auto session = std::make_unique<Session>(this);
  Session* raw = session.get();
  sessions_.emplace(raw, std::move(session));
  return raw;
}

void Worker::Forget(Session* s) {
  sessions_.erase(s);  // Deletes it.
  MaybeFinish();
}

// Buffer::TrimCache frees the cache one idle tick after it first looks: within ~2 s.
void Worker::OnTick() {
  Buffer::TrimCache(SteadyMicros() / 1000);
  if (measure_lag_) loop_lag_us_.store(ticks_.lateness_us(), std::memory_order_relaxed);
}

std::vector<Session*> Worker::SessionList() const {
  std::vector<Session*> list;
  list.reserve(sessions_.size());
  for (const auto& [s, owned] : sessions_) list.push_back(s);
  return list;
}

void Worker::OnConnection(size_t listener, const Status& status) {
  if (!status.ok()) {
    PG_LOG(kWarn, "{}", status.message());
    return;
  }
  std::shared_ptr<const Snapshot> snap = gateway_->snapshot();
  Session* session = NewSession();
  // The [limits] table, and an admission slot the connection holds for its lifetime.
  uvglue::ConnectionOptions options = ConnectionOptionsFor(snap->config.limits);
  auto admission_slot = std::make_shared<AdmissionSlot>();
  options.admission = admission_slot;
  Result<Connection*> c = Connection::Accept(loop_.native(), listeners_[listener]->native(),
                                             snap->tls, options, session, session->mux());
  if (!c) {
    // No connection was made; the session ends at once (the connection object still frees).
    gateway_->counters().connections_refused++;
    session->ExpectConnection();
    session->OnConnectionClosed(c.error());
    return;
  }
  gateway_->counters().connections_accepted++;
  session->set_connection(*c);
  if (!Admit(*c, snap->config.limits, admission_slot)) return;
  if (stopping_) session->Goaway();
}

bool Worker::Admit(Connection* c, const Limits& limits,
                   const std::shared_ptr<AdmissionSlot>& slot) {
  // Admission: max_connections, max_connections_per_source and max_bytes_in_flight. Checked
  // before any TLS work, so that a flood costs an accept() and a close() each.
  ConnectionLimiter::Admission admitted = gateway_->limiter().Admit(c->peer_address(), limits);
  if (admitted.outcome != ConnectionLimiter::Outcome::kAdmitted) {
    Counters& k = gateway_->counters();
    (admitted.outcome == ConnectionLimiter::Outcome::kTotal       ? k.refused_max_connections
     : admitted.outcome == ConnectionLimiter::Outcome::kPerSource ? k.refused_per_source
                                                                  : k.refused_memory)++;
    PG_CONN_LOG(kWarn, c->id(), "refused connection from {}: {}", c->peer_address(),
                admitted.reason);
    c->Abort(Status(Code::kLimit, admitted.reason));
    return false;
  }
  slot->token = std::move(admitted.token);
  return true;
}

bool Worker::Post(Handoff handoff) {
  const bool queued = async_.SendWith([&] {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    inbox_.push_back(std::move(handoff));
  });
  if (!queued) ::close(handoff.conn.fd);  // Not moved from: SendWith did not run the lambda.
  return queued;
}

void Worker::Adopt(Handoff handoff) {
  SessionRecord record;
  Session* target = nullptr;
  if (gateway_->sessions().Find(handoff.session_id, &record) && record.worker == this) {
    target = record.session;
  }
  // The configured limits and timeouts; the admission token comes with the connection.
  uvglue::ConnectionOptions options = ConnectionOptionsFor(gateway_->snapshot()->config.limits);
  if (target == nullptr) {
    // The session ended while the connection was on its way: say so on a fresh session.
    Session* fresh = NewSession();
    Connection* c =
        Connection::Adopt(loop_.native(), std::move(handoff.conn), options, fresh, fresh->mux());
    fresh->set_connection(c);
    fresh->RejectResume("unknown or expired session");
    return;
  }
  Connection* c =
      Connection::Adopt(loop_.native(), std::move(handoff.conn), options, target, target->mux());
  target->Attach(c, handoff.resume, handoff.peer);
  c->ProcessBuffered();  // Frames that came after the RESUME, for the resumed session.
}

void Worker::RevokeUnallowed() {
  std::shared_ptr<const Snapshot> snap = gateway_->snapshot();
  // Sessions are only deleted from a timer of their own (Session::MaybeDelete), never from
  // here, so the list stays valid.
  for (Session* s : SessionList()) s->RevokeUnallowed(*snap);
}

void Worker::OnAsync() {
  std::vector<Handoff> inbox;
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    inbox.swap(inbox_);
  }
  for (Handoff& h : inbox) Adopt(std::move(h));
  if (revoke_requested_.exchange(false) && !stopping_) RevokeUnallowed();
  if (stop_requested_.load() && !stopping_) Stop();
}

void Worker::Stop() {
  stopping_ = true;
  listeners_.clear();  // Closes them.
  ticks_.Stop();
  std::vector<Handoff> unadopted;
  // From now on Post() is refused: the resumes that came too late are refused here.
  async_.CloseWith([&] {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    unadopted.swap(inbox_);
  });
  for (Handoff& h : unadopted) ::close(h.conn.fd);
  grace_.Start(kDrainGraceMs);
  for (Session* s : SessionList()) s->Goaway();
  MaybeFinish();
}

void Worker::OnGrace() {
  PG_LOG(kWarn, "grace period over: closing {} connection(s)", sessions_.size());
  for (Session* s : SessionList()) s->CloseNow();
}

void Worker::MaybeFinish() {
  if (!stopping_ || !sessions_.empty() || grace_.closed()) return;
  grace_.Close();
}

}  // namespace pipegate::gateway
