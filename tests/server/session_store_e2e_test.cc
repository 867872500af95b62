// Three real `mambaserve serve` replicas and one real redis-server: conversations whose turns go to
// the replicas round-robin, a replica SIGKILLed between turns, a rolling restart of all three.
// Every turn's tokens are checked against one request over the conversation's whole history, so a
// lost or stale turn shows as a mismatch.
#include <signal.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "mambaserve/v1/mambaserve.grpc.pb.h"
#include "tests/server/server_process.h"
#include "tests/server/session_calls.h"
#include "tests/testing/redis_process.h"
#include "tests/testing/temp_dir.h"

namespace mambaserve {
namespace {

using v1::MambaServe;

constexpr char kBinary[] = MAMBASERVE_BIN;
constexpr int kReplicas = 3;
constexpr int kTurnTokens = 5;

struct Turn {
  grpc::Status status;
  std::vector<int32_t> tokens;
};

Turn Generate(MambaServe::Stub& stub, const std::vector<int32_t>& prompt,
              const std::string& session = "") {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::GenerateRequest request;
  for (int32_t id : prompt) request.mutable_tokens()->add_ids(id);
  request.mutable_sampling()->set_max_tokens(kTurnTokens);
  request.mutable_sampling()->set_temperature(0);
  request.mutable_sampling()->set_ignore_eos(true);
  request.set_session_id(session);
  auto reader = stub.Generate(&context, request);
  Turn turn;
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    turn.tokens.insert(turn.tokens.end(), response.token_ids().begin(), response.token_ids().end());
  }
  turn.status = reader->Finish();
  return turn;
}

// One conversation as the client sees it.
struct Conversation {
  std::string id;
  std::vector<int32_t> history;  // every prompt and generated token so far
  int turns = 0;
};

class SessionStoreE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new testing::TempDir();
    const std::string command =
        std::string(kBinary) + " make-model --preset tiny --seed 11 --out " + model_dir_->path();
    ASSERT_EQ(std::system(command.c_str()), 0);
  }
  static void TearDownTestSuite() { delete model_dir_; }

  void SetUp() override { ASSERT_TRUE(redis_.ready()) << "redis-server did not start"; }

  void StartReplicas(std::vector<std::string> extra = {}) {
    extra_ = std::move(extra);
    for (int i = 0; i < kReplicas && !HasFatalFailure(); ++i) Restart(i);
  }
  // (Re)starts replica `i` with the test's flags.
  void Restart(int i) {
    std::vector<std::string> args = {"--session-store",  redis_.url(), "--session-lease-s", "2",
                                     "--metrics-listen", "off"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    replicas_.resize(kReplicas);
    stubs_.resize(kReplicas);
    replicas_[i] = std::make_unique<testing::ServerProcess>(kBinary, model_dir_->path(), args);
    ASSERT_TRUE(replicas_[i]->serving()) << replicas_[i]->log();
    stubs_[i] = MambaServe::NewStub(replicas_[i]->channel());
  }

  // Runs the conversation's next turn on replica `r` and checks it against one request over the
  // whole history, sent to replica `reference` without a session.
  // With `aborted`, a turn refused ABORTED (the session is busy elsewhere) is retried every 200 ms
  // for up to 10 s, as a client with backoff would, and the refusals are counted there.
  void NextTurn(Conversation& c, int r, int reference, int* aborted = nullptr) {
    std::vector<int32_t> prompt = {static_cast<int32_t>(3 + c.turns),
                                   static_cast<int32_t>(100 + c.id.size() + c.turns)};
    Turn turn = Generate(*stubs_[r], prompt, c.id);
    for (int retry = 0;
         aborted != nullptr && retry < 50 && turn.status.error_code() == grpc::StatusCode::ABORTED;
         ++retry) {
      ++*aborted;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      turn = Generate(*stubs_[r], prompt, c.id);
    }
    ASSERT_TRUE(turn.status.ok()) << c.id << " turn " << c.turns << " on replica " << r << ": "
                                  << turn.status.error_message();
    c.history.insert(c.history.end(), prompt.begin(), prompt.end());
    const Turn whole = Generate(*stubs_[reference], c.history);
    ASSERT_TRUE(whole.status.ok()) << whole.status.error_message();
    EXPECT_EQ(turn.tokens, whole.tokens)
        << c.id << " turn " << c.turns << " on replica " << r << " differs from one request";
    c.history.insert(c.history.end(), turn.tokens.begin(), turn.tokens.end());
    ++c.turns;
  }

  std::vector<Conversation> CreateConversations(int n) {
    std::vector<Conversation> conversations(n);
    for (int i = 0; i < n; ++i) {
      conversations[i].id = "conversation-" + std::to_string(i);
      const grpc::Status created =
          testing::CreateSession(*stubs_[i % kReplicas], conversations[i].id);
      EXPECT_TRUE(created.ok()) << created.error_message();
    }
    return conversations;
  }

  static testing::TempDir* model_dir_;
  testing::RedisProcess redis_;
  std::vector<std::string> extra_;
  std::vector<std::unique_ptr<testing::ServerProcess>> replicas_;
  std::vector<std::unique_ptr<MambaServe::Stub>> stubs_;
};
testing::TempDir* SessionStoreE2eTest::model_dir_;

// 50 sessions, three turns each, every turn on the next replica; ten clients at once.
TEST_F(SessionStoreE2eTest, FiftySessionsRoundRobinGiveTheTokensOfOneRequestWithTheirHistory) {
  ASSERT_NO_FATAL_FAILURE(StartReplicas());
  std::vector<Conversation> conversations = CreateConversations(50);
  std::vector<std::thread> clients;
  for (int client = 0; client < 10; ++client) {
    clients.emplace_back([&, client] {
      for (int i = client; i < 50; i += 10) {
        for (int t = 0; t < 3; ++t)
          NextTurn(conversations[i], (i + t) % kReplicas, (i + t + 1) % kReplicas);
      }
    });
  }
  for (std::thread& c : clients) c.join();
  // The same session on two replicas at the same time: one of the two is ABORTED, never both run.
  for (Conversation& c : conversations) EXPECT_EQ(c.turns, 3) << c.id;
}

// With --session-store-sync a turn is stored before its client sees it complete: killing the
// replica that ran it (no drain, no flush) loses nothing.
TEST_F(SessionStoreE2eTest, SigkillOfAReplicaBetweenTurnsLosesNoCompletedTurnInSyncMode) {
  ASSERT_NO_FATAL_FAILURE(StartReplicas({"--session-store-sync"}));
  std::vector<Conversation> conversations = CreateConversations(12);
  for (Conversation& c : conversations) NextTurn(c, 0, 1);
  replicas_[0]->Signal(SIGKILL);
  replicas_[0]->Wait();
  for (size_t i = 0; i < conversations.size(); ++i)
    NextTurn(conversations[i], 1 + i % 2, 2 - i % 2);
  ASSERT_NO_FATAL_FAILURE(Restart(0));
  for (Conversation& c : conversations) NextTurn(c, 0, 1);
}

// A replica killed in the middle of a turn holds the session's lease until it expires; then the
// session continues elsewhere from its last stored turn.
TEST_F(SessionStoreE2eTest, ASessionWhoseReplicaDiedMidTurnResumesFromItsLastStoredTurn) {
  ASSERT_NO_FATAL_FAILURE(
      StartReplicas({"--session-store-sync", "--max-tokens-limit", "16000000"}));
  std::vector<Conversation> conversations = CreateConversations(1);
  Conversation& c = conversations[0];
  NextTurn(c, 0, 1);
  // A turn long enough to be killed in the middle of.
  grpc::Status long_status;
  size_t long_tokens = 0;
  std::thread long_turn([&] {
    grpc::ClientContext context;
    v1::GenerateRequest request;
    request.mutable_tokens()->add_ids(9);
    request.mutable_sampling()->set_max_tokens(16000000);
    request.mutable_sampling()->set_ignore_eos(true);
    request.set_session_id(c.id);
    auto reader = stubs_[0]->Generate(&context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) long_tokens += response.token_ids_size();
    long_status = reader->Finish();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  replicas_[0]->Signal(SIGKILL);
  replicas_[0]->Wait();
  long_turn.join();
  ASSERT_EQ(long_status.error_code(), grpc::StatusCode::UNAVAILABLE) << long_status.error_message();
  ASSERT_GT(long_tokens, 0u) << "the turn was running when its replica died";
  // The lease (--session-lease-s 2) outlives the dead replica for at most 2 s: until then a turn
  // is ABORTED (the session looks busy), as a client retrying with backoff would see; then the
  // session continues from its last stored version.
  int aborted = 0;
  ASSERT_NO_FATAL_FAILURE(NextTurn(c, 1, 2, &aborted));
  EXPECT_GT(aborted, 0) << "the dead replica's lease should hold the session until it expires";
}

// Each replica in turn drains (SIGTERM: its sessions are stored) and comes back while the others
// serve; every conversation goes on throughout, writes behind.
TEST_F(SessionStoreE2eTest, ARollingRestartOfEveryReplicaLosesNoSession) {
  ASSERT_NO_FATAL_FAILURE(StartReplicas());
  std::vector<Conversation> conversations = CreateConversations(15);
  for (size_t i = 0; i < conversations.size(); ++i)
    NextTurn(conversations[i], i % kReplicas, (i + 1) % kReplicas);
  for (int restarting = 0; restarting < kReplicas; ++restarting) {
    EXPECT_EQ(replicas_[restarting]->Stop(), 0) << replicas_[restarting]->log();
    const int other = (restarting + 1) % kReplicas, third = (restarting + 2) % kReplicas;
    for (size_t i = 0; i < conversations.size(); ++i) {
      NextTurn(conversations[i], i % 2 ? other : third, i % 2 ? third : other);
    }
    ASSERT_NO_FATAL_FAILURE(Restart(restarting));
    for (Conversation& c : conversations) NextTurn(c, restarting, other);
  }
  for (Conversation& c : conversations) EXPECT_EQ(c.turns, 1 + 2 * kReplicas) << c.id;
}

}  // namespace
}  // namespace mambaserve
