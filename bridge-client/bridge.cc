#include "bridge.h"

#include <fcntl.h>
#include <unistd.h>

#include "pipegate/log.h"
#include "pipegate/process_limits.h"

#include "client.h"
#include "uv/handles.h"

namespace pipegate::bridge {

Status RunBridge(const BridgeOptions& options) {
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
    }
    loop.Run();  // The close callbacks of the client's handles.
    if (!loop.Close()) PG_LOG(kError, "handles left open at exit");
  }
  if (in_flags >= 0) fcntl(STDIN_FILENO, F_SETFL, in_flags);
  if (out_flags >= 0) fcntl(STDOUT_FILENO, F_SETFL, out_flags);
  return result;
}

}  // namespace pipegate::bridge
