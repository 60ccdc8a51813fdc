#include "pipegate/resume.h"

#include <cstring>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "pipegate/log.h"

namespace pipegate {

std::string NewSessionId() {
  std::string id(kSessionIdSize, '\0');
  PG_CHECK(RAND_bytes(reinterpret_cast<unsigned char*>(id.data()), kSessionIdSize) == 1);
  return id;
}

std::string DeriveResumeKey(const TlsSession& tls, const uint8_t (&session_id)[kSessionIdSize]) {
  std::string key(32, '\0');
  if (!tls.ExportKeyingMaterial(kResumeKeyLabel, session_id, kSessionIdSize,
                                reinterpret_cast<uint8_t*>(key.data()), key.size())) {
    return {};
  }
  return key;
}

bool ComputeResumeProof(const std::string& key, const TlsSession& tls,
                        uint8_t (&proof)[kResumeProofSize]) {
  if (key.empty()) return false;
  static constexpr char kContext[] = "pipegate resume v1";
  uint8_t message[sizeof kContext - 1 + 32];
  std::memcpy(message, kContext, sizeof kContext - 1);
  if (!tls.ExportKeyingMaterial(kResumeBindLabel, nullptr, 0, message + sizeof kContext - 1, 32)) {
    return false;
  }
  unsigned int len = 0;
  return HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), message, sizeof message,
              proof, &len) != nullptr &&
         len == kResumeProofSize;
}

bool VerifyResumeProof(const std::string& key, const TlsSession& tls,
                       const uint8_t (&proof)[kResumeProofSize]) {
  uint8_t expected[kResumeProofSize];
  if (!ComputeResumeProof(key, tls, expected)) return false;
  return CRYPTO_memcmp(expected, proof, kResumeProofSize) == 0;
}

}  // namespace pipegate
