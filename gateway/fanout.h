#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "pipegate/config.h"
#include "pipegate/local_path.h"
#include "pipegate/status.h"

#include "counters.h"

namespace pipegate::gateway {

/// @brief Why a fan-out reader's stream ended early: OK while it is served or after a plain end
/// of file, else the reason the hub let it go.
///
/// Thread: any. Shared by the hub (which sets it, before it closes the reader's socket) and the
/// reader's stream (which reads it once its socket reports end of file).
class FanoutVerdict {
 public:
  /// @brief Records @p reason (the first one wins).
  void Drop(std::string reason);
  /// @return OK, or a kIo status whose message is the reason the reader was dropped.
  Status status() const;

 private:
  mutable std::mutex mu_;
  Status status_;
};

class FanoutHub;

/// @brief One reader attached to a hub, held by its stream. Destroying it detaches the reader
/// (the hub closes its end of the reader's socket pair; the stream closes the other).
///
/// Ownership: a unique_ptr in the ExportStream; it keeps the hub alive. Thread: the stream's.
class FanoutSubscription {
 public:
  FanoutSubscription(std::shared_ptr<FanoutHub> hub, uint64_t id,
                     std::shared_ptr<FanoutVerdict> verdict)
      : hub_(std::move(hub)), id_(id), verdict_(std::move(verdict)) {}
  ~FanoutSubscription();
  FanoutSubscription(const FanoutSubscription&) = delete;
  FanoutSubscription& operator=(const FanoutSubscription&) = delete;

  /// @return OK, or why the hub dropped this reader.
  Status status() const { return verdict_->status(); }

 private:
  std::shared_ptr<FanoutHub> hub_;
  uint64_t id_;
  std::shared_ptr<FanoutVerdict> verdict_;
};

using FanoutSubscriptionPtr = std::unique_ptr<FanoutSubscription>;

/// @brief What Attach() gives a new reader.
struct FanoutAttachment {
  int fd = -1;  ///< The stream's end of the reader's socket pair (the caller owns it).
  FanoutSubscriptionPtr subscription;
};

/// @brief The one reader of a fan-out FIFO export: it reads the FIFO and hands every byte to
/// every attached reader, each through a socket pair whose other end is that reader's stream's
/// local fd (so the stream code is the same as for a plain FIFO).
///
/// The bytes read are kept once, in a log of 64 KiB chunks that every reader walks at its own
/// position; a chunk is freed once every reader has passed it. Pacing (docs/decisions.md):
/// - drop: the FIFO is read while the fastest reader is less than 64 KiB behind the newest
///   byte, and a reader more than fanout_lag behind it is dropped (its stream ends with a
///   RESET that says so);
/// - block: the FIFO is read only while every reader is less than fanout_lag behind, so the
///   slowest reader holds the local writers back, as a slow local reader would.
/// Either way the log holds at most fanout_lag + 128 KiB.
///
/// End of file (every local writer closed): each reader that did not ask to follow gets its
/// remaining bytes and then EOF; followers stay, and the hub opens the FIFO again for the next
/// writer. The FIFO is open only while a reader is attached (SPEC §3 "Open follows FIFO rules").
///
/// Ownership: shared by the export's FanoutSlot and every subscription; destroyed with the last
/// of them. Thread: Attach(), Detach() and Reconfigure() from any worker; the FIFO and the
/// sockets are served by a thread of the hub's own, which runs while a reader is attached and
/// is joined by the next Attach() after it ended or by the destructor.
class FanoutHub : public std::enable_shared_from_this<FanoutHub> {
 public:
  /// @brief A hub for fan-out export @p e; @p counters (the gateway's) must outlive it.
  static Result<std::shared_ptr<FanoutHub>> Create(const ExportConfig& e, Counters* counters);
  ~FanoutHub();
  FanoutHub(const FanoutHub&) = delete;
  FanoutHub& operator=(const FanoutHub&) = delete;

  /// @brief Attaches a reader: opens the FIFO if no reader had it open (OpenExport's refusals,
  /// such as kNoReader while it does not exist, are returned as they are), makes its socket pair
  /// and starts serving it from the newest byte on.
  /// @param e The export as the snapshot now describes it (same path as the hub's).
  /// @param rule For a `create = true` export, what the FIFO must satisfy; else null.
  /// @param follow Stay attached across the end of file of the local writers.
  Result<FanoutAttachment> Attach(const ExportConfig& e, const AdoptRule* rule, bool follow);
  /// @brief Takes fanout_lag and fanout_policy from @p e (a reload); applies at once.
  void Reconfigure(const ExportConfig& e);
  /// @brief Detaches reader @p id (FanoutSubscription's destructor).
  void Detach(uint64_t id);
  const std::string& path() const noexcept { return path_; }

 private:
  struct Chunk {
    uint64_t start = 0;  ///< Stream offset of data[0].
    size_t size = 0;
    std::unique_ptr<uint8_t[]> data;
  };
  struct Reader {
    uint64_t id = 0;
    int fd = -1;          ///< The hub's end of the socket pair.
    uint64_t pos = 0;     ///< Offset of the next byte to send.
    bool follow = false;  ///< Stays across the FIFO's end of file.
    bool ending = false;  ///< Gets bytes up to `end`, then end of file.
    uint64_t end = 0;     ///< Valid when ending.
    bool done = false;    ///< To be closed and erased (EraseDone).
    std::shared_ptr<FanoutVerdict> verdict;
  };

  FanoutHub(const ExportConfig& e, Counters* counters, int wake_fd);

  // Hub thread; every method below is called with mu_ held.
  void Run();
  void Wake();
  /// @return How many bytes the FIFO may be read for now (0: not now).
  uint64_t ReadAllowance() const;
  void ReadFifo();
  /// @brief Sends what @p r may have now, until its socket is full.
  void Flush(Reader& r);
  /// @brief Drops every reader that trails the newest byte by more than the lag (drop policy).
  void EnforceLag();
  void DropReader(Reader& r, const std::string& reason, bool lagged);
  void EraseDone();
  void Trim();
  void CloseFifo();

  const std::string name_;
  const std::string path_;
  Counters* const counters_;
  const int wake_fd_;  ///< An eventfd: Attach, Detach, Reconfigure and the destructor wake Run.

  std::mutex mu_;
  // Guarded by mu_.
  ExportConfig export_;  ///< For reopening after an end of file.
  std::optional<AdoptRule> rule_;
  uint64_t lag_;
  FanoutPolicy policy_;
  int fifo_fd_ = -1;
  uint64_t head_ = 0;  ///< Offset just past the newest byte read.
  std::deque<Chunk> log_;
  std::vector<Reader> readers_;
  uint64_t next_id_ = 1;
  bool running_ = false;  ///< The thread serves; it clears this (and ends) when no reader is left.
  bool stop_ = false;
  std::thread thread_;
};

/// @brief The fan-out hub of one export name, kept in its ExportSlot across reloads.
///
/// Thread: any.
class FanoutSlot {
 public:
  /// @return The hub for @p e (made on first use, or again when its path changed).
  Result<std::shared_ptr<FanoutHub>> HubFor(const ExportConfig& e, Counters* counters);
  /// @brief A reload: the hub takes @p e's lag and policy; if @p e is no longer a fan-out export
  /// or names another path, the slot lets the hub go (its readers keep it until they leave).
  void Update(const ExportConfig& e);

 private:
  std::mutex mu_;
  std::shared_ptr<FanoutHub> hub_;  ///< Guarded by mu_.
};

}  // namespace pipegate::gateway
