#include "pipegate/status.h"

#include <signal.h>

#include <system_error>

namespace pipegate {

int ExitCodeFor(Code code) noexcept {
  switch (code) {
    case Code::kOk:
      return 0;
    case Code::kUsage:
      return 1;
    case Code::kConnect:
    case Code::kTls:
      return 2;
    case Code::kAccessDenied:
      return 3;
    case Code::kNotFound:
      return 4;
    case Code::kBusy:
    case Code::kNoReader:
    case Code::kLimit:
      return 5;
    case Code::kBrokenPipe:
    case Code::kStreamLost:
    case Code::kProtocol:
    case Code::kIo:
    case Code::kInternal:
      return 6;
    case Code::kInterrupted:
      return 128 + SIGINT;
    case Code::kTerminated:
      return 128 + SIGTERM;
  }
  return 6;
}

const char* CodeName(Code code) noexcept {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kUsage:
      return "usage";
    case Code::kConnect:
      return "connect";
    case Code::kTls:
      return "tls";
    case Code::kAccessDenied:
      return "access_denied";
    case Code::kNotFound:
      return "not_found";
    case Code::kBusy:
      return "busy";
    case Code::kNoReader:
      return "no_reader";
    case Code::kBrokenPipe:
      return "broken_pipe";
    case Code::kStreamLost:
      return "stream_lost";
    case Code::kProtocol:
      return "protocol";
    case Code::kIo:
      return "io";
    case Code::kLimit:
      return "limit";
    case Code::kInternal:
      return "internal";
    case Code::kInterrupted:
      return "interrupted";
    case Code::kTerminated:
      return "terminated";
  }
  return "unknown";
}

std::string ErrnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

}  // namespace pipegate
