#include "support/gateway_probe.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <optional>

#include "support/bridge_client.h"
#include "support/data.h"
#include "support/proc_stats.h"
#include "support/process.h"
#include <nlohmann/json.hpp>

namespace pipegate::testing {

void RaiseFdLimit(rlim_t want) {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < want) {
    limit.rlim_cur = std::min<rlim_t>(want, limit.rlim_max);
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

int CountSockets(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return -1;
  int count = 0;
  while (dirent* e = readdir(d)) {
    char target[64] = "";
    const std::string link = dir + "/" + e->d_name;
    ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
    if (n > 0 && std::string(target, static_cast<size_t>(n)).rfind("socket:", 0) == 0) ++count;
  }
  closedir(d);
  return count;
}

int CountFds(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return -1;
  int count = 0;
  while (dirent* e = readdir(d)) count += e->d_name[0] == '.' ? 0 : 1;
  closedir(d);
  return count;
}

std::map<std::string, uint64_t> ReadCounters(GatewayFixture& gw) {
  std::map<std::string, uint64_t> counters;
  const size_t before = gw.Log().size();
  gw.Signal(SIGUSR1);
  std::string line;
  WaitFor(
      [&] {
        const std::string log = gw.Log();
        const size_t at = log.find("counters: ", before);
        if (at == std::string::npos) return false;
        const size_t end = log.find('\n', at);
        if (end == std::string::npos) return false;
        line = log.substr(at, end - at);
        return true;
      },
      Duration(5000));
  // `counters: {"name":value,...}`: one JSON object.
  const size_t brace = line.find('{');
  const nlohmann::json json = nlohmann::json::parse(
      brace == std::string::npos ? std::string() : line.substr(brace), nullptr, false);
  if (json.is_object()) {
    for (const auto& [name, value] : json.items()) {
      if (value.is_number_unsigned()) counters[name] = value.get<uint64_t>();
    }
  }
  EXPECT_FALSE(counters.empty()) << "no counters line after SIGUSR1:\n" << Tail(gw.Log());
  return counters;
}

uint64_t Rss(GatewayFixture& gw) { return ReadRssBytes(gw.pid()).value_or(0); }

std::string MiB(uint64_t bytes) {
  char text[32];
  snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / kMiB);
  return text;
}

::testing::AssertionResult HonestCatWorks(TempDir& dir, GatewayFixture& gw, const std::string& name,
                                          Duration limit) {
  const std::string fifo = gw.ExportPath(name);
  // A stream that just ended may still hold the FIFO for a moment (its client can see the end
  // first). Wait for it: a writer that met that old reader would see its bytes lost.
  if (!WaitFor([&] { return !ProcessHasFileOpen(gw.pid(), fifo); }, Duration(5000), Duration(5))) {
    return ::testing::AssertionFailure() << "the gateway still holds " << fifo;
  }
  const std::string out = dir.Unique("honest", ".out");
  const Clock::time_point start = Clock::now();
  Bridge cat(dir, {"cat", gw.Address(name)}, StdioSpec::Null(), out);
  if (!WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !cat.Running(); },
               Duration(10000)) ||
      !cat.Running()) {
    return ::testing::AssertionFailure() << "cat never attached: " << cat.Describe();
  }
  const int writer = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (writer < 0 || write(writer, "hello\n", 6) != 6) {
    if (writer >= 0) close(writer);
    return ::testing::AssertionFailure() << "cannot write into " << fifo;
  }
  close(writer);
  const std::optional<int> status = cat.Wait(Duration(10000));
  const Duration took = Since(start);
  if (status != 0 || ReadFile(out) != "hello\n") {
    return ::testing::AssertionFailure() << "honest cat failed: " << cat.Describe();
  }
  if (took > Scaled(limit)) {
    return ::testing::AssertionFailure() << "honest cat took " << took.count() << " ms";
  }
  return ::testing::AssertionSuccess() << took.count() << " ms";
}

::testing::AssertionResult RssSettles(GatewayFixture& gw, uint64_t baseline, uint64_t* after) {
  const bool ok = WaitFor(
      [&] {
        *after = Rss(gw);
        return !kCheckRss || *after <= baseline + kRssSlack;
      },
      Duration(10000), Duration(100));
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "RSS " << MiB(*after) << " stays above the baseline "
                                       << MiB(baseline) << " + " << MiB(kRssSlack);
}

void Report(const std::string& what, const std::string& figures) {
  ::testing::Test::RecordProperty(what, figures);
  std::printf("[ figures  ] %s: %s\n", what.c_str(), figures.c_str());
}

void AbuseFixture::SetUp() {
  IgnoreSigpipe();
  RaiseFdLimit(4096);
}

void AbuseFixture::StartGateway(const std::string& limits_toml, std::vector<ExportSpec> extra,
                                const std::string& gateway_toml) {
  std::vector<ExportSpec> exports = {ExportSpec::FifoRead("logs")};
  for (ExportSpec& e : extra) exports.push_back(std::move(e));
  GatewayOptions options = WithExports(std::move(exports));
  options.workers = 2;
  options.extra_gateway_toml = gateway_toml + "\n[limits]\n" + limits_toml + "\n";
  gw_ = std::make_unique<GatewayFixture>(dir_, options);
  ASSERT_TRUE(gw_->Start());
  ASSERT_TRUE(HonestCatWorks(dir_, *gw_));
  baseline_rss_ = Rss(*gw_);
}

void AbuseFixture::ExpectRecovered(const std::string& what) {
  ASSERT_TRUE(gw_->Running()) << "the gateway died";
  uint64_t after = 0;
  EXPECT_TRUE(RssSettles(*gw_, baseline_rss_, &after));
  EXPECT_TRUE(HonestCatWorks(dir_, *gw_));
  Report(what + "_rss", "before " + MiB(baseline_rss_) + ", after " + MiB(after));
}

}  // namespace pipegate::testing
