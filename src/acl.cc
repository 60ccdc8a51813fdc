// Export access lists (SPEC §5, docs/security.md §3). Pure functions over strings; the TLS
// layer extracts the PeerIdentity from a certificate the client CA has already verified.

#include "pipegate/acl.h"

#include <string>
#include <string_view>
#include <vector>

#include "pipegate/log.h"

namespace pipegate {
namespace {

constexpr std::string_view kAnyone = "*";
constexpr std::string_view kPrefixWildcard = "/*";
constexpr size_t kDisplayMaxBytes = 128;  // As the audit log cuts identities.

bool EndsWith(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoringCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

// RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ). A type prefix has the
// same shape, so that "spiffe://..." is told apart from "cn:..." only by the "//".
bool IsWord(std::string_view text) {
  if (text.empty()) return false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    const bool other = (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.';
    if (!alpha && (i == 0 || !other)) return false;
  }
  return true;
}

// "%2e" or "%2E" at the start of @p text.
bool IsEncodedDot(std::string_view text) {
  return text.size() >= 3 && text[0] == '%' && text[1] == '2' && Lower(text[2]) == 'e';
}

// True if @p segment is "." or ".." once "%2e" is decoded (".", "%2e", ".%2E", "%2e%2e", ...).
bool IsDotSegment(std::string_view segment) {
  int dots = 0;
  while (!segment.empty()) {
    if (segment[0] == '.') {
      segment.remove_prefix(1);
    } else if (IsEncodedDot(segment)) {
      segment.remove_prefix(3);
    } else {
      return false;
    }
    if (++dots > 2) return false;
  }
  return dots > 0;
}

bool HasEncoded(std::string_view text, char hi, char lo) {
  for (size_t at = text.find('%'); at != std::string_view::npos; at = text.find('%', at + 1)) {
    if (at + 2 < text.size() && text[at + 1] == hi && Lower(text[at + 2]) == lo) return true;
  }
  return false;
}

// True if @p uri lies under @p prefix (which ends in '/') with a non-empty rest.
bool UriUnderPrefix(std::string_view uri, std::string_view prefix) {
  return uri.size() > prefix.size() && uri.substr(0, prefix.size()) == prefix;
}

bool UriMatches(const AllowEntry& entry, std::string_view uri) {
  if (HasDotSegmentOrEncodedSlash(uri)) return false;
  return entry.prefix ? UriUnderPrefix(uri, entry.text) : uri == entry.text;
}

bool EntryMatches(const AllowEntry& entry, const PeerIdentity& id) {
  if (entry.type == IdentityType::kAnyone) return true;
  const bool either = entry.type == IdentityType::kCommonNameOrDns;
  const bool cn = entry.type == IdentityType::kCommonName || either;
  const bool dns = entry.type == IdentityType::kDns || either;
  if (cn && !id.common_name.empty() && id.common_name == entry.text) return true;
  if (dns) {
    for (const std::string& name : id.dns_names) {
      if (name == entry.text) return true;
    }
  }
  if (entry.type == IdentityType::kUri) {
    for (const std::string& uri : id.uris) {
      if (UriMatches(entry, uri)) return true;
    }
  }
  return false;
}

Status BadEntry(std::string_view entry, std::string_view why) {
  return Status(Code::kUsage,
                fmt::format("allow entry \"{}\": {}", SanitizeForLog(entry, 128), why));
}

}  // namespace

bool HasDotSegmentOrEncodedSlash(std::string_view uri) {
  if (uri.find('\\') != std::string_view::npos || HasEncoded(uri, '2', 'f') ||
      HasEncoded(uri, '5', 'c')) {
    return true;
  }
  // Every '/'-separated piece, the scheme and authority included: a dot segment there is no
  // more legitimate than in the path.
  std::string_view rest = uri;
  while (true) {
    const size_t slash = rest.find('/');
    if (IsDotSegment(rest.substr(0, slash))) return true;
    if (slash == std::string_view::npos) return false;
    rest.remove_prefix(slash + 1);
  }
}

Result<AllowEntry> ParseAllowEntry(std::string_view entry) {
  AllowEntry out;
  if (entry.empty()) return BadEntry(entry, "an empty entry admits nobody");
  if (entry == kAnyone) return out;  // kAnyone.
  std::string_view text = entry;
  bool typed = false;
  const size_t colon = entry.find(':');
  if (colon != std::string_view::npos && IsWord(entry.substr(0, colon)) &&
      entry.substr(colon + 1, 2) != "//") {
    const std::string_view type = entry.substr(0, colon);
    if (EqualsIgnoringCase(type, "cn")) {
      out.type = IdentityType::kCommonName;
    } else if (EqualsIgnoringCase(type, "dns")) {
      out.type = IdentityType::kDns;
    } else if (EqualsIgnoringCase(type, "uri")) {
      out.type = IdentityType::kUri;
    } else {
      return BadEntry(entry, fmt::format("unknown identity type \"{}\" (the types are cn:, dns: "
                                         "and uri:; write \"cn:{}\" or \"uri:{}\" for the text "
                                         "as it is)",
                                         SanitizeForLog(type), SanitizeForLog(entry, 128),
                                         SanitizeForLog(entry, 128)));
    }
    typed = true;
    text = entry.substr(colon + 1);
    if (text.empty()) return BadEntry(entry, "the name after the type is empty");
  }
  // '*' means something only alone or as a trailing "/*"; elsewhere it would be a literal that
  // the user almost certainly meant as a wildcard.
  const size_t star = text.find('*');
  if (star != std::string_view::npos) {
    if (star != text.size() - 1 || !EndsWith(text, kPrefixWildcard)) {
      return BadEntry(entry,
                      "'*' is only allowed alone or at the end of a URI prefix ending in \"/*\"");
    }
    if (typed && out.type != IdentityType::kUri) {
      return BadEntry(entry, "a prefix (\"/*\") matches URI identities only: write uri:PREFIX/*");
    }
    out.type = IdentityType::kUri;
    out.prefix = true;
    text.remove_suffix(1);  // Keeps the '/'.
  } else if (!typed) {
    if (text.find("://") != std::string_view::npos) {
      out.type = IdentityType::kUri;
    } else {
      out.type = IdentityType::kCommonNameOrDns;
    }
  }
  if (out.type == IdentityType::kUri && HasDotSegmentOrEncodedSlash(text)) {
    return BadEntry(entry,
                    "a URI with a dot segment (\".\", \"..\", also percent-encoded), a \"%2f\" or "
                    "a '\\' matches no identity");
  }
  out.text = text;
  return out;
}

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

const std::string& PeerIdentity::Name() const {
  static const std::string kNone;
  if (!common_name.empty()) return common_name;
  if (!dns_names.empty()) return dns_names.front();
  if (!uris.empty()) return uris.front();
  return kNone;
}

std::string PeerIdentity::Display() const {
  const std::string& name = Name();
  // A certificate's CN may hold any byte (a newline would forge a log line): escaped here, once,
  // so that every message and log line that names the client is safe as is.
  return name.empty() ? "?" : SanitizeForLog(name, kDisplayMaxBytes);
}

bool IsAllowed(const std::vector<std::string>& allow, const PeerIdentity& id) {
  for (const std::string& text : allow) {
    Result<AllowEntry> entry = ParseAllowEntry(text);
    if (!entry) continue;
    if (EntryMatches(*entry, id)) return true;
  }
  return false;
}

}  // namespace pipegate
