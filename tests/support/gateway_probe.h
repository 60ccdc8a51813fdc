#pragma once

// What abuse and hostile-client tests observe of a running gateway from outside: its RSS, its
// descriptors, its counters (SIGUSR1), and whether an honest client still gets through.

#include <sys/resource.h>
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/files.h"
#include "support/gateway_fixture.h"
#include "support/timing.h"

namespace pipegate::testing {

/// After an abuse, RSS may stay this much above the baseline (allocator caches, TLS context
/// caches); a leak of what the abuse allocated (hundreds of connections) is far more.
inline constexpr uint64_t kRssSlack = uint64_t{16} << 20;

/// Under AddressSanitizer freed memory sits in a quarantine and RSS says nothing about leaks
/// (LeakSanitizer does that job); ThreadSanitizer's allocator and shadow memory likewise keep
/// RSS up after the abuse ends (180 MiB after 500 connections, against 29 MiB before). RSS
/// figures are still reported, but not checked; the ci and asan stages check the leaks.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kCheckRss = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kCheckRss = false;
#else
inline constexpr bool kCheckRss = true;
#endif
#else
inline constexpr bool kCheckRss = true;
#endif
/// Likewise for speed ratios measured beside load: a sanitized Debug build is several times
/// slower, and what it measures says little about the product.
inline constexpr bool kCheckSpeed = kCheckRss;

/// @brief Raises the soft open-file limit of the test process, which the gateway inherits.
void RaiseFdLimit(rlim_t want);

/// @return Sockets the process holds (listeners included), -1 if it is gone.
int CountSockets(pid_t pid);
/// @return Descriptors the process holds, -1 if it is gone.
int CountFds(pid_t pid);

/// @return Every counter, from the line the gateway logs on SIGUSR1.
std::map<std::string, uint64_t> ReadCounters(GatewayFixture& gw);

/// @return The gateway's resident memory in bytes (0 if unknown).
uint64_t Rss(GatewayFixture& gw);
/// @return @p bytes as "12.3 MiB".
std::string MiB(uint64_t bytes);

/// @brief `pipegate cat` of the fifo read export @p name, with one line written locally: the
/// honest client every abuse test checks. Fails if the gateway still holds the FIFO from an
/// earlier stream after 5 s, or if the cat takes longer than @p limit (scaled).
::testing::AssertionResult HonestCatWorks(TempDir& dir, GatewayFixture& gw,
                                          const std::string& name = "logs",
                                          Duration limit = Duration(5000));

/// @brief Waits until the gateway's RSS is within kRssSlack of @p baseline.
::testing::AssertionResult RssSettles(GatewayFixture& gw, uint64_t baseline, uint64_t* after);

/// @brief Records a figure as a test property and prints it.
void Report(const std::string& what, const std::string& figures);

/// @brief A gateway on loopback to abuse, with the `logs` export for the honest client, and
/// the checks that end every abuse test.
class AbuseFixture : public ::testing::Test {
 protected:
  void SetUp() override;

  /// @brief Starts a gateway with the `logs` export, @p extra exports and a [limits] table,
  /// then measures the baseline RSS after one honest round trip.
  void StartGateway(const std::string& limits_toml, std::vector<ExportSpec> extra = {},
                    const std::string& gateway_toml = "");

  /// @brief The gateway still runs, its RSS settles near the baseline, an honest cat works.
  void ExpectRecovered(const std::string& what);

  TempDir dir_;
  std::unique_ptr<GatewayFixture> gw_;
  uint64_t baseline_rss_ = 0;
};

}  // namespace pipegate::testing
