// The audit trail of access decisions: one line per decision, rate-limited per cause.

#include "audit.h"

#include <fmt/format.h>

#include <iterator>
#include <string>

#include "pipegate/log.h"

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
  if (!e.as.empty()) line += fmt::format(" as=\"{}\"", SanitizeForLog(e.as, 128));
  if (e.hidden) line += " answered=no-such-pipe";
  if (!e.detail.empty()) line += fmt::format(" why=\"{}\"", SanitizeForLog(e.detail, 200));
  LogWrite(granted ? LogLevel::kInfo : LogLevel::kWarn, line);
}

}  // namespace pipegate::gateway
