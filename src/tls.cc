#include "pipegate/tls.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "pipegate/config.h"
#include "pipegate/frame.h"
#include "pipegate/local_path.h"
#include "pipegate/log.h"

#include "ossl/ossl_ptr.h"
#include "tls_internal.h"

namespace pipegate {

using tls_internal::DescribeVerifyError;
using tls_internal::PopErrorQueue;
using tls_internal::SpkiSha256;

namespace {

// ALPN wire form of "pipegate/1": a length byte, then the name.
constexpr unsigned char kAlpnWire[] = {10, 'p', 'i', 'p', 'e', 'g', 'a', 't', 'e', '/', '1'};

Status LoadError(const std::string& what, const std::string& file) {
  std::string reason = PopErrorQueue();
  return Status(Code::kUsage, fmt::format("cannot load {} '{}': {}", what, file,
                                          reason.empty() ? "unreadable or invalid" : reason));
}

int OnAlpnSelect(SSL* /*ssl*/, const unsigned char** out, unsigned char* outlen,
                 const unsigned char* in, unsigned int inlen, void* /*arg*/) noexcept {
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kAlpnWire, sizeof kAlpnWire, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_ALERT_FATAL;  // RFC 7301 §3.2 no_application_protocol.
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

// TLS 1.2 suites allowed by `tls_min_version = "1.2"`: ECDHE key exchange (forward secrecy)
// with an AEAD cipher only, ECDSA or RSA certificates. No CBC (Lucky 13, padding oracles), no
// static RSA key exchange. TLS 1.3 suites are all AEAD, so they keep OpenSSL's defaults.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// Loads the certificate chain, the private key and the CA bundle into @p ctx, each file on its
// own (its permissions, then loading it), so that one bad file does not hide the next; the key
// is matched against the certificate once both loaded. Key material and trust anchors that
// anyone may change are refused. @p ca_key names the CA in the problems.
std::vector<TlsContext::FileProblem> LoadTlsFiles(SSL_CTX* ctx, const std::string& cert,
                                                  const std::string& key, const std::string& ca,
                                                  const char* ca_key) {
  std::vector<TlsContext::FileProblem> problems;
  ERR_clear_error();
  auto step = [&](const char* name, const std::string& path, const char* what, auto&& loader) {
    if (Status st = CheckFilePermissions(path, what); !st.ok()) {
      problems.push_back({name, st});
      return false;
    }
    if (!loader()) {
      problems.push_back({name, LoadError(what, path)});
      return false;
    }
    return true;
  };
  const bool cert_ok = step("cert", cert, "certificate", [&] {
    return SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) == 1;
  });
  const bool key_ok = step("key", key, "private key", [&] {
    return SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) == 1;
  });
  if (cert_ok && key_ok && SSL_CTX_check_private_key(ctx) != 1) {
    PopErrorQueue();
    problems.push_back(
        {"key", Status(Code::kUsage, fmt::format("private key '{}' does not match certificate '{}'",
                                                 key, cert))});
  }
  step(ca_key, ca, "CA bundle",
       [&] { return SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) == 1; });
  ERR_clear_error();
  return problems;
}

// Computes the cached extensions (key usage, purposes, key identifiers, ...) of every certificate
// in @p ctx: its own chain and the CA bundle in its store. OpenSSL computes them on a
// certificate's first use, writing them under the certificate's lock while other verifications
// read them without it (ossl_x509v3_cache_extensions), so two workers verifying their first
// clients against a fresh context raced (ThreadSanitizer saw ASN1_STRING_cmp read a key
// identifier that ASN1_STRING_set was writing; TlsTest.ThreadsVerifyAgainstAFreshContextAtOnce).
// Done here, before the context is shared, every later use only reads. X509_check_purpose with
// the purpose -1 fills the cache and checks nothing (X509_check_purpose(3)).
void FillCertificateCaches(SSL_CTX* ctx) {
  if (X509* own = SSL_CTX_get0_certificate(ctx)) X509_check_purpose(own, -1, 0);
  STACK_OF(X509)* chain = nullptr;
  if (SSL_CTX_get0_chain_certs(ctx, &chain) == 1 && chain != nullptr) {
    for (int i = 0; i < sk_X509_num(chain); ++i) X509_check_purpose(sk_X509_value(chain, i), -1, 0);
  }
  STACK_OF(X509_OBJECT)* objects = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));
  for (int i = 0; i < sk_X509_OBJECT_num(objects); ++i) {
    if (X509* x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objects, i))) {
      X509_check_purpose(x, -1, 0);
    }
  }
}

Result<ossl::SslCtxPtr> NewBaseContext(bool server, const std::string& cert, const std::string& key,
                                       const std::string& ca) {
  ossl::SslCtxPtr ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()));
  PG_CHECK(ctx != nullptr);
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
  // RELEASE_BUFFERS: a connection in its handshake (a slowloris one included) or idle holds no
  // 17 KiB record buffers, only what its state needs; an established session clears the mode
  // while records flow (TlsSession::ReleaseIdleBuffers).
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_AUTO_RETRY | SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_num_tickets(ctx.get(), 0);
  SSL_CTX_set_max_early_data(ctx.get(), 0);
  // No resumption of any kind: every connection presents and verifies certificates afresh, so
  // a reloaded CA or CRL applies to it (TLS 1.2 session IDs would otherwise skip the check).
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  std::vector<TlsContext::FileProblem> problems =
      LoadTlsFiles(ctx.get(), cert, key, ca, server ? "client_ca" : "ca");
  if (!problems.empty()) return problems.front().status;
  FillCertificateCaches(ctx.get());
  struct stat st {};
  if (::stat(key.c_str(), &st) == 0 && (st.st_mode & S_IROTH) != 0) {
    PG_LOG(kWarn, "private key '{}' is readable by every user (fix with: chmod o-r '{}')", key,
           key);
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  // The peer's certificate must be fit for its role (the EKU, where one is present).
  SSL_CTX_set_purpose(ctx.get(), server ? X509_PURPOSE_SSL_CLIENT : X509_PURPOSE_SSL_SERVER);
  return ctx;
}

std::string Asn1ToString(const ASN1_STRING* s) {
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, s);
  if (len < 0) return {};
  ossl::OpensslBytes owned(utf8);
  return std::string(reinterpret_cast<const char*>(utf8), static_cast<size_t>(len));
}

// Loads every CRL in a PEM file into @p store, after checking that a CA in the store signed
// it. Warns about CRLs that are past their nextUpdate, since those make OpenSSL refuse every
// client certificate of that CA.
Status LoadCrls(X509_STORE* store, const std::string& path) {
  if (Status st = CheckFilePermissions(path, "CRL file"); !st.ok()) return st;
  ossl::BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return LoadError("CRL file", path);
  STACK_OF(X509_OBJECT)* objects = X509_STORE_get0_objects(store);
  int loaded = 0;
  for (;;) {
    X509_CRL* raw = PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr);
    if (raw == nullptr) break;
    ossl::X509CrlPtr crl(raw);
    ++loaded;
    bool signed_by_ca = false;
    for (int i = 0; i < sk_X509_OBJECT_num(objects) && !signed_by_ca; ++i) {
      X509* ca = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objects, i));
      signed_by_ca = ca != nullptr &&
                     X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(raw)) == 0 &&
                     X509_CRL_verify(raw, X509_get0_pubkey(ca)) == 1;
    }
    ERR_clear_error();
    char issuer[256] = "?";
    X509_NAME_oneline(X509_CRL_get_issuer(raw), issuer, sizeof issuer);
    if (!signed_by_ca) {
      return Status(Code::kUsage,
                    fmt::format("CRL file '{}': the CRL of '{}' is not signed by a CA in the "
                                "client CA bundle",
                                path, issuer));
    }
    const ASN1_TIME* next = X509_CRL_get0_nextUpdate(raw);
    if (next != nullptr && X509_cmp_current_time(next) < 0) {
      PG_LOG(kWarn,
             "CRL file '{}': the CRL of '{}' has expired; every client certificate of that CA "
             "will be refused until it is renewed",
             path, issuer);
    }
    if (X509_STORE_add_crl(store, raw) != 1) {
      return LoadError("CRL file", path);
    }
  }
  // The loop ends on "no start line" once the file is read; that is not an error.
  ERR_clear_error();
  if (loaded == 0) {
    return Status(Code::kUsage,
                  fmt::format("cannot load CRL file '{}': it holds no PEM CRL", path));
  }
  return Status::Ok();
}

}  // namespace

Result<std::shared_ptr<const TlsContext>> TlsContext::NewServer(const TlsServerOptions& o) {
  Result<ossl::SslCtxPtr> ctx = NewBaseContext(true, o.cert, o.key, o.client_ca);
  if (!ctx) return ctx.error();
  ossl::X509NameStackPtr names(SSL_load_client_CA_file(o.client_ca.c_str()));
  if (names) SSL_CTX_set_client_CA_list(ctx->get(), names.release());  // Takes ownership.
  ERR_clear_error();
  SSL_CTX_set_alpn_select_cb(ctx->get(), &OnAlpnSelect, nullptr);
  if (o.allow_tls12) {
    SSL_CTX_set_min_proto_version(ctx->get(), TLS1_2_VERSION);
    PG_CHECK(SSL_CTX_set_cipher_list(ctx->get(), kTls12Ciphers) == 1);
  }
  if (!o.crl.empty()) {
    if (Status st = LoadCrls(SSL_CTX_get_cert_store(ctx->get()), o.crl); !st.ok()) return st;
    // The client's own certificate is checked against its CA's CRL (CRL_CHECK, not
    // CRL_CHECK_ALL: intermediate CAs are trusted as configured in client_ca).
    X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx->get()), X509_V_FLAG_CRL_CHECK);
  }
  auto* context = new TlsContext(CtxPtr(ctx->release()), true);
  context->counters_ = o.counters;
  return std::shared_ptr<const TlsContext>(context);
}

Result<std::shared_ptr<const TlsContext>> TlsContext::NewClient(const TlsClientOptions& o) {
  Result<ossl::SslCtxPtr> ctx = NewBaseContext(false, o.cert, o.key, o.ca);
  if (!ctx) return Status(Code::kTls, ctx.error().message());  // Files: see the header.
  SSL_CTX_set_alpn_protos(ctx->get(), kAlpnWire, sizeof kAlpnWire);
  for (const std::string& pin : o.pins) {
    if (pin.size() != 32) return Status(Code::kUsage, "a --pin must be a SHA-256 digest");
  }
  if (!o.pins.empty()) {
    SSL_CTX_set_verify(ctx->get(), SSL_VERIFY_PEER, &TlsSession::OnVerify);
  }
  auto* context = new TlsContext(CtxPtr(ctx->release()), false);
  context->server_name_ = o.server_name;
  context->pins_ = o.pins;
  return std::shared_ptr<const TlsContext>(context);
}

std::vector<TlsContext::FileProblem> TlsContext::CheckServerFiles(const TlsServerOptions& o) {
  ossl::SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  PG_CHECK(ctx != nullptr);
  std::vector<FileProblem> problems =
      LoadTlsFiles(ctx.get(), o.cert, o.key, o.client_ca, "client_ca");
  const bool ca_ok = std::none_of(problems.begin(), problems.end(),
                                  [](const FileProblem& p) { return p.key == "client_ca"; });
  // A CRL is checked against the CA bundle, so only once the bundle loaded.
  if (!o.crl.empty() && ca_ok) {
    if (Status st = LoadCrls(SSL_CTX_get_cert_store(ctx.get()), o.crl); !st.ok()) {
      problems.push_back({"crl", st});
    }
  }
  ERR_clear_error();
  return problems;
}

Status TlsContext::VerifyPeerAgain(const PeerIdentity& peer) const {
  if (peer.chain_der.empty()) return Status(Code::kTls, "TLS failed: no client certificate");
  std::vector<ossl::X509Ptr> certs;
  for (const std::string& der : peer.chain_der) {
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    ossl::X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
    if (!cert) {
      ERR_clear_error();
      return Status(Code::kTls, "TLS failed: the recorded client certificate does not parse");
    }
    certs.push_back(std::move(cert));
  }
  // The stack only lists the certificates; they belong to `certs`, which outlives it.
  ossl::X509BorrowedStackPtr untrusted(sk_X509_new_null());
  PG_CHECK(untrusted != nullptr);
  for (size_t i = 1; i < certs.size(); ++i) sk_X509_push(untrusted.get(), certs[i].get());
  ossl::X509StoreCtxPtr store_ctx(X509_STORE_CTX_new());
  PG_CHECK(store_ctx != nullptr);
  long result = X509_V_ERR_UNSPECIFIED;
  if (X509_STORE_CTX_init(store_ctx.get(), SSL_CTX_get_cert_store(ctx_.get()), certs[0].get(),
                          untrusted.get()) == 1) {
    // The same checks as the handshake: purpose sslclient, the context's flags (CRL).
    X509_STORE_CTX_set_default(store_ctx.get(), "ssl_client");
    X509_VERIFY_PARAM_set1(X509_STORE_CTX_get0_param(store_ctx.get()),
                           SSL_CTX_get0_param(ctx_.get()));
    result = X509_verify_cert(store_ctx.get()) == 1 ? X509_V_OK
                                                    : X509_STORE_CTX_get_error(store_ctx.get());
  }
  ERR_clear_error();
  if (result == X509_V_OK) return Status::Ok();
  return Status(Code::kTls, DescribeVerifyError(result, true, ""));
}

namespace {

constexpr std::string_view kPinPrefix = "sha256:";
constexpr std::string_view kBase64Alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string Base64(std::string_view raw) {
  std::string out;
  size_t i = 0;
  for (; i + 3 <= raw.size(); i += 3) {
    uint32_t v = (uint32_t{static_cast<uint8_t>(raw[i])} << 16) |
                 (uint32_t{static_cast<uint8_t>(raw[i + 1])} << 8) |
                 static_cast<uint8_t>(raw[i + 2]);
    for (int shift = 18; shift >= 0; shift -= 6) out.push_back(kBase64Alphabet[(v >> shift) & 63]);
  }
  if (i + 1 == raw.size()) {
    uint32_t v = uint32_t{static_cast<uint8_t>(raw[i])} << 16;
    out.push_back(kBase64Alphabet[(v >> 18) & 63]);
    out.push_back(kBase64Alphabet[(v >> 12) & 63]);
    out += "==";
  } else if (i + 2 == raw.size()) {
    uint32_t v = (uint32_t{static_cast<uint8_t>(raw[i])} << 16) |
                 (uint32_t{static_cast<uint8_t>(raw[i + 1])} << 8);
    out.push_back(kBase64Alphabet[(v >> 18) & 63]);
    out.push_back(kBase64Alphabet[(v >> 12) & 63]);
    out.push_back(kBase64Alphabet[(v >> 6) & 63]);
    out.push_back('=');
  }
  return out;
}

}  // namespace

std::string FormatSpkiPin(std::string_view digest) {
  return std::string(kPinPrefix) + Base64(digest);
}

Result<std::string> ParseSpkiPin(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return Status(Code::kUsage, fmt::format("bad --pin '{}': {}", text, why));
  };
  if (text.substr(0, kPinPrefix.size()) != kPinPrefix) {
    return bad("expected sha256:BASE64 or sha256:HEX (the SHA-256 of the gateway's public key)");
  }
  std::string_view value = text.substr(kPinPrefix.size());
  std::string raw;
  if (value.size() == 64) {
    for (size_t i = 0; i < 64; i += 2) {
      auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
      };
      int hi = nibble(value[i]);
      int lo = nibble(value[i + 1]);
      if (hi < 0 || lo < 0) return bad("not hexadecimal");
      raw.push_back(static_cast<char>((hi << 4) | lo));
    }
    return raw;
  }
  // 32 bytes are 43 base64 characters and one '=' of padding.
  if (value.size() != 44 || value[43] != '=') {
    return bad("expected 44 base64 characters or 64 hex digits after 'sha256:'");
  }
  uint32_t acc = 0;
  int bits = 0;
  for (char c : value.substr(0, 43)) {
    size_t v = kBase64Alphabet.find(c);
    if (v == std::string_view::npos) return bad("not base64");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      raw.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  if (raw.size() != 32) return bad("a SHA-256 digest is 32 bytes");
  return raw;
}

Result<std::string> SpkiPinOfCertificateFile(const std::string& path) {
  ossl::BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return LoadError("certificate", path);
  ossl::X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return LoadError("certificate", path);
  return FormatSpkiPin(SpkiSha256(cert.get()));
}

TlsContext::~TlsContext() = default;

void TlsContext::FreeCtx::operator()(SSL_CTX* ctx) const noexcept {
  ossl::SslCtxPtr::deleter_type()(ctx);
}

PeerIdentity IdentityFromCertificate(X509* cert) {
  PeerIdentity id;
  if (cert == nullptr) return id;
  X509_NAME* subject = X509_get_subject_name(cert);
  int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (idx >= 0) {
    id.common_name = Asn1ToString(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx)));
  }
  ossl::GeneralNamesPtr names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  if (names) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
      if (gn->type == GEN_DNS) id.dns_names.push_back(Asn1ToString(gn->d.dNSName));
      if (gn->type == GEN_URI) id.uris.push_back(Asn1ToString(gn->d.uniformResourceIdentifier));
    }
  }
  return id;
}

// ---- Helpers shared with tls_session.cc (tls_internal.h) ----

namespace tls_internal {

// Takes the reason of the most recent OpenSSL error and empties the queue.
std::string PopErrorQueue() {
  std::string reason;
  unsigned long e = 0;
  while ((e = ERR_get_error()) != 0) {
    const char* r = ERR_reason_error_string(e);
    reason = r != nullptr ? r : fmt::format("error {:x}", e);
  }
  return reason;
}

// Says in words why the peer's certificate was refused.
std::string DescribeVerifyError(long result, bool server, const std::string& host) {
  const char* whose = server ? "client" : "gateway";
  switch (result) {
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      return fmt::format("TLS failed: gateway certificate name mismatch (not valid for '{}')",
                         host);
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return fmt::format("TLS failed: {} certificate has expired", whose);
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return fmt::format("TLS failed: {} certificate is not yet valid", whose);
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
      return fmt::format("TLS failed: {} certificate is not signed by a trusted CA (unknown CA)",
                         whose);
    case X509_V_ERR_INVALID_PURPOSE:
      return fmt::format("TLS failed: {} certificate is not valid for {} use (extended key usage)",
                         whose, server ? "client" : "server");
    case X509_V_ERR_CERT_REVOKED:
      return fmt::format("TLS failed: {} certificate has been revoked (CRL)", whose);
    case X509_V_ERR_UNABLE_TO_GET_CRL:
      return fmt::format("TLS failed: no CRL from the {} certificate's CA in the CRL file", whose);
    case X509_V_ERR_CRL_HAS_EXPIRED:
      return "TLS failed: the CRL has expired (renew it and reload)";
    case X509_V_ERR_CRL_NOT_YET_VALID:
      return "TLS failed: the CRL is not yet valid";
    default:
      return fmt::format("TLS failed: {} certificate verification failed: {}", whose,
                         X509_verify_cert_error_string(result));
  }
}

// Says in words what a TLS alert from the peer means.
std::string DescribeAlert(const std::string& reason, bool server) {
  if (server) return fmt::format("TLS failed: {}", reason);
  auto has = [&](const char* s) { return reason.find(s) != std::string::npos; };
  if (has("unknown ca")) {
    return "TLS failed: the gateway rejected our client certificate (unknown CA)";
  }
  if (has("certificate expired")) {
    return "TLS failed: the gateway rejected our client certificate (certificate expired)";
  }
  if (has("certificate revoked")) {
    return "TLS failed: the gateway rejected our client certificate: it has been revoked";
  }
  if (has("certificate required")) {
    return "TLS failed: the gateway requires a client certificate";
  }
  if (has("bad certificate") || has("unsupported certificate") || has("certificate unknown")) {
    return fmt::format("TLS failed: the gateway rejected our client certificate ({})", reason);
  }
  if (has("no application protocol")) {
    return "TLS failed: the gateway does not speak pipegate/1 (ALPN)";
  }
  if (has("protocol version")) return "TLS failed: the gateway does not accept TLS 1.3";
  return fmt::format("TLS failed: {}", reason);
}

// True for an alert by which the peer refused our certificate without saying exactly why.
bool IsVagueCertificateAlert(const std::string& reason) {
  for (const char* s : {"bad certificate", "unsupported certificate", "certificate unknown",
                        "certificate expired"}) {
    if (reason.find(s) != std::string::npos) return true;
  }
  return false;
}

std::string FormatTime(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return "?";
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return text;
}

std::string CertificateDer(X509* cert) {
  unsigned char* der = nullptr;
  int len = i2d_X509(cert, &der);
  if (len <= 0) return {};
  ossl::OpensslBytes owned(der);
  return std::string(reinterpret_cast<const char*>(der), static_cast<size_t>(len));
}

std::string SpkiSha256(X509* cert) {
  if (cert == nullptr) return {};
  unsigned char* der = nullptr;
  int len = i2d_PUBKEY(X509_get0_pubkey(cert), &der);
  if (len <= 0) return {};
  ossl::OpensslBytes owned(der);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_Digest(der, static_cast<size_t>(len), digest, &digest_len, EVP_sha256(), nullptr) != 1) {
    return {};
  }
  return std::string(reinterpret_cast<const char*>(digest), digest_len);
}

}  // namespace tls_internal

std::string TlsContext::OwnResumeIdentity() const {
  X509* cert = SSL_CTX_get0_certificate(ctx_.get());
  if (cert == nullptr) return std::string();
  std::string out = SpkiSha256(cert);
  for (const std::string& id : IdentityFromCertificate(cert).All()) {
    out.push_back('\0');
    out += id;
  }
  return out;
}

std::string TlsFilesFingerprint(const std::vector<std::string>& paths) {
  std::string fp;
  for (const std::string& path : paths) {
    if (path.empty()) {
      fp += "-;";
      continue;
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      fp += fmt::format("errno {};", errno);
      continue;
    }
    fp += fmt::format("{}:{}:{}:{}.{}:{}.{};", st.st_dev, st.st_ino, st.st_size, st.st_mtim.tv_sec,
                      st.st_mtim.tv_nsec, st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
  }
  return fp;
}

}  // namespace pipegate
