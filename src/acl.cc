// Export access lists (SPEC §5). Pure functions over strings; the TLS layer extracts the
// PeerIdentity from a certificate the client CA has already verified.

#include "pipegate/acl.h"

#include <string>
#include <string_view>
#include <vector>

namespace pipegate {
namespace {

constexpr std::string_view kAnyone = "*";
constexpr std::string_view kPrefixWildcard = "/*";

bool EndsWith(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// True if @p uri lies under @p prefix (which ends in '/'). The rest must be non-empty and must
// not contain a "." or ".." segment, so that "spiffe://example.org/ci/*" does not admit
// "spiffe://example.org/ci/../admin" should a CA ever sign such a name.
bool UriUnderPrefix(std::string_view uri, std::string_view prefix) {
  if (uri.size() <= prefix.size() || uri.substr(0, prefix.size()) != prefix) {
    return false;
  }
  std::string_view rest = uri.substr(prefix.size());
  while (!rest.empty()) {
    const size_t slash = rest.find('/');
    const std::string_view segment = rest.substr(0, slash);
    if (segment == "." || segment == "..") {
      return false;
    }
    if (slash == std::string_view::npos) {
      break;
    }
    rest.remove_prefix(slash + 1);
  }
  return true;
}

bool EntryMatches(std::string_view entry, const PeerIdentity& id) {
  if (entry.empty()) {
    return false;
  }
  if (entry == kAnyone) {
    return true;
  }
  if (EndsWith(entry, kPrefixWildcard)) {
    // Prefix entries are for hierarchical URI identities (SPIFFE IDs) only.
    const std::string_view prefix = entry.substr(0, entry.size() - 1);  // Keeps the '/'.
    for (const std::string& uri : id.uris) {
      if (UriUnderPrefix(uri, prefix)) {
        return true;
      }
    }
    return false;
  }
  if (!id.common_name.empty() && id.common_name == entry) {
    return true;
  }
  for (const std::string& dns : id.dns_names) {
    if (dns == entry) {
      return true;
    }
  }
  for (const std::string& uri : id.uris) {
    if (uri == entry) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::vector<std::string> PeerIdentity::All() const {
  std::vector<std::string> all;
  all.reserve(1 + dns_names.size() + uris.size());
  if (!common_name.empty()) {
    all.push_back(common_name);
  }
  all.insert(all.end(), dns_names.begin(), dns_names.end());
  all.insert(all.end(), uris.begin(), uris.end());
  return all;
}

std::string PeerIdentity::Display() const {
  if (!common_name.empty()) {
    return common_name;
  }
  if (!dns_names.empty()) {
    return dns_names.front();
  }
  if (!uris.empty()) {
    return uris.front();
  }
  return "?";
}

bool IsAllowed(const std::vector<std::string>& allow, const PeerIdentity& id) {
  for (const std::string& entry : allow) {
    if (EntryMatches(entry, id)) {
      return true;
    }
  }
  return false;
}

}  // namespace pipegate
