#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace pipegate {

/// @brief Who a verified client certificate says the client is (SPEC §5).
struct PeerIdentity {
  std::string common_name;             ///< Subject CN, may be empty.
  std::vector<std::string> dns_names;  ///< DNS subject alternative names.
  std::vector<std::string> uris;       ///< URI subject alternative names (SPIFFE IDs work as is).
  /// The certificate chain the peer presented (DER, leaf first), kept by the gateway so that a
  /// reload can check the client against a new CA bundle or CRL. Not an identity.
  std::vector<std::string> chain_der;

  /// @return Every identity, CN first.
  std::vector<std::string> All() const;
  /// @return The name to show in messages and logs: the CN, else the first SAN, else "?".
  std::string Display() const;
};

/// @brief True if one of @p id's identities is on @p allow. "*" admits anyone; an entry that
/// ends in "/*" admits URIs under that prefix. Matching is exact and case-sensitive otherwise.
bool IsAllowed(const std::vector<std::string>& allow, const PeerIdentity& id);

}  // namespace pipegate
