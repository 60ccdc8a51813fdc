// Remote pipe addresses (SPEC §2) and listen addresses.
//
// Accepted forms, all case-insensitive in the fixed parts (`pipe://`, `\pipe\`, `/pipe/`):
//   pipe://HOST[:PORT]/NAME   canonical
//   \\HOST[:PORT]\pipe\NAME   Windows UNC style; the port is an extension UNC does not have
//   //HOST[:PORT]/pipe/NAME   UNC with forward slashes, as typed in a Unix shell
// HOST is a DNS name, an IPv4 literal or a bracketed IPv6 literal (an optional `%zone` is kept).
// Messages do not repeat the whole address: callers prefix it, as SPEC §7 wants one line that
// names the address and the cause.

#include "pipegate/address.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace pipegate {
namespace {

constexpr size_t kMaxHostLength = 253;  // RFC 1035 §2.3.4, without the trailing dot.
constexpr size_t kMaxLabelLength = 63;

Status UsageError(std::string message) { return Status(Code::kUsage, std::move(message)); }

bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }

bool IsAsciiAlnum(char c) {
  return IsAsciiDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

char AsciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool StartsWithNoCase(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) {
    return false;
  }
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (AsciiLower(text[i]) != AsciiLower(prefix[i])) {
      return false;
    }
  }
  return true;
}

bool EqualsNoCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && StartsWithNoCase(a, b);
}

// Renders one byte for a message: printable ASCII as is, anything else as \xNN, so that a NUL
// or a control character never reaches a terminal raw.
void AppendEscaped(std::string& out, char c) {
  const auto byte = static_cast<unsigned char>(c);
  if (byte >= 0x20 && byte < 0x7f && c != '\\' && c != '"' && c != '\'') {
    out.push_back(c);
    return;
  }
  if (c == '\\' || c == '"' || c == '\'') {
    out.push_back('\\');
    out.push_back(c);
    return;
  }
  static constexpr std::array<char, 16> kHex = {'0', '1', '2', '3', '4', '5', '6', '7',
                                                '8', '9', 'a', 'b', 'c', 'd', 'e', 'f'};
  out += "\\x";
  out.push_back(kHex[byte >> 4]);
  out.push_back(kHex[byte & 0xf]);
}

std::string Quoted(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    AppendEscaped(out, c);
  }
  out.push_back('"');
  return out;
}

bool IsIpv4Literal(const std::string& host) {
  in_addr addr{};
  return inet_pton(AF_INET, host.c_str(), &addr) == 1;
}

// Accepts an IPv6 literal with an optional `%zone` suffix (link-local addresses).
bool IsIpv6Literal(std::string_view host) {
  const size_t percent = host.find('%');
  const std::string addr_part(host.substr(0, percent));
  if (percent != std::string_view::npos) {
    const std::string_view zone = host.substr(percent + 1);
    if (zone.empty()) {
      return false;
    }
    for (char c : zone) {
      if (!IsAsciiAlnum(c) && c != '.' && c != '_' && c != '-') {
        return false;
      }
    }
  }
  in6_addr addr{};
  return inet_pton(AF_INET6, addr_part.c_str(), &addr) == 1;
}

// Checks a DNS name or an IPv4 literal (unbracketed host). Underscores are allowed in labels
// because container and service-discovery names use them, though RFC 952 does not.
Status ValidateHostName(std::string_view host) {
  if (host.empty()) {
    return UsageError("missing host");
  }
  bool all_digits_and_dots = true;
  for (char c : host) {
    if (!IsAsciiDigit(c) && c != '.') {
      all_digits_and_dots = false;
      break;
    }
  }
  if (all_digits_and_dots) {
    if (!IsIpv4Literal(std::string(host))) {
      return UsageError("invalid IPv4 address " + Quoted(host));
    }
    return Status::Ok();
  }
  if (host.find(':') != std::string_view::npos) {
    return UsageError("IPv6 address " + Quoted(host) + " must be in brackets, like [::1]");
  }
  std::string_view name = host;
  if (name.back() == '.') {
    name.remove_suffix(1);  // A fully qualified name may end in a dot.
  }
  if (name.size() > kMaxHostLength) {
    return UsageError("host name is longer than 253 characters");
  }
  size_t label_start = 0;
  for (size_t i = 0; i <= name.size(); ++i) {
    if (i == name.size() || name[i] == '.') {
      const std::string_view label = name.substr(label_start, i - label_start);
      if (label.empty()) {
        return UsageError("empty label in host name " + Quoted(host));
      }
      if (label.size() > kMaxLabelLength) {
        return UsageError("label longer than 63 characters in host name " + Quoted(host));
      }
      if (label.front() == '-' || label.back() == '-') {
        return UsageError("label starts or ends with '-' in host name " + Quoted(host));
      }
      label_start = i + 1;
      continue;
    }
    const char c = name[i];
    if (!IsAsciiAlnum(c) && c != '-' && c != '_') {
      std::string message = "invalid character '";
      AppendEscaped(message, c);
      message += "' at position " + std::to_string(i + 1) + " in host name " + Quoted(host);
      return UsageError(std::move(message));
    }
  }
  return Status::Ok();
}

struct HostPort {
  std::string host;
  uint16_t port = kDefaultPort;
};

// Parses the decimal port after ':'. @p min_port is 1 for pipe addresses, 0 for listen ones.
Result<uint16_t> ParsePort(std::string_view text, unsigned min_port) {
  if (text.empty()) {
    return UsageError("empty port after ':'");
  }
  unsigned long value = 0;
  for (char c : text) {
    if (!IsAsciiDigit(c)) {
      return UsageError("invalid port " + Quoted(text) + " (expected a number)");
    }
    value = value * 10 + static_cast<unsigned long>(c - '0');
    if (value > 65535) {
      break;
    }
  }
  if (value < min_port || value > 65535) {
    return UsageError("port " + std::string(text) + " is out of range (" +
                      std::to_string(min_port) + "-65535)");
  }
  return static_cast<uint16_t>(value);
}

// Parses `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`. Returns the host without brackets.
Result<HostPort> ParseAuthority(std::string_view text, unsigned min_port) {
  HostPort out;
  std::string_view port_text;
  bool has_port = false;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) {
      return UsageError("missing ']' after IPv6 address");
    }
    const std::string_view v6 = text.substr(1, close - 1);
    if (!IsIpv6Literal(v6)) {
      return UsageError("invalid IPv6 address " + Quoted(v6));
    }
    out.host = std::string(v6);
    const std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        return UsageError("unexpected " + Quoted(rest) + " after IPv6 address");
      }
      has_port = true;
      port_text = rest.substr(1);
    }
  } else {
    const size_t colon = text.find(':');
    // A second colon means an unbracketed IPv6 literal; let the host check say so.
    if (colon != std::string_view::npos && text.find(':', colon + 1) == std::string_view::npos) {
      has_port = true;
      port_text = text.substr(colon + 1);
      text = text.substr(0, colon);
    }
    Status host_status = ValidateHostName(text);
    if (!host_status.ok()) {
      return host_status;
    }
    out.host = std::string(text);
  }
  if (has_port) {
    Result<uint16_t> port = ParsePort(port_text, min_port);
    if (!port) {
      return std::move(port).error();
    }
    out.port = *port;
  }
  return out;
}

// Finishes a parse: the authority, then the name according to @p rule. An empty @p name is
// accepted only with NameRule::kOptional (for `pipegate ls`).
Result<PipeAddress> Finish(std::string_view authority, std::string_view name, NameRule rule) {
  Result<HostPort> host_port = ParseAuthority(authority, 1);
  if (!host_port) {
    return std::move(host_port).error();
  }
  PipeAddress address;
  address.host = std::move(host_port->host);
  address.port = host_port->port;
  if (name.empty()) {
    if (rule == NameRule::kRequired) {
      return UsageError("missing pipe name");
    }
    return address;
  }
  Status name_status = ValidatePipeName(name);
  if (!name_status.ok()) {
    return name_status;
  }
  address.name = std::string(name);
  return address;
}

// Splits the part after the leading `\\` or `//` into authority and name, expecting the literal
// segment `pipe` in between. With NameRule::kOptional, `//HOST`, `//HOST/pipe` and
// `//HOST/pipe/` are accepted too.
Result<PipeAddress> ParseUnc(std::string_view rest, char separator, NameRule rule) {
  const char* const form =
      separator == '\\' ? "expected \\\\HOST\\pipe\\NAME" : "expected //HOST[:PORT]/pipe/NAME";
  const size_t first = rest.find(separator);
  const std::string_view authority = rest.substr(0, first);
  if (first == std::string_view::npos) {
    return Finish(authority, {}, rule);
  }
  std::string_view after = rest.substr(first + 1);
  const size_t second = after.find(separator);
  const std::string_view segment = after.substr(0, second);
  if (!EqualsNoCase(segment, "pipe")) {
    return UsageError(std::string(form) + " (the segment after the host must be 'pipe')");
  }
  if (second == std::string_view::npos) {
    return Finish(authority, {}, rule);
  }
  return Finish(authority, after.substr(second + 1), rule);
}

}  // namespace

std::string PipeAddress::ToString() const {
  std::string out = "pipe://";
  if (host.find(':') != std::string::npos) {
    out += "[" + host + "]";
  } else {
    out += host;
  }
  out += ":" + std::to_string(port);
  if (!name.empty()) {
    out += "/" + name;
  }
  return out;
}

bool PipeAddress::host_is_ip() const { return IsIpv4Literal(host) || IsIpv6Literal(host); }

Status ValidatePipeName(std::string_view name) {
  if (name.empty()) {
    return UsageError("pipe name is empty");
  }
  if (name.size() > kMaxPipeNameLength) {
    return UsageError("pipe name is " + std::to_string(name.size()) +
                      " characters long (at most 128)");
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (IsAsciiAlnum(c) || c == '.' || c == '_' || c == '-') {
      continue;
    }
    // Positions count from 1, like editor columns.
    std::string message = "invalid character '";
    AppendEscaped(message, c);
    message += "' at position " + std::to_string(i + 1) + " in pipe name " + Quoted(name) +
               " (allowed: A-Z a-z 0-9 . _ -)";
    return UsageError(std::move(message));
  }
  if (name == "." || name == "..") {
    return UsageError("pipe name " + Quoted(name) + " is not allowed");
  }
  return Status::Ok();
}

Result<PipeAddress> ParseAddress(std::string_view text, NameRule rule) {
  if (text.empty()) {
    return UsageError("empty address");
  }
  if (StartsWithNoCase(text, "pipe://")) {
    const std::string_view rest = text.substr(7);
    const size_t slash = rest.find('/');
    if (slash == std::string_view::npos) {
      return Finish(rest, {}, rule);
    }
    // Everything after the first slash is the name, so `a/b` is reported as a bad name.
    return Finish(rest.substr(0, slash), rest.substr(slash + 1), rule);
  }
  if (text.size() >= 2 && text[0] == '\\' && text[1] == '\\') {
    return ParseUnc(text.substr(2), '\\', rule);
  }
  if (text.size() >= 2 && text[0] == '/' && text[1] == '/') {
    return ParseUnc(text.substr(2), '/', rule);
  }
  return UsageError(
      "not a pipe address (expected pipe://HOST[:PORT]/NAME, \\\\HOST\\pipe\\NAME or "
      "//HOST[:PORT]/pipe/NAME)");
}

Result<std::pair<std::string, uint16_t>> ParseHostPort(std::string_view text) {
  if (text.empty()) {
    return UsageError("empty listen address");
  }
  if (text.front() == ':' && text.find(':', 1) == std::string_view::npos) {
    return UsageError("missing host in listen address (use 0.0.0.0 or [::] for all addresses)");
  }
  Result<HostPort> host_port = ParseAuthority(text, 0);
  if (!host_port) {
    return std::move(host_port).error();
  }
  return std::make_pair(std::move(host_port->host), host_port->port);
}

bool ParseNumericAddress(const std::string& host, uint16_t port, sockaddr_storage* out) {
  *out = {};
  auto* v4 = reinterpret_cast<sockaddr_in*>(out);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    return true;
  }
  *out = {};
  auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
  std::string address = host;
  if (size_t zone = host.find('%'); zone != std::string::npos) {
    address = host.substr(0, zone);
    v6->sin6_scope_id = ::if_nametoindex(host.c_str() + zone + 1);
  }
  if (::inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) != 1) {
    *out = {};
    return false;
  }
  v6->sin6_family = AF_INET6;
  v6->sin6_port = htons(port);
  return true;
}

}  // namespace pipegate
