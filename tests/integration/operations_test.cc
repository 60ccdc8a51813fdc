// Operating the gateway: Prometheus metrics (metrics_listen), JSON log lines (log_format),
// certificate files watched for changes (watch_certificates, a Kubernetes-style symlink swap),
// and systemd readiness (sd_notify on NOTIFY_SOCKET).

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/bridge_client.h"
#include "support/data.h"
#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/pki.h"
#include "support/process.h"
#include "support/timing.h"
#include <nlohmann/json.hpp>

namespace pipegate::testing {
namespace {

// ---- a minimal HTTP client for 127.0.0.1 ----

int ConnectLoopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Reads until EOF (or an error, or the nominal timeout). @return What arrived.
std::string ReadToEof(int fd, Duration timeout) {
  std::string got;
  const Clock::time_point end = Clock::now() + Scaled(timeout);
  while (Clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count();
    if (::poll(&p, 1, static_cast<int>(std::max<int64_t>(left, 1))) <= 0) continue;
    char buf[65536];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

// Sends @p request as is and returns the whole answer (the server closes after one).
std::string HttpRaw(uint16_t port, const std::string& request) {
  int fd = ConnectLoopback(port);
  if (fd < 0) return "";
  IgnoreSigpipe();
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string answer = ReadToEof(fd, Duration(10000));
  ::close(fd);
  return answer;
}

struct HttpAnswer {
  int status = 0;
  std::string head;
  std::string body;
};

HttpAnswer HttpGet(uint16_t port, const std::string& path, const std::string& method = "GET") {
  std::string raw = HttpRaw(
      port, method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n");
  HttpAnswer a;
  size_t end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.1 ", 0) != 0 || end == std::string::npos) return a;
  a.status = std::stoi(raw.substr(9, 3));
  a.head = raw.substr(0, end);
  a.body = raw.substr(end + 4);
  return a;
}

// The gateway logs the metrics port just after the listening line GatewayFixture::Start()
// waits for: wait for it too (bounded). 0 if it never comes.
uint16_t MetricsPort(GatewayFixture& gw) {
  static const std::regex kServing(
      R"(metrics: serving /metrics and /healthz on 127\.0\.0\.1:([0-9]+))");
  std::smatch m;
  std::string log;
  if (!WaitFor([&] { return std::regex_search(log = gw.Log(), m, kServing); }, Duration(5000),
               Duration(20))) {
    return 0;
  }
  return static_cast<uint16_t>(std::stoi(m[1]));
}

// Every sample of a scrape, by its name with labels ("pipegate_streams",
// "pipegate_export_streams{export=\"logs\"}"). Checks the exposition format on the way: every
// line is a HELP, a TYPE or a sample; every sample belongs to the family declared just before
// it; no family is declared twice.
::testing::AssertionResult ParseMetrics(const std::string& text,
                                        std::map<std::string, double>* samples) {
  static const std::regex kHelp(R"(# HELP ([a-z_:][a-z0-9_:]*) \S.*)");
  static const std::regex kType(R"(# TYPE ([a-z_:][a-z0-9_:]*) (counter|gauge))");
  static const std::regex kSample(
      R"(([a-z_:][a-z0-9_:]*)(\{[a-z_]+="[^"\\]*"(,[a-z_]+="[^"\\]*")*\})? ([0-9.e+-]+))");
  std::set<std::string> families;
  std::string family;
  std::string type;
  for (const std::string& line : SplitLines(text)) {
    std::smatch m;
    if (std::regex_match(line, m, kHelp)) {
      family = m[1];
      if (!families.insert(family).second) {
        return ::testing::AssertionFailure() << "family declared twice: " << family;
      }
    } else if (std::regex_match(line, m, kType)) {
      if (m[1] != family) return ::testing::AssertionFailure() << "TYPE without HELP: " << line;
      type = m[2];
    } else if (std::regex_match(line, m, kSample)) {
      if (m[1] != family) {
        return ::testing::AssertionFailure() << "sample outside its family: " << line;
      }
      const bool total = family.size() > 6 && family.compare(family.size() - 6, 6, "_total") == 0;
      if (type == "counter" && !total) {
        return ::testing::AssertionFailure() << "a counter not named *_total: " << family;
      }
      (*samples)[std::string(m[1]) + std::string(m[2])] = std::stod(m[4]);
    } else {
      return ::testing::AssertionFailure() << "not in the text format: '" << line << "'";
    }
  }
  if (samples->empty()) return ::testing::AssertionFailure() << "no samples";
  return ::testing::AssertionSuccess();
}

std::map<std::string, double> Scrape(uint16_t port) {
  std::map<std::string, double> samples;
  HttpAnswer a = HttpGet(port, "/metrics");
  EXPECT_EQ(a.status, 200) << a.head;
  EXPECT_NE(a.head.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << a.head;
  EXPECT_TRUE(ParseMetrics(a.body, &samples)) << a.body;
  return samples;
}

// `pipegate write` of the file @p input into the write export @p name while a local `cat`
// drains its FIFO. @return What the local reader got ("" with a test failure if either failed).
std::string WriteThroughExport(TempDir& dir, GatewayFixture& gw, const std::string& name,
                               const std::string& input) {
  const std::string got = dir.Unique("got", ".bin");
  Process reader(ProcessOptions::Of({"sh", "-c", "cat \"$0\" > \"$1\"", gw.ExportPath(name), got}));
  const ClientResult write =
      RunPipegate(dir, {"write", gw.Address(name)}, ClientOptions::Stdin(input));
  EXPECT_EQ(write.status, 0) << write.Describe();
  EXPECT_EQ(reader.Wait(Duration(20000)), 0);
  return write.status == 0 ? ReadFile(got) : "";
}

GatewayOptions WithMetrics(std::vector<ExportSpec> exports) {
  GatewayOptions options = WithExports(std::move(exports));
  options.extra_gateway_toml = "metrics_listen = \"127.0.0.1:0\"\n";
  return options;
}

TEST(Operations, MetricsMoveWithTraffic) {
  TempDir dir;
  GatewayFixture gw(dir, WithMetrics({ExportSpec::FifoWrite("cmd"), ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const uint16_t port = MetricsPort(gw);
  ASSERT_NE(port, 0) << gw.Log();

  HttpAnswer health = HttpGet(port, "/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body, "ok\n");

  std::map<std::string, double> before = Scrape(port);
  bool has_build_info = false;
  for (const auto& [name, value] : before) {
    if (name.rfind("pipegate_build_info{version=\"" PIPEGATE_VERSION "\"", 0) == 0) {
      has_build_info = value == 1;
    }
  }
  EXPECT_TRUE(has_build_info);
  EXPECT_EQ(before["pipegate_export_received_bytes_total{export=\"cmd\"}"], 0);
  EXPECT_EQ(before["pipegate_export_streams_opened_total{export=\"cmd\"}"], 0);
  EXPECT_TRUE(before.count("pipegate_worker_loop_lag_seconds{worker=\"0\"}"));
  EXPECT_TRUE(before.count("pipegate_tls_handshake_failures_total{reason=\"unknown_ca\"}"));
  EXPECT_TRUE(before.count("pipegate_sessions_resumed_total"));
  EXPECT_TRUE(before.count("pipegate_replay_held_bytes"));

  // 1 MiB into the write export: a local reader drains the FIFO.
  const size_t size = 1 << 20;
  const std::string input = dir.Join("in");
  const std::string sent_sha = WriteRandomFile(input, size, 11);
  ASSERT_EQ(Sha256HexOf(WriteThroughExport(dir, gw, "cmd", input)), sent_sha);

  // A refused open and a bad certificate show up too.
  const ClientResult denied =
      RunPipegate(dir, {"cat", gw.Address("logs")}, ClientOptions::As(Bob()));
  EXPECT_EQ(denied.status, 3) << denied.Describe();
  const ClientResult foreign =
      RunPipegate(dir, {"ls", gw.BaseAddress()}, ClientOptions::As(Identity::Of("other/alice")));
  EXPECT_NE(foreign.status, 0);

  std::map<std::string, double> after;
  // The totals of the stream are added when it moves; the gauges follow its end.
  EXPECT_TRUE(WaitFor(
      [&] {
        after = Scrape(port);
        return after["pipegate_streams"] == 0 && after["pipegate_connections"] == 0;
      },
      Duration(10000), Duration(50)));
  EXPECT_EQ(after["pipegate_export_received_bytes_total{export=\"cmd\"}"], size);
  EXPECT_EQ(after["pipegate_export_sent_bytes_total{export=\"cmd\"}"], 0);
  EXPECT_EQ(after["pipegate_export_streams_opened_total{export=\"cmd\"}"], 1);
  EXPECT_EQ(after["pipegate_from_clients_bytes_total"], size);
  EXPECT_EQ(after["pipegate_streams_opened_total"], 1);
  EXPECT_EQ(after["pipegate_acl_denied_total"], 1);
  EXPECT_EQ(after["pipegate_tls_handshake_failures_total{reason=\"unknown_ca\"}"], 1);
  EXPECT_GE(after["pipegate_connections_accepted_total"], 3);
}

TEST(Operations, MetricsGaugesShowAnOpenStream) {
  TempDir dir;
  GatewayFixture gw(dir, WithMetrics({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const uint16_t port = MetricsPort(gw);
  ASSERT_NE(port, 0) << gw.Log();
  const std::string fifo = gw.ExportPath("logs");
  const std::string out = dir.Join("out");
  Bridge cat(dir, {"cat", gw.Address("logs")}, StdioSpec::Null(), out);
  std::map<std::string, double> m;
  ASSERT_TRUE(WaitFor(
      [&] {
        m = Scrape(port);
        return m["pipegate_export_streams{export=\"logs\"}"] == 1 || !cat.Running();
      },
      Duration(10000), Duration(50)))
      << cat.Describe();
  EXPECT_EQ(m["pipegate_streams"], 1);
  EXPECT_EQ(m["pipegate_connections"], 1);
  // Bytes count while the stream is open, not only when it ends.
  const int writer = open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  ASSERT_EQ(write(writer, "0123456789", 10), 10);
  EXPECT_TRUE(WaitFor(
      [&] { return Scrape(port)["pipegate_export_sent_bytes_total{export=\"logs\"}"] == 10; },
      Duration(10000), Duration(50)));
  close(writer);
  EXPECT_EQ(cat.Wait(Duration(10000)), 0) << cat.Describe();
  EXPECT_EQ(ReadFile(out), "0123456789");
}

TEST(Operations, MetricsEndpointRefusesWhatItDoesNotServeAndCapsItsClients) {
  TempDir dir;
  GatewayFixture gw(dir, WithMetrics({ExportSpec::FifoRead("logs")}));
  ASSERT_TRUE(gw.Start());
  const uint16_t port = MetricsPort(gw);
  ASSERT_NE(port, 0) << gw.Log();
  EXPECT_EQ(HttpGet(port, "/nope").status, 404);
  EXPECT_EQ(HttpGet(port, "/metrics", "POST").status, 405);
  HttpAnswer head = HttpGet(port, "/healthz", "HEAD");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.body, "");
  EXPECT_EQ(HttpRaw(port, "garbage\r\n\r\n").substr(0, 12), "HTTP/1.1 400");
  // A head that never ends is cut at 8 KiB, never buffered further.
  EXPECT_EQ(HttpRaw(port, "GET /metrics HTTP/1.1\r\nX: " + std::string(20000, 'a')).substr(0, 12),
            "HTTP/1.1 431");

  // 16 clients that send nothing hold every slot; the 17th is closed at once, unanswered.
  std::vector<int> idle;
  for (int i = 0; i < 16; ++i) {
    int fd = ConnectLoopback(port);
    ASSERT_GE(fd, 0);
    idle.push_back(fd);
  }
  // Each idle connection is accepted before the next check: the 17th must find them all held.
  const std::string extra = [&] {
    std::string got;
    for (int attempt = 0; attempt < 20; ++attempt) {
      int fd = ConnectLoopback(port);
      if (fd < 0) break;
      const char req[] = "GET /healthz HTTP/1.1\r\n\r\n";
      (void)::send(fd, req, sizeof req - 1, MSG_NOSIGNAL);
      got = ReadToEof(fd, Duration(5000));
      ::close(fd);
      if (got.empty()) return got;  // Refused: what this step waits for.
    }
    return got;
  }();
  EXPECT_EQ(extra, "") << "the 17th client was served while 16 held every slot";
  // The idle clients are dropped after the timeout (5 s), and the slots come back.
  std::string last = ReadToEof(idle.back(), Duration(15000));
  EXPECT_EQ(last, "") << "an idle client got an answer";
  for (int fd : idle) ::close(fd);
  EXPECT_TRUE(WaitFor([&] { return HttpGet(port, "/healthz").status == 200; }, Duration(10000),
                      Duration(50)));
  // The pipes were served all along.
  const ClientResult ls = RunPipegate(dir, {"ls", gw.BaseAddress()});
  EXPECT_EQ(ls.status, 0) << ls.Describe();
  EXPECT_TRUE(gw.Running());
}

TEST(Operations, MetricsListenIsCheckedByCheckConfig) {
  TempDir dir;
  const std::string config = dir.Join("bad.toml");
  ASSERT_TRUE(WriteFile(config, "[gateway]\ncert = \"" + PkiPath("gateway.crt") + "\"\nkey = \"" +
                                    PkiPath("gateway.key") + "\"\nclient_ca = \"" +
                                    PkiPath("ca.crt") +
                                    "\"\nmetrics_listen = \"localhost:9745\"\nlog_format = "
                                    "\"xml\"\n"));
  CommandResult r = RunCommand({BinPath("pipegated"), "--check-config", config}, dir.path());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find(config + ":5: gateway: metrics_listen address \"localhost:9745\": the host "
                                "must be an IP address"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find(config + ":6: gateway: log_format must be \"text\" (the default) or "
                                "\"json\", not \"xml\""),
            std::string::npos)
      << r.err;
}

TEST(Operations, JsonLogLinesCarryTheFieldsAndNeverThePayload) {
  TempDir dir;
  GatewayOptions options = WithExports({ExportSpec::FifoWrite("cmd")});
  options.extra_gateway_toml = "log_format = \"json\"\n";
  GatewayFixture json_gw(dir, options);
  ASSERT_TRUE(json_gw.Start());
  const std::string marker = "PAYLOAD-MARKER-7f3a9c";
  const std::string input = dir.Join("in");
  ASSERT_TRUE(WriteFile(input, marker + "\n"));
  EXPECT_EQ(WriteThroughExport(dir, json_gw, "cmd", input), marker + "\n");
  // A refused open by name, so that a client-chosen string reaches the log.
  const ClientResult refused = RunPipegate(dir, {"cat", json_gw.Address("nosuch")});
  EXPECT_NE(refused.status, 0);
  ASSERT_TRUE(WaitFor([&] { return json_gw.Log().find("no-such-pipe") != std::string::npos; },
                      Duration(10000)));
  ASSERT_TRUE(json_gw.Stop().has_value());

  const std::string log = json_gw.Log();
  EXPECT_EQ(log.find(marker), std::string::npos) << "payload bytes in the log";
  bool granted = false;
  bool refused_line = false;
  bool listening = false;
  int lines = 0;
  for (const std::string& line : SplitLines(log)) {
    ++lines;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(j.is_discarded()) << "not JSON: " << line;
    ASSERT_TRUE(j.is_object()) << line;
    for (const char* key : {"time", "program", "level", "msg"}) {
      ASSERT_TRUE(j.contains(key) && j[key].is_string()) << key << " missing: " << line;
    }
    EXPECT_EQ(j["program"], "pipegated");
    EXPECT_TRUE(std::regex_match(j["time"].get<std::string>(),
                                 std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")))
        << line;
    const std::string msg = j["msg"];
    if (msg.rfind("listening on 127.0.0.1:", 0) == 0) listening = true;
    if (j.value("decision", "") == "granted") {
      granted = true;
      EXPECT_EQ(j.value("export", ""), "cmd") << line;
      EXPECT_EQ(j.value("identity", ""), "alice") << line;
      EXPECT_EQ(j.value("access", ""), "write") << line;
      EXPECT_TRUE(j.contains("conn") && j.contains("from")) << line;
      EXPECT_EQ(j["level"], "info");
    }
    if (j.value("decision", "") == "no-such-pipe") {
      refused_line = true;
      EXPECT_EQ(j.value("export", ""), "nosuch") << line;
      EXPECT_EQ(j["level"], "warn");
    }
  }
  EXPECT_GT(lines, 3);
  EXPECT_TRUE(listening && granted && refused_line) << log;
}

// A Kubernetes Secret volume: the files are symlinks through `..data`, which the kubelet
// points at a new directory in one rename when the certificate is renewed.
class SecretVolume {
 public:
  explicit SecretVolume(TempDir& dir) : root_(dir.Join("secret")) {
    ::mkdir(root_.c_str(), 0700);
    EXPECT_EQ(::symlink("..data/tls.crt", (root_ + "/tls.crt").c_str()), 0);
    EXPECT_EQ(::symlink("..data/tls.key", (root_ + "/tls.key").c_str()), 0);
  }
  // Writes a new generation holding @p stem's certificate and key (or @p crt_text as the
  // certificate), then swaps `..data` to it atomically.
  bool Publish(const std::string& stem, const std::string& crt_text = "") {
    const std::string gen = root_ + "/..gen" + std::to_string(++generation_);
    if (::mkdir(gen.c_str(), 0700) != 0) return false;
    if (!WriteFile(gen + "/tls.crt",
                   crt_text.empty() ? ReadFile(PkiPath(stem + ".crt")) : crt_text) ||
        !WriteFile(gen + "/tls.key", ReadFile(PkiPath(stem + ".key")))) {
      return false;
    }
    const std::string tmp = root_ + "/..data_tmp";
    ::unlink(tmp.c_str());
    if (::symlink(("..gen" + std::to_string(generation_)).c_str(), tmp.c_str()) != 0) return false;
    return ::rename(tmp.c_str(), (root_ + "/..data").c_str()) == 0;
  }
  std::string cert() const { return root_ + "/tls.crt"; }
  std::string key() const { return root_ + "/tls.key"; }
  /// @return A gateway config with @p exports whose certificate and key are in this volume.
  GatewayOptions GatewayWith(std::vector<ExportSpec> exports) const {
    GatewayOptions options = WithExports(std::move(exports));
    options.cert = cert();
    options.key = key();
    return options;
  }

 private:
  std::string root_;
  int generation_ = 0;
};

TEST(Operations, RenewedCertificateIsPickedUpFromASymlinkSwapWithoutASignal) {
  TempDir dir;
  SecretVolume secret(dir);
  ASSERT_TRUE(secret.Publish("gateway"));
  GatewayOptions options = secret.GatewayWith({ExportSpec::FifoRead("logs")});
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  const std::string old_pin = PinOf("gateway");
  const std::string new_pin = PinOf("gateway-rotated");
  ASSERT_FALSE(old_pin.empty());
  ASSERT_NE(old_pin, new_pin);
  EXPECT_EQ(RunPipegate(dir, {"ls", "--pin", old_pin, gw.BaseAddress()}).status, 0);

  size_t log_mark = gw.Log().size();
  ASSERT_TRUE(secret.Publish("gateway-rotated"));
  ASSERT_TRUE(WaitFor([&] { return gw.Log().find("reloaded ", log_mark) != std::string::npos; },
                      Duration(10000)))
      << "no reload after the swap:\n"
      << gw.Log();
  EXPECT_NE(gw.Log().find("certificate files changed", log_mark), std::string::npos);
  const ClientResult with_new = RunPipegate(dir, {"ls", "--pin", new_pin, gw.BaseAddress()});
  EXPECT_EQ(with_new.status, 0) << with_new.Describe();
  const ClientResult with_old = RunPipegate(dir, {"ls", "--pin", old_pin, gw.BaseAddress()});
  EXPECT_TRUE(IsError(with_old, 2, gw.BaseAddress(), "does not match --pin"));

  // A broken renewal is refused once, and the running certificate stays.
  log_mark = gw.Log().size();
  ASSERT_TRUE(secret.Publish("gateway", "not a certificate\n"));
  ASSERT_TRUE(WaitFor(
      [&] { return gw.Log().find("reload failed, keeping", log_mark) != std::string::npos; },
      Duration(10000)))
      << gw.Log();
  const ClientResult still = RunPipegate(dir, {"ls", "--pin", new_pin, gw.BaseAddress()});
  EXPECT_EQ(still.status, 0) << still.Describe();
  // Tried once per change, not once a second.
  const size_t failed_at = gw.Log().size();
  const ClientResult again = RunPipegate(dir, {"ls", "--pin", new_pin, gw.BaseAddress()});
  EXPECT_EQ(again.status, 0);
  EXPECT_FALSE(
      WaitFor([&] { return gw.Log().find("reload failed", failed_at) != std::string::npos; },
              Duration(2500)))
      << "the same bad files were reloaded again:\n"
      << gw.Log();
  EXPECT_TRUE(gw.Running());
}

TEST(Operations, WatchCertificatesFalseLeavesReloadsToSighup) {
  TempDir dir;
  SecretVolume secret(dir);
  ASSERT_TRUE(secret.Publish("gateway"));
  GatewayOptions options = secret.GatewayWith({ExportSpec::FifoRead("logs")});
  options.extra_gateway_toml = "watch_certificates = false\n";
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  const size_t mark = gw.Log().size();
  ASSERT_TRUE(secret.Publish("gateway-rotated"));
  EXPECT_FALSE(WaitFor([&] { return gw.Log().find("reloaded ", mark) != std::string::npos; },
                       Duration(3000)))
      << gw.Log();
  gw.Signal(SIGHUP);
  EXPECT_TRUE(WaitFor([&] { return gw.Log().find("reloaded ", mark) != std::string::npos; },
                      Duration(10000)));
  EXPECT_EQ(RunPipegate(dir, {"ls", "--pin", PinOf("gateway-rotated"), gw.BaseAddress()}).status,
            0);
}

// A datagram socket standing in for systemd's notify socket.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    path.copy(a.sun_path, sizeof a.sun_path - 1);
    bound_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~NotifySocket() { ::close(fd_); }
  bool bound() const { return bound_; }
  // Collects messages until one contains @p what (or the nominal timeout).
  bool WaitFor(const std::string& what, Duration timeout) {
    const Clock::time_point end = Clock::now() + Scaled(timeout);
    while (Clock::now() < end) {
      if (all_.find(what) != std::string::npos) return true;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n > 0) all_.append(buf, static_cast<size_t>(n)).append("|");
    }
    return all_.find(what) != std::string::npos;
  }
  const std::string& all() const { return all_; }

 private:
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
  std::string all_;
};

TEST(Operations, TellsSystemdWhenReadyReloadingAndStopping) {
  TempDir dir;
  NotifySocket notify(dir.Join("notify.sock"));
  ASSERT_TRUE(notify.bound());
  GatewayOptions options = WithExports({ExportSpec::FifoRead("logs")});
  options.env.push_back({"NOTIFY_SOCKET", dir.Join("notify.sock")});
  GatewayFixture gw(dir, options);
  ASSERT_TRUE(gw.Start());
  EXPECT_TRUE(notify.WaitFor("READY=1", Duration(10000))) << notify.all();
  EXPECT_NE(notify.all().find("STATUS=serving 1 export(s)"), std::string::npos) << notify.all();
  gw.Signal(SIGHUP);
  EXPECT_TRUE(notify.WaitFor("RELOADING=1", Duration(10000))) << notify.all();
  EXPECT_TRUE(notify.WaitFor("RELOADING=1|READY=1", Duration(10000))) << notify.all();
  EXPECT_EQ(gw.Stop(), 0);
  EXPECT_TRUE(notify.WaitFor("STOPPING=1", Duration(10000))) << notify.all();
}

}  // namespace
}  // namespace pipegate::testing
