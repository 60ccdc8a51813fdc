// Fuzz target for the TLS record path: a TlsSession fed arbitrary ciphertext (FeedCiphertext,
// then Advance), during a handshake and after a real in-memory handshake between a client and a
// server TlsSession (both mutual TLS 1.3, as the bridge and the gateway use them).
//
// A throwaway CA, gateway and client certificate (P-256) are made once in LLVMFuzzerInitialize
// with the OpenSSL API, into a private temporary directory removed at exit; nothing is
// committed. OpenSSL's randomness is then replaced by a generator reset before each input, so
// that the key shares, nonces and so every record are the same on every run: an input means the
// same thing each time, and a recorded real record in the corpus stays valid.
//
// Byte 0 chooses what the fuzzed bytes meet; byte 1 where they are split into two feeds:
//   bit 0 = 0, during the handshake:
//     bits 1-2 = 0 or 3: the server gets them as the client's first flight;
//              = 1: the client, after its ClientHello, gets them as the server's flight;
//              = 2: the server, after the real ClientHello and its own flight, gets them as the
//                   client's second flight;
//     bit 3: the real flight of that point comes first (the fuzzed bytes follow it);
//     bit 4: instead, the fuzzed bytes are 3-byte edits (offset, offset, xor) of the real flight.
//   bit 0 = 1, after the handshake:
//     bit 1: the server receives them (else the client);
//     bit 2: a real application-data record ("hello") comes first;
//     bit 3: the real peer's close_notify comes first.
// Invariants: no crash; a failed Advance is kTls with a message and leaves the session failed
// (later calls do nothing, writes are refused);
// a session that completes a handshake has verified the real peer (its key); a session still
// established after the fuzzed bytes can still send to its peer, who reads exactly that.

#define OPENSSL_SUPPRESS_DEPRECATED  // RAND_METHOD: the one way to make libssl deterministic.

#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "pipegate/buffer.h"
#include "pipegate/status.h"
#include "pipegate/tls.h"

namespace pipegate {
namespace {

[[noreturn]] void Fail(const char* what, int line) {
  std::fprintf(stderr, "tls_record_fuzz:%d: invariant failed: %s\n", line, what);
  std::abort();
}
#define FUZZ_CHECK(cond)                            \
  do {                                              \
    if (!(cond)) ::pipegate::Fail(#cond, __LINE__); \
  } while (0)

// ---- Deterministic randomness ----

uint64_t g_rng = 0;

uint64_t Next() {  // splitmix64
  uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
int RandBytes(unsigned char* buf, int num) {
  for (int i = 0; i < num; ++i) buf[i] = static_cast<unsigned char>(Next() >> 56);
  return 1;
}
int RandSeed(const void*, int) { return 1; }
int RandAdd(const void*, int, double) { return 1; }
int RandStatus() { return 1; }
const RAND_METHOD kDeterministicRand = {RandSeed, RandBytes, nullptr,
                                        RandAdd,  RandBytes, RandStatus};

// ---- A throwaway PKI ----

using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using CertPtr = std::unique_ptr<X509, decltype(&X509_free)>;

void AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  FUZZ_CHECK(ext != nullptr);
  FUZZ_CHECK(X509_add_ext(cert, ext, -1) == 1);
  X509_EXTENSION_free(ext);
}

// Issued by @p issuer (signed with @p issuer_key), or self-signed when @p issuer is null.
CertPtr NewCert(EVP_PKEY* key, const char* cn, X509* issuer, EVP_PKEY* issuer_key, long serial,
                const char* eku, const char* san) {
  CertPtr cert(X509_new(), X509_free);
  FUZZ_CHECK(cert != nullptr);
  X509* x = cert.get();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600L * 24 * 365);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                             -1, -1, 0);
  X509* signer = issuer != nullptr ? issuer : x;
  X509_set_issuer_name(x, X509_get_subject_name(signer));
  AddExt(x, signer, NID_subject_key_identifier, "hash");
  if (eku == nullptr) {
    AddExt(x, signer, NID_basic_constraints, "critical,CA:TRUE");
    AddExt(x, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    AddExt(x, signer, NID_authority_key_identifier, "keyid");
    AddExt(x, signer, NID_basic_constraints, "critical,CA:FALSE");
    AddExt(x, signer, NID_key_usage, "critical,digitalSignature");
    AddExt(x, signer, NID_ext_key_usage, eku);
  }
  if (san != nullptr) AddExt(x, signer, NID_subject_alt_name, san);
  FUZZ_CHECK(X509_sign(x, issuer_key != nullptr ? issuer_key : key, EVP_sha256()) > 0);
  return cert;
}

std::string g_dir;

void RemoveDir() {
  std::error_code ec;
  std::filesystem::remove_all(g_dir, ec);
}

std::string Write(const char* name, X509* cert, EVP_PKEY* key) {
  std::string path = g_dir + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "w");
  FUZZ_CHECK(f != nullptr);
  FUZZ_CHECK(::fchmod(fileno(f), 0600) == 0);
  if (cert != nullptr) FUZZ_CHECK(PEM_write_X509(f, cert) == 1);
  if (key != nullptr) {
    FUZZ_CHECK(PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  }
  FUZZ_CHECK(std::fclose(f) == 0);
  return path;
}

std::shared_ptr<const TlsContext> g_server_ctx;
std::shared_ptr<const TlsContext> g_client_ctx;
std::string g_server_spki;
std::string g_client_spki;

// ---- The sessions ----

struct Pair {
  TlsSession client{g_client_ctx, "localhost"};
  TlsSession server{g_server_ctx, ""};
};

Buffer Drain(TlsSession& s) {
  Buffer b;
  s.DrainCiphertext(b);
  return b;
}

void Feed(TlsSession& s, const Buffer& b) {
  if (!b.empty()) s.FeedCiphertext(b.data(), b.size());
}

bool Handshake(Pair& p) {
  Buffer plain;
  for (int round = 0; round < 20; ++round) {
    if (!p.client.Advance(plain).ok() || !p.server.Advance(plain).ok()) return false;
    Buffer c = Drain(p.client);
    Buffer s = Drain(p.server);
    Feed(p.server, c);
    Feed(p.client, s);
    if (c.empty() && s.empty() && p.client.established() && p.server.established()) return true;
  }
  return false;
}

// Feeds @p bytes in two pieces split at @p split, advancing after each; checks the outcome.
Status FeedAndAdvance(TlsSession& s, const uint8_t* bytes, size_t n, size_t split, Buffer& plain) {
  split = n == 0 ? 0 : split % (n + 1);
  Status st;
  for (auto [at, len] : {std::pair{size_t{0}, split}, std::pair{split, n - split}}) {
    if (len > 0) s.FeedCiphertext(bytes + at, len);
    st = s.Advance(plain);
    Drain(s);  // Alerts and handshake messages go nowhere.
    if (!st.ok()) break;
  }
  if (!st.ok()) {
    FUZZ_CHECK(st.code() == Code::kTls);
    FUZZ_CHECK(!st.message().empty());
    FUZZ_CHECK(s.state() == TlsSession::State::kFailed);
    // A failed session stays failed: Advance() does nothing more, and it refuses to write.
    const size_t before = plain.size();
    FUZZ_CHECK(s.Advance(plain).ok());
    FUZZ_CHECK(plain.size() == before);
    FUZZ_CHECK(s.state() == TlsSession::State::kFailed);
    const uint8_t x = 'x';
    FUZZ_CHECK(!s.WritePlaintext(&x, 1).ok());
  }
  return st;
}

// A session still established after the fuzzed bytes can still talk to @p peer.
void CheckStillWorks(TlsSession& from, TlsSession& peer) {
  if (!from.established() || peer.state() != TlsSession::State::kEstablished) return;
  static const char kMsg[] = "still here";
  FUZZ_CHECK(from.WritePlaintext(reinterpret_cast<const uint8_t*>(kMsg), sizeof kMsg - 1).ok());
  Feed(peer, Drain(from));
  Buffer plain;
  FUZZ_CHECK(peer.Advance(plain).ok());
  FUZZ_CHECK(plain.size() == sizeof kMsg - 1);
  FUZZ_CHECK(std::memcmp(plain.data(), kMsg, plain.size()) == 0);
}

void CheckIdentity(const TlsSession& s, bool server) {
  if (!s.established()) return;
  FUZZ_CHECK(s.peer_spki_sha256() == (server ? g_client_spki : g_server_spki));
}

void DuringHandshake(uint8_t mode, size_t split, const uint8_t* data, size_t size) {
  Pair p;
  Buffer plain;
  const int point = (mode >> 1) & 3;
  // Bring the real pair to the chosen point; `real` is the flight the victim would get next.
  TlsSession* victim = &p.server;
  Buffer real;
  FUZZ_CHECK(p.client.Advance(plain).ok());
  Buffer hello = Drain(p.client);
  if (point == 0 || point == 3) {
    real = std::move(hello);
  } else {
    Feed(p.server, hello);
    FUZZ_CHECK(p.server.Advance(plain).ok());
    Buffer flight = Drain(p.server);
    if (point == 1) {
      victim = &p.client;
      real = std::move(flight);
    } else {
      Feed(p.client, flight);
      FUZZ_CHECK(p.client.Advance(plain).ok());
      FUZZ_CHECK(p.client.established());
      real = Drain(p.client);
    }
  }
  std::vector<uint8_t> bytes;
  if (mode & 0x10) {
    bytes.assign(real.data(), real.data() + real.size());
    for (size_t i = 0; i + 3 <= size && !bytes.empty(); i += 3) {
      bytes[(static_cast<size_t>(data[i]) << 8 | data[i + 1]) % bytes.size()] ^= data[i + 2];
    }
  } else {
    if (mode & 0x08) bytes.assign(real.data(), real.data() + real.size());
    bytes.insert(bytes.end(), data, data + size);
  }
  (void)FeedAndAdvance(*victim, bytes.data(), bytes.size(), split, plain);
  CheckIdentity(*victim, victim == &p.server);
}

void AfterHandshake(uint8_t mode, size_t split, const uint8_t* data, size_t size) {
  Pair p;
  FUZZ_CHECK(Handshake(p));
  CheckIdentity(p.client, false);
  CheckIdentity(p.server, true);
  const bool to_server = mode & 0x02;
  TlsSession& victim = to_server ? p.server : p.client;
  TlsSession& peer = to_server ? p.client : p.server;
  std::vector<uint8_t> bytes;
  if (mode & 0x04) {
    static const char kHello[] = "hello";
    FUZZ_CHECK(peer.WritePlaintext(reinterpret_cast<const uint8_t*>(kHello), 5).ok());
  }
  if (mode & 0x08) peer.Shutdown();
  Buffer real = Drain(peer);
  bytes.assign(real.data(), real.data() + real.size());
  bytes.insert(bytes.end(), data, data + size);
  Buffer plain;
  Status st = FeedAndAdvance(victim, bytes.data(), bytes.size(), split, plain);
  if (st.ok() && (mode & 0x04)) {
    FUZZ_CHECK(plain.size() >= 5);
    FUZZ_CHECK(std::memcmp(plain.data(), "hello", 5) == 0);
  }
  if (st.ok() && !victim.peer_closed()) CheckStillWorks(victim, peer);
}

void MakePki() {
  const char* base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
  std::string tmpl = std::string(base) + "/pipegate-tls-fuzz.XXXXXX";
  FUZZ_CHECK(::mkdtemp(tmpl.data()) != nullptr);
  g_dir = tmpl;
  std::atexit(RemoveDir);

  KeyPtr ca_key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  KeyPtr gw_key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  KeyPtr alice_key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  FUZZ_CHECK(ca_key && gw_key && alice_key);
  CertPtr ca = NewCert(ca_key.get(), "pipegate fuzz CA", nullptr, nullptr, 1, nullptr, nullptr);
  CertPtr gw =
      NewCert(gw_key.get(), "localhost", ca.get(), ca_key.get(), 2, "serverAuth", "DNS:localhost");
  CertPtr alice =
      NewCert(alice_key.get(), "alice", ca.get(), ca_key.get(), 3, "clientAuth", nullptr);

  TlsServerOptions so;
  so.cert = Write("gateway.crt", gw.get(), nullptr);
  so.key = Write("gateway.key", nullptr, gw_key.get());
  so.client_ca = Write("ca.crt", ca.get(), nullptr);
  TlsClientOptions co;
  co.cert = Write("alice.crt", alice.get(), nullptr);
  co.key = Write("alice.key", nullptr, alice_key.get());
  co.ca = so.client_ca;
  Result<std::shared_ptr<const TlsContext>> s = TlsContext::NewServer(so);
  Result<std::shared_ptr<const TlsContext>> c = TlsContext::NewClient(co);
  if (!s || !c) {
    std::fprintf(stderr, "tls_record_fuzz: %s\n", (!s ? s.error() : c.error()).message().c_str());
    std::abort();
  }
  g_server_ctx = *s;
  g_client_ctx = *c;
}

}  // namespace
}  // namespace pipegate

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  pipegate::MakePki();
  FUZZ_CHECK(RAND_set_rand_method(&pipegate::kDeterministicRand) == 1);
  // The identities a real handshake verifies, for CheckIdentity().
  pipegate::g_rng = 0;
  pipegate::Pair p;
  FUZZ_CHECK(pipegate::Handshake(p));
  pipegate::g_server_spki = p.client.peer_spki_sha256();
  pipegate::g_client_spki = p.server.peer_spki_sha256();
  FUZZ_CHECK(pipegate::g_server_spki.size() == 32 && pipegate::g_client_spki.size() == 32);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  pipegate::g_rng = 0;  // The same key shares and nonces for every input.
  if (data[0] & 1) {
    pipegate::AfterHandshake(data[0], data[1], data + 2, size - 2);
  } else {
    pipegate::DuringHandshake(data[0], data[1], data + 2, size - 2);
  }
  return 0;
}
