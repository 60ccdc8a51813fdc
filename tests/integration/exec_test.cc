// Process exports (kind = "exec"): each client gets a fresh process whose stdin and stdout are
// the stream; its exit status becomes pipegate's; it is killed with its process group when the
// client goes or its timeout passes; its stderr reaches the log, rate-limited; and the gateway
// caps how many run at once.

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/data.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/gateway_probe.h"
#include "support/process.h"
#include "support/timing.h"

namespace pipegate::testing {
namespace {

// A process (or, with a negative id, a process group) that no longer exists: reaped, not a
// zombie, since the gateway reaps its children.
bool Gone(pid_t id) { return ::kill(id, 0) != 0 && errno == ESRCH; }

// Reads the pid a child wrote into @p path, once the file holds a whole line.
std::optional<pid_t> WaitForPid(const std::string& path, Duration timeout) {
  std::optional<pid_t> pid;
  WaitFor(
      [&] {
        const std::string text = ReadFile(path);
        if (text.empty() || text.back() != '\n') return false;
        pid = static_cast<pid_t>(std::stol(text));
        return true;
      },
      timeout);
  return pid;
}

// An exec export whose process writes its pid (which is also its process group id) into
// @p pid_file, starts a background sleeper in its group, and waits.
ExportSpec Sleeper(const std::string& name, const std::string& pid_file) {
  return ExportSpec::Exec(name, {"/bin/sh", "-c", "sleep 600 & echo $$ > " + pid_file + "; wait"});
}

TEST(Exec, Sha256sumReturnsTheDigestAndExitStatus) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::Exec("digest", {"/usr/bin/sha256sum"})}));
  ASSERT_TRUE(gw.Start());
  const std::string input = dir.Join("input.bin");
  const std::string digest = WriteRandomFile(input, DataSize(3 << 20, 1 << 20), 12);
  ClientResult r = RunPipegate(dir, {"connect", gw.Address("digest")}, ClientOptions::Stdin(input));
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(r.out, digest + "  -\n") << r.Describe();
  std::map<std::string, uint64_t> k = ReadCounters(gw);
  EXPECT_EQ(k["exec_started"], 1u);
  EXPECT_EQ(k["exec_killed"], 0u);
}

TEST(Exec, ExitStatusAndSignalBecomePipegatesStatus) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::Exec("seven", {"/bin/sh", "-c",
                                                                 "cat >/dev/null; echo bye; "
                                                                 "exit 7"}),
                                      ExportSpec::Exec("term", {"/bin/sh", "-c", "kill -TERM $$"}),
                                      ExportSpec::Exec("big", {"/bin/sh", "-c", "exit 255"})}));
  ASSERT_TRUE(gw.Start());
  // Exited 7: pipegate exits 7, quietly, after the output.
  ClientResult seven = RunPipegate(dir, {"connect", gw.Address("seven")});
  EXPECT_EQ(seven.status, 7) << seven.Describe();
  EXPECT_EQ(seven.out, "bye\n");
  EXPECT_EQ(seven.err.find("pipegate:"), std::string::npos) << seven.Describe();
  ClientResult big = RunPipegate(dir, {"connect", gw.Address("big")});
  EXPECT_EQ(big.status, 255) << big.Describe();
  // Killed by SIGTERM: 128+15, with a message naming the signal.
  ClientResult term = RunPipegate(dir, {"connect", gw.Address("term")});
  EXPECT_TRUE(IsError(term, 128 + SIGTERM, gw.Address("term"), "killed by signal 15"))
      << term.Describe();
  // cat of an exec export takes the exit status too.
  ClientResult cat = RunPipegate(dir, {"cat", gw.Address("seven")});
  EXPECT_EQ(cat.status, 7) << cat.Describe();
  EXPECT_EQ(cat.out, "bye\n");
}

TEST(Exec, EnvironmentIsMinimalAndNoDescriptorLeaks) {
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::Exec(
      "env", {"/bin/sh", "-c",
              "echo \"$PIPEGATE_IDENTITY|$PIPEGATE_EXPORT|$PATH|${GATEWAY_SECRET:-unset}|$(pwd)\"; "
              "ls /proc/$$/fd | tr '\\n' ' '"})});
  options.env = {{"GATEWAY_SECRET", "leaked"}};
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  ClientResult r = RunPipegate(dir, {"connect", gw.Address("env")});
  ASSERT_EQ(r.status, 0) << r.Describe();
  std::vector<std::string> lines = SplitLines(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.Describe();
  EXPECT_EQ(lines[0], "alice|env|/usr/bin:/bin|unset|/");
  // stdin, stdout, stderr and nothing else of the gateway's (listeners, TLS connections).
  EXPECT_EQ(lines[1], "0 1 2 ") << r.Describe();
}

// Identity mapping names the mapped account to the process (PIPEGATE_USER), and a client the map
// does not match is refused before any process starts.
TEST(Exec, IdentityMappingNamesTheAccountToTheProcess) {
  TempDir dir;
  ExportSpec who = ExportSpec::Exec("who", {"/bin/sh", "-c", "echo \"${PIPEGATE_USER:-none}\""});
  who.allow = {"alice", "carol"};
  who.extra_toml = "[[export.map]]\nidentity = \"alice\"\nuser = \"nobody\"\n";
  ExportSpec plain =
      ExportSpec::Exec("plain", {"/bin/sh", "-c", "echo \"${PIPEGATE_USER:-none}\""});
  GatewayFixture gw(dir, WithExports({who, plain}));
  ASSERT_TRUE(gw.Start());
  ClientResult alice = RunPipegate(dir, {"connect", gw.Address("who")});
  EXPECT_EQ(alice.status, 0) << alice.Describe();
  EXPECT_EQ(alice.out, "nobody\n") << alice.Describe();
  ClientResult carol =
      RunPipegate(dir, {"connect", gw.Address("who")}, ClientOptions::As(Identity::Of("carol")));
  EXPECT_TRUE(IsError(carol, 3, gw.Address("who"), "access denied")) << carol.Describe();
  ClientResult unmapped = RunPipegate(dir, {"connect", gw.Address("plain")});
  EXPECT_EQ(unmapped.out, "none\n") << unmapped.Describe();
  std::map<std::string, uint64_t> k = ReadCounters(gw);
  EXPECT_EQ(k["exec_started"], 2u);
  EXPECT_EQ(k["mapping_refused"], 1u);
}

TEST(Exec, ClientThatGoesAwayKillsTheProcessGroup) {
  TempDir dir;
  const std::string pid_file = dir.Join("pid");
  GatewayFixture gw(dir, WithExports({Sleeper("sleeper", pid_file)}));
  ASSERT_TRUE(gw.Start());
  Bridge client(dir, {"connect", gw.Address("sleeper")});
  std::optional<pid_t> pid = WaitForPid(pid_file, Duration(10000));
  ASSERT_TRUE(pid.has_value()) << client.Describe();
  ASSERT_FALSE(Gone(-*pid));
  // An orderly end of the client (SIGTERM: close_notify) ends the session and the stream.
  client.process().Signal(SIGTERM);
  ASSERT_TRUE(client.Wait(Duration(10000)).has_value());
  EXPECT_TRUE(WaitFor([&] { return Gone(*pid) && Gone(-*pid); }, Duration(10000)))
      << "process group " << *pid << " still exists";
  std::map<std::string, uint64_t> k = ReadCounters(gw);
  EXPECT_EQ(k["exec_killed"], 1u);
}

TEST(Exec, LostClientKeepsTheProcessUntilTheSessionExpires) {
  TempDir dir;
  const std::string pid_file = dir.Join("pid");
  GatewayOptions options = WithExports({Sleeper("sleeper", pid_file)});
  options.extra_gateway_toml = "resume_ttl = 1\n";
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  Bridge client(dir, {"connect", gw.Address("sleeper")});
  std::optional<pid_t> pid = WaitForPid(pid_file, Duration(10000));
  ASSERT_TRUE(pid.has_value()) << client.Describe();
  // A crash loses the connection without close_notify: the session waits for a resume for
  // resume_ttl, and the process with it; then both go.
  client.process().Kill();
  ASSERT_TRUE(client.Wait(Duration(10000)).has_value());
  EXPECT_TRUE(WaitFor([&] { return Gone(*pid) && Gone(-*pid); }, Duration(15000)))
      << "process group " << *pid << " still exists";
  std::map<std::string, uint64_t> k = ReadCounters(gw);
  EXPECT_EQ(k["sessions_expired"], 1u);
  EXPECT_EQ(k["exec_killed"], 1u);
}

TEST(Exec, TimeoutKillsTheProcessGroupAndTellsTheClient) {
  TempDir dir;
  const std::string pid_file = dir.Join("pid");
  ExportSpec slow = Sleeper("slow", pid_file);
  slow.timeout_s = 1;
  GatewayFixture gw(dir, WithExports({slow}));
  ASSERT_TRUE(gw.Start());
  ClientResult r = RunPipegate(dir, {"connect", gw.Address("slow")});
  EXPECT_TRUE(IsError(r, 124, gw.Address("slow"), "timeout \\(1 s\\)")) << r.Describe();
  std::optional<pid_t> pid = WaitForPid(pid_file, Duration(1000));
  ASSERT_TRUE(pid.has_value());
  EXPECT_TRUE(WaitFor([&] { return Gone(*pid) && Gone(-*pid); }, Duration(10000)));
  EXPECT_EQ(ReadCounters(gw)["exec_timeouts"], 1u);
}

// A hostile client opens exec streams until the gateway-wide cap refuses them; the processes
// it holds are the cap's, and other clients and exports keep being served.
TEST(Exec, ProcessCapRefusesPastItAndOthersAreStillServed) {
  TempDir dir;
  const std::string pid_file = dir.Join("pid");
  ExportSpec hog = ExportSpec::Exec("hog", {"/bin/sh", "-c",
                                            "echo $$ >> " + pid_file +
                                                "; "
                                                "exec sleep 600"});
  ExportSpec echo = ExportSpec::Exec("echo", {"/bin/echo", "hello"});
  GatewayOptions options = WithExports({hog, echo});
  options.extra_gateway_toml = "\n[limits]\nmax_exec_processes = 3\n";
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  std::vector<std::unique_ptr<Bridge>> hogs;
  for (int i = 0; i < 3; ++i) {
    hogs.push_back(
        std::make_unique<Bridge>(dir, std::vector<std::string>{"connect", gw.Address("hog")}));
  }
  ASSERT_TRUE(WaitFor([&] { return SplitLines(ReadFile(pid_file)).size() == 3; }, Duration(10000)));
  // The fourth process is refused at once: busy/limit (5), naming the cap.
  ClientResult refused = RunPipegate(dir, {"connect", gw.Address("hog")});
  EXPECT_TRUE(IsError(refused, 5, gw.Address("hog"), "too many processes.*limit 3"))
      << refused.Describe();
  ClientResult other = RunPipegate(dir, {"connect", gw.Address("echo")});
  EXPECT_EQ(other.status, 5) << other.Describe();
  EXPECT_EQ(ReadCounters(gw)["refused_exec_processes"], 2u);
  // The hog lets go: its processes are killed and reaped, and the slots come back.
  for (auto& b : hogs) b->process().Signal(SIGTERM);
  for (auto& b : hogs) ASSERT_TRUE(b->Wait(Duration(10000)).has_value());
  for (const std::string& line : SplitLines(ReadFile(pid_file))) {
    const pid_t pid = static_cast<pid_t>(std::stol(line));
    EXPECT_TRUE(WaitFor([&] { return Gone(pid); }, Duration(10000))) << pid;
  }
  ClientResult again;
  ASSERT_TRUE(WaitFor(
      [&] {
        again = RunPipegate(dir, {"connect", gw.Address("echo")});
        return again.status == 0;
      },
      Duration(10000)))
      << again.Describe();
  EXPECT_EQ(again.out, "hello\n");
}

// Per-export instances: max_clients of an exec export defaults to a finite number and refuses
// past it with busy.
TEST(Exec, MaxClientsRefusesWithBusy) {
  TempDir dir;
  const std::string pid_file = dir.Join("pid");
  ExportSpec one = Sleeper("one", pid_file);
  one.max_clients = 1;
  GatewayFixture gw(dir, WithExports({one}));
  ASSERT_TRUE(gw.Start());
  Bridge first(dir, {"connect", gw.Address("one")});
  ASSERT_TRUE(WaitForPid(pid_file, Duration(10000)).has_value()) << first.Describe();
  ClientResult second = RunPipegate(dir, {"connect", gw.Address("one")});
  EXPECT_TRUE(IsError(second, 5, gw.Address("one"), "busy")) << second.Describe();
}

// stderr lines reach the log with the export's name, cut at a bounded length, and a flood is
// held to log_lines_per_second like any other cause of log lines.
TEST(Exec, StderrReachesTheLogRateLimitedAndCut) {
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::Exec(
      "noisy", {"/bin/sh", "-c",
                "head -c 5000 /dev/zero | tr '\\0' x >&2; echo >&2; i=0; "
                "while [ $i -lt 300 ]; do echo \"noise $i\" >&2; i=$((i+1)); done; echo done"})});
  options.extra_gateway_toml = "\n[limits]\nlog_lines_per_second = 5\n";
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  ClientResult r = RunPipegate(dir, {"connect", gw.Address("noisy")});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_EQ(r.out, "done\n");
  const std::string log = gw.Log();
  EXPECT_NE(log.find("exec 'noisy'"), std::string::npos);
  EXPECT_NE(log.find("[line cut]"), std::string::npos) << Tail(log);
  EXPECT_EQ(log.find(std::string(600, 'x')), std::string::npos) << "a line longer than the cap";
  EXPECT_GE(ReadCounters(gw)["log_lines_suppressed"], 250u);
}

TEST(Exec, ListShowsTheKind) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::Exec("tool", {"/bin/true"})}));
  ASSERT_TRUE(gw.Start());
  ClientResult r = RunPipegate(dir, {"ls", "--json", gw.BaseAddress()});
  ASSERT_EQ(r.status, 0) << r.Describe();
  EXPECT_NE(r.out.find("\"exec\""), std::string::npos) << r.out;
}

}  // namespace
}  // namespace pipegate::testing
