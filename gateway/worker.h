#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "pipegate/mux.h"
#include "pipegate/resume.h"
#include "pipegate/status.h"

#include "connection_limits.h"
#include "uv/connection.h"
#include "uv/handles.h"
#include "uv/ticker.h"

namespace pipegate::gateway {

class Gateway;
class Session;

/// How long a stopping worker lets its streams finish before it closes every connection.
inline constexpr uint64_t kDrainGraceMs = 10000;

/// @brief One event loop on its own thread: listeners, connections, sessions.
///
/// Ownership: owned by Gateway; owns its sessions (Forget() deletes one). Thread: constructed,
/// started, stopped (RequestStop), joined and destroyed on the main thread; everything else
/// runs on the worker's own thread, except Post(), RequestStop() and RequestRevoke(), which are
/// thread-safe and reach the loop through an Async.
class Worker {
 public:
  Worker(Gateway* gateway, int index);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  /// @brief Listens on duplicates of @p listen_fds and starts the thread. With
  /// @p measure_lag, the loop's once-a-second tick records how late it runs (loop_lag_us()).
  void Start(const std::vector<int>& listen_fds, bool measure_lag = false);
  /// @return How late the loop ran its last tick, in microseconds: how long a callback
  /// waited behind other work. 0 unless measured. Thread-safe.
  uint64_t loop_lag_us() const noexcept { return loop_lag_us_.load(std::memory_order_relaxed); }
  int index() const noexcept { return index_; }
  /// @brief Asks the worker to drain and stop (thread-safe).
  void RequestStop() {
    stop_requested_.store(true);
    async_.Send();
  }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

  Gateway* gateway() { return gateway_; }
  uvglue::Loop& loop() { return loop_; }
  bool stopping() const { return stopping_; }
  /// @brief Deletes @p s, which has finished (loop thread; @p s must not be used afterwards).
  void Forget(Session* s);
  /// @brief Creates a session owned by this worker (loop thread).
  Session* NewSession();

  /// @brief A verified RESUME whose session lives on this worker, with its connection.
  struct Handoff {
    std::string session_id;
    uvglue::Connection::Released conn;
    ResumePayload resume;
    Mux::PeerSettings peer;
  };
  /// @brief Hands a connection to this worker (thread-safe).
  /// @return False if the worker is stopping: then the connection is closed here.
  bool Post(Handoff handoff);
  /// @brief Asks (reload_revokes) the worker to end what the newest snapshot no longer
  /// allows (thread-safe; done on the worker's loop).
  void RequestRevoke() {
    revoke_requested_.store(true);
    async_.Send();
  }

 private:
  void Adopt(Handoff handoff);
  void RevokeUnallowed();  // On the loop thread, after RequestRevoke().
  void OnConnection(size_t listener, const Status& status);
  /// @brief Refuses @p c if admission (max_connections, per source, memory) says so.
  /// @return True if the connection was admitted.
  bool Admit(uvglue::Connection* c, const Limits& limits,
             const std::shared_ptr<AdmissionSlot>& slot);
  void OnAsync();
  void OnGrace();
  void OnTick();
  void Stop();
  void MaybeFinish();
  std::vector<Session*> SessionList() const;

  Gateway* gateway_;
  int index_;
  // Declared first so that it is destroyed last: every handle below lives on it.
  uvglue::Loop loop_;
  uvglue::Async async_;
  uvglue::Timer grace_;
  /// Once a second (the loop's shared tick, uvglue::Ticker): trims this thread's Buffer cache
  /// (Buffer::TrimCache), whether or not a connection is left whose tick would, and with
  /// measure_lag_ records how late the tick ran (loop_lag_us()). Started by Start(); stopped
  /// by Stop().
  uvglue::Ticks ticks_;
  bool measure_lag_ = false;
  std::atomic<uint64_t> loop_lag_us_{0};
  std::vector<std::unique_ptr<uvglue::Listener>> listeners_;
  std::thread thread_;
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> revoke_requested_{false};
  bool stopping_ = false;
  std::unordered_map<Session*, std::unique_ptr<Session>> sessions_;
  // Handoffs are queued under async_'s lock (SendWith) and taken by the loop under this one;
  // async_.CloseWith() takes the last of them, after which Post() is refused.
  std::mutex inbox_mu_;
  std::vector<Handoff> inbox_;  ///< Guarded by inbox_mu_.
};

}  // namespace pipegate::gateway
