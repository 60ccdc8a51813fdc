#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/timing.h"

namespace pipegate::testing {

/// @brief A fault-injecting TCP relay on loopback, between a bridge and a gateway.
///
/// Listens on 127.0.0.1:0 and relays every accepted connection to 127.0.0.1:target. One thread
/// runs every connection with poll(), so faults hit all connections at one instant:
/// - Cut(): every current connection is closed abruptly on both sides (SO_LINGER 0, so both
///   peers get an RST and whatever was in flight, in the relay or in the kernels, is lost);
/// - Stall(ms): nothing is read, written or closed, in either direction, for `ms` (a black
///   hole: connections accepted meanwhile are held as well), then forwarding carries on;
/// - StartSchedule(): `cuts` cuts and `stalls` stalls at random points of the byte stream
///   (seeded, so a failure can be replayed), triggered by bytes forwarded, so each one hits
///   while bytes flow. Bounded in count and in time (the schedule ends at its deadline).
/// SetTarget() points new connections elsewhere (a restarted gateway); SetTarget(0) makes the
/// relay refuse (accept, then reset) every new connection: an unreachable gateway.
///
/// Ownership: owns its sockets and its thread; the destructor stops the thread (within one poll
/// interval, 20 ms) and closes everything. Thread: every public method may be called from any
/// thread.
class FaultRelay {
 public:
  /// @brief A random fault schedule, triggered by the bytes forwarded (both directions).
  struct Schedule {
    int cuts = 20;
    int stalls = 5;
    uint64_t seed = 1;
    /// Events fall at random byte counts in [start_bytes, start_bytes + span_bytes) of the
    /// relay's total forwarded bytes (counted from when the schedule starts).
    uint64_t start_bytes = 1 << 20;
    uint64_t span_bytes = 64 << 20;
    /// Smallest distance between two events, in bytes forwarded.
    uint64_t min_gap_bytes = 256 << 10;
    Duration stall_min{600};
    Duration stall_max{2500};
    /// Events not reached by then are dropped (see schedule_skipped()).
    Duration deadline{60000};
  };

  /// @brief What the relay saw; all counters are totals since construction.
  struct Stats {
    int accepted = 0;
    int refused = 0;  ///< New connections reset (SetTarget(0), or the target refused).
    int live = 0;     ///< Relayed connections now open.
    int cuts = 0;     ///< Cut() calls and scheduled cuts that were carried out.
    int connections_cut = 0;
    int stalls = 0;         ///< Stalls begun (manual and scheduled).
    uint64_t up = 0;        ///< Bytes forwarded client -> target.
    uint64_t down = 0;      ///< Bytes forwarded target -> client.
    int schedule_cuts = 0;  ///< Events of the schedule carried out.
    int schedule_stalls = 0;
    int schedule_skipped = 0;   ///< Events the deadline dropped.
    bool schedule_done = true;  ///< No schedule, or every event done or dropped.
    Duration longest_stall{0};
    /// Per fault, ms from the end of the fault (the cut, or the stall's end) until 64 KiB more
    /// were forwarded: how long the endpoints took to get data flowing again.
    std::vector<int64_t> recovery_after_cut_ms;
    std::vector<int64_t> recovery_after_stall_ms;
  };

  explicit FaultRelay(uint16_t target_port);
  ~FaultRelay();
  FaultRelay(const FaultRelay&) = delete;
  FaultRelay& operator=(const FaultRelay&) = delete;

  /// @return True if listening.
  bool ok() const { return listen_fd_ >= 0; }
  /// @return The port clients should dial.
  uint16_t port() const { return port_; }
  /// @return `pipe://127.0.0.1:PORT`.
  std::string BaseAddress() const;
  /// @brief New connections go to 127.0.0.1:@p target_port (0: refuse them).
  void SetTarget(uint16_t target_port);

  /// @brief Resets every current connection on both sides, and returns once done.
  /// @return How many connections were cut.
  int Cut();
  /// @brief Stops forwarding for @p length from now (extends a stall in progress). Returns once
  /// the relay has stopped forwarding (within one loop turn).
  void Stall(Duration length);
  /// @return True while a stall is in progress.
  bool stalled() const;
  /// @brief Stops forwarding from the target to the client only, for @p length from now (0 ends
  /// it); the other direction keeps flowing. For targeted faults: replies lost in flight (hold
  /// them, then Cut()). Returns once the relay applies it (within one loop turn).
  void StallDownstream(Duration length);
  /// @brief Replaces any running schedule by @p schedule, counted from the bytes forwarded now.
  void StartSchedule(const Schedule& schedule);
  /// @brief Waits until the schedule is done (nominal timeout). @return Stats().schedule_done.
  bool WaitSchedule(Duration timeout);

  /// @return A snapshot of the counters.
  Stats stats() const;
  /// @return Bytes forwarded so far, both directions.
  uint64_t forwarded() const { return forwarded_.load(); }
  /// @return Bytes from the target that a StallDownstream() holds back (read into the relay or
  /// waiting in its sockets), as of the relay's last turn (at most 20 ms old); 0 without one.
  /// What a test waits on to know that the target's reply is on its way and held.
  uint64_t held_downstream() const { return held_downstream_.load(); }
  /// @return A one-line summary, for failure messages.
  std::string Describe() const;

 private:
  struct Conn;
  struct Event {
    uint64_t at = 0;  ///< Forwarded-byte count that triggers it.
    bool cut = false;
    Duration stall{0};
  };

  void Run();
  void Wake();
  void WaitTurns();  // Until the loop has started two more turns (bounded).
  void AcceptAll(int64_t now_ms);
  // False when the connection is finished. @p down: also forward target -> client.
  bool Pump(Conn& c, int64_t now_ms, bool down);
  int CutAllLocked(int64_t now_ms);
  void StallLocked(int64_t now_ms, Duration length);
  void CountForwarded(size_t n, bool up, int64_t now_ms);
  void CheckRecoveries(int64_t now_ms);
  static int64_t NowMs();

  int listen_fd_ = -1;
  uint16_t port_ = 0;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> forwarded_{0};
  std::atomic<uint64_t> turns_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint16_t target_ = 0;
  int cut_requests_ = 0;  ///< Cut() calls not yet carried out.
  int cut_done_ = 0;      ///< Carried out so far (Cut() waits for its own).
  int last_cut_count_ = 0;
  int64_t stall_until_ms_ = 0;
  std::atomic<int64_t> down_stall_until_ms_{0};
  std::atomic<uint64_t> held_downstream_{0};
  int64_t stall_started_ms_ = 0;
  bool in_stall_ = false;
  std::vector<Event> schedule_;  ///< Pending events, earliest first.
  int64_t schedule_deadline_ms_ = 0;
  struct Recovery {
    int64_t since_ms;
    uint64_t bytes_at;
    bool after_cut;
  };
  std::vector<Recovery> recoveries_;
  Stats stats_;
  std::vector<std::unique_ptr<Conn>> conns_;  ///< Loop thread only.
  std::thread thread_;
};

}  // namespace pipegate::testing
