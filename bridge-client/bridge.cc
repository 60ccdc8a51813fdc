#include "bridge.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <string.h>
#include <unistd.h>

#include <string>

#include "pipegate/log.h"
#include "pipegate/process_limits.h"

#include "client.h"
#include "uv/handles.h"

namespace pipegate::bridge {

ProcessOutcome OutcomeOfExit(const ExitPayload& exit) {
  switch (exit.how) {
    case ExitHow::kExited:
      return {static_cast<int>(exit.code & 0xff), Status::Ok()};
    case ExitHow::kSignaled: {
      const int sig = static_cast<int>(exit.code & 0x7f);
      const char* name = sigabbrev_np(sig);
      return {128 + sig, Status(Code::kBrokenPipe,
                                fmt::format("the process was killed by signal {}{}{}", sig,
                                            name != nullptr ? " (SIG" : "",
                                            name != nullptr ? std::string(name) + ")" : ""))};
    }
    case ExitHow::kTimedOut:
      return {124, Status(Code::kBrokenPipe,
                          fmt::format("the process ran longer than the export's timeout ({} s) "
                                      "and was killed",
                                      exit.code))};
  }
  return {6, Status(Code::kProtocol, "the process ended in an unknown way")};
}

Status RunBridge(const BridgeOptions& options, std::optional<int>* process_exit) {
  // libuv makes stdin/stdout non-blocking, which changes the shared file descriptions (a
  // terminal, say): restore them on the way out.
  int in_flags = fcntl(STDIN_FILENO, F_GETFL);
  int out_flags = fcntl(STDOUT_FILENO, F_GETFL);
  // A socket mount holds one descriptor per local connection (and serves thousands).
  if (options.command == Command::kMount) RaiseOpenFileLimit();
  Status result;
  {
    uvglue::Loop loop;
    {
      Client client(loop, options);
      result = client.Run();
      if (process_exit != nullptr) *process_exit = client.process_exit();
    }
    loop.Run();  // The close callbacks of the client's handles.
    if (!loop.Close()) PG_LOG(kError, "handles left open at exit");
  }
  if (in_flags >= 0) fcntl(STDIN_FILENO, F_SETFL, in_flags);
  if (out_flags >= 0) fcntl(STDOUT_FILENO, F_SETFL, out_flags);
  return result;
}

}  // namespace pipegate::bridge
