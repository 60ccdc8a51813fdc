// pipegate: parses flags and hands over to RunBridge; nothing else lives here.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "pipegate/account.h"
#include "pipegate/config.h"
#include "pipegate/log.h"

#include "bridge.h"
#include <CLI/CLI.hpp>

namespace {

int Fail(const std::string& where, const pipegate::Status& st) {
  if (where.empty()) {
    fprintf(stderr, "pipegate: %s\n", st.message().c_str());
  } else {
    fprintf(stderr, "pipegate: %s: %s\n", where.c_str(), st.message().c_str());
  }
  return pipegate::ExitCodeFor(st.code());
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

using pipegate::bridge::BridgeOptions;
using pipegate::bridge::Command;

// Every flag's value, as CLI11 fills it in.
struct Flags {
  std::string cert, key, ca, address, local, as, servername;
  std::optional<std::string> mode, owner, group;  // mount; unset when not given.
  std::vector<std::string> pins;
  double wait = 0;
  double keepalive = 0;
  double resume_timeout = 0;
  bool verbose = false;
  bool lines = false;
  bool progress = false;
  bool json = false;
  bool follow = false;
  uint64_t count = 0;
  uint64_t count_lines = 0;
  std::string messages;
  std::string log_format;
};

struct Subcommands {
  CLI::App* ls;
  CLI::App* stat;
  CLI::App* cat;
  CLI::App* write;
  CLI::App* connect;
  CLI::App* mount;
};

// The flags every subcommand (and the bare program) takes.
void AddCommonFlags(CLI::App* a, Flags& f) {
  a->add_option("--cert", f.cert, "Client certificate (PEM); default $PIPEGATE_CERT");
  a->add_option("--key", f.key, "Client private key (PEM); default $PIPEGATE_KEY");
  a->add_option("--ca", f.ca, "CA bundle for the gateway (PEM); default $PIPEGATE_CA");
  a->add_option("--servername", f.servername,
                "Name (or IP) the gateway certificate must carry, instead of HOST");
  a->add_option("--pin", f.pins,
                "Also require the gateway's public key to be sha256:BASE64 (or HEX); "
                "repeatable")
      ->allow_extra_args(false);  // One pin per --pin, so an address never becomes a pin.
  a->add_option("--wait", f.wait, "Wait up to SECONDS for a busy pipe or a reader")
      ->check(CLI::Range(0.0, 86400.0));
  a->add_option("--keepalive", f.keepalive,
                "Ping after SECONDS of silence; the link is dead after 3x (default 10)")
      ->check(CLI::Range(0.1, 3600.0));
  a->add_option("--resume-timeout", f.resume_timeout,
                "Give up reconnecting after SECONDS (default: as long as the gateway keeps "
                "the session, 300 s unless configured)")
      ->check(CLI::Range(0.1, 86400.0));
  a->add_flag("-v,--verbose", f.verbose, "Log what happens");
  a->add_option("--log-format", f.log_format, "Log lines as 'text' (default) or 'json'")
      ->check(CLI::IsMember({"text", "json"}));
}

Subcommands AddSubcommands(CLI::App& app, Flags& f) {
  CLI::App* ls = app.add_subcommand("ls", "List the exports this identity may use");
  ls->add_option("address", f.address, "pipe://HOST[:PORT] (all exports) or pipe://HOST/NAME")
      ->required();
  ls->add_flag("--json", f.json,
               "Print one JSON array of {name, kind, access, mode, clients, max_clients, "
               "max_message}");
  CLI::App* stat = app.add_subcommand("stat", "Show one export in detail");
  stat->add_option("address", f.address, "pipe://HOST[:PORT]/NAME")->required();
  stat->add_flag("--json", f.json, "Print one JSON object");
  CLI::App* cat = app.add_subcommand("cat", "Copy the remote pipe to stdout until EOF");
  cat->add_option("address", f.address, "pipe://HOST[:PORT]/NAME")->required();
  cat->add_option("--count", f.count, "End after N bytes (exit 0)")->check(CLI::PositiveNumber);
  cat->add_option("--count-lines", f.count_lines, "End after N lines (exit 0)")
      ->check(CLI::PositiveNumber)
      ->excludes("--count");
  cat->add_flag("--follow", f.follow,
                "Stay attached across the EOFs of the FIFO's local writers, like tail -f; end "
                "on a signal");
  CLI::App* write =
      app.add_subcommand("write", "Copy stdin to the remote pipe; exit 0 once delivered");
  write->add_option("address", f.address, "pipe://HOST[:PORT]/NAME")->required();
  write->add_flag("--lines", f.lines, "Records are lines (each whole line in one write)");
  CLI::App* connect = app.add_subcommand("connect", "Connect stdin and stdout to the remote pipe");
  connect->add_option("address", f.address, "pipe://HOST[:PORT]/NAME")->required();
  connect
      ->add_option("--messages", f.messages,
                   "For a message-mode export: stdin and stdout carry messages, each as a "
                   "4-byte big-endian length and its bytes ('length') or as one line "
                   "('lines')")
      ->check(CLI::IsMember({"length", "lines"}));
  for (CLI::App* sub : {cat, write, connect}) {
    sub->add_flag("--progress", f.progress,
                  "Show bytes, rate and elapsed time on stderr (and % and ETA when stdin is a "
                  "file)");
  }
  CLI::App* mount = app.add_subcommand("mount", "Present the remote pipe at a local path");
  mount->add_option("address", f.address, "pipe://HOST[:PORT]/NAME")->required();
  mount->add_option("local_path", f.local, "Where the FIFO or socket appears")->required();
  mount->add_option("--as", f.as, "Present as 'unix' (socket) or 'fifo'")
      ->check(CLI::IsMember({"unix", "fifo"}));
  mount->add_flag("--lines", f.lines, "Records are lines (for a write export)");
  mount->add_option("--mode", f.mode,
                    "Mode of the FIFO or socket the mount creates, octal: 660 or 0660 (default "
                    "0600; the owner keeps read and write; not subject to the umask)");
  mount->add_option("--owner", f.owner,
                    "Give the FIFO or socket the mount creates to USER (a name or a uid; another "
                    "user needs root)");
  mount->add_option("--group", f.group,
                    "Give the FIFO or socket the mount creates to GROUP (a name or a gid)");
  for (CLI::App* sub : {ls, stat, cat, write, connect, mount}) {
    AddCommonFlags(sub, f);
  }
  return {ls, stat, cat, write, connect, mount};
}

constexpr const char* kCommands = "ls, stat, cat, write, connect or mount";

// Prints a usage error as SPEC §7 wants it, one line `pipegate: ...`, and returns 1. CLI11's own
// report is two lines, and it calls an unknown command a missing one.
int UsageError(const CLI::App& app, const Subcommands& sub, const CLI::ParseError& e) {
  const CLI::App* command = nullptr;
  for (const CLI::App* s : {sub.ls, sub.stat, sub.cat, sub.write, sub.connect, sub.mount}) {
    if (s->parsed()) command = s;
  }
  std::string what;
  std::string help = "pipegate --help";
  if (command == nullptr) {
    // Without a command CLI11 stops at "a subcommand is required"; what it did not take says
    // what the user typed instead.
    std::vector<std::string> rest = app.remaining();
    auto word = std::find_if(rest.begin(), rest.end(),
                             [](const std::string& a) { return a.empty() || a[0] != '-'; });
    if (word != rest.end()) {
      what = fmt::format("unknown command '{}' (expected {})", *word, kCommands);
    } else if (!rest.empty()) {
      what = fmt::format("unknown option '{}' (expected a command: {})", rest.front(), kCommands);
    } else if (dynamic_cast<const CLI::RequiredError*>(&e) != nullptr) {
      what = fmt::format("a command is required (expected {})", kCommands);
    }
  } else {
    help = fmt::format("pipegate {} --help", command->get_name());
  }
  if (what.empty()) {
    std::string cli = e.what();
    std::replace(cli.begin(), cli.end(), '\n', ' ');
    if (!cli.empty()) cli[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(cli[0])));
    what = fmt::format("{}{} (see '{}')", command != nullptr ? command->get_name() + ": " : "", cli,
                       help);
  }
  fprintf(stderr, "pipegate: %s\n", pipegate::SanitizeControlBytes(what, 512).c_str());
  return 1;
}

// --mode: 3 or 4 octal digits ("660", "0660"), at most 0777, and the owner keeps read and
// write (the mount reopens its FIFO for every local opener, which only root may do without).
std::optional<uint32_t> ParseMode(const std::string& text) {
  if (text.size() < 3 || text.size() > 4 ||
      text.find_first_not_of("01234567") != std::string::npos) {
    return std::nullopt;
  }
  const auto value = static_cast<uint32_t>(std::strtoul(text.c_str(), nullptr, 8));
  if (value > 0777 || (value & 0600) != 0600) return std::nullopt;
  return value;
}

// --owner USER or --group GROUP (@p flag): a name or a number the system databases resolve.
// @return The account, or kUsage naming the flag and the value.
pipegate::Result<pipegate::Account> ResolveFlag(const char* flag, const std::string& user,
                                                const std::string& group) {
  const std::string& value = user.empty() ? group : user;
  if (value.empty()) {
    return pipegate::Status(pipegate::Code::kUsage,
                            std::string(flag) + " needs a name or a number, not ''");
  }
  pipegate::Result<pipegate::Account> account = pipegate::ResolveAccount(user, group);
  if (!account) {
    return pipegate::Status(pipegate::Code::kUsage,
                            std::string(flag) + ": " + account.error().message());
  }
  return account;
}

// Everything but TLS, from the flags.
// @return The exit status if the flags are unusable (the reason is printed), else nullopt.
std::optional<int> FillOptions(const Flags& f, BridgeOptions& options) {
  auto parsed = pipegate::ParseAddress(f.address, options.command == Command::kLs
                                                      ? pipegate::NameRule::kOptional
                                                      : pipegate::NameRule::kRequired);
  if (!parsed) return Fail(f.address, parsed.error());
  options.address = *parsed;
  options.local_path = f.local;
  options.present_as = f.as;
  if (f.mode) {
    std::optional<uint32_t> mode = ParseMode(*f.mode);
    if (!mode) {
      return Fail("", pipegate::Status(pipegate::Code::kUsage,
                                       "--mode must be an octal mode of 3 or 4 digits (at "
                                       "most 0777) that gives the owner read and write, like "
                                       "0660, not '" +
                                           *f.mode + "'"));
    }
    options.mode = *mode;
  }
  if (f.owner) {
    pipegate::Result<pipegate::Account> user = ResolveFlag("--owner", *f.owner, "");
    if (!user) return Fail("", user.error());
    options.owner.uid = user->uid;
  }
  if (f.group) {
    pipegate::Result<pipegate::Account> group = ResolveFlag("--group", "", *f.group);
    if (!group) return Fail("", group.error());
    options.owner.gid = group->gid;
  }
  options.lines = f.lines;
  options.progress = f.progress;
  options.json = f.json;
  options.follow = f.follow;
  options.count = f.count_lines != 0 ? f.count_lines : f.count;
  options.count_lines = f.count_lines != 0;
  options.messages = f.messages;
  options.wait_ms = static_cast<uint32_t>(std::llround(f.wait * 1000));
  options.keepalive_ms = static_cast<uint64_t>(std::llround(f.keepalive * 1000));
  options.resume_timeout_ms = static_cast<uint64_t>(std::llround(f.resume_timeout * 1000));
  return std::nullopt;
}

// The TLS options: flags beat the environment, which beats ~/.config/pipegate/config.toml.
// @return The exit status if they are unusable (the reason is printed), else nullopt.
std::optional<int> FillTls(const Flags& f, BridgeOptions& options) {
  pipegate::ClientDefaults defaults;
  std::string home = Env("HOME");
  std::string defaults_path = Env("XDG_CONFIG_HOME").empty()
                                  ? home + "/.config/pipegate/config.toml"
                                  : Env("XDG_CONFIG_HOME") + "/pipegate/config.toml";
  if (!home.empty() && access(defaults_path.c_str(), R_OK) == 0) {
    auto loaded = pipegate::LoadClientDefaults(defaults_path);
    if (!loaded) return Fail("", loaded.error());
    defaults = *loaded;
  }
  auto pick = [](const std::string& flag, const char* env, const std::string& file) {
    if (!flag.empty()) return flag;
    std::string e = Env(env);
    return e.empty() ? file : e;
  };
  options.tls.cert = pick(f.cert, "PIPEGATE_CERT", defaults.cert);
  options.tls.key = pick(f.key, "PIPEGATE_KEY", defaults.key);
  options.tls.ca = pick(f.ca, "PIPEGATE_CA", defaults.ca);
  options.tls.server_name = f.servername;
  for (const std::string& pin : f.pins) {
    pipegate::Result<std::string> digest = pipegate::ParseSpkiPin(pin);
    if (!digest) return Fail(options.address.ToString(), digest.error());
    options.tls.pins.push_back(*digest);
  }
  for (auto [value, what] :
       {std::pair{&options.tls.cert, "a client certificate (--cert or PIPEGATE_CERT)"},
        std::pair{&options.tls.key, "a client key (--key or PIPEGATE_KEY)"},
        std::pair{&options.tls.ca, "a CA bundle (--ca or PIPEGATE_CA)"}}) {
    if (value->empty()) {
      return Fail(options.address.ToString(),
                  pipegate::Status(pipegate::Code::kUsage, std::string("missing ") + what));
    }
  }
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);  // A vanished reader is an EPIPE to handle, never a crash.
  CLI::App app{"pipegate: read, write, talk to or mount a remote pipe"};
  app.require_subcommand(1);
  Flags flags;
  AddCommonFlags(&app, flags);
  app.set_version_flag("--version", std::string("pipegate ") + PIPEGATE_VERSION);
  const Subcommands sub = AddSubcommands(app, flags);
  // CLI11 reports usage errors by exception; they are caught here, at the edge of main.
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version: printed, exit 0.
    return UsageError(app, sub, e);
  }
  pipegate::InitLogging(flags.verbose ? pipegate::LogLevel::kDebug : pipegate::LogLevel::kWarn,
                        "pipegate");
  if (pipegate::LogFormat format; pipegate::ParseLogFormat(flags.log_format, &format)) {
    pipegate::SetLogFormat(format);  // CLI11 has checked the value; unset keeps text.
  }

  BridgeOptions options;
  options.command = sub.ls->parsed()        ? Command::kLs
                    : sub.stat->parsed()    ? Command::kStat
                    : sub.cat->parsed()     ? Command::kCat
                    : sub.write->parsed()   ? Command::kWrite
                    : sub.connect->parsed() ? Command::kConnect
                                            : Command::kMount;
  if (std::optional<int> rc = FillOptions(flags, options)) return *rc;
  if (std::optional<int> rc = FillTls(flags, options)) return *rc;
  std::optional<int> process_exit;
  pipegate::Status st = pipegate::bridge::RunBridge(options, &process_exit);
  if (process_exit) {
    // An exec export's process decided: its status, after its message if it has one.
    if (!st.ok()) (void)Fail(options.address.ToString(), st);
    return *process_exit;
  }
  if (!st.ok()) return Fail(options.address.ToString(), st);
  return 0;
}
