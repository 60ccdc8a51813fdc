// The client side of a Connection: resolving the gateway's name, dialling its addresses in
// order, and the deadlines of both (see connection.h).

#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "pipegate/address.h"

#include "uv/connection.h"

namespace pipegate::uvglue {

std::string Connection::FormatPeer(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    uv_ip4_name(sin, host, sizeof host);
    port = ntohs(sin->sin_port);
    return fmt::format("{}:{}", host, port);
  }
  if (ss.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    uv_ip6_name(sin6, host, sizeof host);
    port = ntohs(sin6->sin6_port);
    return fmt::format("[{}]:{}", host, port);
  }
  return "?";
}

Connection* Connection::Connect(uv_loop_t* loop, const std::string& host, uint16_t port,
                                std::shared_ptr<const TlsContext> tls,
                                const ConnectionOptions& options, ConnectionHandler* handler,
                                Mux* mux) {
  auto* c = new Connection(loop, std::make_unique<TlsSession>(std::move(tls), host), host, options,
                           handler, mux);
  c->port_ = port;
  c->state_ = State::kResolving;
  // The handler hears of nothing before Connect() returns (the caller is still to store the
  // pointer): what is known now, a numeric address (dialled without the resolver, so without
  // libuv's thread pool, which a short-lived `pipegate connect` would start and join for
  // nothing) or a resolver that refused at once, waits for this loop turn's check phase
  // (OnCheck → DialDeferred).
  if (!ParseNumericAddress(host, port, &c->literal_address_)) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    std::string service = std::to_string(port);
    int rc = uv_getaddrinfo(loop, &c->resolve_req_, &Connection::OnResolved, host.c_str(),
                            service.c_str(), &hints);
    if (rc == 0) {
      c->resolving_ = true;
      return c;
    }
    c->dial_failure_ =
        Status(Code::kConnect, fmt::format("cannot resolve '{}': {}", host, uv_strerror(rc)));
  }
  c->Flush();
  return c;
}

void Connection::DialDeferred() {
  if (!dial_failure_.ok()) {
    Abort(dial_failure_);
    return;
  }
  candidates_.assign(1, literal_address_);
  DialNext();
}

void Connection::OnResolved(uv_getaddrinfo_t* req, int status, addrinfo* res) noexcept {
  auto* self = static_cast<Connection*>(req->data);
  self->resolving_ = false;
  if (self->state_ >= State::kClosing) {
    uv_freeaddrinfo(res);
    self->CloseHandles();
    self->MaybeFree();
    return;
  }
  if (status != 0 || res == nullptr) {
    uv_freeaddrinfo(res);
    self->Abort(Status(Code::kConnect,
                       fmt::format("cannot resolve '{}': {}", self->host_, uv_strerror(status))));
    return;
  }
  // Every address, in the resolver's order (RFC 6724): the first that answers is used.
  for (const addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
    sockaddr_storage ss{};
    std::memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    self->candidates_.push_back(ss);
  }
  uv_freeaddrinfo(res);
  if (self->candidates_.empty()) {
    self->Abort(
        Status(Code::kConnect, fmt::format("cannot resolve '{}': no address", self->host_)));
    return;
  }
  self->DialNext();
}

void Connection::DialNext() {
  const sockaddr_storage& ss = candidates_[next_candidate_++];
  peer_address_ = FormatPeer(ss);
  state_ = State::kConnecting;
  attempt_started_ms_ = uv_now(loop_);
  int rc = uv_tcp_connect(&connect_req_, &tcp_, reinterpret_cast<const sockaddr*>(&ss),
                          &Connection::OnConnected);
  if (rc != 0) {
    DialFailed(fmt::format("{}: {}", peer_address_, uv_strerror(rc)));
    return;
  }
  connecting_ = true;
}

void Connection::DialFailed(const std::string& what) {
  if (!dial_errors_.empty()) dial_errors_ += "; ";
  dial_errors_ += what;
  if (next_candidate_ >= candidates_.size()) {
    Abort(Status(Code::kConnect,
                 candidates_.size() == 1
                     ? fmt::format("could not connect to {}", dial_errors_)
                     : fmt::format("could not connect to '{}' ({})", host_, dial_errors_)));
    return;
  }
  // A socket whose connect failed cannot be used again, and the next address may be of the
  // other family: the next attempt gets a fresh one once this one is closed.
  redialing_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), &Connection::OnRedialClosed);
}

bool Connection::GiveUpOnSlowAddress(uint64_t now) {
  if (!connecting_ || redialing_ || next_candidate_ >= candidates_.size()) return false;
  // Each address gets its share of the time: one that drops SYNs would use up all of it.
  if (now - attempt_started_ms_ < options_.handshake_timeout_ms / candidates_.size()) return false;
  if (!dial_errors_.empty()) dial_errors_ += "; ";
  dial_errors_ += fmt::format("{}: timed out", peer_address_);
  redialing_ = true;
  // Cancels the connect: OnConnected(UV_ECANCELED) runs first, then OnRedialClosed.
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), &Connection::OnRedialClosed);
  return true;
}

void Connection::OnRedialClosed(uv_handle_t* handle) noexcept {
  auto* self = static_cast<Connection*>(handle->data);
  self->redialing_ = false;
  if (self->state_ >= State::kClosing) {  // Closed meanwhile (CloseHandles skipped tcp_).
    self->MaybeFree();
    return;
  }
  uv_tcp_init(self->loop_, &self->tcp_);
  self->tcp_.data = self;
  self->DialNext();
}

void Connection::OnConnected(uv_connect_t* req, int status) noexcept {
  auto* self = static_cast<Connection*>(req->data);
  self->connecting_ = false;
  if (self->redialing_) return;  // Given up on (GiveUpOnSlowAddress); OnRedialClosed goes on.
  if (self->state_ >= State::kClosing) {
    self->CloseHandles();
    return;
  }
  if (status != 0) {
    self->DialFailed(fmt::format("{}: {}", self->peer_address_, uv_strerror(status)));
    return;
  }
  self->StartTls();
  self->DoFlush();  // The ClientHello.
}

void Connection::CheckHandshakeDeadline(uint64_t now) {
  if (GiveUpOnSlowAddress(now)) return;
  if (now - started_ms_ < options_.handshake_timeout_ms) return;
  if (state_ >= State::kHandshaking) {
    Abort(Status(Code::kTls, "TLS failed: handshake timed out"));
  } else if (state_ == State::kConnecting) {
    next_candidate_ = candidates_.size();  // The whole dial is out of time: no next address.
    DialFailed(fmt::format("{}: timed out", peer_address_));
  } else {
    Abort(Status(Code::kConnect, "could not connect: timed out"));  // Still resolving.
  }
}

}  // namespace pipegate::uvglue
