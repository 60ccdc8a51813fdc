#include "gateway.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>
#include <uv.h>

#include "pipegate/acl.h"
#include "pipegate/address.h"
#include "pipegate/log.h"
#include "uv/connection.h"
#include "uv/local_pipe.h"
#include "uv/stream_link.h"

namespace pipegate::gateway {

using uvglue::Connection;
using uvglue::ConnectionHandler;
using uvglue::LocalPipe;
using uvglue::LocalPipeEvents;

namespace {

constexpr uint64_t kRetryMs = 20;          // Poll interval while a client waits (--wait).
constexpr uint64_t kDrainGraceMs = 10000;  // SIGTERM: how long streams may finish.
constexpr int kFifoPipeSize = 1 << 20;     // F_SETPIPE_SZ on exported FIFOs, for throughput.

std::string Errno(int err) { return std::strerror(err); }

// Opens the local end of an export for one stream. kNoReader/kBusy may be retried.
Result<int> OpenExport(const ExportConfig& e) {
  struct stat st {};
  if (::stat(e.path.c_str(), &st) != 0) {
    return Status(Code::kNotFound,
                  fmt::format("pipe '{}' is not available: {}: {}", e.name, e.path, Errno(errno)));
  }
  if (e.kind == ExportKind::kFifo) {
    if (!S_ISFIFO(st.st_mode)) {
      return Status(Code::kNotFound,
                    fmt::format("pipe '{}' is not available: {} is not a FIFO", e.name, e.path));
    }
    int flags = (e.access == Access::kRead ? O_RDONLY : O_WRONLY) | O_NONBLOCK | O_CLOEXEC;
    int fd = ::open(e.path.c_str(), flags);
    if (fd < 0) {
      if (errno == ENXIO) {
        return Status(Code::kNoReader, fmt::format("no reader: nothing has '{}' open for reading",
                                                   e.name));
      }
      return Status(Code::kIo, fmt::format("cannot open {}: {}", e.path, Errno(errno)));
    }
    struct stat fst {};
    if (::fstat(fd, &fst) != 0 || !S_ISFIFO(fst.st_mode)) {
      ::close(fd);
      return Status(Code::kNotFound, fmt::format("{} is not a FIFO", e.path));
    }
    (void)fcntl(fd, F_SETPIPE_SZ, kFifoPipeSize);  // Best effort; the default 64 KiB works.
    return fd;
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Status(Code::kNotFound,
                  fmt::format("pipe '{}' is not available: {} is not a socket", e.name, e.path));
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status(Code::kIo, fmt::format("socket: {}", Errno(errno)));
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (e.path.size() >= sizeof sun.sun_path) {
    ::close(fd);
    return Status(Code::kIo, fmt::format("socket path too long: {}", e.path));
  }
  std::memcpy(sun.sun_path, e.path.c_str(), e.path.size() + 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0 && errno != EINPROGRESS) {
    int err = errno;
    ::close(fd);
    if (err == EAGAIN) return Status(Code::kBusy, fmt::format("busy: {} backlog is full", e.path));
    if (err == ECONNREFUSED || err == ENOENT) {
      return Status(Code::kNoReader,
                    fmt::format("no reader: nothing is listening on '{}'", e.name));
    }
    return Status(Code::kIo, fmt::format("cannot connect to {}: {}", e.path, Errno(err)));
  }
  return fd;
}

uint32_t EffectiveMaxClients(const ExportConfig& e) { return e.max_clients; }

}  // namespace

class Session;

/// @brief One event loop on its own thread: listeners, connections, streams.
class Worker {
 public:
  Worker(Gateway* gateway, int index) : gateway_(gateway), index_(index) {}
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void Start(const std::vector<int>& listen_fds);
  void RequestStop() { stop_requested_.store(true), uv_async_send(&async_); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

  Gateway* gateway() { return gateway_; }
  uv_loop_t* loop() { return &loop_; }
  bool stopping() const { return stopping_; }
  void Forget(Session* s);

 private:
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
  bool stopping_ = false;
  bool grace_closed_ = false;
  std::unordered_map<Session*, bool> sessions_;
};

/// @brief One local end of one stream on an export: a StreamLink that also holds an instance
/// of the export (released when the stream ends) and counts its bytes.
class ExportStream final : public uvglue::StreamLink {
 public:
  ExportStream(Session* session, uint32_t id, const ExportConfig& e,
               std::shared_ptr<ExportSlot> slot);
  ~ExportStream() override;

 private:
  Session* session_;
  std::shared_ptr<ExportSlot> slot_;
};

/// @brief A stream whose open waits for a free instance or a local reader (--wait).
struct PendingOpen {
  uint32_t id = 0;
  OpenPayload open;
  uint64_t deadline_ms = 0;
};

/// @brief The handler of one client connection: access control and the stream table.
class Session final : public ConnectionHandler, public uvglue::StreamLinkOwner {
 public:
  explicit Session(Worker* worker) : worker_(worker) {
    uv_timer_init(worker_->loop(), &retry_);
    retry_.data = this;
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void set_connection(Connection* c) { conn_ = c; }
  Connection* connection() override { return conn_; }
  void PauseForBackpressure(uvglue::StreamLink* link) override {
    paused_.push_back(static_cast<ExportStream*>(link));
  }
  Counters& counters() { return worker_->gateway()->counters(); }
  void Goaway() {
    if (conn_ == nullptr) return;
    conn_->mux().Goaway(ErrorCode::kShutdown, "gateway is shutting down");
    conn_->Flush();
    MaybeFinishDrain();
  }
  void CloseNow() {
    if (conn_ != nullptr) conn_->Close(Status(Code::kStreamLost, "gateway is shutting down"));
  }

  // ConnectionHandler.
  void OnTlsEstablished(const PeerIdentity& peer) override {
    peer_ = peer;
    PG_CONN_LOG(kInfo, conn_->id(), "client '{}' connected from {}", peer_.Display(),
                conn_->peer_address());
  }
  void OnConnectionWritable() override {
    std::vector<ExportStream*> paused;
    paused.swap(paused_);
    for (ExportStream* s : paused) {
      if (IsLive(s)) s->Resume();
    }
  }
  void OnConnectionClosed(const Status& why) override {
    if (ready_) {
      PG_CONN_LOG(kInfo, conn_->id(), "client '{}' from {} closed: {}", peer_.Display(),
                  conn_->peer_address(), why.message());
    } else {
      worker_->gateway()->counters().tls_handshake_failed++;
      PG_CONN_LOG(kWarn, conn_->id(), "connection from {} failed: {}", conn_->peer_address(),
                  why.message());
    }
    if (why.code() == Code::kProtocol) counters().protocol_errors++;
    for (auto& [id, s] : streams_) delete s;
    streams_.clear();
    paused_.clear();
    pending_.clear();
    closed_ = true;
  }
  void OnConnectionFreed() override {
    conn_ = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&retry_), &Session::OnRetryClosed);
  }

  // MuxCallbacks.
  void OnMuxReady() override { ready_ = true; }
  void OnOpenRequest(uint32_t id, const OpenPayload& open) override;
  void OnOpenAccepted(uint32_t, const OpenOkPayload&) override {}
  void OnStreamData(uint32_t id, const uint8_t* data, size_t len) override {
    if (ExportStream* s = Find(id)) s->OnData(data, len);
  }
  void OnStreamFin(uint32_t id) override {
    if (ExportStream* s = Find(id)) s->OnFin();
  }
  void OnStreamReset(uint32_t id, ErrorCode error, std::string_view reason) override {
    PG_DEBUG(kMux, "[C{}][S{}] reset by client: {} {}", conn_->id(), id, ErrorCodeName(error),
             reason);
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
    if (worker_->stopping() && conn_ != nullptr && streams_.empty() && pending_.empty()) {
      conn_->Close(Status(Code::kStreamLost, "gateway is shutting down"));
    }
  }
  static void OnRetry(uv_timer_t* handle) noexcept;
  static void OnRetryClosed(uv_handle_t* handle) noexcept {
    auto* self = static_cast<Session*>(handle->data);
    self->worker_->Forget(self);
    delete self;  // The only delete of a Session.
  }

  Worker* worker_;
  Connection* conn_ = nullptr;
  PeerIdentity peer_;
  bool ready_ = false;
  bool closed_ = false;
  uv_timer_t retry_{};
  std::unordered_map<uint32_t, ExportStream*> streams_;
  std::vector<ExportStream*> paused_;
  std::vector<PendingOpen> pending_;

  friend class ExportStream;
};

// ---- ExportStream ----

ExportStream::ExportStream(Session* session, uint32_t id, const ExportConfig& e,
                           std::shared_ptr<ExportSlot> slot)
    : StreamLink(session, id, e.name), session_(session), slot_(std::move(slot)) {}

ExportStream::~ExportStream() {
  Counters& k = session_->counters();
  k.bytes_to_clients += bytes_sent();
  k.bytes_from_clients += bytes_received();
  if (local_error().code() == Code::kBrokenPipe) k.broken_pipe++;
  slot_->in_use.fetch_sub(1);
}

// ---- Session ----

void Session::OnOpenRequest(uint32_t id, const OpenPayload& open) {
  if (TryOpen(id, open, open.wait_ms == 0)) {
    conn_->Flush();
    return;
  }
  pending_.push_back(PendingOpen{id, open, uv_now(worker_->loop()) + open.wait_ms});
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&retry_))) {
    uv_timer_start(&retry_, &Session::OnRetry, kRetryMs, kRetryMs);
  }
}

void Session::OnRetry(uv_timer_t* handle) noexcept {
  auto* self = static_cast<Session*>(handle->data);
  if (self->closed_ || self->conn_ == nullptr) {
    uv_timer_stop(handle);
    return;
  }
  uint64_t now = uv_now(self->worker_->loop());
  std::vector<PendingOpen> waiting;
  waiting.swap(self->pending_);
  for (PendingOpen& p : waiting) {
    if (!self->conn_->mux().HasStream(p.id)) continue;  // The client gave up.
    if (!self->TryOpen(p.id, p.open, now >= p.deadline_ms)) self->pending_.push_back(p);
  }
  if (self->pending_.empty()) uv_timer_stop(handle);
  self->conn_->Flush();
}

bool Session::TryOpen(uint32_t id, const OpenPayload& open, bool last_try) {
  Mux& mux = conn_->mux();
  std::shared_ptr<const Snapshot> snap = worker_->gateway()->snapshot();
  std::string who = peer_.Display();
  auto reject = [&](ErrorCode code, const std::string& reason) {
    mux.Reject(id, code, reason);
    return true;
  };
  if (Status st = ValidatePipeName(open.name); !st.ok()) {
    counters().not_found++;
    PG_CONN_LOG(kWarn, conn_->id(), "refused '{}' from {}: invalid pipe name", who,
                conn_->peer_address());
    return reject(ErrorCode::kNotFound, st.message());
  }
  const ExportConfig* e = snap->config.Find(open.name);
  if (e == nullptr) {
    counters().not_found++;
    PG_CONN_LOG(kInfo, conn_->id(), "refused '{}' from {}: no such pipe '{}'", who,
                conn_->peer_address(), open.name);
    return reject(ErrorCode::kNotFound, fmt::format("no such pipe '{}'", open.name));
  }
  if (!IsAllowed(e->allow, peer_)) {
    counters().acl_denied++;
    PG_CONN_LOG(kWarn, conn_->id(), "access denied: identity '{}' from {} to export '{}'", who,
                conn_->peer_address(), e->name);
    return reject(ErrorCode::kAccessDenied, fmt::format("access denied for '{}'", who));
  }
  // A fifo export serves one direction; "duplex" (connect, mount) is granted that direction.
  auto want = static_cast<Access>(open.access);
  if (e->kind == ExportKind::kFifo && want != e->access && want != Access::kDuplex) {
    counters().acl_denied++;
    return reject(ErrorCode::kAccessDenied,
                  fmt::format("access denied: '{}' is {}-only", e->name,
                              e->access == Access::kRead ? "read" : "write"));
  }
  std::shared_ptr<ExportSlot> slot = snap->slots.at(e->name);
  uint32_t max = EffectiveMaxClients(*e);
  uint32_t before = slot->in_use.fetch_add(1);
  if (max != 0 && before >= max) {
    slot->in_use.fetch_sub(1);
    if (!last_try) return false;
    counters().busy++;
    return reject(ErrorCode::kBusy,
                  fmt::format("busy: all {} instance{} of '{}' are in use", max,
                              max == 1 ? "" : "s", e->name));
  }
  Result<int> fd = OpenExport(*e);
  if (!fd) {
    slot->in_use.fetch_sub(1);
    Code code = fd.error().code();
    if ((code == Code::kNoReader || code == Code::kBusy) && !last_try) return false;
    if (code == Code::kNoReader) counters().no_reader++;
    if (code == Code::kNotFound) counters().not_found++;
    PG_CONN_LOG(kInfo, conn_->id(), "open of '{}' for '{}' failed: {}", e->name, who,
                fd.error().message());
    return reject(ErrorForCode(code), fd.error().message());
  }
  unsigned dirs = e->kind == ExportKind::kUnix ? (LocalPipe::kRead | LocalPipe::kWrite)
                  : e->access == Access::kRead ? LocalPipe::kRead
                                               : LocalPipe::kWrite;
  // The stream owns the instance (its destructor releases the slot) and the local pipe.
  auto* stream = new ExportStream(this, id, *e, std::move(slot));
  Result<LocalPipe*> pipe = LocalPipe::Open(worker_->loop(), *fd, dirs, true, stream);
  if (!pipe) {
    delete stream;
    return reject(ErrorCode::kInternal, pipe.error().message());
  }
  stream->Attach((dirs & LocalPipe::kRead) != 0 ? *pipe : nullptr,
                 (dirs & LocalPipe::kWrite) != 0 ? *pipe : nullptr);
  streams_[id] = stream;
  counters().streams_opened++;
  PG_CONN_LOG(kInfo, conn_->id(), "'{}' opened '{}' ({})", who, e->name,
              AccessName(static_cast<Access>(open.access)));
  if (e->kind == ExportKind::kFifo && e->access == Access::kWrite) {
    (*pipe)->set_record_mode((open.flags & kOpenFlagLines) != 0 ? uvglue::RecordMode::kLines
                                                                : uvglue::RecordMode::kBlocks);
    (*pipe)->WatchHangup(true);  // A reader that leaves while we are idle is a broken pipe.
  }
  uint8_t granted = static_cast<uint8_t>(e->kind == ExportKind::kFifo ? e->access : Access::kDuplex);
  mux.Accept(id, OpenOkPayload{static_cast<uint8_t>(e->kind), granted});
  stream->StartReading();
  return true;
}

void Session::OnListRequest() {
  std::shared_ptr<const Snapshot> snap = worker_->gateway()->snapshot();
  std::vector<ListEntry> entries;
  for (const ExportConfig& e : snap->config.exports) {
    if (!IsAllowed(e.allow, peer_)) continue;  // ls never shows what this identity can't use.
    entries.push_back(ListEntry{e.name, static_cast<uint8_t>(e.kind),
                                static_cast<uint8_t>(e.access)});
  }
  conn_->mux().SendListReply(entries);
  conn_->Flush();
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
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(tcp.get()), 511, &Worker::OnConnection);
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
  uvglue::ConnectionOptions options;
  Result<Connection*> c = Connection::Accept(&self->loop_, server, snap->tls, options, session);
  if (!c) {
    // No connection was made, so the session is freed here (its timer is closed first).
    self->gateway_->counters().connections_refused++;
    session->OnConnectionFreed();
    return;
  }
  self->gateway_->counters().connections_accepted++;
  session->set_connection(*c);
  self->sessions_[session] = true;
  if (self->stopping_) session->Goaway();
}

void Worker::Forget(Session* s) {
  sessions_.erase(s);
  MaybeFinish();
}

void Worker::OnAsync(uv_async_t* handle) noexcept {
  auto* self = static_cast<Worker*>(handle->data);
  if (self->stop_requested_.load() && !self->stopping_) self->Stop();
}

void Worker::Stop() {
  stopping_ = true;
  for (auto& l : listeners_) {
    uv_close(reinterpret_cast<uv_handle_t*>(l.get()), nullptr);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
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

Result<std::shared_ptr<const Snapshot>> Gateway::Load() {
  ConfigParseResult parsed = LoadGatewayConfig(config_path_);
  if (!parsed.config) {
    return Status(Code::kUsage, FormatConfigErrors(config_path_, parsed.errors));
  }
  auto snap = std::make_shared<Snapshot>();
  snap->config = std::move(*parsed.config);
  Result<std::shared_ptr<const TlsContext>> tls = TlsContext::NewServer(
      TlsServerOptions{snap->config.cert, snap->config.key, snap->config.client_ca});
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
  }
  return std::shared_ptr<const Snapshot>(std::move(snap));
}

void Gateway::PrepareFifos(const GatewayConfig& config) {
  for (const ExportConfig& e : config.exports) {
    if (e.kind != ExportKind::kFifo || !e.create) continue;
    struct stat st {};
    if (::lstat(e.path.c_str(), &st) == 0) continue;
    if (::mkfifo(e.path.c_str(), static_cast<mode_t>(e.mode)) != 0) {
      PG_LOG(kWarn, "export '{}': cannot create FIFO {}: {}", e.name, e.path, Errno(errno));
      continue;
    }
    ::chmod(e.path.c_str(), static_cast<mode_t>(e.mode));  // Not subject to the umask.
    if (::lstat(e.path.c_str(), &st) == 0) {
      created_[e.path] = {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
    }
    PG_LOG(kInfo, "export '{}': created FIFO {} (mode {:04o})", e.name, e.path, e.mode);
  }
}

void Gateway::RemoveCreatedFifos() {
  for (auto& [path, id] : created_) {
    struct stat st {};
    // Only what we made, and only if it is still the file we made.
    if (::lstat(path.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_dev) == id.first &&
        static_cast<uint64_t>(st.st_ino) == id.second) {
      ::unlink(path.c_str());
    }
  }
}

void Gateway::Reload() {
  Result<std::shared_ptr<const Snapshot>> next = Load();
  if (!next) {
    PG_LOG(kError, "reload failed, keeping the running configuration: {}", next.error().message());
    return;
  }
  PrepareFifos((*next)->config);
  {
    std::lock_guard<std::mutex> lock(mu_);
    snapshot_ = *next;
  }
  PG_LOG(kInfo, "reloaded {}: {} export(s)", config_path_, (*next)->config.exports.size());
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
      PG_LOG(kError, "cannot listen on {}: {}", listen, Errno(errno));
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
  PrepareFifos(config);

  unsigned n = config.workers != 0 ? config.workers : std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < n; ++i) {
    workers_.push_back(std::make_unique<Worker>(this, static_cast<int>(i)));
    workers_.back()->Start(listen_fds_);
  }
  PG_LOG(kInfo, "serving {} export(s) with {} worker(s)", config.exports.size(), n);

  uv_loop_t loop;
  PG_CHECK(uv_loop_init(&loop) == 0);
  uv_signal_t sigterm, sigint, sighup;
  SignalContext ctx{this, &workers_, false, [this] { Reload(); }};
  for (uv_signal_t* s : {&sigterm, &sigint, &sighup}) {
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
    uv_walk(handle->loop, [](uv_handle_t* h, void*) {
      if (!uv_is_closing(h)) uv_close(h, nullptr);
    }, nullptr);
  };
  uv_signal_start(&sigterm, on_stop, SIGTERM);
  uv_signal_start(&sigint, on_stop, SIGINT);
  uv_signal_start(&sighup, [](uv_signal_t* handle, int) noexcept {
    auto* c = static_cast<SignalContext*>(handle->data);
    PG_LOG(kInfo, "received SIGHUP: reloading");
    c->reload();
  }, SIGHUP);
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
  return 0;
}

}  // namespace pipegate::gateway
