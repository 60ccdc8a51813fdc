#include "metrics.h"

#include <fmt/format.h>

#include <string_view>

#include <openssl/opensslv.h>

namespace pipegate::gateway {

namespace {

// A label value: backslash, double quote and newline escaped, as the format requires.
std::string LabelValue(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

class Writer {
 public:
  /// Starts a metric family: its HELP and TYPE lines.
  void Family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  void Sample(std::string_view name, uint64_t value, std::string_view labels = {}) {
    out_ += labels.empty() ? fmt::format("{} {}\n", name, value)
                           : fmt::format("{}{{{}}} {}\n", name, labels, value);
  }
  void Sample(std::string_view name, double value, std::string_view labels) {
    out_ += fmt::format("{}{{{}}} {}\n", name, labels, value);
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

// The Prometheus name of counter @p name: bytes_to_clients -> pipegate_to_clients_bytes_total.
std::string CounterName(std::string_view name) {
  constexpr std::string_view kBytes = "bytes_";
  if (name.substr(0, kBytes.size()) == kBytes) {
    return fmt::format("pipegate_{}_bytes_total", name.substr(kBytes.size()));
  }
  return fmt::format("pipegate_{}_total", name);
}

}  // namespace

std::string RenderPrometheus(const MetricsView& view) {
  Writer w;
  w.Family("pipegate_build_info", "gauge", "Versions this gateway was built with (always 1).");
  w.Sample("pipegate_build_info", uint64_t{1},
           fmt::format("version=\"{}\",openssl=\"{}\"", LabelValue(PIPEGATE_VERSION),
                       LabelValue(OPENSSL_VERSION_STR)));

  // Every counter of the gateway's list, in its order, then the TLS refusals by reason.
#define PIPEGATE_METRIC_COUNTER(name, help)       \
  {                                               \
    std::string metric = CounterName(#name);      \
    w.Family(metric, "counter", help ".");        \
    w.Sample(metric, view.counters->name.load()); \
  }
  PIPEGATE_GATEWAY_COUNTERS(PIPEGATE_METRIC_COUNTER)
#undef PIPEGATE_METRIC_COUNTER
  w.Family("pipegate_tls_handshake_failures_total", "counter",
           "TLS handshakes refused, by reason.");
#define PIPEGATE_METRIC_TLS(name, help)                                                     \
  w.Sample("pipegate_tls_handshake_failures_total", view.counters->tls_refused.name.load(), \
           "reason=\"" #name "\"");
  PIPEGATE_TLS_REFUSAL_COUNTERS(PIPEGATE_METRIC_TLS)
#undef PIPEGATE_METRIC_TLS
  w.Family("pipegate_log_lines_suppressed_total", "counter",
           "Log lines suppressed by log_lines_per_second.");
  w.Sample("pipegate_log_lines_suppressed_total", view.log_lines_suppressed);

  w.Family("pipegate_connections", "gauge", "Client connections open now.");
  w.Sample("pipegate_connections", view.connections_open);
  w.Family("pipegate_streams", "gauge", "Streams open now, every export together.");
  w.Sample("pipegate_streams", view.streams_open);
  w.Family("pipegate_sessions_detached", "gauge",
           "Sessions that lost their connection and wait for a resume.");
  w.Sample("pipegate_sessions_detached", view.sessions_detached);
  w.Family("pipegate_replay_held_bytes", "gauge",
           "Bytes sent but not yet acknowledged, held for replay after a resume.");
  w.Sample("pipegate_replay_held_bytes", view.replay_bytes);

  w.Family("pipegate_export_streams", "gauge", "Streams open now on each export.");
  for (const auto& e : view.exports) {
    w.Sample("pipegate_export_streams", e.streams_open,
             fmt::format("export=\"{}\"", LabelValue(e.name)));
  }
  w.Family("pipegate_export_streams_opened_total", "counter", "Streams granted on each export.");
  for (const auto& e : view.exports) {
    w.Sample("pipegate_export_streams_opened_total", e.streams_opened,
             fmt::format("export=\"{}\"", LabelValue(e.name)));
  }
  w.Family("pipegate_export_sent_bytes_total", "counter",
           "Bytes read from each export's local pipe and sent to clients.");
  for (const auto& e : view.exports) {
    w.Sample("pipegate_export_sent_bytes_total", e.bytes_sent,
             fmt::format("export=\"{}\"", LabelValue(e.name)));
  }
  w.Family("pipegate_export_received_bytes_total", "counter",
           "Bytes received from clients for each export.");
  for (const auto& e : view.exports) {
    w.Sample("pipegate_export_received_bytes_total", e.bytes_received,
             fmt::format("export=\"{}\"", LabelValue(e.name)));
  }

  w.Family("pipegate_worker_loop_lag_seconds", "gauge",
           "How late each worker's event loop ran a timer due once a second.");
  for (size_t i = 0; i < view.worker_loop_lag_us.size(); ++i) {
    w.Sample("pipegate_worker_loop_lag_seconds",
             static_cast<double>(view.worker_loop_lag_us[i]) / 1e6,
             fmt::format("worker=\"{}\"", i));
  }
  w.Family("pipegate_config_loaded_timestamp_seconds", "gauge",
           "When the running configuration was loaded (Unix time).");
  w.Sample("pipegate_config_loaded_timestamp_seconds", view.reload_time_unix);
  return w.Take();
}

}  // namespace pipegate::gateway
