// Concurrent `pipegate write --lines` writers never tear each other's lines (SPEC §3 "Atomic
// small writes"), and each writer's lines arrive exactly once, in order.

#include <cinttypes>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/data.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/pipe_io.h"
#include "support/timing.h"

namespace pipegate::testing {
namespace {

constexpr size_t kMaxLine = 2000;  // Bytes, newline included; well under PIPE_BUF (4096).

// One line: "w<writer> <seq> <fnv64 of payload, 16 hex> <payload>\n", 1..2000 bytes in all
// (never shorter than its header).
// With `exact_size`, every line is exactly that long instead.
std::string MakeLine(int writer, int seq, std::mt19937_64& rng, size_t exact_size = 0) {
  char header[64];
  std::snprintf(header, sizeof header, "w%d %d ", writer, seq);
  const size_t fixed = std::string_view(header).size() + 16 + 1 + 1;
  std::uniform_int_distribution<size_t> length(fixed, kMaxLine);
  const size_t payload_size = (exact_size != 0 ? exact_size : length(rng)) - fixed;
  static const char kAlphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::uniform_int_distribution<size_t> pick(0, sizeof kAlphabet - 2);
  std::string payload(payload_size, ' ');
  for (char& c : payload) {
    c = kAlphabet[pick(rng)];
  }
  char sum[17];
  std::snprintf(sum, sizeof sum, "%016" PRIx64, Fnv1a64(payload));
  return std::string(header) + sum + " " + payload + "\n";
}

struct LineCheck {
  std::vector<int> next_seq;  // Per writer: the next sequence number expected.
  std::vector<std::string> problems;
  size_t lines = 0;

  void Problem(const std::string& text) {
    if (problems.size() < 10) {
      problems.push_back(text);
    }
  }

  void Check(std::string_view line) {
    ++lines;
    int writer = -1;
    int seq = -1;
    uint64_t sum = 0;
    int consumed = 0;
    const std::string head(line.substr(0, 64));
    if (std::sscanf(head.c_str(), "w%d %d %16" SCNx64 " %n", &writer, &seq, &sum, &consumed) != 3 ||
        consumed == 0 || writer < 0 || writer >= static_cast<int>(next_seq.size())) {
      Problem("unparsable line " + std::to_string(lines) + ": '" + std::string(line.substr(0, 80)) +
              "'");
      return;
    }
    const std::string_view payload = line.substr(static_cast<size_t>(consumed));
    if (Fnv1a64(payload) != sum) {
      Problem("torn or corrupt line " + std::to_string(lines) + " (w" + std::to_string(writer) +
              " #" + std::to_string(seq) + ", " + std::to_string(line.size()) + " bytes)");
      return;
    }
    int& expected = next_seq[static_cast<size_t>(writer)];
    if (seq != expected) {
      Problem("writer " + std::to_string(writer) + ": got #" + std::to_string(seq) +
              ", expected #" + std::to_string(expected));
    }
    expected = seq + 1;
  }
};

// Runs kWriters concurrent `pipegate write [--lines]` into one fifo write export and checks what
// one local reader got: no torn record, each writer's records exactly once and in order.
void RunConcurrentWriters(bool lines_mode, int records_per_writer, size_t exact_size) {
  constexpr int kWriters = 4;
  TempDir dir;
  GatewayFixture gw(dir,
                    WithExports({ExportSpec::FifoWrite("journal")}));  // max_clients: unlimited.
  ASSERT_TRUE(gw.Start());

  uint64_t total = 0;
  std::vector<std::string> inputs;
  for (int w = 0; w < kWriters; ++w) {
    std::mt19937_64 rng(1000 + static_cast<uint64_t>(w));
    std::string text;
    for (int seq = 0; seq < records_per_writer; ++seq) {
      text += MakeLine(w, seq, rng, exact_size);
    }
    total += text.size();
    inputs.push_back(dir.Join("lines-" + std::to_string(w)));
    ASSERT_TRUE(WriteFile(inputs.back(), text));
  }

  FifoReaderOptions reader_options;
  reader_options.stop_at_eof = false;  // Writers come and go; keep reading across their EOFs.
  reader_options.keep_data = true;
  FifoReader reader(gw.ExportPath("journal"), reader_options);
  ASSERT_TRUE(reader.ok()) << reader.error();

  std::vector<std::unique_ptr<Bridge>> writers;
  for (int w = 0; w < kWriters; ++w) {
    std::vector<std::string> args = {"write", gw.Address("journal")};
    if (lines_mode) {
      args.insert(args.begin() + 1, "--lines");
    }
    writers.push_back(
        std::make_unique<Bridge>(dir, args, StdioSpec::File(inputs[static_cast<size_t>(w)])));
    ASSERT_TRUE(writers.back()->started());
  }
  // One deadline for all writers, so a hang costs 120 s, not 120 s per writer.
  WaitFor(
      [&] {
        for (auto& writer : writers) {
          if (writer->Running()) {
            return false;
          }
        }
        return true;
      },
      Duration(120000), Duration(20));
  for (int w = 0; w < kWriters; ++w) {
    EXPECT_EQ(writers[static_cast<size_t>(w)]->Result().status, 0)
        << "writer " << w << ": " << writers[static_cast<size_t>(w)]->Describe();
  }
  // Every writer exited 0, so every byte is in the FIFO; let the reader catch up.
  EXPECT_TRUE(WaitFor([&] { return reader.bytes() >= total; }, Duration(30000)))
      << "reader has " << reader.bytes() << " of " << total << " bytes";
  reader.Stop();
  const std::string data = reader.data();
  EXPECT_EQ(data.size(), total);

  LineCheck check;
  check.next_seq.assign(kWriters, 0);
  size_t start = 0;
  while (start < data.size()) {
    const size_t end = data.find('\n', start);
    if (end == std::string::npos) {
      check.Problem("data ends without a newline");
      break;
    }
    check.Check(std::string_view(data).substr(start, end - start));
    start = end + 1;
  }
  for (const auto& problem : check.problems) {
    ADD_FAILURE() << problem;
  }
  EXPECT_TRUE(check.problems.empty())
      << check.problems.size() << "+ problems in " << check.lines << " records";
  for (int w = 0; w < kWriters; ++w) {
    EXPECT_EQ(check.next_seq[static_cast<size_t>(w)], records_per_writer)
        << "writer " << w << " records delivered";
  }
}

// Lines of 1..2000 bytes, with --lines: each line is one write() into the FIFO.
TEST(Lines, ConcurrentLineWritersNeverTearLines) {
  RunConcurrentWriters(/*lines_mode=*/true, static_cast<int>(DataSize(20000, 5000)), 0);
}

// Without --lines the stream is cut into 4096-byte aligned blocks, so fixed-size records of a
// divisor of 4096 (here 512 bytes) arrive whole.
TEST(Lines, ConcurrentBlockWritersKeepAlignedRecordsWhole) {
  RunConcurrentWriters(/*lines_mode=*/false, static_cast<int>(DataSize(16384, 4096)), 512);
}

}  // namespace
}  // namespace pipegate::testing
