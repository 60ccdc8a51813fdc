// The security settings of the gateway configuration: the [gateway] policy keys, the
// [limits] table, per-export FIFO owners, and the refusal of files anyone may change.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <string_view>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "pipegate/config.h"
#include "pipegate/local_path.h"

#include "privilege.h"
#include "support/files.h"

namespace pipegate {
namespace {

using ::testing::HasSubstr;

constexpr std::string_view kHeader = R"([gateway]
cert = "/c/gw.crt"
key = "/c/gw.key"
client_ca = "/c/ca.crt"
)";

constexpr std::string_view kExport = R"(
[[export]]
name = "logs"
kind = "fifo"
access = "read"
path = "/run/logs.fifo"
allow = ["alice"]
)";

std::string Dump(const std::vector<ConfigError>& errors) {
  return FormatConfigErrors("test.toml", errors);
}

GatewayConfig MustParse(const std::string& text) {
  ConfigParseResult result = ParseGatewayConfig(text, "/etc/pipegate");
  EXPECT_TRUE(result.errors.empty()) << Dump(result.errors);
  return result.config.value_or(GatewayConfig{});
}

// The one error @p text has.
std::string OneError(const std::string& text) {
  ConfigParseResult result = ParseGatewayConfig(text, "/etc/pipegate");
  EXPECT_FALSE(result.config.has_value());
  EXPECT_EQ(result.errors.size(), 1u) << Dump(result.errors);
  return result.errors.empty() ? "" : result.errors[0].message;
}

TEST(SecurityConfig, DefaultsAreStrict) {
  GatewayConfig c = MustParse(std::string(kHeader) + std::string(kExport));
  EXPECT_EQ(c.tls_min_version, TlsMinVersion::kTls13);
  EXPECT_TRUE(c.crl.empty());
  EXPECT_FALSE(c.hide_existence);
  EXPECT_TRUE(c.reload_revokes);
  EXPECT_TRUE(c.user.empty());
  EXPECT_TRUE(c.group.empty());
  const Limits& l = c.limits;
  EXPECT_EQ(l.handshake_timeout_ms, 10000u);
  EXPECT_EQ(l.idle_timeout_ms, 0u);
  EXPECT_EQ(l.max_connections, 1024u);
  EXPECT_EQ(l.max_connections_per_source, 128u);
  EXPECT_EQ(l.max_streams_per_connection, 16384u);
  EXPECT_EQ(l.max_bytes_in_flight_per_connection, 4u << 20);
  EXPECT_EQ(l.max_bytes_in_flight, uint64_t{4} << 30);
  EXPECT_EQ(l.max_frame_size, 65536u);
  EXPECT_EQ(l.max_name_length, 128u);
  EXPECT_EQ(l.ConnectionsByMemory(), 1024u);  // The connection limit rules by default.
}

TEST(SecurityConfig, ParsesThePolicyKeys) {
  GatewayConfig c = MustParse(std::string(kHeader) + R"(crl = "crl.pem"
tls_min_version = "1.2"
hide_existence = true
reload_revokes = false
user = "pipegate"
group = "pipegate"
)" + std::string(kExport));
  EXPECT_EQ(c.crl, "/etc/pipegate/crl.pem");  // Relative paths resolve against the file.
  EXPECT_EQ(c.tls_min_version, TlsMinVersion::kTls12);
  EXPECT_TRUE(c.hide_existence);
  EXPECT_FALSE(c.reload_revokes);
  EXPECT_EQ(c.user, "pipegate");
  EXPECT_EQ(c.group, "pipegate");
}

TEST(SecurityConfig, RefusesBadPolicyValues) {
  EXPECT_THAT(OneError(std::string(kHeader) + "tls_min_version = \"1.1\"\n"),
              HasSubstr("tls_min_version must be \"1.3\" (the default) or \"1.2\""));
  EXPECT_THAT(OneError(std::string(kHeader) + "tls_min_version = 1.2\n"),
              HasSubstr("tls_min_version must be a string"));
  EXPECT_THAT(OneError(std::string(kHeader) + "hide_existence = \"yes\"\n"),
              HasSubstr("hide_existence must be a boolean"));
  EXPECT_THAT(OneError(std::string(kHeader) + "crl = \"\"\n"), HasSubstr("crl must not be empty"));
  EXPECT_THAT(OneError(std::string(kHeader) + "user = \"root; rm -rf /\"\n"),
              HasSubstr("is not a user or group name"));
  EXPECT_THAT(OneError(std::string(kHeader) + "group = \"-g\"\n"),
              HasSubstr("is not a user or group name"));
  EXPECT_THAT(OneError(std::string(kHeader) + "hide_existance = true\n"),
              HasSubstr("did you mean \"hide_existence\"?"));
}

TEST(SecurityConfig, ParsesLimits) {
  GatewayConfig c = MustParse(std::string(kHeader) + R"(
[limits]
handshake_timeout = 2.5
idle_timeout = 60
max_connections = 100
max_connections_per_source = 10
max_streams_per_connection = 8
max_bytes_in_flight_per_connection = "1M"
max_bytes_in_flight = "64MiB"
max_frame_size = 16384
max_name_length = 32
)" + std::string(kExport));
  const Limits& l = c.limits;
  EXPECT_EQ(l.handshake_timeout_ms, 2500u);
  EXPECT_EQ(l.idle_timeout_ms, 60000u);
  EXPECT_EQ(l.max_connections, 100u);
  EXPECT_EQ(l.max_connections_per_source, 10u);
  EXPECT_EQ(l.max_streams_per_connection, 8u);
  EXPECT_EQ(l.max_bytes_in_flight_per_connection, 1u << 20);
  EXPECT_EQ(l.max_bytes_in_flight, uint64_t{64} << 20);
  EXPECT_EQ(l.max_frame_size, 16384u);
  EXPECT_EQ(l.max_name_length, 32u);
  EXPECT_EQ(l.ConnectionsByMemory(), 64u);
}

TEST(SecurityConfig, IdleTimeoutZeroMeansNever) {
  GatewayConfig c =
      MustParse(std::string(kHeader) + "[limits]\nidle_timeout = 0\n" + std::string(kExport));
  EXPECT_EQ(c.limits.idle_timeout_ms, 0u);
}

TEST(SecurityConfig, RefusesLimitsOutOfRange) {
  const std::string h = std::string(kHeader) + "[limits]\n";
  EXPECT_THAT(OneError(h + "handshake_timeout = 0\n"),
              HasSubstr("handshake_timeout must be from 0.1 to 3600 seconds, not 0"));
  EXPECT_THAT(OneError(h + "handshake_timeout = \"10s\"\n"),
              HasSubstr("must be a number of seconds, not a string"));
  EXPECT_THAT(OneError(h + "idle_timeout = 0.5\n"), HasSubstr("(or 0 for never)"));
  EXPECT_THAT(OneError(h + "max_connections = 0\n"),
              HasSubstr("max_connections must be from 1 to 1000000, not 0"));
  EXPECT_THAT(OneError(h + "max_streams_per_connection = 100000\n"),
              HasSubstr("must be from 1 to 65536"));
  EXPECT_THAT(OneError(h + "max_frame_size = 1024\n"),
              HasSubstr("max_frame_size must be from 16384 to 1048568 bytes, not 1024"));
  EXPECT_THAT(OneError(h + "max_frame_size = \"2M\"\n"), HasSubstr("from 16384 to 1048568"));
  EXPECT_THAT(OneError(h + "max_name_length = 129\n"),
              HasSubstr("max_name_length must be from 1 to 128"));
  EXPECT_THAT(OneError(h + "max_bytes_in_flight_per_connection = \"16 apples\"\n"),
              HasSubstr("is not a size"));
  EXPECT_THAT(OneError(h + "max_bytes_in_flight_per_connection = \"16M\"\n"
                           "max_bytes_in_flight = \"8M\"\n"),
              HasSubstr("max_bytes_in_flight (8388608) must be at least "
                        "max_bytes_in_flight_per_connection (16777216)"));
  EXPECT_THAT(OneError(h + "max_conections = 5\n"), HasSubstr("did you mean \"max_connections\"?"));
  EXPECT_THAT(OneError(std::string(kHeader) + "max_connections = 5\n"),
              HasSubstr("it belongs under [limits]"));
  EXPECT_THAT(OneError(std::string(kHeader) + "limits = 5\n"), HasSubstr("unknown key \"limits\""));
}

TEST(SecurityConfig, PerSourceLimitNeverExceedsTheTotal) {
  GatewayConfig c = MustParse(std::string(kHeader) +
                              "[limits]\nmax_connections = 10\nmax_connections_per_source = 50\n" +
                              std::string(kExport));
  EXPECT_EQ(c.limits.max_connections_per_source, 10u);
}

TEST(SecurityConfig, FifoOwnerAndGroup) {
  GatewayConfig c = MustParse(std::string(kHeader) + R"(
[[export]]
name = "logs"
kind = "fifo"
access = "read"
path = "/run/logs.fifo"
create = true
mode = "0660"
owner = "app"
group = "1234"
allow = ["alice"]
)");
  ASSERT_EQ(c.exports.size(), 1u);
  EXPECT_EQ(c.exports[0].owner, "app");
  EXPECT_EQ(c.exports[0].group, "1234");

  EXPECT_THAT(OneError(std::string(kHeader) + R"(
[[export]]
name = "logs"
kind = "fifo"
access = "read"
path = "/run/logs.fifo"
owner = "app"
allow = ["alice"]
)"),
              HasSubstr("owner and group only apply to a FIFO the gateway creates"));
  EXPECT_THAT(OneError(std::string(kHeader) + R"(
[[export]]
name = "sock"
kind = "unix"
path = "/run/x.sock"
group = "app"
allow = ["alice"]
)"),
              HasSubstr("group only applies to fifo exports"));
}

// ---- Files anyone may change ----

class FilePermissions : public ::testing::Test {
 protected:
  std::string Make(const std::string& name, mode_t mode) {
    const std::string path = dir_.Join(name);
    EXPECT_TRUE(testing::WriteFile(path, std::string(kHeader) + std::string(kExport)));
    EXPECT_EQ(chmod(path.c_str(), mode), 0);
    return path;
  }
  testing::TempDir dir_;
};

TEST_F(FilePermissions, AcceptsPrivateAndReadableFiles) {
  EXPECT_TRUE(CheckFilePermissions(Make("a", 0600), "private key").ok());
  EXPECT_TRUE(CheckFilePermissions(Make("b", 0644), "certificate").ok());
  EXPECT_TRUE(CheckFilePermissions(Make("c", 0640), "certificate").ok());
  // Group-writable is as unsafe as world-writable (StrictModes): see local_path_test.cc.
  EXPECT_FALSE(CheckFilePermissions(Make("d", 0664), "certificate").ok());
}

TEST_F(FilePermissions, RefusesWorldWritableFiles) {
  const std::string path = Make("key.pem", 0646);
  Status st = CheckFilePermissions(path, "private key");
  EXPECT_EQ(st.code(), Code::kUsage);
  EXPECT_EQ(st.message(), "refusing to use private key '" + path +
                              "': it is world-writable (fix with: chmod o-w '" + path + "')");
}

TEST_F(FilePermissions, RefusesFilesInAWorldWritableDirectory) {
  const std::string sub = dir_.Join("open");
  ASSERT_EQ(mkdir(sub.c_str(), 0777), 0);
  ASSERT_EQ(chmod(sub.c_str(), 0777), 0);
  const std::string path = sub + "/ca.crt";
  ASSERT_TRUE(testing::WriteFile(path, "x"));
  ASSERT_EQ(chmod(path.c_str(), 0644), 0);
  EXPECT_THAT(CheckFilePermissions(path, "CA bundle").message(),
              HasSubstr("its directory '" + sub + "' is world-writable"));
  // The sticky bit (as on /tmp) stops others from replacing the file.
  ASSERT_EQ(chmod(sub.c_str(), 01777), 0);
  EXPECT_TRUE(CheckFilePermissions(path, "CA bundle").ok());
}

TEST_F(FilePermissions, MissingFileSaysSo) {
  EXPECT_EQ(CheckFilePermissions(dir_.Join("absent"), "CRL file").message(),
            "cannot use CRL file '" + dir_.Join("absent") + "': No such file or directory");
}

TEST_F(FilePermissions, LoadGatewayConfigRefusesAWorldWritableConfig) {
  const std::string path = Make("gw.toml", 0666);
  ConfigParseResult result = LoadGatewayConfig(path);
  EXPECT_FALSE(result.config.has_value());
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_THAT(result.errors[0].message,
              HasSubstr("refusing to use configuration file '" + path + "': it is world-writable"));
  ASSERT_EQ(chmod(path.c_str(), 0640), 0);
  EXPECT_TRUE(LoadGatewayConfig(path).config.has_value());
}

// ---- Accounts and FIFO ownership ----

TEST(Accounts, ResolvesNamesAndNumbers) {
  Result<Account> root = ResolveAccount("root", "");
  ASSERT_TRUE(root.has_value()) << root.error().message();
  EXPECT_EQ(root->uid, 0u);
  EXPECT_EQ(root->gid, 0u);  // The user's primary group.
  Result<Account> numeric = ResolveAccount("4242", "4343");
  ASSERT_TRUE(numeric.has_value());
  EXPECT_EQ(numeric->uid, 4242u);
  EXPECT_EQ(numeric->gid, 4343u);
  Result<Account> none = ResolveAccount("", "");
  ASSERT_TRUE(none.has_value());
  EXPECT_FALSE(none->uid.has_value());
  EXPECT_FALSE(none->gid.has_value());
}

TEST(Accounts, UnknownNamesAreUsageErrors) {
  Result<Account> user = ResolveAccount("no-such-user-pg", "");
  ASSERT_FALSE(user.has_value());
  EXPECT_EQ(user.error().code(), Code::kUsage);
  EXPECT_THAT(user.error().message(), HasSubstr("no such user 'no-such-user-pg'"));
  Result<Account> group = ResolveAccount("", "no-such-group-pg");
  ASSERT_FALSE(group.has_value());
  EXPECT_THAT(group.error().message(), HasSubstr("no such group 'no-such-group-pg'"));

  GatewayConfig config;
  config.exports.push_back(ExportConfig{});
  config.exports[0].name = "logs";
  config.exports[0].owner = "no-such-user-pg";
  EXPECT_THAT(CheckAccounts(config).message(), HasSubstr("export 'logs': no such user"));
}

TEST(Accounts, NoUserMeansNoDrop) {
  GatewayConfig config;
  EXPECT_TRUE(DropPrivileges(config).ok());
}

TEST(Accounts, SetFifoModeAndOwnerSetsTheModeAndRefusesSymlinks) {
  testing::TempDir dir;
  const std::string fifo = dir.Join("f.fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  ASSERT_TRUE(SetFifoModeAndOwner(fifo, 0640, std::to_string(getuid()), "").ok());
  struct stat st {};
  ASSERT_EQ(lstat(fifo.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_uid, getuid());

  // A symlink swapped in for the FIFO is not followed: its target keeps its mode.
  const std::string target = dir.Join("target");
  ASSERT_TRUE(testing::WriteFile(target, "secret"));
  ASSERT_EQ(chmod(target.c_str(), 0600), 0);
  const std::string link = dir.Join("l.fifo");
  ASSERT_EQ(symlink(target.c_str(), link.c_str()), 0);
  EXPECT_FALSE(SetFifoModeAndOwner(link, 0666, "", "").ok());
  ASSERT_EQ(stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);

  // A regular file is not a FIFO.
  EXPECT_THAT(SetFifoModeAndOwner(target, 0666, "", "").message(),
              HasSubstr("is no longer the FIFO just made"));
}

}  // namespace
}  // namespace pipegate
