#include "uv/handles.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include <uv.h>

#include "pipegate/log.h"

namespace pipegate::uvglue {

// ---- Loop ----

void Loop::Free::operator()(uv_loop_s* loop) const noexcept { delete loop; }

Loop::Loop() : loop_(new uv_loop_t{}) { PG_CHECK(uv_loop_init(loop_.get()) == 0); }

Loop::~Loop() {
  if (!closed_ && !close_failed_) Close();
  // Handles still open point into the loop: leak it rather than free memory they use.
  if (!closed_) (void)loop_.release();
}

void Loop::Run() { uv_run(loop_.get(), UV_RUN_DEFAULT); }

bool Loop::Close() {
  if (closed_) return true;
  // Close callbacks due (a handle closed after the last Run) run on the next turns; a handle
  // still active makes the loop alive for ever, so the turns are bounded.
  for (int turn = 0; turn < 8 && uv_loop_alive(loop_.get()) != 0; ++turn) {
    uv_run(loop_.get(), UV_RUN_NOWAIT);
  }
  if (uv_loop_close(loop_.get()) != 0) {
    uv_print_all_handles(loop_.get(), stderr);
    close_failed_ = true;
    return false;
  }
  closed_ = true;
  return true;
}

uint64_t Loop::Now() const { return uv_now(loop_.get()); }

// ---- HandleBase and the handles on it ----

struct HandleBase::Box {
  union {
    uv_handle_t handle;
    uv_timer_t timer;
    uv_signal_t signal;
    uv_tcp_t tcp;
  } u;
  std::function<void()> on_fire;                     // Timer, Signal.
  std::function<void(const Status&)> on_connection;  // Listener.
};

void HandleBase::Close() {
  if (box_ == nullptr) return;
  uv_close(&box_->u.handle, [](uv_handle_t* h) { delete static_cast<Box*>(h->data); });
  box_ = nullptr;
}

namespace {

template <typename Box>
Box* NewBox() {
  auto* box = new Box();
  box->u.handle.data = box;  // Set again by each *_init below, which keeps `data`.
  return box;
}

}  // namespace

Timer::Timer(Loop& loop, std::function<void()> on_fire) : HandleBase(NewBox<Box>()) {
  uv_timer_init(loop.native(), &box_->u.timer);
  box_->u.timer.data = box_;
  box_->on_fire = std::move(on_fire);
}

void Timer::Start(uint64_t timeout_ms, uint64_t repeat_ms) {
  if (box_ == nullptr) return;
  uv_timer_start(
      &box_->u.timer, [](uv_timer_t* t) { static_cast<Box*>(t->data)->on_fire(); }, timeout_ms,
      repeat_ms);
}

void Timer::Stop() {
  if (box_ != nullptr) uv_timer_stop(&box_->u.timer);
}

bool Timer::active() const { return box_ != nullptr && uv_is_active(&box_->u.handle) != 0; }

Signal::Signal(Loop& loop, int signum, std::function<void()> on_signal)
    : HandleBase(NewBox<Box>()) {
  uv_signal_init(loop.native(), &box_->u.signal);
  box_->u.signal.data = box_;
  box_->on_fire = std::move(on_signal);
  uv_signal_start(
      &box_->u.signal, [](uv_signal_t* s, int) { static_cast<Box*>(s->data)->on_fire(); }, signum);
}

Result<std::unique_ptr<Listener>> Listener::Open(Loop& loop, int listening_fd,
                                                 std::function<void(const Status&)> on_connection) {
  Box* box = NewBox<Box>();
  uv_tcp_init(loop.native(), &box->u.tcp);
  box->u.tcp.data = box;
  box->on_connection = std::move(on_connection);
  std::unique_ptr<Listener> listener(new Listener(box));  // Closes the handle on failure.
  // Close-on-exec, as every descriptor of the gateway: exec exports start processes.
  int fd = ::fcntl(listening_fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return Status(Code::kIo, "cannot duplicate listener: " + ErrnoText(errno));
  int rc = uv_tcp_open(&box->u.tcp, fd);
  if (rc != 0) {
    ::close(fd);
    return Status(Code::kIo, std::string("cannot listen: ") + uv_strerror(rc));
  }
  rc = uv_listen(reinterpret_cast<uv_stream_t*>(&box->u.tcp), 511, [](uv_stream_t* s, int status) {
    auto* b = static_cast<Box*>(s->data);
    b->on_connection(status == 0
                         ? Status::Ok()
                         : Status(Code::kIo, std::string("accept failed: ") + uv_strerror(status)));
  });
  if (rc != 0) return Status(Code::kIo, std::string("cannot listen: ") + uv_strerror(rc));
  return listener;
}

uv_stream_s* Listener::native() { return reinterpret_cast<uv_stream_t*>(&box_->u.tcp); }

// ---- Async ----

struct Async::Box {
  uv_async_t async{};
  std::function<void()> on_wake;
};

Async::Async(Loop& loop, std::function<void()> on_wake) : box_(new Box()) {
  box_->on_wake = std::move(on_wake);
  uv_async_init(loop.native(), &box_->async,
                [](uv_async_t* a) { static_cast<Box*>(a->data)->on_wake(); });
  box_->async.data = box_;
}

bool Async::Send() {
  std::lock_guard<std::mutex> lock(mu_);
  if (box_ == nullptr) return false;
  uv_async_send(&box_->async);
  return true;
}

bool Async::SendWith(const std::function<void()>& then) {
  std::lock_guard<std::mutex> lock(mu_);
  if (box_ == nullptr) return false;
  then();
  uv_async_send(&box_->async);
  return true;
}

void Async::Close() {
  CloseWith([] {});
}

void Async::CloseWith(const std::function<void()>& last) {
  Box* box;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (box_ == nullptr) return;
    last();
    box = box_;
    box_ = nullptr;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&box->async),
           [](uv_handle_t* h) { delete static_cast<Box*>(h->data); });
}

// ---- CloseHandles ----

void CloseHandle(uv_handle_s* handle, void (*on_closed)(uv_handle_s*)) {
  uv_close(handle, on_closed);
}

void* HandleData(uv_handle_s* handle) { return handle->data; }

}  // namespace pipegate::uvglue
