// Fan-out FIFO exports (`fanout = true`): every attached `pipegate cat` gets every byte the
// local writer wrote; a reader that stops reading is dropped with a clear error (policy "drop")
// or holds the writer back (policy "block"); the reader count is capped; end of file ends the
// plain readers and leaves `--follow` readers attached.

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/data.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/gateway_probe.h"
#include "support/pipe_io.h"
#include "support/proc_stats.h"
#include "support/process.h"
#include "support/timing.h"

namespace pipegate::testing {
namespace {

constexpr uint64_t kSeed = 1212;

// A fan-out export of a FIFO the gateway creates, with @p extra keys.
ExportSpec FanoutSpec(const std::string& extra) {
  ExportSpec spec = ExportSpec::FifoRead("logs");
  spec.extra_toml = "fanout = true\n" + extra;
  return spec;
}

// `pipegate cat ADDRESS` whose stdout goes through `sha256sum` into a file, with its exit status
// and stderr kept in files. A gated reader's sha256sum waits until the test opens the gate
// FIFO: until then `pipegate cat` writes into a pipe nobody reads, and stops reading.
class HashingReader {
 public:
  HashingReader(TempDir& dir, const std::string& address, const std::string& tag, bool gated)
      : out_(dir.Join(tag + ".sha")),
        status_(dir.Join(tag + ".status")),
        err_(dir.Join(tag + ".err")),
        gate_(gated ? dir.Join(tag + ".gate") : "") {
    if (gated) {
      EXPECT_TRUE(MakeFifo(gate_));
    }
    ProcessOptions options = PipegateOptions(dir, {"cat", address});
    std::vector<std::string> argv = {
        "sh", "-c",
        "{ \"$@\" 2> \"$ERR\"; echo $? > \"$STATUS\"; } | "
        "{ if [ -n \"$GATE\" ]; then : < \"$GATE\"; fi; sha256sum > \"$OUT\"; }",
        "sh"};
    argv.insert(argv.end(), options.argv.begin(), options.argv.end());
    options.argv = argv;
    options.env.emplace_back("OUT", out_);
    options.env.emplace_back("STATUS", status_);
    options.env.emplace_back("ERR", err_);
    options.env.emplace_back("GATE", gate_);
    process_ = std::make_unique<Process>(options);
  }

  // Lets the gated sha256sum start reading. @return False if it never opened the gate.
  bool OpenGate() {
    int fd = -1;
    WaitFor(
        [&] {
          fd = open(gate_.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
          return fd >= 0;
        },
        Duration(10000));
    if (fd < 0) return false;
    close(fd);
    return true;
  }

  // Waits for the pipeline. @return pipegate's exit status, or -1.
  int Wait(Duration timeout) {
    if (!process_->Wait(timeout)) return -1;
    const std::string text = ReadFile(status_);
    return text.empty() ? -1 : std::stoi(text);
  }
  std::string Sha256() const { return ReadFile(out_).substr(0, 64); }
  std::string Err() const { return ReadFile(err_); }
  bool Running() { return process_->Running(); }

 private:
  std::string out_, status_, err_, gate_;
  std::unique_ptr<Process> process_;
};

// Waits until the gateway has granted @p n streams (its audit log says so).
bool WaitForGrants(GatewayFixture& gw, size_t n) {
  return WaitFor(
      [&] {
        const std::string log = gw.Log();
        size_t count = 0;
        for (size_t at = log.find("decision=granted"); at != std::string::npos;
             at = log.find("decision=granted", at + 1)) {
          ++count;
        }
        return count >= n;
      },
      Duration(15000));
}

// The counter @p name from a SIGUSR1 dump of the gateway's counters, or -1.
int64_t Counter(GatewayFixture& gw, const std::string& name) {
  const size_t before = gw.Log().size();
  gw.Signal(SIGUSR1);
  const std::regex re("\"" + name + "\":([0-9]+)");
  int64_t value = -1;
  WaitFor(
      [&] {
        const std::string log = gw.Log();
        std::smatch m;
        const std::string tail = log.substr(std::min(before, log.size()));
        if (!std::regex_search(tail, m, re)) return false;
        value = std::stoll(m[1]);
        return true;
      },
      Duration(5000));
  return value;
}

// Opens the FIFO for writing (a reader, the hub, has it open) and feeds @p size bytes.
std::unique_ptr<StreamFeeder> StartWriter(const std::string& fifo, uint64_t size) {
  const int fd = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  EXPECT_GE(fd, 0) << "the fan-out FIFO has no reader: " << fifo;
  if (fd < 0) return nullptr;
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return std::make_unique<StreamFeeder>(fd, size, kSeed);
}

// Writes @p size bytes of RandomStream(kSeed) into @p fifo like a log writer that is never
// faster than its honest readers: each 256 KiB step waits until every file in @p outputs (their
// stdout) is within @p slack of what was written. Under the drop policy an honest reader then
// never trails by more than the slack, whatever the scheduling; a reader that does not read is
// not in @p outputs. @return An empty string, or what went wrong.
std::string LockstepWrite(const std::string& fifo, uint64_t size,
                          const std::vector<std::string>& outputs, uint64_t slack) {
  constexpr uint64_t kStep = 256 * kKiB;
  const int fd = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return "the fan-out FIFO has no reader: " + fifo;
  RandomStream data(kSeed);
  std::string chunk;
  uint64_t written = 0;
  std::string error;
  while (written < size && error.empty()) {
    const uint64_t step = std::min(kStep, size - written);
    const bool caught_up = WaitFor(
        [&] {
          for (const std::string& out : outputs) {
            if (FileSize(out).value_or(0) + slack < written + step) return false;
          }
          return true;
        },
        Duration(30000));
    if (!caught_up) {
      error = "readers stopped at " + std::to_string(written) + " bytes";
      break;
    }
    chunk = data.Next(step);
    size_t done = 0;
    const bool wrote = WaitFor(
        [&] {
          const ssize_t n = write(fd, chunk.data() + done, chunk.size() - done);
          if (n > 0) done += static_cast<size_t>(n);
          return done == chunk.size() || (n < 0 && errno != EAGAIN);
        },
        Duration(30000), Duration(1));
    if (!wrote || done != chunk.size())
      error = "the FIFO took no more at " + std::to_string(written);
    written += done;
  }
  close(fd);
  return error;
}

class FanoutIdentical : public ::testing::TestWithParam<std::string> {};

// Four `pipegate cat` readers each get the whole 64 MiB stream, byte for byte, and exit 0 at
// the writer's end of file.
TEST_P(FanoutIdentical, FourReadersGetTheWholeStream) {
  const uint64_t size = DataSize(64 * kMiB, 16 * kMiB);
  TempDir dir;
  GatewayFixture gw(dir, WithExports({FanoutSpec(GetParam())}));
  ASSERT_TRUE(gw.Start());
  std::vector<std::unique_ptr<Bridge>> readers;
  std::vector<std::string> outputs;
  for (int i = 0; i < 4; ++i) {
    outputs.push_back(dir.Join("r" + std::to_string(i) + ".out"));
    readers.push_back(std::make_unique<Bridge>(dir,
                                               std::vector<std::string>{"cat", gw.Address("logs")},
                                               StdioSpec::Null(), outputs.back()));
  }
  ASSERT_TRUE(WaitForGrants(gw, 4));
  const Clock::time_point start = Clock::now();
  // Half the default fanout_lag: honest readers are never dropped.
  ASSERT_EQ(LockstepWrite(gw.ExportPath("logs"), size, outputs, 512 * kKiB), "");
  const std::string want = RandomStreamSha256(size, kSeed);
  for (size_t i = 0; i < readers.size(); ++i) {
    EXPECT_EQ(readers[i]->Wait(Duration(30000)), 0) << readers[i]->Describe();
    EXPECT_EQ(Sha256Hex(outputs[i]), want) << readers[i]->Describe();
  }
  const double seconds = static_cast<double>(Since(start).count()) / 1000.0;
  std::cout << "fan-out of " << size / kMiB << " MiB to 4 readers ("
            << (GetParam().empty() ? "defaults" : GetParam().substr(0, GetParam().size() - 1))
            << "): " << seconds << " s\n";
  EXPECT_EQ(Counter(gw, "fanout_dropped"), 0);
}

INSTANTIATE_TEST_SUITE_P(Policies, FanoutIdentical,
                         ::testing::Values("", "fanout_policy = \"block\"\n"),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                           return param.index == 0 ? "Drop" : "Block";
                         });

// Policy drop: a reader that stops reading is dropped once it trails by fanout_lag; it learns
// why (exit 6 and the reason) once it reads again, while the others get every byte.
TEST(Fanout, DropPolicyDropsAReaderThatStopsReading) {
  const uint64_t size = DataSize(48 * kMiB, 32 * kMiB);
  const uint64_t lag = 1 * kMiB;
  TempDir dir;
  GatewayFixture gw(dir, WithExports({FanoutSpec("fanout_lag = " + std::to_string(lag) + "\n")}));
  ASSERT_TRUE(gw.Start());
  std::vector<std::unique_ptr<Bridge>> readers;
  std::vector<std::string> outputs;
  for (int i = 0; i < 3; ++i) {
    outputs.push_back(dir.Join("r" + std::to_string(i) + ".out"));
    readers.push_back(std::make_unique<Bridge>(dir,
                                               std::vector<std::string>{"cat", gw.Address("logs")},
                                               StdioSpec::Null(), outputs.back()));
  }
  HashingReader stalled(dir, gw.Address("logs"), "stalled", /*gated=*/true);
  ASSERT_TRUE(WaitForGrants(gw, 4));
  ASSERT_EQ(LockstepWrite(gw.ExportPath("logs"), size, outputs, lag / 2), "")
      << "the writer was held back by a reader under the drop policy";
  const std::string want = RandomStreamSha256(size, kSeed);
  for (size_t i = 0; i < readers.size(); ++i) {
    EXPECT_EQ(readers[i]->Wait(Duration(30000)), 0) << readers[i]->Describe();
    EXPECT_EQ(Sha256Hex(outputs[i]), want) << readers[i]->Describe();
  }
  EXPECT_TRUE(stalled.Running()) << "the stalled reader ended before it could read";
  ASSERT_TRUE(stalled.OpenGate());
  EXPECT_EQ(stalled.Wait(Duration(30000)), 6) << stalled.Err();
  EXPECT_TRUE(std::regex_search(
      stalled.Err(),
      std::regex("pipegate: pipe://127\\.0\\.0\\.1:[0-9]+/logs: dropped: reader fell more than " +
                 std::to_string(lag) + " bytes behind on 'logs' \\(fanout_lag\\)")))
      << stalled.Err();
  EXPECT_EQ(Counter(gw, "fanout_dropped"), 1);
}

// Policy block: a reader that stops reading holds the local writer back (its write() blocks,
// as with a slow local reader); once it reads again every reader gets every byte.
TEST(Fanout, BlockPolicyHoldsTheWriterBackUntilTheSlowReaderReads) {
  const uint64_t size = DataSize(32 * kMiB, 16 * kMiB);
  TempDir dir;
  GatewayFixture gw(dir, WithExports({FanoutSpec("fanout_policy = \"block\"\n")}));
  ASSERT_TRUE(gw.Start());
  std::vector<std::unique_ptr<HashingReader>> readers;
  for (int i = 0; i < 2; ++i) {
    readers.push_back(
        std::make_unique<HashingReader>(dir, gw.Address("logs"), "r" + std::to_string(i), false));
  }
  HashingReader slow(dir, gw.Address("logs"), "slow", /*gated=*/true);
  ASSERT_TRUE(WaitForGrants(gw, 3));
  std::unique_ptr<StreamFeeder> writer = StartWriter(gw.ExportPath("logs"), size);
  ASSERT_TRUE(writer);
  // Held back: no progress for a while, far from the end.
  ASSERT_TRUE(
      WaitFor([&] { return Since(writer->last_progress()) > Duration(500); }, Duration(20000)));
  EXPECT_FALSE(writer->done());
  EXPECT_LT(writer->written(), size / 2) << "the writer was not held back";
  std::cout << "block policy held the writer at " << writer->written() / kKiB << " KiB\n";
  ASSERT_TRUE(slow.OpenGate());
  ASSERT_TRUE(WaitFor([&] { return writer->done(); }, Duration(60000)));
  const std::string want = RandomStreamSha256(size, kSeed);
  EXPECT_EQ(slow.Wait(Duration(30000)), 0) << slow.Err();
  EXPECT_EQ(slow.Sha256(), want) << slow.Err();
  for (auto& r : readers) {
    EXPECT_EQ(r->Wait(Duration(30000)), 0) << r->Err();
    EXPECT_EQ(r->Sha256(), want) << r->Err();
  }
  EXPECT_EQ(Counter(gw, "fanout_dropped"), 0);
}

// A hostile client cannot attach readers without end: max_clients caps them ("busy", exit 5).
TEST(Fanout, ReaderCapRefusesOneTooMany) {
  TempDir dir;
  ExportSpec spec = FanoutSpec("");
  spec.max_clients = 2;
  GatewayFixture gw(dir, WithExports({spec}));
  ASSERT_TRUE(gw.Start());
  Bridge a(dir, {"cat", gw.Address("logs")});
  Bridge b(dir, {"cat", gw.Address("logs")});
  ASSERT_TRUE(WaitForGrants(gw, 2));
  ClientResult third = RunPipegate(dir, {"cat", gw.Address("logs")});
  EXPECT_TRUE(IsError(third, 5, gw.Address("logs"), "^busy: all 2 instances of 'logs' are in use$"))
      << third.Describe();
  EXPECT_TRUE(a.Running()) << a.Describe();
  EXPECT_TRUE(b.Running()) << b.Describe();
}

// A reader that never reads cannot make the gateway hold more than fanout_lag for it: it is
// dropped, and the gateway's memory stays near where it was while a writer pours 64 MiB in.
TEST(Fanout, ReaderThatNeverReadsCannotGrowGatewayMemory) {
  const uint64_t size = DataSize(64 * kMiB, 16 * kMiB);
  TempDir dir;
  GatewayFixture gw(dir, WithExports({FanoutSpec("")}));  // Default lag: 1 MiB.
  ASSERT_TRUE(gw.Start());
  HashingReader fast(dir, gw.Address("logs"), "fast", false);
  HashingReader stalled(dir, gw.Address("logs"), "stalled", /*gated=*/true);
  ASSERT_TRUE(WaitForGrants(gw, 2));
  const std::optional<uint64_t> rss_before = ReadRssBytes(gw.pid());
  ASSERT_TRUE(rss_before);
  std::unique_ptr<StreamFeeder> writer = StartWriter(gw.ExportPath("logs"), size);
  ASSERT_TRUE(writer);
  uint64_t rss_peak = *rss_before;
  ASSERT_TRUE(WaitFor(
      [&] {
        rss_peak = std::max(rss_peak, ReadRssBytes(gw.pid()).value_or(0));
        return writer->done();
      },
      Duration(60000)));
  EXPECT_EQ(fast.Wait(Duration(30000)), 0) << fast.Err();
  EXPECT_EQ(fast.Sha256(), RandomStreamSha256(size, kSeed));
  ASSERT_TRUE(stalled.OpenGate());
  EXPECT_EQ(stalled.Wait(Duration(30000)), 6) << stalled.Err();
  EXPECT_NE(stalled.Err().find("dropped: reader fell more than 1048576 bytes behind on 'logs'"),
            std::string::npos)
      << stalled.Err();
  std::cout << "gateway RSS " << *rss_before / kKiB << " KiB before, " << rss_peak / kKiB
            << " KiB at most during " << size / kMiB << " MiB\n";
  // Windows, TLS buffers and the allocator's slack, but never the stream. (Not under the
  // sanitizers: their quarantine and shadow memory count as RSS, see kCheckRss.)
  if (kCheckRss) {
    EXPECT_LT(rss_peak, *rss_before + 24 * kMiB);
  }
}

// End of file ends each plain reader; a `--follow` reader stays for the next writer.
TEST(Fanout, EndOfFileEndsPlainReadersAndFollowersStay) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({FanoutSpec("")}));
  ASSERT_TRUE(gw.Start());
  const std::string fifo = gw.ExportPath("logs");
  const std::string plain_out = dir.Join("plain.out");
  const std::string follow_out = dir.Join("follow.out");
  Bridge plain(dir, {"cat", gw.Address("logs")}, StdioSpec::Null(), plain_out);
  Bridge follow(dir, {"cat", "--follow", gw.Address("logs")}, StdioSpec::Null(), follow_out);
  ASSERT_TRUE(WaitForGrants(gw, 2));
  Process first({"sh", "-c", "echo first > \"$0\"", fifo});
  EXPECT_EQ(first.Wait(Duration(10000)), 0);
  EXPECT_EQ(plain.Wait(Duration(10000)), 0) << plain.Describe();
  EXPECT_EQ(ReadFile(plain_out), "first\n");
  EXPECT_TRUE(WaitFor([&] { return ReadFile(follow_out) == "first\n"; }, Duration(10000)));
  // The hub opens the FIFO again for the next writer.
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo); }, Duration(10000)));
  Process second({"sh", "-c", "echo second > \"$0\"", fifo});
  EXPECT_EQ(second.Wait(Duration(10000)), 0);
  EXPECT_TRUE(WaitFor([&] { return ReadFile(follow_out) == "first\nsecond\n"; }, Duration(10000)))
      << ReadFile(follow_out);
  EXPECT_TRUE(follow.Running()) << follow.Describe();
  // Once the last reader leaves, the FIFO is closed (SPEC §3 "Open follows FIFO rules").
  follow.process().Signal(SIGTERM);
  follow.Wait(Duration(10000));
  EXPECT_TRUE(WaitFor([&] { return !ProcessHasFileOpen(gw.pid(), fifo); }, Duration(10000)));
}

}  // namespace
}  // namespace pipegate::testing
