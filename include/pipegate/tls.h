#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "pipegate/acl.h"
#include "pipegate/buffer.h"
#include "pipegate/status.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct bio_st BIO;
typedef struct x509_st X509;

namespace pipegate {

/// @brief Files for the gateway's side of mutual TLS.
struct TlsServerOptions {
  std::string cert;       ///< PEM certificate chain of the gateway.
  std::string key;        ///< PEM private key.
  std::string client_ca;  ///< PEM CA bundle that client certificates must chain to.
};

/// @brief Files for the bridge's side of mutual TLS.
struct TlsClientOptions {
  std::string cert;  ///< PEM client certificate.
  std::string key;   ///< PEM private key.
  std::string ca;    ///< PEM CA bundle that the gateway's certificate must chain to.
};

/// @brief An SSL_CTX configured for pipegate: TLS 1.3 only, mutual authentication, ALPN
/// "pipegate/1", no session tickets, no early data.
///
/// Ownership: shared as std::shared_ptr<const TlsContext> by every session made from it (the
/// one sanctioned shared ownership). Thread: immutable after creation, safe to share.
class TlsContext {
 public:
  /// @brief Loads the gateway's certificate, key and client CA. Errors are kUsage and name the
  /// file and the cause.
  static Result<std::shared_ptr<const TlsContext>> NewServer(const TlsServerOptions& options);
  /// @brief Loads the bridge's certificate, key and CA.
  static Result<std::shared_ptr<const TlsContext>> NewClient(const TlsClientOptions& options);

  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  /// @return True for a gateway context.
  bool is_server() const noexcept { return server_; }
  /// @return The OpenSSL context (owned by this object).
  SSL_CTX* native() const noexcept { return ctx_; }

 private:
  TlsContext(SSL_CTX* ctx, bool server) : ctx_(ctx), server_(server) {}
  SSL_CTX* ctx_;
  bool server_;
};

/// @brief Extracts CN, DNS and URI SANs from a certificate.
PeerIdentity IdentityFromCertificate(X509* cert);

/// @brief A sans-I/O TLS 1.3 session over a memory BIO pair (Node's TLSWrap, h2o's socket).
///
/// The transport feeds received ciphertext with FeedCiphertext(), calls Advance() to run the
/// handshake and collect plaintext, and after *every* call sends what DrainCiphertext() yields,
/// because handshake messages and alerts appear without any plaintext write.
///
/// Ownership: owned by its connection. Thread: one thread. Everything completes synchronously.
class TlsSession {
 public:
  enum class State { kHandshaking, kEstablished, kClosed, kFailed };

  /// @param peer_host For a client: the name or IP address the gateway certificate must match.
  TlsSession(std::shared_ptr<const TlsContext> context, const std::string& peer_host);
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  /// @brief Hands received ciphertext to the session.
  void FeedCiphertext(const uint8_t* data, size_t len);
  /// @brief Runs the handshake and decrypts everything fed so far into @p plaintext.
  /// A non-OK status (kTls) says why the session failed; pending alert bytes are still drained.
  Status Advance(Buffer& plaintext);
  /// @brief Encrypts @p len bytes; only when established().
  Status WritePlaintext(const uint8_t* data, size_t len);
  /// @brief Queues close_notify.
  void Shutdown();
  /// @brief Moves every pending ciphertext byte into @p out.
  void DrainCiphertext(Buffer& out);
  /// @return Ciphertext bytes waiting to be drained.
  size_t pending_ciphertext() const;

  State state() const noexcept { return state_; }
  bool established() const noexcept { return state_ == State::kEstablished; }
  /// @return True once the peer's close_notify has arrived.
  bool peer_closed() const noexcept { return peer_closed_; }
  /// @return The verified peer's identities (valid once established).
  const PeerIdentity& peer_identity() const noexcept { return peer_; }

 private:
  Status Fail(int ssl_error);

  std::shared_ptr<const TlsContext> context_;
  SSL* ssl_ = nullptr;
  BIO* rbio_ = nullptr;  // Observer; ssl_ owns it.
  BIO* wbio_ = nullptr;  // Observer; ssl_ owns it.
  std::string peer_host_;
  State state_ = State::kHandshaking;
  bool peer_closed_ = false;
  PeerIdentity peer_;
};

}  // namespace pipegate
