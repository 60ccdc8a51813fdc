#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "support/files.h"
#include "support/process.h"
#include "support/timing.h"

namespace pipegate::testing {

/// @brief One `[[export]]` table of the gateway config (SPEC §3, §4).
struct ExportSpec {
  std::string name;
  std::string kind = "fifo";   ///< "fifo" or "unix".
  std::string access;          ///< "read", "write", "duplex"; empty omits the key.
  std::string path;            ///< Empty: `<tempdir>/<name>.fifo` or `.sock`.
  std::optional<bool> create;  ///< Emitted only when set.
  std::string mode;            ///< e.g. "0600"; empty omits the key.
  std::vector<std::string> allow = {"alice"};
  std::optional<int> max_clients;  ///< Emitted only when set.
  /// Raw lines appended to the end of the `[[export]]` table (e.g. `connect_as = ...`, or
  /// `[[export.map]]` entries, which must come last).
  std::string extra_toml;
  /// kind = "exec": the command (argv; no `path` is written) and the timeout in seconds
  /// (emitted only when set).
  std::vector<std::string> command;
  std::optional<double> timeout_s;

  /// @brief A `fifo`/`read` export that creates its FIFO (mode 0600), allowed to alice.
  static ExportSpec FifoRead(std::string name);
  /// @brief A `fifo`/`write` export that creates its FIFO (mode 0600), allowed to alice.
  static ExportSpec FifoWrite(std::string name);
  /// @brief A `unix` export of the socket at `path`, allowed to alice.
  static ExportSpec Unix(std::string name, std::string path);
  /// @brief An `exec` export running `command`, allowed to alice.
  static ExportSpec Exec(std::string name, std::vector<std::string> command);
};

/// @brief What the gateway config says besides its exports.
struct GatewayOptions {
  /// The one listen address, on 127.0.0.1 or [::1]. Keep port 0 (a free port, read back from the
  /// log) except to restart a gateway on the port a killed one used.
  std::string listen = "127.0.0.1:0";
  std::string cert = "gateway.crt";  ///< Relative to the PKI dir unless absolute.
  std::string key = "gateway.key";
  std::string client_ca = "ca.crt";
  std::vector<ExportSpec> exports;
  /// Unset: PIPEGATE_TEST_WORKERS if that is set, else the gateway's default (one per core).
  std::optional<int> workers;
  std::string extra_gateway_toml;  ///< Raw lines appended to the [gateway] table.
  /// Environment changes for the gateway process (ProcessOptions::env).
  std::vector<std::pair<std::string, std::optional<std::string>>> env;
  /// Argv run in front of `pipegated --config FILE`, which it must exec (e.g. `unshare ... sh
  /// -c`), so that the gateway keeps its pid and its signals (as ClientOptions::wrapper).
  std::vector<std::string> wrapper;
};

/// @brief GatewayOptions with the test PKI's gateway certificate and these exports.
GatewayOptions WithExports(std::vector<ExportSpec> exports);

/// @brief Runs `pipegated` on a config written from GatewayOptions, on 127.0.0.1 port 0.
///
/// Start() writes `<tempdir>/gw-N.toml`, starts the gateway with stdout and stderr appended to
/// `gw-N.log`, and polls the log until `listening on 127.0.0.1:PORT` appears (or the gateway
/// exits). It then waits (bounded) until every `create = true` FIFO exists: local programs must be
/// able to open it before any remote client comes (else `echo > path` would make a regular file).
/// The destructor stops the gateway (SIGTERM, then SIGKILL), and if the test has failed it prints
/// the end of the gateway log. Ownership: owns the gateway Process; borrows the TempDir, which must
/// outlive it.
class GatewayFixture {
 public:
  GatewayFixture(TempDir& dir, GatewayOptions options);
  ~GatewayFixture();
  GatewayFixture(const GatewayFixture&) = delete;
  GatewayFixture& operator=(const GatewayFixture&) = delete;

  /// @brief Writes the config and starts the gateway; see the class comment.
  /// @param timeout Nominal time to wait for the listening line.
  ::testing::AssertionResult Start(Duration timeout = Duration(15000));

  /// @return The TOML the gateway runs with.
  std::string ConfigToml() const;
  /// @return The config file path (valid after Start()).
  const std::string& config_path() const { return config_path_; }
  /// @return The port from the log (valid after Start()).
  uint16_t port() const { return port_; }
  /// @return The gateway pid, or -1.
  pid_t pid() const { return process_ ? process_->pid() : -1; }
  /// @return `pipe://127.0.0.1:PORT/name` (`[::1]` for a gateway listening there).
  std::string Address(const std::string& name) const;
  /// @return `pipe://127.0.0.1:PORT` (or `[::1]`).
  std::string BaseAddress() const;
  /// @return The local path the export `name` uses.
  std::string ExportPath(const std::string& name) const;
  /// @return Everything the gateway logged so far.
  std::string Log() const;
  /// @return True while the gateway runs.
  bool Running();

  /// @brief Replaces the config file with one made from `options` (same temp dir), for SIGHUP.
  /// @return False if the file could not be written.
  bool RewriteConfig(GatewayOptions options);
  /// @brief Replaces the config file with raw text (e.g. a broken one).
  bool RewriteConfigText(const std::string& toml);
  /// @brief Sends `sig` (e.g. SIGHUP) to the gateway.
  void Signal(int sig);

  /// @brief SIGTERM, then wait. @param timeout Nominal. @return As Process::Wait.
  std::optional<int> Stop(Duration timeout = Duration(15000));
  /// @brief SIGKILL (a crash, as far as clients can tell).
  void Kill();

 private:
  TempDir& dir_;
  GatewayOptions options_;
  std::string config_path_;
  std::string log_path_;
  uint16_t port_ = 0;
  std::string host_ = "127.0.0.1";  ///< As the listening line names it.
  std::unique_ptr<Process> process_;
};

}  // namespace pipegate::testing
