#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "pipegate/acl.h"

namespace pipegate::gateway {

/// @brief The outcome of one access decision, as the audit log names it.
enum class Verdict : uint8_t {
  kGranted,       ///< The stream was opened.
  kAccessDenied,  ///< The identity is not on the export's allow list.
  kWrongAccess,   ///< Allowed, but the export does not serve the direction asked for.
  kNoSuchPipe,    ///< No export of that name.
  kInvalidName,   ///< The name breaks SPEC §2 or max_name_length.
  kBusy,          ///< Every instance is taken.
  kNoReader,      ///< A write export without a local reader.
  kUnavailable,   ///< The local pipe cannot be opened (missing, not a FIFO, a symlink, ...).
  kRevoked,       ///< A reload took the access away from an open stream.
};

/// @return The word the audit line uses for @p verdict ("granted", "access-denied", ...).
const char* VerdictName(Verdict verdict) noexcept;

/// @brief Everything one audit line says.
struct AuditEvent {
  Verdict verdict = Verdict::kGranted;
  const PeerIdentity* peer = nullptr;  ///< Who asked (required).
  std::string_view export_name;        ///< As the client sent it (escaped and cut when logged).
  std::string_view access;             ///< "read", "write", "duplex", or "" if unknown.
  std::string_view address;            ///< The client's "ip:port".
  uint64_t connection_id = 0;
  uint32_t stream_id = 0;
  std::string_view detail;  ///< Why, in words (optional).
  bool hidden = false;      ///< hide_existence made the client see "no such pipe".
  std::string_view as;      ///< Identity mapping: the local account (MappedAccount::Display).
};

/// @brief Writes one `audit:` line (at info level, or warn for refusals): every access
/// decision is logged, so that "who opened what, from where" can be answered from the journal.
/// Each verdict is a LogCause of its own: past `log_lines_per_second` lines of one verdict in a
/// second, lines are counted, not written, and summarised ("audit: suppressed N lines of
/// decision=no-such-pipe in the last 1.0 s"), so a flood of refused OPENs cannot flood the log
/// while a granted open is still logged. Thread: any.
void Audit(const AuditEvent& event);

// SanitizeForLog() lives in pipegate/log.h (namespace pipegate), for every log line.

}  // namespace pipegate::gateway
