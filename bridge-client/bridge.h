#pragma once

#include <memory>
#include <optional>
#include <string>

#include "pipegate/address.h"
#include "pipegate/frame.h"
#include "pipegate/local_path.h"
#include "pipegate/status.h"
#include "pipegate/tls.h"

namespace pipegate::bridge {

enum class Command { kLs, kStat, kCat, kWrite, kConnect, kMount };

/// @brief Everything a bridge command needs, already parsed and validated by main.
struct BridgeOptions {
  Command command = Command::kCat;
  PipeAddress address;
  std::string local_path;  ///< mount: where the pipe appears.
  std::string present_as;  ///< mount: "", "unix" or "fifo".
  uint32_t mode = 0600;    ///< mount --mode: the mounted FIFO's or socket's mode.
  FileOwner owner;         ///< mount --owner/--group: who the mounted path is given to.
  uint32_t wait_ms = 0;    ///< --wait, for busy and no reader.
  bool lines = false;      ///< write --lines.
  bool progress = false;   ///< cat, write, connect --progress: a meter on stderr.
  bool json = false;       ///< ls, stat --json.
  /// cat --count N / --count-lines N: end (exit 0) after N bytes or N lines; 0 = no limit.
  uint64_t count = 0;
  bool count_lines = false;
  bool follow = false;  ///< cat --follow: attached across the writers' EOFs.
  /// connect --messages: "" (none), "length" (4-byte big-endian length before each message)
  /// or "lines" (one message per line), for a message-mode (seqpacket) export.
  std::string messages;
  uint64_t keepalive_ms = 0;       ///< --keepalive: PING interval (dead after 3×); 0 = default.
  uint64_t resume_timeout_ms = 0;  ///< --resume-timeout: give up reconnecting after this; 0 =
                                   ///< as long as the gateway keeps the session.
  TlsClientOptions tls;
};

/// @brief What an exec export's process ending means for the bridge (docs/decisions.md
/// "Process exports"): exited N → exit status N (status OK, nothing printed, whatever N is);
/// killed by signal S → 128+S with a message; killed by the export's timeout → 124 (as
/// timeout(1)) with a message.
struct ProcessOutcome {
  int exit_status = 0;
  Status status;  ///< OK, or the message to print.
};
ProcessOutcome OutcomeOfExit(const ExitPayload& exit);

/// @brief Runs one bridge command to completion on a fresh loop.
/// @param process_exit If not null, gets the exit status an exec export's process decided
/// (OutcomeOfExit), which then replaces the one the returned status' code gives.
/// @return The status whose code gives the exit status; its message is the cause (without
/// the address, which the caller adds).
Status RunBridge(const BridgeOptions& options, std::optional<int>* process_exit = nullptr);

}  // namespace pipegate::bridge
