// The pure parts of operating the gateway: the Prometheus rendering, the HTTP request line of
// the metrics endpoint, JSON log lines, and the [gateway] keys that turn them on.

#include <regex>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "pipegate/config.h"
#include "pipegate/log.h"

#include "listing.h"
#include "metrics.h"
#include "progress.h"
#include "uv/http_server.h"
#include <nlohmann/json.hpp>

namespace pipegate {
namespace {

using gateway::Counters;
using gateway::MetricsView;
using gateway::RenderPrometheus;

TEST(RenderPrometheus, EveryCounterOfTheListIsAFamilyOfItsOwn) {
  Counters k;
  k.connections_accepted = 5;
  k.bytes_to_clients = 4096;
  k.tls_refused.unknown_ca = 2;
  MetricsView view;
  view.counters = &k;
  view.exports.push_back({"logs", 1, 7, 100, 200});
  view.exports.push_back({"we\"ird\\name\n", 0, 0, 0, 0});
  view.worker_loop_lag_us = {1500, 0};
  view.replay_bytes = 77;
  const std::string text = RenderPrometheus(view);
  EXPECT_NE(text.find("\npipegate_connections_accepted_total 5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\npipegate_to_clients_bytes_total 4096\n"), std::string::npos);
  EXPECT_NE(text.find("\npipegate_tls_handshake_failures_total{reason=\"unknown_ca\"} 2\n"),
            std::string::npos);
  EXPECT_NE(text.find("\npipegate_tls_handshake_failed_total 0\n"), std::string::npos);
  EXPECT_NE(text.find("\npipegate_export_streams{export=\"logs\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("\npipegate_export_streams_opened_total{export=\"logs\"} 7\n"),
            std::string::npos);
  EXPECT_NE(text.find("\npipegate_export_sent_bytes_total{export=\"logs\"} 100\n"),
            std::string::npos);
  EXPECT_NE(text.find("\npipegate_export_received_bytes_total{export=\"logs\"} 200\n"),
            std::string::npos);
  EXPECT_NE(text.find("{export=\"we\\\"ird\\\\name\\n\"}"), std::string::npos)
      << "label values must escape quote, backslash and newline";
  EXPECT_NE(text.find("\npipegate_worker_loop_lag_seconds{worker=\"0\"} 0.0015\n"),
            std::string::npos);
  EXPECT_NE(text.find("\npipegate_replay_held_bytes 77\n"), std::string::npos);
  // Families: each declared once, with HELP then TYPE; counters end in _total.
  std::set<std::string> families;
  std::smatch m;
  static const std::regex kType(R"(# TYPE (\S+) (counter|gauge))");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), kType);
       it != std::sregex_iterator(); ++it) {
    const std::string name = (*it)[1];
    EXPECT_TRUE(families.insert(name).second) << name << " declared twice";
    if ((*it)[2] == "counter") {
      EXPECT_EQ(name.substr(name.size() - 6), "_total") << name;
    }
    EXPECT_EQ(name.rfind("pipegate_", 0), 0u) << name;
  }
  size_t counters = 0;
#define PIPEGATE_COUNT(name, help) ++counters;
  PIPEGATE_GATEWAY_COUNTERS(PIPEGATE_COUNT)
#undef PIPEGATE_COUNT
  // The list, the TLS family, log lines, 4 gauges, 4 per-export families, lag, config time,
  // build info.
  EXPECT_EQ(families.size(), counters + 1 + 1 + 4 + 4 + 1 + 1 + 1);
}

TEST(ParseHttpRequestLine, TakesMethodAndPathWithoutTheQuery) {
  std::string_view method;
  std::string_view path;
  ASSERT_TRUE(
      uvglue::ParseHttpRequestLine("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", &method, &path));
  EXPECT_EQ(method, "GET");
  EXPECT_EQ(path, "/metrics");
  EXPECT_TRUE(uvglue::ParseHttpRequestLine("HEAD /healthz HTTP/1.0\r\n\r\n", &method, &path));
  EXPECT_FALSE(uvglue::ParseHttpRequestLine("GET /metrics\r\n\r\n", &method, &path));
  EXPECT_FALSE(uvglue::ParseHttpRequestLine("GET /metrics HTTP/2\r\n\r\n", &method, &path));
  EXPECT_FALSE(uvglue::ParseHttpRequestLine(" /metrics HTTP/1.1\r\n\r\n", &method, &path));
  EXPECT_FALSE(uvglue::ParseHttpRequestLine("GET  HTTP/1.1\r\n\r\n", &method, &path));
  EXPECT_FALSE(uvglue::ParseHttpRequestLine("", &method, &path));
}

TEST(JsonLogLine, HasTheFixedFieldsAndTheMessagesOwn) {
  const std::string line = FormatJsonLogLine(
      "2026-12-06T08:00:00.000Z", "pipegated", LogLevel::kWarn,
      "audit: decision=access-denied identity=\"CN=bob\" identities=\"CN=bob,DNS:b x\" "
      "export=\"logs\" access=read from=127.0.0.1:5000 conn=C3 why=\"a \\x22quoted\\x22 word\"");
  nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["time"], "2026-12-06T08:00:00.000Z");
  EXPECT_EQ(j["program"], "pipegated");
  EXPECT_EQ(j["level"], "warn");
  EXPECT_EQ(j["decision"], "access-denied");
  EXPECT_EQ(j["identity"], "CN=bob");
  EXPECT_EQ(j["identities"], "CN=bob,DNS:b x");
  EXPECT_EQ(j["export"], "logs");
  EXPECT_EQ(j["from"], "127.0.0.1:5000");
  EXPECT_EQ(j["conn"], "C3");
  EXPECT_EQ(j["why"], "a \\x22quoted\\x22 word");
  EXPECT_EQ(line.find('\n'), std::string::npos);
  // The order is fixed: time, program, level, msg, then the message's fields.
  EXPECT_EQ(line.rfind("{\"time\":", 0), 0u) << line;
}

TEST(JsonLogLine, TakesTheConnectionAndStreamPrefixAndKeepsTheFirstOfARepeatedKey) {
  nlohmann::json j = nlohmann::json::parse(FormatJsonLogLine(
      "t", "pipegated", LogLevel::kInfo, "[C12][S5] stream ended a=1 a=2 not=a=key x= y"));
  EXPECT_EQ(j["conn"], "C12");
  EXPECT_EQ(j["stream"], "S5");
  EXPECT_EQ(j["a"], "1");
  EXPECT_EQ(j["x"], "");
  EXPECT_EQ(j["msg"], "[C12][S5] stream ended a=1 a=2 not=a=key x= y");
  // A field named like a fixed one never overwrites it.
  j = nlohmann::json::parse(FormatJsonLogLine("t", "p", LogLevel::kError, "level=low msg=hi"));
  EXPECT_EQ(j["level"], "error");
  EXPECT_EQ(j["msg"], "level=low msg=hi");
}

TEST(JsonLogLine, ControlAndNonUtf8BytesCannotBreakTheLine) {
  const std::string line =
      FormatJsonLogLine("t", "p", LogLevel::kInfo, std::string("a\nb\"c\xff\x01 k=\"v\n\""));
  EXPECT_EQ(line.find('\n'), std::string::npos);
  nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["k"], "v\n");
  EXPECT_NE(j["msg"].get<std::string>().find("\xEF\xBF\xBD"), std::string::npos)
      << "the invalid byte becomes U+FFFD";
}

TEST(ParseLogFormat, KnowsTextAndJsonOnly) {
  LogFormat f = LogFormat::kText;
  EXPECT_TRUE(ParseLogFormat("json", &f));
  EXPECT_EQ(f, LogFormat::kJson);
  EXPECT_TRUE(ParseLogFormat("text", &f));
  EXPECT_EQ(f, LogFormat::kText);
  EXPECT_FALSE(ParseLogFormat("JSON", &f));
  EXPECT_FALSE(ParseLogFormat("", &f));
}

constexpr std::string_view kHeader = R"([gateway]
cert = "/a.crt"
key = "/a.key"
client_ca = "/ca.crt"
)";

TEST(OperationsConfig, DefaultsAreOffTextAndWatching) {
  ConfigParseResult r = ParseGatewayConfig(kHeader, "");
  ASSERT_TRUE(r.config) << (r.errors.empty() ? "" : r.errors[0].message);
  EXPECT_EQ(r.config->metrics_listen, "");
  EXPECT_EQ(r.config->log_format, LogFormat::kText);
  EXPECT_TRUE(r.config->watch_certificates);
}

TEST(OperationsConfig, ReadsTheKeysInCanonicalForm) {
  ConfigParseResult r = ParseGatewayConfig(
      std::string(kHeader) +
          "metrics_listen = \"[::1]:9745\"\nlog_format = \"json\"\nwatch_certificates = false\n",
      "");
  ASSERT_TRUE(r.config) << (r.errors.empty() ? "" : r.errors[0].message);
  EXPECT_EQ(r.config->metrics_listen, "[::1]:9745");
  EXPECT_EQ(r.config->log_format, LogFormat::kJson);
  EXPECT_FALSE(r.config->watch_certificates);
  r = ParseGatewayConfig(std::string(kHeader) + "metrics_listen = \"\"\n", "");
  ASSERT_TRUE(r.config);
  EXPECT_EQ(r.config->metrics_listen, "") << "an empty string keeps metrics off";
}

TEST(OperationsConfig, RefusesBadValuesWithTheirLine) {
  ConfigParseResult r = ParseGatewayConfig(std::string(kHeader) +
                                               "metrics_listen = \"metrics.local:9745\"\n"
                                               "log_format = \"yaml\"\n"
                                               "watch_certificates = \"yes\"\n",
                                           "");
  ASSERT_FALSE(r.config);
  ASSERT_EQ(r.errors.size(), 3u);
  EXPECT_EQ(r.errors[0].line, 5);
  EXPECT_NE(r.errors[0].message.find("metrics_listen address \"metrics.local:9745\": the host "
                                     "must be an IP address"),
            std::string::npos)
      << r.errors[0].message;
  EXPECT_EQ(r.errors[1].line, 6);
  EXPECT_NE(r.errors[1].message.find("log_format must be \"text\" (the default) or \"json\""),
            std::string::npos);
  EXPECT_EQ(r.errors[2].line, 7);
  EXPECT_NE(r.errors[2].message.find("watch_certificates"), std::string::npos);
  r = ParseGatewayConfig(std::string(kHeader) + "metrics_listen = 9745\n", "");
  ASSERT_FALSE(r.config);
  EXPECT_NE(r.errors[0].message.find("metrics_listen"), std::string::npos);
}

}  // namespace
namespace bridge {
namespace {

TEST(Progress, HumanUnitsAreBinaryWithThreeSignificantDigits) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(1023), "1023 B");
  EXPECT_EQ(HumanBytes(1536), "1.50 KiB");
  EXPECT_EQ(HumanBytes(16.0 * 1024 * 1024), "16.0 MiB");
  EXPECT_EQ(HumanBytes(300000), "293 KiB");
  EXPECT_EQ(HumanBytes(2.0 * 1024 * 1024 * 1024), "2.00 GiB");
  EXPECT_EQ(HumanDuration(7.4), "0:07");
  EXPECT_EQ(HumanDuration(754), "12:34");
  EXPECT_EQ(HumanDuration(3723), "1:02:03");
}

TEST(Progress, LineHasPercentAndEtaOnlyWhenTheSizeIsKnown) {
  ProgressSample p;
  p.sent = 16 << 20;
  p.show_sent = true;
  p.total = 32u << 20;
  p.rate = 8 << 20;
  p.elapsed_s = 2;
  EXPECT_EQ(FormatProgress(p), "16.0 MiB sent 50% of 32.0 MiB, 8.00 MiB/s, 0:02 elapsed, ETA 0:02");
  p.total.reset();
  EXPECT_EQ(FormatProgress(p), "16.0 MiB sent, 8.00 MiB/s, 0:02 elapsed");
  p.show_received = true;
  p.received = 1024;
  EXPECT_EQ(FormatProgress(p), "16.0 MiB sent, 1.00 KiB received, 8.00 MiB/s, 0:02 elapsed");
  p.show_sent = false;
  p.rate = 0;
  EXPECT_EQ(FormatProgress(p), "1.00 KiB received, 0 B/s, 0:02 elapsed");
}

TEST(Progress, RateFollowsAStallWithoutJumping) {
  RateMeter m;
  EXPECT_DOUBLE_EQ(m.Update(1000, 1.0), 1000);
  double r = 0;
  for (int i = 2; i <= 20; ++i) r = m.Update(1000u * static_cast<uint64_t>(i), i);
  EXPECT_NEAR(r, 1000, 1);
  const double after_one_stalled_second = m.Update(20000, 21);
  EXPECT_LT(after_one_stalled_second, r);
  EXPECT_GT(after_one_stalled_second, 0);
  for (int i = 22; i <= 40; ++i) r = m.Update(20000, i);
  EXPECT_LT(r, 1);
}

TEST(Listing, TableHasAHeaderAndAlignedColumnsTabsHaveNeitherJsonIsOneArray) {
  ListingRow events{"a-longer-name", "unix", "duplex", true, 12, 16, 65536};
  std::vector<ListingRow> rows = {{"logs", "fifo", "read", false, 1, 1, 0}, events};
  EXPECT_EQ(FormatListing(rows, ListingFormat::kTable),
            "NAME           KIND  ACCESS  MODE      CLIENTS  MAX\n"
            "logs           fifo  read    bytes           1  1\n"
            "a-longer-name  unix  duplex  messages       12  16\n");
  EXPECT_EQ(FormatListing(rows, ListingFormat::kTabs),
            "logs\tfifo\tread\tbytes\t1\t1\n"
            "a-longer-name\tunix\tduplex\tmessages\t12\t16\n");
  EXPECT_EQ(FormatListing({}, ListingFormat::kTable), "NAME  KIND  ACCESS  MODE  CLIENTS  MAX\n");
  EXPECT_EQ(FormatListing({}, ListingFormat::kTabs), "");
  EXPECT_EQ(FormatListing({{"any", "unix", "duplex"}}, ListingFormat::kTabs),
            "any\tunix\tduplex\tbytes\t0\t-\n");  // No maximum.
  EXPECT_EQ(FormatListing(rows, ListingFormat::kJson),
            "[{\"name\":\"logs\",\"kind\":\"fifo\",\"access\":\"read\",\"mode\":\"bytes\","
            "\"clients\":1,\"max_clients\":1},"
            "{\"name\":\"a-longer-name\",\"kind\":\"unix\",\"access\":\"duplex\","
            "\"mode\":\"messages\",\"clients\":12,\"max_clients\":16,\"max_message\":65536}]\n");
  EXPECT_EQ(FormatListing({}, ListingFormat::kJson), "[]\n");
}

TEST(Listing, StatShowsOneExportInDetailOrAsOneJsonObject) {
  ListingRow events{"events", "unix", "duplex", true, 2, 0, 4096};
  EXPECT_EQ(FormatListing({events}, ListingFormat::kDetail),
            "name:     events\n"
            "kind:     unix\n"
            "access:   duplex\n"
            "mode:     messages, at most 4096 bytes each\n"
            "clients:  2 attached (no maximum)\n");
  EXPECT_EQ(FormatListing({{"logs", "fifo", "read", false, 0, 1, 0}}, ListingFormat::kDetail),
            "name:     logs\n"
            "kind:     fifo\n"
            "access:   read\n"
            "mode:     byte stream\n"
            "clients:  0 attached (at most 1)\n");
  EXPECT_EQ(FormatListing({events}, ListingFormat::kJsonObject),
            "{\"name\":\"events\",\"kind\":\"unix\",\"access\":\"duplex\",\"mode\":\"messages\","
            "\"clients\":2,\"max_clients\":null,\"max_message\":4096}\n");
}

}  // namespace
}  // namespace bridge
}  // namespace pipegate
