#include "pipegate/tls.h"

#include <stdio.h>

#include <atomic>
#include <cstring>
#include <latch>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "pipegate/buffer.h"
#include "pipegate/status.h"

#include "ossl/ossl_ptr.h"
#include "support/pki.h"

namespace pipegate {
namespace {

using ::pipegate::testing::EnsureTestPki;
using ::pipegate::testing::PkiPath;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

using ContextPtr = std::shared_ptr<const TlsContext>;

std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 7;
  for (char& c : s) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

std::string Text(const Buffer& b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// A client and a server TlsSession wired back to back in memory.
struct TlsPair {
  TlsPair(ContextPtr client_ctx, ContextPtr server_ctx, const std::string& host)
      : client(std::move(client_ctx), host), server(std::move(server_ctx), "") {}

  // Advances both sides and exchanges their ciphertext until nothing moves. Keeps the first
  // error of each side; a failed side still drains its alert.
  void Run() {
    for (int round = 0; round < 100; ++round) {
      Step(client, client_status, client_plain);
      bool moved = Move(client, server);
      Step(server, server_status, server_plain);
      moved = Move(server, client) || moved;
      if (!moved) {
        // One more step each, so that what arrived last is processed.
        Step(client, client_status, client_plain);
        Step(server, server_status, server_plain);
        if (client.pending_ciphertext() == 0 && server.pending_ciphertext() == 0) return;
      }
    }
    ADD_FAILURE() << "TLS pair never went quiet";
  }

  static void Step(TlsSession& s, Status& status, Buffer& plain) {
    Status st = s.Advance(plain);
    if (!st.ok() && status.ok()) status = st;
  }
  static bool Move(TlsSession& from, TlsSession& to) {
    Buffer b;
    size_t pending = from.pending_ciphertext();
    from.DrainCiphertext(b);
    EXPECT_EQ(b.size(), pending);
    EXPECT_EQ(from.pending_ciphertext(), 0u);
    if (b.empty()) return false;
    to.FeedCiphertext(b.data(), b.size());
    return true;
  }

  TlsSession client;
  TlsSession server;
  Status client_status;
  Status server_status;
  Buffer client_plain;
  Buffer server_plain;
};

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(EnsureTestPki()); }

  static TlsServerOptions ServerOptions(const std::string& stem = "gateway",
                                        const std::string& client_ca = "ca.crt") {
    TlsServerOptions o;
    o.cert = PkiPath(stem + ".crt");
    o.key = PkiPath(stem + ".key");
    o.client_ca = PkiPath(client_ca);
    return o;
  }
  static TlsClientOptions ClientOptions(const std::string& stem = "alice",
                                        const std::string& ca = "ca.crt") {
    TlsClientOptions o;
    o.cert = PkiPath(stem + ".crt");
    o.key = PkiPath(stem + ".key");
    o.ca = PkiPath(ca);
    return o;
  }
  static ContextPtr Server(const std::string& stem = "gateway",
                           const std::string& client_ca = "ca.crt") {
    return Server(ServerOptions(stem, client_ca));
  }
  static ContextPtr Server(const TlsServerOptions& o) {
    Result<ContextPtr> ctx = TlsContext::NewServer(o);
    EXPECT_TRUE(ctx.has_value()) << ctx.error().message();
    return ctx ? *ctx : nullptr;
  }
  static ContextPtr Client(const std::string& stem = "alice", const std::string& ca = "ca.crt") {
    return Client(ClientOptions(stem, ca));
  }
  static ContextPtr Client(const TlsClientOptions& o) {
    Result<ContextPtr> ctx = TlsContext::NewClient(o);
    EXPECT_TRUE(ctx.has_value()) << ctx.error().message();
    return ctx ? *ctx : nullptr;
  }
};

// ---- Contexts ----

TEST_F(TlsTest, ContextsKnowTheirRole) {
  ContextPtr s = Server();
  ContextPtr c = Client();
  ASSERT_TRUE(s && c);
  EXPECT_TRUE(s->is_server());
  EXPECT_FALSE(c->is_server());
  EXPECT_NE(s->native(), nullptr);
  EXPECT_EQ(SSL_CTX_get_min_proto_version(s->native()), TLS1_3_VERSION);
  EXPECT_EQ(SSL_CTX_get_min_proto_version(c->native()), TLS1_3_VERSION);
}

TEST_F(TlsTest, ContextErrorsNameTheFile) {
  TlsServerOptions missing = ServerOptions();
  missing.cert = PkiPath("nope.crt");
  Result<ContextPtr> a = TlsContext::NewServer(missing);
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code(), Code::kUsage);
  EXPECT_EQ(a.error().message(),
            "cannot use certificate '" + PkiPath("nope.crt") + "': No such file or directory");

  TlsClientOptions nokey = ClientOptions();
  nokey.key = PkiPath("nope.key");
  Result<ContextPtr> b = TlsContext::NewClient(nokey);
  ASSERT_FALSE(b.has_value());
  // The gateway's files are configuration (exit 1); the bridge's are "TLS failed" (exit 2).
  EXPECT_EQ(b.error().code(), Code::kTls);
  EXPECT_THAT(b.error().message(), StartsWith("cannot use private key '"));

  TlsClientOptions mismatch = ClientOptions();
  mismatch.key = PkiPath("bob.key");
  Result<ContextPtr> c = TlsContext::NewClient(mismatch);
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code(), Code::kTls);
  // OpenSSL compares the key with the certificate as it loads it.
  EXPECT_EQ(c.error().message(),
            "cannot load private key '" + PkiPath("bob.key") + "': key values mismatch");

  // A key is not a certificate, nor a CA bundle.
  TlsServerOptions notcert = ServerOptions();
  notcert.cert = PkiPath("gateway.key");
  Result<ContextPtr> d = TlsContext::NewServer(notcert);
  ASSERT_FALSE(d.has_value());
  EXPECT_THAT(d.error().message(),
              StartsWith("cannot load certificate '" + PkiPath("gateway.key")));
  TlsServerOptions notca = ServerOptions();
  notca.client_ca = PkiPath("gateway.key");
  Result<ContextPtr> e = TlsContext::NewServer(notca);
  ASSERT_FALSE(e.has_value());
  EXPECT_THAT(e.error().message(), StartsWith("cannot load CA bundle '"));

  TlsServerOptions notcrl = ServerOptions();
  notcrl.crl = PkiPath("ca.crt");
  Result<ContextPtr> f = TlsContext::NewServer(notcrl);
  ASSERT_FALSE(f.has_value());
  EXPECT_EQ(f.error().message(),
            "cannot load CRL file '" + PkiPath("ca.crt") + "': it holds no PEM CRL");

  TlsClientOptions badpin = ClientOptions();
  badpin.pins = {"short"};
  Result<ContextPtr> g = TlsContext::NewClient(badpin);
  ASSERT_FALSE(g.has_value());
  EXPECT_EQ(g.error().message(), "a --pin must be a SHA-256 digest");
}

// ---- Handshakes that succeed ----

TEST_F(TlsTest, HandshakeSucceedsForEveryNameOfTheGateway) {
  for (const char* host : {"127.0.0.1", "localhost", "::1"}) {
    SCOPED_TRACE(host);
    TlsPair p(Client(), Server(), host);
    EXPECT_EQ(p.client.state(), TlsSession::State::kHandshaking);
    EXPECT_FALSE(p.client.established());
    p.Run();
    ASSERT_TRUE(p.client_status.ok()) << p.client_status.message();
    ASSERT_TRUE(p.server_status.ok()) << p.server_status.message();
    EXPECT_TRUE(p.client.established());
    EXPECT_TRUE(p.server.established());
    EXPECT_EQ(p.client.state(), TlsSession::State::kEstablished);
    EXPECT_FALSE(p.client.peer_closed());
    EXPECT_TRUE(p.client_plain.empty());
    EXPECT_TRUE(p.server_plain.empty());
  }
}

TEST_F(TlsTest, BothSidesSeeThePeersIdentity) {
  TlsPair p(Client(), Server(), "localhost");
  p.Run();
  ASSERT_TRUE(p.server.established());
  const PeerIdentity& alice = p.server.peer_identity();
  EXPECT_EQ(alice.common_name, "alice");
  EXPECT_THAT(alice.dns_names, ElementsAre("alice.example"));
  EXPECT_THAT(alice.uris, ElementsAre("spiffe://example.org/ci/alice"));
  const PeerIdentity& gateway = p.client.peer_identity();
  EXPECT_EQ(gateway.common_name, "pipegate-gateway");
  EXPECT_THAT(gateway.dns_names, ElementsAre("localhost"));
  EXPECT_THAT(gateway.uris, IsEmpty());
}

TEST_F(TlsTest, BobHasOnlyACommonName) {
  TlsPair p(Client("bob"), Server(), "127.0.0.1");
  p.Run();
  ASSERT_TRUE(p.server.established()) << p.server_status.message();
  EXPECT_EQ(p.server.peer_identity().common_name, "bob");
  EXPECT_THAT(p.server.peer_identity().dns_names, IsEmpty());
  EXPECT_THAT(p.server.peer_identity().uris, IsEmpty());
}

// ---- Data ----

TEST_F(TlsTest, OneMebibyteRoundTripsEachWay) {
  TlsPair p(Client(), Server(), "localhost");
  p.Run();
  ASSERT_TRUE(p.client.established() && p.server.established());
  std::string up = Pattern(1u << 20, 1);
  std::string down = Pattern(1u << 20, 2);
  ASSERT_TRUE(p.client.WritePlaintext(reinterpret_cast<const uint8_t*>(up.data()), up.size()).ok());
  ASSERT_TRUE(
      p.server.WritePlaintext(reinterpret_cast<const uint8_t*>(down.data()), down.size()).ok());
  // Records are at most 16 KiB of plaintext, so 1 MiB is more than 64 records of ciphertext.
  EXPECT_GT(p.client.pending_ciphertext(), up.size());
  p.Run();
  ASSERT_TRUE(p.client_status.ok()) << p.client_status.message();
  ASSERT_TRUE(p.server_status.ok()) << p.server_status.message();
  EXPECT_EQ(p.server_plain.size(), up.size());
  EXPECT_TRUE(Text(p.server_plain) == up);
  EXPECT_EQ(p.client_plain.size(), down.size());
  EXPECT_TRUE(Text(p.client_plain) == down);
}

TEST_F(TlsTest, CiphertextMayArriveOneByteAtATime) {
  TlsPair p(Client(), Server(), "localhost");
  p.Run();
  ASSERT_TRUE(p.client.established());
  const std::string msg = "hello over a trickle";
  ASSERT_TRUE(
      p.client.WritePlaintext(reinterpret_cast<const uint8_t*>(msg.data()), msg.size()).ok());
  Buffer wire;
  p.client.DrainCiphertext(wire);
  ASSERT_GT(wire.size(), msg.size());
  for (size_t i = 0; i < wire.size(); ++i) {
    p.server.FeedCiphertext(wire.data() + i, 1);
    ASSERT_TRUE(p.server.Advance(p.server_plain).ok());
    if (i + 1 < wire.size()) {
      EXPECT_TRUE(p.server_plain.empty()) << i;
    }
  }
  EXPECT_EQ(Text(p.server_plain), msg);
  p.server.FeedCiphertext(nullptr, 0);  // Nothing: harmless.
  EXPECT_TRUE(p.server.Advance(p.server_plain).ok());
}

// Every complete record fed is decrypted by one Advance(), however many arrived together, and a
// record still incomplete waits for the rest: Advance() stops reading only when nothing is left.
TEST_F(TlsTest, OneAdvanceDecryptsEveryCompleteRecordFed) {
  TlsPair p(Client(), Server(), "localhost");
  p.Run();
  ASSERT_TRUE(p.client.established() && p.server.established());
  for (const std::string word : {"one", "two", "three"}) {  // One record each.
    ASSERT_TRUE(
        p.client.WritePlaintext(reinterpret_cast<const uint8_t*>(word.data()), word.size()).ok());
  }
  Buffer wire;
  p.client.DrainCiphertext(wire);
  ASSERT_GT(wire.size(), 10u);
  const size_t held_back = 5;  // Part of the third record.
  p.server.FeedCiphertext(wire.data(), wire.size() - held_back);
  ASSERT_TRUE(p.server.Advance(p.server_plain).ok());
  EXPECT_EQ(Text(p.server_plain), "onetwo");
  p.server.FeedCiphertext(wire.data() + wire.size() - held_back, held_back);
  ASSERT_TRUE(p.server.Advance(p.server_plain).ok());
  EXPECT_EQ(Text(p.server_plain), "onetwothree");
}

// An error some other code left in this thread's OpenSSL error queue is not taken for a failure
// of the session's next read or write (SSL_get_error reads that queue).
TEST_F(TlsTest, AStaleErrorInTheThreadsQueueDoesNotFailTheSession) {
  TlsPair p(Client(), Server(), "localhost");
  p.Run();
  ASSERT_TRUE(p.client.established() && p.server.established());
  const std::string msg = "after a stale error";
  ERR_raise(ERR_LIB_USER, 1);
  ASSERT_TRUE(
      p.client.WritePlaintext(reinterpret_cast<const uint8_t*>(msg.data()), msg.size()).ok());
  Buffer wire;
  p.client.DrainCiphertext(wire);
  ERR_raise(ERR_LIB_USER, 1);
  p.server.FeedCiphertext(wire.data(), wire.size() - 1);  // Incomplete: the read wants more.
  Status st = p.server.Advance(p.server_plain);
  EXPECT_TRUE(st.ok()) << st.message();
  EXPECT_TRUE(p.server_plain.empty());
  p.server.FeedCiphertext(wire.data() + wire.size() - 1, 1);
  st = p.server.Advance(p.server_plain);
  EXPECT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(Text(p.server_plain), msg);
  ERR_clear_error();
}

TEST_F(TlsTest, WritingBeforeTheHandshakeIsRefused) {
  TlsPair p(Client(), Server(), "localhost");
  Status st = p.client.WritePlaintext(reinterpret_cast<const uint8_t*>("x"), 1);
  EXPECT_EQ(st.code(), Code::kInternal);
  EXPECT_EQ(st.message(), "TLS session not established");
}

// ---- Orderly close ----

TEST_F(TlsTest, CloseNotifySetsPeerClosed) {
  TlsPair p(Client(), Server(), "localhost");
  p.Run();
  ASSERT_TRUE(p.client.established());
  const std::string last = "last words";
  ASSERT_TRUE(
      p.client.WritePlaintext(reinterpret_cast<const uint8_t*>(last.data()), last.size()).ok());
  p.client.Shutdown();
  EXPECT_EQ(p.client.state(), TlsSession::State::kClosed);
  EXPECT_GT(p.client.pending_ciphertext(), 0u);
  Status st = p.client.WritePlaintext(reinterpret_cast<const uint8_t*>("x"), 1);
  EXPECT_EQ(st.code(), Code::kInternal);
  p.Run();
  EXPECT_TRUE(p.server_status.ok()) << p.server_status.message();
  EXPECT_TRUE(p.server.peer_closed());
  EXPECT_EQ(Text(p.server_plain), last);  // Data before close_notify is not lost.
  EXPECT_FALSE(p.client.peer_closed());
  // The server answers with its own close_notify.
  p.server.Shutdown();
  EXPECT_EQ(p.server.state(), TlsSession::State::kClosed);
  EXPECT_GT(p.server.pending_ciphertext(), 0u);
  p.client.Shutdown();  // Already closed: nothing more.
  EXPECT_EQ(p.client.state(), TlsSession::State::kClosed);
}

TEST_F(TlsTest, ShutdownBeforeTheHandshakeDoesNothing) {
  TlsPair p(Client(), Server(), "localhost");
  p.client.Shutdown();
  EXPECT_EQ(p.client.state(), TlsSession::State::kHandshaking);
  p.Run();
  EXPECT_TRUE(p.client.established());
}

// ---- Handshakes that fail ----

TEST_F(TlsTest, NameMismatchIsReported) {
  for (const char* host : {"localhost", "127.0.0.1", "::1", "gateway.example"}) {
    SCOPED_TRACE(host);
    TlsPair p(Client(), Server("gateway-wrongname"), host);
    p.Run();
    EXPECT_EQ(p.client.state(), TlsSession::State::kFailed);
    EXPECT_EQ(p.client_status.code(), Code::kTls);
    EXPECT_EQ(p.client_status.message(),
              std::string("TLS failed: gateway certificate name mismatch (not valid for '") + host +
                  "')");
    // The gateway learns from the alert that the client gave up.
    EXPECT_EQ(p.server.state(), TlsSession::State::kFailed);
    EXPECT_EQ(p.server_status.code(), Code::kTls);
    EXPECT_THAT(p.server_status.message(), StartsWith("TLS failed: "));
  }
}

TEST_F(TlsTest, GatewayFromAForeignCaIsAnUnknownCa) {
  TlsPair p(Client(), Server("other/gateway"), "localhost");
  p.Run();
  EXPECT_EQ(p.client.state(), TlsSession::State::kFailed);
  EXPECT_EQ(p.client_status.code(), Code::kTls);
  EXPECT_EQ(p.client_status.message(),
            "TLS failed: gateway certificate is not signed by a trusted CA (unknown CA)");
  EXPECT_FALSE(p.server.established());
  EXPECT_THAT(p.server_status.message(), HasSubstr("unknown ca"));
}

TEST_F(TlsTest, ExpiredGatewayIsReported) {
  TlsPair p(Client(), Server("gateway-expired"), "localhost");
  p.Run();
  EXPECT_EQ(p.client_status.code(), Code::kTls);
  EXPECT_EQ(p.client_status.message(), "TLS failed: gateway certificate has expired");
}

TEST_F(TlsTest, ClientFromAForeignCaIsRejected) {
  TlsPair p(Client("other/alice"), Server(), "localhost");
  p.Run();
  EXPECT_EQ(p.server.state(), TlsSession::State::kFailed);
  EXPECT_EQ(p.server_status.code(), Code::kTls);
  EXPECT_EQ(p.server_status.message(),
            "TLS failed: client certificate is not signed by a trusted CA (unknown CA)");
  // In TLS 1.3 the client finishes first; the alert then tells it why.
  EXPECT_EQ(p.client.state(), TlsSession::State::kFailed);
  EXPECT_EQ(p.client_status.code(), Code::kTls);
  EXPECT_EQ(p.client_status.message(),
            "TLS failed: the gateway rejected our client certificate (unknown CA)");
  EXPECT_THAT(p.client_status.message(), HasSubstr("rejected our client certificate"));
}

TEST_F(TlsTest, ExpiredClientIsRejected) {
  TlsPair p(Client("expired"), Server(), "localhost");
  p.Run();
  EXPECT_EQ(p.server_status.code(), Code::kTls);
  EXPECT_EQ(p.server_status.message(), "TLS failed: client certificate has expired");
  EXPECT_EQ(p.client_status.code(), Code::kTls);
  // The alert only says "certificate expired"; the client's own copy says since when.
  EXPECT_THAT(p.client_status.message(),
              StartsWith("TLS failed: the gateway rejected our client certificate: it has "
                         "expired (on "));
}

TEST_F(TlsTest, NotYetValidClientIsRejected) {
  TlsPair p(Client("notyet"), Server(), "localhost");
  p.Run();
  EXPECT_EQ(p.server_status.message(), "TLS failed: client certificate is not yet valid");
  EXPECT_THAT(p.client_status.message(),
              StartsWith("TLS failed: the gateway rejected our client certificate: it is not yet "
                         "valid (valid from "));
}

TEST_F(TlsTest, ClientWithTheWrongKeyUsageIsRejected) {
  TlsPair p(Client("wrongeku"), Server(), "localhost");
  p.Run();
  EXPECT_EQ(p.server.state(), TlsSession::State::kFailed);
  EXPECT_EQ(p.server_status.message(),
            "TLS failed: client certificate is not valid for client use (extended key usage)");
  EXPECT_EQ(p.client.state(), TlsSession::State::kFailed);
  EXPECT_EQ(p.client_status.message(),
            "TLS failed: the gateway rejected our client certificate: it is not valid for client "
            "use (its extended key usage lacks clientAuth)");
}

TEST_F(TlsTest, GatewayWithAClientCertificateIsRejected) {
  // alice.crt has extendedKeyUsage clientAuth only: it may not serve.
  TlsPair p(Client(), Server("alice"), "localhost");
  p.Run();
  EXPECT_EQ(p.client_status.code(), Code::kTls);
  EXPECT_EQ(p.client_status.message(),
            "TLS failed: gateway certificate is not valid for server use (extended key usage)");
  EXPECT_FALSE(p.server.established());
}

TEST_F(TlsTest, ClientWithoutPipegateAlpnIsRefused) {
  ContextPtr client = Client();
  static const unsigned char kOther[] = {2, 'h', '2'};
  ASSERT_EQ(SSL_CTX_set_alpn_protos(client->native(), kOther, sizeof kOther), 0);
  TlsPair p(client, Server(), "localhost");
  p.Run();
  EXPECT_FALSE(p.server.established());
  EXPECT_EQ(p.server_status.code(), Code::kTls);
  EXPECT_EQ(p.client_status.message(), "TLS failed: the gateway does not speak pipegate/1 (ALPN)");
}

TEST_F(TlsTest, RefusesTls12) {
  ContextPtr client = Client();
  SSL_CTX_set_min_proto_version(client->native(), TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(client->native(), TLS1_2_VERSION);
  TlsPair p(client, Server(), "localhost");
  p.Run();
  EXPECT_FALSE(p.server.established());
  EXPECT_EQ(p.server_status.code(), Code::kTls);
  EXPECT_EQ(p.client_status.message(), "TLS failed: the gateway does not accept TLS 1.3");
}

TEST_F(TlsTest, GarbageFailsTheHandshake) {
  ContextPtr ctx = Server();
  TlsSession server(ctx, "");
  const std::string junk = "GET / HTTP/1.1\r\nHost: example\r\n\r\n";
  server.FeedCiphertext(reinterpret_cast<const uint8_t*>(junk.data()), junk.size());
  Buffer plain;
  Status st = server.Advance(plain);
  EXPECT_EQ(st.code(), Code::kTls);
  EXPECT_THAT(st.message(), StartsWith("TLS failed: "));
  EXPECT_EQ(server.state(), TlsSession::State::kFailed);
  EXPECT_TRUE(plain.empty());
  // Once failed, further calls are inert.
  EXPECT_TRUE(server.Advance(plain).ok());
  EXPECT_EQ(server.WritePlaintext(reinterpret_cast<const uint8_t*>("x"), 1).code(),
            Code::kInternal);
}

TEST_F(TlsTest, SessionsShareOneContext) {
  ContextPtr server_ctx = Server();
  ContextPtr client_ctx = Client();
  long before = server_ctx.use_count();
  {
    TlsPair a(client_ctx, server_ctx, "localhost");
    TlsPair b(client_ctx, server_ctx, "127.0.0.1");
    EXPECT_EQ(server_ctx.use_count(), before + 2);
    a.Run();
    b.Run();
    EXPECT_TRUE(a.server.established() && b.server.established());
  }
  EXPECT_EQ(server_ctx.use_count(), before);
}

// Gateway workers share one server context and may verify their first clients at the same
// moment, right after a start or a reload built the context. OpenSSL fills an X509's cached
// extensions (purpose, key usage, hashes) on first use, and that must not race between the
// threads (TSan found it in the gateway): the context fills them when it is made.
TEST_F(TlsTest, ThreadsVerifyAgainstAFreshContextAtOnce) {
  constexpr int kRounds = 3;
  constexpr int kThreads = 4;
  for (int round = 0; round < kRounds; ++round) {
    ContextPtr server_ctx = Server();
    ContextPtr client_ctx = Client();
    ASSERT_TRUE(server_ctx && client_ctx);
    std::latch start(kThreads);
    std::atomic<int> established{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        TlsPair pair(client_ctx, server_ctx, "localhost");
        start.arrive_and_wait();
        pair.Run();
        if (pair.client.established() && pair.server.established()) ++established;
      });
    }
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(established.load(), kThreads) << "round " << round;
  }
}

TEST_F(TlsTest, RsaKeysWorkOnBothSides) {
  TlsPair p(Client("carol"), Server("gateway-rsa"), "localhost");
  p.Run();
  ASSERT_TRUE(p.client_status.ok()) << p.client_status.message();
  ASSERT_TRUE(p.server_status.ok()) << p.server_status.message();
  EXPECT_EQ(p.server.peer_identity().common_name, "carol");
}

TEST_F(TlsTest, Tls12OnlyWhenAllowed) {
  TlsServerOptions o = ServerOptions();
  o.allow_tls12 = true;
  ContextPtr client = Client();
  SSL_CTX_set_min_proto_version(client->native(), TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(client->native(), TLS1_2_VERSION);
  TlsPair p(client, Server(o), "localhost");
  p.Run();
  ASSERT_TRUE(p.client_status.ok()) << p.client_status.message();
  ASSERT_TRUE(p.server_status.ok()) << p.server_status.message();
  EXPECT_EQ(p.server.peer_identity().common_name, "alice");
}

// ---- Revocation and refusal counters ----

TEST_F(TlsTest, RevokedClientIsRejected) {
  TlsRefusalCounters counters;
  TlsServerOptions o = ServerOptions();
  o.crl = PkiPath("crl.pem");
  o.counters = &counters;
  ContextPtr server = Server(o);
  {
    TlsPair p(Client("mallory"), server, "localhost");
    p.Run();
    EXPECT_EQ(p.server_status.message(), "TLS failed: client certificate has been revoked (CRL)");
    EXPECT_EQ(p.client_status.message(),
              "TLS failed: the gateway rejected our client certificate: it has been revoked");
  }
  {
    TlsPair p(Client("alice"), server, "localhost");
    p.Run();
    EXPECT_TRUE(p.server.established()) << p.server_status.message();
  }
  EXPECT_EQ(counters.revoked.load(), 1u);
  EXPECT_EQ(counters.other.load(), 0u);
  // A CRL that revokes nobody lets mallory in.
  TlsServerOptions empty = ServerOptions();
  empty.crl = PkiPath("crl-empty.pem");
  TlsPair q(Client("mallory"), Server(empty), "localhost");
  q.Run();
  EXPECT_TRUE(q.server.established()) << q.server_status.message();
}

TEST_F(TlsTest, RefusalsAreCountedByCause) {
  TlsRefusalCounters counters;
  TlsServerOptions o = ServerOptions();
  o.counters = &counters;
  ContextPtr server = Server(o);
  for (const char* stem : {"expired", "notyet", "wrongeku", "other/alice", "expired", "alice"}) {
    TlsPair p(Client(stem), server, "localhost");
    p.Run();
  }
  TlsSession junk(server, "");
  const std::string http = "GET / HTTP/1.1\r\n\r\n";
  junk.FeedCiphertext(reinterpret_cast<const uint8_t*>(http.data()), http.size());
  Buffer plain;
  EXPECT_FALSE(junk.Advance(plain).ok());
  EXPECT_EQ(counters.expired.load(), 2u);
  EXPECT_EQ(counters.not_yet_valid.load(), 1u);
  EXPECT_EQ(counters.wrong_usage.load(), 1u);
  EXPECT_EQ(counters.unknown_ca.load(), 1u);
  EXPECT_EQ(counters.not_tls.load(), 1u);
  EXPECT_EQ(counters.revoked.load(), 0u);
  EXPECT_EQ(counters.no_certificate.load(), 0u);
  EXPECT_EQ(counters.other.load(), 0u);
}

TEST_F(TlsTest, VerifyPeerAgainAppliesNewTrust) {
  TlsPair p(Client("mallory"), Server(), "localhost");
  p.Run();
  ASSERT_TRUE(p.server.established());
  const PeerIdentity& mallory = p.server.peer_identity();
  ASSERT_FALSE(mallory.chain_der.empty());
  EXPECT_TRUE(Server()->VerifyPeerAgain(mallory).ok());
  TlsServerOptions revoking = ServerOptions();
  revoking.crl = PkiPath("crl.pem");
  Status revoked = Server(revoking)->VerifyPeerAgain(mallory);
  EXPECT_EQ(revoked.code(), Code::kTls);
  EXPECT_EQ(revoked.message(), "TLS failed: client certificate has been revoked (CRL)");
  Status foreign = Server("gateway", "other/ca.crt")->VerifyPeerAgain(mallory);
  EXPECT_EQ(foreign.message(),
            "TLS failed: client certificate is not signed by a trusted CA (unknown CA)");
  EXPECT_EQ(Server()->VerifyPeerAgain(PeerIdentity{}).message(),
            "TLS failed: no client certificate");
}

// ---- Pinning and the server name ----

TEST_F(TlsTest, SpkiPinsParseAndFormat) {
  Result<std::string> pin = SpkiPinOfCertificateFile(PkiPath("gateway.crt"));
  ASSERT_TRUE(pin.has_value()) << pin.error().message();
  EXPECT_THAT(*pin, StartsWith("sha256:"));
  EXPECT_EQ(pin->size(), 7u + 44u);
  Result<std::string> raw = ParseSpkiPin(*pin);
  ASSERT_TRUE(raw.has_value()) << raw.error().message();
  EXPECT_EQ(raw->size(), 32u);
  EXPECT_EQ(FormatSpkiPin(*raw), *pin);
  // The hex form names the same digest.
  std::string hex = "sha256:";
  for (unsigned char c : *raw) {
    static const char kHex[] = "0123456789ABCDEF";
    hex += kHex[c >> 4];
    hex += kHex[c & 15];
  }
  Result<std::string> from_hex = ParseSpkiPin(hex);
  ASSERT_TRUE(from_hex.has_value());
  EXPECT_EQ(*from_hex, *raw);
  // Another key, another pin.
  EXPECT_NE(*SpkiPinOfCertificateFile(PkiPath("gateway-rotated.crt")), *pin);
  for (const char* bad :
       {"", "md5:abc", "sha256:", "sha256:zz", "sha256:not-base64-at-all-but-44-characters-long=",
        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg"}) {
    SCOPED_TRACE(bad);
    Result<std::string> r = ParseSpkiPin(bad);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), Code::kUsage);
    EXPECT_THAT(r.error().message(), StartsWith(std::string("bad --pin '") + bad + "': "));
  }
  Result<std::string> none = SpkiPinOfCertificateFile(PkiPath("nope.crt"));
  EXPECT_FALSE(none.has_value());
}

TEST_F(TlsTest, PinnedGatewayKeyMustMatch) {
  std::string right = *ParseSpkiPin(*SpkiPinOfCertificateFile(PkiPath("gateway.crt")));
  std::string wrong = *ParseSpkiPin(*SpkiPinOfCertificateFile(PkiPath("gateway-rotated.crt")));
  {
    TlsClientOptions o = ClientOptions();
    o.pins = {wrong, right};
    TlsPair p(Client(o), Server(), "localhost");
    p.Run();
    ASSERT_TRUE(p.client.established()) << p.client_status.message();
    EXPECT_EQ(p.client.peer_spki_sha256(), right);
  }
  {
    TlsClientOptions o = ClientOptions();
    o.pins = {wrong};
    TlsPair p(Client(o), Server(), "localhost");
    p.Run();
    EXPECT_EQ(p.client.state(), TlsSession::State::kFailed);
    EXPECT_EQ(p.client_status.message(),
              "TLS failed: the gateway's public key does not match --pin (its pin is " +
                  *SpkiPinOfCertificateFile(PkiPath("gateway.crt")) + ")");
  }
  {
    // A pin never replaces the CA check.
    TlsClientOptions o = ClientOptions();
    o.pins = {*ParseSpkiPin(*SpkiPinOfCertificateFile(PkiPath("other/gateway.crt")))};
    TlsPair p(Client(o), Server("other/gateway"), "localhost");
    p.Run();
    EXPECT_THAT(p.client_status.message(), HasSubstr("(unknown CA)"));
  }
}

TEST_F(TlsTest, ServerNameOverridesTheHostDialled) {
  {
    TlsClientOptions o = ClientOptions();
    o.server_name = "localhost";
    ContextPtr ctx = Client(o);
    EXPECT_EQ(ctx->server_name(), "localhost");
    TlsPair p(ctx, Server(), "10.9.8.7");
    p.Run();
    EXPECT_TRUE(p.client.established()) << p.client_status.message();
  }
  {
    TlsClientOptions o = ClientOptions();
    o.server_name = "wrong.example";
    TlsPair p(Client(o), Server(), "localhost");
    p.Run();
    EXPECT_EQ(p.client_status.message(),
              "TLS failed: gateway certificate name mismatch (not valid for 'wrong.example')");
  }
}

TEST_F(TlsTest, BothSidesExportTheSameKeyingMaterial) {
  TlsPair p(Client(), Server(), "localhost");
  uint8_t a[32] = {};
  const uint8_t ctx[] = {1, 2, 3};
  EXPECT_FALSE(p.client.ExportKeyingMaterial("EXPORTER-test", ctx, sizeof ctx, a, sizeof a));
  p.Run();
  ASSERT_TRUE(p.client.established());
  uint8_t b[32] = {};
  uint8_t c[32] = {};
  ASSERT_TRUE(p.client.ExportKeyingMaterial("EXPORTER-test", ctx, sizeof ctx, a, sizeof a));
  ASSERT_TRUE(p.server.ExportKeyingMaterial("EXPORTER-test", ctx, sizeof ctx, b, sizeof b));
  ASSERT_TRUE(p.server.ExportKeyingMaterial("EXPORTER-other", ctx, sizeof ctx, c, sizeof c));
  EXPECT_EQ(std::memcmp(a, b, sizeof a), 0);
  EXPECT_NE(std::memcmp(a, c, sizeof a), 0);
  // Another connection between the same parties exports something else.
  TlsPair q(Client(), Server(), "localhost");
  q.Run();
  uint8_t d[32] = {};
  ASSERT_TRUE(q.client.ExportKeyingMaterial("EXPORTER-test", ctx, sizeof ctx, d, sizeof d));
  EXPECT_NE(std::memcmp(a, d, sizeof a), 0);
}

// ---- Identities from certificate files ----

ossl::X509Ptr LoadCert(const std::string& path) {
  ossl::BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return nullptr;
  return ossl::X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

TEST_F(TlsTest, IdentityFromEveryTestCertificate) {
  struct Case {
    const char* file;
    const char* cn;
    std::vector<std::string> dns;
    std::vector<std::string> uris;
  };
  const Case cases[] = {
      {"alice.crt", "alice", {"alice.example"}, {"spiffe://example.org/ci/alice"}},
      {"bob.crt", "bob", {}, {}},
      {"expired.crt", "alice", {}, {}},
      {"notyet.crt", "alice", {}, {}},
      {"wrongeku.crt", "alice", {}, {}},
      {"gateway.crt", "pipegate-gateway", {"localhost"}, {}},
      {"gateway-wrongname.crt", "pipegate-gateway", {"wrong.example"}, {}},
      {"gateway-expired.crt", "pipegate-gateway", {"localhost"}, {}},
      {"ca.crt", "pipegate test CA", {}, {}},
      {"other/ca.crt", "pipegate foreign CA", {}, {}},
      {"other/alice.crt", "alice", {}, {}},
      {"other/gateway.crt", "pipegate-gateway", {"localhost"}, {}},
      {"carol.crt", "carol", {}, {}},
      {"mallory.crt", "mallory", {}, {}},
      {"gateway-rotated.crt", "pipegate-gateway-rotated", {"localhost"}, {}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    ossl::X509Ptr cert = LoadCert(PkiPath(c.file));
    ASSERT_TRUE(cert);
    PeerIdentity id = IdentityFromCertificate(cert.get());
    EXPECT_EQ(id.common_name, c.cn);
    EXPECT_EQ(id.dns_names, c.dns);
    EXPECT_EQ(id.uris, c.uris);
  }
  PeerIdentity none = IdentityFromCertificate(nullptr);
  EXPECT_EQ(none.common_name, "");
  EXPECT_THAT(none.dns_names, IsEmpty());
  EXPECT_THAT(none.uris, IsEmpty());
}

}  // namespace
}  // namespace pipegate
