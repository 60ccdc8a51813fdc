#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace pipegate::testing {

/// @brief A fresh directory under /tmp, removed with everything in it when destroyed.
///
/// The path is short (`/tmp/pg-XXXXXX`, 14 bytes) because Unix socket paths are limited to 107
/// bytes. Set `PIPEGATE_TEST_KEEP_TMP=1` to keep the directory for a post-mortem. Not copyable or
/// movable: helpers keep references to it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  /// @return The directory, without a trailing slash.
  const std::string& path() const { return path_; }

  /// @return `path() + "/" + name`.
  std::string Join(const std::string& name) const;

  /// @brief A name that is unique within this directory: `prefix-N` + `suffix`.
  std::string Unique(const std::string& prefix, const std::string& suffix = "");

 private:
  std::string path_;
  unsigned counter_ = 0;
};

/// @brief Reads a whole file. Returns an empty string if it cannot be read.
std::string ReadFile(const std::string& path);

/// @brief Writes `data` to `path` (created or truncated, mode 0644). @return False on error.
bool WriteFile(const std::string& path, const std::string& data);

/// @return The size of a regular file, or nullopt if it does not exist.
std::optional<uint64_t> FileSize(const std::string& path);

/// @return True if something exists at `path` (lstat succeeds).
bool PathExists(const std::string& path);

/// @return True if `path` is a FIFO (lstat).
bool IsFifo(const std::string& path);

/// @return True if `path` is a Unix socket (lstat).
bool IsSocket(const std::string& path);

/// @brief mkfifo with the given mode. @return False on error.
bool MakeFifo(const std::string& path, mode_t mode = 0600);

/// @brief Replaces `from` in `text` by `to`, every occurrence.
std::string ReplaceAll(std::string text, const std::string& from, const std::string& to);

/// @brief The last `max_bytes` of `text`, for failure messages.
std::string Tail(const std::string& text, size_t max_bytes = 4096);

}  // namespace pipegate::testing
