// Identity mapping's pure parts: which entry a client maps to, resolving accounts through the
// system databases (nobody and nogroup exist on every Debian system; root must be refused), and
// when the privileged helper is needed. Exec exports name the account only (PIPEGATE_USER).

#include "identity_map.h"

#include <pwd.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "exec_export.h"

namespace pipegate::gateway {
namespace {

PeerIdentity Peer(std::string cn) {
  PeerIdentity p;
  p.common_name = std::move(cn);
  return p;
}

IdentityMapping Entry(std::string identity, std::string user, std::string group = "") {
  IdentityMapping m;
  m.identity = std::move(identity);
  m.user = std::move(user);
  m.group = std::move(group);
  m.line = 7;
  return m;
}

ExportConfig Export(std::string name, std::vector<IdentityMapping> map,
                    ExportKind kind = ExportKind::kUnix) {
  ExportConfig e;
  e.name = std::move(name);
  e.kind = kind;
  e.path = "/run/" + e.name + ".sock";
  e.identity_map = std::move(map);
  return e;
}

uint32_t NobodyUid() {
  const passwd* pw = ::getpwnam("nobody");
  return pw != nullptr ? pw->pw_uid : 65534;
}

TEST(IdentityMapUnit, TheFirstMatchingResolvedEntryWins) {
  GatewayConfig config;
  config.exports.push_back(Export(
      "db", {Entry("alice", "nobody"), Entry("*", "nobody", "nogroup"), Entry("bob", "nobody")}));
  ASSERT_TRUE(ResolveIdentityMaps(config).empty());
  const ExportConfig& e = config.exports[0];
  std::optional<MappedAccount> alice = MapIdentity(e, Peer("alice"));
  ASSERT_TRUE(alice);
  EXPECT_EQ(alice->user, "nobody");
  EXPECT_EQ(alice->uid, NobodyUid());
  EXPECT_FALSE(alice->groups.empty());
  EXPECT_NE(std::find(alice->groups.begin(), alice->groups.end(), alice->gid), alice->groups.end());
  EXPECT_EQ(alice->Display(), "nobody (uid " + std::to_string(alice->uid) + ", gid " +
                                  std::to_string(alice->gid) + ")");
  // bob is caught by "*" first, with its explicit group.
  std::optional<MappedAccount> bob = MapIdentity(e, Peer("bob"));
  ASSERT_TRUE(bob);
  EXPECT_EQ(bob->gid, e.identity_map[1].gid);
  // An entry the loader could not resolve is never served.
  ExportConfig unresolved = Export("x", {Entry("alice", "nobody")});
  EXPECT_FALSE(MapIdentity(unresolved, Peer("alice")));
  // No entry matches: nullopt (the caller refuses with "access denied").
  ExportConfig only_alice = Export("y", {Entry("alice", "nobody")});
  GatewayConfig c2;
  c2.exports.push_back(only_alice);
  ASSERT_TRUE(ResolveIdentityMaps(c2).empty());
  EXPECT_FALSE(MapIdentity(c2.exports[0], Peer("carol")));
}

TEST(IdentityMapUnit, UnknownAccountsRootAndGrouplessIdsAreErrors) {
  GatewayConfig config;
  config.exports.push_back(Export("a", {Entry("*", "no-such-user-pipegate")}));
  config.exports.push_back(Export("b", {Entry("*", "root")}));
  config.exports.push_back(Export("c", {Entry("*", "nobody", "root")}));
  config.exports.push_back(Export("d", {Entry("*", "4123456")}));  // No passwd entry, no group.
  config.exports.push_back(Export("e", {Entry("*", "4123456", "4123456")}));
  std::vector<ConfigError> errors = ResolveIdentityMaps(config);
  ASSERT_EQ(errors.size(), 4u);
  for (const ConfigError& e : errors) EXPECT_EQ(e.line, 7);
  EXPECT_NE(errors[0].message.find("export 'a': identity map:"), std::string::npos);
  EXPECT_NE(errors[1].message.find("refusing to open as root"), std::string::npos);
  EXPECT_NE(errors[2].message.find("refusing to open as root"), std::string::npos);
  EXPECT_NE(errors[3].message.find("has no group; name one (user:group)"), std::string::npos);
  // A bare uid:gid without database entries resolves, with that group alone.
  const IdentityMapping& ids = config.exports[4].identity_map[0];
  EXPECT_TRUE(ids.resolved);
  EXPECT_EQ(ids.uid, 4123456u);
  EXPECT_EQ(ids.groups, std::vector<uint32_t>{4123456u});
}

TEST(IdentityMapUnit, OnlyForeignAccountsOfNonExecExportsNeedTheHelper) {
  GatewayConfig config;
  config.exports.push_back(Export("db", {Entry("*", "4123456", "4123456")}));
  config.exports.push_back(Export("run", {Entry("*", "4123457", "4123457")}, ExportKind::kExec));
  ASSERT_TRUE(ResolveIdentityMaps(config).empty());
  const MappedAccount own = GatewayAccount(config);
  EXPECT_EQ(own.uid, ::geteuid());
  EXPECT_EQ(own.gid, ::getegid());
  EXPECT_FALSE(NeedsHelper(own, own));
  EXPECT_TRUE(AnyMappingNeedsHelper(config));
  EXPECT_TRUE(CheckMappingsPossible(config, /*helper_available=*/true, "").empty());
  std::vector<ConfigError> errors = CheckMappingsPossible(config, false, "not root");
  ASSERT_EQ(errors.size(), 1u);  // The exec export's map only names its account.
  EXPECT_NE(errors[0].message.find("export 'db': cannot open as user '4123456'"), std::string::npos)
      << errors[0].message;
  EXPECT_NE(errors[0].message.find("not root"), std::string::npos);
  config.exports.erase(config.exports.begin());
  EXPECT_FALSE(AnyMappingNeedsHelper(config));
  // The gateway's configured user is its own account.
  GatewayConfig as_nobody;
  as_nobody.user = "nobody";
  EXPECT_EQ(GatewayAccount(as_nobody).uid, NobodyUid());
  EXPECT_EQ(GatewayAccount(as_nobody).user, "nobody");
}

TEST(IdentityMapUnit, ExecEnvironmentNamesTheMappedUserOnlyWhenMapped) {
  ExportConfig e = Export("run", {}, ExportKind::kExec);
  PeerIdentity peer = Peer(std::string("al\0ce", 5));
  std::vector<std::string> plain = ExecEnvironment(e, peer, "127.0.0.1:5000", std::nullopt);
  EXPECT_EQ(plain, (std::vector<std::string>{"PATH=/usr/bin:/bin", "PIPEGATE_EXPORT=run",
                                             "PIPEGATE_IDENTITY=al?ce",
                                             "PIPEGATE_REMOTE_ADDR=127.0.0.1:5000"}));
  std::vector<std::string> mapped = ExecEnvironment(e, peer, "127.0.0.1:5000", "app");
  ASSERT_EQ(mapped.size(), 5u);
  EXPECT_EQ(mapped.back(), "PIPEGATE_USER=app");
}

}  // namespace
}  // namespace pipegate::gateway
