// pipegated: parses flags and hands over to Gateway; nothing else lives here.
#include <signal.h>

#include <algorithm>
#include <cctype>
#include <iostream>
#include <string>

#include "pipegate/config.h"
#include "pipegate/log.h"

#include "gateway.h"
#include "identity_helper.h"
#include <CLI/CLI.hpp>

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);  // A vanished reader is an EPIPE to handle, never a crash.
  CLI::App app{"pipegated: export local FIFOs and Unix sockets over mutual TLS"};
  std::string config;
  std::string check;
  bool verbose = false;
  bool quiet = false;
  std::string log_format;
  bool identity_helper = false;
  app.add_option("--config,-c", config, "Serve this TOML configuration file");
  // Internal: pipegated re-executes itself with this flag as its identity helper.
  app.add_flag("--identity-helper", identity_helper)->group("");
  app.add_option("--check-config", check, "Validate a configuration file and exit");
  app.add_flag("-v,--verbose", verbose, "Log debug messages (categories: PIPEGATE_DEBUG)");
  app.add_flag("-q,--quiet", quiet, "Log warnings and errors only");
  app.add_option("--log-format", log_format,
                 "Log lines as 'text' or 'json' (one object per line); overrides log_format")
      ->check(CLI::IsMember({"text", "json"}));
  app.set_version_flag("--version", std::string("pipegated ") + PIPEGATE_VERSION);
  // CLI11 reports usage errors by exception; they are caught here, at the edge of main.
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version: printed, exit 0.
    // One line, `pipegated: ...`, as SPEC §7 wants a usage error (CLI11's own report is two).
    std::string what = e.what();
    std::replace(what.begin(), what.end(), '\n', ' ');
    if (!what.empty()) {
      what[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(what[0])));
    }
    std::cerr << "pipegated: " << pipegate::SanitizeControlBytes(what, 512)
              << " (see 'pipegated --help')\n";
    return 1;
  }
  pipegate::InitLogging(verbose ? pipegate::LogLevel::kDebug
                        : quiet ? pipegate::LogLevel::kWarn
                                : pipegate::LogLevel::kInfo,
                        identity_helper ? "pipegated-helper" : "pipegated");
  pipegate::LogFormat format = pipegate::LogFormat::kText;
  if (!log_format.empty()) {
    pipegate::ParseLogFormat(log_format, &format);  // CLI11 has checked the value.
    pipegate::SetLogFormat(format);
  }
  if (identity_helper) return pipegate::gateway::RunIdentityHelper(config);
  if (!check.empty()) {
    pipegate::ConfigParseResult parsed = pipegate::LoadGatewayConfig(check);
    if (!parsed.config) {
      std::cerr << pipegate::FormatConfigErrors(check, parsed.errors);
      return 1;
    }
    std::vector<pipegate::ConfigError> errors =
        pipegate::gateway::Gateway::CheckConfig(*parsed.config);
    if (!errors.empty()) {
      std::cerr << pipegate::FormatConfigErrors(check, errors);
      return 1;
    }
    std::cout << check << ": OK (" << parsed.config->exports.size() << " export(s))\n";
    return 0;
  }
  if (config.empty()) {
    std::cerr << "pipegated: --config FILE is required (or --check-config FILE)\n";
    return 1;
  }
  // Until Gateway::Run() has installed its handlers, the stop, reload and counter signals wait
  // (blocked) instead of killing the process with their default action; threads started
  // meanwhile inherit the mask, so the signals always reach the main loop.
  sigset_t signals;
  sigemptyset(&signals);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&signals, sig);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  pipegate::gateway::Gateway gateway(config);
  if (!log_format.empty()) gateway.OverrideLogFormat(format);
  return gateway.Run();
}
