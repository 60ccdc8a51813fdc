// Checks of the fault-injecting relay (tests/support/fault_relay.h) on its own, against plain
// loopback sockets, so that a resume test failing says something about pipegate, not the relay.

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/fault_relay.h"
#include "support/process.h"
#include "support/tcp_proxy.h"
#include "support/timing.h"

namespace pipegate::testing {
namespace {

// A listening socket on 127.0.0.1:0 that the test accepts from by hand.
class Listener {
 public:
  Listener() { fd_ = ListenOnLoopback(&port_); }
  ~Listener() {
    if (fd_ >= 0) {
      close(fd_);
    }
  }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  uint16_t port() const { return port_; }
  int fd() const { return fd_; }
  // Accepts one connection within the (nominal) timeout; -1 if none came.
  int Accept(Duration timeout) const {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(Scaled(timeout).count())) != 1) {
      return -1;
    }
    return accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

// Reads exactly n bytes within the nominal timeout. On failure returns what it got, with errno.
std::string ReadN(int fd, size_t n, Duration timeout, int* error = nullptr) {
  std::string out;
  const Clock::time_point deadline = Clock::now() + Scaled(timeout);
  char buf[65536];
  while (out.size() < n && Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 20) <= 0) {
      continue;
    }
    const ssize_t got = recv(fd, buf, std::min(sizeof buf, n - out.size()), MSG_DONTWAIT);
    if (got > 0) {
      out.append(buf, static_cast<size_t>(got));
    } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
      if (error != nullptr) {
        *error = got == 0 ? 0 : errno;
      }
      break;
    }
  }
  return out;
}

// What a read on a socket whose peer went away returns: 0 (EOF) or the errno.
int ReadOutcome(int fd, Duration timeout) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, static_cast<int>(Scaled(timeout).count())) != 1) {
    return -1;  // Nothing happened.
  }
  char c;
  const ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
  if (n == 0) {
    return 0;
  }
  return n < 0 ? errno : -2;  // -2: a byte arrived.
}

bool SendAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

std::string Pattern(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    s[i] = static_cast<char>(seed + static_cast<char>(i * 7));
  }
  return s;
}

TEST(FaultRelay, ForwardsBothWaysAndPassesAHalfClose) {
  Listener target;
  ASSERT_GE(target.fd(), 0);
  FaultRelay relay(target.port());
  ASSERT_TRUE(relay.ok());
  const int client = ConnectLoopback(relay.port());
  ASSERT_GE(client, 0);
  const int server = target.Accept(Duration(5000));
  ASSERT_GE(server, 0);

  const std::string up = Pattern(300000, 'a');
  const std::string down = Pattern(200000, 'z');
  std::thread writer([&] { EXPECT_TRUE(SendAll(client, up)); });
  EXPECT_EQ(ReadN(server, up.size(), Duration(5000)), up);
  writer.join();
  ASSERT_TRUE(SendAll(server, down));
  EXPECT_EQ(ReadN(client, down.size(), Duration(5000)), down);

  // The client's half-close reaches the server, which can still answer.
  shutdown(client, SHUT_WR);
  EXPECT_EQ(ReadOutcome(server, Duration(5000)), 0);
  ASSERT_TRUE(SendAll(server, "bye"));
  EXPECT_EQ(ReadN(client, 3, Duration(5000)), "bye");
  close(server);
  EXPECT_EQ(ReadOutcome(client, Duration(5000)), 0);
  close(client);

  EXPECT_TRUE(WaitFor([&] { return relay.stats().live == 0; }, Duration(5000)));
  const FaultRelay::Stats s = relay.stats();
  EXPECT_EQ(s.accepted, 1);
  EXPECT_EQ(s.up, up.size());
  EXPECT_EQ(s.down, down.size() + 3);
  EXPECT_EQ(relay.forwarded(), up.size() + down.size() + 3);
  EXPECT_EQ(s.cuts, 0);
}

TEST(FaultRelay, CutResetsBothSidesAndKeepsListening) {
  Listener target;
  FaultRelay relay(target.port());
  ASSERT_TRUE(relay.ok());
  const int client = ConnectLoopback(relay.port());
  ASSERT_GE(client, 0);
  const int server = target.Accept(Duration(5000));
  ASSERT_GE(server, 0);
  ASSERT_TRUE(SendAll(client, "ping"));
  ASSERT_EQ(ReadN(server, 4, Duration(5000)), "ping");

  EXPECT_EQ(relay.Cut(), 1);
  EXPECT_EQ(ReadOutcome(client, Duration(5000)), ECONNRESET);
  EXPECT_EQ(ReadOutcome(server, Duration(5000)), ECONNRESET);
  close(client);
  close(server);

  const int again = ConnectLoopback(relay.port());
  ASSERT_GE(again, 0);
  const int server2 = target.Accept(Duration(5000));
  ASSERT_GE(server2, 0);
  ASSERT_TRUE(SendAll(again, "pong"));
  EXPECT_EQ(ReadN(server2, 4, Duration(5000)), "pong");
  EXPECT_EQ(relay.Cut(), 1);
  EXPECT_EQ(relay.Cut(), 0) << "nothing left to cut";
  close(again);
  close(server2);
  const FaultRelay::Stats s = relay.stats();
  EXPECT_EQ(s.cuts, 3);
  EXPECT_EQ(s.connections_cut, 2);
  EXPECT_EQ(s.accepted, 2);
}

TEST(FaultRelay, StallHoldsEverythingWithoutClosingThenForwards) {
  Listener target;
  FaultRelay relay(target.port());
  ASSERT_TRUE(relay.ok());
  const int client = ConnectLoopback(relay.port());
  const int server = target.Accept(Duration(5000));
  ASSERT_GE(server, 0);

  const Clock::time_point start = Clock::now();
  relay.Stall(Duration(400));
  EXPECT_TRUE(relay.stalled());
  ASSERT_TRUE(SendAll(client, "held"));
  // A connection made during the stall is held too: the target sees nothing yet.
  const int late = ConnectLoopback(relay.port());
  ASSERT_GE(late, 0);
  pollfd p{server, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 200), 0) << "bytes went through a stall";
  EXPECT_LT(target.Accept(Duration(0)), 0) << "a connection went through a stall";
  EXPECT_EQ(ReadN(server, 4, Duration(5000)), "held");
  EXPECT_GE(Since(start).count(), 350);
  EXPECT_FALSE(relay.stalled());
  const int late_server = target.Accept(Duration(5000));
  EXPECT_GE(late_server, 0) << "the connection held by the stall never came";
  // Nothing was closed.
  ASSERT_TRUE(SendAll(server, "ok"));
  EXPECT_EQ(ReadN(client, 2, Duration(5000)), "ok");
  const FaultRelay::Stats s = relay.stats();
  EXPECT_EQ(s.stalls, 1);
  EXPECT_GE(s.longest_stall.count(), 380);
  EXPECT_EQ(s.cuts, 0);
  for (int fd : {client, server, late, late_server}) {
    if (fd >= 0) {
      close(fd);
    }
  }
}

TEST(FaultRelay, DownstreamStallHoldsRepliesOnly) {
  Listener target;
  FaultRelay relay(target.port());
  ASSERT_TRUE(relay.ok());
  const int client = ConnectLoopback(relay.port());
  const int server = target.Accept(Duration(5000));
  ASSERT_GE(server, 0);
  relay.StallDownstream(Duration(10000));
  ASSERT_TRUE(SendAll(client, "request"));
  EXPECT_EQ(ReadN(server, 7, Duration(5000)), "request") << "the upstream direction stalled";
  ASSERT_TRUE(SendAll(server, "reply"));
  pollfd p{client, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 200), 0) << "a reply went through a downstream stall";
  relay.StallDownstream(Duration(0));
  EXPECT_EQ(ReadN(client, 5, Duration(5000)), "reply");
  // Held replies are lost by a cut.
  relay.StallDownstream(Duration(10000));
  ASSERT_TRUE(SendAll(server, "lost"));
  std::this_thread::sleep_for(Duration(100));
  EXPECT_EQ(relay.Cut(), 1);
  relay.StallDownstream(Duration(0));
  EXPECT_EQ(ReadOutcome(client, Duration(5000)), ECONNRESET);
  close(client);
  close(server);
  EXPECT_EQ(relay.stats().down, 5u);
}

TEST(FaultRelay, RefusesNewConnectionsWithoutATargetAndRetargets) {
  Listener first;
  Listener second;
  FaultRelay relay(first.port());
  ASSERT_TRUE(relay.ok());
  relay.SetTarget(0);
  const int refused = ConnectLoopback(relay.port());
  ASSERT_GE(refused, 0);  // The relay accepts, then resets.
  EXPECT_EQ(ReadOutcome(refused, Duration(5000)), ECONNRESET);
  close(refused);

  relay.SetTarget(second.port());
  const int client = ConnectLoopback(relay.port());
  const int server = second.Accept(Duration(5000));
  ASSERT_GE(server, 0) << "the new target got nothing";
  EXPECT_LT(first.Accept(Duration(0)), 0);
  ASSERT_TRUE(SendAll(client, "x"));
  EXPECT_EQ(ReadN(server, 1, Duration(5000)), "x");
  close(client);
  close(server);
  EXPECT_EQ(relay.stats().refused, 1);
}

// A client that keeps sending (and reconnects after each cut) to a target that drains
// everything; both bounded by a deadline.
class Traffic {
 public:
  Traffic(uint16_t relay_port, Listener& target) : relay_port_(relay_port), target_(target) {
    sink_ = std::thread([this] { Sink(); });
    source_ = std::thread([this] { Source(); });
  }
  ~Traffic() {
    stop_ = true;
    source_.join();
    sink_.join();
  }
  uint64_t drained() const { return drained_.load(); }
  int connections() const { return connections_.load(); }

 private:
  void Source() {
    const std::string chunk(64 * 1024, 'd');
    const Clock::time_point deadline = Clock::now() + Scaled(Duration(30000));
    while (!stop_ && Clock::now() < deadline) {
      const int fd = ConnectLoopback(relay_port_);
      if (fd < 0) {
        std::this_thread::sleep_for(Duration(10));
        continue;
      }
      connections_++;
      while (!stop_ && Clock::now() < deadline) {
        pollfd p{fd, POLLOUT, 0};
        if (poll(&p, 1, 20) <= 0) {
          continue;
        }
        if (send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
            errno != EAGAIN) {
          break;  // Cut: reconnect.
        }
      }
      close(fd);
    }
  }
  void Sink() {
    std::vector<int> fds;
    char buf[65536];
    while (!stop_) {
      std::vector<pollfd> p{{target_.fd(), POLLIN, 0}};
      for (int fd : fds) {
        p.push_back({fd, POLLIN, 0});
      }
      if (poll(p.data(), p.size(), 20) <= 0) {
        continue;
      }
      if (p[0].revents != 0) {
        fds.push_back(accept4(target_.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      }
      for (size_t i = 1; i < p.size(); ++i) {
        if (p[i].revents == 0) {
          continue;
        }
        const ssize_t n = recv(p[i].fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
          drained_ += static_cast<uint64_t>(n);
        } else if (n == 0 || errno != EAGAIN) {
          close(p[i].fd);
          std::erase(fds, p[i].fd);
        }
      }
    }
    for (int fd : fds) {
      close(fd);
    }
  }

  uint16_t relay_port_;
  Listener& target_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> drained_{0};
  std::atomic<int> connections_{0};
  std::thread source_;
  std::thread sink_;
};

TEST(FaultRelay, RandomScheduleCutsAndStallsWhileBytesFlow) {
  Listener target;
  FaultRelay relay(target.port());
  ASSERT_TRUE(relay.ok());
  FaultRelay::Schedule schedule;
  schedule.cuts = 6;
  schedule.stalls = 3;
  schedule.seed = 7;
  schedule.start_bytes = 256 * 1024;
  schedule.span_bytes = 8 << 20;
  schedule.min_gap_bytes = 256 * 1024;
  schedule.stall_min = Duration(50);
  schedule.stall_max = Duration(150);
  schedule.deadline = Duration(20000);
  relay.StartSchedule(schedule);
  EXPECT_FALSE(relay.stats().schedule_done);
  {
    Traffic traffic(relay.port(), target);
    ASSERT_TRUE(relay.WaitSchedule(Duration(25000))) << relay.Describe();
    // Data flows again after the last fault.
    const uint64_t now = traffic.drained();
    EXPECT_TRUE(WaitFor([&] { return traffic.drained() > now + (1 << 20); }, Duration(5000)));
    EXPECT_GE(traffic.connections(), 7) << "one connection per cut, plus the first";
  }
  const FaultRelay::Stats s = relay.stats();
  EXPECT_EQ(s.schedule_cuts, 6) << relay.Describe();
  EXPECT_EQ(s.schedule_stalls, 3) << relay.Describe();
  EXPECT_EQ(s.schedule_skipped, 0);
  EXPECT_EQ(s.cuts, 6);
  EXPECT_EQ(s.stalls, 3);
  EXPECT_GE(s.longest_stall.count(), 50);
  EXPECT_LE(s.longest_stall.count(), 1000);
  EXPECT_GE(s.up, uint64_t{256 * 1024 + 8 * 256 * 1024}) << "events are spread over the bytes";
  EXPECT_EQ(s.recovery_after_stall_ms.size(), 3u);
  EXPECT_GE(s.recovery_after_cut_ms.size(), 5u);
}

TEST(FaultRelay, ScheduleEndsAtItsDeadlineWhenNothingFlows) {
  Listener target;
  FaultRelay relay(target.port());
  FaultRelay::Schedule schedule;
  schedule.cuts = 3;
  schedule.stalls = 2;
  schedule.deadline = Duration(200);
  const Clock::time_point start = Clock::now();
  relay.StartSchedule(schedule);
  ASSERT_TRUE(relay.WaitSchedule(Duration(5000)));
  EXPECT_LT(Since(start).count(), Scaled(Duration(2000)).count());
  const FaultRelay::Stats s = relay.stats();
  EXPECT_EQ(s.schedule_skipped, 5);
  EXPECT_EQ(s.schedule_cuts + s.schedule_stalls, 0);
}

TEST(FaultRelay, DestructorReturnsPromptlyWithLiveAndStalledConnections) {
  Listener target;
  int client = -1;
  int server = -1;
  Clock::time_point start;
  {
    FaultRelay relay(target.port());
    client = ConnectLoopback(relay.port());
    server = target.Accept(Duration(5000));
    ASSERT_GE(server, 0);
    relay.Stall(Duration(60000));
    start = Clock::now();
  }
  EXPECT_LT(Since(start).count(), 1000);
  // The relay's sockets are gone: both ends see the connection end.
  EXPECT_NE(ReadOutcome(client, Duration(5000)), -1);
  EXPECT_NE(ReadOutcome(server, Duration(5000)), -1);
  close(client);
  close(server);
}

}  // namespace
}  // namespace pipegate::testing
