#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pipegate/acl.h"
#include "pipegate/buffer.h"
#include "pipegate/status.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct bio_st BIO;
typedef struct x509_st X509;
typedef struct x509_store_ctx_st X509_STORE_CTX;

namespace pipegate {

// Handshakes refused, by cause: X(name, what it counts). The one list from which the struct
// and every output (logs, JSON) are made.
#define PIPEGATE_TLS_REFUSAL_COUNTERS(X)                                          \
  X(expired, "client certificates past their notAfter")                           \
  X(not_yet_valid, "client certificates before their notBefore")                  \
  X(revoked, "client certificates listed in the CRL")                             \
  X(unknown_ca, "client certificates that do not chain to client_ca")             \
  X(wrong_usage, "client certificates whose extended key usage lacks clientAuth") \
  X(no_certificate, "clients that sent no certificate")                           \
  X(not_tls, "connections whose first bytes were not a TLS ClientHello")          \
  X(other, "other handshake failures (ALPN, versions, alerts)")

/// @brief Why the gateway refused clients during the TLS handshake, one counter per class.
///
/// Thread: the counters are atomic; every worker bumps them.
struct TlsRefusalCounters {
#define PIPEGATE_COUNTER_FIELD(name, help) std::atomic<uint64_t> name{0};
  PIPEGATE_TLS_REFUSAL_COUNTERS(PIPEGATE_COUNTER_FIELD)
#undef PIPEGATE_COUNTER_FIELD
};

/// @brief Files and policy for the gateway's side of mutual TLS.
struct TlsServerOptions {
  std::string cert;          ///< PEM certificate chain of the gateway (ECDSA or RSA key).
  std::string key;           ///< PEM private key.
  std::string client_ca;     ///< PEM CA bundle that client certificates must chain to.
  std::string crl;           ///< PEM CRLs checked for client certificates; "" = no CRL check.
  bool allow_tls12 = false;  ///< Also accept TLS 1.2, with forward-secret AEAD suites only.
  /// Where handshake refusals are counted; may be null. Must outlive the context.
  TlsRefusalCounters* counters = nullptr;
};

/// @brief Files and policy for the bridge's side of mutual TLS.
struct TlsClientOptions {
  std::string cert;  ///< PEM client certificate.
  std::string key;   ///< PEM private key.
  std::string ca;    ///< PEM CA bundle that the gateway's certificate must chain to.
  /// The name (or IP address) the gateway's certificate must carry, and the SNI sent, instead
  /// of the host dialled (`--servername`). Empty: the host dialled.
  std::string server_name;
  /// SHA-256 digests (32 raw bytes each) of SubjectPublicKeyInfo; when not empty the gateway's
  /// key must match one of them, on top of the CA check (`--pin`).
  std::vector<std::string> pins;
};

/// @return What identifies the files at @p paths as they are now, to tell when a certificate,
/// key, CA bundle or CRL has been replaced: for each path the file it leads to (symlinks
/// followed, so that a Kubernetes Secret volume's `..data` swap counts), its size and times, or
/// the error stat() gives; an empty path counts as "none". Equal results mean unchanged files.
/// Thread: any.
std::string TlsFilesFingerprint(const std::vector<std::string>& paths);

/// @brief Parses a `--pin` value: "sha256:" then the SHA-256 of the gateway's
/// SubjectPublicKeyInfo in base64 (44 characters, as HPKP and curl write it) or hex (64).
/// @return The 32 raw digest bytes, or kUsage saying what is wrong.
Result<std::string> ParseSpkiPin(std::string_view text);

/// @brief Formats 32 raw digest bytes as "sha256:BASE64".
std::string FormatSpkiPin(std::string_view digest);

/// @brief Computes the pin of the certificate in a PEM file (its first certificate).
Result<std::string> SpkiPinOfCertificateFile(const std::string& path);

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
  /// @brief Loads the bridge's certificate, key and CA. A file that cannot be used (missing,
  /// unreadable, unsafe permissions, not PEM, a key that does not match) is kTls, since SPEC §7
  /// counts certificate and CA failures as "TLS failed" (exit 2); the message names the file and
  /// the cause. A malformed pin is kUsage.
  static Result<std::shared_ptr<const TlsContext>> NewClient(const TlsClientOptions& options);

  /// @brief A problem with one of the gateway's TLS files, named by its [gateway] key.
  struct FileProblem {
    std::string key;  ///< "cert", "key", "client_ca" or "crl".
    Status status;    ///< kUsage, naming the file and the cause.
  };
  /// @brief Checks each of the gateway's TLS files on its own: its permissions, that it
  /// loads, that the key matches the certificate, and that the CRL is signed by a CA of the
  /// bundle. Unlike NewServer(), which stops at the first problem, it reports every one.
  /// @return No problems exactly when NewServer(@p options) succeeds.
  static std::vector<FileProblem> CheckServerFiles(const TlsServerOptions& options);

  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  /// @return True for a gateway context.
  bool is_server() const noexcept { return server_; }
  /// @return The OpenSSL context (owned by this object).
  SSL_CTX* native() const noexcept { return ctx_.get(); }
  /// @return The `--servername` override (client), or "".
  const std::string& server_name() const noexcept { return server_name_; }
  /// @return The accepted SPKI digests (client), empty when not pinning.
  const std::vector<std::string>& pins() const noexcept { return pins_; }
  /// @return What a resume is judged by in this context's own certificate: the SHA-256 of its
  /// SubjectPublicKeyInfo (the key) and every identity it names (PeerIdentity::All()), as one
  /// string; two contexts with equal results may resume each other's sessions. "" without a
  /// certificate.
  std::string OwnResumeIdentity() const;
  /// @return Where handshake refusals are counted (server), or null.
  TlsRefusalCounters* counters() const noexcept { return counters_; }

  /// @brief Verifies a client's certificate chain again, as recorded at its handshake
  /// (PeerIdentity::chain_der), against this context's CA bundle and CRL: after a reload, a
  /// client whose certificate the new files no longer accept (revoked, CA removed, expired
  /// meanwhile) can be told apart from one they still accept.
  /// @return OK, or kTls with the reason in the words of a failed handshake.
  Status VerifyPeerAgain(const PeerIdentity& peer) const;

 private:
  // Frees the SSL_CTX (defined in tls.cc, so this header needs no OpenSSL header).
  struct FreeCtx {
    void operator()(SSL_CTX* ctx) const noexcept;
  };
  using CtxPtr = std::unique_ptr<SSL_CTX, FreeCtx>;

  TlsContext(CtxPtr ctx, bool server) : ctx_(std::move(ctx)), server_(server) {}
  CtxPtr ctx_;
  bool server_;
  std::string server_name_;
  std::vector<std::string> pins_;
  TlsRefusalCounters* counters_ = nullptr;
};

/// @brief Extracts CN, DNS and URI SANs from a certificate.
PeerIdentity IdentityFromCertificate(X509* cert);

/// @brief A sans-I/O TLS 1.3 session over in-memory BIOs (Node's TLSWrap, h2o's socket): a memory
/// BIO in, a sink BIO that appends records to a Buffer out.
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
  /// @brief Housekeeping, about once a second. OpenSSL's two record buffers (about 17 KiB
  /// each) are kept from the moment a period sees kBusyRecords feeds or writes, which spares
  /// an allocation and a free per record, and given back here once a whole period passed with
  /// none, so that an idle connection holds neither; one that sends a few records now and then
  /// (set-up, keepalive) never takes them for longer than a record.
  void ReleaseIdleBuffers();
  /// @return Whether OpenSSL keeps its record buffers between records now.
  bool keeps_record_buffers() const noexcept { return keep_buffers_; }

  State state() const noexcept { return state_; }
  bool established() const noexcept { return state_ == State::kEstablished; }
  /// @return True once the peer's close_notify has arrived.
  bool peer_closed() const noexcept { return peer_closed_; }
  /// @return The verified peer's identities (valid once established).
  const PeerIdentity& peer_identity() const noexcept { return peer_; }
  /// @return SHA-256 of the peer certificate's SubjectPublicKeyInfo (32 raw bytes), once
  /// established.
  const std::string& peer_spki_sha256() const noexcept { return peer_spki_; }
  /// @brief Derives @p out_len bytes bound to this connection (TLS exporter, RFC 8446 §7.5).
  /// @return False if the session is not established.
  bool ExportKeyingMaterial(const char* label, const uint8_t* context, size_t context_len,
                            uint8_t* out, size_t out_len) const;

 private:
  Status Fail(int ssl_error);
  // Counts a feed or a write; a busy session keeps its record buffers (ReleaseIdleBuffers).
  void NoteRecords();
  std::string DescribeOwnCertificateProblem() const;
  void CountRefusal(long verify_result, const std::string& reason) const;
  /// OpenSSL verify callback of pinning client contexts (installed by TlsContext::NewClient).
  static int OnVerify(int preverify_ok, X509_STORE_CTX* store) noexcept;
  friend class TlsContext;

  // Frees the SSL and, with it, both of its BIOs (defined in tls.cc).
  struct FreeSsl {
    void operator()(SSL* ssl) const noexcept;
  };

  std::shared_ptr<const TlsContext> context_;
  Buffer ciphertext_out_;  // Records the sink BIO wrote, waiting for DrainCiphertext().
  // Declared after ciphertext_out_, so it is freed first: its sink BIO points at that buffer.
  std::unique_ptr<SSL, FreeSsl> ssl_;
  BIO* rbio_ = nullptr;  // Observer; ssl_ owns it.
  std::string peer_host_;
  State state_ = State::kHandshaking;
  bool peer_closed_ = false;
  // Feeds and writes in one housekeeping period that make a session busy.
  static constexpr uint32_t kBusyRecords = 16;
  bool keep_buffers_ = false;                // SSL_MODE_RELEASE_BUFFERS is cleared.
  uint32_t records_since_housekeeping_ = 0;  // Saturates at kBusyRecords.
  PeerIdentity peer_;
  std::string peer_spki_;
  std::string pin_mismatch_;  ///< The gateway's actual pin, when --pin refused it.
};

}  // namespace pipegate
