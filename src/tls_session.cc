// TlsSession: one TLS 1.3 connection driven without I/O (ciphertext in, plaintext out and back),
// its handshake, verification callbacks, alerts and the messages they become. Contexts,
// certificate files and pins are tls.cc.

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <ctime>

#include <openssl/err.h>

#include "pipegate/frame.h"
#include "pipegate/log.h"
#include "pipegate/tls.h"

#include "ossl/ossl_ptr.h"
#include "tls_internal.h"

namespace pipegate {

using tls_internal::CertificateDer;
using tls_internal::DescribeAlert;
using tls_internal::DescribeVerifyError;
using tls_internal::FormatTime;
using tls_internal::IsVagueCertificateAlert;
using tls_internal::PopErrorQueue;
using tls_internal::SpkiSha256;

namespace {

// The write side of a session: a BIO that appends every record OpenSSL writes to a Buffer of
// the session (its data pointer). A memory BIO would hold the records in its own buffer and
// copy them out again in DrainCiphertext(); this one lets DrainCiphertext() hand the whole
// Buffer over by swapping, so each ciphertext byte is copied once less.
int SinkWrite(BIO* bio, const char* data, size_t len, size_t* written) {
  static_cast<Buffer*>(BIO_get_data(bio))->Append(data, len);
  *written = len;
  return 1;
}

long SinkCtrl(BIO* bio, int cmd, long /*num*/, void* /*ptr*/) {
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_WPENDING:
      return static_cast<long>(static_cast<Buffer*>(BIO_get_data(bio))->size());
    default:
      return 0;  // Nothing else applies (no reading, no kTLS, no datagrams).
  }
}

int SinkCreate(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

// Empties this thread's OpenSSL error queue before an SSL call, so that SSL_get_error() reads
// that call's errors only. ERR_clear_error() walks all the queue's slots even when it is empty,
// which made it a tenth of a small record's cost; peeking first makes the usual case cheap.
void ClearErrorsIfAny() {
  if (ERR_peek_error() != 0) ERR_clear_error();
}

const BIO_METHOD* SinkMethod() {
  static const BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "pipegate sink");
    PG_CHECK(m != nullptr);
    BIO_meth_set_write_ex(m, &SinkWrite);
    BIO_meth_set_ctrl(m, &SinkCtrl);
    BIO_meth_set_create(m, &SinkCreate);
    return m;
  }();
  return method;
}

}  // namespace

TlsSession::TlsSession(std::shared_ptr<const TlsContext> context, const std::string& peer_host)
    : context_(std::move(context)),
      peer_host_(context_->server_name().empty() ? peer_host : context_->server_name()) {
  ssl_.reset(SSL_new(context_->native()));
  PG_CHECK(ssl_ != nullptr);
  SSL_set_app_data(ssl_.get(), this);  // For OnVerify.
  ossl::BioPtr in(BIO_new(BIO_s_mem()));
  ossl::BioPtr out(BIO_new(SinkMethod()));
  PG_CHECK(in && out);                   // OOM is fatal.
  BIO_set_mem_eof_return(in.get(), -1);  // Empty input means "want more", not EOF.
  BIO_set_data(out.get(), &ciphertext_out_);
  rbio_ = in.get();  // An observer; ssl_ owns both BIOs after the next line.
  SSL_set_bio(ssl_.get(), in.release(), out.release());
  if (context_->is_server()) {
    SSL_set_accept_state(ssl_.get());
  } else {
    SSL_set_connect_state(ssl_.get());
    // The gateway's certificate must name the host we dialled (RFC 6125): a DNS name through
    // SSL_set1_host, an IP literal through the verify parameters. SNI only for names.
    const bool is_ip = ossl::Asn1OctetStringPtr(a2i_IPADDRESS(peer_host_.c_str())) != nullptr;
    if (is_ip) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_.get()), peer_host_.c_str());
    } else {
      SSL_set1_host(ssl_.get(), peer_host_.c_str());
      SSL_set_tlsext_host_name(ssl_.get(), peer_host_.c_str());
    }
  }
  ERR_clear_error();
}

TlsSession::~TlsSession() = default;

void TlsSession::FreeSsl::operator()(SSL* ssl) const noexcept { ossl::SslPtr::deleter_type()(ssl); }

int TlsSession::OnVerify(int preverify_ok, X509_STORE_CTX* store) noexcept {
  // Pinning comes on top of the CA check: only a chain that verified is compared, and only its
  // leaf (the gateway's own key, which survives certificate renewals that keep the key).
  if (preverify_ok != 1 || X509_STORE_CTX_get_error_depth(store) != 0) return preverify_ok;
  auto* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* self = ssl != nullptr ? static_cast<TlsSession*>(SSL_get_app_data(ssl)) : nullptr;
  if (self == nullptr) return 0;
  std::string spki = SpkiSha256(X509_STORE_CTX_get_current_cert(store));
  const std::vector<std::string>& pins = self->context_->pins();
  if (pins.empty() || std::find(pins.begin(), pins.end(), spki) != pins.end()) return 1;
  self->pin_mismatch_ = FormatSpkiPin(spki);
  X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
  return 0;
}

std::string TlsSession::DescribeOwnCertificateProblem() const {
  X509* own = SSL_get_certificate(ssl_.get());  // Not a new reference.
  if (own == nullptr) return {};
  if (X509_cmp_current_time(X509_get0_notBefore(own)) > 0) {
    return fmt::format("it is not yet valid (valid from {})", FormatTime(X509_get0_notBefore(own)));
  }
  if (X509_cmp_current_time(X509_get0_notAfter(own)) < 0) {
    return fmt::format("it has expired (on {})", FormatTime(X509_get0_notAfter(own)));
  }
  if (X509_check_purpose(own, X509_PURPOSE_SSL_CLIENT, 0) != 1) {
    return "it is not valid for client use (its extended key usage lacks clientAuth)";
  }
  return {};
}

void TlsSession::CountRefusal(long verify, const std::string& reason) const {
  TlsRefusalCounters* k = context_->counters();
  if (k == nullptr) return;
  switch (verify) {
    case X509_V_OK:
      break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
      k->expired++;
      return;
    case X509_V_ERR_CERT_NOT_YET_VALID:
      k->not_yet_valid++;
      return;
    case X509_V_ERR_CERT_REVOKED:
      k->revoked++;
      return;
    case X509_V_ERR_INVALID_PURPOSE:
      k->wrong_usage++;
      return;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
      k->unknown_ca++;
      return;
    default:
      k->other++;
      return;
  }
  if (reason.find("did not return a certificate") != std::string::npos ||
      reason.find("certificate required") != std::string::npos) {
    k->no_certificate++;
  } else if (SSL_in_before(ssl_.get()) != 0 ||
             reason.find("wrong version number") != std::string::npos ||
             reason.find("http request") != std::string::npos ||
             reason.find("packet length too long") != std::string::npos ||
             reason.find("unknown protocol") != std::string::npos) {
    // Nothing that parses as a ClientHello arrived: a port scanner, HTTP, random bytes.
    k->not_tls++;
  } else {
    k->other++;
  }
}

void TlsSession::FeedCiphertext(const uint8_t* data, size_t len) {
  if (len == 0) return;
  if (state_ == State::kEstablished) NoteRecords();
  int rc = BIO_write(rbio_, data, static_cast<int>(len));
  PG_CHECK(rc == static_cast<int>(len));
}

Status TlsSession::Fail(int ssl_error) {
  state_ = State::kFailed;
  bool server = context_->is_server();
  long verify = SSL_get_verify_result(ssl_.get());
  std::string reason = PopErrorQueue();
  if (server) CountRefusal(verify, reason);
  if (verify == X509_V_ERR_APPLICATION_VERIFICATION && !pin_mismatch_.empty()) {
    return Status(Code::kTls,
                  fmt::format("TLS failed: the gateway's public key does not match --pin (its "
                              "pin is {})",
                              pin_mismatch_));
  }
  if (verify != X509_V_OK) {
    return Status(Code::kTls, DescribeVerifyError(verify, server, peer_host_));
  }
  if (ssl_error == SSL_ERROR_SYSCALL || reason.empty()) {
    return Status(Code::kTls, "TLS failed: the peer closed the connection during the handshake");
  }
  if (!server && IsVagueCertificateAlert(reason)) {
    // The alert says only that our certificate was refused; our own copy may say why.
    std::string own = DescribeOwnCertificateProblem();
    if (!own.empty()) {
      return Status(Code::kTls, "TLS failed: the gateway rejected our client certificate: " + own);
    }
  }
  return Status(Code::kTls, DescribeAlert(reason, server));
}

Status TlsSession::Advance(Buffer& plaintext) {
  if (state_ == State::kFailed || state_ == State::kClosed) return Status::Ok();
  if (state_ == State::kHandshaking) {
    ERR_clear_error();
    int rc = SSL_do_handshake(ssl_.get());
    if (rc != 1) {
      int err = SSL_get_error(ssl_.get(), rc);
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return Status::Ok();
      return Fail(err);
    }
    const unsigned char* alpn = nullptr;
    unsigned int alpn_len = 0;
    SSL_get0_alpn_selected(ssl_.get(), &alpn, &alpn_len);
    if (alpn_len != 10 || std::memcmp(alpn, kAlpn, 10) != 0) {
      state_ = State::kFailed;
      return Status(Code::kTls, "TLS failed: the peer did not negotiate pipegate/1 (ALPN)");
    }
    ossl::X509Ptr cert(SSL_get1_peer_certificate(ssl_.get()));
    peer_ = IdentityFromCertificate(cert.get());
    if (context_->is_server() && cert) {
      // Kept so that a reload can verify this client again (TlsContext::VerifyPeerAgain). On
      // a server, SSL_get_peer_cert_chain() leaves out the leaf.
      peer_.chain_der.push_back(CertificateDer(cert.get()));
      STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl_.get());
      for (int i = 0; chain != nullptr && i < sk_X509_num(chain); ++i) {
        peer_.chain_der.push_back(CertificateDer(sk_X509_value(chain, i)));
      }
    }
    peer_spki_ = SpkiSha256(cert.get());
    state_ = State::kEstablished;
  }
  for (;;) {
    ClearErrorsIfAny();
    constexpr size_t kChunk = 16384;
    uint8_t* p = plaintext.Prepare(kChunk);
    int rc = SSL_read(ssl_.get(), p, static_cast<int>(kChunk));
    if (rc > 0) {
      plaintext.Commit(static_cast<size_t>(rc));
      // Nothing decrypted waits in the SSL and no ciphertext is left in the memory BIO: another
      // SSL_read() could only say "want read". Skipping it saves a third of the library calls
      // of a small record's receive (a read, an SSL_get_error and the error-queue check).
      if (SSL_has_pending(ssl_.get()) == 0 && BIO_ctrl_pending(rbio_) == 0) return Status::Ok();
      continue;
    }
    int err = SSL_get_error(ssl_.get(), rc);
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
  NoteRecords();
  while (len > 0) {
    ClearErrorsIfAny();
    // A memory BIO never blocks, so SSL_write takes everything (in ≤ 16 KiB records).
    int chunk = static_cast<int>(std::min<size_t>(len, 1u << 30));
    int rc = SSL_write(ssl_.get(), data, chunk);
    if (rc <= 0) return Fail(SSL_get_error(ssl_.get(), rc));
    data += rc;
    len -= static_cast<size_t>(rc);
  }
  return Status::Ok();
}

void TlsSession::Shutdown() {
  if (state_ != State::kEstablished) return;
  ERR_clear_error();
  SSL_shutdown(ssl_.get());
  ERR_clear_error();
  state_ = State::kClosed;
}

void TlsSession::DrainCiphertext(Buffer& out) {
  if (ciphertext_out_.empty()) return;
  if (out.empty()) {
    std::swap(out, ciphertext_out_);  // No copy; the two buffers' storage takes turns.
    return;
  }
  out.Append(ciphertext_out_.data(), ciphertext_out_.size());
  ciphertext_out_.Clear();
}

size_t TlsSession::pending_ciphertext() const { return ciphertext_out_.size(); }

void TlsSession::NoteRecords() {
  if (records_since_housekeeping_ < kBusyRecords) ++records_since_housekeeping_;
  if (keep_buffers_ || records_since_housekeeping_ < kBusyRecords) return;
  keep_buffers_ = true;
  SSL_clear_mode(ssl_.get(), SSL_MODE_RELEASE_BUFFERS);
}

void TlsSession::ReleaseIdleBuffers() {
  const bool idle = records_since_housekeeping_ == 0;
  records_since_housekeeping_ = 0;
  if (!keep_buffers_ || !idle) return;
  keep_buffers_ = false;
  SSL_set_mode(ssl_.get(), SSL_MODE_RELEASE_BUFFERS);
  // Refused (0) while part of a record waits in a buffer; the mode frees it after that record.
  SSL_free_buffers(ssl_.get());
}

// ---- Session resumption support: keying material bound to this connection. ----

bool TlsSession::ExportKeyingMaterial(const char* label, const uint8_t* context, size_t context_len,
                                      uint8_t* out, size_t out_len) const {
  if (state_ != State::kEstablished && state_ != State::kClosed) return false;
  ERR_clear_error();
  int rc = SSL_export_keying_material(ssl_.get(), out, out_len, label, std::strlen(label), context,
                                      context_len, 1);
  ERR_clear_error();
  return rc == 1;
}

}  // namespace pipegate
