#include "support/data.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace pipegate::testing {
namespace {

constexpr size_t kChunk = 256 * 1024;

std::string Hex(const unsigned char* bytes, size_t size) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) {
    out.push_back(kDigits[bytes[i] >> 4]);
    out.push_back(kDigits[bytes[i] & 0xf]);
  }
  return out;
}

// OpenSSL failures here mean a broken installation; the test cannot go on meaningfully.
void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "OpenSSL call failed: %s\n", what);
    std::abort();
  }
}

}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  Check(ctx_ != nullptr, "EVP_MD_CTX_new");
  Check(EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1, "EVP_DigestInit_ex");
}

void Sha256::Update(const void* data, size_t size) {
  Check(EVP_DigestUpdate(ctx_.get(), data, size) == 1, "EVP_DigestUpdate");
  size_ += size;
}

std::string Sha256::HexDigest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  Check(EVP_DigestFinal_ex(ctx_.get(), digest, &length) == 1, "EVP_DigestFinal_ex");
  return Hex(digest, length);
}

std::string Sha256Hex(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return "error: open " + path + ": " + std::strerror(errno);
  }
  Sha256 sha;
  std::vector<char> buffer(kChunk);
  while (true) {
    const ssize_t n = read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      const std::string message = "error: read " + path + ": " + std::strerror(errno);
      close(fd);
      return message;
    }
    if (n == 0) {
      break;
    }
    sha.Update(buffer.data(), static_cast<size_t>(n));
  }
  close(fd);
  return sha.HexDigest();
}

std::string Sha256HexOf(std::string_view data) {
  Sha256 sha;
  sha.Update(data);
  return sha.HexDigest();
}

RandomStream::RandomStream(uint64_t seed) : ctx_(EVP_CIPHER_CTX_new()) {
  Check(ctx_ != nullptr, "EVP_CIPHER_CTX_new");
  unsigned char key[16] = {'p', 'i', 'p', 'e', 'g', 'a', 't', 'e'};
  for (int i = 0; i < 8; ++i) {
    key[8 + i] = static_cast<unsigned char>(seed >> (8 * i));
  }
  const unsigned char iv[16] = {};
  Check(EVP_EncryptInit_ex(ctx_.get(), EVP_aes_128_ctr(), nullptr, key, iv) == 1,
        "EVP_EncryptInit_ex");
}

void RandomStream::Fill(void* out, size_t size) {
  auto* bytes = static_cast<unsigned char*>(out);
  std::memset(bytes, 0, size);
  while (size > 0) {
    const size_t step = size < kChunk ? size : kChunk;
    int written = 0;
    Check(EVP_EncryptUpdate(ctx_.get(), bytes, &written, bytes, static_cast<int>(step)) == 1,
          "EVP_EncryptUpdate");
    bytes += step;
    size -= step;
  }
}

std::string RandomStream::Next(size_t size) {
  std::string out(size, '\0');
  Fill(out.data(), size);
  return out;
}

std::string WriteRandomFile(const std::string& path, uint64_t size, uint64_t seed) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return "error: open " + path + ": " + std::strerror(errno);
  }
  RandomStream random(seed);
  Sha256 sha;
  std::vector<char> buffer(kChunk);
  while (size > 0) {
    const size_t step = size < kChunk ? static_cast<size_t>(size) : kChunk;
    random.Fill(buffer.data(), step);
    sha.Update(buffer.data(), step);
    size_t done = 0;
    while (done < step) {
      const ssize_t n = write(fd, buffer.data() + done, step - done);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0) {
        const std::string message = "error: write " + path + ": " + std::strerror(errno);
        close(fd);
        return message;
      }
      done += static_cast<size_t>(n);
    }
    size -= step;
  }
  if (close(fd) != 0) {
    return "error: close " + path + ": " + std::strerror(errno);
  }
  return sha.HexDigest();
}

std::string RandomStreamSha256(uint64_t size, uint64_t seed) {
  RandomStream random(seed);
  Sha256 sha;
  std::vector<char> buffer(kChunk);
  while (size > 0) {
    const size_t step = size < kChunk ? static_cast<size_t>(size) : kChunk;
    random.Fill(buffer.data(), step);
    sha.Update(buffer.data(), step);
    size -= step;
  }
  return sha.HexDigest();
}

uint64_t Fnv1a64(std::string_view data) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (const char c : data) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

}  // namespace pipegate::testing
