// TLS and mutual TLS on the gRPC port (serve --tls-cert/--tls-key/--tls-client-ca). The files are
// checked once at start, so a typo is a clear startup error rather than failed handshakes; after
// that gRPC watches them and picks up new contents within the reload interval, so a rotated
// certificate (cert-manager rewriting a mounted Secret) takes effect without a restart.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/auth_context.h"
#include "grpcpp/security/server_credentials.h"

namespace mambaserve {

struct TlsFiles {
  std::string cert_file;       // PEM certificate chain of the server; empty: plaintext
  std::string key_file;        // PEM private key for cert_file
  std::string client_ca_file;  // PEM CA bundle; set: clients must present a certificate it signed
  int reload_interval_s = 10;  // how often the files are checked for new contents
};

// Plaintext credentials for empty `files`, else TLS (mutual with client_ca_file). InvalidArgument
// naming the file and the problem when a file is missing, not PEM, or the key does not match.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFromFiles(
    const TlsFiles& files);

// The principal a verified client certificate names: its subject's common name.
// Unauthenticated when the call carries no certificate or its CN is not a valid principal.
absl::StatusOr<std::string> CertificatePrincipal(const grpc::AuthContext& context);

}  // namespace mambaserve
