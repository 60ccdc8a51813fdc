#include "pipegate/config.h"

#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

namespace pipegate {
namespace {

// The example from SPEC §4, verbatim.
constexpr std::string_view kSpecExample = R"(
[gateway]
listen = ["0.0.0.0:7445", "[::]:7445"]
cert = "/etc/pipegate/gateway.crt"
key = "/etc/pipegate/gateway.key"
client_ca = "/etc/pipegate/ca.crt"
# workers = 2                # event-loop threads; default: one per core

[[export]]
name = "logs"
kind = "fifo"
access = "read"
path = "/run/app/logs.fifo"
create = true
mode = "0640"
allow = ["build-42", "spiffe://example.org/ci"]   # client identities; "*" = any client the CA vouches for

[[export]]
name = "docker"
kind = "unix"
path = "/var/run/docker.sock"
allow = ["ops"]
)";

constexpr std::string_view kGatewayHeader = R"([gateway]
cert = "/c/gw.crt"
key = "/c/gw.key"
client_ca = "/c/ca.crt"
)";

// The 1-based line of the first occurrence of @p needle in @p text.
int LineOf(std::string_view text, std::string_view needle) {
  const size_t at = text.find(needle);
  EXPECT_NE(at, std::string_view::npos) << needle;
  int line = 1;
  for (size_t i = 0; i < at && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
    }
  }
  return line;
}

std::string Dump(const std::vector<ConfigError>& errors) {
  return FormatConfigErrors("test.toml", errors);
}

GatewayConfig MustParse(std::string_view text, std::string_view base_dir = "/etc/pipegate") {
  ConfigParseResult result = ParseGatewayConfig(text, base_dir);
  EXPECT_TRUE(result.errors.empty()) << Dump(result.errors);
  EXPECT_TRUE(result.config.has_value());
  return result.config.value_or(GatewayConfig{});
}

std::vector<ConfigError> MustFail(std::string_view text,
                                  std::string_view base_dir = "/etc/pipegate") {
  ConfigParseResult result = ParseGatewayConfig(text, base_dir);
  EXPECT_FALSE(result.config.has_value());
  EXPECT_FALSE(result.errors.empty());
  return result.errors;
}

// Expects exactly one error, on @p line, whose message contains @p fragment.
void ExpectOneError(std::string_view text, int line, std::string_view fragment) {
  std::vector<ConfigError> errors = MustFail(text);
  ASSERT_EQ(errors.size(), 1u) << Dump(errors);
  EXPECT_EQ(errors[0].line, line) << Dump(errors);
  EXPECT_NE(errors[0].message.find(fragment), std::string::npos) << Dump(errors);
}

std::string WithExport(std::string_view body) {
  return std::string(kGatewayHeader) + "\n[[export]]\n" + std::string(body);
}

TEST(ParseGatewayConfig, AcceptsSpecExample) {
  GatewayConfig config = MustParse(kSpecExample);
  EXPECT_EQ(config.listen, (std::vector<std::string>{"0.0.0.0:7445", "[::]:7445"}));
  EXPECT_EQ(config.cert, "/etc/pipegate/gateway.crt");
  EXPECT_EQ(config.key, "/etc/pipegate/gateway.key");
  EXPECT_EQ(config.client_ca, "/etc/pipegate/ca.crt");
  EXPECT_EQ(config.workers, 0u);
  ASSERT_EQ(config.exports.size(), 2u);

  const ExportConfig* logs = config.Find("logs");
  ASSERT_NE(logs, nullptr);
  EXPECT_EQ(logs->kind, ExportKind::kFifo);
  EXPECT_EQ(logs->access, Access::kRead);
  EXPECT_EQ(logs->path, "/run/app/logs.fifo");
  EXPECT_TRUE(logs->create);
  EXPECT_EQ(logs->mode, 0640u);
  EXPECT_EQ(logs->allow, (std::vector<std::string>{"build-42", "spiffe://example.org/ci"}));
  EXPECT_EQ(logs->max_clients, 1u);
  EXPECT_EQ(logs->line, LineOf(kSpecExample, "[[export]]"));

  const ExportConfig* docker = config.Find("docker");
  ASSERT_NE(docker, nullptr);
  EXPECT_EQ(docker->kind, ExportKind::kUnix);
  EXPECT_EQ(docker->access, Access::kDuplex);
  EXPECT_FALSE(docker->create);
  EXPECT_EQ(docker->max_clients, 0u);
  EXPECT_EQ(config.Find("nope"), nullptr);
}

TEST(ParseGatewayConfig, AppliesDefaults) {
  GatewayConfig config = MustParse(WithExport(R"(name = "cmd"
kind = "fifo"
access = "write"
path = "/run/cmd"
allow = ["*"]
)"));
  EXPECT_EQ(config.listen, (std::vector<std::string>{"0.0.0.0:7445"}));
  EXPECT_EQ(config.workers, 0u);
  ASSERT_EQ(config.exports.size(), 1u);
  EXPECT_FALSE(config.exports[0].create);
  EXPECT_EQ(config.exports[0].mode, 0600u);
  EXPECT_EQ(config.exports[0].max_clients, 0u);  // Unlimited writers.
}

TEST(ParseGatewayConfig, AcceptsNoExports) {
  EXPECT_TRUE(MustParse(kGatewayHeader).exports.empty());
}

TEST(ParseGatewayConfig, ReadsExplicitValues) {
  GatewayConfig config = MustParse(R"([gateway]
listen = ["127.0.0.1:0", "[::1]:9000", "10.0.0.1"]
cert = "a.crt"
key = "a.key"
client_ca = "ca.crt"
workers = 4

[[export]]
name = "cmd"
kind = "fifo"
access = "read"
path = "/run/cmd"
mode = 0o600
max_clients = 3
allow = ["alice", "spiffe://example.org/ci/*"]
)");
  EXPECT_EQ(config.listen,
            (std::vector<std::string>{"127.0.0.1:0", "[::1]:9000", "10.0.0.1:7445"}));
  EXPECT_EQ(config.workers, 4u);
  ASSERT_EQ(config.exports.size(), 1u);
  EXPECT_EQ(config.exports[0].mode, 0600u);
  EXPECT_EQ(config.exports[0].max_clients, 3u);
}

TEST(ParseGatewayConfig, ResolvesRelativePathsAgainstBaseDir) {
  GatewayConfig config = MustParse(R"([gateway]
cert = "certs/gw.crt"
key = "../keys/gw.key"
client_ca = "/abs/ca.crt"

[[export]]
name = "logs"
kind = "fifo"
access = "read"
path = "run/./logs.fifo"
allow = ["*"]
)",
                                   "/srv/pg/conf");
  EXPECT_EQ(config.cert, "/srv/pg/conf/certs/gw.crt");
  EXPECT_EQ(config.key, "/srv/pg/keys/gw.key");
  EXPECT_EQ(config.client_ca, "/abs/ca.crt");
  EXPECT_EQ(config.exports[0].path, "/srv/pg/conf/run/logs.fifo");
}

TEST(ParseGatewayConfig, RejectsRelativeExportPathWithoutBaseDir) {
  const std::string text = WithExport(R"(name = "logs"
kind = "fifo"
access = "read"
path = "logs.fifo"
allow = ["*"]
)");
  std::vector<ConfigError> errors = MustFail(text, "");
  ASSERT_EQ(errors.size(), 1u) << Dump(errors);
  EXPECT_EQ(errors[0].line, LineOf(text, "path ="));
  EXPECT_NE(errors[0].message.find("must be absolute"), std::string::npos);
}

TEST(ParseGatewayConfig, ReportsSyntaxErrorWithLine) {
  const std::string text = std::string(kGatewayHeader) + "workers = \n";
  ExpectOneError(text, LineOf(text, "workers"), "syntax error");
}

TEST(ParseGatewayConfig, ReportsUnknownGatewayKey) {
  const std::string text = std::string(kGatewayHeader) + "lisen = [\"0.0.0.0:1\"]\n";
  ExpectOneError(text, LineOf(text, "lisen"),
                 "gateway: unknown key \"lisen\" (did you mean \"listen\"?)");
}

TEST(ParseGatewayConfig, ReportsUnknownExportKey) {
  const std::string text = WithExport(R"(name = "logs"
kind = "fifo"
access = "read"
path = "/run/logs"
alow = ["x"]
allow = ["x"]
)");
  ExpectOneError(text, LineOf(text, "alow"),
                 "export \"logs\": unknown key \"alow\" (did you mean \"allow\"?)");
}

TEST(ParseGatewayConfig, ReportsUnknownTopLevelKeyAndSingleExportTable) {
  const std::string text =
      "workers = 2\n" + std::string(kGatewayHeader) + "\n[export]\nname = \"x\"\n";
  std::vector<ConfigError> errors = MustFail(text);
  ASSERT_EQ(errors.size(), 2u) << Dump(errors);
  EXPECT_EQ(errors[0].line, 1);
  EXPECT_NE(errors[0].message.find("belongs under [gateway]"), std::string::npos);
  EXPECT_EQ(errors[1].line, LineOf(text, "[export]"));
  EXPECT_NE(errors[1].message.find("[[export]]"), std::string::npos);
}

TEST(ParseGatewayConfig, ReportsWrongTypes) {
  const std::string text = R"([gateway]
listen = "0.0.0.0:7445"
cert = 1
key = "k"
client_ca = "ca"
workers = "2"
)";
  std::vector<ConfigError> errors = MustFail(text);
  ASSERT_EQ(errors.size(), 3u) << Dump(errors);
  EXPECT_EQ(errors[0].line, 2);
  EXPECT_EQ(errors[0].message, "gateway: listen must be an array, not a string");
  EXPECT_EQ(errors[1].line, 3);
  EXPECT_EQ(errors[1].message, "gateway: cert must be a string, not an integer");
  EXPECT_EQ(errors[2].line, 6);
  EXPECT_EQ(errors[2].message, "gateway: workers must be an integer, not a string");
}

TEST(ParseGatewayConfig, ReportsMissingGatewayKeys) {
  const std::string text = "\n[gateway]\ncert = \"c\"\n";
  std::vector<ConfigError> errors = MustFail(text);
  ASSERT_EQ(errors.size(), 2u) << Dump(errors);
  EXPECT_EQ(errors[0].line, 2);
  EXPECT_EQ(errors[0].message, "gateway: missing required key \"key\"");
  EXPECT_EQ(errors[1].line, 2);
  EXPECT_EQ(errors[1].message, "gateway: missing required key \"client_ca\"");
}

TEST(ParseGatewayConfig, ReportsMissingGatewayTable) {
  std::vector<ConfigError> errors = MustFail("");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].line, 0);
  EXPECT_EQ(errors[0].message, "missing [gateway] table");
}

TEST(ParseGatewayConfig, ReportsMissingExportKeys) {
  const std::string text = WithExport("kind = \"fifo\"\n");
  std::vector<ConfigError> errors = MustFail(text);
  const int line = LineOf(text, "[[export]]");
  ASSERT_EQ(errors.size(), 4u) << Dump(errors);
  for (const ConfigError& error : errors) {
    EXPECT_EQ(error.line, line) << error.message;
    EXPECT_NE(error.message.find("export #1: missing required key"), std::string::npos);
  }
  const std::string all = Dump(errors);
  for (const char* key : {"\"name\"", "\"access\"", "\"path\"", "\"allow\""}) {
    EXPECT_NE(all.find(key), std::string::npos) << key;
  }
}

TEST(ParseGatewayConfig, ReportsInvalidExportName) {
  const std::string text = WithExport(R"(name = "a/b"
kind = "unix"
path = "/run/a.sock"
allow = ["x"]
)");
  ExpectOneError(text, LineOf(text, "name ="),
                 "export #1: invalid character '/' at position 2 in pipe name \"a/b\"");
  ExpectOneError(WithExport("name = \"..\"\nkind = \"unix\"\npath = \"/s\"\nallow = [\"x\"]\n"),
                 LineOf(WithExport(""), "[[export]]") + 1, "\"..\" is not allowed");
}

TEST(ParseGatewayConfig, ReportsDuplicateExportName) {
  const std::string one = "name = \"dup\"\nkind = \"unix\"\npath = \"/s\"\nallow = [\"x\"]\n";
  const std::string text = WithExport(one) + "\n[[export]]\n" + one;
  const int second_line = LineOf(text, "[\"x\"]\n\n[[export]]") + 2;
  ExpectOneError(text, second_line,
                 "export \"dup\": duplicate export name (first defined on line " +
                     std::to_string(LineOf(text, "[[export]]")) + ")");
}

TEST(ParseGatewayConfig, ReportsUnknownKind) {
  const std::string text = WithExport(R"(name = "x"
kind = "socket"
path = "/s"
allow = ["x"]
)");
  ExpectOneError(text, LineOf(text, "kind ="),
                 "export \"x\": unknown kind \"socket\" (expected fifo, unix or exec)");
}

TEST(ParseGatewayConfig, ReportsUnknownFifoAccess) {
  const std::string text = WithExport(R"(name = "logs"
kind = "fifo"
access = "rw"
path = "/run/logs"
allow = ["x"]
)");
  ExpectOneError(text, LineOf(text, "access ="),
                 "export \"logs\": unknown access \"rw\" (expected read or write)");
}

TEST(ParseGatewayConfig, RejectsDuplexFifoAndReadUnix) {
  const std::string fifo = WithExport(R"(name = "f"
kind = "fifo"
access = "duplex"
path = "/f"
allow = ["x"]
)");
  ExpectOneError(fifo, LineOf(fifo, "access ="), "not possible for a fifo export");
  const std::string unix_export = WithExport(R"(name = "u"
kind = "unix"
access = "read"
path = "/u"
allow = ["x"]
)");
  ExpectOneError(unix_export, LineOf(unix_export, "access ="), "only duplex");
}

TEST(ParseGatewayConfig, AcceptsExplicitDuplexForUnix) {
  GatewayConfig config = MustParse(
      WithExport("name = \"u\"\nkind = \"unix\"\naccess = \"duplex\"\npath = \"/u\"\nallow = "
                 "[\"x\"]\n"));
  EXPECT_EQ(config.exports[0].access, Access::kDuplex);
}

TEST(ParseGatewayConfig, ExecExportHasCommandTimeoutAndFiniteInstances) {
  GatewayConfig config = MustParse(WithExport(R"(name = "sum"
kind = "exec"
command = ["/usr/bin/sha256sum", "-b"]
allow = ["x"]
)"));
  ASSERT_EQ(config.exports.size(), 1u);
  const ExportConfig& e = config.exports[0];
  EXPECT_EQ(e.kind, ExportKind::kExec);
  EXPECT_EQ(e.access, Access::kDuplex);
  EXPECT_EQ(e.command, (std::vector<std::string>{"/usr/bin/sha256sum", "-b"}));
  EXPECT_EQ(e.timeout_ms, 3600000u);
  EXPECT_EQ(e.max_clients, 16u);  // Each client is a process: never unlimited by default.
  EXPECT_TRUE(e.path.empty());
  EXPECT_EQ(config.limits.max_exec_processes, 64u);
  EXPECT_STREQ(ExportKindName(ExportKind::kExec), "exec");

  GatewayConfig tuned = MustParse(WithExport(R"(name = "t"
kind = "exec"
command = ["/bin/true"]
timeout = 0.5
max_clients = 2
allow = ["x"]
)") + "\n[limits]\nmax_exec_processes = 3\n");
  EXPECT_EQ(tuned.exports[0].timeout_ms, 500u);
  EXPECT_EQ(tuned.exports[0].max_clients, 2u);
  EXPECT_EQ(tuned.limits.max_exec_processes, 3u);
}

TEST(ParseGatewayConfig, RejectsBadExecExports) {
  const std::string text = WithExport(R"(name = "bad"
kind = "exec"
access = "read"
path = "/x"
command = ["sha256sum", 3]
timeout = -1
create = true
allow = ["x"]
)");
  std::vector<ConfigError> errors = MustFail(text);
  auto has = [&](const std::string& what, const std::string& line_of) {
    for (const ConfigError& e : errors) {
      if (e.message.find(what) != std::string::npos && e.line == LineOf(text, line_of)) return true;
    }
    return false;
  };
  EXPECT_TRUE(has("access \"read\" is not possible for a exec export", "access =")) << Dump(errors);
  EXPECT_TRUE(has("path does not apply to an exec export", "path =")) << Dump(errors);
  EXPECT_TRUE(has("command[0] \"sha256sum\" must be an absolute path", "command ="))
      << Dump(errors);
  EXPECT_TRUE(has("command entries must be strings", "command =")) << Dump(errors);
  EXPECT_TRUE(has("timeout must be from", "timeout =")) << Dump(errors);
  EXPECT_TRUE(has("create only applies to fifo exports", "create =")) << Dump(errors);

  const std::string missing = WithExport("name = \"m\"\nkind = \"exec\"\nallow = [\"x\"]\n");
  errors = MustFail(missing);
  ASSERT_EQ(errors.size(), 1u) << Dump(errors);
  EXPECT_NE(errors[0].message.find("missing required key \"command\""), std::string::npos);
  errors = MustFail(WithExport("name = \"e\"\nkind = \"exec\"\ncommand = []\nallow = [\"x\"]\n"));
  ASSERT_EQ(errors.size(), 1u) << Dump(errors);
  EXPECT_NE(errors[0].message.find("command must not be empty"), std::string::npos);

  // command and timeout belong to exec exports only.
  const std::string fifo = WithExport(R"(name = "f"
kind = "fifo"
access = "read"
path = "/f"
command = ["/bin/true"]
timeout = 5
allow = ["x"]
)");
  errors = MustFail(fifo);
  ASSERT_EQ(errors.size(), 2u) << Dump(errors);
  EXPECT_NE(errors[0].message.find("command only applies to exec exports"), std::string::npos);
  EXPECT_EQ(errors[0].line, LineOf(fifo, "command ="));
}

TEST(ParseGatewayConfig, RejectsCreateAndModeForUnix) {
  const std::string text = WithExport(R"(name = "u"
kind = "unix"
path = "/u"
create = true
mode = "0600"
allow = ["x"]
)");
  std::vector<ConfigError> errors = MustFail(text);
  ASSERT_EQ(errors.size(), 2u) << Dump(errors);
  EXPECT_EQ(errors[0].line, LineOf(text, "create ="));
  EXPECT_NE(errors[0].message.find("create only applies to fifo exports"), std::string::npos);
  EXPECT_EQ(errors[1].line, LineOf(text, "mode ="));
}

TEST(ParseGatewayConfig, ValidatesMode) {
  const std::string base =
      "name = \"f\"\nkind = \"fifo\"\naccess = \"read\"\npath = \"/f\"\n"
      "allow = [\"x\"]\n";
  for (const char* bad : {"\"0999\"", "\"01777\"", "\"rw-r--r--\"", "\"\"", "640", "0o1777"}) {
    const std::string text = WithExport(base + "mode = " + bad + "\n");
    std::vector<ConfigError> errors = MustFail(text);
    ASSERT_EQ(errors.size(), 1u) << bad << "\n" << Dump(errors);
    EXPECT_EQ(errors[0].line, LineOf(text, "mode =")) << bad;
  }
  EXPECT_EQ(MustParse(WithExport(base + "mode = \"644\"\n")).exports[0].mode, 0644u);
  EXPECT_EQ(MustParse(WithExport(base + "mode = \"0777\"\n")).exports[0].mode, 0777u);
}

TEST(ParseGatewayConfig, ValidatesMaxClientsAndWorkers) {
  const std::string bad_clients = WithExport(
      "name = \"f\"\nkind = \"fifo\"\naccess = \"read\"\npath = \"/f\"\nallow = [\"x\"]\n"
      "max_clients = -1\n");
  ExpectOneError(bad_clients, LineOf(bad_clients, "max_clients"), "max_clients must be from 0");

  const std::string bad_workers = std::string(kGatewayHeader) + "workers = 257\n";
  ExpectOneError(bad_workers, LineOf(bad_workers, "workers"),
                 "gateway: workers must be from 0 to 256, not 257");
  EXPECT_EQ(MustParse(std::string(kGatewayHeader) + "workers = 256\n").workers, 256u);
}

TEST(ParseGatewayConfig, SeqpacketExportsCarryMessagesOfABoundedSize) {
  const std::string base = "name = \"ev\"\nkind = \"unix\"\npath = \"/s\"\nallow = [\"x\"]\n";
  GatewayConfig plain = MustParse(WithExport(base));
  EXPECT_EQ(plain.exports[0].socket_type, SocketType::kStream);
  GatewayConfig messages = MustParse(WithExport(base + "socket = \"seqpacket\"\n"));
  EXPECT_EQ(messages.exports[0].socket_type, SocketType::kSeqpacket);
  EXPECT_EQ(messages.exports[0].max_message_size, 65536u);
  EXPECT_EQ(MustParse(WithExport(base + "socket = \"seqpacket\"\nmax_message_size = \"1M\"\n"))
                .exports[0]
                .max_message_size,
            1u << 20);

  const std::string unknown = WithExport(base + "socket = \"dgram\"\n");
  ExpectOneError(unknown, LineOf(unknown, "socket"),
                 "unknown socket \"dgram\" (expected stream or seqpacket)");
  const std::string on_fifo = WithExport(
      "name = \"f\"\nkind = \"fifo\"\naccess = \"read\"\npath = \"/f\"\nallow = [\"x\"]\n"
      "socket = \"seqpacket\"\n");
  ExpectOneError(on_fifo, LineOf(on_fifo, "socket"), "socket only applies to unix exports");
  const std::string without = WithExport(base + "max_message_size = 100\n");
  ExpectOneError(without, LineOf(without, "max_message_size"),
                 "max_message_size only applies to socket = \"seqpacket\" exports");
  const std::string too_big =
      WithExport(base + "socket = \"seqpacket\"\nmax_message_size = \"2M\"\n");
  ExpectOneError(too_big, LineOf(too_big, "max_message_size"), "max_message_size must be from 1");
  // A message is held whole by its receiver: it must fit one stream's window.
  const std::string past_window = std::string(kGatewayHeader) +
                                  "[limits]\nmax_replay_bytes_per_stream = \"64K\"\n[[export]]\n" +
                                  base + "socket = \"seqpacket\"\nmax_message_size = \"128K\"\n";
  ExpectOneError(past_window, LineOf(past_window, "max_message_size"),
                 "max_message_size must be from 1");
}

// The gateway binds listen addresses without resolving names (gateway/listeners.cc), so a
// name must fail the check, not the startup that --check-config vouched for.
TEST(ParseGatewayConfig, RefusesHostNamesInListen) {
  const std::string text = std::string(kGatewayHeader) +
                           "listen = [\"localhost:7445\", \"127.0.0.1:1\", \"gw.example.net\"]\n";
  std::vector<ConfigError> errors = MustFail(text);
  ASSERT_EQ(errors.size(), 2u) << Dump(errors);
  for (const ConfigError& e : errors) {
    EXPECT_EQ(e.line, LineOf(text, "listen"));
    EXPECT_NE(e.message.find("must be an IP address"), std::string::npos) << e.message;
  }
  EXPECT_NE(errors[0].message.find("\"localhost:7445\""), std::string::npos);
  EXPECT_NE(errors[1].message.find("\"gw.example.net\""), std::string::npos);
}

TEST(ParseGatewayConfig, RecordsTheLineOfEachGatewayKey) {
  const std::string text = std::string(kGatewayHeader) + "crl = \"x.crl\"\n";
  GatewayConfig config = MustParse(text);
  EXPECT_EQ(config.gateway_key_lines.at("cert"), LineOf(text, "cert"));
  EXPECT_EQ(config.gateway_key_lines.at("crl"), LineOf(text, "crl"));
  EXPECT_EQ(config.gateway_key_lines.count("user"), 0u);
}

TEST(ParseGatewayConfig, ValidatesListenEntries) {
  const std::string text = R"([gateway]
listen = [
  "0.0.0.0:7445",
  "0.0.0.0:99999",
  3,
  "::1:80",
  "0.0.0.0:7445",
]
cert = "c"
key = "k"
client_ca = "ca"
)";
  std::vector<ConfigError> errors = MustFail(text);
  ASSERT_EQ(errors.size(), 4u) << Dump(errors);
  EXPECT_EQ(errors[0].line, 4);
  EXPECT_NE(errors[0].message.find("listen address \"0.0.0.0:99999\""), std::string::npos);
  EXPECT_EQ(errors[1].line, 5);
  EXPECT_EQ(errors[2].line, 6);
  EXPECT_NE(errors[2].message.find("brackets"), std::string::npos);
  EXPECT_EQ(errors[3].line, 7);
  EXPECT_NE(errors[3].message.find("repeated (first on line 3)"), std::string::npos);

  const std::string empty = std::string(kGatewayHeader) + "listen = []\n";
  ExpectOneError(empty, LineOf(empty, "listen"), "listen must not be empty");
}

TEST(ParseGatewayConfig, ValidatesAllow) {
  const std::string base = "name = \"f\"\nkind = \"unix\"\npath = \"/f\"\n";
  ExpectOneError(WithExport(base + "allow = []\n"), LineOf(WithExport(base), "[[export]]") + 4,
                 "allow must not be empty");
  const std::string text = WithExport(base + R"(allow = [
  "",
  2,
  " bob",
  "build-*",
  "*",
  "spiffe://example.org/ci/*",
]
)");
  std::vector<ConfigError> errors = MustFail(text);
  ASSERT_EQ(errors.size(), 4u) << Dump(errors);
  const int first = LineOf(text, "allow = [") + 1;
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(errors[static_cast<size_t>(i)].line, first + i) << Dump(errors);
  }
  EXPECT_NE(errors[3].message.find("'*' is only allowed"), std::string::npos);
}

TEST(ParseGatewayConfig, AcceptsTypedAllowEntries) {
  const std::string text = WithExport(R"(name = "f"
kind = "unix"
path = "/f"
allow = ["cn:alice", "DNS:a.example", "uri:spiffe://example.org/ci/*", "uri:urn:x:y", "ops"]
)");
  ConfigParseResult r = ParseGatewayConfig(text, "/");
  ASSERT_TRUE(r.config) << Dump(r.errors);
  EXPECT_EQ(r.config->exports[0].allow,
            (std::vector<std::string>{"cn:alice", "DNS:a.example", "uri:spiffe://example.org/ci/*",
                                      "uri:urn:x:y", "ops"}));
}

TEST(ParseGatewayConfig, RefusesUnknownIdentityTypesAndDotSegmentsWithTheirLine) {
  const std::string text = WithExport(R"(name = "f"
kind = "unix"
path = "/f"
allow = [
  "cn:alice",
  "san:alice",
  "urn:example:ci",
  "cn:team/*",
  "spiffe://example.org/ci/%2e%2e/admin",
  "uri:",
]
)");
  std::vector<ConfigError> errors = MustFail(text);
  ASSERT_EQ(errors.size(), 5u) << Dump(errors);
  const int first = LineOf(text, "\"san:alice\"");
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(errors[static_cast<size_t>(i)].line, first + i) << Dump(errors);
  }
  EXPECT_NE(errors[0].message.find("unknown identity type \"san\""), std::string::npos);
  EXPECT_NE(errors[0].message.find("cn:, dns: and uri:"), std::string::npos);
  EXPECT_NE(errors[1].message.find("uri:urn:example:ci"), std::string::npos);
  EXPECT_NE(errors[2].message.find("URI identities only"), std::string::npos);
  EXPECT_NE(errors[3].message.find("dot segment"), std::string::npos);
  EXPECT_NE(errors[4].message.find("empty"), std::string::npos);
}

TEST(ParseGatewayConfig, RequiresAllowBecauseThereIsNoDefaultAccess) {
  const std::string text = WithExport("name = \"f\"\nkind = \"unix\"\npath = \"/f\"\n");
  ExpectOneError(text, LineOf(text, "[[export]]"), "there is no default access");
}

TEST(ParseGatewayConfig, ReportsEveryErrorSortedByLine) {
  const std::string text = R"([gateway]
cert = "c"
key = 5
client_ca = "ca"
workers = -1

[[export]]
name = "logs"
kind = "fifo"
access = "rw"
path = "/run/logs"
allow = ["x"]

[[export]]
name = "logs"
kind = "pipe"
path = "/run/x"
alow = ["x"]
)";
  std::vector<ConfigError> errors = MustFail(text);
  const std::string all = Dump(errors);
  ASSERT_EQ(errors.size(), 7u) << all;
  EXPECT_EQ(errors[0].line, 3);   // key type
  EXPECT_EQ(errors[1].line, 5);   // workers range
  EXPECT_EQ(errors[2].line, 10);  // access "rw"
  EXPECT_EQ(errors[3].line, 14);  // duplicate name
  EXPECT_EQ(errors[4].line, 14);  // missing allow
  EXPECT_EQ(errors[5].line, 16);  // kind "pipe"
  EXPECT_EQ(errors[6].line, 18);  // unknown key "alow"
  for (size_t i = 1; i < errors.size(); ++i) {
    EXPECT_LE(errors[i - 1].line, errors[i].line);
  }
}

TEST(ParseGatewayConfig, RejectsNulInPaths) {
  const std::string text = std::string(R"([gateway]
cert = "a\u0000b"
key = "k"
client_ca = "ca"
)");
  ExpectOneError(text, 2, "NUL");
}

TEST(FormatConfigErrors, PrefixesFileAndLine) {
  EXPECT_EQ(FormatConfigErrors("/etc/x.toml",
                               {{12,
                                 "export \"logs\": unknown access \"rw\" (expected read or "
                                 "write)"},
                                {0, "cannot open: No such file or directory"}}),
            "/etc/x.toml:12: export \"logs\": unknown access \"rw\" (expected read or write)\n"
            "/etc/x.toml: cannot open: No such file or directory\n");
}

TEST(ExportNames, NameKindsAndAccesses) {
  EXPECT_STREQ(ExportKindName(ExportKind::kFifo), "fifo");
  EXPECT_STREQ(ExportKindName(ExportKind::kUnix), "unix");
  EXPECT_STREQ(AccessName(Access::kRead), "read");
  EXPECT_STREQ(AccessName(Access::kWrite), "write");
  EXPECT_STREQ(AccessName(Access::kDuplex), "duplex");
}

class LoadGatewayConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char templ[] = "/tmp/pipegate-config-test.XXXXXX";
    ASSERT_NE(mkdtemp(templ), nullptr);
    dir_ = templ;
  }
  void TearDown() override {
    for (const std::string& file : files_) {
      unlink(file.c_str());
    }
    rmdir(dir_.c_str());
  }
  std::string Write(const std::string& name, std::string_view text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    files_.push_back(path);
    return path;
  }

  std::string dir_;
  std::vector<std::string> files_;
};

TEST_F(LoadGatewayConfigTest, ResolvesAgainstTheFilesDirectory) {
  const std::string path = Write("gw.toml", R"([gateway]
cert = "gw.crt"
key = "gw.key"
client_ca = "ca.crt"

[[export]]
name = "logs"
kind = "fifo"
access = "read"
path = "logs.fifo"
allow = ["*"]
)");
  ConfigParseResult result = LoadGatewayConfig(path);
  ASSERT_TRUE(result.config.has_value()) << Dump(result.errors);
  EXPECT_EQ(result.config->cert, dir_ + "/gw.crt");
  EXPECT_EQ(result.config->exports[0].path, dir_ + "/logs.fifo");
}

TEST_F(LoadGatewayConfigTest, ReportsUnreadableFileOnLineZero) {
  ConfigParseResult result = LoadGatewayConfig(dir_ + "/missing.toml");
  EXPECT_FALSE(result.config.has_value());
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].line, 0);
  EXPECT_NE(result.errors[0].message.find("cannot open"), std::string::npos);

  ConfigParseResult dir_result = LoadGatewayConfig(dir_);
  ASSERT_EQ(dir_result.errors.size(), 1u);
  EXPECT_EQ(dir_result.errors[0].line, 0);
}

TEST_F(LoadGatewayConfigTest, ReportsSyntaxErrorsFromFile) {
  const std::string path = Write("bad.toml", "[gateway]\ncert = \"unterminated\n");
  ConfigParseResult result = LoadGatewayConfig(path);
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].line, 2);
  EXPECT_EQ(FormatConfigErrors(path, result.errors).rfind(path + ":2: syntax error", 0), 0u);
}

// ---- toml++ 3.3.0 on non-ASCII input (src/toml.h) ----

// toml++ 3.3.0 reached __builtin_unreachable() on these (upstream #190, #295): undefined
// behaviour, which the sanitizer build turns into a failure. Each must be an ordinary error.
TEST(ParseGatewayConfig, NonAsciiWhereTomlLooksForWhitespaceIsASyntaxError) {
  const std::string inputs[] = {
      "gateway = \xcb\x9az\nprrt \nt = ",  // The first fuzzer crasher (U+02DA).
      "a = 5\"\xce\xb0\"\n",               // A string glued to a number.
      "a = 0x'\xce\xb0'\n",
      "a = [1.690.\"0.\xcf\xa7++n\"]\n",
      "a = {b=1\"\xcb\x9a\"}\n",
      "a = 1979-05-27\"\xcb\x9a\"\n",
      "a = \xef\xb9\xbf\n",  // U+FE7F, the other end of the range.
  };
  for (const std::string& text : inputs) {
    ConfigParseResult result = ParseGatewayConfig(text, "/etc/pipegate");
    EXPECT_FALSE(result.config.has_value()) << text;
    ASSERT_FALSE(result.errors.empty()) << text;
    EXPECT_NE(result.errors[0].message.find("syntax error"), std::string::npos)
        << Dump(result.errors);
  }
  // #190: valid TOML (the string is "\u00a7"), read correctly instead of by luck.
  ConfigParseResult r = ParseGatewayConfig(
      std::string(kGatewayHeader) + "workers = 1\nx = \"\"\"\\\n  \xc2\xa7\"\"\"\n",
      "/etc/pipegate");
  ASSERT_EQ(r.errors.size(), 1u) << Dump(r.errors);
  EXPECT_NE(r.errors[0].message.find("unknown key \"x\""), std::string::npos) << Dump(r.errors);
}

TEST(ParseGatewayConfig, NonAsciiInStringsAndCommentsIsFine) {
  GatewayConfig c = MustParse(std::string(kGatewayHeader) +
                              "# Gr\xc3\xbc\xc3\x9f"
                              "e \xcb\x9a\n\n[[export]]\nname = \"x\"\n"
                              "kind = \"fifo\"\naccess = \"read\"\n"
                              "path = \"/run/\xc3\xa9\xcb\x9a.fifo\"\nallow = [\"*\"]\n");
  ASSERT_EQ(c.exports.size(), 1u);
  EXPECT_EQ(c.exports[0].path, "/run/\xc3\xa9\xcb\x9a.fifo");
}

// Identity mapping: connect_as = "user[:group]", or [[export.map]] entries matched in order.
constexpr std::string_view kUnixExport = R"(name = "db"
kind = "unix"
path = "/run/pg.sock"
allow = ["*"]
)";

TEST(ParseGatewayConfig, ReadsConnectAsAsOneEntryForAnyone) {
  GatewayConfig c =
      MustParse(WithExport(std::string(kUnixExport) + "connect_as = \"postgres:ssl-cert\"\n"));
  ASSERT_EQ(c.exports.size(), 1u);
  ASSERT_EQ(c.exports[0].identity_map.size(), 1u);
  const IdentityMapping& m = c.exports[0].identity_map[0];
  EXPECT_EQ(m.identity, "*");
  EXPECT_EQ(m.user, "postgres");
  EXPECT_EQ(m.group, "ssl-cert");
  EXPECT_FALSE(m.resolved);  // Accounts are the gateway's to resolve, not the parser's.
}

TEST(ParseGatewayConfig, ReadsMapEntriesInOrder) {
  const std::string text = WithExport(std::string(kUnixExport) +
                                      "[[export.map]]\nidentity = \"uri:spiffe://x/ci/*\"\n"
                                      "user = \"ci\"\n"
                                      "[[export.map]]\nidentity = \"alice\"\nuser = \"1001\"\n"
                                      "group = \"100\"\n");
  GatewayConfig c = MustParse(text);
  ASSERT_EQ(c.exports[0].identity_map.size(), 2u);
  EXPECT_EQ(c.exports[0].identity_map[0].identity, "uri:spiffe://x/ci/*");
  EXPECT_EQ(c.exports[0].identity_map[0].group, "");
  EXPECT_EQ(c.exports[0].identity_map[1].user, "1001");
  EXPECT_EQ(c.exports[0].identity_map[1].line, LineOf(text, "identity = \"alice\"") - 1);
}

TEST(ParseGatewayConfig, RefusesBadIdentityMaps) {
  const std::string both = WithExport(std::string(kUnixExport) + "connect_as = \"pg\"\n" +
                                      "[[export.map]]\nidentity = \"a\"\nuser = \"pg\"\n");
  ExpectOneError(both, LineOf(both, "connect_as"), "exclude each other");
  const std::string bad_user = WithExport(std::string(kUnixExport) + "connect_as = \"pg;rm\"\n");
  ExpectOneError(bad_user, LineOf(bad_user, "connect_as"), "is not \"user\" or \"user:group\"");
  const std::string bad_identity = WithExport(std::string(kUnixExport) +
                                              "[[export.map]]\nidentity = \"urn:x\"\n"
                                              "user = \"pg\"\n");
  ExpectOneError(bad_identity, LineOf(bad_identity, "[[export.map]]"), "map entry #1");
  const std::string no_user =
      WithExport(std::string(kUnixExport) + "[[export.map]]\nidentity = \"alice\"\n");
  ExpectOneError(no_user, LineOf(no_user, "[[export.map]]"), "missing required key \"user\"");
  const std::string typo = WithExport(std::string(kUnixExport) +
                                      "[[export.map]]\nidentity = \"alice\"\nuser = \"pg\"\n"
                                      "gruop = \"pg\"\n");
  ExpectOneError(typo, LineOf(typo, "gruop"), "unknown key \"gruop\"");
  const std::string not_tables = WithExport(std::string(kUnixExport) + "map = [\"alice\"]\n");
  ExpectOneError(not_tables, LineOf(not_tables, "map ="), "array of tables");
}

TEST(ParseGatewayConfig, RefusesBadMapEntryValues) {
  const std::string entry = std::string(kUnixExport) + "[[export.map]]\n";
  const std::string spaced = WithExport(entry + "identity = \" alice\"\nuser = \"pg\"\n");
  ExpectOneError(spaced, LineOf(spaced, "[[export.map]]"),
                 "is empty or has surrounding white space or a NUL character");
  const std::string empty = WithExport(entry + "identity = \"\"\nuser = \"pg\"\n");
  ExpectOneError(empty, LineOf(empty, "[[export.map]]"), "map entry #1: identity \"\" is empty");
  const std::string user = WithExport(entry + "identity = \"alice\"\nuser = \"p g\"\n");
  ExpectOneError(user, LineOf(user, "[[export.map]]"),
                 "user \"p g\" is not a user name or a numeric id");
  const std::string group =
      WithExport(entry + "identity = \"alice\"\nuser = \"pg\"\ngroup = \"a:b\"\n");
  ExpectOneError(group, LineOf(group, "[[export.map]]"),
                 "group \"a:b\" is not a group name or a numeric id");
  const std::string second = WithExport(entry + "identity = \"alice\"\nuser = \"pg\"\n" +
                                        "[[export.map]]\nidentity = \"bob\"\nuser = 5\n");
  std::vector<ConfigError> errors = MustFail(second);
  ASSERT_EQ(errors.size(), 1u) << Dump(errors);
  EXPECT_NE(errors[0].message.find("map entry #2"), std::string::npos) << Dump(errors);
  const std::string not_string = WithExport(std::string(kUnixExport) + "connect_as = 1000\n");
  ExpectOneError(not_string, LineOf(not_string, "connect_as"), "connect_as");
  const std::string bad_group = WithExport(std::string(kUnixExport) + "connect_as = \"pg:\"\n");
  ExpectOneError(bad_group, LineOf(bad_group, "connect_as"), "is not \"user\" or \"user:group\"");
  GatewayConfig ok =
      MustParse(WithExport(std::string(kUnixExport) + "connect_as = \"1000:1000\"\n"));
  ASSERT_EQ(ok.exports[0].identity_map.size(), 1u);
  EXPECT_EQ(ok.exports[0].identity_map[0].group, "1000");
}

TEST(ParseGatewayConfig, ExecExportsRefuseOtherKindsKeys) {
  const std::string base =
      "name = \"run\"\nkind = \"exec\"\ncommand = [\"/bin/cat\"]\n"
      "allow = [\"x\"]\n";
  const std::string socket = WithExport(base + "socket = \"seqpacket\"\n");
  ExpectOneError(socket, LineOf(socket, "socket"), "socket only applies to unix exports");
  const std::string fanout = WithExport(base + "fanout = true\n");
  ExpectOneError(fanout, LineOf(fanout, "fanout"), "fanout only applies to a fifo export");
  const std::string nul = WithExport(
      "name = \"run\"\nkind = \"exec\"\ncommand = [\"/bin/echo\", \"a\\u0000b\"]\n"
      "allow = [\"x\"]\n");
  ExpectOneError(nul, LineOf(nul, "command"), "command entries must not contain a NUL");
  GatewayConfig mapped = MustParse(WithExport(base + "connect_as = \"nobody\"\n"));
  EXPECT_EQ(mapped.exports[0].identity_map.size(), 1u);
  EXPECT_EQ(MustParse(WithExport(base + "timeout = 0\n")).exports[0].timeout_ms, 0u);
}

}  // namespace
}  // namespace pipegate

namespace pipegate {
namespace {

std::string ReadExample() {
  std::ifstream in(std::string(PIPEGATE_SOURCE_DIR) + "/deploy/pipegated.toml.example");
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The example config is what README.md points operators to, and says it explains every key.
TEST(ExampleConfig, ParsesAsItStands) {
  const std::string text = ReadExample();
  ASSERT_FALSE(text.empty());
  ConfigParseResult parsed = ParseGatewayConfig(text, "/etc/pipegate");
  std::string errors;
  for (const ConfigError& e : parsed.errors)
    errors += std::to_string(e.line) + ": " + e.message + "\n";
  EXPECT_TRUE(parsed.config.has_value()) << errors;
}

TEST(ExampleConfig, ExplainsEveryKey) {
  const std::string text = ReadExample();
  ASSERT_FALSE(text.empty());
  for (const std::string& qualified : GatewayConfigKeys()) {
    const std::string key = qualified.substr(qualified.find('.') + 1);
    // Set or shown commented out (`# key = ...`), or described in a key list (`#   key   ...`).
    const std::regex mentioned("(^|\\n)(# ?)?" + key + " *=|(^|\\n)#   " + key + "  ");
    EXPECT_TRUE(std::regex_search(text, mentioned))
        << qualified << " is not explained in deploy/pipegated.toml.example";
  }
}

}  // namespace
}  // namespace pipegate

namespace pipegate {
namespace {

TEST(ClientDefaults, RelativePathsResolveAgainstTheFilesDirectory) {
  char dir_template[] = "/tmp/pipegate-client-config-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const std::string path = dir + "/config.toml";
  {
    std::ofstream out(path);
    out << "cert = \"alice.crt\"\nkey = \"keys/alice.key\"\nca = \"/etc/ca.crt\"\n";
  }
  Result<ClientDefaults> d = LoadClientDefaults(path);
  ::unlink(path.c_str());
  ::rmdir(dir.c_str());
  ASSERT_TRUE(d) << d.error().message();
  EXPECT_EQ(d->cert, dir + "/alice.crt");
  EXPECT_EQ(d->key, dir + "/keys/alice.key");
  EXPECT_EQ(d->ca, "/etc/ca.crt");
}

// ---- Fan-out exports (fanout, fanout_lag, fanout_policy) ----

constexpr std::string_view kFifoReadBody =
    "name = \"logs\"\nkind = \"fifo\"\naccess = \"read\"\npath = \"/f\"\nallow = [\"x\"]\n";

TEST(ParseGatewayConfig, FanoutDefaults) {
  const ExportConfig plain = MustParse(WithExport(kFifoReadBody)).exports[0];
  EXPECT_FALSE(plain.fanout);
  EXPECT_EQ(plain.max_clients, 1u);
  const ExportConfig e =
      MustParse(WithExport(std::string(kFifoReadBody) + "fanout = true\n")).exports[0];
  EXPECT_TRUE(e.fanout);
  EXPECT_EQ(e.fanout_lag, uint64_t{1} << 20);
  EXPECT_EQ(e.fanout_policy, FanoutPolicy::kDrop);
  EXPECT_EQ(e.max_clients, 64u);  // A finite cap on readers by default.
}

TEST(ParseGatewayConfig, FanoutReadsLagPolicyAndMaxClients) {
  const ExportConfig e = MustParse(WithExport(std::string(kFifoReadBody) +
                                              "fanout = true\nfanout_lag = \"4M\"\n"
                                              "fanout_policy = \"block\"\nmax_clients = 8\n"))
                             .exports[0];
  EXPECT_EQ(e.fanout_lag, uint64_t{4} << 20);
  EXPECT_EQ(e.fanout_policy, FanoutPolicy::kBlock);
  EXPECT_EQ(e.max_clients, 8u);
  EXPECT_EQ(MustParse(WithExport(std::string(kFifoReadBody) +
                                 "fanout = true\nfanout_policy = \"drop\"\n"))
                .exports[0]
                .fanout_policy,
            FanoutPolicy::kDrop);
}

TEST(ParseGatewayConfig, FanoutOnlyForFifoRead) {
  const std::string write = WithExport(
      "name = \"cmd\"\nkind = \"fifo\"\naccess = \"write\"\npath = \"/f\"\nallow = [\"x\"]\n"
      "fanout = true\n");
  ExpectOneError(write, LineOf(write, "fanout ="),
                 "export \"cmd\": fanout only applies to a fifo export with access = \"read\"");
  const std::string unix_export =
      WithExport("name = \"s\"\nkind = \"unix\"\npath = \"/s\"\nallow = [\"x\"]\nfanout = true\n");
  ExpectOneError(unix_export, LineOf(unix_export, "fanout ="), "fanout only applies to a fifo");
  // Explicitly off is fine anywhere.
  EXPECT_FALSE(MustParse(WithExport("name = \"s\"\nkind = \"unix\"\npath = \"/s\"\nallow = "
                                    "[\"x\"]\nfanout = false\n"))
                   .exports[0]
                   .fanout);
}

TEST(ParseGatewayConfig, FanoutValidatesItsKeys) {
  const std::string base = std::string(kFifoReadBody) + "fanout = true\n";
  const std::string small = WithExport(base + "fanout_lag = 1000\n");
  ExpectOneError(small, LineOf(small, "fanout_lag"),
                 "export \"logs\": fanout_lag must be from 65536 to 67108864 bytes, not 1000");
  const std::string big = WithExport(base + "fanout_lag = \"1G\"\n");
  ExpectOneError(big, LineOf(big, "fanout_lag"), "fanout_lag must be from 65536");
  const std::string policy = WithExport(base + "fanout_policy = \"wait\"\n");
  ExpectOneError(policy, LineOf(policy, "fanout_policy"),
                 "export \"logs\": unknown fanout_policy \"wait\" (expected drop or block)");
  const std::string type = WithExport(std::string(kFifoReadBody) + "fanout = \"yes\"\n");
  ExpectOneError(type, LineOf(type, "fanout ="), "fanout");
  const std::string unlimited = WithExport(base + "max_clients = 0\n");
  ExpectOneError(unlimited, LineOf(unlimited, "max_clients"),
                 "max_clients must be from 1 to 1024 for a fanout export");
  const std::string many = WithExport(base + "max_clients = 1025\n");
  ExpectOneError(many, LineOf(many, "max_clients"), "max_clients must be from 1 to 1024");
}

TEST(ParseGatewayConfig, FanoutExcludesIdentityMapping) {
  const std::string base = std::string(kFifoReadBody) + "fanout = true\n";
  const std::string as = WithExport(base + "connect_as = \"nobody\"\n");
  ExpectOneError(as, LineOf(as, "connect_as"),
                 "export \"logs\": connect_as does not apply to a fanout export");
  const std::string map =
      WithExport(base + "[[export.map]]\nidentity = \"*\"\nuser = \"nobody\"\n");
  ExpectOneError(map, LineOf(map, "[[export.map]]"),
                 "[[export.map]] does not apply to a fanout export");
}

TEST(ParseGatewayConfig, FanoutKeysNeedFanout) {
  const std::string lag = WithExport(std::string(kFifoReadBody) + "fanout_lag = \"2M\"\n");
  ExpectOneError(lag, LineOf(lag, "fanout_lag"),
                 "export \"logs\": fanout_lag only applies with fanout = true");
  const std::string policy =
      WithExport(std::string(kFifoReadBody) + "fanout = false\nfanout_policy = \"block\"\n");
  ExpectOneError(policy, LineOf(policy, "fanout_policy"),
                 "fanout_policy only applies with fanout = true");
}

}  // namespace
}  // namespace pipegate
