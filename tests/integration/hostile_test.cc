// Hostile but authenticated clients: each test runs one attack through the real gateway with a
// client whose certificate the CA signed, and asserts the cap that bounds it (docs/security.md
// §5), then that the gateway still serves an honest client. The attacks were first reproduced
// with a hand-written TLS client speaking docs/protocol.md; RawClient does the same here.

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/data.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/gateway_probe.h"
#include "support/pipe_io.h"
#include "support/raw_client.h"
#include "support/timing.h"
#include "support/unix_socket.h"

namespace pipegate::testing {
namespace {

constexpr uint8_t kRead = 1;
constexpr uint8_t kWrite = 2;
constexpr uint8_t kDuplex = 3;

class HostileClient : public AbuseFixture {};

std::unique_ptr<RawClient> Dial(GatewayFixture& gw, const Identity& who,
                                RawClient::Settings settings = {}) {
  std::string error;
  std::unique_ptr<RawClient> c = RawClient::Connect(gw.port(), who, &error, settings);
  EXPECT_TRUE(c) << error;
  return c;
}

// The answers to OPENs of @p ids: true for OPEN_OK, false for a RESET (its reason in
// @p reasons). Other frames are dropped. Stops when all are answered or at the timeout.
std::map<uint32_t, bool> Answers(RawClient& c, const std::set<uint32_t>& ids, Duration timeout,
                                 std::map<uint32_t, std::string>* reasons = nullptr) {
  std::map<uint32_t, bool> answers;
  const Clock::time_point deadline = Clock::now() + Scaled(timeout);
  while (answers.size() < ids.size() && Clock::now() < deadline) {
    std::optional<RawFrame> f = c.NextFrame(Duration(200));
    if (!f) {
      if (c.closed()) break;
      continue;
    }
    const uint32_t id = f->header.stream_id;
    if (ids.count(id) == 0 || answers.count(id) != 0) continue;
    if (f->header.type == FrameType::kOpenOk) answers[id] = true;
    if (f->header.type == FrameType::kReset) {
      answers[id] = false;
      if (reasons != nullptr) (*reasons)[id] = DecodeResetReason(*f).second;
    }
  }
  return answers;
}

Buffer Opens(uint32_t first_id, int count, const std::string& name, uint8_t access,
             uint32_t wait_ms = 0) {
  Buffer frames;
  for (int i = 0; i < count; ++i) {
    AppendOpen(frames, first_id + 2 * static_cast<uint32_t>(i),
               OpenPayload{access, 0, wait_ms, name});
  }
  return frames;
}

std::set<uint32_t> Ids(uint32_t first_id, int count) {
  std::set<uint32_t> ids;
  for (int i = 0; i < count; ++i) ids.insert(first_id + 2 * static_cast<uint32_t>(i));
  return ids;
}

// Waits until counter @p name reaches @p at_least.
::testing::AssertionResult CounterReaches(GatewayFixture& gw, const std::string& name,
                                          uint64_t at_least, Duration timeout = Duration(10000)) {
  uint64_t value = 0;
  if (WaitFor(
          [&] {
            value = ReadCounters(gw)[name];
            return value >= at_least;
          },
          timeout, Duration(50))) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << name << " = " << value << ", expected >= " << at_least;
}

// Gateway CPU time (user + system), in milliseconds.
uint64_t CpuMs(pid_t pid) {
  const std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  const size_t close_paren = stat.rfind(')');
  if (close_paren == std::string::npos) return 0;
  unsigned long long utime = 0, stime = 0;
  // Fields after the command: state(3) ... utime(14) stime(15).
  if (std::sscanf(stat.c_str() + close_paren + 2,
                  "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2) {
    return 0;
  }
  return (utime + stime) * 1000 / static_cast<uint64_t>(sysconf(_SC_CLK_TCK));
}

// A client that resumes its own live session on the same connection used to make the session
// attach to itself: its streams leaked their FIFO and instance for good and the gateway crashed
// when the FIFO's local writer left. Now that RESUME is refused, and one that follows an OPEN is
// a protocol error; either way the connection's streams are freed.
TEST_F(HostileClient, ResumeOfItsOwnSessionIsRefusedAndLeaksNothing) {
  StartGateway("", {ExportSpec::FifoRead("one")});
  {
    std::unique_ptr<RawClient> c = Dial(*gw_, Alice());
    ASSERT_TRUE(c);
    const std::string sid = c->WaitSession(Duration(5000));
    ASSERT_EQ(sid.size(), kSessionIdSize);
    ASSERT_TRUE(c->SendResume(sid, c->ResumeKey(sid)));
    EXPECT_TRUE(c->WaitClosed(Duration(5000)));
    EXPECT_EQ(c->goaway_reason(), "a connection cannot resume its own session");
  }
  EXPECT_TRUE(CounterReaches(*gw_, "resume_protocol_errors", 1));
  {
    std::unique_ptr<RawClient> c = Dial(*gw_, Alice());
    ASSERT_TRUE(c);
    const std::string sid = c->WaitSession(Duration(5000));
    ASSERT_TRUE(c->SendOpen(1, "one", kRead));
    ASSERT_TRUE(c->WaitFor(FrameType::kOpenOk, 1, Duration(5000)));
    // The local writer comes and goes while the stream is open.
    const int writer = open(gw_->ExportPath("one").c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    ASSERT_GE(writer, 0);
    ASSERT_EQ(write(writer, "x\n", 2), 2);
    ASSERT_TRUE(c->SendResume(sid, c->ResumeKey(sid)));
    EXPECT_TRUE(c->WaitClosed(Duration(5000)));
    EXPECT_EQ(c->goaway_reason(), "RESUME is accepted only as the first frame after SETTINGS");
    close(writer);
  }
  // The one instance of `one` is free again (it used to answer "busy" for good), and the
  // stream's end of the FIFO is closed (HonestCatWorks checks that first).
  EXPECT_TRUE(HonestCatWorks(dir_, *gw_, "one"));
  ExpectRecovered("resume_own_session");
}

// Frames sent in the same TLS record right after a RESUME belong to the resumed session: an
// OPEN there is answered by it (it used to be granted by the discarded session, which never
// answered, and its instance leaked).
TEST_F(HostileClient, FramesAfterResumeReachTheResumedSession) {
  StartGateway("", {ExportSpec::FifoRead("one")}, "resume_ttl = 2");
  std::string sid, key;
  {
    std::unique_ptr<RawClient> first = Dial(*gw_, Alice());
    ASSERT_TRUE(first);
    sid = first->WaitSession(Duration(5000));
    ASSERT_EQ(sid.size(), kSessionIdSize);
    key = first->ResumeKey(sid);
  }  // Dropped without close_notify: the session is detached, not ended.
  ASSERT_TRUE(CounterReaches(*gw_, "sessions_detached", 1));
  std::unique_ptr<RawClient> again = Dial(*gw_, Alice());
  ASSERT_TRUE(again);
  Buffer open_frame = Opens(1, 1, "one", kRead);
  ASSERT_TRUE(again->SendResume(sid, key, &open_frame));
  ASSERT_TRUE(again->WaitFor(FrameType::kResumeOk, 0, Duration(5000)))
      << "goaway: " << again->goaway_reason();
  ASSERT_TRUE(again->WaitFor(FrameType::kOpenOk, 1, Duration(5000)));
  const int writer = open(gw_->ExportPath("one").c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  ASSERT_EQ(write(writer, "resumed\n", 8), 8);
  close(writer);
  std::optional<RawFrame> data = again->WaitFor(FrameType::kData, 1, Duration(5000));
  ASSERT_TRUE(data);
  EXPECT_EQ(data->payload.substr(kDataPrefixSize), "resumed\n");
  again.reset();
  // Detached again; once its lifetime ends, the instance is free.
  ASSERT_TRUE(CounterReaches(*gw_, "sessions_expired", 1, Duration(15000)));
  EXPECT_TRUE(HonestCatWorks(dir_, *gw_, "one"));
  ExpectRecovered("frames_after_resume");
}

// A certificate for the same key that names other identities cannot take over a session.
TEST_F(HostileClient, ResumeWithAnotherIdentityOfTheSameKeyIsRefused) {
  StartGateway("");
  std::string sid, key;
  {
    std::unique_ptr<RawClient> first = Dial(*gw_, Alice());
    ASSERT_TRUE(first);
    sid = first->WaitSession(Duration(5000));
    key = first->ResumeKey(sid);
  }
  ASSERT_TRUE(CounterReaches(*gw_, "sessions_detached", 1));
  std::unique_ptr<RawClient> eve = Dial(*gw_, Identity::Of("alice-as-eve"));
  ASSERT_TRUE(eve);
  ASSERT_TRUE(eve->SendResume(sid, key));
  EXPECT_TRUE(eve->WaitClosed(Duration(5000)));
  EXPECT_EQ(eve->goaway_reason(), "the certificate names other identities than the session's");
  // alice herself still can.
  std::unique_ptr<RawClient> alice = Dial(*gw_, Alice());
  ASSERT_TRUE(alice);
  ASSERT_TRUE(alice->SendResume(sid, key));
  EXPECT_TRUE(alice->WaitFor(FrameType::kResumeOk, 0, Duration(5000)))
      << "goaway: " << alice->goaway_reason();
  alice.reset();
  ExpectRecovered("resume_other_identity");
}

// A client that grants enormous windows, keeps raising its CREDIT limits and never confirms a
// byte made the gateway keep everything it sent for replay (1.87 GB in 20 s). Now the replay is
// capped per stream, per session and per identity; the client just stops getting data.
TEST_F(HostileClient, ReplayBytesAreBoundedWhateverTheClientGrants) {
  constexpr uint64_t kPerStream = 256 * 1024;
  constexpr uint64_t kPerSession = 768 * 1024;
  constexpr uint64_t kPerIdentity = 1024 * 1024;
  constexpr uint64_t kFrame = 64 * 1024;  // A session may pass a shared budget by one frame.
  std::vector<ExportSpec> exports;
  for (int i = 0; i < 8; ++i) {
    exports.push_back(ExportSpec::FifoRead("r" + std::to_string(i)));
    exports.back().allow = {"bob"};  // alice stays the honest client: bob's caps are his own.
  }
  StartGateway(
      "max_replay_bytes_per_stream = \"256K\"\nmax_replay_bytes_per_session = \"768K\"\n"
      "max_replay_bytes_per_identity = \"1M\"\nmax_replay_bytes = \"64M\"",
      exports);
  RawClient::Settings greedy;
  greedy.stream_window = 0x7fffffff;
  greedy.session_window = 0x7fffffff;
  std::vector<std::unique_ptr<RawClient>> clients;
  std::vector<std::unique_ptr<StreamFeeder>> feeders;
  for (int c = 0; c < 2; ++c) {
    clients.push_back(Dial(*gw_, Bob(), greedy));
    ASSERT_TRUE(clients.back());
    Buffer opens;
    for (int s = 0; s < 4; ++s) {
      AppendOpen(opens, 1 + 2 * static_cast<uint32_t>(s),
                 OpenPayload{kRead, 0, 0, "r" + std::to_string(c * 4 + s)});
    }
    ASSERT_TRUE(clients.back()->Send(opens));
    std::map<uint32_t, bool> answers = Answers(*clients.back(), Ids(1, 4), Duration(5000));
    ASSERT_EQ(answers.size(), 4u);
    for (auto& [id, ok] : answers) ASSERT_TRUE(ok) << "stream " << id;
  }
  // The local writers start once every stream is open (no DATA is dropped while waiting).
  for (int i = 0; i < 8; ++i) {
    const int fd = open(gw_->ExportPath("r" + std::to_string(i)).c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    feeders.push_back(std::make_unique<StreamFeeder>(fd, 64 * kMiB, 100 + i));
  }
  // Read everything the gateway sends, never confirm delivery, and raise the limits.
  std::map<int, std::map<uint32_t, uint64_t>> got;
  Buffer greed;
  for (uint32_t id = 1; id <= 7; id += 2) AppendCredit(greed, id, CreditPayload{0, 1ull << 40});
  AppendCredit(greed, 0, CreditPayload{0, 1ull << 40});
  const Clock::time_point end = Clock::now() + Scaled(Duration(3000));
  while (Clock::now() < end) {
    for (int c = 0; c < 2; ++c) {
      ASSERT_TRUE(clients[c]->Send(greed)) << "client " << c << ": " << clients[c]->close_reason()
                                           << "; GOAWAY \"" << clients[c]->goaway_reason() << "\"";
      while (std::optional<RawFrame> f = clients[c]->NextFrame(Duration(20))) {
        if (f->header.type == FrameType::kData) {
          got[c][f->header.stream_id] += f->payload.size() - kDataPrefixSize;
        }
      }
    }
  }
  uint64_t total = 0, max_stream = 0;
  for (int c = 0; c < 2; ++c) {
    uint64_t session = 0;
    for (auto& [id, n] : got[c]) {
      EXPECT_LE(n, kPerStream) << "client " << c << " stream " << id;
      max_stream = std::max(max_stream, n);
      session += n;
    }
    EXPECT_LE(session, kPerSession) << "client " << c;
    total += session;
  }
  EXPECT_LE(total, kPerIdentity + 2 * kFrame);
  EXPECT_GE(total, kPerIdentity - 2 * kFrame) << "the caps should have been reached";
  const uint64_t rss = Rss(*gw_);
  if (kCheckRss) {
    EXPECT_LE(rss, baseline_rss_ + 32 * kMiB);
  }
  Report("replay_caps", "2 greedy clients x 4 streams got " + std::to_string(total) +
                            " bytes unconfirmed (identity cap " + std::to_string(kPerIdentity) +
                            ", largest stream " + std::to_string(max_stream) + "), RSS " +
                            MiB(rss) + " (baseline " + MiB(baseline_rss_) + ")");
  for (auto& f : feeders) f->Stop();
  clients.clear();
  ExpectRecovered("replay_caps");
}

// A client allowed on nothing floods PINGs and never reads: the gateway used to keep reading
// and queue every PING ACK (RSS 84 MiB -> 1 GB in 8 s). Now it stops reading that client once
// max_write_backlog_per_connection waits, and the client's sends block.
TEST_F(HostileClient, PingFloodFromAClientThatNeverReadsIsBounded) {
  StartGateway("max_write_backlog_per_connection = \"256K\"");
  std::unique_ptr<RawClient> flooder = Dial(*gw_, Bob());
  ASSERT_TRUE(flooder);
  Buffer pings;
  for (uint64_t i = 0; i < 4096; ++i) AppendPing(pings, 0, i);
  uint64_t sent = 0;
  bool blocked = false;
  const Clock::time_point end = Clock::now() + Scaled(Duration(20000));
  while (sent < 512 * kMiB && Clock::now() < end) {
    if (!flooder->Send(pings, Duration(1000))) {
      blocked = true;
      break;
    }
    sent += pings.size();
  }
  EXPECT_TRUE(blocked) << "the gateway kept reading " << sent << " bytes of PINGs";
  EXPECT_LT(sent, 128 * kMiB);
  const uint64_t rss = Rss(*gw_);
  if (kCheckRss) {
    EXPECT_LE(rss, baseline_rss_ + 32 * kMiB);
  }
  // Others are served while the flooder sits there.
  ::testing::AssertionResult honest = HonestCatWorks(dir_, *gw_);
  EXPECT_TRUE(honest);
  Report("ping_flood", "the gateway stopped reading after " + MiB(sent) + " of PINGs; RSS " +
                           MiB(rss) + " (baseline " + MiB(baseline_rss_) + "); honest cat in " +
                           honest.message());
  flooder.reset();
  ExpectRecovered("ping_flood");
}

// One identity opening streams and abandoning its connections kept every stream (and its
// descriptor) for the resume lifetime, until the gateway ran out of descriptors. Now streams
// are capped per identity and so are its sessions awaiting a resume; others are unaffected and
// the descriptors come back when the sessions expire.
TEST_F(HostileClient, AbandonedStreamsAreCappedPerIdentity) {
  const std::string sock = dir_.path() + "/svc.sock";
  UnixEchoServer server(sock);
  ASSERT_TRUE(server.ok()) << server.error();
  ExportSpec svc = ExportSpec::Unix("svc", sock);
  svc.allow = {"alice", "bob"};
  StartGateway("max_streams_per_identity = 40\nmax_detached_sessions_per_identity = 2", {svc},
               "resume_ttl = 4");
  const int fds_before = CountFds(gw_->pid());
  int granted = 0, refused_for_identity = 0;
  for (int round = 0; round < 5; ++round) {
    std::unique_ptr<RawClient> c = Dial(*gw_, Alice());
    ASSERT_TRUE(c);
    ASSERT_TRUE(c->Send(Opens(1, 30, "svc", kDuplex)));
    std::map<uint32_t, std::string> reasons;
    std::map<uint32_t, bool> answers = Answers(*c, Ids(1, 30), Duration(10000), &reasons);
    ASSERT_EQ(answers.size(), 30u) << "round " << round;
    for (auto& [id, ok] : answers) {
      granted += ok ? 1 : 0;
      if (!ok) {
        EXPECT_EQ(reasons[id], "too many streams for 'alice' (limit 40 per identity)");
        ++refused_for_identity;
      }
    }
    EXPECT_LE(CountFds(gw_->pid()), fds_before + 40 + 8) << "round " << round;
  }  // Each connection is dropped without close_notify.
  EXPECT_EQ(granted, 40);
  EXPECT_EQ(refused_for_identity, 110);
  EXPECT_TRUE(CounterReaches(*gw_, "sessions_not_kept", 3));
  EXPECT_TRUE(CounterReaches(*gw_, "refused_streams_identity", 110));
  // Another identity is not refused.
  std::unique_ptr<RawClient> bob = Dial(*gw_, Bob());
  ASSERT_TRUE(bob);
  ASSERT_TRUE(bob->SendOpen(1, "svc", kDuplex));
  EXPECT_TRUE(bob->WaitFor(FrameType::kOpenOk, 1, Duration(5000)));
  bob.reset();
  // Once the two kept sessions expire, their descriptors are gone.
  EXPECT_TRUE(CounterReaches(*gw_, "sessions_expired", 2, Duration(20000)));
  EXPECT_TRUE(
      WaitFor([&] { return CountFds(gw_->pid()) <= fds_before; }, Duration(10000), Duration(50)))
      << CountFds(gw_->pid()) << " descriptors, " << fds_before << " before";
  Report("abandoned_streams", "granted " + std::to_string(granted) + " of 150 opens (cap 40), " +
                                  std::to_string(CountFds(gw_->pid())) + " fds after the TTL (" +
                                  std::to_string(fds_before) + " before)");
  ExpectRecovered("abandoned_streams");
}

// OPENs that wait (--wait) were accepted with any wait (49.7 days) and retried every 20 ms:
// 20 connections x 256 of them kept a worker at 100 %. Now at most
// max_pending_opens_per_connection wait, for at most max_open_wait, and retries back off.
TEST_F(HostileClient, WaitingOpensAreCappedInNumberAndTime) {
  StartGateway("max_pending_opens_per_connection = 4\nmax_open_wait = 1",
               {ExportSpec::FifoWrite("cmd")});
  std::unique_ptr<RawClient> c = Dial(*gw_, Alice());
  ASSERT_TRUE(c);
  const Clock::time_point start = Clock::now();
  ASSERT_TRUE(c->Send(Opens(1, 10, "cmd", kWrite, 0xffffffffu)));
  std::map<uint32_t, std::string> reasons;
  std::map<uint32_t, bool> answers = Answers(*c, Ids(1, 10), Duration(10000), &reasons);
  const Duration took = Since(start);
  ASSERT_EQ(answers.size(), 10u) << "not every open was answered within 10 s";
  for (auto& [id, ok] : answers) {
    EXPECT_FALSE(ok);
    EXPECT_EQ(reasons[id], "no reader: nothing has 'cmd' open for reading");
  }
  EXPECT_GE(took, Duration(900)) << "the four that wait are answered after max_open_wait";
  EXPECT_TRUE(CounterReaches(*gw_, "refused_pending_opens", 6));
  c.reset();
  ExpectRecovered("pending_opens");
}

TEST_F(HostileClient, ManyWaitingOpensCostLittleCpu) {
  StartGateway("max_open_wait = 30", {ExportSpec::FifoWrite("cmd")});
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < 20; ++i) {
    clients.push_back(Dial(*gw_, Alice()));
    ASSERT_TRUE(clients.back());
    ASSERT_TRUE(clients.back()->Send(Opens(1, 256, "cmd", kWrite, 0xffffffffu)));
  }
  // 16 of each connection's opens wait (the default cap), the rest are refused at once.
  ASSERT_TRUE(CounterReaches(*gw_, "refused_pending_opens", 20 * 240));
  const uint64_t cpu_before = CpuMs(gw_->pid());
  const Clock::time_point start = Clock::now();
  ::testing::AssertionResult honest = HonestCatWorks(dir_, *gw_);
  EXPECT_TRUE(honest);
  std::this_thread::sleep_for(std::chrono::seconds(2));  // The measuring window.
  const uint64_t cpu_ms = CpuMs(gw_->pid()) - cpu_before;
  const uint64_t wall_ms = static_cast<uint64_t>(Since(start).count());
  EXPECT_LE(cpu_ms * 4, wall_ms) << "320 waiting opens kept the gateway " << cpu_ms
                                 << " ms busy in " << wall_ms << " ms";
  Report("waiting_opens", "320 waiting opens: gateway CPU " + std::to_string(cpu_ms) + " ms in " +
                              std::to_string(wall_ms) + " ms; honest cat in " + honest.message());
  clients.clear();
  ExpectRecovered("waiting_opens");
}

}  // namespace
}  // namespace pipegate::testing
