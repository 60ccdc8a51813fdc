#include "support/proc_stats.h"

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "support/process.h"

namespace pipegate::testing {
namespace {

std::set<std::string> SocketInodes(pid_t pid) {
  std::set<std::string> inodes;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    return inodes;
  }
  while (dirent* entry = readdir(d)) {
    char target[256];
    const std::string link = dir + "/" + entry->d_name;
    const ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
    if (n <= 0) {
      continue;
    }
    const std::string text(target, static_cast<size_t>(n));
    if (text.rfind("socket:[", 0) == 0 && text.back() == ']') {
      inodes.insert(text.substr(8, text.size() - 9));
    }
  }
  closedir(d);
  return inodes;
}

}  // namespace

std::optional<uint64_t> ReadRssBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::istringstream fields(line.substr(6));
      uint64_t kib = 0;
      fields >> kib;
      return kib * 1024;
    }
  }
  return std::nullopt;
}

bool ProcessHasFileOpen(pid_t pid, const std::string& path) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    return false;
  }
  bool found = false;
  while (dirent* entry = readdir(d)) {
    char target[4096];
    const std::string link = dir + "/" + entry->d_name;
    const ssize_t n = readlink(link.c_str(), target, sizeof target - 1);
    if (n > 0 && std::string(target, static_cast<size_t>(n)) == path) {
      found = true;
      break;
    }
  }
  closedir(d);
  return found;
}

int CountTcpConnections(pid_t pid, uint16_t remote_port) {
  const std::set<std::string> inodes = SocketInodes(pid);
  int count = 0;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // Header.
    while (std::getline(in, line)) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
      std::istringstream fields(line);
      std::string sl, local, remote, state, queues, timer, retr, uid, timeout, inode;
      fields >> sl >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >>
          inode;
      if (state != "01" || inodes.count(inode) == 0) {
        continue;
      }
      const size_t colon = remote.rfind(':');
      if (colon == std::string::npos) {
        continue;
      }
      const unsigned long port = std::stoul(remote.substr(colon + 1), nullptr, 16);
      if (port == remote_port) {
        ++count;
      }
    }
  }
  return count;
}

std::string SocketReport(const std::vector<pid_t>& pids) {
  const CommandResult ss = RunCommand({"ss", "-atxnp"}, "/tmp", std::chrono::milliseconds(10000));
  std::istringstream lines(ss.out);
  std::string line;
  std::string report;
  std::getline(lines, line);
  report += line + "\n";
  while (std::getline(lines, line)) {
    for (const pid_t pid : pids) {
      if (line.find("pid=" + std::to_string(pid) + ",") != std::string::npos) {
        report += line + "\n";
        break;
      }
    }
  }
  return report;
}

}  // namespace pipegate::testing
