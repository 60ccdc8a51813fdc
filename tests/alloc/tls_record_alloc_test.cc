// OpenSSL's record buffers on the data path: a busy session keeps its two (about 17 KiB each)
// instead of allocating and freeing one per record, and an idle one gives them back. OpenSSL's
// allocations are counted through CRYPTO_set_mem_functions, which has to be called before
// OpenSSL allocates anything: hence a static initializer in this binary, which runs no TLS
// before main().

#include <malloc.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <openssl/crypto.h>

#include "pipegate/buffer.h"
#include "pipegate/tls.h"

#include "support/pki.h"

namespace {

std::atomic<bool> g_counting{false};
std::atomic<uint64_t> g_record_sized{0};  // OpenSSL allocations of 16 KiB or more
std::atomic<int64_t> g_live{0};           // bytes OpenSSL holds

constexpr size_t kRecordSized = 16384;

void Count(size_t n) {
  if (n >= kRecordSized && g_counting.load(std::memory_order_relaxed)) {
    g_record_sized.fetch_add(1, std::memory_order_relaxed);
  }
}

void* CountingMalloc(size_t n, const char* /*file*/, int /*line*/) {
  void* p = std::malloc(n);
  if (p != nullptr) {
    Count(n);
    g_live.fetch_add(static_cast<int64_t>(malloc_usable_size(p)), std::memory_order_relaxed);
  }
  return p;
}

void* CountingRealloc(void* p, size_t n, const char* /*file*/, int /*line*/) {
  const size_t old = p == nullptr ? 0 : malloc_usable_size(p);
  void* q = std::realloc(p, n);
  if (q != nullptr) {
    Count(n);
    g_live.fetch_add(static_cast<int64_t>(malloc_usable_size(q)) - static_cast<int64_t>(old),
                     std::memory_order_relaxed);
  } else if (n == 0) {
    g_live.fetch_sub(static_cast<int64_t>(old), std::memory_order_relaxed);
  }
  return q;
}

void CountingFree(void* p, const char* /*file*/, int /*line*/) {
  if (p == nullptr) return;
  g_live.fetch_sub(static_cast<int64_t>(malloc_usable_size(p)), std::memory_order_relaxed);
  std::free(p);
}

const bool g_hooked = CRYPTO_set_mem_functions(&CountingMalloc, &CountingRealloc, &CountingFree);

}  // namespace

namespace pipegate {
namespace {

using ::pipegate::testing::EnsureTestPki;
using ::pipegate::testing::PkiPath;

// Moves every pending ciphertext byte of @p from into @p to and lets @p to decrypt it.
bool Move(TlsSession& from, TlsSession& to, Buffer& plain) {
  Buffer b;
  from.DrainCiphertext(b);
  if (!b.empty()) to.FeedCiphertext(b.data(), b.size());
  Status st = to.Advance(plain);
  EXPECT_TRUE(st.ok()) << st.message();
  return !b.empty();
}

// One 64-byte message each way, delivered; what arrived is dropped.
void RoundTrip(TlsSession& client, TlsSession& server) {
  static const std::string kMessage(64, 'm');
  const auto* p = reinterpret_cast<const uint8_t*>(kMessage.data());
  Buffer plain;
  ASSERT_TRUE(client.WritePlaintext(p, kMessage.size()).ok());
  Move(client, server, plain);
  ASSERT_EQ(plain.size(), kMessage.size());
  plain.Clear();
  ASSERT_TRUE(server.WritePlaintext(p, kMessage.size()).ok());
  Move(server, client, plain);
  ASSERT_EQ(plain.size(), kMessage.size());
}

TEST(TlsRecordAllocations, BusySessionsKeepTheirRecordBuffersAndIdleOnesGiveThemBack) {
  ASSERT_TRUE(g_hooked) << "OpenSSL allocated before the counting functions were installed";
  ASSERT_TRUE(EnsureTestPki());
  TlsServerOptions so;
  so.cert = PkiPath("gateway.crt");
  so.key = PkiPath("gateway.key");
  so.client_ca = PkiPath("ca.crt");
  TlsClientOptions co;
  co.cert = PkiPath("alice.crt");
  co.key = PkiPath("alice.key");
  co.ca = PkiPath("ca.crt");
  Result<std::shared_ptr<const TlsContext>> server_ctx = TlsContext::NewServer(so);
  Result<std::shared_ptr<const TlsContext>> client_ctx = TlsContext::NewClient(co);
  ASSERT_TRUE(server_ctx && client_ctx);
  TlsSession client(*client_ctx, "localhost");
  TlsSession server(*server_ctx, "");
  Buffer ignored;
  ASSERT_TRUE(client.Advance(ignored).ok());  // ClientHello
  for (int i = 0; i < 20 && !(client.established() && server.established()); ++i) {
    Move(client, server, ignored);
    Move(server, client, ignored);
  }
  ASSERT_TRUE(client.established() && server.established());
  // A few records (set-up, a keepalive) leave the mode as it was for the handshake.
  for (int i = 0; i < 3; ++i) RoundTrip(client, server);
  EXPECT_FALSE(client.keeps_record_buffers());
  EXPECT_FALSE(server.keeps_record_buffers());

  for (int i = 0; i < 20; ++i) RoundTrip(client, server);
  g_record_sized = 0;
  g_counting = true;
  const int kRoundTrips = 1000;
  for (int i = 0; i < kRoundTrips; ++i) RoundTrip(client, server);
  g_counting = false;
  EXPECT_EQ(g_record_sized.load(), 0u)
      << "record-sized allocations in " << kRoundTrips << " round trips (4 records each)";
  EXPECT_TRUE(client.keeps_record_buffers());
  EXPECT_TRUE(server.keeps_record_buffers());

  // The housekeeping pass right after traffic keeps them; the next, after an idle period,
  // gives back a read and a write buffer on each side.
  const int64_t busy = g_live.load();
  client.ReleaseIdleBuffers();
  server.ReleaseIdleBuffers();
  EXPECT_TRUE(client.keeps_record_buffers());
  EXPECT_EQ(g_live.load(), busy);
  client.ReleaseIdleBuffers();
  server.ReleaseIdleBuffers();
  EXPECT_FALSE(client.keeps_record_buffers());
  EXPECT_FALSE(server.keeps_record_buffers());
  EXPECT_GE(busy - g_live.load(), static_cast<int64_t>(4 * kRecordSized))
      << "OpenSSL held " << busy << " bytes busy and " << g_live.load() << " idle";

  // The counter sees OpenSSL take a buffer for each record again (so that the zero above means
  // something), until the traffic makes the sessions busy once more.
  g_record_sized = 0;
  g_counting = true;
  RoundTrip(client, server);
  g_counting = false;
  EXPECT_GE(g_record_sized.load(), 4u);
  EXPECT_FALSE(client.keeps_record_buffers());
  for (int i = 0; i < 20; ++i) RoundTrip(client, server);
  EXPECT_TRUE(client.keeps_record_buffers());
  EXPECT_TRUE(server.keeps_record_buffers());
}

}  // namespace
}  // namespace pipegate
