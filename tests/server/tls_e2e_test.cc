// End to end over TLS: the real server with certificates this test makes with the openssl command
// line (a CA, a second CA nobody trusts, server and client certificates), and real gRPC clients.
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "mambaserve/v1/mambaserve.grpc.pb.h"
#include "tests/server/server_process.h"
#include "tests/server/session_calls.h"
#include "tests/testing/temp_dir.h"

namespace mambaserve {
namespace {

constexpr char kBinary[] = MAMBASERVE_BIN;
constexpr char kMambactl[] = MAMBACTL_BIN;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

class TlsE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new testing::TempDir();
    pki_ = new testing::TempDir();
    ASSERT_EQ(std::system((std::string(kBinary) + " make-model --preset tiny --seed 7 --out " +
                           model_dir_->path())
                              .c_str()),
              0);
    MakeCa("ca");
    MakeCa("other-ca");
    Issue("server", "ca", "localhost");
    Issue("other-server", "other-ca", "localhost");
    Issue("alice", "ca", "alice");
    Issue("bob", "ca", "bob");
    Issue("mallory", "other-ca", "mallory");
    Issue("bad-name", "ca", "not a principal");
  }
  static void TearDownTestSuite() {
    delete model_dir_;
    delete pki_;
  }

  static void Openssl(const std::string& args) {
    const std::string command = "openssl " + args + " >/dev/null 2>&1";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }
  static std::string Pem(const std::string& name) { return pki_->file(name + ".pem"); }
  static std::string Key(const std::string& name) { return pki_->file(name + ".key"); }
  static void MakeCa(const std::string& name) {
    Openssl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=" +
            name + " -keyout " + Key(name) + " -out " + Pem(name));
  }
  // A certificate for `cn` (with localhost and 127.0.0.1 as names) signed by `ca`.
  static void Issue(const std::string& name, const std::string& ca, const std::string& cn) {
    const std::string csr = pki_->file(name + ".csr"), ext = pki_->file(name + ".ext");
    std::ofstream(ext) << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
    Openssl("req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=" + cn +
            "' -keyout " + Key(name) + " -out " + csr);
    Openssl("x509 -req -days 2 -in " + csr + " -CA " + Pem(ca) + " -CAkey " + Key(ca) +
            " -CAcreateserial -extfile " + ext + " -out " + Pem(name));
  }

  // A client trusting `ca`, presenting `client`'s certificate when one is named.
  static std::shared_ptr<grpc::ChannelCredentials> Credentials(const std::string& ca,
                                                               const std::string& client = "") {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = Slurp(Pem(ca));
    if (!client.empty()) {
      options.pem_private_key = Slurp(Key(client));
      options.pem_cert_chain = Slurp(Pem(client));
    }
    return grpc::SslCredentials(options);
  }
  // Its own connection (no subchannel shared with earlier channels), so each call handshakes anew.
  std::unique_ptr<v1::MambaServe::Stub> Stub(
      std::shared_ptr<grpc::ChannelCredentials> credentials) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return v1::MambaServe::NewStub(
        grpc::CreateCustomChannel(server_->target(), std::move(credentials), args));
  }

  void Start(std::vector<std::string> args, std::shared_ptr<grpc::ChannelCredentials> credentials) {
    server_ = std::make_unique<testing::ServerProcess>(kBinary, model_dir_->path(), std::move(args),
                                                       std::vector<std::string>{}, credentials);
    ASSERT_TRUE(server_->serving()) << server_->log();
  }
  void TearDown() override {
    if (server_) {
      EXPECT_EQ(server_->Stop(), 0) << server_->log();
    }
  }

  static grpc::Status Info(v1::MambaServe::Stub& stub) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
    v1::ModelInfo info;
    return stub.GetModelInfo(&context, {}, &info);
  }
  static grpc::Status Generate(v1::MambaServe::Stub& stub, int* tokens) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::GenerateRequest request;
    request.set_text("over TLS");
    request.mutable_sampling()->set_max_tokens(8);
    request.mutable_sampling()->set_ignore_eos(true);
    auto reader = stub.Generate(&context, request);
    v1::GenerateResponse response;
    *tokens = 0;
    while (reader->Read(&response)) *tokens += response.token_ids_size();
    return reader->Finish();
  }

  std::vector<std::string> TlsArgs(const std::string& server = "server") {
    return {"--tls-cert", Pem(server), "--tls-key", Key(server)};
  }

  static testing::TempDir* model_dir_;
  static testing::TempDir* pki_;
  std::unique_ptr<testing::ServerProcess> server_;
};
testing::TempDir* TlsE2eTest::model_dir_;
testing::TempDir* TlsE2eTest::pki_;

TEST_F(TlsE2eTest, ATlsPortServesTlsClientsAndRefusesPlaintextAndUntrustedServers) {
  Start(TlsArgs(), Credentials("ca"));
  int tokens = 0;
  const grpc::Status generated = Generate(*Stub(Credentials("ca")), &tokens);
  EXPECT_TRUE(generated.ok()) << generated.error_message();
  EXPECT_EQ(tokens, 8);
  EXPECT_EQ(Info(*Stub(grpc::InsecureChannelCredentials())).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // A client that trusts another CA does not accept this server.
  EXPECT_EQ(Info(*Stub(Credentials("other-ca"))).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsE2eTest, MutualTlsRefusesClientsWithoutACertificateOrSignedByAnotherCa) {
  std::vector<std::string> args = TlsArgs();
  args.insert(args.end(), {"--tls-client-ca", Pem("ca")});
  Start(args, Credentials("ca", "alice"));
  EXPECT_TRUE(Info(*Stub(Credentials("ca", "alice"))).ok());
  EXPECT_EQ(Info(*Stub(Credentials("ca"))).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Info(*Stub(Credentials("ca", "mallory"))).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Info(*Stub(grpc::InsecureChannelCredentials())).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // mambactl, as an operator would call it.
  const std::string mambactl =
      std::string(kMambactl) + " --target " + server_->target() + " health --tls-ca " + Pem("ca");
  EXPECT_EQ(std::system((mambactl + " --tls-cert " + Pem("alice") + " --tls-key " + Key("alice") +
                         " >/dev/null 2>&1")
                            .c_str()),
            0);
  EXPECT_NE(std::system((mambactl + " >/dev/null 2>&1").c_str()), 0);
}

TEST_F(TlsE2eTest, TheClientCertificatesCommonNameOwnsTheSessions) {
  std::vector<std::string> args = TlsArgs();
  args.insert(args.end(), {"--tls-client-ca", Pem("ca")});
  Start(args, Credentials("ca", "alice"));
  auto alice = Stub(Credentials("ca", "alice"));
  auto bob = Stub(Credentials("ca", "bob"));
  ASSERT_TRUE(testing::CreateSession(*alice, "notes").ok());
  EXPECT_TRUE(testing::GetSession(*alice, "notes").ok());
  // Another principal cannot tell the session exists.
  EXPECT_EQ(testing::GetSession(*bob, "notes").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(testing::ListSessionIds(*bob).empty());
  ASSERT_TRUE(testing::CreateSession(*bob, "notes").ok());  // bob's own, beside alice's
  EXPECT_EQ(testing::ListSessionIds(*alice), std::vector<std::string>{"notes"});
  EXPECT_EQ(testing::ListSessionIds(*bob), std::vector<std::string>{"notes"});
  // A common name that cannot be a principal is refused, not mapped to a shared scope.
  const grpc::Status odd = Info(*Stub(Credentials("ca", "bad-name")));
  EXPECT_EQ(odd.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(odd.error_message().find("common name"), std::string::npos) << odd.error_message();
}

TEST_F(TlsE2eTest, ARotatedCertificateIsServedWithoutARestart) {
  testing::TempDir live;
  const std::string cert = live.file("tls.crt"), key = live.file("tls.key");
  std::ofstream(cert) << Slurp(Pem("server"));
  std::ofstream(key) << Slurp(Key("server"));
  Start({"--tls-cert", cert, "--tls-key", key, "--tls-reload-interval-s", "1"}, Credentials("ca"));
  ASSERT_TRUE(Info(*Stub(Credentials("ca"))).ok());
  // What cert-manager does: the mounted files change under the running server.
  std::ofstream(key) << Slurp(Key("other-server"));
  std::ofstream(cert) << Slurp(Pem("other-server"));
  bool rotated = false;
  for (int i = 0; i < 100 && !rotated; ++i) {
    rotated = Info(*Stub(Credentials("other-ca"))).ok();
    if (!rotated) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(rotated) << "the new certificate was not served within 10 s";
  EXPECT_EQ(Info(*Stub(Credentials("ca"))).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsE2eTest, AKeyThatDoesNotMatchTheCertificateIsAClearStartupError) {
  testing::ServerProcess server(kBinary, model_dir_->path(),
                                {"--tls-cert", Pem("server"), "--tls-key", Key("alice")});
  EXPECT_FALSE(server.serving());
  EXPECT_EQ(server.Wait(), 1);
  EXPECT_NE(server.log().find("is not the private key of"), std::string::npos) << server.log();
  testing::ServerProcess missing(
      kBinary, model_dir_->path(),
      {"--tls-cert", pki_->file("absent.pem"), "--tls-key", Key("server")});
  EXPECT_EQ(missing.Wait(), 1);
  EXPECT_NE(missing.log().find("absent.pem"), std::string::npos) << missing.log();
}

}  // namespace
}  // namespace mambaserve
