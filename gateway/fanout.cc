#include "fanout.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "pipegate/log.h"

#include "export_open.h"

namespace pipegate::gateway {

namespace {

// The unit of the shared log and the most one read() of the FIFO takes. Also how far the hub
// reads ahead of the fastest reader under the drop policy.
constexpr size_t kChunk = 64 * 1024;
// The send buffer of the hub's end of each reader's socket pair: kernel memory per reader, and
// the part of a reader's backlog that is not counted against fanout_lag.
constexpr int kReaderSendBuffer = 64 * 1024;

}  // namespace

void FanoutVerdict::Drop(std::string reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (status_.ok()) status_ = Status(Code::kIo, std::move(reason));
}

Status FanoutVerdict::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

FanoutSubscription::~FanoutSubscription() { hub_->Detach(id_); }

Result<std::shared_ptr<FanoutHub>> FanoutHub::Create(const ExportConfig& e, Counters* counters) {
  int wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake < 0) {
    return Status(Code::kIo, fmt::format("fan-out of '{}': eventfd: {}", e.name, ErrnoText(errno)));
  }
  return std::shared_ptr<FanoutHub>(new FanoutHub(e, counters, wake));
}

FanoutHub::FanoutHub(const ExportConfig& e, Counters* counters, int wake_fd)
    : name_(e.name),
      path_(e.path),
      counters_(counters),
      wake_fd_(wake_fd),
      export_(e),
      lag_(e.fanout_lag),
      policy_(e.fanout_policy) {}

FanoutHub::~FanoutHub() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    Wake();
  }
  if (thread_.joinable()) thread_.join();
  // Every reader belongs to a subscription, which holds the hub: none is left by now.
  for (Reader& r : readers_) ::close(r.fd);
  CloseFifo();
  ::close(wake_fd_);
}

Result<FanoutAttachment> FanoutHub::Attach(const ExportConfig& e, const AdoptRule* rule,
                                           bool follow) {
  std::lock_guard<std::mutex> lock(mu_);
  export_ = e;
  rule_ = rule != nullptr ? std::optional<AdoptRule>(*rule) : std::nullopt;
  lag_ = e.fanout_lag;
  policy_ = e.fanout_policy;
  if (fifo_fd_ < 0) {
    Result<int> fd = OpenExport(export_, rule_ ? &*rule_ : nullptr);
    if (!fd) return fd.error();
    fifo_fd_ = *fd;
  }
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0) {
    const int err = errno;
    if (readers_.empty()) CloseFifo();
    return Status(Code::kIo, fmt::format("fan-out of '{}': socketpair: {}", name_, ErrnoText(err)));
  }
  (void)::setsockopt(pair[0], SOL_SOCKET, SO_SNDBUF, &kReaderSendBuffer, sizeof kReaderSendBuffer);
  Reader r;
  r.id = next_id_++;
  r.fd = pair[0];
  r.pos = head_;
  r.follow = follow;
  r.verdict = std::make_shared<FanoutVerdict>();
  FanoutAttachment attachment{
      pair[1], std::make_unique<FanoutSubscription>(shared_from_this(), r.id, r.verdict)};
  readers_.push_back(std::move(r));
  if (!running_) {
    // The last thread ended when its last reader left (it needs mu_ no more): reap it.
    if (thread_.joinable()) thread_.join();
    running_ = true;
    thread_ = std::thread([this] { Run(); });
  }
  Wake();
  return attachment;
}

void FanoutHub::Reconfigure(const ExportConfig& e) {
  std::lock_guard<std::mutex> lock(mu_);
  lag_ = e.fanout_lag;
  policy_ = e.fanout_policy;
  Wake();
}

void FanoutHub::Detach(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (Reader& r : readers_) {
    if (r.id == id) r.done = true;
  }
  EraseDone();
  Wake();
}

void FanoutHub::Wake() {
  const uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);  // EAGAIN: a wake-up is pending anyway.
}

uint64_t FanoutHub::ReadAllowance() const {
  if (fifo_fd_ < 0) return 0;
  uint64_t fastest = 0;
  uint64_t slowest = UINT64_MAX;
  bool any = false;
  for (const Reader& r : readers_) {
    slowest = std::min(slowest, r.pos);
    if (r.ending) continue;
    any = true;
    fastest = std::max(fastest, r.pos);
  }
  if (!any) return 0;
  uint64_t allowance = 0;
  if (policy_ == FanoutPolicy::kBlock) {
    const uint64_t behind = head_ - slowest;
    allowance = behind < lag_ ? lag_ - behind : 0;
  } else {
    const uint64_t ahead = head_ - fastest;
    allowance = ahead < kChunk ? kChunk - ahead : 0;
  }
  return std::min<uint64_t>(allowance, kChunk);
}

void FanoutHub::Run() {
  std::vector<pollfd> fds;
  std::vector<uint64_t> ids;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (stop_ || readers_.empty()) {
      CloseFifo();
      log_.clear();
      running_ = false;
      return;
    }
    fds.clear();
    ids.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    fds.push_back({ReadAllowance() > 0 ? fifo_fd_ : -1, POLLIN, 0});
    for (const Reader& r : readers_) {
      const uint64_t target = r.ending ? r.end : head_;
      // With no events asked for, poll still reports POLLHUP/POLLERR: the stream went away.
      fds.push_back({r.fd, static_cast<short>(r.pos < target ? POLLOUT : 0), 0});
      ids.push_back(r.id);
    }
    lock.unlock();
    const int n = ::poll(fds.data(), fds.size(), -1);
    const int poll_errno = errno;
    lock.lock();
    if (n < 0 && poll_errno == EINTR) continue;
    PG_CHECK(n >= 0);  // Only EINTR is expected: every descriptor polled is the hub's own.
    if (fds[0].revents != 0) {
      uint64_t count = 0;
      (void)!::read(wake_fd_, &count, sizeof count);
    }
    // Readers may have come and gone while unlocked: results are matched by id, not index.
    for (size_t i = 0; i < ids.size(); ++i) {
      const short revents = fds[i + 2].revents;
      if (revents == 0) continue;
      auto it = std::find_if(readers_.begin(), readers_.end(),
                             [&](const Reader& r) { return r.id == ids[i]; });
      if (it == readers_.end() || it->done) continue;
      if ((revents & (POLLHUP | POLLERR | POLLNVAL)) != 0) {
        it->done = true;  // The stream closed its end.
      } else {
        Flush(*it);
      }
    }
    if (fds[1].revents != 0 && fifo_fd_ >= 0) ReadFifo();
    EraseDone();
    Trim();
  }
}

void FanoutHub::ReadFifo() {
  const uint64_t allowance = ReadAllowance();
  if (allowance == 0) return;
  if (log_.empty() || log_.back().size == kChunk) {
    Chunk c;
    c.start = head_;
    c.data = std::make_unique<uint8_t[]>(kChunk);
    log_.push_back(std::move(c));
  }
  Chunk& tail = log_.back();
  const size_t room = std::min<size_t>(kChunk - tail.size, static_cast<size_t>(allowance));
  const ssize_t r = ::read(fifo_fd_, tail.data.get() + tail.size, room);
  if (r > 0) {
    tail.size += static_cast<size_t>(r);
    head_ += static_cast<uint64_t>(r);
    for (Reader& reader : readers_) {
      if (!reader.done) Flush(reader);
    }
    EnforceLag();
    return;
  }
  if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (r < 0) {
    const std::string why =
        fmt::format("reading '{}' failed: {}", name_, ErrnoText(static_cast<int>(errno)));
    PG_LOG(kWarn, "fan-out: {}", why);
    for (Reader& reader : readers_) {
      if (!reader.done) DropReader(reader, why, /*lagged=*/false);
    }
    CloseFifo();
    return;
  }
  // End of file: every local writer closed. Readers that do not follow get the rest, then EOF.
  bool followers = false;
  for (Reader& reader : readers_) {
    if (reader.done || reader.ending) continue;
    if (reader.follow) {
      followers = true;
    } else {
      reader.ending = true;
      reader.end = head_;
      Flush(reader);
    }
  }
  CloseFifo();
  if (!followers) return;
  // A fresh open waits for the next writer (poll reports nothing until one has come and gone),
  // which a descriptor that has seen the end of file would not.
  Result<int> fd = OpenExport(export_, rule_ ? &*rule_ : nullptr);
  if (fd) {
    fifo_fd_ = *fd;
    return;
  }
  const std::string why =
      fmt::format("cannot open '{}' again for the next writer: {}", name_, fd.error().message());
  PG_LOG(kWarn, "fan-out: {}", why);
  for (Reader& reader : readers_) {
    if (!reader.done && !reader.ending) DropReader(reader, why, /*lagged=*/false);
  }
}

void FanoutHub::Flush(Reader& r) {
  const uint64_t target = r.ending ? r.end : head_;
  while (r.pos < target && !log_.empty()) {
    // The chunk holding r.pos: chunks are contiguous, so the last one starting at or before it.
    auto it = std::upper_bound(log_.begin(), log_.end(), r.pos,
                               [](uint64_t pos, const Chunk& c) { return pos < c.start; });
    if (it == log_.begin()) break;  // Impossible: chunks are trimmed only behind every reader.
    const Chunk& c = *std::prev(it);
    const size_t offset = static_cast<size_t>(r.pos - c.start);
    const size_t len = static_cast<size_t>(std::min<uint64_t>(c.size - offset, target - r.pos));
    if (len == 0) break;
    const ssize_t sent = ::send(r.fd, c.data.get() + offset, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent > 0) {
      r.pos += static_cast<uint64_t>(sent);
      continue;
    }
    if (sent < 0 && (errno == EAGAIN || errno == EINTR)) return;
    r.done = true;  // EPIPE, ECONNRESET: the stream went away.
    return;
  }
  if (r.ending && r.pos >= r.end) r.done = true;  // Closing our end is its end of file.
}

void FanoutHub::EnforceLag() {
  if (policy_ != FanoutPolicy::kDrop) return;
  for (Reader& r : readers_) {
    if (r.done || head_ - r.pos <= lag_) continue;
    DropReader(r,
               fmt::format("dropped: reader fell more than {} bytes behind on '{}' (fanout_lag)",
                           lag_, name_),
               /*lagged=*/true);
  }
}

void FanoutHub::DropReader(Reader& r, const std::string& reason, bool lagged) {
  r.verdict->Drop(reason);  // Before EraseDone() closes the socket: the stream reads it at EOF.
  r.done = true;
  if (lagged) {
    counters_->fanout_dropped++;
    PG_LOG(kWarn, "fan-out: {}", reason);  // Rate-limited per cause (log_lines_per_second).
  }
}

void FanoutHub::EraseDone() {
  std::erase_if(readers_, [](Reader& r) {
    if (!r.done) return false;
    ::close(r.fd);
    return true;
  });
  if (readers_.empty()) CloseFifo();  // SPEC §3: open for reading only while a reader is there.
}

void FanoutHub::Trim() {
  uint64_t oldest = head_;
  for (const Reader& r : readers_) oldest = std::min(oldest, r.pos);
  while (!log_.empty()) {
    const Chunk& c = log_.front();
    const bool passed = c.start + c.size <= oldest;
    // The last chunk stays while it has room: the next read appends to it.
    if (!passed || (log_.size() == 1 && c.size < kChunk && !readers_.empty())) break;
    log_.pop_front();
  }
}

void FanoutHub::CloseFifo() {
  if (fifo_fd_ >= 0) ::close(fifo_fd_);
  fifo_fd_ = -1;
}

Result<std::shared_ptr<FanoutHub>> FanoutSlot::HubFor(const ExportConfig& e, Counters* counters) {
  std::lock_guard<std::mutex> lock(mu_);
  if (hub_ && hub_->path() == e.path) return hub_;
  Result<std::shared_ptr<FanoutHub>> hub = FanoutHub::Create(e, counters);
  if (hub) hub_ = *hub;
  return hub;
}

void FanoutSlot::Update(const ExportConfig& e) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!hub_) return;
  if (!e.fanout || hub_->path() != e.path) {
    hub_.reset();
  } else {
    hub_->Reconfigure(e);
  }
}

}  // namespace pipegate::gateway
