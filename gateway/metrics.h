#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "counters.h"

namespace pipegate::gateway {

/// @brief Everything /metrics reports, read at one moment (each value on its own: a scrape is
/// not a snapshot across workers).
struct MetricsView {
  struct Export {
    std::string name;
    uint64_t streams_open = 0;
    uint64_t streams_opened = 0;
    uint64_t bytes_sent = 0;      ///< To clients.
    uint64_t bytes_received = 0;  ///< From clients.
  };
  const Counters* counters = nullptr;  ///< Required.
  uint64_t log_lines_suppressed = 0;
  uint64_t connections_open = 0;
  uint64_t streams_open = 0;
  uint64_t sessions_detached = 0;            ///< Waiting for a resume now.
  uint64_t replay_bytes = 0;                 ///< Held for replay, every session together.
  std::vector<Export> exports;               ///< Of the running configuration, by name.
  std::vector<uint64_t> worker_loop_lag_us;  ///< Index = worker.
  uint64_t reload_time_unix = 0;             ///< When the running configuration was loaded.
};

/// @brief Renders @p view in the Prometheus text exposition format (version 0.0.4).
///
/// Names: `pipegate_<counter>_total` for every counter of PIPEGATE_GATEWAY_COUNTERS (byte
/// counters as `pipegate_<what>_bytes_total`), `pipegate_tls_handshake_failures_total{reason}`
/// for the TLS refusal counters, gauges for what is open now, per-export series labelled
/// `export`, `pipegate_worker_loop_lag_seconds{worker}` and `pipegate_build_info`. Units are
/// base units (bytes, seconds). Thread: any.
std::string RenderPrometheus(const MetricsView& view);

}  // namespace pipegate::gateway
