#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "ossl/ossl_ptr.h"

namespace pipegate::testing {

/// @brief Streaming SHA-256 through OpenSSL EVP.
///
/// Ownership: owns its EVP_MD_CTX. Thread: one thread at a time. Not copyable.
class Sha256 {
 public:
  Sha256();
  /// @brief Adds bytes to the digest.
  void Update(const void* data, size_t size);
  void Update(std::string_view data) { Update(data.data(), data.size()); }
  /// @brief Finishes the digest; the object must not be updated afterwards.
  /// @return 64 lowercase hex digits.
  std::string HexDigest();
  /// @return How many bytes went in.
  uint64_t size() const { return size_; }

 private:
  ossl::EvpMdCtxPtr ctx_;
  uint64_t size_ = 0;
};

/// @brief SHA-256 of a file's contents, as 64 hex digits, or "error: ..." if it cannot be read.
std::string Sha256Hex(const std::string& path);

/// @brief SHA-256 of a byte string, as 64 hex digits.
std::string Sha256HexOf(std::string_view data);

/// @brief A deterministic pseudo-random byte stream: the AES-128-CTR keystream under a key
/// derived from `seed`. Fast (GB/s), and the same seed always gives the same bytes, so a test can
/// regenerate what it sent instead of keeping it.
class RandomStream {
 public:
  explicit RandomStream(uint64_t seed);
  /// @brief Fills `out` with the next `size` bytes of the stream.
  void Fill(void* out, size_t size);
  /// @return The next `size` bytes as a string.
  std::string Next(size_t size);

 private:
  ossl::EvpCipherCtxPtr ctx_;
};

/// @brief Writes `size` bytes of RandomStream(seed) to `path`.
/// @return The SHA-256 hex of what was written, or "error: ..." on failure.
std::string WriteRandomFile(const std::string& path, uint64_t size, uint64_t seed);

/// @brief SHA-256 hex of the first `size` bytes of RandomStream(seed), without storing them.
std::string RandomStreamSha256(uint64_t size, uint64_t seed);

/// @brief FNV-1a 64-bit hash, for cheap per-record checksums in generated test data.
uint64_t Fnv1a64(std::string_view data);

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * 1024;

}  // namespace pipegate::testing
