#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "pipegate/tls.h"

namespace pipegate::gateway {

// Every counter of the gateway: X(name, what it counts). The one list from which the struct,
// the SIGUSR1 line and the JSON are made; add a counter here and nowhere else.
#define PIPEGATE_GATEWAY_COUNTERS(X)                                                      \
  X(connections_accepted, "TCP connections accepted")                                     \
  X(connections_refused, "accept() failures")                                             \
  X(refused_max_connections, "connections over max_connections")                          \
  X(refused_per_source, "connections over max_connections_per_source")                    \
  X(refused_memory, "connections over max_bytes_in_flight")                               \
  X(tls_handshake_failed, "connections that never finished TLS and SETTINGS")             \
  X(protocol_errors, "connections closed for a malformed or oversized frame")             \
  X(streams_opened, "streams granted")                                                    \
  X(acl_denied, "opens refused by an allow list")                                         \
  X(wrong_access, "opens allowed, but for the other direction")                           \
  X(not_found, "opens of names not exported")                                             \
  X(invalid_names, "opens with a name SPEC section 2 forbids")                            \
  X(unavailable, "opens whose local pipe is not a FIFO or socket, a symlink, or fails")   \
  X(busy, "opens refused: every instance in use")                                         \
  X(no_reader, "opens refused: no FIFO reader or socket listener, or no such file (yet)") \
  X(broken_pipe, "streams ended because the local reader went away")                      \
  X(streams_revoked, "streams ended by a reload (reload_revokes)")                        \
  X(connections_revoked, "sessions ended because a reload refuses their certificate")     \
  X(reloads, "reloads applied")                                                           \
  X(reload_failures, "reloads refused (the running configuration was kept)")              \
  X(bytes_to_clients, "bytes sent to clients (streams that ended)")                       \
  X(bytes_from_clients, "bytes received from clients (streams that ended)")               \
  X(sessions_detached, "sessions kept for a resume after losing their connection")        \
  X(sessions_resumed, "sessions resumed")                                                 \
  X(sessions_expired, "detached sessions that expired")                                   \
  X(resume_rejected, "RESUMEs refused")                                                   \
  X(resume_protocol_errors, "RESUMEs of the connection's own session")                    \
  X(sessions_not_kept, "lost sessions not kept: over a detached-session cap")             \
  X(refused_streams_identity, "opens over max_streams_per_identity")                      \
  X(refused_streams_gateway, "opens over max_streams")                                    \
  X(refused_pending_opens, "waiting opens over max_pending_opens_per_connection")         \
  X(opens_waited, "opens that began to wait (--wait) for a busy export or a reader")      \
  X(early_data_streams, "streams granted that could send data behind their OPEN")         \
  X(mapped_opens, "streams opened as a mapped local account (identity mapping)")          \
  X(mapping_refused, "opens refused: the identity maps to no local account")              \
  X(mapped_denied, "opens refused: the mapped account may not open the local pipe")       \
  X(identity_helper_failures, "mapped opens failed: the identity helper gone or stuck")   \
  X(fanout_dropped, "fan-out readers dropped for falling more than fanout_lag behind")    \
  X(exec_started, "processes started for exec exports")                                   \
  X(exec_failed, "exec processes that could not be started")                              \
  X(refused_exec_processes, "exec opens over max_exec_processes")                         \
  X(exec_timeouts, "exec processes killed by their export's timeout")                     \
  X(exec_killed, "exec processes killed because their stream ended first")

/// @brief Counters of every class of event that opens, closes or refuses something.
///
/// Thread: atomics, bumped by every worker; read at any time (a dump is not a snapshot).
struct Counters {
#define PIPEGATE_COUNTER_FIELD(name, help) std::atomic<uint64_t> name{0};
  PIPEGATE_GATEWAY_COUNTERS(PIPEGATE_COUNTER_FIELD)
#undef PIPEGATE_COUNTER_FIELD
  TlsRefusalCounters tls_refused;  ///< Handshakes refused, by cause (reported as tls_NAME).
};

/// @brief Calls @p visit(name, value, help) for every counter, in the order of the lists:
/// the gateway's, then tls_NAME for each TLS refusal, then log_lines_suppressed.
template <class Visit>
void VisitCounters(const Counters& k, uint64_t log_lines_suppressed, Visit&& visit) {
#define PIPEGATE_VISIT_COUNTER(name, help) visit(std::string_view(#name), k.name.load(), help);
  PIPEGATE_GATEWAY_COUNTERS(PIPEGATE_VISIT_COUNTER)
#undef PIPEGATE_VISIT_COUNTER
#define PIPEGATE_VISIT_TLS_COUNTER(name, help) \
  visit(std::string_view("tls_" #name), k.tls_refused.name.load(), help);
  PIPEGATE_TLS_REFUSAL_COUNTERS(PIPEGATE_VISIT_TLS_COUNTER)
#undef PIPEGATE_VISIT_TLS_COUNTER
  visit(std::string_view("log_lines_suppressed"), log_lines_suppressed,
        "log lines suppressed by log_lines_per_second");
}

/// @return Every counter as one JSON object, `{"connections_accepted":3,...}`, in list order.
std::string CountersJson(const Counters& counters);

}  // namespace pipegate::gateway
