#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "pipegate/acl.h"
#include "pipegate/config.h"
#include "pipegate/frame.h"
#include "pipegate/local_path.h"
#include "pipegate/status.h"

#include "audit.h"
#include "identity_map.h"
#include "snapshot.h"

namespace pipegate::gateway {

class IdentityHelper;

/// @brief What the configuration says about one OPEN request, before any file is touched.
struct OpenDecision {
  /// The export to open when granted; null when refused.
  const ExportConfig* export_config = nullptr;
  /// The audit verdict: kGranted, or why the request was refused.
  Verdict verdict = Verdict::kGranted;
  bool hidden = false;  ///< hide_existence answered "no such pipe" for a refused ACL.
  ErrorCode error = ErrorCode::kNoError;  ///< The code the refusal sends (when refused).
  std::string reason;                     ///< The text the refusal sends (when refused).
  std::string audit_detail;               ///< What the audit line adds.
  /// Identity mapping: the account to open as when granted (nullopt: as the gateway itself).
  std::optional<MappedAccount> account;
  bool unmapped = false;  ///< Refused because no identity map entry matches.

  bool granted() const noexcept { return export_config != nullptr; }
};

/// @return The OPEN_OK a stream of @p e is accepted with: its kind, the access granted (a fifo
/// export's own direction; duplex for the others) and, for a seqpacket export, message mode.
OpenOkPayload GrantFor(const ExportConfig& e);

/// @brief Decides an OPEN of @p open by @p peer against @p snap: name validity (SPEC §2 and
/// max_name_length), existence, the allow list (with hide_existence), for a fifo export the
/// direction, and early data only where the grant fits it (EarlyDataFits). Pure: no I/O, no
/// counters, no logging; the caller counts and audits.
/// @return The decision; on a grant, `export_config` points into @p snap, which must outlive it.
OpenDecision Authorize(const Snapshot& snap, const PeerIdentity& peer, const OpenPayload& open);

/// @brief One instance of an export held by a stream: the export's `in_use` count against its
/// max_clients, given back when this is destroyed. Move-only.
///
/// Thread: any (the count is an atomic shared by every worker).
class ExportInstance {
 public:
  /// @brief Takes an instance of @p slot unless @p max_clients (0 = unlimited) are in use.
  /// @return The instance, or nullopt (nothing taken) when every instance is in use.
  static std::optional<ExportInstance> TryAcquire(std::shared_ptr<ExportSlot> slot,
                                                  uint32_t max_clients);

  ExportInstance(ExportInstance&& other) noexcept = default;
  ExportInstance& operator=(ExportInstance&& other) noexcept {
    if (this != &other) {
      Release();
      slot_ = std::move(other.slot_);
    }
    return *this;
  }
  ExportInstance(const ExportInstance&) = delete;
  ExportInstance& operator=(const ExportInstance&) = delete;
  ~ExportInstance() { Release(); }

  /// @return False once moved from.
  bool held() const noexcept { return slot_ != nullptr; }
  /// @return The export's live state (null once moved from).
  ExportSlot* slot() const noexcept { return slot_.get(); }

 private:
  explicit ExportInstance(std::shared_ptr<ExportSlot> slot) : slot_(std::move(slot)) {}
  void Release() noexcept {
    if (slot_) slot_->in_use.fetch_sub(1);
    slot_.reset();
  }

  std::shared_ptr<ExportSlot> slot_;  ///< Null once moved from.
};

/// @brief Opens the local end of export @p e for one stream: a FIFO (non-blocking, in the
/// export's direction) or a connection to a Unix socket. The last path component is never
/// followed when it is a symlink.
/// @param rule For a `create = true` FIFO, what the opened FIFO must satisfy; else null.
/// @param follow For a read FIFO export: open it read-write, so that it never reports EOF while
/// the stream holds it (kOpenFlagFollow); ignored otherwise.
/// @return The descriptor (the caller owns it; non-blocking, and for a unix export a
/// connected socket: LocalPipe::kNonBlockingSocket applies), or kNoReader/kBusy (worth retrying
/// while the client waits; kNoReader also when the path does not exist yet), kNotFound (the path is
/// not a FIFO or socket, or is a symlink) or kIo.
/// @param as When opening as a mapped account: a refusal by the local permissions (EACCES,
/// EPERM) is then kAccessDenied naming the account, instead of kIo. The caller (or the identity
/// helper) has switched to that account already.
Result<int> OpenExport(const ExportConfig& e, const AdoptRule* rule, bool follow = false,
                       const MappedAccount* as = nullptr);

/// @brief Opens export @p e as the mapped account @p as: itself when @p as is the gateway's own
/// account @p own, else through the identity @p helper (which may be null when none runs: then
/// it fails). Blocks the calling worker for at most the helper's reply timeout.
/// @return As OpenExport, plus kAccessDenied when the local permissions refuse @p as, and kIo
/// when the helper is gone or does not answer.
Result<int> OpenExportAs(const ExportConfig& e, const AdoptRule* rule, bool follow,
                         const MappedAccount& as, const MappedAccount& own, IdentityHelper* helper);

/// @brief Checks a FIFO descriptor opened for export @p e: still a FIFO, and for a created
/// FIFO the adoption @p rule; sets its pipe size. Closes @p fd when refusing.
Result<int> CheckOpenedFifo(const ExportConfig& e, int fd, const AdoptRule* rule);

/// @brief Who may own a `create = true` FIFO found in place for @p e, and its mode.
AdoptRule FifoRule(const GatewayConfig& config, const ExportConfig& e);

}  // namespace pipegate::gateway
