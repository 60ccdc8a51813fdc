#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "pipegate/config.h"
#include "pipegate/local_path.h"
#include "pipegate/tls.h"

#include "fanout.h"
#include "uv/stream_link.h"

namespace pipegate::gateway {

/// @brief Live state of one export name, kept across reloads (instance count).
///
/// Thread: shared by every worker; only ExportInstance touches the count.
struct ExportSlot {
  std::atomic<uint32_t> in_use{0};          ///< Streams open on the export now.
  std::atomic<uint64_t> streams_opened{0};  ///< Streams granted since the export appeared.
  uvglue::StreamByteTotals bytes;           ///< Bytes its streams moved, as they move.
  FanoutSlot fanout;                        ///< The FIFO reader of a fan-out export.
};

/// @brief An immutable view of the configuration that workers serve from. A reload builds a new
/// one; connections keep the one they started with for their TLS, and look exports up in the
/// newest one.
struct Snapshot {
  GatewayConfig config;
  std::shared_ptr<const TlsContext> tls;
  std::map<std::string, std::shared_ptr<ExportSlot>> slots;  ///< By export name.
  /// By export name, for `create = true` FIFOs: who may own the FIFO and how open it may be.
  std::map<std::string, AdoptRule> fifo_rules;

  /// @return The rule a `create = true` FIFO export must satisfy, or nullptr for other exports.
  const AdoptRule* FifoRuleFor(const std::string& export_name) const {
    auto it = fifo_rules.find(export_name);
    return it == fifo_rules.end() ? nullptr : &it->second;
  }
};

}  // namespace pipegate::gateway
