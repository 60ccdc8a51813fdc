#include "uv/http_server.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <list>
#include <string>
#include <utility>

#include <uv.h>

namespace pipegate::uvglue {

namespace {

const char* ReasonPhrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 431:
      return "Request Header Fields Too Large";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

}  // namespace

bool ParseHttpRequestLine(std::string_view head, std::string_view* method, std::string_view* path) {
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos || sp1 == 0) return false;
  size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp2 == sp1 + 1) return false;
  std::string_view version = line.substr(sp2 + 1);
  if (version != "HTTP/1.0" && version != "HTTP/1.1") return false;
  *method = line.substr(0, sp1);
  *path = line.substr(sp1 + 1, sp2 - sp1 - 1);
  // The query string does not choose the resource.
  if (size_t q = path->find('?'); q != std::string_view::npos) *path = path->substr(0, q);
  return true;
}

// Everything the callbacks need; outlives the HttpServer object until the last handle closes.
struct HttpServer::State {
  struct Conn {
    State* state = nullptr;
    uv_tcp_t tcp{};
    uv_timer_t timer{};
    uv_write_t write{};
    std::string in;
    std::string out;
    int open_handles = 2;
    bool closing = false;
    std::list<Conn>::iterator self;
  };

  uv_tcp_t listener{};
  bool listener_open = true;
  bool owner_gone = false;  // The HttpServer was destroyed: free when the last handle closes.
  Handler handler;
  HttpLimits limits;
  std::list<Conn> conns;
  uint64_t refused = 0;

  void MaybeFree() {
    if (owner_gone && !listener_open && conns.empty()) delete this;
  }

  void Close(Conn* c) {
    if (c->closing) return;
    c->closing = true;
    auto on_closed = [](uv_handle_t* h) {
      auto* conn = static_cast<Conn*>(h->data);
      if (--conn->open_handles > 0) return;
      State* s = conn->state;
      s->conns.erase(conn->self);
      s->MaybeFree();
    };
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), on_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), on_closed);
  }

  void Answer(Conn* c, int status, const HttpResponse& r, bool head_only) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->tcp));
    c->out = fmt::format(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        status, ReasonPhrase(status), r.content_type, r.body.size());
    if (!head_only) c->out += r.body;
    uv_buf_t buf = uv_buf_init(c->out.data(), static_cast<unsigned>(c->out.size()));
    c->write.data = c;
    int rc = uv_write(&c->write, reinterpret_cast<uv_stream_t*>(&c->tcp), &buf, 1,
                      [](uv_write_t* w, int) {
                        auto* conn = static_cast<Conn*>(w->data);
                        conn->state->Close(conn);
                      });
    if (rc != 0) Close(c);
  }

  void Error(Conn* c, int status) {
    HttpResponse r;
    r.status = status;
    r.body = fmt::format("{}\n", ReasonPhrase(status));
    Answer(c, status, r, false);
  }

  void OnRequestHead(Conn* c) {
    std::string_view method;
    std::string_view path;
    if (!ParseHttpRequestLine(c->in, &method, &path)) {
      Error(c, 400);
      return;
    }
    if (method != "GET" && method != "HEAD") {
      Error(c, 405);
      return;
    }
    HttpResponse r = handler(path);
    Answer(c, r.status, r, method == "HEAD");
  }

  void Accept() {
    if (conns.size() >= limits.max_connections) {
      // Accept and close at once: leaving it queued would make libuv call back again and
      // again, and the client learns at once that it must come back later.
      ++refused;
      uv_tcp_t* extra = new uv_tcp_t{};
      uv_tcp_init(listener.loop, extra);
      if (uv_accept(reinterpret_cast<uv_stream_t*>(&listener),
                    reinterpret_cast<uv_stream_t*>(extra)) == 0) {
        uv_tcp_close_reset(extra, [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
      } else {
        uv_close(reinterpret_cast<uv_handle_t*>(extra),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
      }
      return;
    }
    conns.emplace_back();
    Conn* c = &conns.back();
    c->self = std::prev(conns.end());
    c->state = this;
    uv_tcp_init(listener.loop, &c->tcp);
    uv_timer_init(listener.loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    if (uv_accept(reinterpret_cast<uv_stream_t*>(&listener),
                  reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
      Close(c);
      return;
    }
    uv_timer_start(
        &c->timer,
        [](uv_timer_t* t) {
          auto* conn = static_cast<Conn*>(t->data);
          conn->state->Close(conn);
        },
        limits.timeout_ms, 0);
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c->tcp),
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
          auto* conn = static_cast<Conn*>(h->data);
          // Reads land in the request buffer, never past the cap (plus one byte to tell a
          // head that is exactly at the cap from one that is over it).
          size_t room = conn->state->limits.max_request_bytes + 1 - conn->in.size();
          size_t at = conn->in.size();
          conn->in.resize(at + room);
          *buf = uv_buf_init(conn->in.data() + at, static_cast<unsigned>(room));
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
          auto* conn = static_cast<Conn*>(s->data);
          State* st = conn->state;
          size_t used = static_cast<size_t>(buf->base - conn->in.data()) + (n > 0 ? n : 0);
          conn->in.resize(used);
          if (n < 0) {
            st->Close(conn);
            return;
          }
          if (conn->in.find("\r\n\r\n") != std::string::npos) {
            st->OnRequestHead(conn);
          } else if (conn->in.size() > st->limits.max_request_bytes) {
            st->Error(conn, 431);
          }
        });
  }
};

Result<std::unique_ptr<HttpServer>> HttpServer::Open(Loop& loop, int listening_fd, Handler handler,
                                                     const HttpLimits& limits) {
  auto* state = new State();
  state->handler = std::move(handler);
  state->limits = limits;
  uv_tcp_init(loop.native(), &state->listener);
  state->listener.data = state;
  std::unique_ptr<HttpServer> server(new HttpServer(state));  // Closes the listener on failure.
  // Close-on-exec, as every descriptor of the gateway: exec exports start processes.
  int fd = ::fcntl(listening_fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0)
    return Status(Code::kIo, "cannot duplicate the metrics listener: " + ErrnoText(errno));
  if (int rc = uv_tcp_open(&state->listener, fd); rc != 0) {
    ::close(fd);
    return Status(Code::kIo, std::string("cannot listen: ") + uv_strerror(rc));
  }
  int rc = uv_listen(reinterpret_cast<uv_stream_t*>(&state->listener), 64,
                     [](uv_stream_t* s, int status) {
                       if (status == 0) static_cast<State*>(s->data)->Accept();
                     });
  if (rc != 0) return Status(Code::kIo, std::string("cannot listen: ") + uv_strerror(rc));
  return server;
}

HttpServer::~HttpServer() {
  State* s = state_;
  s->owner_gone = true;
  for (State::Conn& c : s->conns) s->Close(&c);
  uv_close(reinterpret_cast<uv_handle_t*>(&s->listener), [](uv_handle_t* h) {
    auto* st = static_cast<State*>(h->data);
    st->listener_open = false;
    st->MaybeFree();
  });
}

uint64_t HttpServer::refused() const noexcept { return state_->refused; }

}  // namespace pipegate::uvglue
