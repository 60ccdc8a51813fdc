// Connection admission and the mapping of the [limits] table onto connection and mux options.

#include "connection_limits.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <malloc.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "pipegate/frame.h"

namespace pipegate {

MuxOptions MuxOptionsFor(const Limits& limits) {
  MuxOptions options;
  options.is_client = false;
  options.max_streams = limits.max_streams_per_connection;
  options.max_frame_payload = std::min<uint32_t>(
      limits.max_frame_size + static_cast<uint32_t>(kDataPrefixSize), kMaxFramePayloadLimit);
  options.session_window = limits.max_bytes_in_flight_per_connection;
  options.stream_window = std::min(options.stream_window, options.session_window);
  options.early_data = std::min(options.early_data, options.stream_window);
  options.max_unacked_per_stream = limits.max_replay_bytes_per_stream;
  options.max_unacked_per_session = limits.max_replay_bytes_per_session;
  return options;
}

uvglue::ConnectionOptions ConnectionOptionsFor(const Limits& limits) {
  uvglue::ConnectionOptions options;
  options.mux = MuxOptionsFor(limits);
  options.handshake_timeout_ms = limits.handshake_timeout_ms;
  options.idle_timeout_ms = limits.idle_timeout_ms;
  options.max_write_backlog = limits.max_write_backlog_per_connection;
  return options;
}

std::string SourceKey(const std::string& peer_address) {
  std::string host = peer_address;
  if (!host.empty() && host.front() == '[') {
    host = host.substr(
        1, host.find(']') == std::string::npos ? std::string::npos : host.find(']') - 1);
  } else if (size_t colon = host.rfind(':'); colon != std::string::npos) {
    host.resize(colon);
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) != 1) return host;  // IPv4, or "?" if unknown.
  static constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(v6.s6_addr, kMappedPrefix, sizeof kMappedPrefix) == 0) {
    return fmt::format("{}.{}.{}.{}", v6.s6_addr[12], v6.s6_addr[13], v6.s6_addr[14],
                       v6.s6_addr[15]);
  }
  std::memset(v6.s6_addr + 8, 0, 8);
  char text[INET6_ADDRSTRLEN] = "";
  inet_ntop(AF_INET6, &v6, text, sizeof text);
  return std::string(text) + "/64";
}

ConnectionLimiter::ConnectionLimiter() : state_(std::make_shared<State>()) {}

ConnectionLimiter::Admission ConnectionLimiter::Admit(const std::string& peer_address,
                                                      const Limits& limits) {
  Admission admission;
  std::string source = SourceKey(peer_address);
  std::lock_guard<std::mutex> lock(state_->mu);
  const uint32_t from_source = state_->per_source[source];
  if (state_->total >= limits.max_connections) {
    admission.outcome = Outcome::kTotal;
    admission.reason = fmt::format("too many connections (limit {})", limits.max_connections);
  } else if (from_source >= limits.max_connections_per_source) {
    admission.outcome = Outcome::kPerSource;
    admission.reason = fmt::format("too many connections from {} (limit {})", source,
                                   limits.max_connections_per_source);
  } else if (state_->total >= limits.ConnectionsByMemory()) {
    // Each connection may have max_bytes_in_flight_per_connection in flight; admitting one
    // more would let the sum pass max_bytes_in_flight.
    admission.outcome = Outcome::kMemory;
    admission.reason = fmt::format(
        "too many bytes in flight: {} connections of {} bytes reach max_bytes_in_flight ({})",
        state_->total, limits.max_bytes_in_flight_per_connection, limits.max_bytes_in_flight);
  }
  if (admission.outcome != Outcome::kAdmitted) {
    if (from_source == 0) state_->per_source.erase(source);
    ++state_->churn;
    return admission;
  }
  ++state_->total;
  ++state_->per_source[source];
  // The token gives the slot back when the last copy of it is dropped (the connection is
  // freed). It holds the state, not the limiter, so the order of destruction does not matter.
  std::shared_ptr<State> state = state_;
  admission.token = std::shared_ptr<const void>(state.get(), [state, source](const void*) {
    std::lock_guard<std::mutex> release_lock(state->mu);
    --state->total;
    ++state->churn;
    auto it = state->per_source.find(source);
    if (it != state->per_source.end() && --it->second == 0) state->per_source.erase(it);
  });
  return admission;
}

bool ConnectionLimiter::TrimMemoryAfterChurn(uint64_t churn) {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->churn < churn) return false;
    state_->churn = 0;
  }
  malloc_trim(0);
  return true;
}

uint64_t ConnectionLimiter::total() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->total;
}

uint32_t ConnectionLimiter::from(const std::string& source) const {
  std::lock_guard<std::mutex> lock(state_->mu);
  auto it = state_->per_source.find(source);
  return it == state_->per_source.end() ? 0 : it->second;
}

}  // namespace pipegate
