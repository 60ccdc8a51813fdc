#include "support/gateway_fixture.h"

#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <regex>
#include <sstream>

#include "support/pki.h"

namespace pipegate::testing {
namespace {

// A TOML basic string.
std::string Quote(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
    }
    out += c;
  }
  return out + "\"";
}

// PIPEGATE_TEST_WORKERS=N (1..64) gives every gateway N workers unless its test chose a count.
// Without it the gateway takes one per core, so a 1-core machine would never hand a connection
// to another worker; the TSan stage (scripts/test.sh) sets 2 so that cross-worker paths run.
std::optional<int> WorkersFromEnvironment() {
  const char* text = std::getenv("PIPEGATE_TEST_WORKERS");
  if (text == nullptr || *text == '\0') {
    return std::nullopt;
  }
  char* end = nullptr;
  const long n = std::strtol(text, &end, 10);
  if (*end != '\0' || n < 1 || n > 64) {
    ADD_FAILURE() << "PIPEGATE_TEST_WORKERS=" << text << " is not a count from 1 to 64";
    return std::nullopt;
  }
  return static_cast<int>(n);
}

}  // namespace

ExportSpec ExportSpec::FifoRead(std::string name) {
  ExportSpec spec;
  spec.name = std::move(name);
  spec.kind = "fifo";
  spec.access = "read";
  spec.create = true;
  spec.mode = "0600";
  return spec;
}

ExportSpec ExportSpec::FifoWrite(std::string name) {
  ExportSpec spec = FifoRead(std::move(name));
  spec.access = "write";
  return spec;
}

ExportSpec ExportSpec::Exec(std::string name, std::vector<std::string> command) {
  ExportSpec spec;
  spec.name = std::move(name);
  spec.kind = "exec";
  spec.command = std::move(command);
  return spec;
}

ExportSpec ExportSpec::Unix(std::string name, std::string path) {
  ExportSpec spec;
  spec.name = std::move(name);
  spec.kind = "unix";
  spec.path = std::move(path);
  return spec;
}

GatewayOptions WithExports(std::vector<ExportSpec> exports) {
  GatewayOptions options;
  options.exports = std::move(exports);
  return options;
}

GatewayFixture::GatewayFixture(TempDir& dir, GatewayOptions options)
    : dir_(dir), options_(std::move(options)) {}

GatewayFixture::~GatewayFixture() {
  if (process_ && process_->Running()) {
    process_->Signal(SIGTERM);
    if (!process_->Wait(Duration(5000))) {
      process_->Kill();
    }
  }
  if (::testing::Test::HasFailure() && !log_path_.empty()) {
    std::cerr << "---- pipegated log (" << log_path_ << ") ----\n"
              << Tail(ReadFile(log_path_), 6000) << "\n---- end of pipegated log ----\n";
  }
}

std::string GatewayFixture::ExportPath(const std::string& name) const {
  for (const auto& spec : options_.exports) {
    if (spec.name == name) {
      if (!spec.path.empty()) {
        return spec.path;
      }
      return dir_.Join(spec.name + (spec.kind == "unix" ? ".sock" : ".fifo"));
    }
  }
  return dir_.Join(name + ".fifo");
}

std::string GatewayFixture::ConfigToml() const {
  std::ostringstream toml;
  toml << "[gateway]\n"
       << "listen = [" << Quote(options_.listen) << "]\n"
       << "cert = " << Quote(PkiPath(options_.cert)) << "\n"
       << "key = " << Quote(PkiPath(options_.key)) << "\n"
       << "client_ca = " << Quote(PkiPath(options_.client_ca)) << "\n";
  if (const std::optional<int> workers =
          options_.workers ? options_.workers : WorkersFromEnvironment()) {
    toml << "workers = " << *workers << "\n";
  }
  toml << options_.extra_gateway_toml;
  for (const auto& spec : options_.exports) {
    toml << "\n[[export]]\n"
         << "name = " << Quote(spec.name) << "\n"
         << "kind = " << Quote(spec.kind) << "\n";
    if (!spec.access.empty()) {
      toml << "access = " << Quote(spec.access) << "\n";
    }
    if (spec.kind == "exec") {
      toml << "command = [";
      for (size_t i = 0; i < spec.command.size(); ++i) {
        toml << (i ? ", " : "") << Quote(spec.command[i]);
      }
      toml << "]\n";
      if (spec.timeout_s) toml << "timeout = " << *spec.timeout_s << "\n";
    } else {
      toml << "path = " << Quote(ExportPath(spec.name)) << "\n";
    }
    if (spec.create) {
      toml << "create = " << (*spec.create ? "true" : "false") << "\n";
    }
    if (!spec.mode.empty()) {
      toml << "mode = " << Quote(spec.mode) << "\n";
    }
    toml << "allow = [";
    for (size_t i = 0; i < spec.allow.size(); ++i) {
      toml << (i ? ", " : "") << Quote(spec.allow[i]);
    }
    toml << "]\n";
    if (spec.max_clients) {
      toml << "max_clients = " << *spec.max_clients << "\n";
    }
    toml << spec.extra_toml;
  }
  return toml.str();
}

::testing::AssertionResult GatewayFixture::Start(Duration timeout) {
  if (auto pki = EnsureTestPki(); !pki) {
    return pki;
  }
  const std::string binary = BinPath("pipegated");
  const std::string base = dir_.Unique("gw");
  config_path_ = base + ".toml";
  log_path_ = base + ".log";
  if (!WriteFile(config_path_, ConfigToml())) {
    return ::testing::AssertionFailure() << "cannot write " << config_path_;
  }
  ProcessOptions options;
  options.argv = options_.wrapper;
  options.argv.insert(options.argv.end(), {binary, "--config", config_path_});
  options.stdout_spec = StdioSpec::AppendFile(log_path_);
  options.stderr_spec = StdioSpec::AppendFile(log_path_);
  options.cwd = dir_.path();
  options.env = options_.env;
  process_ = std::make_unique<Process>(std::move(options));
  if (!process_->started()) {
    return ::testing::AssertionFailure() << "cannot start pipegated: " << process_->error();
  }
  static const std::regex kListening(R"(listening on (127\.0\.0\.1|\[::1\]):([0-9]+))");
  std::smatch match;
  std::string log;
  const bool up = WaitFor(
      [&] {
        log = ReadFile(log_path_);
        if (std::regex_search(log, match, kListening)) {
          return true;
        }
        return !process_->Running();
      },
      timeout);
  if (!up || match.empty()) {
    const std::optional<int> status = process_->Running() ? std::nullopt : process_->exit_status();
    return ::testing::AssertionFailure()
           << "pipegated did not log 'listening on 127.0.0.1:PORT' or '[::1]:PORT' ("
           << DescribeStatus(status) << ")\nconfig:\n"
           << ConfigToml() << "log:\n"
           << Tail(log);
  }
  host_ = match[1].str();
  const unsigned long port = std::stoul(match[2].str());
  if (port == 0 || port > 65535) {
    return ::testing::AssertionFailure() << "bad port in log: " << match[0].str();
  }
  port_ = static_cast<uint16_t>(port);
  // Local programs must be able to open a `create = true` FIFO from the start (else `echo > path`
  // would make a regular file). The gateway may create them just after it logs that it listens.
  for (const auto& spec : options_.exports) {
    const std::string path = ExportPath(spec.name);
    if (spec.kind == "fifo" && spec.create.value_or(false) &&
        !WaitFor([&] { return IsFifo(path); }, Duration(5000))) {
      return ::testing::AssertionFailure()
             << "export '" << spec.name << "' says create = true, but " << path
             << " is not a FIFO 5 s after the gateway listens\nlog:\n"
             << Tail(Log());
    }
  }
  return ::testing::AssertionSuccess();
}

bool GatewayFixture::RewriteConfig(GatewayOptions options) {
  options_ = std::move(options);
  return RewriteConfigText(ConfigToml());
}

bool GatewayFixture::RewriteConfigText(const std::string& toml) {
  // Write a sibling and rename, so the gateway never reads a half-written file.
  const std::string next = config_path_ + ".next";
  return WriteFile(next, toml) && std::rename(next.c_str(), config_path_.c_str()) == 0;
}

void GatewayFixture::Signal(int sig) {
  if (process_) {
    process_->Signal(sig);
  }
}

std::string GatewayFixture::BaseAddress() const {
  return "pipe://" + host_ + ":" + std::to_string(port_);
}

std::string GatewayFixture::Address(const std::string& name) const {
  return BaseAddress() + "/" + name;
}

std::string GatewayFixture::Log() const { return log_path_.empty() ? "" : ReadFile(log_path_); }

bool GatewayFixture::Running() { return process_ && process_->Running(); }

std::optional<int> GatewayFixture::Stop(Duration timeout) {
  if (!process_) {
    return std::nullopt;
  }
  process_->Signal(SIGTERM);
  return process_->Wait(timeout);
}

void GatewayFixture::Kill() {
  if (process_) {
    process_->Kill();
  }
}

}  // namespace pipegate::testing
