#include "pipegate/address.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>

#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace pipegate {
namespace {

PipeAddress MustParse(std::string_view text, NameRule rule = NameRule::kRequired) {
  Result<PipeAddress> result = ParseAddress(text, rule);
  EXPECT_TRUE(result.has_value()) << text << ": " << result.error().message();
  return result.has_value() ? *result : PipeAddress{};
}

std::string ErrorOf(std::string_view text, NameRule rule = NameRule::kRequired) {
  Result<PipeAddress> result = ParseAddress(text, rule);
  if (result.has_value()) {
    ADD_FAILURE() << text << " parsed unexpectedly as " << result->ToString();
    return {};
  }
  EXPECT_EQ(result.error().code(), Code::kUsage);
  return result.error().message();
}

std::string NameError(std::string_view name) {
  Status status = ValidatePipeName(name);
  EXPECT_FALSE(status.ok()) << name;
  EXPECT_EQ(status.code(), Code::kUsage);
  return status.message();
}

TEST(ParseAddress, CanonicalFormWithDefaultPort) {
  PipeAddress a = MustParse("pipe://gw.example.org/logs");
  EXPECT_EQ(a.host, "gw.example.org");
  EXPECT_EQ(a.port, kDefaultPort);
  EXPECT_EQ(a.name, "logs");
  EXPECT_FALSE(a.host_is_ip());
}

TEST(ParseAddress, CanonicalFormWithPort) {
  PipeAddress a = MustParse("pipe://gw:9000/app.ctl_1-x");
  EXPECT_EQ(a.host, "gw");
  EXPECT_EQ(a.port, 9000);
  EXPECT_EQ(a.name, "app.ctl_1-x");
}

TEST(ParseAddress, SchemeIsCaseInsensitive) { EXPECT_EQ(MustParse("PIPE://gw/logs").name, "logs"); }

TEST(ParseAddress, BackslashUncForm) {
  PipeAddress a = MustParse(R"(\\server\pipe\logs)");
  EXPECT_EQ(a.host, "server");
  EXPECT_EQ(a.port, kDefaultPort);
  EXPECT_EQ(a.name, "logs");
  EXPECT_EQ(MustParse(R"(\\server\PIPE\logs)").name, "logs");
}

TEST(ParseAddress, ForwardSlashUncForm) {
  PipeAddress a = MustParse("//server:8000/pipe/logs");
  EXPECT_EQ(a.host, "server");
  EXPECT_EQ(a.port, 8000);
  EXPECT_EQ(a.name, "logs");
  EXPECT_EQ(MustParse("//server/pipe/logs").port, kDefaultPort);
}

TEST(ParseAddress, UncFormRequiresPipeSegment) {
  EXPECT_NE(ErrorOf("//server/pipes/logs").find("pipe"), std::string::npos);
  EXPECT_NE(ErrorOf(R"(\\server\share\logs)").find("pipe"), std::string::npos);
}

TEST(ParseAddress, Ipv4Host) {
  PipeAddress a = MustParse("pipe://10.0.0.7:7000/logs");
  EXPECT_EQ(a.host, "10.0.0.7");
  EXPECT_EQ(a.port, 7000);
  EXPECT_TRUE(a.host_is_ip());
}

TEST(ParseAddress, BracketedIpv6Host) {
  PipeAddress a = MustParse("pipe://[::1]/logs");
  EXPECT_EQ(a.host, "::1");
  EXPECT_EQ(a.port, kDefaultPort);
  EXPECT_TRUE(a.host_is_ip());

  PipeAddress b = MustParse("pipe://[2001:db8::5]:9/x");
  EXPECT_EQ(b.host, "2001:db8::5");
  EXPECT_EQ(b.port, 9);

  EXPECT_EQ(MustParse("//[::1]:8/pipe/x").host, "::1");
  EXPECT_EQ(MustParse(R"(\\[fe80::1%eth0]\pipe\x)").host, "fe80::1%eth0");
}

TEST(ParseAddress, RejectsUnbracketedIpv6) {
  EXPECT_NE(ErrorOf("pipe://::1/logs").find("brackets"), std::string::npos);
}

TEST(ParseAddress, RejectsBadIpLiterals) {
  ErrorOf("pipe://[::g]/logs");
  ErrorOf("pipe://[::1/logs");
  ErrorOf("pipe://[::1]x/logs");
  ErrorOf("pipe://300.1.2.3/logs");
  ErrorOf("pipe://1.2.3/logs");
}

TEST(ParseAddress, RejectsBadHostNames) {
  EXPECT_EQ(ErrorOf("pipe:///logs"), "missing host");
  EXPECT_EQ(ErrorOf("pipe://:80/logs"), "missing host");
  ErrorOf("pipe://-gw/logs");
  ErrorOf("pipe://gw..example/logs");
  ErrorOf("pipe://user@gw/logs");
  ErrorOf("pipe://" + std::string(64, 'a') + "/logs");
}

TEST(ParseAddress, PortBounds) {
  EXPECT_EQ(MustParse("pipe://gw:1/x").port, 1);
  EXPECT_EQ(MustParse("pipe://gw:65535/x").port, 65535);
  EXPECT_NE(ErrorOf("pipe://gw:0/x").find("out of range"), std::string::npos);
  EXPECT_NE(ErrorOf("pipe://gw:65536/x").find("out of range"), std::string::npos);
  EXPECT_NE(ErrorOf("pipe://gw:99999999999999999999/x").find("out of range"), std::string::npos);
  ErrorOf("pipe://gw:/x");
  ErrorOf("pipe://gw:http/x");
  ErrorOf("pipe://gw:-1/x");
  ErrorOf("pipe://[::1]:0/x");
}

TEST(ParseAddress, RejectsUnknownForms) {
  ErrorOf("");
  ErrorOf("logs");
  ErrorOf("tcp://gw/logs");
  ErrorOf("pipe:/gw/logs");
}

TEST(ParseAddress, RequiresNameByDefault) {
  EXPECT_EQ(ErrorOf("pipe://gw"), "missing pipe name");
  EXPECT_EQ(ErrorOf("pipe://gw:7445/"), "missing pipe name");
  ErrorOf("//gw/pipe/");
  ErrorOf(R"(\\gw\pipe)");
}

TEST(ParseAddress, OptionalNameForListing) {
  PipeAddress a = MustParse("pipe://gw", NameRule::kOptional);
  EXPECT_EQ(a.host, "gw");
  EXPECT_EQ(a.port, kDefaultPort);
  EXPECT_TRUE(a.name.empty());

  PipeAddress b = MustParse("pipe://gw:9000/", NameRule::kOptional);
  EXPECT_EQ(b.port, 9000);
  EXPECT_TRUE(b.name.empty());

  EXPECT_TRUE(MustParse("pipe://[::1]:9000", NameRule::kOptional).name.empty());
  EXPECT_TRUE(MustParse("//gw/pipe", NameRule::kOptional).name.empty());
  EXPECT_EQ(MustParse("pipe://gw/logs", NameRule::kOptional).name, "logs");
  // An optional name is still checked when present.
  ErrorOf("pipe://gw/a/b", NameRule::kOptional);
}

TEST(ParseAddress, ReportsBadNameCharacter) {
  EXPECT_EQ(ErrorOf("pipe://gw/a/b"),
            "invalid character '/' at position 2 in pipe name \"a/b\" (allowed: A-Z a-z 0-9 . _ "
            "-)");
  EXPECT_NE(ErrorOf(R"(\\gw\pipe\a\b)").find("invalid character '\\\\' at position 2"),
            std::string::npos);
  EXPECT_NE(ErrorOf("pipe://gw/..").find("\"..\" is not allowed"), std::string::npos);
}

TEST(ParseAddress, ToStringIsCanonical) {
  EXPECT_EQ(MustParse(R"(\\gw\pipe\logs)").ToString(), "pipe://gw:7445/logs");
  EXPECT_EQ(MustParse("//[::1]:9/pipe/x").ToString(), "pipe://[::1]:9/x");
  EXPECT_EQ(MustParse("pipe://10.1.2.3/x").ToString(), "pipe://10.1.2.3:7445/x");
  EXPECT_EQ(MustParse("pipe://gw", NameRule::kOptional).ToString(), "pipe://gw:7445");
}

TEST(ParseAddress, RoundTripsThroughToString) {
  for (const char* text : {"pipe://gw/logs", R"(\\[::1]\pipe\a.b)", "//h-1.example:2/pipe/_"}) {
    PipeAddress a = MustParse(text);
    PipeAddress b = MustParse(a.ToString());
    EXPECT_EQ(a.host, b.host);
    EXPECT_EQ(a.port, b.port);
    EXPECT_EQ(a.name, b.name);
  }
}

TEST(ValidatePipeName, AcceptsAllowedCharacters) {
  EXPECT_TRUE(ValidatePipeName("logs").ok());
  EXPECT_TRUE(ValidatePipeName("A-Z_a.z-09").ok());
  EXPECT_TRUE(ValidatePipeName("...").ok());
  EXPECT_TRUE(ValidatePipeName(".hidden").ok());
  EXPECT_TRUE(ValidatePipeName(std::string(kMaxPipeNameLength, 'x')).ok());
}

TEST(ValidatePipeName, RejectsEmpty) { EXPECT_EQ(NameError(""), "pipe name is empty"); }

TEST(ValidatePipeName, RejectsDotAndDotDot) {
  EXPECT_EQ(NameError("."), "pipe name \".\" is not allowed");
  EXPECT_EQ(NameError(".."), "pipe name \"..\" is not allowed");
}

TEST(ValidatePipeName, RejectsTooLong) {
  EXPECT_EQ(NameError(std::string(kMaxPipeNameLength + 1, 'x')),
            "pipe name is 129 characters long (at most 128)");
}

TEST(ValidatePipeName, NamesSlashAndItsPosition) {
  EXPECT_NE(NameError("a/b").find("invalid character '/' at position 2 in pipe name \"a/b\""),
            std::string::npos);
  EXPECT_NE(NameError("../x").find("'/' at position 3"), std::string::npos);
}

TEST(ValidatePipeName, EscapesNulAndControlCharacters) {
  using std::string_literals::operator""s;
  EXPECT_NE(NameError("a\0b"s).find("invalid character '\\x00' at position 2 in pipe name "
                                    "\"a\\x00b\""),
            std::string::npos);
  EXPECT_NE(NameError("x\n").find("'\\x0a' at position 2"), std::string::npos);
  EXPECT_NE(NameError("caf\xc3\xa9").find("'\\xc3' at position 4"), std::string::npos);
}

TEST(ValidatePipeName, RejectsOtherPunctuation) {
  for (const char* name : {"a b", "a:b", "a\\b", "a*", "a?", "~x", "a%2f", "a\"b", "a'b"}) {
    EXPECT_NE(NameError(name).find("invalid character"), std::string::npos) << name;
  }
}

TEST(ParseHostPort, ParsesIpv4AndIpv6) {
  auto v4 = ParseHostPort("0.0.0.0:7445");
  ASSERT_TRUE(v4.has_value()) << v4.error().message();
  EXPECT_EQ(v4->first, "0.0.0.0");
  EXPECT_EQ(v4->second, 7445);

  auto v6 = ParseHostPort("[::]:7445");
  ASSERT_TRUE(v6.has_value()) << v6.error().message();
  EXPECT_EQ(v6->first, "::");
  EXPECT_EQ(v6->second, 7445);

  auto name = ParseHostPort("localhost:80");
  ASSERT_TRUE(name.has_value());
  EXPECT_EQ(name->first, "localhost");
}

TEST(ParseHostPort, AllowsPortZero) {
  auto any = ParseHostPort("127.0.0.1:0");
  ASSERT_TRUE(any.has_value()) << any.error().message();
  EXPECT_EQ(any->second, 0);
}

TEST(ParseHostPort, DefaultsPort) {
  auto result = ParseHostPort("127.0.0.1");
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->second, kDefaultPort);
}

TEST(ParseHostPort, RejectsBadInput) {
  for (const char* text : {"", ":7445", "::1:7445", "[::1", "[::1]7445", "1.2.3.4:65536",
                           "host:", "host:x", "a b:1", "[zz]:1"}) {
    auto result = ParseHostPort(text);
    EXPECT_FALSE(result.has_value()) << text;
    if (!result.has_value()) {
      EXPECT_EQ(result.error().code(), Code::kUsage);
    }
  }
}

TEST(ParseNumericAddress, FillsIpv4AndIpv6WithThePort) {
  sockaddr_storage ss{};
  ASSERT_TRUE(ParseNumericAddress("127.0.0.1", 7445, &ss));
  ASSERT_EQ(ss.ss_family, AF_INET);
  const auto* v4 = reinterpret_cast<const sockaddr_in*>(&ss);
  EXPECT_EQ(ntohs(v4->sin_port), 7445);
  EXPECT_EQ(ntohl(v4->sin_addr.s_addr), INADDR_LOOPBACK);

  ASSERT_TRUE(ParseNumericAddress("::1", 8000, &ss));
  ASSERT_EQ(ss.ss_family, AF_INET6);
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&ss);
  EXPECT_EQ(ntohs(v6->sin6_port), 8000);
  EXPECT_TRUE(IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr));
  EXPECT_EQ(v6->sin6_scope_id, 0u);

  ASSERT_TRUE(ParseNumericAddress("fe80::1%lo", 1, &ss));
  ASSERT_EQ(ss.ss_family, AF_INET6);
  EXPECT_EQ(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_scope_id, ::if_nametoindex("lo"));
}

TEST(ParseNumericAddress, RefusesNamesAndBracketsAndLeavesNothingBehind) {
  for (const char* host : {"localhost", "[::1]", "", "1.2.3", "example.com", "::1::2"}) {
    sockaddr_storage ss{};
    ss.ss_family = AF_INET;
    EXPECT_FALSE(ParseNumericAddress(host, 1, &ss)) << host;
    EXPECT_EQ(ss.ss_family, AF_UNSPEC) << host;
  }
}

}  // namespace
}  // namespace pipegate
