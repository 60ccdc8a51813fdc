#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "pipegate/config.h"
#include "pipegate/status.h"

#include "identity_map.h"

namespace pipegate::gateway {

/// @brief The gateway's side of the identity helper: a small process that keeps root while the
/// gateway drops it, and does one thing, "open or connect export PATH as UID/GID", sending the
/// descriptor back (SCM_RIGHTS over a SOCK_SEQPACKET socketpair). docs/security.md §11 argues
/// the design; the helper's own loop is RunIdentityHelper.
///
/// The helper is `pipegated --identity-helper` re-executed (fork + exec of /proc/self/exe while
/// still root and single-threaded), so it holds no key, certificate or session of the gateway.
/// It reads and checks the configuration file itself, and serves only (export, path, account)
/// triples that its own reading of the file maps. It exits when the gateway goes (EOF on its
/// socket; PR_SET_PDEATHSIG).
///
/// Ownership: the Gateway owns it (unique_ptr); destroying it closes the socket, which ends the
/// helper, and reaps it. Thread: Open and Reload may be called from any thread; calls are
/// serialized by a mutex (one request in flight), each bounded by a reply timeout. A helper
/// that misses the timeout is "stuck": later calls fail at once until its late reply arrives,
/// so a stuck helper costs a worker at most one timeout (plus one mutex wait) per episode.
class IdentityHelper {
 public:
  /// Longest wait for the mutex, and for a reply to an open. A mapped open takes tens of
  /// microseconds; this only bounds a stuck or overloaded helper.
  static constexpr int kReplyTimeoutMs = 1000;
  /// Longest wait for the helper to (re)load the configuration file.
  static constexpr int kReloadTimeoutMs = 10000;

  /// @brief Starts the helper (fork + exec) and has it load @p config_path. Call as root,
  /// before any thread starts and before dropping privileges.
  /// @return The helper, or why it could not start (its configuration error included).
  /// @param failures Counts opens that failed because the helper was gone, stuck or busy
  /// (may be null; must outlive the helper).
  static Result<std::unique_ptr<IdentityHelper>> Start(const std::string& config_path,
                                                       std::atomic<uint64_t>* failures);

  ~IdentityHelper();
  IdentityHelper(const IdentityHelper&) = delete;
  IdentityHelper& operator=(const IdentityHelper&) = delete;

  /// @brief Has the helper open export @p e as @p as (FIFO in the export's direction, read-write
  /// for @p follow; or a connection to its socket).
  /// @return The descriptor (the caller owns it), an OpenExport error as the helper met it
  /// (kNoReader, kBusy, kNotFound, kAccessDenied...), or kIo when the helper is gone, stuck or
  /// refuses the request.
  Result<int> Open(const ExportConfig& e, const MappedAccount& as, bool follow);

  /// @brief Has the helper read the configuration file again (on the gateway's reload).
  /// @return OK, or why the helper keeps its previous configuration.
  Status Reload();

  /// @return The helper's process id.
  pid_t pid() const noexcept { return pid_; }

 private:
  IdentityHelper(int fd, pid_t pid, std::atomic<uint64_t>* failures)
      : fd_(fd), pid_(pid), failures_(failures) {}

  struct Reply {
    Code code = Code::kOk;
    std::string message;
    int fd = -1;  ///< Owned by the caller when >= 0.
  };
  /// @brief Sends one request and waits (at most @p timeout_ms) for its reply. Holds mu_.
  Result<Reply> Call(uint8_t op, const std::string& name, const std::string& path, uint32_t uid,
                     uint32_t gid, bool follow, int timeout_ms);
  /// @brief Reads replies until one for @p seq arrives or @p timeout_ms passes; older replies
  /// (late answers to timed-out requests) are dropped and their descriptors closed. mu_ held.
  Result<Reply> Receive(uint32_t seq, int timeout_ms);
  /// @brief Records that the helper is gone (once: logs it and reaps it). mu_ held.
  Status Gone(const std::string& why);

  /// @brief A lock whose acquisition can time out. Not std::timed_mutex: its try_lock_for is
  /// pthread_mutex_clocklock, which ThreadSanitizer (GCC 12) does not intercept, so every
  /// unlock looked like one of an unlocked mutex; a flag under a mutex and a condition variable
  /// are seen by every tool.
  class TimedLock {
   public:
    bool TryLockFor(std::chrono::milliseconds timeout) {
      std::unique_lock<std::mutex> lock(mu_);
      if (!cv_.wait_for(lock, timeout, [this] { return !held_; })) return false;
      held_ = true;
      return true;
    }
    void Lock() {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return !held_; });
      held_ = true;
    }
    void Unlock() {
      {
        std::lock_guard<std::mutex> lock(mu_);
        held_ = false;
      }
      cv_.notify_one();
    }

   private:
    std::mutex mu_;
    std::condition_variable cv_;
    bool held_ = false;
  };
  /// @brief Holds a TimedLock until destroyed (if it was taken).
  class Held {
   public:
    explicit Held(TimedLock* lock) : lock_(lock) {}
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;
    ~Held() {
      if (lock_ != nullptr) lock_->Unlock();
    }

   private:
    TimedLock* lock_;
  };

  TimedLock mu_;
  int fd_ = -1;
  pid_t pid_ = -1;
  std::atomic<uint64_t>* failures_ = nullptr;
  uint32_t seq_ = 0;        ///< Guarded by mu_.
  uint32_t stuck_seq_ = 0;  ///< Guarded by mu_: a request that timed out, else 0.
  bool gone_ = false;       ///< Guarded by mu_.
};

/// @brief The helper process's main loop (`pipegated --identity-helper --config FILE`): reads
/// requests on descriptor 3 until EOF. Runs as root; refuses to run otherwise.
/// @return The process exit status.
int RunIdentityHelper(const std::string& config_path);

}  // namespace pipegate::gateway
