// The bridge for operators: --progress (a meter on stderr, never on stdout), `ls` as a table on
// a terminal, JSON log lines, and a renewed client certificate picked up at the next fresh
// session.

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/data.h"
#include "support/fault_relay.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/pki.h"
#include "support/proc_stats.h"
#include "support/process.h"
#include "support/timing.h"
#include <nlohmann/json.hpp>

namespace pipegate::testing {
namespace {

// 'TEXT' for sh, whatever TEXT holds.
std::string ShellQuote(const std::string& text) {
  return "'" + ReplaceAll(text, "'", "'\\''") + "'";
}

// Runs `pipegate ARGS` with a terminal as its stderr (and stdout, unless @p redirect names a
// file for it), through script(1); @return everything the terminal showed.
CommandResult RunOnTerminal(TempDir& dir, const std::vector<std::string>& args,
                            const std::string& redirect = "") {
  ProcessOptions options = PipegateOptions(dir, args);
  std::string command;
  for (const std::string& a : options.argv) command += ShellQuote(a) + " ";
  if (!redirect.empty()) command += "> " + ShellQuote(redirect);
  // script's own output is what the terminal got; -e passes on the exit status.
  const std::string shown = dir.Unique("terminal", ".txt");
  options.argv = {"script", "-qec", command, shown};
  options.stdout_spec = StdioSpec::Null();
  options.stderr_spec = StdioSpec::Null();
  Process p(std::move(options));
  CommandResult r;
  r.status = p.Wait(Duration(30000));
  r.out = ReadFile(shown);
  return r;
}

TEST(BridgeOps, WriteProgressGoesToStderrWithPercentOfAFile) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoWrite("cmd")}));
  ASSERT_TRUE(gw.Start());
  const std::string input = dir.Join("in");
  const std::string sha = WriteRandomFile(input, 1 << 20, 3);
  const std::string got = dir.Join("got");
  Process reader(
      ProcessOptions::Of({"sh", "-c", "cat \"$0\" > \"$1\"", gw.ExportPath("cmd"), got}));
  const ClientResult r =
      RunPipegate(dir, {"write", "--progress", gw.Address("cmd")}, ClientOptions::Stdin(input));
  ASSERT_EQ(r.status, 0) << r.Describe();
  ASSERT_EQ(reader.Wait(Duration(10000)), 0);
  EXPECT_EQ(Sha256Hex(got), sha);
  EXPECT_EQ(r.out, "") << "the meter must never reach stdout";
  // Not a terminal: whole lines, the last one the summary.
  const std::vector<std::string> lines = SplitLines(r.err);
  ASSERT_FALSE(lines.empty()) << r.Describe();
  EXPECT_TRUE(std::regex_match(
      lines.back(),
      std::regex(
          R"(pipegate: progress: 1\.00 MiB sent 100% of 1\.00 MiB, [0-9.]+ (B|KiB|MiB|GiB)/s, 0:\d\d elapsed)")))
      << lines.back();
  EXPECT_EQ(r.err.find('\r'), std::string::npos);
}

TEST(BridgeOps, CatProgressRedrawsInPlaceOnATerminalAndLeavesStdoutExact) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  // A writer that takes about a second (three parts), so that the meter is drawn while it runs.
  const std::string data = dir.Join("data");
  const std::string sha = WriteRandomFile(data, 300000, 5);
  Process writer(ProcessOptions::Of(
      {"sh", "-c",
       "{ head -c 100000 \"$0\"; sleep 0.4; tail -c +100001 \"$0\" | head -c 100000; sleep 0.4; "
       "tail -c +200001 \"$0\"; } > \"$1\"",
       data, gw.ExportPath("logs")}));
  const std::string out = dir.Join("out");
  const CommandResult r = RunOnTerminal(dir, {"cat", "--progress", gw.Address("logs")}, out);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(writer.Wait(Duration(10000)), 0);
  EXPECT_EQ(Sha256Hex(out), sha) << "stdout must hold the stream's bytes and nothing else";
  // Redrawn: several carriage returns and erase-to-end-of-line, one final newline.
  size_t redraws = 0;
  for (size_t at = r.out.find("\r"); at != std::string::npos; at = r.out.find("\r", at + 1)) {
    if (r.out.compare(at, 2, "\r\n") != 0) ++redraws;
  }
  EXPECT_GE(redraws, 2u) << r.out;
  EXPECT_NE(r.out.find("\x1b[K"), std::string::npos);
  EXPECT_NE(r.out.find("293 KiB received"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("sent"), std::string::npos) << "cat sends nothing: " << r.out;
}

TEST(BridgeOps, LsIsAnAlignedTableOnATerminalAndTabsOtherwise) {
  TempDir dir;
  GatewayFixture gw(
      dir, WithExports({ExportSpec::FifoRead("logs"), ExportSpec::FifoWrite("a-longer-name")}));
  ASSERT_TRUE(gw.Start());
  const CommandResult tty = RunOnTerminal(dir, {"ls", gw.BaseAddress()});
  ASSERT_EQ(tty.status, 0) << tty.out;
  EXPECT_NE(tty.out.find("NAME           KIND  ACCESS  MODE   CLIENTS  MAX\r\n"), std::string::npos)
      << tty.out;
  EXPECT_NE(tty.out.find("a-longer-name  fifo  write   bytes        0  -\r\n"), std::string::npos)
      << tty.out;
  EXPECT_NE(tty.out.find("logs           fifo  read    bytes        0  1\r\n"), std::string::npos)
      << tty.out;
  const ClientResult piped = RunPipegate(dir, {"ls", gw.BaseAddress()});
  ASSERT_EQ(piped.status, 0);
  EXPECT_EQ(piped.out, "logs\tfifo\tread\tbytes\t0\t1\na-longer-name\tfifo\twrite\tbytes\t0\t-\n");
}

// The client certificate is a symlink, renewed by pointing it elsewhere. A mount keeps running;
// its gateway restarts without the session, so the mount starts a fresh one, and that one
// presents the new certificate (bob's here, so the gateway's audit line tells them apart).
TEST(BridgeOps, MountPresentsARenewedClientCertificateOnItsNextFreshSession) {
  TempDir dir;
  const std::string server = dir.Join("app.sock");
  Process echo(ProcessOptions::Of({"socat", "UNIX-LISTEN:" + server + ",fork", "EXEC:cat"}));
  ASSERT_TRUE(WaitFor([&] { return IsSocket(server); }, Duration(10000)));
  ExportSpec app = ExportSpec::Unix("app", server);
  app.allow = {"alice", "bob"};
  GatewayOptions options = WithExports({app});
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  FaultRelay relay(gw.port());
  ASSERT_TRUE(relay.ok());

  const std::string cert = dir.Join("client.crt");
  const std::string key = dir.Join("client.key");
  ASSERT_EQ(::symlink(PkiPath("alice.crt").c_str(), cert.c_str()), 0);
  ASSERT_EQ(::symlink(PkiPath("alice.key").c_str(), key.c_str()), 0);
  const std::string local = dir.Join("mounted.sock");
  Identity renewable{cert, key, PkiPath("ca.crt")};
  Bridge mount(
      dir,
      {"mount", "-v", "--log-format", "json", relay.BaseAddress() + "/app", local, "--as", "unix"},
      StdioSpec::Null(), "", renewable);
  ASSERT_TRUE(StartMount(mount, local));
  auto round_trip = [&](const std::string& word) {
    CommandResult r = RunCommand(
        {"sh", "-c", "printf '%s' \"$0\" | socat -t 2 - UNIX-CONNECT:\"$1\"", word, local},
        dir.path());
    return r.status == 0 && r.out == word;
  };
  ASSERT_TRUE(round_trip("first"));
  EXPECT_NE(gw.Log().find("decision=granted identity=\"alice\""), std::string::npos) << gw.Log();

  // Renewal: the same paths now lead to bob's files.
  ASSERT_EQ(::unlink(cert.c_str()), 0);
  ASSERT_EQ(::unlink(key.c_str()), 0);
  ASSERT_EQ(::symlink(PkiPath("bob.crt").c_str(), cert.c_str()), 0);
  ASSERT_EQ(::symlink(PkiPath("bob.key").c_str(), key.c_str()), 0);
  relay.SetTarget(0);
  gw.Kill();
  GatewayFixture restarted(dir, options);
  ASSERT_TRUE(restarted.Start());
  relay.SetTarget(restarted.port());
  EXPECT_TRUE(WaitFor([&] { return round_trip("second"); }, Duration(20000), Duration(200)))
      << mount.Describe();
  EXPECT_NE(restarted.Log().find("decision=granted identity=\"bob\""), std::string::npos)
      << restarted.Log();
  EXPECT_EQ(restarted.Log().find("identity=\"alice\""), std::string::npos) << restarted.Log();

  // The mount said so, in JSON.
  mount.process().Signal(SIGTERM);
  ASSERT_TRUE(mount.Wait(Duration(10000)).has_value());
  bool said = false;
  for (const std::string& line : SplitLines(mount.Result().err)) {
    if (line.empty() || line[0] != '{') continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << line;
    EXPECT_EQ(j.value("program", ""), "pipegate");
    if (j.value("msg", "").find("client certificate files changed") != std::string::npos) {
      said = true;
    }
  }
  EXPECT_TRUE(said) << mount.Describe();
}

// Points the symlink @p link at @p target, replacing it in one rename.
bool Repoint(const std::string& link, const std::string& target) {
  const std::string tmp = link + ".new";
  ::unlink(tmp.c_str());
  return ::symlink(target.c_str(), tmp.c_str()) == 0 && ::rename(tmp.c_str(), link.c_str()) == 0;
}

// A session that loses its connection resumes across a renewal: a certificate for the same key
// and names is presented at once; any other is kept for the next session, since the gateway
// lets only the key and names that made a session resume it (else the stream would be lost).
TEST(BridgeOps, CatResumesAcrossRenewalsOfItsCertificate) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  FaultRelay relay(gw.port());
  ASSERT_TRUE(relay.ok());
  // alice's key with a new certificate, as a renewal that keeps the key makes it.
  const std::string ext = dir.Join("ext.cnf");
  ASSERT_TRUE(WriteFile(ext,
                        "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n"
                        "subjectAltName=DNS:alice.example,URI:spiffe://example.org/ci/alice\n"));
  const std::string csr = dir.Join("renewed.csr");
  const std::string renewed = dir.Join("renewed.crt");
  CommandResult req = RunCommand(
      {"openssl", "req", "-new", "-key", PkiPath("alice.key"), "-subj", "/CN=alice", "-out", csr},
      dir.path());
  ASSERT_EQ(req.status, 0) << req.err;
  CommandResult sign = RunCommand(
      {"openssl", "x509", "-req", "-in", csr, "-CA", PkiPath("ca.crt"), "-CAkey", PkiPath("ca.key"),
       "-set_serial", "4242", "-days", "2", "-extfile", ext, "-out", renewed},
      dir.path());
  ASSERT_EQ(sign.status, 0) << sign.err;

  const std::string cert = dir.Join("client.crt");
  const std::string key = dir.Join("client.key");
  ASSERT_TRUE(Repoint(cert, PkiPath("alice.crt")));
  ASSERT_TRUE(Repoint(key, PkiPath("alice.key")));
  const std::string out = dir.Join("out");
  Bridge cat(dir, {"cat", "-v", relay.BaseAddress() + "/logs"}, StdioSpec::Null(), out,
             Identity{cert, key, PkiPath("ca.crt")});
  const std::string fifo = gw.ExportPath("logs");
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !cat.Running(); },
                      Duration(10000)))
      << cat.Describe();
  const int writer = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  auto say = [&](const std::string& line, const std::string& all) {
    return write(writer, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
           WaitFor([&] { return ReadFile(out) == all; }, Duration(10000));
  };
  ASSERT_TRUE(say("one\n", "one\n")) << cat.Describe();

  ASSERT_TRUE(Repoint(cert, renewed));
  ASSERT_GE(relay.Cut(), 1);
  EXPECT_TRUE(say("two\n", "one\ntwo\n")) << cat.Describe();
  EXPECT_TRUE(WaitFor(
      [&] {
        return cat.Result().err.find(
                   "resuming with the renewed client certificate (same key and names)") !=
               std::string::npos;
      },
      Duration(10000)))
      << cat.Describe();

  ASSERT_TRUE(Repoint(cert, PkiPath("bob.crt")));
  ASSERT_TRUE(Repoint(key, PkiPath("bob.key")));
  ASSERT_GE(relay.Cut(), 1);
  EXPECT_TRUE(say("three\n", "one\ntwo\nthree\n")) << cat.Describe();
  EXPECT_NE(cat.Result().err.find("the renewed client certificate has a new key or names"),
            std::string::npos)
      << cat.Describe();
  EXPECT_GE(relay.stats().cuts, 2);
  close(writer);
  EXPECT_EQ(cat.Wait(Duration(10000)), 0) << cat.Describe();
  EXPECT_EQ(gw.Log().find("identity=\"bob\""), std::string::npos) << gw.Log();
}

TEST(BridgeOps, LsWithANameListsJustThatExportAndSaysWhyNot) {
  TempDir dir;
  ExportSpec secret = ExportSpec::FifoRead("secret");
  secret.allow = {"bob"};
  GatewayFixture gw(
      dir, WithExports({ExportSpec::FifoRead("logs"), ExportSpec::FifoWrite("cmd"), secret}));
  ASSERT_TRUE(gw.Start());
  const ClientResult one = RunPipegate(dir, {"ls", gw.Address("cmd")});
  EXPECT_EQ(one.status, 0) << one.Describe();
  EXPECT_EQ(one.out, "cmd\tfifo\twrite\tbytes\t0\t-\n");
  // Left out of alice's listing: the gateway says why, as it would to cat.
  EXPECT_TRUE(IsError(RunPipegate(dir, {"ls", gw.Address("nosuch")}), 4, gw.Address("nosuch"),
                      "no such pipe"));
  EXPECT_TRUE(IsError(RunPipegate(dir, {"ls", gw.Address("secret")}), 3, gw.Address("secret"),
                      "access denied"));
  const ClientResult bobs =
      RunPipegate(dir, {"ls", gw.Address("secret")}, ClientOptions::As(Bob()));
  EXPECT_EQ(bobs.out, "secret\tfifo\tread\tbytes\t0\t1\n") << bobs.Describe();
}

TEST(BridgeOps, LsJsonIsOneArrayAScriptCanParse) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs"), ExportSpec::FifoWrite("cmd")}));
  ASSERT_TRUE(gw.Start());
  const ClientResult all = RunPipegate(dir, {"ls", "--json", gw.BaseAddress()});
  ASSERT_EQ(all.status, 0) << all.Describe();
  nlohmann::json list = nlohmann::json::parse(all.out, nullptr, false);
  ASSERT_TRUE(list.is_array()) << all.out;
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0], (nlohmann::json{{"name", "logs"},
                                     {"kind", "fifo"},
                                     {"access", "read"},
                                     {"mode", "bytes"},
                                     {"clients", 0},
                                     {"max_clients", 1}}));
  EXPECT_EQ(list[1], (nlohmann::json{{"name", "cmd"},
                                     {"kind", "fifo"},
                                     {"access", "write"},
                                     {"mode", "bytes"},
                                     {"clients", 0},
                                     {"max_clients", nullptr}}));
  const ClientResult one = RunPipegate(dir, {"ls", "--json", gw.Address("logs")});
  nlohmann::json just = nlohmann::json::parse(one.out, nullptr, false);
  ASSERT_TRUE(just.is_array()) << one.Describe();
  ASSERT_EQ(just.size(), 1u);
  EXPECT_EQ(just[0]["name"], "logs");
  // On a terminal too: JSON is asked for, so no table.
  const CommandResult tty = RunOnTerminal(dir, {"ls", "--json", gw.Address("logs")});
  // (script(1) writes its own header line first.)
  EXPECT_NE(tty.out.find("\n[{\"name\":\"logs\",\"kind\":\"fifo\",\"access\":\"read\","
                         "\"mode\":\"bytes\",\"clients\":0,\"max_clients\":1}]\r\n"),
            std::string::npos)
      << tty.out;
}

// A log FIFO that programs open, write and close in turn: cat --follow stays attached across
// their EOFs (tail -f), while plain cat ends at the first.
TEST(BridgeOps, CatFollowCollectsSuccessiveWriters) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string fifo = gw.ExportPath("logs");
  const std::string out = dir.Join("out");
  Bridge cat(dir, {"cat", "--follow", gw.Address("logs")}, StdioSpec::Null(), out);
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !cat.Running(); },
                      Duration(10000)))
      << cat.Describe();
  std::string expected;
  for (int i = 1; i <= 5; ++i) {
    const std::string line = "writer " + std::to_string(i) + "\n";
    // Each writer opens the FIFO (blocking: it needs a reader), writes, closes: an EOF.
    CommandResult w = RunCommand({"sh", "-c", "printf '%s' \"$0\" > \"$1\"", line, fifo},
                                 dir.path(), Duration(10000));
    ASSERT_EQ(w.status, 0) << w.err;
    expected += line;
    ASSERT_TRUE(
        WaitFor([&] { return ReadFile(out) == expected || !cat.Running(); }, Duration(10000)))
        << "after writer " << i << ": '" << ReadFile(out) << "'; " << cat.Describe();
    ASSERT_TRUE(cat.Running()) << "cat --follow ended at a writer's EOF: " << cat.Describe();
  }
  cat.process().Signal(SIGTERM);
  EXPECT_EQ(cat.Wait(Duration(10000)), 143) << cat.Describe();
  EXPECT_EQ(ReadFile(out), expected);

  // Without --follow the first writer's EOF ends cat, with exit 0.
  const std::string once = dir.Join("once");
  Bridge plain(dir, {"cat", gw.Address("logs")}, StdioSpec::Null(), once);
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !plain.Running(); },
                      Duration(10000)));
  CommandResult w =
      RunCommand({"sh", "-c", "echo only > \"$0\"", fifo}, dir.path(), Duration(10000));
  ASSERT_EQ(w.status, 0) << w.err;
  EXPECT_EQ(plain.Wait(Duration(10000)), 0) << plain.Describe();
  EXPECT_EQ(ReadFile(once), "only\n");
}

// `stat` shows one export; it and `ls` count the clients attached now (every client's).
TEST(BridgeOps, StatAndLsShowModeAndAttachedClients) {
  TempDir dir;
  ExportSpec events = ExportSpec::Unix("events", dir.Join("events.sock"));
  events.extra_toml = "socket = \"seqpacket\"\nmax_message_size = 4096\n";
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs"), events}));
  ASSERT_TRUE(gw.Start());
  const std::string fifo = gw.ExportPath("logs");
  Bridge reader(dir, {"cat", "--follow", gw.Address("logs")}, StdioSpec::Null(), dir.Join("out"));
  ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !reader.Running(); },
                      Duration(10000)))
      << reader.Describe();
  const ClientResult stat = RunPipegate(dir, {"stat", gw.Address("logs")});
  ASSERT_EQ(stat.status, 0) << stat.Describe();
  EXPECT_EQ(stat.out,
            "name:     logs\nkind:     fifo\naccess:   read\nmode:     byte stream\n"
            "clients:  1 attached (at most 1)\n");
  const ClientResult json = RunPipegate(dir, {"stat", "--json", gw.Address("events")});
  ASSERT_EQ(json.status, 0) << json.Describe();
  nlohmann::json one = nlohmann::json::parse(json.out, nullptr, false);
  ASSERT_TRUE(one.is_object()) << json.out;
  EXPECT_EQ(one["mode"], "messages");
  EXPECT_EQ(one["max_message"], 4096);
  EXPECT_EQ(one["clients"], 0);
  EXPECT_TRUE(one["max_clients"].is_null());
  const ClientResult ls = RunPipegate(dir, {"ls", gw.BaseAddress()});
  EXPECT_EQ(ls.out, "logs\tfifo\tread\tbytes\t1\t1\nevents\tunix\tduplex\tmessages\t0\t-\n")
      << ls.Describe();
  EXPECT_TRUE(IsError(RunPipegate(dir, {"stat", gw.Address("nosuch")}), 4, gw.Address("nosuch"),
                      "no such pipe"));
  const ClientResult bare = RunPipegate(dir, {"stat", gw.BaseAddress()});
  EXPECT_EQ(bare.status, 1) << bare.Describe();  // stat names one export.
  reader.process().Signal(SIGTERM);
  EXPECT_EQ(reader.Wait(Duration(10000)), 143);
}

// `cat --count N` ends (exit 0) after N bytes, `--count-lines N` after N lines, even on a
// --follow stream that would otherwise never end.
TEST(BridgeOps, CatCountEndsAfterNBytesOrLines) {
  TempDir dir;
  GatewayFixture gw(dir, WithExports({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const std::string fifo = gw.ExportPath("logs");
  const std::string text = "one\ntwo\nthree\nfour\nfive\n";
  for (const auto& [args, want] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"cat", "--count", "10", gw.Address("logs")}, text.substr(0, 10)},
           {{"cat", "--follow", "--count-lines", "3", gw.Address("logs")}, "one\ntwo\nthree\n"}}) {
    SCOPED_TRACE(args[1]);
    const std::string out = dir.Join("count-" + args[1]);
    Bridge cat(dir, args, StdioSpec::Null(), out);
    ASSERT_TRUE(WaitFor([&] { return ProcessHasFileOpen(gw.pid(), fifo) || !cat.Running(); },
                        Duration(10000)))
        << cat.Describe();
    // One write of every line; the reader may be gone before the writer closes (EPIPE is fine).
    RunCommand({"sh", "-c", "printf '%s' \"$0\" > \"$1\"", text, fifo}, dir.path(),
               Duration(10000));
    EXPECT_EQ(cat.Wait(Duration(10000)), 0) << cat.Describe();
    EXPECT_EQ(ReadFile(out), want);
    // The export is free again: the stream ended, it did not linger.
    ASSERT_TRUE(WaitFor([&] { return !ProcessHasFileOpen(gw.pid(), fifo); }, Duration(10000)));
  }
}

}  // namespace
}  // namespace pipegate::testing
