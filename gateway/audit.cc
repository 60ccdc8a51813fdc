// The audit trail of access decisions (issue 4) and the counter dump.

#include "audit.h"

#include <fmt/format.h>

#include <iterator>
#include <string>

#include "pipegate/log.h"

#include "gateway.h"

namespace pipegate::gateway {

const char* VerdictName(Verdict verdict) noexcept {
  switch (verdict) {
    case Verdict::kGranted:
      return "granted";
    case Verdict::kAccessDenied:
      return "access-denied";
    case Verdict::kWrongAccess:
      return "wrong-access";
    case Verdict::kNoSuchPipe:
      return "no-such-pipe";
    case Verdict::kInvalidName:
      return "invalid-name";
    case Verdict::kBusy:
      return "busy";
    case Verdict::kNoReader:
      return "no-reader";
    case Verdict::kUnavailable:
      return "unavailable";
    case Verdict::kRevoked:
      return "revoked";
  }
  return "unknown";
}

namespace {

// One rate-limit cause per verdict, in Verdict order.
LogCause g_causes[] = {
    LogCause("audit", "decision=granted"),      LogCause("audit", "decision=access-denied"),
    LogCause("audit", "decision=wrong-access"), LogCause("audit", "decision=no-such-pipe"),
    LogCause("audit", "decision=invalid-name"), LogCause("audit", "decision=busy"),
    LogCause("audit", "decision=no-reader"),    LogCause("audit", "decision=unavailable"),
    LogCause("audit", "decision=revoked"),
};
static_assert(std::size(g_causes) == static_cast<size_t>(Verdict::kRevoked) + 1);

}  // namespace

void Audit(const AuditEvent& e) {
  const bool granted = e.verdict == Verdict::kGranted;
  if (!LogEnabled(granted ? LogLevel::kInfo : LogLevel::kWarn)) return;
  // Before any formatting: a suppressed line costs a clock read and a counter.
  if (!g_causes[static_cast<size_t>(e.verdict)].Admit()) return;
  std::string ids;
  if (e.peer != nullptr) {
    for (const std::string& id : e.peer->All()) {
      if (!ids.empty()) ids += ',';
      ids += SanitizeForLog(id, 128);
    }
  }
  // One line, key="value" pairs, fixed order: easy to grep and to parse.
  std::string line = fmt::format(
      "audit: decision={} identity=\"{}\" identities=\"{}\" export=\"{}\" access={} from={} "
      "conn=C{}",
      VerdictName(e.verdict), e.peer != nullptr ? e.peer->Display() : "?", ids,
      SanitizeForLog(e.export_name), e.access.empty() ? "-" : e.access,
      e.address.empty() ? "?" : e.address, e.connection_id);
  if (e.stream_id != 0) line += fmt::format(" stream=S{}", e.stream_id);
  if (e.hidden) line += " answered=no-such-pipe";
  if (!e.detail.empty()) line += fmt::format(" why=\"{}\"", SanitizeForLog(e.detail, 200));
  LogWrite(granted ? LogLevel::kInfo : LogLevel::kWarn, line);
}

std::string FormatCounters(const Counters& k) {
  const TlsRefusalCounters& t = k.tls_refused;
  return fmt::format(
      "counters: connections_accepted={} connections_refused={} refused_max_connections={} "
      "refused_per_source={} refused_memory={} tls_handshake_failed={} tls_expired={} "
      "tls_not_yet_valid={} tls_revoked={} tls_unknown_ca={} tls_wrong_usage={} "
      "tls_no_certificate={} tls_not_tls={} tls_other={} protocol_errors={} streams_opened={} "
      "acl_denied={} wrong_access={} not_found={} invalid_names={} unavailable={} busy={} "
      "no_reader={} broken_pipe={} streams_revoked={} connections_revoked={} reloads={} "
      "reload_failures={} bytes_to_clients={} bytes_from_clients={} sessions_detached={} "
      "sessions_resumed={} sessions_expired={} resume_rejected={} refused_streams_identity={} "
      "refused_streams_total={} refused_pending_opens={} sessions_not_kept={} "
      "resume_protocol_errors={} log_lines_suppressed={}",
      k.connections_accepted.load(), k.connections_refused.load(), k.refused_max_connections.load(),
      k.refused_per_source.load(), k.refused_memory.load(), k.tls_handshake_failed.load(),
      t.expired.load(), t.not_yet_valid.load(), t.revoked.load(), t.unknown_ca.load(),
      t.wrong_usage.load(), t.no_certificate.load(), t.not_tls.load(), t.other.load(),
      k.protocol_errors.load(), k.streams_opened.load(), k.acl_denied.load(), k.wrong_access.load(),
      k.not_found.load(), k.invalid_names.load(), k.unavailable.load(), k.busy.load(),
      k.no_reader.load(), k.broken_pipe.load(), k.streams_revoked.load(),
      k.connections_revoked.load(), k.reloads.load(), k.reload_failures.load(),
      k.bytes_to_clients.load(), k.bytes_from_clients.load(), k.sessions_detached.load(),
      k.sessions_resumed.load(), k.sessions_expired.load(), k.resume_rejected.load(),
      k.refused_streams_identity.load(), k.refused_streams_total.load(),
      k.refused_pending_opens.load(), k.sessions_not_kept.load(), k.resume_protocol_errors.load(), SuppressedLogLines());
}

}  // namespace pipegate::gateway
