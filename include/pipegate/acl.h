#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "pipegate/status.h"

namespace pipegate {

/// @brief Who a verified client certificate says the client is (SPEC §5).
struct PeerIdentity {
  std::string common_name;             ///< Subject CN, may be empty.
  std::vector<std::string> dns_names;  ///< DNS subject alternative names.
  std::vector<std::string> uris;       ///< URI subject alternative names (SPIFFE IDs work as is).
  /// The certificate chain the peer presented (DER, leaf first), kept by the gateway so that a
  /// reload can check the client against a new CA bundle or CRL. Not an identity.
  std::vector<std::string> chain_der;

  /// @return Every identity, CN first, as the certificate has them (not escaped).
  std::vector<std::string> All() const;
  /// @return The primary identity as the certificate has it (not escaped): the CN, else the
  /// first DNS SAN, else the first URI SAN, else "". A key to count by; never log it as is.
  const std::string& Name() const;
  /// @return The name to show in messages and logs: Name() escaped by SanitizeForLog() (control,
  /// non-ASCII, '"' and '\' bytes as \xNN) and cut at 128 bytes, or "?" if there is none. Safe to
  /// put in any log line or error message as is.
  std::string Display() const;
};

/// @brief The identity types an allow entry can name.
enum class IdentityType {
  kAnyone,           ///< "*".
  kCommonName,       ///< cn:NAME.
  kDns,              ///< dns:NAME.
  kUri,              ///< uri:URI, uri:PREFIX/*, or an untyped entry with "://" or "/*".
  kCommonNameOrDns,  ///< Any other untyped entry.
};

/// @brief One allow entry, parsed (docs/security.md §3).
///
/// - `*` admits any client the CA vouches for.
/// - `cn:NAME`, `dns:NAME`, `uri:URI` match the subject CN, a DNS SAN or a URI SAN exactly
///   (byte for byte, case-sensitive); `uri:PREFIX/*` matches URI SANs under PREFIX/.
/// - An untyped entry that ends in "/*" matches URI SANs under its prefix (as before types); one
///   that contains "://" matches URI SANs only, exactly; any other matches the CN or a DNS SAN.
/// - A type is the text before the first ':' when it is a word (a URI scheme's characters) and
///   the ':' is not followed by "//"; the words cn, dns and uri are known (in any case), others
///   are an error.
struct AllowEntry {
  IdentityType type = IdentityType::kAnyone;
  bool prefix = false;    ///< `.../*`: text is the prefix, ending in '/'.
  std::string_view text;  ///< What to compare with; points into the entry parsed.
};

/// @brief Parses @p entry (which must outlive the result).
/// @return The entry, or kUsage with a message that says what is wrong and how to write it.
Result<AllowEntry> ParseAllowEntry(std::string_view entry);

/// @return True if @p uri has a dot segment ("." or ".."), also percent-encoded ("%2e",
/// ".%2E", ...), a percent-encoded '/' ("%2f") or a '\' (literal or "%5c") in it. Such a URI
/// identity matches no allow entry: a service that decodes it could read it as a different, perhaps
/// more privileged, path than the one the entry names.
bool HasDotSegmentOrEncodedSlash(std::string_view uri);

/// @brief True if one of @p id's identities is matched by an entry of @p allow (see
/// AllowEntry). Entries that ParseAllowEntry() refuses match nothing (the config loader refuses
/// them first). A URI identity for which HasDotSegmentOrEncodedSlash() holds matches nothing.
bool IsAllowed(const std::vector<std::string>& allow, const PeerIdentity& id);

}  // namespace pipegate
