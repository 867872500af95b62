// End to end: the real server binary on 127.0.0.1, driven by the C++ client.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <tuple>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/utf8.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/client_unary_call.h"
#include "gtest/gtest.h"
#include "mambaserve/v1/mambaserve.grpc.pb.h"
#include "tests/server/server_process.h"
#include "tests/server/session_calls.h"
#include "tests/testing/temp_dir.h"

namespace mambaserve {
namespace {

using testing::Authorize;
using ::testing::HasSubstr;
using ::testing::Not;
using v1::GenerateRequest;
using v1::GenerateResponse;
using v1::MambaServe;

constexpr char kBinary[] = MAMBASERVE_BIN;

struct Generation {
  grpc::Status status;
  std::vector<int32_t> tokens;
  std::string text;
  std::vector<std::string> pieces;
  GenerateResponse last;
  int finish_reasons = 0;  // responses carrying one (must be exactly 1, the last)
};

class ServerE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new testing::TempDir();
    const std::string command =
        std::string(kBinary) + " make-model --preset tiny --seed 7 --out " + model_dir_->path();
    ASSERT_EQ(std::system(command.c_str()), 0);
  }
  static void TearDownTestSuite() { delete model_dir_; }

  void Start(std::vector<std::string> args = {}, std::vector<std::string> environment = {}) {
    server_ = std::make_unique<testing::ServerProcess>(kBinary, model_dir_->path(), std::move(args),
                                                       std::move(environment));
    ASSERT_TRUE(server_->serving()) << server_->log();
    stub_ = MambaServe::NewStub(server_->channel());
  }
  void TearDown() override {
    if (server_) {
      EXPECT_EQ(server_->Stop(), 0) << server_->log();
    }
    if (std::getenv("MAMBASERVE_TEST_SHOW_LOG") && server_)
      std::cerr << server_->log();  // debugging aid
  }

  static GenerateRequest Tokens(std::vector<int32_t> ids, int max_tokens, double temperature = 0) {
    GenerateRequest r;
    for (int32_t id : ids) r.mutable_tokens()->add_ids(id);
    r.mutable_sampling()->set_max_tokens(max_tokens);
    r.mutable_sampling()->set_temperature(temperature);
    r.mutable_sampling()->set_ignore_eos(true);
    return r;
  }

  Generation Run(const GenerateRequest& request,
                 std::chrono::milliseconds timeout = std::chrono::seconds(60),
                 const std::string& session_header = "") {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + timeout);
    if (!session_header.empty()) context.AddMetadata("x-session-id", session_header);
    auto reader = stub_->Generate(&context, request);
    Generation g;
    GenerateResponse response;
    while (reader->Read(&response)) {
      g.tokens.insert(g.tokens.end(), response.token_ids().begin(), response.token_ids().end());
      g.text += response.text();
      g.pieces.push_back(response.text());
      if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) ++g.finish_reasons;
      g.last = response;
    }
    g.status = reader->Finish();
    return g;
  }

  void CreateSession(const std::string& id) {
    grpc::ClientContext context;
    v1::CreateSessionRequest request;
    request.set_session_id(id);
    v1::Session session;
    ASSERT_TRUE(stub_->CreateSession(&context, request, &session).ok());
  }

  struct Exported {
    grpc::Status status;
    std::string blob;
    v1::ExportSessionResponse first;
    int chunks = 0;
    size_t largest_chunk = 0;
  };
  Exported ExportBlob(const std::string& id, const std::string& token = "") {
    grpc::ClientContext context;
    Authorize(context, token);
    v1::ExportSessionRequest request;
    request.set_session_id(id);
    auto reader = stub_->ExportSession(&context, request);
    Exported out;
    v1::ExportSessionResponse response;
    while (reader->Read(&response)) {
      if (out.chunks++ == 0) out.first = response;
      out.blob += response.blob_chunk();
      out.largest_chunk = std::max(out.largest_chunk, response.blob_chunk().size());
    }
    out.status = reader->Finish();
    return out;
  }
  // Sends `blob` in messages of `chunk` bytes, the session id in the first.
  grpc::Status ImportBlob(const std::string& id, const std::string& blob, size_t chunk,
                          v1::Session* session, const std::string& token = "") {
    grpc::ClientContext context;
    Authorize(context, token);
    auto writer = stub_->ImportSession(&context, session);
    v1::ImportSessionRequest request;
    request.set_session_id(id);
    size_t offset = 0;
    do {
      request.set_blob_chunk(blob.substr(offset, chunk));
      offset += chunk;
      if (!writer->Write(request)) break;
      request.clear_session_id();
    } while (offset < blob.size());
    writer->WritesDone();
    return writer->Finish();
  }

  v1::ModelInfo Info() {
    grpc::ClientContext context;
    v1::ModelInfo info;
    EXPECT_TRUE(stub_->GetModelInfo(&context, {}, &info).ok());
    return info;
  }

  // Waits (bounded) until no sequence is running: cancelled work must not continue.
  bool WaitIdle() {
    for (int i = 0; i < 250; ++i) {
      const auto info = Info();
      if (info.running() == 0 && info.waiting() == 0 && info.slots_in_use() == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  // The call's log line is written when gRPC is done with it, a moment after the client sees the
  // end: waits (bounded) for it.
  bool WaitForLog(const std::string& text) {
    for (int i = 0; i < 250; ++i) {
      if (server_->log().find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  std::vector<int32_t> Tokenize(const std::string& text) {
    grpc::ClientContext context;
    v1::TokenizeRequest request;
    request.set_text(text);
    v1::TokenizeResponse response;
    EXPECT_TRUE(stub_->Tokenize(&context, request, &response).ok());
    return {response.token_ids().begin(), response.token_ids().end()};
  }

  static testing::TempDir* model_dir_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<MambaServe::Stub> stub_;
};
testing::TempDir* ServerE2eTest::model_dir_;

TEST_F(ServerE2eTest, StreamsValidUtf8PiecesWithFinishReasonAndUsageOnlyOnTheLast) {
  Start();
  GenerateRequest r;
  r.set_text("Alice was beginning to get very tired");
  r.mutable_sampling()->set_max_tokens(24);
  r.mutable_sampling()->set_ignore_eos(true);
  r.mutable_sampling()->set_seed(3);
  r.mutable_sampling()->set_logprobs(2);
  const Generation g = Run(r);
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();
  EXPECT_GT(g.pieces.size(), 10u);
  EXPECT_EQ(g.tokens.size(), 24u);
  EXPECT_EQ(g.finish_reasons, 1);
  EXPECT_EQ(g.last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(g.last.usage().prompt_tokens(), static_cast<int64_t>(Tokenize(r.text()).size()));
  EXPECT_EQ(g.last.usage().generated_tokens(), 24);
  EXPECT_EQ(g.last.usage().session_length(), g.last.usage().prompt_tokens() + 24);
  EXPECT_GE(g.last.usage().time_to_first_token_s(), 0);
  EXPECT_EQ(g.last.logprobs_size(), static_cast<int>(g.last.token_ids_size()));
  ASSERT_GT(g.last.logprobs_size(), 0);
  EXPECT_EQ(g.last.logprobs(0).top_size(), 2);
  for (const std::string& piece : g.pieces) EXPECT_TRUE(ValidateUtf8(piece).ok());
}

// prompt_logprobs over gRPC: a scoring-only request streams every prompt token's log-probability
// (from the second: the first has no context) and no tokens; with generation they all come first,
// and the generated tokens are those of the same request without scoring.
TEST_F(ServerE2eTest, PromptLogprobsScoreThePromptBeforeAnyTokenAndMaxTokensZeroOnlyScores) {
  Start();
  std::vector<int32_t> prompt;
  for (int i = 0; i < 300; ++i) prompt.push_back(1 + (i * 37) % 500);
  auto scored_run = [&](int max_tokens) {
    GenerateRequest r = Tokens(prompt, max_tokens);
    r.mutable_sampling()->set_prompt_logprobs(2);
    grpc::ClientContext context;
    auto reader = stub_->Generate(&context, r);
    std::vector<v1::TokenLogprobs> logprobs;
    std::vector<int32_t> tokens;
    GenerateResponse response, last;
    bool scored_after_a_token = false;
    while (reader->Read(&response)) {
      if (response.prompt_logprobs_size() > 0) {
        EXPECT_EQ(response.prompt_logprobs_offset(), 1 + static_cast<int64_t>(logprobs.size()));
        scored_after_a_token |= !tokens.empty();
      }
      logprobs.insert(logprobs.end(), response.prompt_logprobs().begin(),
                      response.prompt_logprobs().end());
      tokens.insert(tokens.end(), response.token_ids().begin(), response.token_ids().end());
      last = response;
    }
    EXPECT_TRUE(reader->Finish().ok());
    EXPECT_FALSE(scored_after_a_token);
    return std::make_tuple(logprobs, tokens, last);
  };
  const auto [logprobs, tokens, last] = scored_run(0);
  ASSERT_EQ(logprobs.size(), prompt.size() - 1);
  EXPECT_TRUE(tokens.empty());
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.usage().generated_tokens(), 0);
  for (size_t i = 0; i < logprobs.size(); ++i) {
    EXPECT_EQ(logprobs[i].token_id(), prompt[i + 1]);
    EXPECT_LT(logprobs[i].logprob(), 0);
    ASSERT_EQ(logprobs[i].top_size(), 2);
    EXPECT_GE(logprobs[i].top(0).logprob(), logprobs[i].logprob());
  }
  const auto [again, generated, unused] = scored_run(8);
  ASSERT_EQ(again.size(), logprobs.size());
  for (size_t i = 0; i < again.size(); ++i)
    EXPECT_FLOAT_EQ(again[i].logprob(), logprobs[i].logprob());
  EXPECT_EQ(generated, Run(Tokens(prompt, 8)).tokens);
}

// ForkSession: the copy continues like the source would, both equal one request with their whole
// history; a fork needs an existing source that is the caller's own.
TEST_F(ServerE2eTest, AForkedSessionContinuesFromACopyOfTheConversation) {
  Start();
  CreateSession("doc");
  const std::vector<int32_t> document = {5, 6, 7, 8, 9, 10, 11, 12};
  const Generation read = Run(Tokens(document, 3), std::chrono::seconds(60), "doc");
  ASSERT_TRUE(read.status.ok()) << read.status.error_message();
  v1::ForkSessionRequest fork;
  fork.set_source_session_id("doc");
  fork.set_session_id("copy");
  v1::Session copy;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub_->ForkSession(&context, fork, &copy).ok());
  }
  EXPECT_EQ(copy.session_id(), "copy");
  EXPECT_EQ(copy.length_tokens(), read.last.usage().session_length());
  std::vector<int32_t> history = document;
  history.insert(history.end(), read.tokens.begin(), read.tokens.end());
  for (const char* id : {"copy", "doc"}) {
    const Generation turn = Run(Tokens({40, 41}, 5), std::chrono::seconds(60), id);
    std::vector<int32_t> whole = history;
    whole.insert(whole.end(), {40, 41});
    EXPECT_EQ(turn.tokens, Run(Tokens(whole, 5)).tokens) << id;
  }
  for (auto [source, code] :
       {std::pair{"", grpc::INVALID_ARGUMENT}, {"nowhere", grpc::NOT_FOUND}}) {
    grpc::ClientContext context;
    fork.set_source_session_id(source);
    fork.set_session_id("");
    EXPECT_EQ(stub_->ForkSession(&context, fork, &copy).error_code(), code) << source;
  }
}

TEST_F(ServerE2eTest, SixtyFourConcurrentStreamsEqualTheSameRequestsAlone) {
  Start();
  auto request = [](int i) {
    GenerateRequest r = Tokens({1 + i, 2 + i, 3 + i, 40 + i}, 16, 0.8);
    r.mutable_sampling()->set_seed(100 + i);
    r.mutable_sampling()->set_top_p(0.9);
    return r;
  };
  std::vector<std::future<Generation>> futures;
  for (int i = 0; i < 64; ++i) {
    futures.push_back(std::async(std::launch::async, [&, i] { return Run(request(i)); }));
  }
  std::vector<Generation> together;
  for (auto& f : futures) together.push_back(f.get());
  for (int i = 0; i < 64; ++i) {
    ASSERT_TRUE(together[i].status.ok()) << i << ": " << together[i].status.error_message();
    EXPECT_EQ(together[i].tokens.size(), 16u);
    EXPECT_EQ(together[i].tokens, Run(request(i)).tokens) << "request " << i;
  }
}

TEST_F(ServerE2eTest, SessionTurnsEqualOneRequestWithTheWholeConversation) {
  Start();
  CreateSession("chat");
  const std::vector<int32_t> p1 = {10, 20, 30, 40, 50}, p2 = {60, 70, 80};
  GenerateRequest t1 = Tokens(p1, 7);
  t1.set_session_id("chat");
  const Generation g1 = Run(t1);
  ASSERT_TRUE(g1.status.ok()) << g1.status.error_message();
  GenerateRequest t2 = Tokens(p2, 9);
  const Generation g2 =
      Run(t2, std::chrono::seconds(60), /*session_header=*/"chat");  // by metadata
  ASSERT_TRUE(g2.status.ok()) << g2.status.error_message();
  EXPECT_EQ(g2.last.usage().session_length(), 5 + 7 + 3 + 9);

  std::vector<int32_t> whole = p1;
  whole.insert(whole.end(), g1.tokens.begin(), g1.tokens.end());
  whole.insert(whole.end(), p2.begin(), p2.end());
  EXPECT_EQ(Run(Tokens(whole, 9)).tokens, g2.tokens);

  grpc::ClientContext context;
  v1::GetSessionRequest get;
  get.set_session_id("chat");
  v1::Session session;
  ASSERT_TRUE(stub_->GetSession(&context, get, &session).ok());
  EXPECT_EQ(session.length_tokens(), 24);
  EXPECT_EQ(session.location(), v1::STATE_LOCATION_DEVICE);
  EXPECT_GT(session.state_bytes(), 0);
}

#if defined(MAMBASERVE_CUDA_EMULATED_MODULE)
// The scheduler and server are unchanged over the CUDA backend: here its module built on the CUDA
// emulator (tests/cuda_emulator), which runs CudaBackend's kernels on the CPU. Concurrent greedy
// and seeded sampled streams and a two-turn session give the CPU backend's tokens.
TEST_F(ServerE2eTest, CudaBackendStreamsTheCpuBackendsTokens) {
  auto serve_all = [&] {
    std::vector<std::future<Generation>> futures;
    for (int i = 0; i < 6; ++i) {
      futures.push_back(std::async(std::launch::async, [&, i] {
        GenerateRequest r = Tokens({3 + i, 50 + 7 * i, 9, 200 + i, 11 + i}, 12, i % 2 ? 0.9 : 0.0);
        r.mutable_sampling()->set_seed(40 + i);
        return Run(r, std::chrono::seconds(120));
      }));
    }
    std::vector<std::vector<int32_t>> tokens;
    for (auto& f : futures) {
      const Generation g = f.get();
      EXPECT_TRUE(g.status.ok()) << g.status.error_message();
      tokens.push_back(g.tokens);
    }
    CreateSession("turns");
    for (const std::vector<int32_t>& prompt : {std::vector<int32_t>{5, 6, 7}, {8, 9}}) {
      GenerateRequest r = Tokens(prompt, 6);
      r.set_session_id("turns");
      const Generation g = Run(r, std::chrono::seconds(120));
      EXPECT_TRUE(g.status.ok()) << g.status.error_message();
      tokens.push_back(g.tokens);
    }
    return tokens;
  };
  Start({"--backend", "cpu"});
  const auto on_cpu = serve_all();
  ASSERT_EQ(server_->Stop(), 0) << server_->log();

  Start({"--backend", "cuda"}, {"MAMBASERVE_CUDA_MODULE=" MAMBASERVE_CUDA_EMULATED_MODULE});
  EXPECT_EQ(Info().backend(), "cuda");
  const auto on_cuda = serve_all();
  ASSERT_EQ(on_cuda.size(), on_cpu.size());
  for (size_t i = 0; i < on_cpu.size(); ++i) {
    EXPECT_EQ(on_cuda[i].size(), i < 6 ? 12u : 6u) << "request " << i;
    EXPECT_EQ(on_cuda[i], on_cpu[i]) << "request " << i;
  }
}

// A device too small for the weights: the server does not start, and says why in numbers.
TEST_F(ServerE2eTest, CudaOutOfMemoryForTheWeightsIsAClearStartupError) {
  testing::ServerProcess server(kBinary, model_dir_->path(), {"--backend", "cuda"},
                                {"MAMBASERVE_CUDA_MODULE=" MAMBASERVE_CUDA_EMULATED_MODULE,
                                 "MAMBASERVE_CUDA_EMULATOR_MEMORY_BYTES=100000"});
  EXPECT_FALSE(server.serving());
  EXPECT_NE(server.Wait(), 0);
  EXPECT_THAT(server.log(), HasSubstr("CUDA backend: cannot allocate 0.4 MiB for the F32 weights"));
  EXPECT_THAT(server.log(), HasSubstr("free of 0.1 MiB"));
  EXPECT_THAT(server.log(), ::testing::Not(HasSubstr("CUDA backend: CUDA backend")));
}
#endif

// gRPC would share a port through SO_REUSEPORT and the kernel would split connections (and so
// sessions) between the two servers: the second one must refuse to start instead.
TEST_F(ServerE2eTest, ASecondServerOnAnOccupiedPortRefusesToStart) {
  Start();
  const std::string port = server_->target().substr(server_->target().rfind(':') + 1);
  testing::ServerProcess second(kBinary, model_dir_->path(), {"--listen", "127.0.0.1:" + port});
  EXPECT_FALSE(second.serving());
  EXPECT_NE(second.Wait(), 0);
  EXPECT_THAT(second.log(), HasSubstr("could not listen on 127.0.0.1:" + port));
  CreateSession("still-mine");  // the first server still answers
}

TEST_F(ServerE2eTest, FlagsOutOfRangeAreRefusedWithTheReason) {
  struct Case {
    std::vector<std::string> args;
    std::string says;
    int exit_code;  // 2: the command line itself is refused; 1: serving could not start
  };
  const std::string short_key = model_dir_->file("short.key");
  std::ofstream(short_key) << "short\n";
  const std::vector<Case> cases = {
      {{"--listen", "127.0.0.1:99999"}, "needs a port in [0, 65535]", 1},
      {{"--max-sessions", "1000000000"}, "--max-sessions", 1},
      {{"--max-queue", "4294967296"}, "--max-queue: Value 4294967296 not in range", 2},
      {{"--max-batch", "3000000000"}, "--max-batch: Value 3000000000 not in range", 2},
      {{"--host-state-budget-mb", "1000000000"}, "--host-state-budget-mb", 1},
      {{"--log-level", "verbose"}, "--log-level: verbose not in {info,warning,error}", 2},
      {{"--no-such-flag"}, "--no-such-flag", 2},
      {{"--session-blob-key", "/no/such/key"}, "--session-blob-key: cannot read /no/such/key", 1},
      {{"--auth-tokens", "/no/such/tokens"}, "--auth-tokens: cannot read /no/such/tokens", 1},
      {{"--session-blob-key", short_key}, "holds 5 bytes; a key needs at least 32", 1},
  };
  for (const Case& c : cases) {
    testing::ServerProcess server(kBinary, model_dir_->path(), c.args);
    EXPECT_FALSE(server.serving()) << c.args[0];
    EXPECT_EQ(server.Wait(), c.exit_code) << c.args[0];
    EXPECT_THAT(server.log(), HasSubstr(c.says)) << c.args[0];
    EXPECT_THAT(server.log(), ::testing::Not(HasSubstr("bad_alloc"))) << c.args[0];
  }
}

TEST_F(ServerE2eTest, ModelInfoNamesTheModelNotTheServersFilesystem) {
  Start({"--served-model-name", "tiny-demo"});
  const v1::ModelInfo info = Info();
  // The startup line a log pipeline parses.
  EXPECT_THAT(server_->log(),
              HasSubstr(absl::StrCat(" model=tiny-demo model_type=mamba fingerprint=",
                                     info.fingerprint(), " backend=cpu")));
  EXPECT_THAT(server_->log(), HasSubstr("ready version="));
  EXPECT_EQ(info.model_name(), "tiny-demo");
  EXPECT_FALSE(info.fingerprint().empty());
  EXPECT_THAT(info.DebugString(), ::testing::Not(HasSubstr(model_dir_->path())));
}

// With --auth-tokens: calls without a known token are refused (health stays open), and each
// principal sees only its own sessions. Another principal's session answers NOT_FOUND with the same
// message as a name that does not exist, on every session method and on Generate; both may use the
// same name; an import belongs to the importer.
TEST_F(ServerE2eTest, PrincipalsSeeOnlyTheirOwnSessions) {
  testing::TempDir secrets;
  std::ofstream(secrets.file("tokens")) << "alice-token-0123456789 alice\n"
                                        << "bob-token-0123456789 bob\n";
  Start({"--auth-tokens", secrets.file("tokens")});
  struct As {
    grpc::ClientContext context;
    explicit As(const std::string& token) { Authorize(context, token); }
  };
  const std::string alice = "alice-token-0123456789", bob = "bob-token-0123456789";
  auto get = [&](const std::string& token, const std::string& id) {
    return testing::GetSession(*stub_, id, token);
  };
  auto list = [&](const std::string& token) { return testing::ListSessionIds(*stub_, token); };
  auto create = [&](const std::string& token, const std::string& id) {
    return testing::CreateSession(*stub_, id, token);
  };
  auto generate = [&](const std::string& token, const std::string& session) {
    As as(token);
    GenerateRequest request = Tokens({5, 6, 7}, 3);
    request.set_session_id(session);
    auto reader = stub_->Generate(&as.context, request);
    GenerateResponse response;
    while (reader->Read(&response)) {
    }
    return reader->Finish();
  };

  // No token, a wrong one: UNAUTHENTICATED; health needs none.
  for (const std::string& token : {std::string(), std::string("Bearer-wrong-0123456789")}) {
    As as(token);
    v1::ModelInfo info;
    EXPECT_EQ(stub_->GetModelInfo(&as.context, {}, &info).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(generate(token, "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckResponse health;
    ASSERT_TRUE(
        grpc::health::v1::Health::NewStub(server_->channel())->Check(&context, {}, &health).ok());
    EXPECT_EQ(health.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }

  ASSERT_TRUE(create(alice, "chat").ok());
  ASSERT_TRUE(generate(alice, "chat").ok());
  const grpc::Status across = get(bob, "chat");
  const grpc::Status absent = get(bob, "nothing");
  EXPECT_EQ(across.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(across.error_message(),
            absl::StrReplaceAll(absent.error_message(), {{"nothing", "chat"}}));
  EXPECT_EQ(generate(bob, "chat").error_code(), grpc::StatusCode::NOT_FOUND);
  {
    As as(bob);
    v1::DeleteSessionRequest request;
    request.set_session_id("chat");
    v1::DeleteSessionResponse response;
    EXPECT_EQ(stub_->DeleteSession(&as.context, request, &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  EXPECT_EQ(ExportBlob("chat", bob).status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(list(bob).empty());

  // The same name, independently; an import is the importer's.
  ASSERT_TRUE(create(bob, "chat").ok());
  const Exported exported = ExportBlob("chat", alice);
  ASSERT_TRUE(exported.status.ok());
  v1::Session imported;
  ASSERT_TRUE(ImportBlob("copy", exported.blob, 1 << 20, &imported, bob).ok());
  EXPECT_EQ(imported.session_id(), "copy");
  EXPECT_EQ(imported.length_tokens(), 6);
  EXPECT_THAT(list(bob), ::testing::ElementsAre("chat", "copy"));
  EXPECT_THAT(list(alice), ::testing::ElementsAre("chat"));
  EXPECT_EQ(get(alice, "copy").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(get(alice, "chat").ok());

  // mambactl sends the token from --token or $MAMBASERVE_TOKEN.
  const std::string out = secrets.file("out");
  const std::string ctl = std::string(MAMBACTL_BIN) + " --target " + server_->target();
  auto run = [&](const std::string& command) {
    const int rc = std::system((command + " >" + out + " 2>&1").c_str());
    std::ifstream in(out);
    return std::make_pair(rc, std::string(std::istreambuf_iterator<char>(in), {}));
  };
  EXPECT_THAT(run(ctl + " --token " + bob + " session list").second, HasSubstr("copy"));
  EXPECT_THAT(run("MAMBASERVE_TOKEN=" + alice + " " + ctl + " session list").second,
              ::testing::Not(HasSubstr("copy")));
  auto [refused_rc, refused] = run(ctl + " session list");
  EXPECT_NE(refused_rc, 0);
  EXPECT_THAT(refused, HasSubstr("UNAUTHENTICATED"));
}

// SIGHUP re-reads the tokens at once (and never stops the server, as its default action would).
TEST_F(ServerE2eTest, SighupReloadsTheAuthTokens) {
  testing::TempDir secrets;
  const std::string tokens = secrets.file("tokens");
  std::ofstream(tokens) << "alice-token-0123456789 alice\n";
  Start({"--auth-tokens", tokens});
  auto info = [&](const std::string& token) {
    grpc::ClientContext context;
    Authorize(context, token);
    v1::ModelInfo model;
    return stub_->GetModelInfo(&context, {}, &model).error_code();
  };
  ASSERT_EQ(info("carol-token-0123456789"), grpc::StatusCode::UNAUTHENTICATED);
  // Same modification time as before, so only the signal can make the server read it again.
  const auto mtime = std::filesystem::last_write_time(tokens);
  std::ofstream(tokens) << "carol-token-0123456789 carol\n";
  std::filesystem::last_write_time(tokens, mtime);
  server_->Signal(SIGHUP);
  ASSERT_TRUE(WaitForLog("auth tokens re-read")) << server_->log();
  EXPECT_EQ(info("carol-token-0123456789"), grpc::StatusCode::OK);
  EXPECT_EQ(info("alice-token-0123456789"), grpc::StatusCode::UNAUTHENTICATED);
}

// --max-streams-per-principal: one tenant's open streams are bounded, others are not affected, and
// the quota frees when a stream ends.
TEST_F(ServerE2eTest, OnePrincipalCannotHoldMoreStreamsThanItsQuota) {
  testing::TempDir secrets;
  std::ofstream(secrets.file("tokens")) << "alice-token-0123456789 alice\n"
                                        << "bob-token-0123456789 bob\n";
  Start({"--auth-tokens", secrets.file("tokens"), "--max-streams-per-principal", "1",
         "--stream-buffer", "2"});
  auto open = [&](grpc::ClientContext& context, const std::string& token, int max_tokens) {
    Authorize(context, token);
    return stub_->Generate(&context, Tokens({7, 8, 9}, max_tokens));
  };
  grpc::ClientContext held_context;
  auto held = open(held_context, "alice-token-0123456789", 4000);
  GenerateResponse response;
  ASSERT_TRUE(held->Read(&response));  // open, then paused: the reader stops here
  {
    grpc::ClientContext context;
    auto second = open(context, "alice-token-0123456789", 4);
    while (second->Read(&response)) {
    }
    const grpc::Status refused = second->Finish();
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_THAT(refused.error_message(), HasSubstr("--max-streams-per-principal"));
  }
  {
    grpc::ClientContext context;
    auto other = open(context, "bob-token-0123456789", 4);
    while (other->Read(&response)) {
    }
    EXPECT_TRUE(other->Finish().ok());
  }
  held_context.TryCancel();
  while (held->Read(&response)) {
  }
  held->Finish();
  grpc::Status again;
  for (int attempt = 0; attempt < 200; ++attempt) {  // the quota frees once the stream is done
    grpc::ClientContext context;
    auto next = open(context, "alice-token-0123456789", 4);
    while (next->Read(&response)) {
    }
    again = next->Finish();
    if (again.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(again.ok()) << again.error_message();
}

// A stream's request id (the client's x-request-id, or one the server makes) comes back in the
// initial metadata and names the stream's log line; the line carries no prompt text.
TEST_F(ServerE2eTest, RequestIdsTieAStreamToItsLogLine) {
  Start();
  auto generate = [&](const std::string& request_id) {
    grpc::ClientContext context;
    if (!request_id.empty()) context.AddMetadata("x-request-id", request_id);
    GenerateRequest request;
    request.set_text("a secret prompt");
    request.mutable_sampling()->set_max_tokens(2);
    auto reader = stub_->Generate(&context, request);
    GenerateResponse response;
    while (reader->Read(&response)) {
    }
    EXPECT_TRUE(reader->Finish().ok());
    const auto& metadata = context.GetServerInitialMetadata();
    const auto it = metadata.find("x-request-id");
    return it == metadata.end() ? std::string() : std::string(it->second.data(), it->second.size());
  };
  EXPECT_EQ(generate("client-req-42"), "client-req-42");
  const std::string made = generate("");
  EXPECT_EQ(made.size(), 16u) << made;
  EXPECT_NE(generate("bad id with spaces"), "bad id with spaces");
  bool logged = false;
  for (int i = 0; i < 200 && !logged; ++i) {  // the line is written as the call's reactor ends
    const std::string log = server_->log();
    logged = log.find("request_id=client-req-42 ") != std::string::npos &&
             log.find("request_id=" + made + " ") != std::string::npos;
    if (!logged) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(logged) << server_->log();
  EXPECT_THAT(server_->log(), ::testing::Not(HasSubstr("secret")));
}

// --log-prompts opts in to the prompt and the generated text, escaped onto the one log line.
TEST_F(ServerE2eTest, LogPromptsLogsThePromptAndTheCompletionEscaped) {
  Start({"--log-prompts"});
  GenerateRequest request = Tokens({}, 6);
  request.set_text("a logged\nprompt \"quoted\"");
  grpc::ClientContext context;
  context.AddMetadata("x-request-id", "logged-1");
  auto reader = stub_->Generate(&context, request);
  GenerateResponse response;
  std::string completion;
  while (reader->Read(&response)) completion += response.text();
  ASSERT_TRUE(reader->Finish().ok());
  ASSERT_TRUE(WaitForLog("request_id=logged-1 ")) << server_->log();
  EXPECT_THAT(server_->log(), HasSubstr(R"( prompt="a logged\nprompt \"quoted\"" completion=")" +
                                        absl::CHexEscape(completion) + "\""));
  const Generation ids = Run(Tokens({5, 6, 7}, 2));
  ASSERT_TRUE(ids.status.ok());
  ASSERT_TRUE(WaitForLog("prompt=[5,6,7] completion=")) << server_->log();
}

TEST_F(ServerE2eTest, LogLevelWarningLeavesOutInfoLines) {
  Start({"--log-level", "warning"});
  CreateSession("quiet");
  EXPECT_THAT(server_->log(), ::testing::Not(HasSubstr("ready version=")));
  EXPECT_THAT(server_->log(), ::testing::Not(HasSubstr("CreateSession session=quiet")));
}

// Bytes that are not the method's message get INVALID_ARGUMENT saying so on every method (gRPC's
// callback handlers alone would answer UNIMPLEMENTED with no message).
TEST_F(ServerE2eTest, UnparsableRequestsAreInvalidArgumentOnEveryUnaryMethod) {
  Start();
  const std::string not_a_message("\xff\xff\xff");
  const std::string invalid_utf8("\x0a\x02\xc3\x28", 4);  // string field 1 holding C3 28
  const std::vector<std::pair<const char*, std::vector<std::string>>> cases = {
      {"CreateSession", {not_a_message, invalid_utf8}},
      {"GetSession", {not_a_message, invalid_utf8}},
      {"DeleteSession", {not_a_message, invalid_utf8}},
      {"Tokenize", {not_a_message, invalid_utf8}},
      {"ListSessions", {not_a_message}},
      {"Detokenize", {not_a_message}},
      {"GetModelInfo", {not_a_message}}};
  for (const auto& [method, inputs] : cases) {
    for (const std::string& bytes : inputs) {
      grpc::ClientContext context;
      grpc::Slice slice(bytes);
      grpc::ByteBuffer request(&slice, 1), response;
      const grpc::Status status =
          grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
              server_->channel().get(),
              grpc::internal::RpcMethod(absl::StrCat("/mambaserve.v1.MambaServe/", method).c_str(),
                                        grpc::internal::RpcMethod::NORMAL_RPC),
              &context, request, &response);
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method;
      EXPECT_THAT(status.error_message(), HasSubstr("could not be parsed")) << method;
    }
  }
  // A method that does not exist is still UNIMPLEMENTED.
  grpc::ClientContext context;
  grpc::Slice slice(std::string("\xff"));
  grpc::ByteBuffer request(&slice, 1), response;
  EXPECT_EQ((grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
                 server_->channel().get(),
                 grpc::internal::RpcMethod("/mambaserve.v1.MambaServe/NoSuchMethod",
                                           grpc::internal::RpcMethod::NORMAL_RPC),
                 &context, request, &response))
                .error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(ServerE2eTest, DetokenizeIsBounded) {
  Start();
  grpc::ClientContext context;
  v1::DetokenizeRequest request;
  for (int i = 0; i < 65537; ++i) request.add_token_ids(1);
  v1::DetokenizeResponse response;
  const grpc::Status status = stub_->Detokenize(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("at most 65536"));
}

TEST_F(ServerE2eTest, ServerMadeSessionIdsCarry128RandomBits) {
  Start();
  std::set<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    grpc::ClientContext context;
    v1::Session session;
    ASSERT_TRUE(stub_->CreateSession(&context, {}, &session).ok());
    EXPECT_THAT(session.session_id(), ::testing::MatchesRegex("s-[0-9a-f]{32}"));
    ids.insert(session.session_id());
  }
  EXPECT_EQ(ids.size(), 20u);
}

TEST_F(ServerE2eTest, TextSessionTurnsEqualOneTextRequestWhenTheBoundaryIsClean) {
  Start();
  // Find a first turn whose generated tokens re-tokenize to themselves after the prompt (a clean
  // boundary), so the whole conversation as one text is the same token sequence.
  const std::string t1 = "It is a truth universally acknowledged,";
  const std::string t2 = " said Alice.";
  for (int seed = 0; seed < 200; ++seed) {
    const std::string id = "text-" + std::to_string(seed);
    CreateSession(id);
    GenerateRequest r1;
    r1.set_text(t1);
    r1.set_session_id(id);
    r1.mutable_sampling()->set_max_tokens(2);
    r1.mutable_sampling()->set_seed(seed);
    r1.mutable_sampling()->set_ignore_eos(true);
    const Generation g1 = Run(r1);
    ASSERT_TRUE(g1.status.ok());
    std::vector<int32_t> expected = Tokenize(t1);
    expected.insert(expected.end(), g1.tokens.begin(), g1.tokens.end());
    const std::vector<int32_t> second = Tokenize(t2);
    expected.insert(expected.end(), second.begin(), second.end());
    if (Tokenize(t1 + g1.text + t2) != expected) continue;

    GenerateRequest r2;
    r2.set_text(t2);
    r2.set_session_id(id);
    r2.mutable_sampling()->set_max_tokens(12);
    r2.mutable_sampling()->set_temperature(0);
    r2.mutable_sampling()->set_ignore_eos(true);
    const Generation g2 = Run(r2);
    GenerateRequest whole = r2;
    whole.clear_session_id();
    whole.set_text(t1 + g1.text + t2);
    const Generation one_shot = Run(whole);
    EXPECT_EQ(g2.tokens, one_shot.tokens);
    EXPECT_EQ(g2.text, one_shot.text);
    return;
  }
  FAIL() << "no seed gave a clean boundary";
}

TEST_F(ServerE2eTest, ExportDeleteImportContinuesWithTheSameTokens) {
  Start();
  CreateSession("a");
  GenerateRequest first = Tokens({5, 6, 7, 8}, 6);
  first.set_session_id("a");
  ASSERT_TRUE(Run(first).status.ok());

  const Exported exported = ExportBlob("a");
  ASSERT_TRUE(exported.status.ok()) << exported.status.error_message();
  EXPECT_EQ(exported.first.format_version(), 2u);
  EXPECT_EQ(exported.first.model_fingerprint(), Info().fingerprint());
  EXPECT_EQ(exported.first.blob_bytes(), exported.blob.size());

  GenerateRequest next = Tokens({9, 10}, 8);
  next.set_session_id("a");
  const Generation direct = Run(next);
  ASSERT_TRUE(direct.status.ok());

  grpc::ClientContext delete_context;
  v1::DeleteSessionRequest del;
  del.set_session_id("a");
  v1::DeleteSessionResponse deleted;
  ASSERT_TRUE(stub_->DeleteSession(&delete_context, del, &deleted).ok());
  const Generation gone = Run(next);
  EXPECT_EQ(gone.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(gone.status.error_message(), HasSubstr("deleted"));

  v1::Session imported;
  // In 100-byte messages: the server reassembles them in order.
  ASSERT_TRUE(ImportBlob("a", exported.blob, 100, &imported).ok());
  EXPECT_EQ(imported.length_tokens(), 10);
  EXPECT_EQ(imported.location(), v1::STATE_LOCATION_HOST);
  EXPECT_EQ(Run(next).tokens, direct.tokens);

  std::string corrupt = exported.blob;
  corrupt[corrupt.size() / 2] ^= 1;
  const grpc::Status bad = ImportBlob("b", corrupt, 1 << 20, &imported);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.error_message(), HasSubstr("checksum"));
  // More bytes than any session of this model is refused while it streams in.
  const grpc::Status huge = ImportBlob("c", std::string(8 << 20, 'x'), 1 << 20, &imported);
  EXPECT_EQ(huge.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(huge.error_message(), HasSubstr("more than any session of this model"));
}

// A state of over 2 MiB (Falcon-Mamba-7B's is 38 MiB) crosses in 1 MiB chunks, within gRPC's
// default 4 MiB message limit on both sides.
TEST_F(ServerE2eTest, AStateLargerThanAMessageCrossesInChunks) {
  testing::TempDir big_state;
  const std::string make = std::string(kBinary) +
                           " make-model --preset tiny --layers 16 --d-state 256 --seed 3 --out " +
                           big_state.path();
  ASSERT_EQ(std::system(make.c_str()), 0);
  // Few slots: the state pool is reserved at start, and this state is 100 times the tiny one's.
  server_ = std::make_unique<testing::ServerProcess>(
      kBinary, big_state.path(),
      std::vector<std::string>{"--max-sessions", "4", "--max-batch", "2"});
  ASSERT_TRUE(server_->serving()) << server_->log();
  stub_ = MambaServe::NewStub(server_->channel());
  CreateSession("big");
  GenerateRequest first = Tokens({5, 6, 7}, 4);
  first.set_session_id("big");
  ASSERT_TRUE(Run(first).status.ok());

  const Exported exported = ExportBlob("big");
  ASSERT_TRUE(exported.status.ok()) << exported.status.error_message();
  EXPECT_GT(exported.blob.size(), size_t{2} << 20);
  EXPECT_GE(exported.chunks, 3);
  EXPECT_LE(exported.largest_chunk, size_t{1} << 20);
  EXPECT_EQ(exported.first.blob_bytes(), exported.blob.size());

  GenerateRequest next = Tokens({9}, 6);
  next.set_session_id("big");
  const Generation direct = Run(next);
  ASSERT_TRUE(direct.status.ok());
  v1::Session imported;
  ASSERT_TRUE(ImportBlob("copy", exported.blob, 1 << 20, &imported).ok());
  next.set_session_id("copy");
  EXPECT_EQ(Run(next).tokens, direct.tokens);
}

TEST_F(ServerE2eTest, IdleSessionsAreParkedToHostAndRestoredWithTheSameTokens) {
  Start({"--max-sessions", "2", "--max-batch", "2"});
  const std::vector<std::vector<int32_t>> prompts = {{11, 12, 13}, {21, 22}, {31, 32, 33, 34}};
  std::vector<Generation> first;
  for (int i = 0; i < 3; ++i) {
    const std::string id = absl::StrCat("s", i);
    CreateSession(id);
    GenerateRequest r = Tokens(prompts[i], 5);
    r.set_session_id(id);
    first.push_back(Run(r));
    ASSERT_TRUE(first.back().status.ok());
  }
  // Two slots, three sessions: the least recently used (s0) went to host memory.
  grpc::ClientContext context;
  v1::GetSessionRequest get;
  get.set_session_id("s0");
  v1::Session s0;
  ASSERT_TRUE(stub_->GetSession(&context, get, &s0).ok());
  EXPECT_EQ(s0.location(), v1::STATE_LOCATION_HOST);
  EXPECT_EQ(Info().sessions_parked(), 1);

  GenerateRequest next = Tokens({40, 41}, 6);
  next.set_session_id("s0");
  const Generation resumed = Run(next);  // restored into a slot (parking s1)
  ASSERT_TRUE(resumed.status.ok());
  std::vector<int32_t> whole = prompts[0];
  whole.insert(whole.end(), first[0].tokens.begin(), first[0].tokens.end());
  whole.insert(whole.end(), {40, 41});
  EXPECT_EQ(Run(Tokens(whole, 6)).tokens, resumed.tokens);
}

TEST_F(ServerE2eTest, OverTheHostBudgetParkedSessionsAreEvictedAndSaySo) {
  Start({"--max-sessions", "1", "--max-batch", "1", "--host-state-budget-mb", "0"});
  for (const char* id : {"old", "new"}) {
    CreateSession(id);
    GenerateRequest r = Tokens({1, 2}, 3);
    r.set_session_id(id);
    ASSERT_TRUE(Run(r).status.ok());
  }
  GenerateRequest again = Tokens({3}, 3);
  again.set_session_id("old");
  const Generation g = Run(again);
  EXPECT_EQ(g.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(g.status.error_message(), HasSubstr("evicted"));
}

TEST_F(ServerE2eTest, IdleSessionsExpireAfterTheTtl) {
  Start({"--session-ttl-s", "1"});
  CreateSession("brief");
  grpc::Status status;
  for (int i = 0; i < 100; ++i) {  // TTL 1 s, checked every second: gone within ~2 s
    grpc::ClientContext context;
    v1::GetSessionRequest get;
    get.set_session_id("brief");
    v1::Session session;
    status = stub_->GetSession(&context, get, &session);
    if (!status.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("expired"));
}

TEST_F(ServerE2eTest, CancelMidStreamFreesTheSlotAndStopsWork) {
  Start({"--max-tokens-limit", "1000000"});
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, Tokens({1, 2, 3}, 1000000));
  GenerateResponse response;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Read(&response));
  context.TryCancel();
  while (reader->Read(&response)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitIdle());
  EXPECT_TRUE(Run(Tokens({1, 2}, 4)).status.ok());
  EXPECT_TRUE(WaitForLog("finish=cancelled")) << server_->log();
}

TEST_F(ServerE2eTest, DeadlineEndsTheStreamAndFreesTheSlot) {
  Start({"--max-tokens-limit", "1000000"});
  const Generation g = Run(Tokens({1, 2, 3}, 1000000), std::chrono::milliseconds(150));
  EXPECT_EQ(g.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(g.tokens.size(), 1000000u);
  EXPECT_TRUE(WaitIdle());
  EXPECT_TRUE(Run(Tokens({1, 2}, 4)).status.ok());
}

TEST_F(ServerE2eTest, FullQueueIsRefusedAtOnceWithResourceExhausted) {
  Start({"--max-batch", "1", "--max-sessions", "1", "--max-queue", "1", "--max-tokens-limit",
         "1000000"});
  grpc::ClientContext a_context, b_context;
  auto a = stub_->Generate(&a_context, Tokens({1, 2}, 1000000));  // holds the only slot
  GenerateResponse response;
  ASSERT_TRUE(a->Read(&response));
  auto b = stub_->Generate(&b_context, Tokens({3, 4}, 4));  // waits in the queue
  for (int i = 0; i < 100 && Info().waiting() < 1; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(Info().waiting(), 1);
  const auto start = std::chrono::steady_clock::now();
  grpc::ClientContext c_context;
  auto c = stub_->Generate(&c_context, Tokens({5, 6}, 4));
  while (c->Read(&response)) {
  }
  const grpc::Status refused = c->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("queue is full"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  // With when to come back, for plain clients and for gRPC's own retry policy.
  for (const char* key : {"retry-after-ms", "grpc-retry-pushback-ms"}) {
    const auto hint = c_context.GetServerTrailingMetadata().find(key);
    ASSERT_NE(hint, c_context.GetServerTrailingMetadata().end()) << key;
    const int ms = std::stoi(std::string(hint->second.data(), hint->second.size()));
    EXPECT_GE(ms, 500);
    EXPECT_LT(ms, 1500);
  }
  a_context.TryCancel();
  while (a->Read(&response)) {
  }
  a->Finish();
  int b_tokens = 0;
  while (b->Read(&response)) b_tokens += response.token_ids_size();
  EXPECT_TRUE(b->Finish().ok());
  EXPECT_EQ(b_tokens, 4);
}

TEST_F(ServerE2eTest, SlowReaderDoesNotStallOtherStreams) {
  Start({"--stream-buffer", "2"});
  grpc::ClientContext slow_context;
  auto slow = stub_->Generate(&slow_context, Tokens({7, 8, 9}, 3000));
  GenerateResponse response;
  ASSERT_TRUE(slow->Read(&response));  // then stop reading for a while
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) {
    const Generation g = Run(Tokens({1 + i, 2}, 32));
    ASSERT_TRUE(g.status.ok());
    EXPECT_EQ(g.tokens.size(), 32u);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  int tokens = response.token_ids_size();
  while (slow->Read(&response)) tokens += response.token_ids_size();
  EXPECT_TRUE(slow->Finish().ok());
  EXPECT_EQ(tokens, 3000);
}

TEST_F(ServerE2eTest, InvalidRequestsSayWhatToFixAndOthersKeepBeingServed) {
  Start({"--max-prompt-tokens", "64", "--max-tokens-limit", "1000000"});
  CreateSession("busy");
  struct Case {
    const char* what;
    GenerateRequest request;
    grpc::StatusCode code;
    const char* message;
    std::string header = "";
  };
  auto with = [](void (*mutate)(v1::SamplingParams*)) {
    GenerateRequest r = Tokens({1, 2, 3}, 4);
    mutate(r.mutable_sampling());
    return r;
  };
  std::vector<Case> cases = {
      {"max_tokens", with([](v1::SamplingParams* s) { s->set_max_tokens(0); }),
       grpc::INVALID_ARGUMENT, "max_tokens"},
      {"temperature", with([](v1::SamplingParams* s) { s->set_temperature(-1); }),
       grpc::INVALID_ARGUMENT, "temperature"},
      {"top_k", with([](v1::SamplingParams* s) { s->set_top_k(-2); }), grpc::INVALID_ARGUMENT,
       "top_k"},
      {"top_p", with([](v1::SamplingParams* s) { s->set_top_p(0); }), grpc::INVALID_ARGUMENT,
       "top_p"},
      {"min_p", with([](v1::SamplingParams* s) { s->set_min_p(2); }), grpc::INVALID_ARGUMENT,
       "min_p"},
      {"repetition_penalty", with([](v1::SamplingParams* s) { s->set_repetition_penalty(0); }),
       grpc::INVALID_ARGUMENT, "repetition_penalty"},
      {"presence_penalty", with([](v1::SamplingParams* s) { s->set_presence_penalty(5); }),
       grpc::INVALID_ARGUMENT, "presence_penalty"},
      {"frequency_penalty", with([](v1::SamplingParams* s) { s->set_frequency_penalty(-5); }),
       grpc::INVALID_ARGUMENT, "frequency_penalty"},
      {"logprobs", with([](v1::SamplingParams* s) { s->set_logprobs(100); }),
       grpc::INVALID_ARGUMENT, "logprobs"},
      {"prompt_logprobs", with([](v1::SamplingParams* s) { s->set_prompt_logprobs(21); }),
       grpc::INVALID_ARGUMENT, "prompt_logprobs"},
      {"scoring only without prompt_logprobs",
       with([](v1::SamplingParams* s) { s->set_max_tokens(0); }), grpc::INVALID_ARGUMENT,
       "0 only with prompt_logprobs"},
      {"stop_token_ids", with([](v1::SamplingParams* s) { s->add_stop_token_ids(99999); }),
       grpc::INVALID_ARGUMENT, "stop_token_ids[0]"},
      {"empty prompt", GenerateRequest(), grpc::INVALID_ARGUMENT, "prompt is empty"},
      {"empty ids", Tokens({}, 4), grpc::INVALID_ARGUMENT, "prompt is empty"},
      {"token id", Tokens({1, 100000}, 4), grpc::INVALID_ARGUMENT, "tokens.ids[1]"},
      {"long prompt", Tokens(std::vector<int32_t>(65, 5), 4), grpc::INVALID_ARGUMENT,
       "--max-prompt-tokens"},
  };
  GenerateRequest unknown = Tokens({1}, 4);
  unknown.set_session_id("missing");
  cases.push_back({"unknown session", unknown, grpc::NOT_FOUND, "does not exist"});
  GenerateRequest mismatch = Tokens({1}, 4);
  mismatch.set_session_id("busy");
  cases.push_back({"metadata mismatch", mismatch, grpc::INVALID_ARGUMENT, "disagree", "other"});
  GenerateRequest bad_id = Tokens({1}, 4);
  bad_id.set_session_id("no spaces allowed");
  cases.push_back({"session id", bad_id, grpc::INVALID_ARGUMENT, "session id"});

  for (const Case& c : cases) {
    const Generation g = Run(c.request, std::chrono::seconds(10), c.header);
    EXPECT_EQ(g.status.error_code(), c.code) << c.what << ": " << g.status.error_message();
    EXPECT_THAT(g.status.error_message(), HasSubstr(c.message)) << c.what;
  }

  // Tokenize is bounded like a prompt: 64 tokens x 64 bytes.
  {
    grpc::ClientContext context;
    v1::TokenizeRequest request;
    request.set_text(std::string(64 * 64 + 1, 'a'));
    v1::TokenizeResponse response;
    const grpc::Status status = stub_->Tokenize(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("at most 4096 are accepted"));
  }

  // A second request on a session with one in flight.
  grpc::ClientContext first_context;
  GenerateRequest first = Tokens({1, 2}, 1000000);
  first.set_session_id("busy");
  auto reader = stub_->Generate(&first_context, first);
  GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  GenerateRequest second = Tokens({3}, 4);
  second.set_session_id("busy");
  const Generation g = Run(second);
  EXPECT_EQ(g.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(g.status.error_message(), HasSubstr("one request at a time"));
  first_context.TryCancel();
  while (reader->Read(&response)) {
  }
  reader->Finish();

  EXPECT_TRUE(Run(Tokens({1, 2, 3}, 8)).status.ok());
}

TEST_F(ServerE2eTest, SigtermDrainsRunningStreamsRefusesNewOnesAndExitsZero) {
  // A grace period the stream cannot outlast: under ThreadSanitizer its 10,000 tokens take 8-12 s,
  // about the default 10 s, and whether they fit was a race with the clock, not what is tested.
  Start({"--max-tokens-limit", "10000", "--shutdown-grace-s", "120"});
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, Tokens({1, 2, 3}, 10000));
  GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  int tokens = response.token_ids_size();
  server_->Terminate();
  // Health turns NOT_SERVING and new generations are refused while the running stream drains.
  auto health = grpc::health::v1::Health::NewStub(server_->channel());
  bool not_serving = false;
  for (int i = 0; i < 200 && !not_serving; ++i) {
    grpc::ClientContext health_context;
    grpc::health::v1::HealthCheckResponse status;
    not_serving = health->Check(&health_context, {}, &status).ok() &&
                  status.status() == grpc::health::v1::HealthCheckResponse::NOT_SERVING;
    if (!not_serving) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(not_serving);
  {
    // Liveness stays SERVING while the replica drains, so a liveness probe never kills it.
    grpc::ClientContext live_context;
    grpc::health::v1::HealthCheckRequest live;
    live.set_service("liveness");
    grpc::health::v1::HealthCheckResponse status;
    ASSERT_TRUE(health->Check(&live_context, live, &status).ok());
    EXPECT_EQ(status.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  const Generation refused = Run(Tokens({4, 5}, 4), std::chrono::seconds(5));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << refused.status.error_message();
  // So are new sessions: they would live on a replica about to go away.
  {
    grpc::ClientContext create_context;
    v1::CreateSessionRequest create;
    create.set_session_id("too-late");
    v1::Session session;
    const grpc::Status status = stub_->CreateSession(&create_context, create, &session);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("shutting down"));
  }
  while (reader->Read(&response)) tokens += response.token_ids_size();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(tokens, 10000);  // the grace period let it finish
  EXPECT_EQ(server_->Wait(), 0) << server_->log();
  server_.reset();
}

// A stream still running when the grace period ends is ended by the server, with UNAVAILABLE and
// the reason, not reported as if its client had cancelled; and the process exits promptly.
TEST_F(ServerE2eTest, StreamsOutlastingTheGracePeriodEndWithUnavailableAndTheReason) {
  Start({"--max-tokens-limit", "1000000", "--shutdown-grace-s", "1"});
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, Tokens({1, 2, 3}, 1000000));
  GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  server_->Terminate();
  while (reader->Read(&response)) {
  }
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("grace period"));
  EXPECT_EQ(server_->Wait(), 0) << server_->log();
  EXPECT_THAT(server_->log(), HasSubstr("status=UNAVAILABLE (the server is shutting down"));
  EXPECT_THAT(server_->log(), ::testing::Not(HasSubstr("the client cancelled the request")));
  server_.reset();
}

// The command-line client against the real server.
TEST_F(ServerE2eTest, MambactlGeneratesAndManagesSessions) {
  Start();
  testing::TempDir dir;
  const std::string ctl = std::string(MAMBACTL_BIN) + " --target " + server_->target() + " ";
  auto run = [&](const std::string& args) {
    const std::string out = dir.file("out");
    const int rc = std::system((ctl + args + " >" + out + " 2>&1").c_str());
    std::ifstream in(out);
    return std::make_pair(rc, std::string(std::istreambuf_iterator<char>(in), {}));
  };
  EXPECT_EQ(run("health").second, "SERVING\n");
  auto [rc, text] = run("generate --text 'Alice was' --max-tokens 8 --seed 1 --ignore-eos");
  EXPECT_EQ(rc, 0) << text;
  EXPECT_THAT(text, HasSubstr("finish_reason=FINISH_REASON_LENGTH"));
  EXPECT_EQ(run("session create chat").first, 0);
  EXPECT_EQ(run("generate --session chat --tokens 1,2,3 --max-tokens 4 --ignore-eos").first, 0);
  EXPECT_THAT(run("session get chat").second, HasSubstr("length=7"));
  EXPECT_EQ(run("session export chat --out " + dir.file("chat.bin")).first, 0);
  EXPECT_THAT(run("session import --in " + dir.file("chat.bin") + " copy").second,
              HasSubstr("location=host"));
  EXPECT_THAT(run("session list").second, HasSubstr("copy"));
  EXPECT_THAT(run("session fork chat branch").second, HasSubstr("length=7"));
  auto [scored_rc, scored] =
      run("generate --session branch --tokens 4,5,6 --max-tokens 0 --prompt-logprobs 1");
  EXPECT_EQ(scored_rc, 0) << scored;
  EXPECT_THAT(scored, HasSubstr("prompt: 3 tokens scored"));  // the branch's history predicts 4
  EXPECT_THAT(scored, Not(HasSubstr("ttft_ms")));             // nothing generated
  EXPECT_EQ(run("session delete chat").first, 0);
  auto [missing_rc, missing] = run("session get chat");
  EXPECT_NE(missing_rc, 0);
  EXPECT_THAT(missing, HasSubstr("deleted"));
  EXPECT_THAT(missing, HasSubstr("NOT_FOUND: "));  // the code's name, not its number
  const std::string info = run("info").second;
  EXPECT_THAT(info, HasSubstr("\"architecture\": \"mamba\""));
  EXPECT_THAT(info, HasSubstr("\"running\": 0"));  // zeros are printed too

  // Numbers that do not parse, or do not fit, are refused instead of silently replaced.
  auto [bad_rc, bad] = run("generate --tokens 1,2 --max-tokens abc");
  EXPECT_EQ(WEXITSTATUS(bad_rc), 2);
  EXPECT_THAT(bad, HasSubstr("--max-tokens"));
  EXPECT_THAT(bad, HasSubstr("abc"));
  EXPECT_EQ(WEXITSTATUS(run("generate --tokens 1,2 --max-tokens 4294967297").first), 2);
  // An export that cannot be written fails.
  ASSERT_EQ(run("session create kept").first, 0);
  auto [unwritten_rc, unwritten] =
      run("session export kept --out " + dir.file("no/such/dir/x.bin"));
  EXPECT_NE(unwritten_rc, 0);
  EXPECT_THAT(unwritten, HasSubstr("cannot write"));
  // Logprobs, and the target from the environment.
  const std::string env = "MAMBASERVE_TARGET=" + server_->target() + " " + MAMBACTL_BIN;
  const std::string out = dir.file("env-out");
  ASSERT_EQ(std::system((env + " generate --tokens 1,2 --max-tokens 2 --logprobs 1 --ignore-eos >" +
                         out + " 2>&1")
                            .c_str()),
            0);
  std::ifstream in(out);
  EXPECT_THAT(std::string(std::istreambuf_iterator<char>(in), {}), HasSubstr("logprob="));
}

}  // namespace
}  // namespace mambaserve

namespace mambaserve {
namespace {

// make-model writes the tokenizer serve uses: trained for small vocabularies, copied (and checked
// against the vocabulary size) with --tokenizer.
TEST(MakeModelTokenizerTest, TrainsSmallVocabulariesAndChecksCopiedOnes) {
  testing::TempDir dir;
  const std::string bin = kBinary;
  const std::string neox =
      std::string(MAMBASERVE_SOURCE_DIR) + "/tests/data/tokenizers/gpt-neox-20b/tokenizer.json";
  ASSERT_EQ(std::system((bin + " make-model --preset tiny --out " + dir.file("tiny")).c_str()), 0);
  EXPECT_TRUE(std::ifstream(dir.file("tiny/tokenizer.json")).good());

  const std::string too_small = bin + " make-model --preset tiny --tokenizer " + neox + " --out " +
                                dir.file("small") + " 2>" + dir.file("err");
  EXPECT_NE(std::system(too_small.c_str()), 0);
  std::ifstream err(dir.file("err"));
  EXPECT_THAT(std::string(std::istreambuf_iterator<char>(err), {}), HasSubstr("--vocab"));

  const std::string fits = bin + " make-model --preset tiny --layers 1 --vocab 50288 --tokenizer " +
                           neox + " --out " + dir.file("neox");
  ASSERT_EQ(std::system(fits.c_str()), 0);
  EXPECT_TRUE(std::ifstream(dir.file("neox/tokenizer.json")).good());
}

}  // namespace
}  // namespace mambaserve
