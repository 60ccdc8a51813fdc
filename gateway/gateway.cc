#include "gateway.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <functional>
#include <thread>
#include <utility>

#include "pipegate/log.h"

#include "export_open.h"
#include "metrics.h"
#include "privilege.h"
#include "uv/handles.h"
#include "uv/http_server.h"
#include "worker.h"
#include <systemd/sd-daemon.h>

namespace pipegate::gateway {

Gateway::Gateway(std::string config_path) : config_path_(std::move(config_path)) {}

Gateway::~Gateway() {
  // The snapshot's fan-out hubs count into counters_: they go (and their threads are joined)
  // before the members they use, here or, for hubs that streams still hold, with the workers.
  std::lock_guard<std::mutex> lock(mu_);
  snapshot_.reset();
}

std::shared_ptr<const Snapshot> Gateway::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return snapshot_;
}

namespace {

TlsServerOptions TlsOptionsOf(const GatewayConfig& config) {
  TlsServerOptions options;
  options.cert = config.cert;
  options.key = config.key;
  options.client_ca = config.client_ca;
  options.crl = config.crl;
  options.allow_tls12 = config.tls_min_version == TlsMinVersion::kTls12;
  return options;
}

// The certificate, key, CA and CRL files of @p config as they are now (TlsFilesFingerprint).
std::string CertFingerprint(const GatewayConfig& config) {
  return TlsFilesFingerprint({config.cert, config.key, config.client_ca, config.crl});
}

}  // namespace

std::vector<ConfigError> Gateway::CheckConfig(const GatewayConfig& config, bool identity_helper) {
  std::vector<ConfigError> errors;
  auto line_of = [&config](const std::string& key) {
    auto it = config.gateway_key_lines.find(key);
    return it == config.gateway_key_lines.end() ? 0 : it->second;
  };
  if (Result<Account> a = ResolveAccount(config.user, config.group); !a) {
    errors.push_back(
        {line_of(config.user.empty() ? "group" : "user"), "gateway: " + a.error().message()});
  }
  for (const ExportConfig& e : config.exports) {
    if (Result<Account> a = ResolveAccount(e.owner, e.group); !a) {
      errors.push_back({0, fmt::format("export '{}': {}", e.name, a.error().message())});
    }
    // An exec export whose program cannot run would fail every client: refuse it here, as
    // a missing certificate is refused (checked as the user checking; a gateway that drops
    // privileges runs it as its user, which may differ).
    if (e.kind == ExportKind::kExec && !e.command.empty()) {
      struct stat st {};
      const std::string& program = e.command.front();
      if (::stat(program.c_str(), &st) != 0) {
        errors.push_back({e.line, fmt::format("export '{}': command[0] {}: {}", e.name, program,
                                              ErrnoText(errno))});
      } else if (!S_ISREG(st.st_mode) || ::access(program.c_str(), X_OK) != 0) {
        errors.push_back({e.line, fmt::format("export '{}': command[0] {} is not an executable "
                                              "file",
                                              e.name, program)});
      }
    }
  }
  // Identity maps: the accounts exist and are not root, and can be opened as.
  GatewayConfig resolved = config;
  std::vector<ConfigError> map_errors = ResolveIdentityMaps(resolved);
  if (map_errors.empty()) {
    map_errors = CheckMappingsPossible(
        resolved, identity_helper,
        ::geteuid() != 0 ? fmt::format("pipegated runs as uid {}, not as root", ::geteuid())
                         : "no identity helper runs (pipegated starts one only when the "
                           "configuration it starts with needs it; restart pipegated)");
  }
  errors.insert(errors.end(), map_errors.begin(), map_errors.end());
  for (const TlsContext::FileProblem& p : TlsContext::CheckServerFiles(TlsOptionsOf(config))) {
    errors.push_back({line_of(p.key), "gateway: " + p.key + ": " + p.status.message()});
  }
  return errors;
}

Result<std::shared_ptr<const Snapshot>> Gateway::Load() {
  ConfigParseResult parsed = LoadGatewayConfig(config_path_);
  if (!parsed.config) {
    return Status(Code::kUsage, FormatConfigErrors(config_path_, parsed.errors));
  }
  auto snap = std::make_shared<Snapshot>();
  snap->config = std::move(*parsed.config);
  // At start, every line from here on is in the configured format; a reload switches only
  // once it has succeeded.
  if (!snapshot()) SetLogFormat(log_format_override_.value_or(snap->config.log_format));
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
  // What --check-config checks beyond parsing (accounts, every TLS file), reported the same
  // way: every problem, each with its line.
  const bool helper = snapshot() ? identity_helper_ != nullptr : ::geteuid() == 0;
  if (std::vector<ConfigError> errors = CheckConfig(snap->config, helper); !errors.empty()) {
    std::string text = FormatConfigErrors(config_path_, errors);
    if (!text.empty() && text.back() == '\n') text.pop_back();
    return Status(Code::kUsage, text);
  }
  (void)ResolveIdentityMaps(snap->config);  // CheckConfig found no error in it.
  TlsServerOptions tls_options = TlsOptionsOf(snap->config);
  tls_options.counters = &counters_.tls_refused;
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
    // A fan-out hub takes the new lag and policy at once; one whose export changed path or
    // stopped fanning out is let go here and serves its readers until they leave.
    if (slot) slot->fanout.Update(e);
    snap->slots[e.name] = slot ? slot : std::make_shared<ExportSlot>();
    if (e.kind == ExportKind::kFifo && e.create)
      snap->fifo_rules[e.name] = FifoRule(snap->config, e);
  }
  resume_ttl_ms_.store(snap->config.resume_ttl_s * 1000);
  SetLogLinesPerSecond(snap->config.limits.log_lines_per_second);
  SetLogFormat(log_format_override_.value_or(snap->config.log_format));
  loaded_at_unix_.store(static_cast<int64_t>(std::time(nullptr)));
  return std::shared_ptr<const Snapshot>(std::move(snap));
}

void Gateway::PrepareFifos(const Snapshot& snap) {
  for (const ExportConfig& e : snap.config.exports) {
    if (const AdoptRule* rule = snap.FifoRuleFor(e.name)) PrepareFifo(snap.config, e, *rule);
  }
}

void Gateway::PrepareFifo(const GatewayConfig& config, const ExportConfig& e,
                          const AdoptRule& rule) {
  if (auto made = created_.find(e.path); made != created_.end()) {
    struct stat st {};
    if (::lstat(e.path.c_str(), &st) == 0 && FileId::Of(st) == made->second.id()) return;
    created_.erase(made);  // Removed or replaced since: make it again, or judge what is there.
  }
  Result<PreparedFifo> fifo = CreateOrAdoptFifo(e.path, rule);
  if (!fifo) {
    // Not fatal: one user's file must not keep every other export (or a reload) down.
    // OpenExport refuses the same file for as long as it stays.
    PG_LOG(kWarn, "export '{}': {}; the export is unavailable until that is fixed", e.name,
           fifo.error().message());
    return;
  }
  if (fifo->fd < 0) {
    PG_LOG(kInfo, "export '{}': using the existing FIFO {}", e.name, e.path);
    return;
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

void Gateway::RemoveCreatedFifos() {
  for (auto& [path, local] : created_) local.RemoveIfOurs();
}

void Gateway::Reload() {
  sd_notify(0, "RELOADING=1");
  Result<std::shared_ptr<const Snapshot>> next = Load();
  // Whatever the outcome, the files as they are now are the ones judged: a bad certificate is
  // tried again when it changes, not every second.
  cert_fingerprint_ = CertFingerprint(next ? (*next)->config : snapshot()->config);
  pending_fingerprint_.clear();
  if (!next) {
    counters_.reload_failures++;
    PG_LOG(kError, "reload failed, keeping the running configuration: {}", next.error().message());
    sd_notify(0, "READY=1");
    return;
  }
  // The helper reads the file too, and serves only what its own reading maps.
  if (identity_helper_ != nullptr) {
    if (Status helper = identity_helper_->Reload(); !helper.ok()) {
      counters_.reload_failures++;
      PG_LOG(kError, "reload failed, keeping the running configuration: identity helper: {}",
             helper.message());
      sd_notify(0, "READY=1");
      return;
    }
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
  sd_notify(0, "READY=1");
}

void Gateway::CheckCertificateFiles() {
  std::shared_ptr<const Snapshot> snap = snapshot();
  if (!snap->config.watch_certificates) return;
  std::string now = CertFingerprint(snap->config);
  if (now == cert_fingerprint_) {
    pending_fingerprint_.clear();  // Changed and changed back: nothing to do.
    return;
  }
  // A renewal writes several files (or swaps a directory) in quick succession: act only on a
  // state that has held for a whole check period.
  if (now != pending_fingerprint_) {
    pending_fingerprint_ = std::move(now);
    return;
  }
  PG_LOG(kInfo, "certificate files changed: reloading");
  Reload();
}

int Gateway::Run() {
  Result<std::shared_ptr<const Snapshot>> first = Load();
  if (!first) {
    PG_LOG(kError, "{}", first.error().message());
    return 1;
  }
  snapshot_ = *first;
  cert_fingerprint_ = CertFingerprint(snapshot_->config);
  // FIFOs first: once "listening on" is logged, local programs may open them.
  PrepareFifos(*snapshot_);
  // The identity helper is started while still root and single-threaded, before the drop.
  own_account_ = GatewayAccount(snapshot_->config);
  if (::geteuid() == 0 && AnyMappingNeedsHelper(snapshot_->config)) {
    Result<std::unique_ptr<IdentityHelper>> helper =
        IdentityHelper::Start(config_path_, &counters_.identity_helper_failures);
    if (!helper) {
      PG_LOG(kError, "{}", helper.error().message());
      RemoveCreatedFifos();
      return 1;
    }
    identity_helper_ = std::move(*helper);
  }
  if (int status = BindAndDropPrivileges(); status != 0) {
    RemoveCreatedFifos();  // A failed start leaves nothing behind.
    return status;
  }
  StartWorkers();
  ServeUntilStopped();
  identity_helper_.reset();  // The workers are joined: nobody asks it anything any more.
  RemoveCreatedFifos();
  LogFinalCounters();
  return 0;
}

int Gateway::BindAndDropPrivileges() {
  const GatewayConfig& config = snapshot_->config;
  // Bind every listener once, on this thread; each worker listens on a duplicate of the fd.
  if (Status bound = listeners_.Bind(config.listen); !bound.ok()) {
    PG_LOG(kError, "{}", bound.message());
    return bound.code() == Code::kUsage ? 1 : 2;
  }
  if (!config.metrics_listen.empty()) {
    if (Status bound = metrics_listener_.Bind({config.metrics_listen},
                                              "metrics: serving /metrics "
                                              "and /healthz on");
        !bound.ok()) {
      PG_LOG(kError, "metrics_listen: {}", bound.message());
      return bound.code() == Code::kUsage ? 1 : 2;
    }
  }
  // Listeners are bound and FIFOs made; drop to `user`/`group` before any thread runs.
  if (Status dropped = DropPrivileges(config); !dropped.ok()) {
    PG_LOG(kError, "{}", dropped.message());
    return 1;
  }
  return 0;
}

void Gateway::StartWorkers() {
  const GatewayConfig& config = snapshot_->config;
  unsigned n =
      config.workers != 0 ? config.workers : std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < n; ++i) {
    workers_.push_back(std::make_unique<Worker>(this, static_cast<int>(i)));
    workers_.back()->Start(listeners_.fds(), /*measure_lag=*/!config.metrics_listen.empty());
  }
  PG_LOG(kInfo, "serving {} export(s) with {} worker(s)", config.exports.size(), n);
  sd_notifyf(0, "READY=1\nSTATUS=serving %zu export(s) with %u worker(s)", config.exports.size(),
             n);
}

void Gateway::ServeUntilStopped() {
  uvglue::Loop loop;
  std::vector<std::unique_ptr<uvglue::Signal>> signals;
  std::unique_ptr<uvglue::Timer> trim;
  std::unique_ptr<uvglue::HttpServer> metrics;
  bool stopping = false;
  auto on_stop = [&](const char* name) {
    if (stopping) return;
    stopping = true;
    sd_notify(0, "STOPPING=1");
    PG_LOG(kInfo, "received {}: draining (up to {} s)", name, kDrainGraceMs / 1000);
    for (auto& w : workers_) w->RequestStop();
    signals.clear();  // Closes every handle of this loop, which then ends.
    trim.reset();
    metrics.reset();
  };
  auto watch = [&](int signum, std::function<void()> on_signal) {
    signals.push_back(std::make_unique<uvglue::Signal>(loop, signum, std::move(on_signal)));
  };
  watch(SIGTERM, [&] { on_stop("SIGTERM"); });
  watch(SIGINT, [&] { on_stop("SIGINT"); });
  watch(SIGHUP, [this] {
    PG_LOG(kInfo, "received SIGHUP: reloading");
    Reload();
  });
  // SIGUSR1 logs every counter (refusals by class included) on one line.
  watch(SIGUSR1, [this] { PG_LOG_ALWAYS(kInfo, "counters: {}", CountersJson(counters_)); });
  // After a burst of connections (a flood, a slowloris) give the freed memory back.
  trim = std::make_unique<uvglue::Timer>(loop, [this] {
    limiter().TrimMemoryAfterChurn();
    FlushSuppressedLogLines();  // Summaries of log bursts that have ended.
    CheckCertificateFiles();
  });
  trim->Start(1000, 1000);
  if (!metrics_listener_.fds().empty()) {
    Result<std::unique_ptr<uvglue::HttpServer>> server = uvglue::HttpServer::Open(
        loop, metrics_listener_.fds().front(),
        [this](std::string_view path) {
          uvglue::HttpResponse r;
          if (path == "/metrics") {
            r.content_type = "text/plain; version=0.0.4; charset=utf-8";
            r.body = RenderMetrics();
          } else if (path == "/healthz") {
            r.body = "ok\n";
          } else {
            r.status = 404;
            r.body = "not found: try /metrics or /healthz\n";
          }
          return r;
        },
        uvglue::HttpLimits{});
    if (server) {
      metrics = std::move(*server);
    } else {
      PG_LOG(kError, "metrics_listen: {}", server.error().message());
    }
  }
  // main() blocked these signals until now (see there); pending ones are delivered here.
  sigset_t handled;
  sigemptyset(&handled);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&handled, sig);
  pthread_sigmask(SIG_UNBLOCK, &handled, nullptr);
  loop.Run();
  for (auto& w : workers_) w->Join();
  PG_CHECK(loop.Close());
}

std::string Gateway::RenderMetrics() const {
  MetricsView view;
  view.counters = &counters_;
  view.log_lines_suppressed = SuppressedLogLines();
  view.connections_open = limiter_.total();
  view.streams_open = totals_.streams.load();
  view.sessions_detached = sessions_.detached();
  view.replay_bytes = totals_.replay_bytes.load();
  view.reload_time_unix = static_cast<uint64_t>(loaded_at_unix_.load());
  std::shared_ptr<const Snapshot> snap = snapshot();
  for (const auto& [name, slot] : snap->slots) {
    view.exports.push_back({name, slot->in_use.load(), slot->streams_opened.load(),
                            slot->bytes.sent.load(), slot->bytes.received.load()});
  }
  // workers_ is filled before the main loop runs and not changed until it has ended.
  for (const auto& w : workers_) view.worker_loop_lag_us.push_back(w->loop_lag_us());
  return RenderPrometheus(view);
}

void Gateway::LogFinalCounters() {
  Counters& k = counters_;
  PG_LOG(kInfo,
         "stopped: {} connection(s), {} stream(s), {} denied, {} TLS failure(s), {} protocol "
         "error(s)",
         k.connections_accepted.load(), k.streams_opened.load(), k.acl_denied.load(),
         k.tls_handshake_failed.load(), k.protocol_errors.load());
  PG_LOG_ALWAYS(kInfo, "counters: {}", CountersJson(k));
}

}  // namespace pipegate::gateway
