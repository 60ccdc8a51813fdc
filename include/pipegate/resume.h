#pragma once

#include <cstdint>
#include <string>

#include "pipegate/frame.h"
#include "pipegate/tls.h"

namespace pipegate {

// Session resumption secrets (docs/protocol.md "Resume"). The resume key is never sent: both
// sides derive it from the TLS connection that created (or last resumed) the session, and a
// RESUME proves knowledge of it bound to the *new* connection, so a captured RESUME is useless
// on any other connection.
inline constexpr const char* kResumeKeyLabel = "EXPORTER-pipegate-resume";
inline constexpr const char* kResumeBindLabel = "EXPORTER-pipegate-bind";

/// @return 16 random bytes.
std::string NewSessionId();

/// @brief K = TLS-Exporter(kResumeKeyLabel, context = session id, 32) of @p tls.
/// @return The key, or empty if the session is not established.
std::string DeriveResumeKey(const TlsSession& tls, const uint8_t (&session_id)[kSessionIdSize]);

/// @brief proof = HMAC-SHA256(key, "pipegate resume v1" || TLS-Exporter(kResumeBindLabel, 32)).
bool ComputeResumeProof(const std::string& key, const TlsSession& tls,
                        uint8_t (&proof)[kResumeProofSize]);

/// @brief Checks @p proof in constant time.
bool VerifyResumeProof(const std::string& key, const TlsSession& tls,
                       const uint8_t (&proof)[kResumeProofSize]);

}  // namespace pipegate
