#include "support/files.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

namespace pipegate::testing {

TempDir::TempDir() {
  char pattern[] = "/tmp/pg-XXXXXX";
  if (mkdtemp(pattern) == nullptr) {
    std::cerr << "TempDir: mkdtemp failed: " << std::strerror(errno) << "\n";
    std::abort();
  }
  path_ = pattern;
}

TempDir::~TempDir() {
  const char* keep = std::getenv("PIPEGATE_TEST_KEEP_TMP");
  if (keep != nullptr && std::string(keep) == "1") {
    std::cerr << "TempDir: keeping " << path_ << "\n";
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::Join(const std::string& name) const { return path_ + "/" + name; }

std::string TempDir::Unique(const std::string& prefix, const std::string& suffix) {
  return Join(prefix + "-" + std::to_string(counter_++) + suffix);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

bool WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.close();
  // 0644 whatever the umask: a group-writable config or key would be refused.
  return static_cast<bool>(out) && chmod(path.c_str(), 0644) == 0;
}

std::optional<uint64_t> FileSize(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    return std::nullopt;
  }
  return static_cast<uint64_t>(st.st_size);
}

bool PathExists(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0;
}

bool IsFifo(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0 && S_ISFIFO(st.st_mode);
}

bool IsSocket(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

bool MakeFifo(const std::string& path, mode_t mode) { return mkfifo(path.c_str(), mode) == 0; }

std::string ReplaceAll(std::string text, const std::string& from, const std::string& to) {
  if (from.empty()) {
    return text;
  }
  size_t pos = 0;
  while ((pos = text.find(from, pos)) != std::string::npos) {
    text.replace(pos, from.size(), to);
    pos += to.size();
  }
  return text;
}

std::string Tail(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) {
    return text;
  }
  return "[...]" + text.substr(text.size() - max_bytes);
}

}  // namespace pipegate::testing
