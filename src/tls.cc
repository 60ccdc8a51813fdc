#include "pipegate/tls.h"

#include <cstring>

#include <fmt/format.h>
#include <openssl/err.h>

#include "ossl/ossl_ptr.h"
#include "pipegate/frame.h"
#include "pipegate/log.h"

namespace pipegate {
namespace {

// ALPN wire form of "pipegate/1": a length byte, then the name.
constexpr unsigned char kAlpnWire[] = {10, 'p', 'i', 'p', 'e', 'g', 'a', 't', 'e', '/', '1'};

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

Result<ossl::SslCtxPtr> NewBaseContext(bool server, const std::string& cert,
                                       const std::string& key, const std::string& ca) {
  ossl::SslCtxPtr ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()));
  PG_CHECK(ctx != nullptr);
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_AUTO_RETRY);
  SSL_CTX_set_num_tickets(ctx.get(), 0);
  SSL_CTX_set_max_early_data(ctx.get(), 0);
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert.c_str()) != 1) {
    return LoadError("certificate", cert);
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1) {
    return LoadError("private key", key);
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1) {
    PopErrorQueue();
    return Status(Code::kUsage,
                  fmt::format("private key '{}' does not match certificate '{}'", key, cert));
  }
  if (SSL_CTX_load_verify_locations(ctx.get(), ca.c_str(), nullptr) != 1) {
    return LoadError("CA bundle", ca);
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

}  // namespace

Result<std::shared_ptr<const TlsContext>> TlsContext::NewServer(const TlsServerOptions& o) {
  Result<ossl::SslCtxPtr> ctx = NewBaseContext(true, o.cert, o.key, o.client_ca);
  if (!ctx) return ctx.error();
  STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(o.client_ca.c_str());
  if (names != nullptr) SSL_CTX_set_client_CA_list(ctx->get(), names);  // Takes ownership.
  ERR_clear_error();
  SSL_CTX_set_alpn_select_cb(ctx->get(), &OnAlpnSelect, nullptr);
  return std::shared_ptr<const TlsContext>(new TlsContext(ctx->release(), true));
}

Result<std::shared_ptr<const TlsContext>> TlsContext::NewClient(const TlsClientOptions& o) {
  Result<ossl::SslCtxPtr> ctx = NewBaseContext(false, o.cert, o.key, o.ca);
  if (!ctx) return ctx.error();
  SSL_CTX_set_alpn_protos(ctx->get(), kAlpnWire, sizeof kAlpnWire);
  return std::shared_ptr<const TlsContext>(new TlsContext(ctx->release(), false));
}

TlsContext::~TlsContext() { ossl::SslCtxPtr owned(ctx_); }

PeerIdentity IdentityFromCertificate(X509* cert) {
  PeerIdentity id;
  if (cert == nullptr) return id;
  X509_NAME* subject = X509_get_subject_name(cert);
  int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (idx >= 0) {
    id.common_name = Asn1ToString(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx)));
  }
  ossl::GeneralNamesPtr names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  if (names) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
      if (gn->type == GEN_DNS) id.dns_names.push_back(Asn1ToString(gn->d.dNSName));
      if (gn->type == GEN_URI) id.uris.push_back(Asn1ToString(gn->d.uniformResourceIdentifier));
    }
  }
  return id;
}

TlsSession::TlsSession(std::shared_ptr<const TlsContext> context, const std::string& peer_host)
    : context_(std::move(context)), peer_host_(peer_host) {
  ossl::SslPtr ssl(SSL_new(context_->native()));
  PG_CHECK(ssl != nullptr);
  ossl::BioPtr in(BIO_new(BIO_s_mem()));
  ossl::BioPtr out(BIO_new(BIO_s_mem()));
  PG_CHECK(in && out);                   // OOM is fatal.
  BIO_set_mem_eof_return(in.get(), -1);  // Empty input means "want more", not EOF.
  rbio_ = in.get();                      // Observers; ssl owns both after the next line.
  wbio_ = out.get();
  SSL_set_bio(ssl.get(), in.release(), out.release());
  if (context_->is_server()) {
    SSL_set_accept_state(ssl.get());
  } else {
    SSL_set_connect_state(ssl.get());
    // The gateway's certificate must name the host we dialled (RFC 6125): a DNS name through
    // SSL_set1_host, an IP literal through the verify parameters. SNI only for names.
    ASN1_OCTET_STRING* ip = a2i_IPADDRESS(peer_host_.c_str());
    if (ip != nullptr) {
      ASN1_OCTET_STRING_free(ip);
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), peer_host_.c_str());
    } else {
      SSL_set1_host(ssl.get(), peer_host_.c_str());
      SSL_set_tlsext_host_name(ssl.get(), peer_host_.c_str());
    }
  }
  ERR_clear_error();
  ssl_ = ssl.release();
}

TlsSession::~TlsSession() { ossl::SslPtr owned(ssl_); }

void TlsSession::FeedCiphertext(const uint8_t* data, size_t len) {
  if (len == 0) return;
  int rc = BIO_write(rbio_, data, static_cast<int>(len));
  PG_CHECK(rc == static_cast<int>(len));
}

Status TlsSession::Fail(int ssl_error) {
  state_ = State::kFailed;
  bool server = context_->is_server();
  long verify = SSL_get_verify_result(ssl_);
  std::string reason = PopErrorQueue();
  if (verify != X509_V_OK) {
    return Status(Code::kTls, DescribeVerifyError(verify, server, peer_host_));
  }
  if (ssl_error == SSL_ERROR_SYSCALL || reason.empty()) {
    return Status(Code::kTls, "TLS failed: the peer closed the connection during the handshake");
  }
  return Status(Code::kTls, DescribeAlert(reason, server));
}

Status TlsSession::Advance(Buffer& plaintext) {
  if (state_ == State::kFailed || state_ == State::kClosed) return Status::Ok();
  if (state_ == State::kHandshaking) {
    ERR_clear_error();
    int rc = SSL_do_handshake(ssl_);
    if (rc != 1) {
      int err = SSL_get_error(ssl_, rc);
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return Status::Ok();
      return Fail(err);
    }
    const unsigned char* alpn = nullptr;
    unsigned int alpn_len = 0;
    SSL_get0_alpn_selected(ssl_, &alpn, &alpn_len);
    if (alpn_len != 10 || std::memcmp(alpn, kAlpn, 10) != 0) {
      state_ = State::kFailed;
      return Status(Code::kTls, "TLS failed: the peer did not negotiate pipegate/1 (ALPN)");
    }
    ossl::X509Ptr cert(SSL_get1_peer_certificate(ssl_));
    peer_ = IdentityFromCertificate(cert.get());
    state_ = State::kEstablished;
  }
  for (;;) {
    ERR_clear_error();
    constexpr size_t kChunk = 16384;
    uint8_t* p = plaintext.Prepare(kChunk);
    int rc = SSL_read(ssl_, p, static_cast<int>(kChunk));
    if (rc > 0) {
      plaintext.Commit(static_cast<size_t>(rc));
      continue;
    }
    int err = SSL_get_error(ssl_, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return Status::Ok();
    if (err == SSL_ERROR_ZERO_RETURN) {
      peer_closed_ = true;
      return Status::Ok();
    }
    return Fail(err);
  }
}

Status TlsSession::WritePlaintext(const uint8_t* data, size_t len) {
  if (state_ != State::kEstablished) return Status(Code::kInternal, "TLS session not established");
  while (len > 0) {
    ERR_clear_error();
    // A memory BIO never blocks, so SSL_write takes everything (in ≤ 16 KiB records).
    int chunk = static_cast<int>(std::min<size_t>(len, 1u << 30));
    int rc = SSL_write(ssl_, data, chunk);
    if (rc <= 0) return Fail(SSL_get_error(ssl_, rc));
    data += rc;
    len -= static_cast<size_t>(rc);
  }
  return Status::Ok();
}

void TlsSession::Shutdown() {
  if (state_ != State::kEstablished) return;
  ERR_clear_error();
  SSL_shutdown(ssl_);
  ERR_clear_error();
  state_ = State::kClosed;
}

void TlsSession::DrainCiphertext(Buffer& out) {
  size_t pending = BIO_ctrl_pending(wbio_);
  if (pending == 0) return;
  int rc = BIO_read(wbio_, out.Prepare(pending), static_cast<int>(pending));
  if (rc > 0) out.Commit(static_cast<size_t>(rc));
}

size_t TlsSession::pending_ciphertext() const { return BIO_ctrl_pending(wbio_); }

}  // namespace pipegate
