#include "server/tls.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "absl/strings/str_cat.h"
#include "engine/base/status_macros.h"
#include "engine/model/safetensors.h"
#include "grpc/grpc_security_constants.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "server/auth.h"

namespace mambaserve {
namespace {

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Deleter {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Bio = std::unique_ptr<BIO, BioDeleter>;

Bio MemoryBio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

absl::Status NotPem(const std::string& path, const char* what) {
  return absl::InvalidArgumentError(absl::StrCat(path, " holds no PEM ", what));
}

// The first certificate of a PEM file (a chain starts with the leaf).
absl::StatusOr<std::unique_ptr<X509, X509Deleter>> ReadCertificate(const std::string& path) {
  ASSIGN_OR_RETURN(std::string pem, ReadTextFile(path));
  Bio bio = MemoryBio(pem);
  std::unique_ptr<X509, X509Deleter> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) return NotPem(path, "certificate");
  return cert;
}

// What gRPC would otherwise only report as failed handshakes, checked while the operator watches.
absl::Status CheckFiles(const TlsFiles& files) {
  if (files.key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert needs --tls-key, the certificate's private key");
  }
  ASSIGN_OR_RETURN(auto cert, ReadCertificate(files.cert_file));
  ASSIGN_OR_RETURN(std::string key_pem, ReadTextFile(files.key_file));
  Bio bio = MemoryBio(key_pem);
  std::unique_ptr<EVP_PKEY, KeyDeleter> key(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) return NotPem(files.key_file, "private key (or it is encrypted)");
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(files.key_file, " is not the private key of ", files.cert_file));
  }
  if (!files.client_ca_file.empty())
    RETURN_IF_ERROR(ReadCertificate(files.client_ca_file).status());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFromFiles(
    const TlsFiles& files) {
  if (files.cert_file.empty()) {
    if (!files.key_file.empty() || !files.client_ca_file.empty()) {
      return absl::InvalidArgumentError("--tls-key and --tls-client-ca need --tls-cert");
    }
    return grpc::InsecureServerCredentials();
  }
  RETURN_IF_ERROR(CheckFiles(files));
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      files.key_file, files.cert_file, files.client_ca_file,
      static_cast<unsigned>(files.reload_interval_s));
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (files.client_ca_file.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

absl::StatusOr<std::string> CertificatePrincipal(const grpc::AuthContext& context) {
  const std::vector<grpc::string_ref> names =
      context.FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME);
  if (names.empty()) {
    return absl::UnauthenticatedError(
        "this server takes the caller's principal from its client certificate's common name, and "
        "the call carries none");
  }
  std::string principal(names.front().data(), names.front().size());
  if (absl::Status valid = TokenAuthenticator::ValidatePrincipal(principal); !valid.ok()) {
    return absl::UnauthenticatedError(absl::StrCat(
        "the client certificate's common name is not a usable principal: ", valid.message()));
  }
  return principal;
}

}  // namespace mambaserve
