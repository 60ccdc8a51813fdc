#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "pipegate/status.h"

#include "uv/handles.h"

namespace pipegate::uvglue {

/// @brief What a handler answers to one request.
struct HttpResponse {
  int status = 200;  ///< 200, 404, 405, ... (the reason phrase is derived from it).
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

/// @brief Caps on what a client of the server can make it hold.
struct HttpLimits {
  size_t max_connections = 16;      ///< Open at once; one more is closed at once.
  size_t max_request_bytes = 8192;  ///< Request line and headers; beyond: 431 and close.
  uint64_t timeout_ms = 5000;       ///< A request (and its answer) must complete within this.
};

/// @brief A minimal plain-HTTP/1.x server for scrapes and probes (GET /metrics, /healthz): one
/// request per connection, answered with `Connection: close`, then the connection is closed.
/// A request body is never read; HEAD is answered like GET without the body; any other method
/// gets 405. Nothing a client sends is logged.
///
/// Ownership: owned by whoever serves it; destroying it closes the listener and every
/// connection (their memory is freed in libuv's close callbacks, which need the loop to run on:
/// Loop::Close() does). Thread: the loop's thread only; the handler runs there too.
class HttpServer {
 public:
  using Handler = std::function<HttpResponse(std::string_view path)>;

  /// @brief Serves @p handler on a duplicate of @p listening_fd (bound and listening).
  static Result<std::unique_ptr<HttpServer>> Open(Loop& loop, int listening_fd, Handler handler,
                                                  const HttpLimits& limits);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// @return Connections refused because max_connections were open (for tests and logs).
  uint64_t refused() const noexcept;

  struct State;  ///< Shared with the connections' callbacks (defined in http_server.cc).

 private:
  explicit HttpServer(State* state) : state_(state) {}
  State* state_;  ///< Freed once the listener and every connection have closed.
};

/// @return The parsed request target of a complete request head (`GET /metrics HTTP/1.1`), in
/// @p method and @p path; false if the head is not an HTTP/1.x request line. Exposed for tests.
bool ParseHttpRequestLine(std::string_view head, std::string_view* method, std::string_view* path);

}  // namespace pipegate::uvglue
