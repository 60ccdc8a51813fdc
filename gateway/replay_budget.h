#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

#include "pipegate/config.h"
#include "pipegate/mux.h"

#include "session_registry.h"

namespace pipegate::gateway {

/// @brief One stream counted against its identity's and the gateway's stream caps; the count
/// is given back when this is destroyed. Move-only.
///
/// Thread: any; the counts are atomics shared by every worker.
class StreamCharge {
 public:
  /// @brief Which cap refused a stream.
  enum class Refusal { kIdentity, kTotal };

  /// @brief Counts one stream of @p usage (may be null: no identity yet) and of @p totals
  /// unless that would pass max_streams_per_identity or max_streams.
  /// @return The charge, or nullopt with @p refused set (nothing stays counted).
  static std::optional<StreamCharge> TryTake(std::shared_ptr<IdentityUsage> usage, Totals* totals,
                                             const Limits& limits, Refusal* refused);

  StreamCharge(std::shared_ptr<IdentityUsage> usage, Totals* totals)
      : usage_(std::move(usage)), totals_(totals) {}
  StreamCharge(StreamCharge&& other) noexcept
      : usage_(std::move(other.usage_)), totals_(std::exchange(other.totals_, nullptr)) {}
  StreamCharge& operator=(StreamCharge&&) = delete;
  StreamCharge(const StreamCharge&) = delete;
  ~StreamCharge() {
    if (usage_) usage_->streams.fetch_sub(1);
    if (totals_ != nullptr) totals_->streams.fetch_sub(1);
  }

 private:
  std::shared_ptr<IdentityUsage> usage_;
  Totals* totals_;
};

/// @brief The replay bytes of one session, counted against its identity's and the gateway's
/// caps (max_replay_bytes_per_identity, max_replay_bytes).
///
/// Ownership: a member of its session, declared before the Mux that uses it. Thread: the
/// session's worker calls it; the counters it shares are atomics.
class SessionReplayBudget final : public ReplayBudget {
 public:
  SessionReplayBudget(Totals* totals, const Limits& limits)
      : totals_(totals),
        identity_cap_(limits.max_replay_bytes_per_identity),
        total_cap_(limits.max_replay_bytes) {}
  /// @brief Charges the identity from now on (once TLS says who the client is).
  void Bind(std::shared_ptr<IdentityUsage> usage) { usage_ = std::move(usage); }
  uint64_t Available() const override;
  void Take(uint64_t n) override;
  void Give(uint64_t n) override;

 private:
  Totals* totals_;
  std::shared_ptr<IdentityUsage> usage_;
  uint64_t identity_taken_ = 0;
  uint64_t identity_cap_;
  uint64_t total_cap_;
};

}  // namespace pipegate::gateway
