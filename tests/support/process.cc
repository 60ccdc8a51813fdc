#include "support/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <thread>

#include "support/files.h"

extern char** environ;

namespace pipegate::testing {
namespace {

std::string ResolveExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    return name;
  }
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  std::stringstream stream(dirs);
  std::string dir;
  while (std::getline(stream, dir, ':')) {
    if (dir.empty()) {
      dir = ".";
    }
    std::string candidate = dir + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return name;
}

// The child side of Spawn(). Only async-signal-safe calls from here on: the test process may
// have other threads (echo servers, feeders) that held locks at fork time.
[[noreturn]] void ChildExec(const char* file, char* const* argv, char* const* envp,
                            const int stdio_fds[3], const char* const stdio_paths[3],
                            const int stdio_flags[3], const char* cwd, int report_fd,
                            pid_t parent) {
  auto fail = [report_fd](int step) {
    const int info[2] = {step, errno};
    ssize_t ignored = write(report_fd, info, sizeof info);
    (void)ignored;
    _exit(127);
  };
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
    fail(1);
  }
  if (getppid() != parent) {
    _exit(127);  // The test process already died.
  }
  setpgid(0, 0);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGCHLD, SIGHUP}) {
    sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);

  for (int target = 0; target < 3; ++target) {
    int fd = stdio_fds[target];
    if (stdio_paths[target] != nullptr) {
      fd = open(stdio_paths[target], stdio_flags[target], 0644);
      if (fd < 0) {
        fail(10 + target);
      }
    }
    if (fd >= 0 && fd != target) {
      if (dup2(fd, target) < 0) {
        fail(20 + target);
      }
    } else if (fd == target) {
      int flags = fcntl(fd, F_GETFD);
      fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
    }
  }
  // Everything above stderr is closed at exec. close_range(CLOSE_RANGE_CLOEXEC) needs Linux 5.11;
  // the loop is the fallback.
#ifdef SYS_close_range
  if (syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */) != 0)
#endif
  {
    for (int fd = 3; fd < 4096; ++fd) {
      if (fd != report_fd) {
        fcntl(fd, F_SETFD, FD_CLOEXEC);
      }
    }
  }
  if (cwd != nullptr && chdir(cwd) != 0) {
    fail(30);
  }
  execve(file, argv, envp);
  fail(40);
  _exit(127);
}

const char* StepName(int step) {
  if (step == 1) {
    return "prctl";
  }
  if (step >= 10 && step < 20) {
    return "open stdio file";
  }
  if (step >= 20 && step < 30) {
    return "dup2";
  }
  if (step == 30) {
    return "chdir";
  }
  return "execve";
}

}  // namespace

void IgnoreSigpipe() {
  static std::atomic<bool> done{false};
  if (!done.exchange(true)) {
    signal(SIGPIPE, SIG_IGN);
  }
}

Process::Process(ProcessOptions options) : options_(std::move(options)) { Spawn(); }

Process::Process(std::vector<std::string> argv) : Process(ProcessOptions::Of(std::move(argv))) {}

Process::~Process() {
  if (pid_ > 0 && !reaped_) {
    Kill();
  }
  for (int fd : {stdin_fd_, stdout_fd_, stderr_fd_, report_fd_}) {
    if (fd >= 0) {
      close(fd);
    }
  }
}

std::string Process::CommandLine() const {
  std::string line;
  for (const auto& arg : options_.argv) {
    if (!line.empty()) {
      line += ' ';
    }
    line += arg;
  }
  return line;
}

void Process::Spawn() {
  IgnoreSigpipe();
  if (options_.argv.empty()) {
    error_ = "empty argv";
    return;
  }
  // Everything the child needs is built before fork, so the child does not allocate.
  const std::string file = ResolveExecutable(options_.argv[0]);
  if (access(file.c_str(), X_OK) != 0) {
    error_ = "cannot execute '" + file + "': " + std::strerror(errno);
    return;
  }
  std::vector<char*> argv;
  for (auto& arg : options_.argv) {
    argv.push_back(arg.data());
  }
  argv.push_back(nullptr);

  std::map<std::string, std::string> env_map;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    std::string kv = *entry;
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) {
      env_map[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
  }
  for (const auto& [key, value] : options_.env) {
    if (value) {
      env_map[key] = *value;
    } else {
      env_map.erase(key);
    }
  }
  std::vector<std::string> env_strings;
  env_strings.reserve(env_map.size());
  for (const auto& [key, value] : env_map) {
    env_strings.push_back(key + "=" + value);
  }
  std::vector<char*> envp;
  for (auto& entry : env_strings) {
    envp.push_back(entry.data());
  }
  envp.push_back(nullptr);

  int child_fds[3] = {-1, -1, -1};
  const char* paths[3] = {nullptr, nullptr, nullptr};
  int flags[3] = {0, 0, 0};
  int parent_fds[3] = {-1, -1, -1};
  const StdioSpec* specs[3] = {&options_.stdin_spec, &options_.stdout_spec, &options_.stderr_spec};
  auto cleanup = [&] {
    for (int i = 0; i < 3; ++i) {
      if (child_fds[i] > 2) {
        close(child_fds[i]);
      }
      if (parent_fds[i] >= 0) {
        close(parent_fds[i]);
      }
    }
  };
  for (int i = 0; i < 3; ++i) {
    const StdioSpec& spec = *specs[i];
    switch (spec.kind) {
      case StdioSpec::Kind::kInherit:
        child_fds[i] = i;
        break;
      case StdioSpec::Kind::kNull:
        paths[i] = "/dev/null";
        flags[i] = (i == 0 ? O_RDONLY : O_WRONLY);
        break;
      case StdioSpec::Kind::kFile:
        paths[i] = spec.path.c_str();
        flags[i] = (i == 0 ? O_RDONLY : (O_WRONLY | O_CREAT | O_TRUNC));
        break;
      case StdioSpec::Kind::kAppendFile:
        paths[i] = spec.path.c_str();
        flags[i] = (i == 0 ? O_RDONLY : (O_WRONLY | O_CREAT | O_APPEND));
        break;
      case StdioSpec::Kind::kPipe: {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0) {
          error_ = std::string("pipe2: ") + std::strerror(errno);
          cleanup();
          return;
        }
        child_fds[i] = (i == 0 ? fds[0] : fds[1]);
        parent_fds[i] = (i == 0 ? fds[1] : fds[0]);
        break;
      }
    }
  }
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) {
    error_ = std::string("pipe2: ") + std::strerror(errno);
    cleanup();
    return;
  }
  const char* cwd = options_.cwd.empty() ? nullptr : options_.cwd.c_str();
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    error_ = std::string("fork: ") + std::strerror(errno);
    close(report[0]);
    close(report[1]);
    cleanup();
    return;
  }
  if (pid == 0) {
    close(report[0]);
    ChildExec(file.c_str(), argv.data(), envp.data(), child_fds, paths, flags, cwd, report[1],
              parent);
  }
  close(report[1]);
  setpgid(pid, pid);  // Also done by the child; whichever runs first wins the race harmlessly.
  for (int i = 0; i < 3; ++i) {
    if (child_fds[i] > 2) {
      close(child_fds[i]);
    }
  }
  // The report pipe closes at exec (success) or carries {step, errno} (failure). A child that
  // blocks opening a FIFO for stdio has not exec'd yet, so the test must not wait for it here:
  // the report is read when the child is reaped, and a failed exec shows as exit 127 + error().
  report_fd_ = report[0];
  pid_ = pid;
  stdin_fd_ = parent_fds[0];
  stdout_fd_ = parent_fds[1];
  stderr_fd_ = parent_fds[2];
}

void Process::Reaped(int raw_status) {
  reaped_ = true;
  if (report_fd_ >= 0) {
    int info[2] = {0, 0};
    fcntl(report_fd_, F_SETFL, O_NONBLOCK);
    if (read(report_fd_, info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
      error_ = std::string(StepName(info[0])) + " failed for '" + CommandLine() +
               "': " + std::strerror(info[1]);
    }
    close(report_fd_);
    report_fd_ = -1;
  }
  if (WIFEXITED(raw_status)) {
    status_ = WEXITSTATUS(raw_status);
  } else if (WIFSIGNALED(raw_status)) {
    status_ = 128 + WTERMSIG(raw_status);
    signaled_ = true;
  } else {
    status_ = 255;
  }
}

bool Process::Running() {
  if (pid_ <= 0 || reaped_) {
    return false;
  }
  // Look without reaping first: while the exited leader is a zombie its pid, and so its process
  // group id, cannot be reused, so the group's leftovers (a pipeline's background jobs) can be
  // killed safely. Signalling a pid after reaping it could hit an unrelated process once the
  // pid wraps around (pid_max is often 32768).
  siginfo_t info{};
  if (waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    return false;
  }
  if (info.si_pid == 0) {
    return true;
  }
  kill(-pid_, SIGKILL);
  int raw = 0;
  while (waitpid(pid_, &raw, 0) < 0 && errno == EINTR) {
  }
  Reaped(raw);
  return false;
}

std::optional<int> Process::Wait(Duration timeout) {
  if (pid_ <= 0) {
    return std::nullopt;
  }
  const auto deadline = Clock::now() + Scaled(timeout);
  auto interval = std::chrono::microseconds(200);
  while (Running()) {
    if (Clock::now() >= deadline) {
      return std::nullopt;
    }
    std::this_thread::sleep_for(interval);
    interval = std::min<std::chrono::microseconds>(interval * 2, std::chrono::milliseconds(10));
  }
  return status_;
}

void Process::Signal(int sig) {
  if (pid_ > 0 && !reaped_) {
    kill(pid_, sig);
  }
}

void Process::Kill() {
  if (pid_ <= 0 || reaped_) {
    return;
  }
  kill(-pid_, SIGKILL);
  kill(pid_, SIGKILL);
  int raw = 0;
  while (waitpid(pid_, &raw, 0) < 0 && errno == EINTR) {
  }
  Reaped(raw);
}

void Process::CloseStdin() {
  if (stdin_fd_ >= 0) {
    close(stdin_fd_);
    stdin_fd_ = -1;
  }
}

void Process::CloseStdout() {
  if (stdout_fd_ >= 0) {
    close(stdout_fd_);
    stdout_fd_ = -1;
  }
}

int Process::TakeStdinFd() { return std::exchange(stdin_fd_, -1); }

std::string DescribeStatus(const std::optional<int>& status) {
  if (!status) {
    return "still running (timed out)";
  }
  if (*status > 128 && *status < 128 + 65) {
    return "killed by signal " + std::to_string(*status - 128);
  }
  return "exit " + std::to_string(*status);
}

CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& scratch_dir,
                         Duration timeout) {
  static std::atomic<unsigned> counter{0};
  const std::string base =
      scratch_dir + "/cmd-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
  ProcessOptions options;
  options.argv = argv;
  options.stdout_spec = StdioSpec::File(base + ".out");
  options.stderr_spec = StdioSpec::File(base + ".err");
  CommandResult result;
  Process process(std::move(options));
  if (!process.started()) {
    result.err = process.error();
    return result;
  }
  result.status = process.Wait(timeout);
  if (!result.status) {
    process.Kill();
  }
  result.out = ReadFile(base + ".out");
  result.err = ReadFile(base + ".err");
  unlink((base + ".out").c_str());
  unlink((base + ".err").c_str());
  return result;
}

}  // namespace pipegate::testing
