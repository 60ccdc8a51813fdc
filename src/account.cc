// User and group lookups by name or number (getpwnam_r/getgrnam_r with a growing buffer).

#include "pipegate/account.h"

#include <fmt/format.h>
#include <grp.h>
#include <pwd.h>

#include <cerrno>
#include <string>
#include <vector>

namespace pipegate {
namespace {

bool IsNumber(const std::string& text) {
  return !text.empty() && text.find_first_not_of("0123456789") == std::string::npos &&
         text.size() <= 9;
}

// Looks a user up by name or number; getpwnam_r with a growing buffer.
Result<passwd> LookupUser(const std::string& user, std::vector<char>& buffer) {
  passwd entry{};
  passwd* found = nullptr;
  buffer.resize(4096);
  for (;;) {
    int rc = IsNumber(user)
                 ? getpwuid_r(static_cast<uid_t>(std::stoul(user)), &entry, buffer.data(),
                              buffer.size(), &found)
                 : getpwnam_r(user.c_str(), &entry, buffer.data(), buffer.size(), &found);
    if (rc == ERANGE && buffer.size() < (1u << 20)) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    if (found == nullptr) {
      if (IsNumber(user)) {
        entry = passwd{};
        entry.pw_uid = static_cast<uid_t>(std::stoul(user));
        entry.pw_gid = static_cast<gid_t>(-1);
        return entry;  // A bare uid without a passwd entry is allowed.
      }
      return Status(Code::kUsage,
                    fmt::format("no such user '{}'{}", user, rc != 0 ? ": " + ErrnoText(rc) : ""));
    }
    return entry;
  }
}

Result<gid_t> LookupGroup(const std::string& group) {
  if (IsNumber(group)) return static_cast<gid_t>(std::stoul(group));
  std::vector<char> buffer(4096);
  for (;;) {
    ::group entry{};
    ::group* found = nullptr;
    int rc = getgrnam_r(group.c_str(), &entry, buffer.data(), buffer.size(), &found);
    if (rc == ERANGE && buffer.size() < (1u << 20)) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    if (found == nullptr) {
      return Status(Code::kUsage, fmt::format("no such group '{}'{}", group,
                                              rc != 0 ? ": " + ErrnoText(rc) : ""));
    }
    return entry.gr_gid;
  }
}

}  // namespace

Result<Account> ResolveAccount(const std::string& user, const std::string& group) {
  Account account;
  if (!user.empty()) {
    std::vector<char> buffer;
    Result<passwd> pw = LookupUser(user, buffer);
    if (!pw) return pw.error();
    account.user_name = pw->pw_name != nullptr ? pw->pw_name : user;
    account.uid = pw->pw_uid;
    if (pw->pw_gid != static_cast<gid_t>(-1)) account.gid = pw->pw_gid;
  }
  if (!group.empty()) {
    Result<gid_t> gid = LookupGroup(group);
    if (!gid) return gid.error();
    account.gid = *gid;
    account.group_name = group;
  }
  return account;
}

}  // namespace pipegate
