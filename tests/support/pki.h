#pragma once

#include <string>

#include <gtest/gtest.h>

namespace pipegate::testing {

/// @return The directory of the generated test PKI (PIPEGATE_TEST_PKI).
std::string PkiDir();

/// @return `PkiDir() + "/" + name`, or `name` itself if it is an absolute path.
std::string PkiPath(const std::string& name);

/// @return The path of a built binary: `PIPEGATE_BIN_DIR/name`, unless the environment names
/// another (`PIPEGATE_TEST_PIPEGATE`, `PIPEGATE_TEST_PIPEGATED`).
std::string BinPath(const std::string& name);

/// @brief Makes sure the test PKI exists.
///
/// Under CTest the `make_test_pki` fixture has made it. When the test binary runs on its own, this
/// runs `tests/make_test_pki.sh` once (serialized with a lock file, so parallel runs do not race).
/// @return Success, or why the PKI is missing.
::testing::AssertionResult EnsureTestPki();

/// @brief A client identity: certificate, key and the CA that verifies the gateway.
struct Identity {
  std::string cert;
  std::string key;
  std::string ca;

  /// @brief `PKI/<stem>.crt`, `PKI/<stem>.key`, verified against `PKI/<ca>`.
  /// `Of("other/alice")` is alice issued by the foreign CA.
  static Identity Of(const std::string& stem, const std::string& ca = "ca.crt");
};

/// @return The `--pin` of the test PKI's certificate `<stem>.crt` ("sha256:BASE64"), from
/// `pipegate-certs pin`; a failure to compute it is a test failure (and "" is returned).
std::string PinOf(const std::string& stem);

/// @return alice (CN alice, DNS alice.example, URI spiffe://example.org/ci/alice).
inline Identity Alice() { return Identity::Of("alice"); }
/// @return bob (CN bob).
inline Identity Bob() { return Identity::Of("bob"); }

}  // namespace pipegate::testing
