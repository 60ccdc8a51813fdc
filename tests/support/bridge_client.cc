#include "support/bridge_client.h"

#include <regex>
#include <sstream>

namespace pipegate::testing {

ProcessOptions PipegateOptions(TempDir& dir, std::vector<std::string> args,
                               const std::optional<Identity>& identity) {
  ProcessOptions options;
  options.argv.push_back(BinPath("pipegate"));
  for (auto& arg : args) {
    options.argv.push_back(std::move(arg));
  }
  options.env = {{"HOME", dir.path()}, {"XDG_CONFIG_HOME", dir.Join(".config")}};
  if (identity) {
    options.env.emplace_back("PIPEGATE_CERT", identity->cert);
    options.env.emplace_back("PIPEGATE_KEY", identity->key);
    options.env.emplace_back("PIPEGATE_CA", identity->ca);
  } else {
    options.env.emplace_back("PIPEGATE_CERT", std::nullopt);
    options.env.emplace_back("PIPEGATE_KEY", std::nullopt);
    options.env.emplace_back("PIPEGATE_CA", std::nullopt);
  }
  return options;
}

std::string ClientResult::Describe() const {
  std::ostringstream text;
  text << "`" << command << "` -> " << DescribeStatus(status) << " after " << elapsed.count()
       << " ms";
  if (!err.empty()) {
    text << "\n  stderr: " << Tail(err, 2000);
  }
  if (!out.empty() && out.size() < 2000) {
    text << "\n  stdout: " << out;
  } else if (!out.empty()) {
    text << "\n  stdout: " << out.size() << " bytes";
  }
  return text.str();
}

ClientResult RunPipegate(TempDir& dir, std::vector<std::string> args, ClientOptions options) {
  if (auto pki = EnsureTestPki(); !pki) {
    ADD_FAILURE() << pki.message();
  }
  ClientResult result;
  const std::string base = dir.Unique("client");
  ProcessOptions process_options = PipegateOptions(dir, std::move(args), options.identity);
  process_options.argv.insert(process_options.argv.begin(), options.wrapper.begin(),
                              options.wrapper.end());
  for (auto& entry : options.env) {
    process_options.env.push_back(std::move(entry));
  }
  process_options.stdin_spec =
      options.stdin_path.empty() ? StdioSpec::Null() : StdioSpec::File(options.stdin_path);
  const std::string out_path = options.stdout_path.empty() ? base + ".out" : options.stdout_path;
  process_options.stdout_spec = StdioSpec::File(out_path);
  process_options.stderr_spec = StdioSpec::File(base + ".err");
  const auto start = Clock::now();
  Process process(std::move(process_options));
  result.command = process.CommandLine();
  if (!process.started()) {
    result.err = process.error();
    return result;
  }
  result.status = process.Wait(options.timeout);
  result.elapsed = Since(start);
  if (!result.status) {
    process.Kill();
  }
  if (options.stdout_path.empty()) {
    result.out = ReadFile(out_path);
  }
  result.err = ReadFile(base + ".err");
  if (!process.error().empty()) {
    result.err += "\n[exec] " + process.error();
  }
  return result;
}

Bridge::Bridge(TempDir& dir, std::vector<std::string> args, StdioSpec stdin_spec,
               std::string stdout_path, const std::optional<Identity>& identity)
    : out_path_(std::move(stdout_path)), capture_out_(out_path_.empty()) {
  if (auto pki = EnsureTestPki(); !pki) {
    ADD_FAILURE() << pki.message();
  }
  const std::string base = dir.Unique("bridge");
  if (capture_out_) {
    out_path_ = base + ".out";
  }
  err_path_ = base + ".err";
  ProcessOptions options = PipegateOptions(dir, std::move(args), identity);
  options.stdin_spec = std::move(stdin_spec);
  options.stdout_spec = StdioSpec::File(out_path_);
  options.stderr_spec = StdioSpec::File(err_path_);
  start_ = Clock::now();
  process_ = std::make_unique<Process>(std::move(options));
}

std::optional<int> Bridge::Wait(Duration timeout) { return process_->Wait(timeout); }

ClientResult Bridge::Result() {
  ClientResult result;
  result.command = process_->CommandLine();
  process_->Running();
  result.status = process_->exit_status();
  result.elapsed = Since(start_);
  if (capture_out_) {
    result.out = ReadFile(out_path_);
  }
  result.err = ReadFile(err_path_);
  if (!process_->error().empty()) {
    result.err += "\n[exec] " + process_->error();
  }
  return result;
}

::testing::AssertionResult IsError(const ClientResult& result, int code, const std::string& address,
                                   const std::string& cause_regex, bool exact_address) {
  if (result.status != code) {
    return ::testing::AssertionFailure()
           << "expected exit " << code << ", got " << result.Describe();
  }
  const std::string prefix = "pipegate: " + address + (exact_address ? ": " : "");
  const std::regex cause(cause_regex, std::regex::ECMAScript | std::regex::icase);
  // The failure is one `pipegate: ...` line. Timestamped log lines (a reconnect notice, say) may
  // come before it; anything else is noise a script would have to filter.
  static const std::regex kLogLine(R"(^\d{4}-\d\d-\d\dT\S+ pipegate )");
  std::vector<std::string> lines;
  for (const auto& line : SplitLines(result.err)) {
    if (!std::regex_search(line, kLogLine)) {
      lines.push_back(line);
    }
  }
  if (lines.size() != 1) {
    return ::testing::AssertionFailure() << "expected exactly one error line on stderr, got "
                                         << lines.size() << ": " << result.Describe();
  }
  for (const auto& line : lines) {
    if (line.rfind(prefix, 0) != 0) {
      continue;
    }
    if (cause_regex.empty() || std::regex_search(line.substr(prefix.size()), cause)) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure()
           << "error line does not say /" << cause_regex << "/: " << result.Describe();
  }
  return ::testing::AssertionFailure()
         << "no stderr line starts with '" << prefix << "': " << result.Describe();
}

std::string ReadOutput(const std::string& path) {
  std::string text = ReadFile(path);
  if (!text.empty() && text.back() == '\n') {
    text.pop_back();
  }
  return text;
}

std::vector<std::string> SplitLines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream stream(text);
  std::string line;
  while (std::getline(stream, line)) {
    lines.push_back(line);
  }
  return lines;
}

::testing::AssertionResult StartMount(Bridge& mount, const std::string& local, bool want_fifo) {
  if (!mount.started()) {
    return ::testing::AssertionFailure() << mount.Describe();
  }
  const bool up =
      WaitFor([&] { return (want_fifo ? IsFifo(local) : IsSocket(local)) || !mount.Running(); },
              Duration(10000));
  if (!up || !mount.Running()) {
    return ::testing::AssertionFailure()
           << local << " did not appear as a " << (want_fifo ? "FIFO" : "socket") << ": "
           << mount.Describe();
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult StopMount(Bridge& mount, const std::string& local) {
  mount.process().Signal(SIGTERM);
  const std::optional<int> status = mount.Wait(Duration(10000));
  if (status != 128 + SIGTERM || mount.process().signaled()) {
    return ::testing::AssertionFailure() << "after SIGTERM: " << mount.Describe();
  }
  if (PathExists(local)) {
    return ::testing::AssertionFailure() << "the mount left " << local << " behind";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace pipegate::testing
