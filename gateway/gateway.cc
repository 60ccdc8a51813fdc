#include "gateway.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>

#include <uv.h>

#include "pipegate/acl.h"
#include "pipegate/address.h"
#include "pipegate/local_path.h"
#include "pipegate/log.h"
#include "pipegate/resume.h"

#include "audit.h"
#include "connection_limits.h"
#include "privilege.h"
#include "uv/connection.h"
#include "uv/local_pipe.h"
#include "uv/stream_link.h"

namespace pipegate::gateway {

using uvglue::Connection;
using uvglue::ConnectionHandler;
using uvglue::LocalPipe;
using uvglue::LocalPipeEvents;

namespace {

constexpr uint64_t kRetryMs = 20;          // First retry of an open that waits (--wait)...
constexpr uint64_t kRetryMaxMs = 500;      // ...doubling up to this, so waiting costs little.
constexpr uint64_t kBudgetRetryMs = 50;    // Retry of a send stalled by a shared replay budget.
constexpr uint64_t kDrainGraceMs = 10000;  // SIGTERM: how long streams may finish.
constexpr int kFifoPipeSize = 1 << 20;     // F_SETPIPE_SZ on exported FIFOs, for throughput.

// Opens the local end of an export for one stream. kNoReader/kBusy may be retried.
// The last component of an export's path is never followed when it is a symlink
// (lstat + O_NOFOLLOW, and for sockets an O_PATH descriptor that connect() goes through), so
// whoever can write to the export's directory cannot point the gateway somewhere else.
Status SymlinkRefused(const ExportConfig& e) {
  return Status(Code::kNotFound,
                fmt::format("pipe '{}' is not available: {} is a symbolic link, which pipegate "
                            "does not follow",
                            e.name, e.path));
}

// @p rule: for a `create = true` FIFO, what the FIFO must satisfy (checked on the opened file,
// so a FIFO another user made or opened up is never served, whenever it appeared); else null.
Result<int> OpenExport(const ExportConfig& e, const AdoptRule* rule) {
  struct stat st {};
  if (::lstat(e.path.c_str(), &st) != 0) {
    return Status(Code::kNotFound, fmt::format("pipe '{}' is not available: {}: {}", e.name, e.path,
                                               ErrnoText(errno)));
  }
  if (S_ISLNK(st.st_mode)) return SymlinkRefused(e);
  if (e.kind == ExportKind::kFifo) {
    if (!S_ISFIFO(st.st_mode)) {
      return Status(Code::kNotFound,
                    fmt::format("pipe '{}' is not available: {} is not a FIFO", e.name, e.path));
    }
    int flags = (e.access == Access::kRead ? O_RDONLY : O_WRONLY) | O_NONBLOCK | O_CLOEXEC |
                O_NOFOLLOW | O_NOCTTY;
    int fd = ::open(e.path.c_str(), flags);
    if (fd < 0) {
      if (errno == ELOOP) return SymlinkRefused(e);
      if (errno == ENXIO) {
        return Status(Code::kNoReader,
                      fmt::format("no reader: nothing has '{}' open for reading", e.name));
      }
      return Status(Code::kIo, fmt::format("cannot open {}: {}", e.path, ErrnoText(errno)));
    }
    struct stat fst {};
    if (::fstat(fd, &fst) != 0 || !S_ISFIFO(fst.st_mode)) {
      ::close(fd);
      return Status(Code::kNotFound, fmt::format("{} is not a FIFO", e.path));
    }
    if (rule != nullptr) {
      if (Status ok = CheckAdoptable(e.path, fst, /*want_fifo=*/true, *rule); !ok.ok()) {
        ::close(fd);
        return Status(Code::kNotFound,
                      fmt::format("pipe '{}' is not available: {}", e.name, ok.message()));
      }
    }
    (void)fcntl(fd, F_SETPIPE_SZ, kFifoPipeSize);  // Best effort; the default 64 KiB works.
    return fd;
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Status(Code::kNotFound,
                  fmt::format("pipe '{}' is not available: {} is not a socket", e.name, e.path));
  }
  // Pin the socket file without following a symlink, then connect through /proc/self/fd so
  // that what is connected to is what was checked (no window to swap in a symlink).
  int path_fd = ::open(e.path.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (path_fd < 0) {
    if (errno == ELOOP) return SymlinkRefused(e);
    return Status(Code::kNotFound, fmt::format("pipe '{}' is not available: {}: {}", e.name, e.path,
                                               ErrnoText(errno)));
  }
  struct stat pst {};
  if (::fstat(path_fd, &pst) != 0 || S_ISLNK(pst.st_mode) || !S_ISSOCK(pst.st_mode)) {
    ::close(path_fd);
    return Status(Code::kNotFound,
                  fmt::format("pipe '{}' is not available: {} is not a socket", e.name, e.path));
  }
  std::string via = fmt::format("/proc/self/fd/{}", path_fd);
  if (::access("/proc/self/fd", X_OK) != 0) via = e.path;  // No /proc: the lstat check above.
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ::close(path_fd);
    return Status(Code::kIo, fmt::format("socket: {}", ErrnoText(errno)));
  }
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (via.size() >= sizeof sun.sun_path) {
    ::close(fd);
    ::close(path_fd);
    return Status(Code::kIo, fmt::format("socket path too long: {}", e.path));
  }
  std::memcpy(sun.sun_path, via.c_str(), via.size() + 1);
  int connected = ::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun);
  int connect_errno = errno;
  ::close(path_fd);
  errno = connect_errno;
  if (connected != 0 && errno != EINPROGRESS) {
    int err = errno;
    ::close(fd);
    if (err == EAGAIN) return Status(Code::kBusy, fmt::format("busy: {} backlog is full", e.path));
    if (err == ECONNREFUSED || err == ENOENT) {
      return Status(Code::kNoReader,
                    fmt::format("no reader: nothing is listening on '{}'", e.name));
    }
    return Status(Code::kIo, fmt::format("cannot connect to {}: {}", e.path, ErrnoText(err)));
  }
  return fd;
}

uint32_t EffectiveMaxClients(const ExportConfig& e) { return e.max_clients; }

// Who may own a `create = true` FIFO found in place: the gateway's effective user now, the user
// it runs as (after dropping privileges), and the export's owner. CheckAccounts has already
// resolved the names.
AdoptRule FifoRule(const GatewayConfig& config, const ExportConfig& e) {
  AdoptRule rule;
  rule.mode = static_cast<mode_t>(e.mode);
  rule.owners.push_back(::geteuid());
  for (const std::string& user : {config.user, e.owner}) {
    if (user.empty()) continue;
    Result<Account> account = ResolveAccount(user, "");
    if (account && account->uid) rule.owners.push_back(*account->uid);
  }
  return rule;
}

}  // namespace

class Session;

/// @brief One stream counted against its identity's and the gateway's stream caps; the count
/// is given back when this is destroyed. Move-only.
class StreamCharge {
 public:
  StreamCharge(std::shared_ptr<IdentityUsage> usage, Totals* totals)
      : usage_(std::move(usage)), totals_(totals) {}
  StreamCharge(StreamCharge&& other) noexcept
      : usage_(std::move(other.usage_)), totals_(std::exchange(other.totals_, nullptr)) {}
  StreamCharge& operator=(StreamCharge&&) = delete;
  StreamCharge(const StreamCharge&) = delete;
  ~StreamCharge() {
    if (usage_) usage_->streams.fetch_sub(1);
    if (totals_ != nullptr) totals_->streams.fetch_sub(1);
  }

 private:
  std::shared_ptr<IdentityUsage> usage_;
  Totals* totals_;
};

/// @brief The replay bytes of one session, counted against its identity's and the gateway's
/// caps (max_replay_bytes_per_identity, max_replay_bytes).
///
/// Thread: the session's worker calls it; the counters it shares are atomics.
class SessionReplayBudget final : public ReplayBudget {
 public:
  SessionReplayBudget(Totals* totals, const Limits& limits)
      : totals_(totals),
        identity_cap_(limits.max_replay_bytes_per_identity),
        total_cap_(limits.max_replay_bytes) {}
  /// @brief Charges the identity from now on (once TLS says who the client is).
  void Bind(std::shared_ptr<IdentityUsage> usage) { usage_ = std::move(usage); }
  uint64_t Available() const override {
    uint64_t total = totals_->replay_bytes.load(std::memory_order_relaxed);
    uint64_t room = total_cap_ > total ? total_cap_ - total : 0;
    if (usage_) {
      uint64_t mine = usage_->replay_bytes.load(std::memory_order_relaxed);
      room = std::min(room, identity_cap_ > mine ? identity_cap_ - mine : 0);
    }
    return room;
  }
  void Take(uint64_t n) override {
    totals_->replay_bytes.fetch_add(n, std::memory_order_relaxed);
    if (usage_) {
      usage_->replay_bytes.fetch_add(n, std::memory_order_relaxed);
      identity_taken_ += n;
    }
  }
  void Give(uint64_t n) override {
    totals_->replay_bytes.fetch_sub(n, std::memory_order_relaxed);
    uint64_t mine = std::min(n, identity_taken_);
    if (usage_ && mine > 0) usage_->replay_bytes.fetch_sub(mine, std::memory_order_relaxed);
    identity_taken_ -= mine;
  }

 private:
  Totals* totals_;
  std::shared_ptr<IdentityUsage> usage_;
  uint64_t identity_taken_ = 0;
  uint64_t identity_cap_;
  uint64_t total_cap_;
};

/// @brief One event loop on its own thread: listeners, connections, streams.
class Worker {
 public:
  Worker(Gateway* gateway, int index) : gateway_(gateway), index_(index) {}
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void Start(const std::vector<int>& listen_fds);
  void RequestStop() {
    stop_requested_.store(true);
    Wake();
  }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

  Gateway* gateway() { return gateway_; }
  uv_loop_t* loop() { return &loop_; }
  bool stopping() const { return stopping_; }
  void Forget(Session* s);

  /// @brief A verified RESUME whose session lives on this worker, with its connection.
  struct Handoff {
    std::string session_id;
    Connection::Released conn;
    ResumePayload resume;
    Mux::PeerSettings peer;
  };
  /// @brief Hands a connection to this worker (thread-safe).
  /// @return False if the worker is stopping: then the connection is closed here.
  bool Post(Handoff handoff) {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    if (async_closed_) {
      ::close(handoff.conn.fd);
      return false;
    }
    inbox_.push_back(std::move(handoff));
    uv_async_send(&async_);
    return true;
  }
  void Adopt(Handoff handoff);
  /// @brief Asks (reload_revokes) the worker to end what the newest snapshot no longer
  /// allows (thread-safe; done on the worker's loop).
  void RequestRevoke() {
    revoke_requested_.store(true);
    Wake();
  }

 private:
  void RevokeUnallowed();  // On the loop thread, after RequestRevoke().
  static void OnConnection(uv_stream_t* server, int status) noexcept;
  static void OnAsync(uv_async_t* handle) noexcept;
  static void OnGrace(uv_timer_t* handle) noexcept;
  static void OnHandleClosed(uv_handle_t* handle) noexcept;
  void Stop();
  void MaybeFinish();

  Gateway* gateway_;
  int index_;
  uv_loop_t loop_{};
  uv_async_t async_{};
  uv_timer_t grace_{};
  std::vector<std::unique_ptr<uv_tcp_t>> listeners_;
  std::thread thread_;
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> revoke_requested_{false};
  bool stopping_ = false;
  bool grace_closed_ = false;
  std::unordered_map<Session*, bool> sessions_;
  std::mutex inbox_mu_;
  std::vector<Handoff> inbox_;  ///< Guarded by inbox_mu_.
  bool async_closed_ = false;   ///< Guarded by inbox_mu_: async_ may no longer be sent to.

  /// @brief Wakes the loop (thread-safe), unless it is stopping and async_ is closed.
  void Wake() {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    if (!async_closed_) uv_async_send(&async_);
  }
};

/// @brief One local end of one stream on an export: a StreamLink that also holds an instance
/// of the export (released when the stream ends) and counts its bytes.
class ExportStream final : public uvglue::StreamLink {
 public:
  ExportStream(Session* session, uint32_t id, const ExportConfig& e,
               std::shared_ptr<ExportSlot> slot, StreamCharge charge);
  ~ExportStream() override;

 private:
  Session* session_;
  std::shared_ptr<ExportSlot> slot_;
  StreamCharge charge_;
};

/// @brief A stream whose open waits for a free instance or a local reader (--wait).
struct PendingOpen {
  uint32_t id = 0;
  OpenPayload open;
  uint64_t deadline_ms = 0;
  uint64_t next_try_ms = 0;
  uint64_t interval_ms = kRetryMs;  ///< Doubles after each failed try, up to kRetryMaxMs.
};

/// @brief A client's session: access control, the stream table and the multiplexer. It
/// outlives its connection: when the connection is lost it detaches and keeps its streams for
/// the resume lifetime, and a RESUME on a new connection attaches it again (SPEC §8).
///
/// Ownership: created per accepted connection; deletes itself (in its timers' close callback)
/// once it is finished and no connection refers to it. Thread: its worker's loop.
class Session final : public ConnectionHandler, public uvglue::StreamLinkOwner {
 public:
  explicit Session(Worker* worker);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void set_connection(Connection* c) {
    conn_ = c;
    conn_id_ = c->id();
    peer_address_ = c->peer_address();
    ++live_conns_;
  }
  Mux* mux() { return mux_.get(); }
  /// @brief A connection that failed before set_connection() will still be freed.
  void ExpectConnection() { ++live_conns_; }
  Counters& counters() { return worker_->gateway()->counters(); }
  void Goaway() {
    draining_ = true;
    if (conn_ == nullptr) {
      if (detached_) Finish("gateway is shutting down");
      return;
    }
    mux_->Goaway(ErrorCode::kShutdown, "gateway is shutting down");
    conn_->Flush();
    MaybeFinishDrain();
  }
  void CloseNow() {
    draining_ = true;
    if (conn_ != nullptr) {
      conn_->Close(Status(Code::kStreamLost, "gateway is shutting down"));
    } else {
      Finish("gateway is shutting down");
    }
  }
  /// @brief Attaches a new connection to this (detached or stale) session after a verified
  /// RESUME.
  void Attach(Connection* conn, const ResumePayload& resume, const Mux::PeerSettings& peer);
  /// @brief Answers a RESUME that cannot be honoured, and closes.
  void RejectResume(const std::string& why);
  /// @brief Ends (reload_revokes) every stream whose export is gone or no longer
  /// allows this identity ("access denied"), and the whole session if the new CA bundle or CRL
  /// refuses its certificate.
  void RevokeUnallowed(const Snapshot& snap);

  // StreamLinkOwner.
  Mux* stream_mux() override { return finished_ ? nullptr : mux_.get(); }
  void FlushSoon() override {
    if (conn_ != nullptr) conn_->Flush();
    // A stream stalled by the identity's or the gateway's replay budget hears of no event when
    // another session gives budget back: look again shortly.
    if (mux_->TakeBudgetStall() && !finished_ &&
        !uv_is_active(reinterpret_cast<uv_handle_t*>(&budget_timer_))) {
      uv_timer_start(&budget_timer_, &Session::OnBudgetRetry, kBudgetRetryMs, 0);
    }
  }
  bool Backlogged() override { return conn_ == nullptr || conn_->backlogged(); }
  void PauseForBackpressure(uvglue::StreamLink* link) override {
    paused_.push_back(static_cast<ExportStream*>(link));
    if (conn_ != nullptr) conn_->WantWritable();
  }

  // ConnectionHandler.
  void OnTlsEstablished(const PeerIdentity& peer) override {
    peer_ = peer;
    usage_ = worker_->gateway()->identities().For(peer_.Name());
    budget_.Bind(usage_);
    PG_CONN_LOG(kInfo, conn_id_, "client '{}' connected from {}", peer_.Display(), peer_address_);
  }
  void OnInputYielded() override;
  void OnConnectionWritable() override {
    std::vector<ExportStream*> paused;
    paused.swap(paused_);
    for (ExportStream* s : paused) {
      if (IsLive(s)) s->Resume();
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
  void OnOpenAccepted(uint32_t, const OpenOkPayload&) override {}
  void OnStreamData(uint32_t id, const uint8_t* data, size_t len) override {
    if (ExportStream* s = Find(id)) s->OnData(data, len);
  }
  void OnStreamFin(uint32_t id) override {
    if (ExportStream* s = Find(id)) s->OnFin();
  }
  void OnStreamReset(uint32_t id, ErrorCode error, std::string_view reason) override {
    PG_DEBUG(kMux, "[S{}] reset by client: {} {}", id, ErrorCodeName(error),
             SanitizeForLog(reason));
  }
  void OnStreamStopped(uint32_t id, ErrorCode, std::string_view) override {
    if (ExportStream* s = Find(id)) s->StopLocalReading();
  }
  void OnStreamWritable(uint32_t id) override {
    if (ExportStream* s = Find(id)) s->Resume();
  }
  void OnStreamDelivered(uint32_t) override {}
  void OnStreamClosed(uint32_t id) override {
    auto it = streams_.find(id);
    if (it != streams_.end()) {
      ExportStream* s = it->second;
      streams_.erase(it);
      std::erase(paused_, s);
      delete s;
    }
    std::erase_if(pending_, [&](const PendingOpen& p) { return p.id == id; });
    MaybeFinishDrain();
  }
  void OnListRequest() override;
  void OnListReply(const std::vector<ListEntry>&, bool) override {}
  void OnGoaway(const GoawayPayload&) override {}
  void OnResumeRequest(const ResumePayload& resume) override;

  bool IsLive(ExportStream* s) const {
    for (auto& [id, p] : streams_) {
      if (p == s) return true;
    }
    return false;
  }
  ExportStream* Find(uint32_t id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second;
  }

 private:
  // Tries to open; returns true if the request is finished (accepted or rejected).
  bool TryOpen(uint32_t id, const OpenPayload& open, bool last_try);
  void MaybeFinishDrain() {
    if (draining_ && conn_ != nullptr && streams_.empty() && pending_.empty()) {
      conn_->Close(Status(Code::kOk, "gateway is shutting down"));
    }
  }
  /// @brief The session stops waiting for a resume (resumed or finished): uncounts it.
  void EndDetached() {
    if (detached_) worker_->gateway()->SessionReattached(usage_.get());
    detached_ = false;
  }
  /// @brief Ends the session: every stream, its registration, and (soon) the object.
  void Finish(const std::string& why);
  void DropStreams();
  void MaybeDelete();
  static void OnRetry(uv_timer_t* handle) noexcept;
  static void OnTtl(uv_timer_t* handle) noexcept;
  static void OnBudgetRetry(uv_timer_t* handle) noexcept;
  /// @brief Arms the retry timer for the earliest pending open.
  void ScheduleRetry();
  static void OnTimerClosed(uv_handle_t* handle) noexcept {
    auto* self = static_cast<Session*>(handle->data);
    if (--self->open_timers_ > 0) return;
    self->worker_->Forget(self);
    delete self;  // The only delete of a Session.
  }

  Worker* worker_;
  SessionReplayBudget budget_;  ///< Declared before mux_, which uses it until destroyed.
  std::unique_ptr<Mux> mux_;
  std::shared_ptr<IdentityUsage> usage_;  ///< Set once TLS names the client.
  Connection* conn_ = nullptr;
  int live_conns_ = 0;  ///< Connections whose handler is this session.
  PeerIdentity peer_;
  bool ready_ = false;
  bool registered_ = false;
  bool detached_ = false;
  bool finished_ = false;
  bool draining_ = false;
  bool deleting_ = false;
  bool replacing_ = false;
  int open_timers_ = 3;
  std::string session_id_;
  uint64_t conn_id_ = 0;      ///< Of the connection attached last, for logs.
  std::string peer_address_;  ///< Of the connection attached last, for logs.
  uv_timer_t retry_{};
  uv_timer_t ttl_{};
  uv_timer_t budget_timer_{};
  /// A RESUME whose proof checked out, carried out once the Mux has stopped feeding
  /// (OnInputYielded), so that bytes after it reach the resumed session.
  struct ResumeDecision {
    std::string session_id;
    SessionRecord record;
    ResumePayload resume;
  };
  std::optional<ResumeDecision> resume_;
  std::unordered_map<uint32_t, ExportStream*> streams_;
  std::vector<ExportStream*> paused_;
  std::vector<PendingOpen> pending_;

  friend class ExportStream;
};

// ---- ExportStream ----

ExportStream::ExportStream(Session* session, uint32_t id, const ExportConfig& e,
                           std::shared_ptr<ExportSlot> slot, StreamCharge charge)
    : StreamLink(session, id, e.name),
      session_(session),
      slot_(std::move(slot)),
      charge_(std::move(charge)) {}

ExportStream::~ExportStream() {
  Counters& k = session_->counters();
  k.bytes_to_clients += bytes_sent();
  k.bytes_from_clients += bytes_received();
  if (local_error().code() == Code::kBrokenPipe) k.broken_pipe++;
  slot_->in_use.fetch_sub(1);
}

// ---- Session ----

void Session::OnOpenRequest(uint32_t id, const OpenPayload& request) {
  std::shared_ptr<const Snapshot> snap = worker_->gateway()->snapshot();
  const Limits& limits = snap->config.limits;
  OpenPayload open = request;
  open.wait_ms = static_cast<uint32_t>(std::min<uint64_t>(open.wait_ms, limits.max_open_wait_ms));
  // Past the cap an open is answered at once, as if it had not asked to wait.
  const bool may_wait =
      open.wait_ms > 0 && pending_.size() < limits.max_pending_opens_per_connection;
  if (open.wait_ms > 0 && !may_wait) counters().refused_pending_opens++;
  if (TryOpen(id, open, !may_wait)) {
    FlushSoon();
    return;
  }
  const uint64_t now = uv_now(worker_->loop());
  pending_.push_back(PendingOpen{id, open, now + open.wait_ms, now + kRetryMs, kRetryMs});
  ScheduleRetry();
}

void Session::ScheduleRetry() {
  if (pending_.empty() || finished_) {
    uv_timer_stop(&retry_);
    return;
  }
  uint64_t next = UINT64_MAX;
  for (const PendingOpen& p : pending_) next = std::min({next, p.next_try_ms, p.deadline_ms});
  const uint64_t now = uv_now(worker_->loop());
  uv_timer_start(&retry_, &Session::OnRetry, next > now ? next - now : 0, 0);
}

void Session::OnRetry(uv_timer_t* handle) noexcept {
  auto* self = static_cast<Session*>(handle->data);
  if (self->finished_) return;
  uint64_t now = uv_now(self->worker_->loop());
  std::vector<PendingOpen> waiting;
  waiting.swap(self->pending_);
  for (PendingOpen& p : waiting) {
    if (!self->mux_->HasStream(p.id)) continue;  // The client gave up.
    const bool last_try = now >= p.deadline_ms;
    if (now < p.next_try_ms && !last_try) {
      self->pending_.push_back(p);
      continue;
    }
    if (self->TryOpen(p.id, p.open, last_try)) continue;
    p.interval_ms = std::min(p.interval_ms * 2, kRetryMaxMs);
    p.next_try_ms = now + p.interval_ms;
    self->pending_.push_back(p);
  }
  self->ScheduleRetry();
  self->FlushSoon();
}

void Session::OnBudgetRetry(uv_timer_t* handle) noexcept {
  auto* self = static_cast<Session*>(handle->data);
  if (self->finished_) return;
  self->mux_->WakeWritable();
  self->FlushSoon();
}

bool Session::TryOpen(uint32_t id, const OpenPayload& open, bool last_try) {
  Mux& mux = *mux_;
  std::shared_ptr<const Snapshot> snap = worker_->gateway()->snapshot();
  std::string who = peer_.Display();
  auto reject = [&](ErrorCode code, const std::string& reason) {
    mux.Reject(id, code, reason);
    return true;
  };
  // Every decision below leaves one audit line (identity, export, address, verdict).
  const Limits& limits = snap->config.limits;
  auto audit = [&](Verdict verdict, std::string_view detail, bool hidden = false) {
    Audit(AuditEvent{verdict, &peer_, open.name, AccessName(static_cast<Access>(open.access)),
                     peer_address_, conn_id_, id, detail, hidden});
  };
  Status valid = ValidatePipeName(open.name);
  if (valid.ok() && open.name.size() > limits.max_name_length) {
    valid = Status(Code::kNotFound, fmt::format("pipe names are at most {} characters here",
                                                limits.max_name_length));
  }
  if (!valid.ok()) {
    counters().invalid_names++;
    audit(Verdict::kInvalidName, valid.message());
    return reject(ErrorCode::kNotFound, valid.message());
  }
  const std::string no_such_pipe = fmt::format("no such pipe '{}'", open.name);
  const ExportConfig* e = snap->config.Find(open.name);
  if (e == nullptr) {
    counters().not_found++;
    audit(Verdict::kNoSuchPipe, "");
    return reject(ErrorCode::kNotFound, no_such_pipe);
  }
  if (!IsAllowed(e->allow, peer_)) {
    counters().acl_denied++;
    // hide_existence: the answer is the one an unknown name gets, word for word.
    const bool hide = snap->config.hide_existence;
    audit(Verdict::kAccessDenied, "not on the allow list", hide);
    if (hide) return reject(ErrorCode::kNotFound, no_such_pipe);
    return reject(ErrorCode::kAccessDenied, fmt::format("access denied for '{}'", who));
  }
  // A fifo export serves one direction; "duplex" (connect, mount) is granted that direction.
  auto want = static_cast<Access>(open.access);
  if (e->kind == ExportKind::kFifo && want != e->access && want != Access::kDuplex) {
    counters().wrong_access++;
    const std::string why = fmt::format("access denied: '{}' is {}-only", e->name,
                                        e->access == Access::kRead ? "read" : "write");
    audit(Verdict::kWrongAccess, why);
    return reject(ErrorCode::kAccessDenied, why);
  }
  // The identity's and the gateway's stream caps: each stream holds a descriptor, and a
  // detached session keeps its streams for the resume lifetime.
  Totals& totals = worker_->gateway()->totals();
  if (usage_ && usage_->streams.fetch_add(1) >= limits.max_streams_per_identity) {
    usage_->streams.fetch_sub(1);
    counters().refused_streams_identity++;
    const std::string why = fmt::format("too many streams for '{}' (limit {} per identity)", who,
                                        limits.max_streams_per_identity);
    audit(Verdict::kBusy, why);
    return reject(ErrorCode::kLimit, why);
  }
  if (totals.streams.fetch_add(1) >= limits.max_streams) {
    totals.streams.fetch_sub(1);
    if (usage_) usage_->streams.fetch_sub(1);
    counters().refused_streams_total++;
    const std::string why =
        fmt::format("too many streams on this gateway (limit {})", limits.max_streams);
    audit(Verdict::kBusy, why);
    return reject(ErrorCode::kLimit, why);
  }
  StreamCharge charge(usage_, &totals);
  std::shared_ptr<ExportSlot> slot = snap->slots.at(e->name);
  uint32_t max = EffectiveMaxClients(*e);
  uint32_t before = slot->in_use.fetch_add(1);
  if (max != 0 && before >= max) {
    slot->in_use.fetch_sub(1);
    if (!last_try) return false;
    counters().busy++;
    const std::string why = fmt::format("busy: all {} instance{} of '{}' are in use", max,
                                        max == 1 ? "" : "s", e->name);
    audit(Verdict::kBusy, why);
    return reject(ErrorCode::kBusy, why);
  }
  auto rule = snap->fifo_rules.find(e->name);
  Result<int> fd = OpenExport(*e, rule == snap->fifo_rules.end() ? nullptr : &rule->second);
  if (!fd) {
    slot->in_use.fetch_sub(1);
    Code code = fd.error().code();
    if ((code == Code::kNoReader || code == Code::kBusy) && !last_try) return false;
    if (code == Code::kNoReader) counters().no_reader++;
    if (code == Code::kNotFound) counters().not_found++;
    if (code != Code::kNoReader && code != Code::kBusy) counters().unavailable++;
    audit(code == Code::kNoReader ? Verdict::kNoReader
          : code == Code::kBusy   ? Verdict::kBusy
                                  : Verdict::kUnavailable,
          fd.error().message());
    return reject(ErrorForCode(code), fd.error().message());
  }
  unsigned dirs = e->kind == ExportKind::kUnix ? (LocalPipe::kRead | LocalPipe::kWrite)
                  : e->access == Access::kRead ? LocalPipe::kRead
                                               : LocalPipe::kWrite;
  // The stream owns the instance (its destructor releases the slot) and the local pipe.
  auto* stream = new ExportStream(this, id, *e, std::move(slot), std::move(charge));
  Result<LocalPipe*> pipe = LocalPipe::Open(worker_->loop(), *fd, dirs, true, stream);
  if (!pipe) {
    delete stream;
    audit(Verdict::kUnavailable, pipe.error().message());
    return reject(ErrorCode::kInternal, pipe.error().message());
  }
  stream->Attach((dirs & LocalPipe::kRead) != 0 ? *pipe : nullptr,
                 (dirs & LocalPipe::kWrite) != 0 ? *pipe : nullptr);
  streams_[id] = stream;
  counters().streams_opened++;
  audit(Verdict::kGranted, "");
  if (e->kind == ExportKind::kFifo && e->access == Access::kWrite) {
    (*pipe)->set_record_mode((open.flags & kOpenFlagLines) != 0 ? uvglue::RecordMode::kLines
                                                                : uvglue::RecordMode::kBlocks);
    (*pipe)->WatchHangup(true);  // A reader that leaves while we are idle is a broken pipe.
  }
  uint8_t granted =
      static_cast<uint8_t>(e->kind == ExportKind::kFifo ? e->access : Access::kDuplex);
  mux.Accept(id, OpenOkPayload{static_cast<uint8_t>(e->kind), granted});
  stream->StartReading();
  return true;
}

void Session::OnListRequest() {
  std::shared_ptr<const Snapshot> snap = worker_->gateway()->snapshot();
  std::vector<ListEntry> entries;
  for (const ExportConfig& e : snap->config.exports) {
    if (!IsAllowed(e.allow, peer_)) continue;  // ls never shows what this identity can't use.
    entries.push_back(
        ListEntry{e.name, static_cast<uint8_t>(e.kind), static_cast<uint8_t>(e.access)});
  }
  PG_LOG(kInfo, "audit: decision=listed identity=\"{}\" from={} conn=C{} shown={} of={}",
         peer_.Display(), peer_address_, conn_id_, entries.size(), snap->config.exports.size());
  mux_->SendListReply(entries);
  FlushSoon();
}

// ---- reload_revokes ----

void Session::RevokeUnallowed(const Snapshot& snap) {
  if (finished_) return;
  // A client whose certificate the new CA bundle or CRL refuses loses the whole session, as it
  // could not connect again. (A peer without a recorded chain is left alone.)
  if (snap.tls && !peer_.chain_der.empty()) {
    if (Status cert = snap.tls->VerifyPeerAgain(peer_); !cert.ok()) {
      std::string reason = cert.message();
      if (reason.rfind("TLS failed: ", 0) == 0) reason.erase(0, 12);
      const std::string why = fmt::format("access denied for '{}': {}", peer_.Display(), reason);
      counters().connections_revoked++;
      for (auto& [id, s] : streams_) {
        counters().streams_revoked++;
        Audit(AuditEvent{Verdict::kRevoked, &peer_, s->name(), "", peer_address_, conn_id_, id,
                         reason, false});
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
      return;
    }
  }
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
    auto it = streams_.find(id);
    if (it == streams_.end()) continue;
    counters().streams_revoked++;
    Audit(AuditEvent{Verdict::kRevoked, &peer_, it->second->name(), "", peer_address_, conn_id_, id,
                     "removed from the allow list by a reload", false});
    mux_->Abort(id, ErrorCode::kAccessDenied, why);  // May delete the stream (OnStreamClosed).
  }
  if (!victims.empty()) FlushSoon();
}

void Worker::RevokeUnallowed() {
  std::shared_ptr<const Snapshot> snap = gateway_->snapshot();
  std::vector<Session*> sessions;
  for (auto& [s, unused] : sessions_) sessions.push_back(s);
  // Sessions only delete themselves from their timers' close callbacks, so the list stays valid.
  for (Session* s : sessions) s->RevokeUnallowed(*snap);
}

// ---- Session: life cycle and resumption ----

Session::Session(Worker* worker)
    : worker_(worker),
      budget_(&worker->gateway()->totals(), worker->gateway()->snapshot()->config.limits) {
  // Streams, windows, frame size and replay caps from the [limits] table.
  MuxOptions options = MuxOptionsFor(worker_->gateway()->snapshot()->config.limits);
  options.is_client = false;
  options.resumable = true;
  options.replay_budget = &budget_;
  mux_ = std::make_unique<Mux>(options, this);
  uv_timer_init(worker_->loop(), &retry_);
  uv_timer_init(worker_->loop(), &ttl_);
  uv_timer_init(worker_->loop(), &budget_timer_);
  retry_.data = ttl_.data = budget_timer_.data = this;
}

void Session::OnMuxReady() {
  ready_ = true;
  if (registered_ || conn_ == nullptr) return;
  // Name the session so that the client can resume it over a new connection.
  SessionPayload sp;
  session_id_ = NewSessionId();
  std::memcpy(sp.session_id, session_id_.data(), kSessionIdSize);
  sp.ttl_ms = worker_->gateway()->resume_ttl_ms();
  SessionRecord record{worker_, this, DeriveResumeKey(conn_->tls(), sp.session_id),
                       conn_->tls().peer_spki_sha256(), peer_.All()};
  if (record.key.empty()) return;
  worker_->gateway()->RegisterSession(session_id_, record);
  registered_ = true;
  mux_->SendSession(sp);
  FlushSoon();
}

void Session::OnConnectionClosed(const Status& why) {
  if (replacing_) return;  // A stale connection being dropped for a resumed one.
  if (ready_) {
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
  bool keep = lost && registered_ && !draining_ && !finished_;
  if (keep && !worker_->gateway()->TryDetachSession(usage_.get())) {
    keep = false;
    counters().sessions_not_kept++;
    PG_CONN_LOG(kInfo, conn_id_, "session of '{}' not kept for a resume: too many detached",
                peer_.Display());
  }
  if (keep) {
    // Keep the streams: their local ends just see back-pressure until the client resumes.
    detached_ = true;
    mux_->Detach();
    counters().sessions_detached++;
    uint32_t ttl = worker_->gateway()->resume_ttl_ms();
    PG_CONN_LOG(kInfo, conn_id_, "session of '{}' detached: keeping {} stream(s) for {} s",
                peer_.Display(), streams_.size(), ttl / 1000);
    uv_timer_start(&ttl_, &Session::OnTtl, ttl, 0);
    return;
  }
  Finish(why.message());
}

void Session::OnTtl(uv_timer_t* handle) noexcept {
  auto* self = static_cast<Session*>(handle->data);
  if (!self->detached_) return;
  self->counters().sessions_expired++;
  PG_CONN_LOG(kInfo, self->conn_id_, "session of '{}' expired after detaching; ending {} stream(s)",
              self->peer_.Display(), self->streams_.size());
  self->Finish("the session expired");
}

void Session::DropStreams() {
  for (auto& [id, s] : streams_) delete s;
  streams_.clear();
  paused_.clear();
  pending_.clear();
}

void Session::Finish(const std::string& why) {
  if (finished_) return;
  finished_ = true;
  EndDetached();
  (void)why;
  DropStreams();
  if (registered_) worker_->gateway()->UnregisterSession(session_id_, this);
  registered_ = false;
  if (conn_ != nullptr) conn_->Close(Status(Code::kStreamLost, why));
  MaybeDelete();
}

void Session::MaybeDelete() {
  if (!finished_ || live_conns_ > 0 || deleting_) return;
  deleting_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&retry_), &Session::OnTimerClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&ttl_), &Session::OnTimerClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&budget_timer_), &Session::OnTimerClosed);
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
  Gateway* gw = worker_->gateway();
  if (!gw->FindSession(id, &record)) {
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
  Gateway* gw = worker_->gateway();
  const SessionRecord& record = decision.record;
  // This connection's own fresh session is not needed any more.
  if (registered_) gw->UnregisterSession(session_id_, this);
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
  finished_ = true;
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
  if (!detached_) mux_->Detach();  // A stale attachment: the same reset of connection state.
  conn->Rebind(this, mux_.get());
  set_connection(conn);
  uv_timer_stop(&ttl_);
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
  worker_->gateway()->UpdateSessionKey(session_id_, DeriveResumeKey(conn->tls(), sid));
  counters().sessions_resumed++;
  PG_CONN_LOG(kInfo, conn_id_, "session of '{}' resumed from {} with {} stream(s)", peer_.Display(),
              peer_address_, streams_.size());
  OnConnectionWritable();
  FlushSoon();
}

void Worker::Adopt(Handoff handoff) {
  SessionRecord record;
  Session* target = nullptr;
  if (gateway_->FindSession(handoff.session_id, &record) && record.worker == this) {
    target = record.session;
  }
  // The configured limits and timeouts; the admission token comes with the connection.
  uvglue::ConnectionOptions options = ConnectionOptionsFor(gateway_->snapshot()->config.limits);
  if (target == nullptr) {
    // The session ended while the connection was on its way: say so on a fresh session.
    auto* fresh = new Session(this);
    sessions_[fresh] = true;
    Connection* c =
        Connection::Adopt(&loop_, std::move(handoff.conn), options, fresh, fresh->mux());
    fresh->set_connection(c);
    fresh->RejectResume("unknown or expired session");
    return;
  }
  Connection* c =
      Connection::Adopt(&loop_, std::move(handoff.conn), options, target, target->mux());
  target->Attach(c, handoff.resume, handoff.peer);
  c->ProcessBuffered();  // Frames that came after the RESUME, for the resumed session.
}

// ---- Gateway: session registry ----

void Gateway::RegisterSession(const std::string& id, const SessionRecord& record) {
  std::lock_guard<std::mutex> lock(mu_);
  sessions_[id] = record;
}

bool Gateway::FindSession(const std::string& id, SessionRecord* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return false;
  *out = it->second;
  return true;
}

void Gateway::UpdateSessionKey(const std::string& id, const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(id);
  if (it != sessions_.end()) it->second.key = key;
}

bool Gateway::TryDetachSession(IdentityUsage* usage) {
  const Limits& limits = snapshot()->config.limits;
  if (usage != nullptr &&
      usage->detached_sessions.fetch_add(1) >= limits.max_detached_sessions_per_identity) {
    usage->detached_sessions.fetch_sub(1);
    return false;
  }
  uint32_t n = detached_sessions_.load();
  do {
    if (n >= limits.max_connections) {
      if (usage != nullptr) usage->detached_sessions.fetch_sub(1);
      return false;
    }
  } while (!detached_sessions_.compare_exchange_weak(n, n + 1));
  return true;
}

std::shared_ptr<IdentityUsage> IdentityLedger::For(const std::string& identity) {
  std::lock_guard<std::mutex> lock(mu_);
  // Sweep entries of identities that have gone, so that many one-off identities cost nothing.
  if (++lookups_ % 256 == 0) {
    std::erase_if(by_identity_, [](const auto& entry) { return entry.second.expired(); });
  }
  std::weak_ptr<IdentityUsage>& slot = by_identity_[identity];
  std::shared_ptr<IdentityUsage> usage = slot.lock();
  if (!usage) {
    usage = std::make_shared<IdentityUsage>();
    slot = usage;
  }
  return usage;
}

size_t IdentityLedger::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const auto& entry : by_identity_) n += entry.second.expired() ? 0 : 1;
  return n;
}

void Gateway::UnregisterSession(const std::string& id, const Session* session) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(id);
  if (it != sessions_.end() && it->second.session == session) sessions_.erase(it);
}

// ---- Worker ----

void Worker::Start(const std::vector<int>& listen_fds) {
  PG_CHECK(uv_loop_init(&loop_) == 0);
  uv_async_init(&loop_, &async_, &Worker::OnAsync);
  async_.data = this;
  uv_timer_init(&loop_, &grace_);
  grace_.data = this;
  for (int fd : listen_fds) {
    auto tcp = std::make_unique<uv_tcp_t>();
    uv_tcp_init(&loop_, tcp.get());
    tcp->data = this;
    int dup_fd = ::dup(fd);
    int rc = uv_tcp_open(tcp.get(), dup_fd);
    if (rc == 0)
      rc = uv_listen(reinterpret_cast<uv_stream_t*>(tcp.get()), 511, &Worker::OnConnection);
    if (rc != 0) PG_LOG(kError, "worker {}: cannot listen: {}", index_, uv_strerror(rc));
    listeners_.push_back(std::move(tcp));
  }
  thread_ = std::thread([this] {
    uv_run(&loop_, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&loop_);
    if (rc != 0) {
      PG_LOG(kError, "worker {}: handles left open at exit", index_);
      uv_print_all_handles(&loop_, stderr);
    }
  });
}

void Worker::OnConnection(uv_stream_t* server, int status) noexcept {
  auto* self = static_cast<Worker*>(server->data);
  if (status != 0) {
    PG_LOG(kWarn, "accept failed: {}", uv_strerror(status));
    return;
  }
  std::shared_ptr<const Snapshot> snap = self->gateway_->snapshot();
  auto* session = new Session(self);
  // The [limits] table, and an admission slot the connection holds for its lifetime.
  uvglue::ConnectionOptions options = ConnectionOptionsFor(snap->config.limits);
  auto admission_slot = std::make_shared<AdmissionSlot>();
  options.admission = admission_slot;
  Result<Connection*> c =
      Connection::Accept(&self->loop_, server, snap->tls, options, session, session->mux());
  self->sessions_[session] = true;
  if (!c) {
    // No connection was made; the session ends at once (the connection object still frees).
    self->gateway_->counters().connections_refused++;
    session->ExpectConnection();
    session->OnConnectionClosed(c.error());
    return;
  }
  self->gateway_->counters().connections_accepted++;
  session->set_connection(*c);
  // Admission: max_connections, max_connections_per_source and max_bytes_in_flight. Checked
  // before any TLS work, so that a flood costs an accept() and a close() each.
  ConnectionLimiter::Admission admitted =
      self->gateway_->limiter().Admit((*c)->peer_address(), snap->config.limits);
  if (admitted.outcome != ConnectionLimiter::Outcome::kAdmitted) {
    Counters& k = self->gateway_->counters();
    (admitted.outcome == ConnectionLimiter::Outcome::kTotal       ? k.refused_max_connections
     : admitted.outcome == ConnectionLimiter::Outcome::kPerSource ? k.refused_per_source
                                                                  : k.refused_memory)++;
    PG_CONN_LOG(kWarn, (*c)->id(), "refused connection from {}: {}", (*c)->peer_address(),
                admitted.reason);
    (*c)->Abort(Status(Code::kLimit, admitted.reason));
    return;
  }
  admission_slot->token = std::move(admitted.token);
  if (self->stopping_) session->Goaway();
}

void Worker::Forget(Session* s) {
  sessions_.erase(s);
  MaybeFinish();
}

void Worker::OnAsync(uv_async_t* handle) noexcept {
  auto* self = static_cast<Worker*>(handle->data);
  std::vector<Handoff> inbox;
  {
    std::lock_guard<std::mutex> lock(self->inbox_mu_);
    inbox.swap(self->inbox_);
  }
  for (Handoff& h : inbox) self->Adopt(std::move(h));
  if (self->revoke_requested_.exchange(false) && !self->stopping_) self->RevokeUnallowed();
  if (self->stop_requested_.load() && !self->stopping_) self->Stop();
}

void Worker::Stop() {
  stopping_ = true;
  for (auto& l : listeners_) {
    uv_close(reinterpret_cast<uv_handle_t*>(l.get()), nullptr);
  }
  std::vector<Handoff> unadopted;
  {
    // From now on no thread sends to async_, which is about to close.
    std::lock_guard<std::mutex> lock(inbox_mu_);
    async_closed_ = true;
    unadopted.swap(inbox_);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
  for (Handoff& h : unadopted) ::close(h.conn.fd);  // Resumes that came too late: refused.
  uv_timer_start(&grace_, &Worker::OnGrace, kDrainGraceMs, 0);
  std::vector<Session*> sessions;
  for (auto& [s, unused] : sessions_) sessions.push_back(s);
  for (Session* s : sessions) s->Goaway();
  MaybeFinish();
}

void Worker::OnGrace(uv_timer_t* handle) noexcept {
  auto* self = static_cast<Worker*>(handle->data);
  PG_LOG(kWarn, "grace period over: closing {} connection(s)", self->sessions_.size());
  std::vector<Session*> sessions;
  for (auto& [s, unused] : self->sessions_) sessions.push_back(s);
  for (Session* s : sessions) s->CloseNow();
}

void Worker::MaybeFinish() {
  if (!stopping_ || !sessions_.empty() || grace_closed_) return;
  grace_closed_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&grace_), nullptr);
}

// ---- Gateway ----

Gateway::Gateway(std::string config_path) : config_path_(std::move(config_path)) {}

Gateway::~Gateway() {
  for (int fd : listen_fds_) ::close(fd);
}

std::shared_ptr<const Snapshot> Gateway::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return snapshot_;
}

Status Gateway::CheckConfig(const GatewayConfig& config) {
  if (Status accounts = CheckAccounts(config); !accounts.ok()) return accounts;
  TlsServerOptions tls_options;
  tls_options.cert = config.cert;
  tls_options.key = config.key;
  tls_options.client_ca = config.client_ca;
  tls_options.crl = config.crl;
  tls_options.allow_tls12 = config.tls_min_version == TlsMinVersion::kTls12;
  Result<std::shared_ptr<const TlsContext>> tls = TlsContext::NewServer(tls_options);
  return tls ? Status::Ok() : tls.error();
}

Result<std::shared_ptr<const Snapshot>> Gateway::Load() {
  ConfigParseResult parsed = LoadGatewayConfig(config_path_);
  if (!parsed.config) {
    return Status(Code::kUsage, FormatConfigErrors(config_path_, parsed.errors));
  }
  auto snap = std::make_shared<Snapshot>();
  snap->config = std::move(*parsed.config);
  Limits& limits = snap->config.limits;
  const uint32_t streams = StreamsTheFileLimitAllows(limits, RaiseFileLimit(limits));
  if (streams < limits.max_streams) {
    PG_LOG(kInfo,
           "max_streams is {} (of {} configured): what the open-file limit leaves after "
           "max_connections",
           streams, limits.max_streams);
    limits.max_streams = streams;
    limits.max_streams_per_identity = std::min(limits.max_streams_per_identity, streams);
  }
  TlsServerOptions tls_options;
  tls_options.cert = snap->config.cert;
  tls_options.key = snap->config.key;
  tls_options.client_ca = snap->config.client_ca;
  // TLS policy (CRL, TLS 1.2 switch) and refusal counters; accounts must exist.
  tls_options.crl = snap->config.crl;
  tls_options.allow_tls12 = snap->config.tls_min_version == TlsMinVersion::kTls12;
  tls_options.counters = &counters_.tls_refused;
  if (Status accounts = CheckAccounts(snap->config); !accounts.ok()) {
    return Status(Code::kUsage, config_path_ + ": " + accounts.message());
  }
  Result<std::shared_ptr<const TlsContext>> tls = TlsContext::NewServer(tls_options);
  if (!tls) return tls.error();
  snap->tls = *tls;
  std::shared_ptr<const Snapshot> old = snapshot();
  for (const ExportConfig& e : snap->config.exports) {
    std::shared_ptr<ExportSlot> slot;
    if (old) {
      auto it = old->slots.find(e.name);
      if (it != old->slots.end()) slot = it->second;
    }
    snap->slots[e.name] = slot ? slot : std::make_shared<ExportSlot>();
    if (e.kind == ExportKind::kFifo && e.create)
      snap->fifo_rules[e.name] = FifoRule(snap->config, e);
  }
  resume_ttl_ms_.store(snap->config.resume_ttl_s * 1000);
  SetLogLinesPerSecond(snap->config.limits.log_lines_per_second);
  return std::shared_ptr<const Snapshot>(std::move(snap));
}

void Gateway::PrepareFifos(const Snapshot& snap) {
  const GatewayConfig& config = snap.config;
  for (const ExportConfig& e : config.exports) {
    auto rule = snap.fifo_rules.find(e.name);
    if (rule == snap.fifo_rules.end()) continue;
    if (auto made = created_.find(e.path); made != created_.end()) {
      struct stat st {};
      if (::lstat(e.path.c_str(), &st) == 0 && FileId::Of(st) == made->second.id()) continue;
      created_.erase(made);  // Removed or replaced since: make it again, or judge what is there.
    }
    Result<PreparedFifo> fifo = CreateOrAdoptFifo(e.path, rule->second);
    if (!fifo) {
      // Not fatal: one user's file must not keep every other export (or a reload) down.
      // OpenExport refuses the same file for as long as it stays.
      PG_LOG(kWarn, "export '{}': {}; the export is unavailable until that is fixed", e.name,
             fifo.error().message());
      continue;
    }
    if (fifo->fd < 0) {
      PG_LOG(kInfo, "export '{}': using the existing FIFO {}", e.name, e.path);
      continue;
    }
    // The export's mode (not subject to the umask) and owner: the export's owner and
    // group, else the gateway's user and group (so that it can still open it after dropping
    // privileges). Done on the FIFO just made and opened, never through a symlink.
    if (Status owned =
            SetFifoModeAndOwner(fifo->fd, e.path, e.mode, e.owner.empty() ? config.user : e.owner,
                                e.group.empty() ? config.group : e.group);
        !owned.ok()) {
      PG_LOG(kWarn, "export '{}': {}", e.name, owned.message());
    }
    ::close(fifo->fd);
    created_[e.path] = fifo->path;
    PG_LOG(kInfo, "export '{}': created FIFO {} (mode {:04o})", e.name, e.path, e.mode);
  }
}

void Gateway::RemoveCreatedFifos() {
  for (auto& [path, local] : created_) local.RemoveIfOurs();
}

void Gateway::Reload() {
  Result<std::shared_ptr<const Snapshot>> next = Load();
  if (!next) {
    counters_.reload_failures++;
    PG_LOG(kError, "reload failed, keeping the running configuration: {}", next.error().message());
    return;
  }
  PrepareFifos(**next);
  std::shared_ptr<const Snapshot> previous;
  {
    std::lock_guard<std::mutex> lock(mu_);
    previous = snapshot_;
    snapshot_ = *next;
  }
  counters_.reloads++;
  PG_LOG(kInfo, "reloaded {}: {} export(s)", config_path_, (*next)->config.exports.size());
  // What only a restart changes, and revocation of what is no longer allowed.
  const GatewayConfig& now = (*next)->config;
  if (previous &&
      (previous->config.listen != now.listen || previous->config.workers != now.workers ||
       previous->config.user != now.user || previous->config.group != now.group)) {
    PG_LOG(kWarn, "listen, workers, user and group take effect only after a restart");
  }
  if (now.reload_revokes) {
    for (auto& w : workers_) w->RequestRevoke();
  }
}

namespace {

struct SignalContext {
  Gateway* gateway;
  std::vector<std::unique_ptr<Worker>>* workers;
  bool stopping = false;
  std::function<void()> reload;
};

}  // namespace

int Gateway::Run() {
  Result<std::shared_ptr<const Snapshot>> first = Load();
  if (!first) {
    PG_LOG(kError, "{}", first.error().message());
    return 1;
  }
  snapshot_ = *first;
  const GatewayConfig& config = snapshot_->config;

  // FIFOs first: once "listening on" is logged, local programs may open them.
  PrepareFifos(*snapshot_);
  // Bind every listener once, on this thread; each worker listens on a duplicate of the fd.
  for (const std::string& listen : config.listen) {
    Result<std::pair<std::string, uint16_t>> hp = ParseHostPort(listen);
    if (!hp) {
      PG_LOG(kError, "listen '{}': {}", listen, hp.error().message());
      return 1;
    }
    sockaddr_storage ss{};
    if (uv_ip4_addr(hp->first.c_str(), hp->second, reinterpret_cast<sockaddr_in*>(&ss)) != 0 &&
        uv_ip6_addr(hp->first.c_str(), hp->second, reinterpret_cast<sockaddr_in6*>(&ss)) != 0) {
      PG_LOG(kError, "listen '{}': not an IP address", listen);
      return 1;
    }
    int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss.ss_family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    socklen_t len = ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, 511) != 0) {
      PG_LOG(kError, "cannot listen on {}: {}", listen, ErrnoText(errno));
      ::close(fd);
      return 2;
    }
    sockaddr_storage bound{};
    socklen_t blen = sizeof bound;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &blen);
    char host[INET6_ADDRSTRLEN] = "?";
    uint16_t port = 0;
    if (bound.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&bound);
      uv_ip6_name(a, host, sizeof host);
      port = ntohs(a->sin6_port);
      PG_LOG(kInfo, "listening on [{}]:{}", host, port);
    } else {
      auto* a = reinterpret_cast<sockaddr_in*>(&bound);
      uv_ip4_name(a, host, sizeof host);
      port = ntohs(a->sin_port);
      PG_LOG(kInfo, "listening on {}:{}", host, port);
    }
    listen_fds_.push_back(fd);
  }
  // Listeners are bound and FIFOs made; drop to `user`/`group` before any thread runs.
  if (Status dropped = DropPrivileges(config); !dropped.ok()) {
    PG_LOG(kError, "{}", dropped.message());
    return 1;
  }

  unsigned n =
      config.workers != 0 ? config.workers : std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < n; ++i) {
    workers_.push_back(std::make_unique<Worker>(this, static_cast<int>(i)));
    workers_.back()->Start(listen_fds_);
  }
  PG_LOG(kInfo, "serving {} export(s) with {} worker(s)", config.exports.size(), n);

  uv_loop_t loop;
  PG_CHECK(uv_loop_init(&loop) == 0);
  uv_signal_t sigterm, sigint, sighup, sigusr1;
  SignalContext ctx{this, &workers_, false, [this] { Reload(); }};
  for (uv_signal_t* s : {&sigterm, &sigint, &sighup, &sigusr1}) {
    uv_signal_init(&loop, s);
    s->data = &ctx;
  }
  auto on_stop = [](uv_signal_t* handle, int signum) noexcept {
    auto* c = static_cast<SignalContext*>(handle->data);
    if (c->stopping) return;
    c->stopping = true;
    PG_LOG(kInfo, "received {}: draining (up to {} s)", signum == SIGTERM ? "SIGTERM" : "SIGINT",
           kDrainGraceMs / 1000);
    for (auto& w : *c->workers) w->RequestStop();
    uv_walk(
        handle->loop,
        [](uv_handle_t* h, void*) {
          if (!uv_is_closing(h)) uv_close(h, nullptr);
        },
        nullptr);
  };
  uv_signal_start(&sigterm, on_stop, SIGTERM);
  uv_signal_start(&sigint, on_stop, SIGINT);
  uv_signal_start(
      &sighup,
      [](uv_signal_t* handle, int) noexcept {
        auto* c = static_cast<SignalContext*>(handle->data);
        PG_LOG(kInfo, "received SIGHUP: reloading");
        c->reload();
      },
      SIGHUP);
  // SIGUSR1 logs every counter (refusals by class included) on one line.
  uv_signal_start(
      &sigusr1,
      [](uv_signal_t* handle, int) noexcept {
        auto* c = static_cast<SignalContext*>(handle->data);
        PG_LOG_ALWAYS(kInfo, "counters: {}", CountersJson(c->gateway->counters()));
      },
      SIGUSR1);
  // After a burst of connections (a flood, a slowloris) give the freed memory back.
  uv_timer_t trim;
  uv_timer_init(&loop, &trim);
  trim.data = this;
  uv_timer_start(
      &trim,
      [](uv_timer_t* handle) noexcept {
        static_cast<Gateway*>(handle->data)->limiter().TrimMemoryAfterChurn();
        FlushSuppressedLogLines();  // Summaries of log bursts that have ended.
      },
      1000, 1000);
  // main() blocked these signals until now (see there); pending ones are delivered here.
  sigset_t handled;
  sigemptyset(&handled);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&handled, sig);
  pthread_sigmask(SIG_UNBLOCK, &handled, nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  for (auto& w : workers_) w->Join();
  PG_CHECK(uv_loop_close(&loop) == 0);
  RemoveCreatedFifos();
  Counters& k = counters_;
  PG_LOG(kInfo,
         "stopped: {} connection(s), {} stream(s), {} denied, {} TLS failure(s), {} protocol "
         "error(s)",
         k.connections_accepted.load(), k.streams_opened.load(), k.acl_denied.load(),
         k.tls_handshake_failed.load(), k.protocol_errors.load());
  PG_LOG_ALWAYS(kInfo, "counters: {}", CountersJson(k));
  return 0;
}

}  // namespace pipegate::gateway
