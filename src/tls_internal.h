#pragma once
// Helpers that the two halves of the TLS code share: tls.cc (contexts, certificate files, CRLs,
// pins, peer identities) defines them; tls_session.cc (TlsSession: handshake, records,
// alerts) uses them too. Not part of the public API (include/pipegate/tls.h).

#include <string>

#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace pipegate::tls_internal {

// Takes the reason of the most recent OpenSSL error and empties the queue.
std::string PopErrorQueue();

// Says in words why the peer's certificate was refused.
std::string DescribeVerifyError(long result, bool server, const std::string& host);

// Says in words what a TLS alert from the peer means.
std::string DescribeAlert(const std::string& reason, bool server);

// True for an alert by which the peer refused our certificate without saying exactly why.
bool IsVagueCertificateAlert(const std::string& reason);

// An ASN.1 time as "YYYY-MM-DD HH:MM:SS UTC", or "?" if it cannot be read.
std::string FormatTime(const ASN1_TIME* t);

// The certificate's DER encoding; empty on failure.
std::string CertificateDer(X509* cert);

// The raw SHA-256 of the certificate's SubjectPublicKeyInfo (what a pin names); empty on failure
// or for a null certificate.
std::string SpkiSha256(X509* cert);

}  // namespace pipegate::tls_internal
