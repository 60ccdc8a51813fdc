#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>

#include "pipegate/status.h"

// libuv's types, declared here so that the programs above src/uv/ never include uv.h.
struct uv_loop_s;
struct uv_stream_s;
struct uv_handle_s;

namespace pipegate::uvglue {

/// @brief One libuv event loop, owned (uv_loop_init in the constructor).
///
/// Ownership: by value, in whoever runs it; it must outlive every handle on it. Thread: the
/// thread that calls Run().
class Loop {
 public:
  Loop();
  /// Closes the loop if Close() was not called (see there). A loop that could not be closed
  /// is not freed: its open handles still point into it.
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  /// @brief Runs until no active handle or request is left (UV_RUN_DEFAULT).
  void Run();
  /// @brief Runs the close callbacks still due, then closes the loop.
  /// @return True if every handle was closed; otherwise the open ones are printed on stderr
  /// (a leak: libuv's own test discipline treats it as a failure).
  bool Close();
  /// @return The loop's cached time in milliseconds.
  uint64_t Now() const;
  uv_loop_s* native() noexcept { return loop_.get(); }

 private:
  struct Free {
    void operator()(uv_loop_s* loop) const noexcept;
  };
  std::unique_ptr<uv_loop_s, Free> loop_;
  bool closed_ = false;
  bool close_failed_ = false;  ///< Close() reported open handles (once is enough).
};

/// @brief Owns a heap-allocated libuv handle whose memory is freed in its close callback, so
/// the owner may be destroyed at any time on the loop's thread (even from the handle's own
/// callback): destroying it closes the handle and no callback of it runs afterwards.
///
/// Thread: the loop's thread.
class HandleBase {
 public:
  HandleBase(const HandleBase&) = delete;
  HandleBase& operator=(const HandleBase&) = delete;
  /// @brief Closes the handle now (idempotent); the destructor does it otherwise.
  void Close();
  bool closed() const noexcept { return box_ == nullptr; }

 protected:
  struct Box;
  explicit HandleBase(Box* box) : box_(box) {}
  ~HandleBase() { Close(); }
  Box* box_;
};

/// @brief A one-shot or repeating timer with one callback, set at construction.
class Timer final : public HandleBase {
 public:
  Timer(Loop& loop, std::function<void()> on_fire);
  /// @brief (Re)starts: fires after @p timeout_ms, then every @p repeat_ms if non-zero.
  void Start(uint64_t timeout_ms, uint64_t repeat_ms = 0);
  void Stop();
  bool active() const;
};

/// @brief Watches one signal from construction until closed.
class Signal final : public HandleBase {
 public:
  Signal(Loop& loop, int signum, std::function<void()> on_signal);
};

/// @brief Wakes a loop from any thread: Send() may be called on any thread until Close(), and
/// is refused (false) after it, so a stopping loop is never woken through a closed handle.
///
/// Ownership: the object must outlive every thread that may call Send(); the handle's memory
/// is freed in its close callback. Thread: Close() on the loop's thread; Send() on any.
class Async {
 public:
  Async(Loop& loop, std::function<void()> on_wake);
  ~Async() { Close(); }
  Async(const Async&) = delete;
  Async& operator=(const Async&) = delete;

  /// @brief Wakes the loop (coalesced: one callback may serve several sends).
  /// @return False once closed: nothing was sent.
  bool Send();
  /// @brief Runs @p then under the lock that Send() takes, and wakes the loop unless closed;
  /// a producer uses it to queue work that the loop's callback will take.
  /// @return False once closed (@p then did not run).
  bool SendWith(const std::function<void()>& then);
  /// @brief Stops accepting sends and closes the handle. Loop thread.
  void Close();
  /// @brief Closes, running @p last under the lock first: whatever a producer queued before
  /// is seen by @p last, and nothing can be queued after it.
  void CloseWith(const std::function<void()>& last);

 private:
  struct Box;
  std::mutex mu_;
  Box* box_;  ///< Guarded by mu_; null once closed.
};

/// @brief A TCP listener on an already bound and listening socket (which it duplicates).
class Listener final : public HandleBase {
 public:
  /// @param on_connection Called with OK when a connection waits for Accept, or the error.
  static Result<std::unique_ptr<Listener>> Open(Loop& loop, int listening_fd,
                                                std::function<void(const Status&)> on_connection);
  /// @return The stream to accept from (Connection::Accept).
  uv_stream_s* native();

 private:
  explicit Listener(Box* box) : HandleBase(box) {}
};

/// @brief Counts the handles of an owner that are closing, and calls the owner back after the
/// last close callback (where the owner typically deletes itself).
///
/// Each handle's `data` must point to the owner. Thread: the loop's thread.
template <typename Owner>
struct CloseCount {
  int pending = 0;
};

/// @brief Closes @p handles and calls `(owner->*kDone)()` once all their close callbacks ran.
template <typename Owner, CloseCount<Owner> Owner::*kCount, void (Owner::*kDone)()>
void CloseHandles(Owner* owner, std::initializer_list<uv_handle_s*> handles);

/// @brief uv_close with a plain function callback, for CloseHandles (defined in handles.cc so
/// this header does not need uv.h).
void CloseHandle(uv_handle_s* handle, void (*on_closed)(uv_handle_s*));
/// @return handle->data.
void* HandleData(uv_handle_s* handle);

template <typename Owner, CloseCount<Owner> Owner::*kCount, void (Owner::*kDone)()>
void CloseHandles(Owner* owner, std::initializer_list<uv_handle_s*> handles) {
  (owner->*kCount).pending += static_cast<int>(handles.size());
  for (uv_handle_s* h : handles) {
    CloseHandle(h, [](uv_handle_s* closed) {
      auto* o = static_cast<Owner*>(HandleData(closed));
      if (--(o->*kCount).pending == 0) (o->*kDone)();
    });
  }
}

/// @return A handle pointer for CloseHandles from any libuv handle type.
template <typename H>
uv_handle_s* AsHandle(H* h) noexcept {
  return reinterpret_cast<uv_handle_s*>(h);
}

}  // namespace pipegate::uvglue
