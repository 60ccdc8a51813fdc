// Worker::Post against a worker that has stopped: the handoff is refused and its connection
// closed, never queued on a loop that will not run again nor sent through a closed handle.
// A real worker thread and loop, no listeners and no sessions.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include <gtest/gtest.h>

#include "gateway.h"
#include "worker.h"

namespace pipegate::gateway {
namespace {

// One end of a socketpair stands in for a released connection's socket; the test keeps the
// other end and learns from it whether the worker closed its end.
struct SocketPair {
  int ours = -1;
  int theirs = -1;
  SocketPair() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    ours = fds[0];
    theirs = fds[1];
  }
  ~SocketPair() { ::close(ours); }
  SocketPair(const SocketPair&) = delete;
  SocketPair& operator=(const SocketPair&) = delete;
};

// True once the peer of `ours` is closed: a read gets EOF (SO_RCVTIMEO bounds the wait).
bool PeerClosed(int ours) {
  timeval tv{5, 0};
  ::setsockopt(ours, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char byte;
  return ::read(ours, &byte, 1) == 0;
}

TEST(WorkerPost, RefusedAndClosedOnceTheWorkerHasStopped) {
  Gateway gateway("/nonexistent/pipegated.toml");  // Only its shared state is used.
  Worker worker(&gateway, 0);
  worker.Start({});
  worker.RequestStop();
  worker.Join();  // The loop ran Stop(), closed its Async and returned.

  for (int i = 0; i < 3; ++i) {
    SocketPair pair;
    Worker::Handoff handoff;
    handoff.session_id = "s";
    handoff.conn.fd = pair.theirs;
    EXPECT_FALSE(worker.Post(std::move(handoff)));
    EXPECT_TRUE(PeerClosed(pair.ours)) << "the refused handoff's socket was left open";
  }
}

}  // namespace
}  // namespace pipegate::gateway
