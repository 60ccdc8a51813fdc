#pragma once

#include <cstdint>
#include <memory>

#include "pipegate/config.h"

#include "counters.h"
#include "export_open.h"
#include "fanout.h"
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
  /// @brief Makes this stream a reader of a fan-out hub, whose socket pair is its input.
  void set_fanout(FanoutSubscriptionPtr subscription) { fanout_ = std::move(subscription); }

 protected:
  /// A fan-out reader that the hub dropped ends with the hub's reason, not a plain EOF.
  Status InputEndStatus() const override { return fanout_ ? fanout_->status() : Status(); }

 private:
  Counters* counters_;  ///< The gateway's; outlives every stream.
  StreamCharge charge_;
  ExportInstance instance_;       ///< Released after the subscription, before the charge.
  FanoutSubscriptionPtr fanout_;  ///< Declared last: detaches first.
};

using ExportStreamPtr = std::unique_ptr<ExportStream>;

}  // namespace pipegate::gateway
