#pragma once

#include <cstdint>
#include <memory>

#include "pipegate/config.h"

#include "counters.h"
#include "export_open.h"
#include "replay_budget.h"
#include "uv/stream_link.h"

namespace pipegate::gateway {

/// @brief One local end of one stream on an export: a StreamLink that also holds an instance
/// of the export and a stream charge (both given back when it is destroyed) and counts its
/// bytes.
///
/// Ownership: a std::unique_ptr in its session's stream table. Destroying it is synchronous:
/// StreamLink's destructor closes its LocalPipes, which free themselves in their close
/// callbacks. Thread: the session's loop.
class ExportStream : public uvglue::StreamLink {
 public:
  ExportStream(uvglue::StreamLinkOwner* owner, Counters* counters, uint32_t id,
               const ExportConfig& e, ExportInstance instance, StreamCharge charge)
      : StreamLink(owner, id, e.name),
        counters_(counters),
        charge_(std::move(charge)),
        instance_(std::move(instance)) {
    if (ExportSlot* slot = instance_.slot()) set_byte_totals(&slot->bytes);
  }
  ~ExportStream() override {
    counters_->bytes_to_clients += bytes_sent();
    counters_->bytes_from_clients += bytes_received();
    if (local_error().code() == Code::kBrokenPipe) counters_->broken_pipe++;
  }

  /// @return The export's live state, shared by its streams.
  ExportSlot* slot() const noexcept { return instance_.slot(); }

 private:
  Counters* counters_;  ///< The gateway's; outlives every stream.
  StreamCharge charge_;
  ExportInstance instance_;  ///< Declared last: released first, before the charge.
};

using ExportStreamPtr = std::unique_ptr<ExportStream>;

}  // namespace pipegate::gateway
