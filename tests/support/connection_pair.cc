#include "support/connection_pair.h"

namespace pipegate::testing {

uvglue::ConnectionOptions QuietConnectionOptions(bool is_client) {
  uvglue::ConnectionOptions options;
  options.mux.is_client = is_client;
  options.keepalive_interval_ms = 60000;
  options.keepalive_timeout_ms = 120000;
  return options;
}

::testing::AssertionResult LoadTestTls(TestTlsContexts* out) {
  TlsServerOptions server;
  server.cert = PkiPath("gateway.crt");
  server.key = PkiPath("gateway.key");
  server.client_ca = PkiPath("ca.crt");
  auto server_tls = TlsContext::NewServer(server);
  if (!server_tls) {
    return ::testing::AssertionFailure() << "server TLS: " << server_tls.error().message();
  }
  TlsClientOptions client;
  client.cert = PkiPath("alice.crt");
  client.key = PkiPath("alice.key");
  client.ca = PkiPath("ca.crt");
  auto client_tls = TlsContext::NewClient(client);
  if (!client_tls) {
    return ::testing::AssertionFailure() << "client TLS: " << client_tls.error().message();
  }
  out->server = *server_tls;
  out->client = *client_tls;
  return ::testing::AssertionSuccess();
}

}  // namespace pipegate::testing
