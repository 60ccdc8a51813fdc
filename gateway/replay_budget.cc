#include "replay_budget.h"

#include <algorithm>

namespace pipegate::gateway {

std::optional<StreamCharge> StreamCharge::TryTake(std::shared_ptr<IdentityUsage> usage,
                                                  Totals* totals, const Limits& limits,
                                                  Refusal* refused) {
  // Each stream holds a descriptor, and a detached session keeps its streams for the resume
  // lifetime: hence caps per identity and for the whole gateway.
  if (usage && usage->streams.fetch_add(1) >= limits.max_streams_per_identity) {
    usage->streams.fetch_sub(1);
    *refused = Refusal::kIdentity;
    return std::nullopt;
  }
  if (totals->streams.fetch_add(1) >= limits.max_streams) {
    totals->streams.fetch_sub(1);
    if (usage) usage->streams.fetch_sub(1);
    *refused = Refusal::kTotal;
    return std::nullopt;
  }
  return std::optional<StreamCharge>(std::in_place, std::move(usage), totals);
}

uint64_t SessionReplayBudget::Available() const {
  uint64_t total = totals_->replay_bytes.load(std::memory_order_relaxed);
  uint64_t room = total_cap_ > total ? total_cap_ - total : 0;
  if (usage_) {
    uint64_t mine = usage_->replay_bytes.load(std::memory_order_relaxed);
    room = std::min(room, identity_cap_ > mine ? identity_cap_ - mine : 0);
  }
  return room;
}

void SessionReplayBudget::Take(uint64_t n) {
  totals_->replay_bytes.fetch_add(n, std::memory_order_relaxed);
  if (usage_) {
    usage_->replay_bytes.fetch_add(n, std::memory_order_relaxed);
    identity_taken_ += n;
  }
}

void SessionReplayBudget::Give(uint64_t n) {
  totals_->replay_bytes.fetch_sub(n, std::memory_order_relaxed);
  uint64_t mine = std::min(n, identity_taken_);
  if (usage_ && mine > 0) usage_->replay_bytes.fetch_sub(mine, std::memory_order_relaxed);
  identity_taken_ -= mine;
}

}  // namespace pipegate::gateway
