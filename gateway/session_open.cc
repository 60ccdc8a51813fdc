// Session: opening streams on exports (OPEN requests, --wait retries).
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>

#include "pipegate/log.h"

#include "exec_export.h"
#include "export_open.h"
#include "gateway.h"
#include "identity_helper.h"
#include "session.h"
#include "uv/local_pipe.h"
#include "worker.h"

namespace pipegate::gateway {

using uvglue::LocalPipe;
using uvglue::LocalPipePtr;

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
  const uint64_t now = worker_->loop().Now();
  pending_.push_back(PendingOpen{id, open, now + open.wait_ms, now + PendingOpen::kFirstRetryMs,
                                 PendingOpen::kFirstRetryMs});
  counters().opens_waited++;
  ScheduleRetry();
}

void Session::ScheduleRetry() {
  if (pending_.empty() || finished()) {
    retry_.Stop();
    return;
  }
  uint64_t next = UINT64_MAX;
  for (const PendingOpen& p : pending_) next = std::min({next, p.next_try_ms, p.deadline_ms});
  const uint64_t now = worker_->loop().Now();
  retry_.Start(next > now ? next - now : 0);
}

void Session::OnRetry() {
  if (finished()) return;
  uint64_t now = worker_->loop().Now();
  std::vector<PendingOpen> waiting;
  waiting.swap(pending_);
  for (PendingOpen& p : waiting) {
    if (!mux_->HasStream(p.id)) continue;  // The client gave up.
    const bool last_try = now >= p.deadline_ms;
    if (now < p.next_try_ms && !last_try) {
      pending_.push_back(p);
      continue;
    }
    if (TryOpen(p.id, p.open, last_try)) continue;
    p.interval_ms = std::min(p.interval_ms * 2, PendingOpen::kMaxRetryMs);
    p.next_try_ms = now + p.interval_ms;
    pending_.push_back(p);
  }
  ScheduleRetry();
  FlushSoon();
}

// Every decision below leaves one audit line (identity, export, address, verdict).
void Session::AuditOpen(uint32_t id, const OpenPayload& open, Verdict verdict,
                        std::string_view detail, bool hidden, std::string_view as) {
  Audit(AuditEvent{verdict, &peer_, open.name, AccessName(static_cast<Access>(open.access)),
                   peer_address_, conn_id_, id, detail, hidden, as});
}

bool Session::TryOpen(uint32_t id, const OpenPayload& open, bool last_try) {
  std::shared_ptr<const Snapshot> snap = worker_->gateway()->snapshot();
  OpenDecision decision = Authorize(*snap, peer_, open);
  if (!decision.granted()) {
    Counters& k = counters();
    (decision.unmapped                           ? k.mapping_refused
     : decision.verdict == Verdict::kInvalidName ? k.invalid_names
     : decision.verdict == Verdict::kNoSuchPipe  ? k.not_found
     : decision.verdict == Verdict::kWrongAccess ? k.wrong_access
                                                 : k.acl_denied)++;
    AuditOpen(id, open, decision.verdict, decision.audit_detail, decision.hidden);
    return Refuse(id, decision.error, decision.reason);
  }
  const ExportConfig& e = *decision.export_config;
  std::optional<StreamCharge> charge = ChargeStream(id, open, snap->config.limits);
  if (!charge) return true;
  std::optional<ExportInstance> instance =
      ExportInstance::TryAcquire(snap->slots.at(e.name), e.max_clients);
  if (!instance) {
    if (!last_try) return false;
    counters().busy++;
    const std::string why = fmt::format("busy: all {} instance{} of '{}' are in use", e.max_clients,
                                        e.max_clients == 1 ? "" : "s", e.name);
    AuditOpen(id, open, Verdict::kBusy, why);
    return Refuse(id, ErrorCode::kBusy, why);
  }
  if (e.kind == ExportKind::kExec) {
    // A mapping only names the account to the process (PIPEGATE_USER); it runs as the gateway.
    std::optional<std::string> mapped_user;
    if (decision.account) mapped_user = decision.account->user;
    return StartExecStream(id, open, e, snap->config.limits, std::move(*instance),
                           std::move(*charge), mapped_user);
  }
  const bool follow = (open.flags & kOpenFlagFollow) != 0;
  if (e.fanout)
    return StartFanoutStream(id, open, e, *snap, follow, std::move(*instance), std::move(*charge),
                             last_try);
  if (!decision.account) {
    Result<int> fd = OpenExport(e, snap->FifoRuleFor(e.name), follow);
    if (!fd) return RefuseUnopened(id, open, fd.error(), last_try);
    return StartStream(id, open, e, *fd, std::move(*instance), std::move(*charge));
  }
  // Identity mapping: opened as the mapped account, by the identity helper unless that is the
  // gateway's own account. This blocks the worker for one helper round trip (tens of
  // microseconds; at most IdentityHelper::kReplyTimeoutMs).
  Gateway* gateway = worker_->gateway();
  const std::string as = decision.account->Display();
  Result<int> fd = OpenExportAs(e, snap->FifoRuleFor(e.name), follow, *decision.account,
                                gateway->own_account(), gateway->identity_helper());
  if (!fd) {
    if (fd.error().code() == Code::kAccessDenied) counters().mapped_denied++;
    return RefuseUnopened(id, open, fd.error(), last_try, as);
  }
  counters().mapped_opens++;
  return StartStream(id, open, e, *fd, std::move(*instance), std::move(*charge), as);
}

bool Session::StartFanoutStream(uint32_t id, const OpenPayload& open, const ExportConfig& e,
                                const Snapshot& snap, bool follow, ExportInstance instance,
                                StreamCharge charge, bool last_try) {
  Result<std::shared_ptr<FanoutHub>> hub = snap.slots.at(e.name)->fanout.HubFor(e, &counters());
  if (!hub) return RefuseUnopened(id, open, hub.error(), last_try);
  Result<FanoutAttachment> attached = (*hub)->Attach(e, snap.FifoRuleFor(e.name), follow);
  if (!attached) return RefuseUnopened(id, open, attached.error(), last_try);
  return StartStream(id, open, e, attached->fd, std::move(instance), std::move(charge), {},
                     std::move(attached->subscription));
}

std::optional<StreamCharge> Session::ChargeStream(uint32_t id, const OpenPayload& open,
                                                  const Limits& limits) {
  StreamCharge::Refusal refused{};
  std::optional<StreamCharge> charge =
      StreamCharge::TryTake(usage_, &worker_->gateway()->totals(), limits, &refused);
  if (charge) return charge;
  std::string why;
  if (refused == StreamCharge::Refusal::kIdentity) {
    counters().refused_streams_identity++;
    why = fmt::format("too many streams for '{}' (limit {} per identity)", peer_.Display(),
                      limits.max_streams_per_identity);
  } else {
    counters().refused_streams_gateway++;
    why = fmt::format("too many streams on this gateway (limit {})", limits.max_streams);
  }
  AuditOpen(id, open, Verdict::kBusy, why);
  Refuse(id, ErrorCode::kLimit, why);
  return std::nullopt;
}

bool Session::RefuseUnopened(uint32_t id, const OpenPayload& open, const Status& error,
                             bool last_try, std::string_view as) {
  const Code code = error.code();
  const bool waits_for_it = code == Code::kBusy ||
                            (code == Code::kNoReader && !(open.flags & kOpenFlagWaitOnlyWhileBusy));
  if (waits_for_it && !last_try) return false;
  // Each refusal is counted once: a missing file is no_reader (it may yet appear), a file of the
  // wrong kind or a local error is unavailable; not_found stays "no such export name".
  // (A mapped account refused by the local permissions is counted as mapped_denied.)
  if (code == Code::kNoReader) counters().no_reader++;
  if (code != Code::kNoReader && code != Code::kBusy && code != Code::kAccessDenied) {
    counters().unavailable++;
  }
  AuditOpen(id, open,
            code == Code::kNoReader       ? Verdict::kNoReader
            : code == Code::kBusy         ? Verdict::kBusy
            : code == Code::kAccessDenied ? Verdict::kAccessDenied
                                          : Verdict::kUnavailable,
            error.message(), /*hidden=*/false, as);
  return Refuse(id, ErrorForCode(code), error.message());
}

bool Session::StartExecStream(uint32_t id, const OpenPayload& open, const ExportConfig& e,
                              const Limits& limits, ExportInstance instance, StreamCharge charge,
                              const std::optional<std::string>& mapped_user) {
  std::optional<ExecProcessSlot> slot =
      ExecProcessSlot::TryAcquire(&worker_->gateway()->totals(), limits.max_exec_processes);
  if (!slot) {
    counters().refused_exec_processes++;
    const std::string why = fmt::format("too many processes on this gateway for '{}' (limit {})",
                                        e.name, limits.max_exec_processes);
    AuditOpen(id, open, Verdict::kBusy, why);
    return Refuse(id, ErrorCode::kLimit, why);
  }
  auto stream = std::make_unique<ExecStream>(this, &counters(), id, e, std::move(instance),
                                             std::move(charge), worker_->loop(), conn_id_);
  Result<int> fd =
      stream->Start(ExecEnvironment(e, peer_, peer_address_, mapped_user), std::move(*slot));
  if (!fd) {
    counters().exec_failed++;
    PG_CONN_LOG(kWarn, conn_id_, "{}", fd.error().message());
    return RefuseUnopened(id, open, fd.error(), /*last_try=*/true);
  }
  counters().exec_started++;
  return StartStream(id, open, e, *fd, std::move(stream));
}

bool Session::StartStream(uint32_t id, const OpenPayload& open, const ExportConfig& e, int fd,
                          ExportInstance instance, StreamCharge charge, std::string_view as,
                          FanoutSubscriptionPtr fanout) {
  auto stream = std::make_unique<ExportStream>(this, &counters(), id, e, std::move(instance),
                                               std::move(charge));
  if (fanout) stream->set_fanout(std::move(fanout));
  return StartStream(id, open, e, fd, std::move(stream), as);
}

bool Session::StartStream(uint32_t id, const OpenPayload& open, const ExportConfig& e, int fd,
                          ExportStreamPtr stream, std::string_view as) {
  unsigned dirs = e.kind != ExportKind::kFifo ? (LocalPipe::kRead | LocalPipe::kWrite)
                  : e.access == Access::kRead ? LocalPipe::kRead
                                              : LocalPipe::kWrite;
  // The stream holds the instance and the charge (given back when it is deleted) and, once
  // attached, the local pipe. A unix export's fd is a non-blocking socket (OpenExport).
  const unsigned hint = e.kind == ExportKind::kUnix ? LocalPipe::kNonBlockingSocket : 0;
  Result<LocalPipePtr> opened =
      LocalPipe::Open(worker_->loop().native(), fd, dirs | hint, true, stream.get());
  if (!opened) {
    stream.reset();
    AuditOpen(id, open, Verdict::kUnavailable, opened.error().message(), false, as);
    return Refuse(id, ErrorCode::kInternal, opened.error().message());
  }
  LocalPipe* pipe = opened->get();  // Owned by the stream from here on.
  if (dirs == (LocalPipe::kRead | LocalPipe::kWrite)) {
    stream->Attach(uvglue::StreamPipes::Duplex(std::move(*opened)));
  } else if (dirs == LocalPipe::kRead) {
    stream->Attach({std::move(*opened), nullptr});
  } else {
    stream->Attach({nullptr, std::move(*opened)});
  }
  ExportStream* s = stream.get();
  streams_[id] = std::move(stream);
  counters().streams_opened++;
  if (ExportSlot* slot = s->slot()) slot->streams_opened.fetch_add(1, std::memory_order_relaxed);
  AuditOpen(id, open, Verdict::kGranted, "", /*hidden=*/false, as);
  if (e.kind == ExportKind::kFifo && e.access == Access::kWrite) {
    pipe->set_record_mode((open.flags & kOpenFlagLines) != 0 ? uvglue::RecordMode::kLines
                                                             : uvglue::RecordMode::kBlocks);
    pipe->WatchHangup(true);  // A reader that leaves while we are idle is a broken pipe.
  }
  if (e.socket_type == SocketType::kSeqpacket) {
    s->SetMessageMode(uvglue::MessageFraming::kSocket, uvglue::MessageFraming::kSocket,
                      e.max_message_size);
  }
  if ((open.flags & kOpenFlagEarlyData) != 0) counters().early_data_streams++;
  mux_->Accept(id, GrantFor(e));  // Delivers early data to the stream, which may end here.
  if (Find(id) == s) s->StartReading();
  return true;
}

}  // namespace pipegate::gateway
