// Reading the gateway's configuration file: the checks a file must pass before its text is
// parsed (ParseGatewayConfig, in config.cc), and where its relative paths resolve.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>

#include "pipegate/config.h"
#include "pipegate/local_path.h"

namespace pipegate {

namespace {

// Config files are small; anything larger is a mistake (or /dev/zero).
constexpr size_t kMaxConfigBytes = size_t{16} * 1024 * 1024;

}  // namespace

ConfigParseResult LoadGatewayConfig(const std::string& path) {
  auto fail = [](std::string message) {
    ConfigParseResult result;
    result.errors.push_back(ConfigError{0, std::move(message)});
    return result;
  };
  auto errno_message = [](int err) {
    return std::error_code(err, std::generic_category()).message();
  };

  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return fail("cannot open: " + errno_message(errno));
  }
  std::string text;
  struct stat st {};
  if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    close(fd);
    return fail("cannot read: is a directory");
  }
  // The config decides who may reach which local pipe, so anyone who can change it owns the
  // gateway.
  if (Status safe = CheckFilePermissions(path, "configuration file"); !safe.ok()) {
    close(fd);
    return fail(safe.message());
  }
  char buffer[8192];
  for (;;) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      const int err = errno;
      close(fd);
      return fail("cannot read: " + errno_message(err));
    }
    if (n == 0) {
      break;
    }
    text.append(buffer, static_cast<size_t>(n));
    if (text.size() > kMaxConfigBytes) {
      close(fd);
      return fail("cannot read: larger than 16 MiB");
    }
  }
  close(fd);

  // Relative paths in the file resolve against its directory, made absolute so that exports
  // end up with absolute paths whatever the working directory.
  std::error_code ec;
  std::filesystem::path absolute = std::filesystem::absolute(path, ec);
  if (ec) {
    absolute = std::filesystem::path(path);
  }
  return ParseGatewayConfig(text, absolute.lexically_normal().parent_path().string());
}

}  // namespace pipegate
