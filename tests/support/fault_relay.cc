#include "support/fault_relay.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <random>
#include <sstream>

#include "support/process.h"
#include "support/tcp_proxy.h"

namespace pipegate::testing {
namespace {

constexpr int kPollMs = 20;
constexpr size_t kMaxPending = 256 * 1024;  // Per direction, held by the relay.
constexpr size_t kChunk = 64 * 1024;
constexpr uint64_t kRecoveredBytes = 64 * 1024;
constexpr int kMaxAcceptsPerTurn = 16;

void ResetAndClose(int fd) {
  if (fd < 0) {
    return;
  }
  linger hard{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
  close(fd);
}

void SetNonBlocking(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

}  // namespace

// One relayed connection: direction 0 is client -> target, 1 is target -> client.
struct FaultRelay::Conn {
  int fd[2] = {-1, -1};  // [0] client side, [1] target side.
  std::string pending[2];
  size_t offset[2] = {0, 0};
  bool eof[2] = {false, false};   // The sending side of the direction said EOF.
  bool shut[2] = {false, false};  // That EOF was passed on.
  size_t poll_index = 0;          // Of fd[0] in this turn's poll set (0: not polled).

  size_t Pending(int d) const { return pending[d].size() - offset[d]; }
};

FaultRelay::FaultRelay(uint16_t target_port) : target_(target_port) {
  IgnoreSigpipe();
  if (pipe2(wake_, O_NONBLOCK | O_CLOEXEC) != 0) {
    wake_[0] = wake_[1] = -1;
    return;
  }
  listen_fd_ = ListenOnLoopback(&port_);
  if (listen_fd_ < 0) {
    return;
  }
  thread_ = std::thread([this] { Run(); });
}

FaultRelay::~FaultRelay() {
  stop_ = true;
  Wake();
  if (thread_.joinable()) {
    thread_.join();
  }
  for (auto& c : conns_) {
    ResetAndClose(c->fd[0]);
    ResetAndClose(c->fd[1]);
  }
  conns_.clear();
  if (listen_fd_ >= 0) {
    close(listen_fd_);
  }
  for (int fd : wake_) {
    if (fd >= 0) {
      close(fd);
    }
  }
}

std::string FaultRelay::BaseAddress() const { return "pipe://127.0.0.1:" + std::to_string(port_); }

void FaultRelay::SetTarget(uint16_t target_port) {
  std::lock_guard<std::mutex> lock(mu_);
  target_ = target_port;
}

int FaultRelay::Cut() {
  std::unique_lock<std::mutex> lock(mu_);
  const int ticket = ++cut_requests_;
  Wake();
  cv_.wait_for(lock, Scaled(Duration(5000)), [&] { return cut_done_ >= ticket || stop_; });
  return last_cut_count_;
}

void FaultRelay::Stall(Duration length) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    StallLocked(NowMs(), length);
  }
  WaitTurns();
}

void FaultRelay::StallDownstream(Duration length) {
  down_stall_until_ms_ = NowMs() + length.count();
  WaitTurns();
}

void FaultRelay::WaitTurns() {
  // A turn that was already pumping when the caller changed something may still forward; the
  // turn after next has seen the change.
  const uint64_t target = turns_.load() + 2;
  const Clock::time_point deadline = Clock::now() + Scaled(Duration(1000));
  while (turns_.load() < target && !stop_ && thread_.joinable() && Clock::now() < deadline) {
    Wake();
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

bool FaultRelay::stalled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_stall_;
}

void FaultRelay::StartSchedule(const Schedule& schedule) {
  std::mt19937_64 rng(schedule.seed);
  const int total = std::max(0, schedule.cuts) + std::max(0, schedule.stalls);
  std::vector<Event> events(static_cast<size_t>(total));
  // Which events are cuts: a seeded shuffle.
  for (int i = 0; i < total; ++i) {
    events[static_cast<size_t>(i)].cut = i < schedule.cuts;
  }
  std::shuffle(events.begin(), events.end(), rng);
  // Where: sorted uniform offsets, pushed apart to at least min_gap_bytes (the span grows if it
  // must).
  std::uniform_int_distribution<uint64_t> where(0, std::max<uint64_t>(schedule.span_bytes, 1) - 1);
  std::vector<uint64_t> at(static_cast<size_t>(total));
  for (uint64_t& a : at) {
    a = where(rng);
  }
  std::sort(at.begin(), at.end());
  for (size_t i = 1; i < at.size(); ++i) {
    at[i] = std::max(at[i], at[i - 1] + schedule.min_gap_bytes);
  }
  const int64_t lo = schedule.stall_min.count();
  const int64_t hi = std::max(lo, static_cast<int64_t>(schedule.stall_max.count()));
  std::uniform_int_distribution<int64_t> stall_ms(lo, hi);
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t base = forwarded_.load() + schedule.start_bytes;
  for (size_t i = 0; i < events.size(); ++i) {
    events[i].at = base + at[i];
    if (!events[i].cut) {
      events[i].stall = Duration(stall_ms(rng));
    }
  }
  schedule_ = std::move(events);
  schedule_deadline_ms_ = NowMs() + Scaled(schedule.deadline).count();
  stats_.schedule_done = schedule_.empty();
  Wake();
}

bool FaultRelay::WaitSchedule(Duration timeout) {
  return WaitFor([&] { return stats().schedule_done; }, timeout, Duration(10));
}

FaultRelay::Stats FaultRelay::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::string FaultRelay::Describe() const {
  const Stats s = stats();
  std::ostringstream out;
  out << "relay: accepted " << s.accepted << ", refused " << s.refused << ", live " << s.live
      << ", cuts " << s.cuts << " (" << s.connections_cut << " connections), stalls " << s.stalls
      << " (longest " << s.longest_stall.count() << " ms), forwarded up " << s.up << " down "
      << s.down << ", schedule: " << s.schedule_cuts << " cuts " << s.schedule_stalls << " stalls "
      << s.schedule_skipped << " skipped" << (s.schedule_done ? "" : " (running)");
  return out.str();
}

int64_t FaultRelay::NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
      .count();
}

void FaultRelay::Wake() {
  if (wake_[1] >= 0) {
    const char byte = 1;
    (void)!write(wake_[1], &byte, 1);
  }
}

void FaultRelay::StallLocked(int64_t now_ms, Duration length) {
  stall_until_ms_ = std::max(stall_until_ms_, now_ms + length.count());
  if (!in_stall_) {
    in_stall_ = true;
    stall_started_ms_ = now_ms;
    ++stats_.stalls;
  }
}

int FaultRelay::CutAllLocked(int64_t now_ms) {
  const int n = static_cast<int>(conns_.size());
  for (auto& c : conns_) {
    ResetAndClose(c->fd[0]);
    ResetAndClose(c->fd[1]);
  }
  conns_.clear();
  ++stats_.cuts;
  stats_.connections_cut += n;
  stats_.live = 0;
  recoveries_.push_back(Recovery{now_ms, forwarded_.load(), true});
  return n;
}

void FaultRelay::CountForwarded(size_t n, bool up, int64_t now_ms) {
  (void)now_ms;
  forwarded_ += n;
  std::lock_guard<std::mutex> lock(mu_);
  (up ? stats_.up : stats_.down) += n;
}

void FaultRelay::CheckRecoveries(int64_t now_ms) {
  const uint64_t bytes = forwarded_.load();
  for (auto it = recoveries_.begin(); it != recoveries_.end();) {
    if (bytes >= it->bytes_at + kRecoveredBytes) {
      (it->after_cut ? stats_.recovery_after_cut_ms : stats_.recovery_after_stall_ms)
          .push_back(now_ms - it->since_ms);
      it = recoveries_.erase(it);
    } else {
      ++it;
    }
  }
}

void FaultRelay::AcceptAll(int64_t now_ms) {
  (void)now_ms;
  for (int i = 0; i < kMaxAcceptsPerTurn; ++i) {
    const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      return;
    }
    uint16_t target = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.accepted;
      target = target_;
    }
    const int server = target == 0 ? -1 : ConnectLoopback(target);
    if (server < 0) {
      ResetAndClose(client);
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.refused;
      continue;
    }
    SetNonBlocking(client);
    SetNonBlocking(server);
    auto c = std::make_unique<Conn>();
    c->fd[0] = client;
    c->fd[1] = server;
    conns_.push_back(std::move(c));
  }
}

bool FaultRelay::Pump(Conn& c, int64_t now_ms, bool down) {
  char chunk[kChunk];
  for (int d = 0; d < (down ? 2 : 1); ++d) {
    const int from = c.fd[d];
    const int to = c.fd[1 - d];
    // Bounded: at most a few chunks per direction per turn, so no connection starves others.
    for (int round = 0; round < 4; ++round) {
      bool moved = false;
      if (!c.eof[d] && c.Pending(d) < kMaxPending) {
        const ssize_t n = read(from, chunk, std::min(sizeof chunk, kMaxPending - c.Pending(d)));
        if (n > 0) {
          if (c.offset[d] == c.pending[d].size()) {
            c.pending[d].clear();
            c.offset[d] = 0;
          }
          c.pending[d].append(chunk, static_cast<size_t>(n));
          moved = true;
        } else if (n == 0) {
          c.eof[d] = true;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          return false;  // Reset: pass it on (the caller resets both sides).
        }
      }
      if (c.Pending(d) > 0) {
        const ssize_t n = send(to, c.pending[d].data() + c.offset[d], c.Pending(d), MSG_NOSIGNAL);
        if (n > 0) {
          c.offset[d] += static_cast<size_t>(n);
          CountForwarded(static_cast<size_t>(n), d == 0, now_ms);
          moved = true;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          return false;
        }
      }
      if (!moved) {
        break;
      }
    }
    if (c.eof[d] && c.Pending(d) == 0 && !c.shut[d]) {
      shutdown(to, SHUT_WR);
      c.shut[d] = true;
    }
  }
  return !(c.shut[0] && c.shut[1]);
}

void FaultRelay::Run() {
  std::vector<pollfd> fds;
  while (!stop_) {
    ++turns_;
    const int64_t now = NowMs();
    bool stalled_now = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cut_done_ < cut_requests_) {
        last_cut_count_ = CutAllLocked(now);
        cut_done_ = cut_requests_;
        cv_.notify_all();
      }
      if (in_stall_ && now >= stall_until_ms_) {
        in_stall_ = false;
        stats_.longest_stall = std::max(stats_.longest_stall, Duration(now - stall_started_ms_));
        recoveries_.push_back(Recovery{now, forwarded_.load(), false});
      }
      // The schedule: one due event per turn; none during a stall (nothing flows then).
      if (!schedule_.empty() && now > schedule_deadline_ms_) {
        stats_.schedule_skipped += static_cast<int>(schedule_.size());
        schedule_.clear();
      }
      // A cut waits for a connection to cut (the bridge may be between reconnect attempts).
      if (!in_stall_ && !schedule_.empty() && forwarded_.load() >= schedule_.front().at &&
          !(schedule_.front().cut && conns_.empty())) {
        const Event e = schedule_.front();
        schedule_.erase(schedule_.begin());
        if (e.cut) {
          CutAllLocked(now);
          ++stats_.schedule_cuts;
        } else {
          StallLocked(now, e.stall);
          ++stats_.schedule_stalls;
        }
      }
      stats_.schedule_done = schedule_.empty();
      CheckRecoveries(now);
      stalled_now = in_stall_;
      stats_.live = static_cast<int>(conns_.size());
    }
    int timeout = kPollMs;
    fds.clear();
    fds.push_back(pollfd{wake_[0], POLLIN, 0});
    if (stalled_now) {
      // A black hole: connections and the listener are left alone (poll would report an RST
      // at once, and spin), and the backlog holds new connections.
      std::lock_guard<std::mutex> lock(mu_);
      timeout = static_cast<int>(std::clamp<int64_t>(stall_until_ms_ - now, 0, kPollMs));
    } else {
      const bool down = now >= down_stall_until_ms_.load();
      uint64_t held = 0;
      if (!down) {
        timeout = static_cast<int>(std::clamp<int64_t>(down_stall_until_ms_ - now, 0, kPollMs));
        for (auto& c : conns_) {
          int unread = 0;
          if (ioctl(c->fd[1], FIONREAD, &unread) == 0 && unread > 0) {
            held += static_cast<uint64_t>(unread);
          }
          held += c->Pending(1);
        }
      }
      held_downstream_ = held;
      fds.push_back(pollfd{listen_fd_, POLLIN, 0});
      for (auto& c : conns_) {
        c->poll_index = fds.size();
        for (int d = 0; d < 2; ++d) {
          // fd[d] is read for direction d and written for direction 1 - d (1: downstream).
          short events = 0;
          if (!c->eof[d] && c->Pending(d) < kMaxPending && (d == 0 || down)) {
            events |= POLLIN;
          }
          fds.push_back(pollfd{c->fd[d], events, 0});
          if (c->Pending(1 - d) > 0 && (d == 1 || down)) {
            fds.back().events |= POLLOUT;
          }
        }
      }
    }
    const int ready = poll(fds.data(), fds.size(), timeout);
    if (ready < 0 && errno != EINTR) {
      break;
    }
    char drain[64];
    while (read(wake_[0], drain, sizeof drain) > 0) {
    }
    if (stop_) {
      break;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (in_stall_) {
        continue;
      }
    }
    const int64_t after = NowMs();
    AcceptAll(after);
    for (auto it = conns_.begin(); it != conns_.end();) {
      Conn& c = **it;
      // An error (an RST) on a side that nothing is read from or written to any more would
      // otherwise be seen only when the other side sends again, and poll() would spin on it.
      bool failed = false;
      if (c.poll_index != 0 && c.poll_index + 1 < fds.size()) {
        failed = ((fds[c.poll_index].revents | fds[c.poll_index + 1].revents) & POLLERR) != 0;
      }
      c.poll_index = 0;
      if (!failed && Pump(c, after, after >= down_stall_until_ms_.load())) {
        ++it;
        continue;
      }
      if (c.shut[0] && c.shut[1]) {
        close(c.fd[0]);  // Both directions ended cleanly.
        close(c.fd[1]);
      } else {
        ResetAndClose(c.fd[0]);  // One side failed: the other gets an RST too.
        ResetAndClose(c.fd[1]);
      }
      it = conns_.erase(it);
    }
  }
}

}  // namespace pipegate::testing
