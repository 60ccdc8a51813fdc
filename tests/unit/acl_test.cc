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

// ---- Typed entries (docs/security.md §3) ----

TEST(IsAllowed, TypedEntriesMatchOnlyTheirType) {
  PeerIdentity id;
  id.common_name = "ops";
  id.dns_names = {"ops.example"};
  id.uris = {"spiffe://example.org/ops"};
  EXPECT_TRUE(IsAllowed({"cn:ops"}, id));
  EXPECT_FALSE(IsAllowed({"dns:ops"}, id));
  EXPECT_FALSE(IsAllowed({"uri:ops"}, id));
  EXPECT_TRUE(IsAllowed({"dns:ops.example"}, id));
  EXPECT_FALSE(IsAllowed({"cn:ops.example"}, id));
  EXPECT_TRUE(IsAllowed({"uri:spiffe://example.org/ops"}, id));
  EXPECT_FALSE(IsAllowed({"cn:spiffe://example.org/ops"}, id));
  EXPECT_FALSE(IsAllowed({"dns:spiffe://example.org/ops"}, id));
}

TEST(IsAllowed, TypeWordIsCaseInsensitiveButTheNameIsNot) {
  EXPECT_TRUE(IsAllowed({"CN:alice"}, Alice()));
  EXPECT_TRUE(IsAllowed({"Dns:alice.example"}, Alice()));
  EXPECT_FALSE(IsAllowed({"cn:Alice"}, Alice()));
}

TEST(IsAllowed, TypedCommonNameMayHoldAUri) {
  PeerIdentity id;
  id.common_name = "spiffe://example.org/admin";
  EXPECT_TRUE(IsAllowed({"cn:spiffe://example.org/admin"}, id));
}

TEST(IsAllowed, UntypedEntryWithSchemeMatchesUriSansOnly) {
  // The CN of the same text used to match; it must not.
  PeerIdentity cn_only;
  cn_only.common_name = "spiffe://example.org/admin";
  EXPECT_FALSE(IsAllowed({"spiffe://example.org/admin"}, cn_only));
  PeerIdentity dns_only;
  dns_only.dns_names = {"spiffe://example.org/admin"};
  EXPECT_FALSE(IsAllowed({"spiffe://example.org/admin"}, dns_only));
  PeerIdentity uri;
  uri.uris = {"spiffe://example.org/admin"};
  EXPECT_TRUE(IsAllowed({"spiffe://example.org/admin"}, uri));
}

TEST(IsAllowed, UntypedEntryWithoutSchemeMatchesCommonNameOrDnsOnly) {
  PeerIdentity dns;
  dns.dns_names = {"ops"};
  EXPECT_TRUE(IsAllowed({"ops"}, dns));  // Documented: untyped is the CN or a DNS SAN.
  EXPECT_FALSE(IsAllowed({"cn:ops"}, dns));
  PeerIdentity uri;
  uri.uris = {"ops"};
  EXPECT_FALSE(IsAllowed({"ops"}, uri));
  EXPECT_TRUE(IsAllowed({"uri:ops"}, uri));
}

TEST(IsAllowed, TypedUriPrefixMatchesUrisUnderIt) {
  EXPECT_TRUE(IsAllowed({"uri:spiffe://example.org/ci/*"}, Alice()));
  PeerIdentity cn;
  cn.common_name = "spiffe://example.org/ci/x";
  EXPECT_FALSE(IsAllowed({"uri:spiffe://example.org/ci/*"}, cn));
}

TEST(IsAllowed, PercentEncodedDotSegmentsMatchNothing) {
  for (const char* sneaky :
       {"spiffe://example.org/ci/%2e%2e/admin", "spiffe://example.org/ci/%2E%2E/admin",
        "spiffe://example.org/ci/%2e%2E/admin", "spiffe://example.org/ci/.%2e/admin",
        "spiffe://example.org/ci/%2E./admin", "spiffe://example.org/ci/%2e/x",
        "spiffe://example.org/ci/..", "spiffe://example.org/ci/x/%2e%2e",
        "spiffe://example.org/ci/..%2fadmin", "spiffe://example.org/ci/%2F..%2Fadmin",
        "spiffe://example.org/ci/..%5cadmin", "spiffe://example.org/ci/..\\admin"}) {
    SCOPED_TRACE(sneaky);
    PeerIdentity id;
    id.uris = {sneaky};
    EXPECT_FALSE(IsAllowed({"spiffe://example.org/ci/*"}, id));
    EXPECT_FALSE(IsAllowed({"uri:spiffe://example.org/*"}, id));
  }
  PeerIdentity relative;
  relative.uris = {"ci/%2e%2e/admin"};
  EXPECT_FALSE(IsAllowed({"ci/*"}, relative));
  EXPECT_FALSE(IsAllowed({"uri:ci/*"}, relative));
}

TEST(IsAllowed, DotsThatAreNotSegmentsStillMatch) {
  PeerIdentity id;
  id.uris = {"spiffe://example.org/ci/job...1", "spiffe://example.org/ci/.hidden",
             "spiffe://example.org/ci/a%2e%2eb"};
  for (const std::string& uri : id.uris) {
    SCOPED_TRACE(uri);
    PeerIdentity one;
    one.uris = {uri};
    EXPECT_TRUE(IsAllowed({"spiffe://example.org/ci/*"}, one));
    EXPECT_TRUE(IsAllowed({"uri:" + uri}, one));
  }
}

TEST(IsAllowed, DotSegmentUriIsIgnoredButOtherIdentitiesStillCount) {
  PeerIdentity id;
  id.common_name = "alice";
  id.uris = {"spiffe://example.org/ci/%2e%2e/admin"};
  EXPECT_TRUE(IsAllowed({"alice"}, id));
  EXPECT_FALSE(IsAllowed({"spiffe://example.org/admin"}, id));
}

TEST(IsAllowed, InvalidEntriesMatchNothing) {
  PeerIdentity id;
  id.common_name = "x";
  EXPECT_FALSE(IsAllowed({"foo:x"}, id));
  EXPECT_FALSE(IsAllowed({"cn:"}, id));
  EXPECT_FALSE(IsAllowed({"a*"}, id));
}

TEST(HasDotSegmentOrEncodedSlash, FindsEveryForm) {
  EXPECT_TRUE(HasDotSegmentOrEncodedSlash("a/./b"));
  EXPECT_TRUE(HasDotSegmentOrEncodedSlash("a/../b"));
  EXPECT_TRUE(HasDotSegmentOrEncodedSlash("a/%2e%2e"));
  EXPECT_TRUE(HasDotSegmentOrEncodedSlash("../a"));
  EXPECT_TRUE(HasDotSegmentOrEncodedSlash("a%2fb"));
  EXPECT_FALSE(HasDotSegmentOrEncodedSlash("spiffe://example.org/ci/alice"));
  EXPECT_FALSE(HasDotSegmentOrEncodedSlash("a/.../b"));
  EXPECT_FALSE(HasDotSegmentOrEncodedSlash("a/%2e%2e%2e/b"));
  EXPECT_FALSE(HasDotSegmentOrEncodedSlash("a/%41/b"));
}

TEST(ParseAllowEntry, SortsEntriesByType) {
  struct Case {
    const char* entry;
    IdentityType type;
    bool prefix;
    const char* text;
  };
  for (const Case& c : {
           Case{"*", IdentityType::kAnyone, false, ""},
           Case{"alice", IdentityType::kCommonNameOrDns, false, "alice"},
           Case{"spiffe://example.org/a", IdentityType::kUri, false, "spiffe://example.org/a"},
           Case{"spiffe://example.org/ci/*", IdentityType::kUri, true, "spiffe://example.org/ci/"},
           Case{"ci/*", IdentityType::kUri, true, "ci/"},
           Case{"cn:alice", IdentityType::kCommonName, false, "alice"},
           Case{"dns:a.example", IdentityType::kDns, false, "a.example"},
           Case{"uri:urn:example:ci", IdentityType::kUri, false, "urn:example:ci"},
           Case{"uri:spiffe://e/ci/*", IdentityType::kUri, true, "spiffe://e/ci/"},
           Case{"cn:a:b", IdentityType::kCommonName, false, "a:b"},
           Case{"build 42:x", IdentityType::kCommonNameOrDns, false, "build 42:x"},
       }) {
    SCOPED_TRACE(c.entry);
    Result<AllowEntry> e = ParseAllowEntry(c.entry);
    ASSERT_TRUE(e) << e.error().message();
    EXPECT_EQ(e->type, c.type);
    EXPECT_EQ(e->prefix, c.prefix);
    if (c.type != IdentityType::kAnyone) {
      EXPECT_EQ(e->text, c.text);
    }
  }
}

TEST(ParseAllowEntry, RefusesWhatCannotMeanWhatItSays) {
  struct Case {
    const char* entry;
    const char* why;
  };
  for (const Case& c : {
           Case{"", "empty"},
           Case{"foo:bar", "unknown identity type \"foo\""},
           Case{"urn:example:ci", "unknown identity type \"urn\""},
           Case{"cn:", "empty"},
           Case{"uri:", "empty"},
           Case{"cn:team/*", "URI identities only"},
           Case{"dns:*", "'*' is only allowed"},
           Case{"uri:*", "'*' is only allowed"},
           Case{"a*", "'*' is only allowed"},
           Case{"*/x", "'*' is only allowed"},
           Case{"spiffe://example.org/ci/../admin", "dot segment"},
           Case{"uri:spiffe://example.org/%2e%2e/*", "dot segment"},
       }) {
    SCOPED_TRACE(c.entry);
    Result<AllowEntry> e = ParseAllowEntry(c.entry);
    ASSERT_FALSE(e);
    EXPECT_NE(e.error().message().find(c.why), std::string::npos) << e.error().message();
  }
}

TEST(PeerIdentity, DisplayEscapesControlAndNonAsciiBytes) {
  PeerIdentity id;
  id.common_name = "evil\n2024-01-01T00:00:00.000Z pipegated info: forged";
  const std::string shown = id.Display();
  EXPECT_EQ(shown.find('\n'), std::string::npos);
  EXPECT_EQ(shown, "evil\\x0a2024-01-01T00:00:00.000Z pipegated info: forged");
  id.common_name = std::string("a\"b\\c\xc3\xa9\x1b[31m");
  EXPECT_EQ(id.Display(), "a\\x22b\\x5cc\\xc3\\xa9\\x1b[31m");
  EXPECT_EQ(id.Name(), id.common_name);  // The raw name stays for counting.
}

TEST(PeerIdentity, DisplayIsCutAt128Bytes) {
  PeerIdentity id;
  id.common_name = std::string(300, 'a');
  EXPECT_EQ(id.Display(), std::string(128, 'a') + "...(300 bytes)");
}

TEST(PeerIdentity, NameIsEmptyWithoutIdentities) { EXPECT_EQ(PeerIdentity{}.Name(), ""); }

}  // namespace
}  // namespace pipegate
