#include "support/pki.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>

#include "support/files.h"
#include "support/process.h"

namespace pipegate::testing {

std::string PkiDir() { return PIPEGATE_TEST_PKI; }

std::string PkiPath(const std::string& name) {
  if (!name.empty() && name[0] == '/') {
    return name;
  }
  return PkiDir() + "/" + name;
}

std::string BinPath(const std::string& name) {
  // PIPEGATE_TEST_PIPEGATE / PIPEGATE_TEST_PIPEGATED run the suite against other binaries, such as
  // installed ones.
  std::string variable = "PIPEGATE_TEST_";
  for (const char c : name) {
    variable += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  const char* override_path = std::getenv(variable.c_str());
  if (override_path != nullptr && *override_path != '\0') {
    return override_path;
  }
  return std::string(PIPEGATE_BIN_DIR) + "/" + name;
}

Identity Identity::Of(const std::string& stem, const std::string& ca) {
  return {PkiPath(stem + ".crt"), PkiPath(stem + ".key"), PkiPath(ca)};
}

::testing::AssertionResult EnsureTestPki() {
  const std::string marker = PkiPath("other/gateway.key");
  if (PathExists(marker)) {
    return ::testing::AssertionSuccess();
  }
  const std::string script = std::string(PIPEGATE_SOURCE_DIR) + "/tests/make_test_pki.sh";
  if (!PathExists(script) || !PathExists(PIPEGATE_CERTS_SCRIPT)) {
    return ::testing::AssertionFailure()
           << "test PKI missing at " << PkiDir() << " and " << script << " or "
           << PIPEGATE_CERTS_SCRIPT << " is missing; run `ctest -R make_test_pki` first";
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(PkiDir()).parent_path(), ec);
  const std::string lock_path = PkiDir() + ".lock";
  const int lock_fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd >= 0) {
    flock(lock_fd, LOCK_EX);
  }
  ::testing::AssertionResult result = ::testing::AssertionSuccess();
  if (!PathExists(marker)) {
    const std::string scratch = std::filesystem::temp_directory_path().string();
    const CommandResult made =
        RunCommand({"bash", script, PIPEGATE_CERTS_SCRIPT, PkiDir()}, scratch, Duration(120000));
    if (made.status != 0 || !PathExists(marker)) {
      result = ::testing::AssertionFailure()
               << "make_test_pki.sh failed (" << DescribeStatus(made.status)
               << "): " << Tail(made.out + made.err);
    }
  }
  if (lock_fd >= 0) {
    flock(lock_fd, LOCK_UN);
    close(lock_fd);
  }
  return result;
}

std::string PinOf(const std::string& stem) {
  TempDir scratch;
  CommandResult r =
      RunCommand({"bash", PIPEGATE_CERTS_SCRIPT, "pin", PkiPath(stem + ".crt")}, scratch.path());
  EXPECT_EQ(r.status, 0) << r.err;
  std::string pin = r.status == 0 ? r.out : "";
  while (!pin.empty() && pin.back() == '\n') pin.pop_back();
  return pin;
}

}  // namespace pipegate::testing
