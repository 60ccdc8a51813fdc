#include "pipegate/acl.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace pipegate {
namespace {

PeerIdentity Alice() {
  PeerIdentity id;
  id.common_name = "alice";
  id.dns_names = {"alice.example"};
  id.uris = {"spiffe://example.org/ci/alice"};
  return id;
}

PeerIdentity Bob() {
  PeerIdentity id;
  id.common_name = "bob";
  return id;
}

TEST(IsAllowed, EmptyListAdmitsNobody) {
  EXPECT_FALSE(IsAllowed({}, Alice()));
  EXPECT_FALSE(IsAllowed({}, PeerIdentity{}));
}

TEST(IsAllowed, StarAdmitsAnyVerifiedClient) {
  EXPECT_TRUE(IsAllowed({"*"}, Alice()));
  EXPECT_TRUE(IsAllowed({"nobody", "*"}, Bob()));
  EXPECT_TRUE(IsAllowed({"*"}, PeerIdentity{}));
}

TEST(IsAllowed, MatchesCommonName) {
  EXPECT_TRUE(IsAllowed({"alice"}, Alice()));
  EXPECT_FALSE(IsAllowed({"alice"}, Bob()));
}

TEST(IsAllowed, MatchesDnsSan) { EXPECT_TRUE(IsAllowed({"alice.example"}, Alice())); }

TEST(IsAllowed, MatchesUriSan) {
  EXPECT_TRUE(IsAllowed({"spiffe://example.org/ci/alice"}, Alice()));
  EXPECT_FALSE(IsAllowed({"spiffe://example.org/ci"}, Alice()));
}

TEST(IsAllowed, MatchingIsExactAndCaseSensitive) {
  EXPECT_FALSE(IsAllowed({"Alice"}, Alice()));
  EXPECT_FALSE(IsAllowed({"alic"}, Alice()));
  EXPECT_FALSE(IsAllowed({"alice "}, Alice()));
  EXPECT_FALSE(IsAllowed({"ALICE.EXAMPLE"}, Alice()));
}

TEST(IsAllowed, EmptyEntryNeverMatchesEmptyCommonName) {
  PeerIdentity anonymous;
  anonymous.uris = {"spiffe://example.org/x"};
  EXPECT_FALSE(IsAllowed({""}, anonymous));
  EXPECT_FALSE(IsAllowed({""}, PeerIdentity{}));
}

TEST(IsAllowed, PrefixEntryMatchesUrisUnderIt) {
  EXPECT_TRUE(IsAllowed({"spiffe://example.org/ci/*"}, Alice()));
  EXPECT_TRUE(IsAllowed({"spiffe://example.org/*"}, Alice()));

  PeerIdentity job;
  job.uris = {"spiffe://example.org/ci/job1"};
  EXPECT_TRUE(IsAllowed({"spiffe://example.org/ci/*"}, job));

  PeerIdentity nested;
  nested.uris = {"spiffe://example.org/ci/team/job2"};
  EXPECT_TRUE(IsAllowed({"spiffe://example.org/ci/*"}, nested));
}

TEST(IsAllowed, PrefixEntryRequiresSegmentBoundaryAndNonEmptyRest) {
  PeerIdentity sibling;
  sibling.uris = {"spiffe://example.org/ci-admin/x"};
  EXPECT_FALSE(IsAllowed({"spiffe://example.org/ci/*"}, sibling));

  PeerIdentity bare;
  bare.uris = {"spiffe://example.org/ci/", "spiffe://example.org/ci"};
  EXPECT_FALSE(IsAllowed({"spiffe://example.org/ci/*"}, bare));
}

TEST(IsAllowed, PrefixEntryRejectsDotSegments) {
  PeerIdentity sneaky;
  sneaky.uris = {"spiffe://example.org/ci/../admin", "spiffe://example.org/ci/./x"};
  EXPECT_FALSE(IsAllowed({"spiffe://example.org/ci/*"}, sneaky));
}

TEST(IsAllowed, PrefixEntryIgnoresCommonNameAndDns) {
  PeerIdentity id;
  id.common_name = "team/alice";
  id.dns_names = {"team/bob"};
  EXPECT_FALSE(IsAllowed({"team/*"}, id));
}

TEST(IsAllowed, AnyMatchingEntryAdmits) {
  EXPECT_TRUE(IsAllowed({"carol", "dave", "alice.example"}, Alice()));
  EXPECT_FALSE(IsAllowed({"carol", "dave"}, Alice()));
}

TEST(PeerIdentity, AllListsCommonNameFirst) {
  EXPECT_EQ(Alice().All(),
            (std::vector<std::string>{"alice", "alice.example", "spiffe://example.org/ci/alice"}));
  PeerIdentity no_cn;
  no_cn.uris = {"spiffe://x/y"};
  EXPECT_EQ(no_cn.All(), (std::vector<std::string>{"spiffe://x/y"}));
}

TEST(PeerIdentity, DisplayPrefersCommonName) {
  EXPECT_EQ(Alice().Display(), "alice");
  PeerIdentity dns;
  dns.dns_names = {"host.example"};
  dns.uris = {"spiffe://x/y"};
  EXPECT_EQ(dns.Display(), "host.example");
  PeerIdentity uri;
  uri.uris = {"spiffe://x/y"};
  EXPECT_EQ(uri.Display(), "spiffe://x/y");
  EXPECT_EQ(PeerIdentity{}.Display(), "?");
}

}  // namespace
}  // namespace pipegate
